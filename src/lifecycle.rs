//! The whole life of a server: start the STUN/TURN listeners and relay shards, the web side,
//! metrics and the admin API; run until the shutdown token is cancelled; drain (refuse new
//! allocations, let live ones relay for `drain-seconds` or until they end); stop.
//!
//! Like hickory-dns's server: a [`CancellationToken`] asks for shutdown, a [`JoinSet`] holds
//! the HTTP tasks. [`run`] is the whole thing; [`Server`] splits it into start and serve so a
//! caller can use the [`Ops`] handle (reload, drain state) and the bound addresses in between.
//! Signals are mapped onto the token and [`Ops::reload`] by [`Signals`]; systemd hears about
//! readiness and stopping through `sd_notify`.

use crate::config::{HttpTls, ValidConfig};
use crate::logging::SetFilter;
use crate::net::{ServerHandle, StartError};
use crate::ops::Ops;
use crate::sfu::shell::SfuHandle;
use crate::web::admin::{self, OpsState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The STUN/TURN side.
    #[error("starting the server: {0}")]
    Start(#[from] StartError),
    /// The SFU's UDP socket.
    #[error("starting the SFU on {addr} (sfu-listen; sfu = false turns it off): {source}")]
    Sfu {
        /// The address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// An HTTP listener (web, metrics or admin).
    #[error("starting the {what} listener on {addr}: {source}")]
    Http {
        /// "HTTP", "metrics" or "admin".
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Start everything `cfg` asks for, serve until `shutdown` is cancelled, drain, stop.
pub async fn run(cfg: ValidConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    Server::start(cfg, None).await?.serve(shutdown).await;
    Ok(())
}

/// A started server: listeners bound, shards and HTTP tasks running.
#[derive(Debug)]
pub struct Server {
    net: ServerHandle,
    ops: Ops,
    tasks: JoinSet<()>,
    web_stop: CancellationToken,
    drain: Duration,
    http: Option<HttpInfo>,
    metrics: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    sfu: Option<Arc<SfuHandle>>,
}

impl Server {
    /// Bind and start everything. `set_log` changes the process's log filter (reload and
    /// the admin API); None when the caller owns no reloadable subscriber.
    pub async fn start(mut cfg: ValidConfig, set_log: Option<SetFilter>) -> Result<Self, RunError> {
        crate::metrics::mark_start();
        // Descriptors: TURN streams, relay sockets and HTTP all draw on them; take the hard
        // limit so the web side's share (a quarter at most) leaves enough for relaying.
        match crate::web::limits::raise_nofile_limit() {
            Ok(n) => tracing::debug!(limit = n, "file descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
        }
        if cfg.generated_secret {
            tracing::warn!(
                "no auth-secrets configured: generated an in-memory TURN REST secret that only \
                 this process's credential endpoint uses. Set `auth-secrets` (or --auth-secret) \
                 for a permanent one"
            );
        }
        // The SFU first: its address is the one port of natpass's own that relays may reach,
        // and the peer policy is built with it.
        let mut sfu = match cfg.http.as_ref().and_then(|h| h.sfu.clone()) {
            Some(s) => {
                let (handle, notices) = match start_sfu(&cfg, &s) {
                    Ok(x) => x,
                    Err(e) => {
                        // A second natpass on the same ports: say which TURN port is taken
                        // (the cause) rather than the SFU's port next to it.
                        let net = crate::net::start(&cfg)?;
                        let _ = tokio::task::spawn_blocking(move || net.shutdown()).await;
                        return Err(e);
                    }
                };
                cfg.sfu_addrs = vec![handle.addr()];
                if let Some(bound) = handle.bound().filter(|b| !b.ip().is_unspecified()) {
                    if bound != handle.addr() {
                        cfg.sfu_addrs.push(bound);
                    }
                }
                tracing::info!(addr = %handle.addr(), "SFU for rooms past mesh-size ({})", s.mesh_size);
                Some((Arc::new(handle), Some(notices)))
            }
            None => None,
        };
        let net = crate::net::start(&cfg)?;
        let ops = Ops::new(&net, Some(cfg.clone()), set_log);
        if let Some((h, _)) = &sfu {
            ops.set_sfu(h.shared_stats());
        }
        let web_stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut state = OpsState {
            ops: ops.clone(),
            hub: None,
            token: cfg.admin.as_ref().map(|(_, t)| t.clone()),
            ttl: cfg
                .http
                .as_ref()
                .map_or(crate::config::defaults::CREDENTIAL_TTL, |h| {
                    h.credential_ttl
                }),
        };
        let mut http = None;
        if let Some(h) = &cfg.http {
            let err = |source| RunError::Http {
                what: "HTTP",
                addr: h.addr,
                source,
            };
            let stop = web_stop.clone().cancelled_owned();
            let state_dir = match h.tls {
                HttpTls::SelfSigned => cfg.state_dir.as_deref(),
                _ => None,
            };
            let l = crate::web::launch_in(h, ops.clone(), Some(state.clone()), state_dir, stop)
                .await
                .map_err(err)?;
            state.hub = Some(l.hub.clone());
            if let Some((h, notices)) = sfu.as_mut().and_then(|(h, n)| n.take().map(|n| (h, n))) {
                l.hub.set_sfu(h.clone(), notices);
            }
            let url = http_url(l.addr, h.tls != HttpTls::Off, h.public_host.as_deref());
            http = Some(HttpInfo {
                addr: l.addr,
                url: url.clone(),
                fingerprint: l.fingerprint.clone(),
                public: cfg
                    .acme
                    .as_ref()
                    .and_then(|a| a.domains.first().cloned())
                    .or_else(|| h.public_host.clone()),
            });
            tracing::info!(addr = %l.addr, "call demo: open {url} in two tabs or on two devices");
            if let Some(fp) = &l.fingerprint {
                tracing::info!(
                    "self-signed certificate (SHA-256 {fp}){}",
                    state_dir.map_or(
                        " made for this run only: set state-dir to keep it".into(),
                        |d| format!(", kept in {}", d.display())
                    )
                );
            }
            tasks.spawn(async move {
                let _ = l.task.await;
            });
        }
        let state = Arc::new(state);
        let metrics = match cfg.metrics {
            Some(addr) => {
                let router = admin::ops_router(state.clone());
                let a = serve_on("metrics", addr, router, &web_stop, &mut tasks).await?;
                tracing::info!(addr = %a, "metrics at /metrics, health at /healthz and /readyz");
                Some(a)
            }
            None => None,
        };
        let admin = match &cfg.admin {
            Some((addr, _)) => {
                let router =
                    admin::admin_router(state.clone()).merge(admin::ops_router(state.clone()));
                let a = serve_on("admin", *addr, router, &web_stop, &mut tasks).await?;
                tracing::info!(addr = %a, "admin API listening (bearer token required)");
                Some(a)
            }
            None => None,
        };
        if let (Some(a), Some(store)) = (cfg.acme.clone(), net.tls.clone()) {
            tracing::info!(names = ?a.domains, directory = %a.directory, "certificates from ACME, kept in {}", a.dir.display());
            let stop = web_stop.clone();
            tasks.spawn(crate::acme::maintain(a, store, stop));
        }
        let sfu = sfu.map(|(h, _)| h);
        sd_notify("READY=1");
        Ok(Self {
            net,
            ops,
            tasks,
            web_stop,
            drain: Duration::from_secs(cfg.drain_seconds),
            http,
            metrics,
            admin,
            sfu,
        })
    }

    /// Where browsers reach the SFU, when it runs.
    pub fn sfu_addr(&self) -> Option<SocketAddr> {
        self.sfu.as_ref().map(|s| s.addr())
    }

    /// The operations handle (reload, drain state, allocations).
    pub fn ops(&self) -> Ops {
        self.ops.clone()
    }

    /// The STUN/TURN side's bound addresses and shared state.
    pub fn net(&self) -> &ServerHandle {
        &self.net
    }

    /// The web side's bound address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// The call page's URL: the one people should open (`public-host` when set).
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(|h| h.url.clone())
    }

    /// Where people open the call: (what, URL) for this machine, the LAN (when the page
    /// listens beyond loopback) and the public name (`domain` or `public-host`).
    pub fn http_urls(&self) -> Vec<(&'static str, String)> {
        let Some(h) = &self.http else {
            return Vec::new();
        };
        let scheme = if h.url.starts_with("https") {
            "https"
        } else {
            "http"
        };
        let port = h.addr.port();
        let with_port = |host: String| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            match (scheme, port) {
                ("https", 443) | ("http", 80) => format!("{scheme}://{host}/"),
                _ => format!("{scheme}://{host}:{port}/"),
            }
        };
        let mut out = vec![("this machine", with_port("localhost".into()))];
        let ip = h.addr.ip();
        if !ip.is_loopback() {
            let lan = if ip.is_unspecified() {
                crate::net::route_source(ip.is_ipv6())
            } else {
                Some(ip)
            };
            if let Some(l) = lan {
                out.push(("LAN", with_port(l.to_string())));
            }
        }
        if let Some(p) = &h.public {
            out.push(("public", with_port(p.clone())));
        }
        out
    }

    /// The SHA-256 fingerprint of the self-signed HTTPS certificate, when one is used.
    pub fn http_fingerprint(&self) -> Option<String> {
        self.http.as_ref().and_then(|h| h.fingerprint.clone())
    }

    /// The metrics listener's bound address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Serve until `shutdown` is cancelled, then drain and stop. [`Ops::stop_now`] cuts the
    /// drain short.
    pub async fn serve(mut self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        sd_notify("STOPPING=1");
        self.ops.set_draining(true);
        let start = Instant::now();
        while start.elapsed() < self.drain && self.ops.live_allocations() > 0 {
            tokio::select! {
                _ = self.ops.stopped_now() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        if self.ops.is_stopped_now() {
            tracing::warn!("second signal: exiting now");
        } else {
            tracing::info!(left = self.ops.live_allocations(), "drain over; stopping");
        }
        self.web_stop.cancel();
        let joined = tokio::time::timeout(Duration::from_secs(2), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            self.tasks.abort_all();
        }
        let net = self.net;
        let _ = tokio::task::spawn_blocking(move || net.shutdown()).await;
    }
}

/// Bind the SFU where `sfu-listen` says, or next to the first TURN listener; it advertises
/// the relay address of that family (the external IP behind 1:1 NAT).
fn start_sfu(
    cfg: &ValidConfig,
    s: &crate::config::SfuConfig,
) -> Result<
    (
        SfuHandle,
        tokio::sync::mpsc::Receiver<crate::sfu::core::Notice>,
    ),
    RunError,
> {
    let bind = s.listen.unwrap_or_else(|| {
        let first = cfg
            .listen
            .first()
            .copied()
            .unwrap_or(crate::config::defaults::LISTEN[0]);
        let port = match first.port() {
            0 => 0,
            p => p.saturating_add(crate::config::defaults::SFU_PORT_OFFSET),
        };
        SocketAddr::new(first.ip(), port)
    });
    let advertise = crate::net::resolve_relays(cfg, &[bind])
        .into_iter()
        .find(|r| r.advertise.is_ipv4() == bind.is_ipv4())
        .map(|r| r.advertise);
    SfuHandle::spawn(bind, advertise, s.room_size, s.timeout, s.tcp)
        .map_err(|source| RunError::Sfu { addr: bind, source })
}

/// Read the certificate files `cfg` names, as start does; `natpass check-config` uses it so a
/// missing or broken certificate is found before a restart.
pub fn check_certificates(cfg: &ValidConfig) -> Result<(), crate::tls::TlsError> {
    if let Some((cert, key)) = &cfg.tls_files {
        crate::tls::load(cert, key)?;
    }
    if let Some(HttpTls::Files(cert, key)) = cfg.http.as_ref().map(|h| &h.tls) {
        crate::tls::load(cert, key)?;
    }
    Ok(())
}

/// The web side as the operator is told of it.
#[derive(Debug, Clone)]
struct HttpInfo {
    addr: SocketAddr,
    url: String,
    fingerprint: Option<String>,
    /// The public name (`domain`, else `public-host`).
    public: Option<String>,
}

fn http_url(addr: SocketAddr, tls: bool, public_host: Option<&str>) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match public_host {
        Some(h) if h.contains(':') => format!("[{h}]"),
        Some(h) => h.to_owned(),
        None if addr.ip().is_loopback() || addr.ip().is_unspecified() => "localhost".to_owned(),
        None if addr.is_ipv6() => format!("[{}]", addr.ip()),
        None => addr.ip().to_string(),
    };
    format!("{scheme}://{host}:{}/", addr.port())
}

/// Bind `addr` and serve `router` there until `stop`; returns the bound address.
async fn serve_on(
    what: &'static str,
    addr: SocketAddr,
    router: axum::Router,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<SocketAddr, RunError> {
    let err = |source| RunError::Http { what, addr, source };
    let l = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let bound = l.local_addr().map_err(err)?;
    let stop = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        let _ = admin::serve_router(l, router, stop).await;
    });
    Ok(bound)
}

/// SIGTERM, SIGINT and SIGHUP, registered early (before the listeners, so a signal that
/// arrives during start is not the default "terminate").
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Register the handlers (needs a tokio runtime).
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Map signals onto the server: the first SIGTERM/SIGINT cancels `shutdown` (drain), the
    /// next one ends the drain at once; SIGHUP reloads the configuration. Runs until the
    /// process exits.
    pub async fn forward(mut self, shutdown: CancellationToken, ops: Ops) {
        loop {
            let name = tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.hup.recv() => {
                    let o = ops.clone();
                    match tokio::task::spawn_blocking(move || o.reload()).await {
                        Ok(Ok(notes)) => {
                            tracing::info!("SIGHUP: configuration reloaded");
                            for n in notes {
                                tracing::warn!("reload: {n}");
                            }
                        }
                        Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; the running one stays"),
                        Err(_) => {}
                    }
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                ops.stop_now();
            } else {
                tracing::info!("{name}: draining");
                shutdown.cancel();
            }
        }
    }
}

/// systemd readiness protocol (sd_notify) without a library: one datagram to NOTIFY_SOCKET.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy();
    let res = if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &*p)
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
