//! The HTTP side (axum): the embedded video-call page, Socket.IO signaling (`/socket.io/`),
//! the ICE credential endpoint, `/healthz`.
//!
//! Security (docs/security.md, "Signaling" and "Exhaustion" rows): Origin allow-list on the
//! WebSocket (the page's own origin by default), CSP and other headers on every response,
//! per-client rate limit on the credential endpoint, short-lived REST credentials, no SDP or
//! credentials in logs, and a listener bounded by [`limits`] (first-request deadline, per-IP
//! and global connection caps) so HTTP clients cannot use up the relay's descriptors.

pub mod admin;
pub mod cluster;
pub mod limits;
pub mod shared_port;
pub mod socketio;

use crate::auth::ratelimit::RateLimiter;
use crate::auth::{Secret, mint_rest};
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INDEX: &str = include_str!("../../web-demo/index.html");
const STYLE: &str = include_str!("../../web-demo/style.css");
const SELFTEST: &str = include_str!("../../web-demo/selftest.html");
/// The page's ES modules, served at `/<name>`.
const MODULES: &[(&str, &str)] = &[
    ("app.js", include_str!("../../web-demo/app.js")),
    ("config.js", include_str!("../../web-demo/config.js")),
    ("signaling.js", include_str!("../../web-demo/signaling.js")),
    ("peer.js", include_str!("../../web-demo/peer.js")),
    ("sfu.js", include_str!("../../web-demo/sfu.js")),
    ("ui.js", include_str!("../../web-demo/ui.js")),
    ("selftest.js", include_str!("../../web-demo/selftest.js")),
];

/// Content-Security-Policy for the page: everything from our own origin, nothing else.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// What natpass listens on, to build `iceServers` for browsers.
#[derive(Debug, Clone, Default)]
pub struct IceInfo {
    /// UDP/TCP listener ports (STUN, TURN over UDP and TCP).
    pub ports: Vec<u16>,
    /// TLS listener ports (TURN over TLS).
    pub tls_ports: Vec<u16>,
    /// Host name or IP put in the URLs; None: the HTTP request's Host.
    pub public_host: Option<String>,
}

/// One RTCIceServer entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IceServer {
    /// URLs.
    pub urls: Vec<String>,
    /// REST username (TURN entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// REST password (TURN entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceInfo {
    /// `iceServers` for `host`, with a credential for `name` valid `ttl` seconds.
    pub fn servers(&self, host: &str, secret: &Secret, ttl: u64, name: &str) -> Vec<IceServer> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (username, credential) = mint_rest(secret, name, ttl, now);
        let mut stun = Vec::new();
        let mut turn = Vec::new();
        for p in &self.ports {
            stun.push(format!("stun:{host}:{p}"));
            turn.push(format!("turn:{host}:{p}?transport=udp"));
            turn.push(format!("turn:{host}:{p}?transport=tcp"));
        }
        for p in &self.tls_ports {
            turn.push(format!("turns:{host}:{p}?transport=tcp"));
        }
        let mut out = Vec::new();
        if !stun.is_empty() {
            out.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        if !turn.is_empty() {
            out.push(IceServer {
                urls: turn,
                username: Some(username),
                credential: Some(credential),
            });
        }
        out
    }
}

/// Settings of the web side.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where natpass's STUN/TURN listens.
    pub ice: IceInfo,
    /// REST secret used to mint browser credentials.
    pub secret: Secret,
    /// Credential lifetime in seconds.
    pub ttl: u64,
    /// Extra allowed WebSocket origins (the page's own origin is always allowed).
    pub allowed_origins: Vec<String>,
    /// Signaling limits.
    pub signaling: crate::signal::Limits,
    /// Connection caps and deadlines of the HTTP listener.
    pub http: limits::HttpLimits,
}

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct AppState {
    cfg: WebConfig,
    ice_limiter: Mutex<RateLimiter>,
    /// Rooms and participants.
    pub hub: Arc<socketio::Hub>,
    ops: Option<Arc<admin::OpsState>>,
    /// The TURN server the credentials are for (quotas follow the room size).
    server: Option<crate::ops::Ops>,
    gate: Arc<limits::ConnGate>,
    /// Whether `/metrics` is served here: only on a loopback listener (elsewhere it would tell
    /// anyone about the server's load; the `metrics` listener is the way to publish it).
    metrics_here: bool,
}

impl AppState {
    /// New state (starts nothing).
    pub fn new(cfg: WebConfig) -> Arc<Self> {
        let hub = socketio::Hub::new(cfg.signaling.clone());
        let gate = limits::ConnGate::new(&cfg.http);
        Arc::new(Self {
            ice_limiter: Mutex::new(RateLimiter::new(1.0, 20.0, 65_536, Instant::now())),
            hub,
            cfg,
            ops: None,
            server: None,
            gate,
            metrics_here: true,
        })
    }

    /// The HTTP listener's connection counter (open connections, caps, refusals).
    pub fn gate(&self) -> &Arc<limits::ConnGate> {
        &self.gate
    }

    /// The host browsers should use for ICE URLs.
    fn ice_host(&self, headers: &HeaderMap, local: Option<SocketAddr>) -> String {
        if let Some(h) = &self.cfg.ice.public_host {
            return h.clone();
        }
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(host_only)
            .or_else(|| local.map(|l| l.ip().to_string()))
            .unwrap_or_else(|| "localhost".into())
    }

    /// iceServers for a participant (used by signaling too).
    pub fn ice_servers(&self, host: &str, name: &str) -> Vec<IceServer> {
        self.cfg
            .ice
            .servers(host, &self.cfg.secret, self.cfg.ttl, name)
    }

    /// ICE servers for a call participant whose signaling comes from `origin`: its
    /// credential will serve one peer connection per other participant of a full room, so its
    /// allocation quota is scaled to match for as long as the credential is valid, and is not
    /// charged to the address it allocates from (people behind one NAT). An address holds as
    /// many participants as it may have signaling sessions.
    pub fn participant_ice_servers(&self, host: &str, pid: &str, origin: IpAddr) -> Vec<IceServer> {
        if let Some(server) = &self.server {
            let peers = self.cfg.signaling.room_size.saturating_sub(1);
            let until = Instant::now() + Duration::from_secs(self.cfg.ttl);
            server.scale_user_quota(pid, peers, until, origin, self.cfg.signaling.per_ip);
        }
        self.ice_servers(host, pid)
    }

    /// Credential lifetime.
    pub fn ttl(&self) -> u64 {
        self.cfg.ttl
    }

    /// Is this Origin allowed for the WebSocket of a page served as `host`?
    fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            // Non-browser clients send no Origin; cross-site hijacking needs a browser.
            return true;
        };
        if self.cfg.allowed_origins.iter().any(|o| o == origin) {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        origin_host == Some(host)
    }
}

/// The hostname part of a Host header, if it is made of sane characters.
fn host_only(h: &str) -> Option<String> {
    if h.is_empty()
        || h.len() > 255
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return None;
    }
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().map(|s| s.to_owned());
    }
    Some(h.rsplit_once(':').map_or(h, |(a, _)| a).to_owned())
}

async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let too_many = res.status() == StatusCode::TOO_MANY_REQUESTS;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self)"),
    );
    // Every refusal for going too fast says when to come back (RFC 9110 §10.2.3): the
    // credential bucket refills one request a second, and so do the signaling caps in practice.
    if too_many && !h.contains_key(header::RETRY_AFTER) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The per-address rate of credential requests (`/api/ice-servers`, `/api/selftest`): a 429
/// when it is exceeded.
fn credential_rate(st: &AppState, peer: SocketAddr) -> Option<Response> {
    let allowed = st
        .ice_limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allow(peer.ip(), Instant::now());
    (!allowed).then(|| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            "too many credential requests\n",
        )
            .into_response()
    })
}

async fn ice_servers(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = credential_rate(&st, peer) {
        return refused;
    }
    let host = st.ice_host(&headers, None);
    let servers = st.ice_servers(&host, "web");
    axum::Json(serde_json::json!({ "iceServers": servers, "ttl": st.cfg.ttl })).into_response()
}

/// `GET /api/selftest`: a credential of the self-test's own (`expiry:selftest-<random>`) and
/// this server's URLs by transport, so the page can try each alone. Rate-limited like
/// `/api/ice-servers`.
async fn selftest_credential(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = credential_rate(&st, peer) {
        return refused;
    }
    let host = st.ice_host(&headers, None);
    let name = format!("selftest-{:016x}", rand::random::<u64>());
    let servers = st.ice_servers(&host, &name);
    if let (Some(server), Some(user)) = (
        &st.server,
        servers.iter().find_map(|s| s.username.as_deref()),
    ) {
        server.control().shared.selftests.issue(user);
    }
    let mut stun = Vec::new();
    let (mut udp, mut tcp, mut tls) = (Vec::new(), Vec::new(), Vec::new());
    let (mut username, mut credential) = (None, None);
    for s in servers {
        if s.username.is_some() {
            username = s.username.clone();
            credential = s.credential.clone();
        }
        for u in s.urls {
            if u.starts_with("stun:") {
                stun.push(u);
            } else if u.starts_with("turns:") {
                tls.push(u);
            } else if u.ends_with("transport=tcp") {
                tcp.push(u);
            } else {
                udp.push(u);
            }
        }
    }
    axum::Json(serde_json::json!({
        "username": username,
        "credential": credential,
        "ttl": st.cfg.ttl,
        "transports": {"stun": stun, "turn-udp": udp, "turn-tcp": tcp, "turn-tls": tls},
    }))
    .into_response()
}

/// `GET /api/selftest/report?username=…`: the Allocates the server saw from that self-test
/// credential (transport, error code or success). Only `selftest-` usernames, which carry 64
/// random bits: a page sees its own attempts and nobody else's.
async fn selftest_report(
    State(st): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(user) = q.get("username") else {
        return (StatusCode::BAD_REQUEST, "username missing\n").into_response();
    };
    if !crate::relay::SelfTests::is_selftest(user) {
        return (StatusCode::BAD_REQUEST, "not a self-test username\n").into_response();
    }
    let Some(server) = &st.server else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no TURN server here\n").into_response();
    };
    let attempts = server.control().shared.selftests.attempts(user);
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "allocates": attempts })),
    )
        .into_response()
}

/// What the page must agree on with the server (`GET /api/config`): the room-name rule, the
/// length limits, and the pace that keeps it under the signaling rate limit.
pub fn page_config(limits: &crate::signal::Limits) -> serde_json::Value {
    let (rate, burst) = limits.client_pacing();
    serde_json::json!({
        "room": {"pattern": crate::signal::room_pattern(), "maxLength": crate::signal::ROOM_MAX_LEN},
        "name": {"maxLength": crate::signal::NAME_MAX_CHARS},
        "chat": {"maxLength": crate::signal::CHAT_MAX_CHARS},
        "signaling": {"rate": rate, "burst": burst, "maxMessage": limits.max_message},
    })
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let ops = state.ops.clone();
    let state_metrics_here = state.metrics_here;
    let config = page_config(&state.cfg.signaling);
    let mut r = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/selftest",
            get(|| async { asset("text/html; charset=utf-8", SELFTEST) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/api/config",
            get(move || {
                let c = config.clone();
                async move { ([(header::CACHE_CONTROL, "no-cache")], axum::Json(c)) }
            }),
        );
    for (name, body) in MODULES {
        r = r.route(
            &format!("/{name}"),
            get(move || async move { asset("text/javascript; charset=utf-8", body) }),
        );
    }
    let r = r
        .route("/api/ice-servers", get(ice_servers))
        .route("/api/selftest", get(selftest_credential))
        .route("/api/selftest/report", get(selftest_report))
        .with_state(state.clone());
    let r = match ops {
        Some(o) if state_metrics_here => r.merge(admin::ops_router(o)),
        Some(o) => r.merge(admin::health_router(o)),
        None => r.route("/healthz", get(|| async { "ok\n" })),
    };
    state.hub.install(&state);
    r.layer(state.hub.layer())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            socketio::guard,
        ))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Serve plain HTTP on `listener` until `shutdown` resolves (bounded by [`limits`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_front(listener, state, limits::Front::Plain, shutdown).await
}

/// Serve the router behind `front` on `listener` until `shutdown` resolves.
async fn serve_front(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    front: limits::Front,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _sweeper = socketio::Hub::spawn_sweeper(state.hub.clone());
    let http = state.cfg.http.clone();
    let gate = state.gate.clone();
    limits::serve_bounded(listener, router(state), front, http, gate, shutdown).await
}

/// Serve HTTPS on `listener` with `tls` until `shutdown` resolves (bounded by [`limits`]).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut cfg = (*tls).clone();
    // acme-tls/1 too: an HTTPS port on 443 with the ACME certificate answers TLS-ALPN-01
    // (the handshake is all; limits::Front::Tls closes it).
    cfg.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        crate::tls::ACME_ALPN.to_vec(),
    ];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    serve_front(listener, state, limits::Front::Tls(acceptor), shutdown).await
}

/// Serve a port shared with TURN (see [`shared_port`]) until `shutdown` resolves.
pub async fn serve_shared(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    port: shared_port::SharedPort,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_front(listener, state, limits::Front::Shared(port), shutdown).await
}

/// A running web side.
#[derive(Debug)]
pub struct Launched {
    /// Bound address.
    pub addr: SocketAddr,
    /// The server task.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Rooms and participants.
    pub hub: Arc<socketio::Hub>,
    /// SHA-256 fingerprint of the self-signed certificate (`AB:CD:…`), when it uses one.
    pub fingerprint: Option<String>,
}

/// Bind and serve the web side for a running server (page, signaling, credentials, and
/// `/metrics`, `/readyz` from `ops`).
pub async fn launch(
    http: &crate::config::HttpConfig,
    server: impl Into<crate::ops::Ops>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Launched> {
    launch_with(http, server, None, shutdown).await
}

/// [`launch`] with the operations endpoints merged in.
pub async fn launch_with(
    http: &crate::config::HttpConfig,
    server: impl Into<crate::ops::Ops>,
    ops: Option<admin::OpsState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Launched> {
    launch_in(http, server, ops, None, shutdown).await
}

/// [`launch_with`], keeping a self-signed certificate in `state_dir` across restarts.
pub async fn launch_in(
    http: &crate::config::HttpConfig,
    server: impl Into<crate::ops::Ops>,
    ops: Option<admin::OpsState>,
    state_dir: Option<&std::path::Path>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Launched> {
    let server: crate::ops::Ops = server.into();
    let mut ports: Vec<u16> = server.udp_addrs().iter().map(|a| a.port()).collect();
    ports.dedup();
    let mut tls_ports: Vec<u16> = server.tls_addrs().iter().map(|a| a.port()).collect();
    tls_ports.dedup();
    let secret = server
        .rest_secret()
        .ok_or_else(|| std::io::Error::other("no REST secret to mint browser credentials"))?;
    let cfg = WebConfig {
        ice: IceInfo {
            ports,
            tls_ports,
            public_host: http.public_host.clone(),
        },
        secret,
        ttl: http.credential_ttl,
        allowed_origins: http.allow_origins.clone(),
        signaling: crate::signal::Limits {
            room_size: http.room_size,
            mesh_size: http.sfu.as_ref().map(|s| s.mesh_size),
            sfu_room_size: http.sfu.as_ref().map_or(http.room_size, |s| s.room_size),
            ..crate::signal::Limits::default()
        },
        http: limits::HttpLimits::default(),
    };
    let mut state = AppState::new(cfg);
    if let Some(s) = Arc::get_mut(&mut state) {
        s.server = Some(server.clone());
    }
    let hub = state.hub.clone();
    if let Some(url) = &http.redis {
        let cluster = cluster::Cluster::connect(url, hub.node().to_owned())
            .await
            .map_err(std::io::Error::other)?;
        hub.join_cluster(cluster);
    }
    if let Some(mut ops) = ops {
        ops.hub = Some(hub.clone());
        if let Some(s) = Arc::get_mut(&mut state) {
            s.ops = Some(Arc::new(ops));
        }
    }
    let listener = tokio::net::TcpListener::bind(http.addr).await?;
    let addr = listener.local_addr()?;
    if let Some(s) = Arc::get_mut(&mut state) {
        s.metrics_here = addr.ip().is_loopback();
    }
    let mut fingerprint = None;
    let task = match &http.tls {
        crate::config::HttpTls::Off => tokio::spawn(serve(listener, state, shutdown)),
        crate::config::HttpTls::Files(c, k) => {
            let tls = crate::tls::load(c, k).map_err(std::io::Error::other)?;
            tokio::spawn(serve_tls(listener, state, tls, shutdown))
        }
        crate::config::HttpTls::SharedWithTurn => {
            let Some(tls) = server.tls_store() else {
                return Err(std::io::Error::other(
                    "http shares a tls-listen port, but TURN over TLS is not running",
                ));
            };
            let port = shared_port::SharedPort::new(tls, server.control());
            tokio::spawn(serve_shared(listener, state, port, shutdown))
        }
        crate::config::HttpTls::TurnCertificate => {
            let Some(tls) = server.tls_store() else {
                return Err(std::io::Error::other(
                    "https with the ACME certificate, but TURN over TLS is not running",
                ));
            };
            // The store's resolver: a renewed certificate serves here from the next handshake.
            tokio::spawn(serve_tls(listener, state, tls.current(), shutdown))
        }
        crate::config::HttpTls::SelfSigned => {
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            if let Some(h) = &http.public_host {
                names.push(h.clone());
            }
            if !addr.ip().is_unspecified() {
                names.push(addr.ip().to_string());
            }
            let (cert, key) = match state_dir {
                Some(dir) => kept_self_signed(dir, &names)?,
                None => self_signed(&names).map_err(std::io::Error::other)?,
            };
            fingerprint = Some(pem_fingerprint(&cert).map_err(std::io::Error::other)?);
            let tls = tls_from_pem(&cert, &key).map_err(std::io::Error::other)?;
            tokio::spawn(serve_tls(listener, state, tls, shutdown))
        }
    };
    Ok(Launched {
        addr,
        task,
        hub,
        fingerprint,
    })
}

/// The self-signed certificate kept in `dir` for these names, made (and written, the key
/// readable by the owner only) when there is none or its names changed.
fn kept_self_signed(dir: &std::path::Path, names: &[String]) -> std::io::Result<(String, String)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let cert_path = dir.join("http-self-signed-cert.pem");
    let key_path = dir.join("http-self-signed-key.pem");
    let names_path = dir.join("http-self-signed-names");
    let wanted = names.join("\n");
    if let (Ok(cert), Ok(key), Ok(kept)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
        std::fs::read_to_string(&names_path),
    ) {
        if kept == wanted && tls_from_pem(&cert, &key).is_ok() {
            return Ok((cert, key));
        }
    }
    let (cert, key) = self_signed(names).map_err(std::io::Error::other)?;
    fn context(what: &std::path::Path) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
        move |e| std::io::Error::new(e.kind(), format!("{}: {e}", what.display()))
    }
    std::fs::create_dir_all(dir).map_err(context(dir))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(key.as_bytes()))
        .map_err(context(&key_path))?;
    std::fs::write(&cert_path, &cert).map_err(context(&cert_path))?;
    std::fs::write(&names_path, &wanted).map_err(context(&names_path))?;
    Ok((cert, key))
}

/// SHA-256 of the first certificate in `pem`, as colon-separated hex (what browsers show).
pub fn pem_fingerprint(pem: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or("no certificate")?
        .map_err(|e| e.to_string())?;
    let digest = sha2::Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn tls_from_pem(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| e.to_string())?;
    let cfg = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// A self-signed certificate for `names` (for `--http-self-signed`): (chain, key) in PEM.
pub fn self_signed(names: &[String]) -> Result<(String, String), String> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| e.to_string())?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_cover_every_listener_with_a_working_credential() {
        let info = IceInfo {
            ports: vec![3478],
            tls_ports: vec![5349, 443],
            public_host: None,
        };
        let s = info.servers("turn.example.org", &Secret::new("k"), 600, "web");
        assert_eq!(s[0].urls, vec!["stun:turn.example.org:3478"]);
        assert!(s[0].username.is_none());
        assert_eq!(
            s[1].urls,
            vec![
                "turn:turn.example.org:3478?transport=udp",
                "turn:turn.example.org:3478?transport=tcp",
                "turns:turn.example.org:5349?transport=tcp",
                "turns:turn.example.org:443?transport=tcp",
            ]
        );
        let u = s[1].username.as_deref().unwrap();
        assert!(u.ends_with(":web"));
        assert_eq!(
            s[1].credential.as_deref().unwrap(),
            crate::auth::rest_password(&Secret::new("k"), u)
        );
        let v6 = info.servers("::1", &Secret::new("k"), 600, "web");
        assert_eq!(v6[0].urls[0], "stun:[::1]:3478");
    }

    #[test]
    fn host_header_parsing_rejects_junk() {
        assert_eq!(
            host_only("example.org:8080").as_deref(),
            Some("example.org")
        );
        assert_eq!(host_only("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(host_only("localhost").as_deref(), Some("localhost"));
        assert_eq!(host_only("evil.org/\"x"), None);
        assert_eq!(host_only(""), None);
    }
}
