//! The operations handle: everything the web side, the admin API, `/metrics` and the signal
//! handler may see and do on a running server, without knowing how the shell is built.
//!
//! A cheap clone of one shared state. `net` makes the server; [`crate::lifecycle`] makes the
//! `Ops` for it and hands it to `web`.

use crate::auth::{Credentials, Secret};
use crate::config::ValidConfig;
use crate::logging::SetFilter;
use crate::net::{Control, ServerHandle};
use crate::proto::AllocationInfo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A handle on a running server for operators.
#[derive(Clone)]
pub struct Ops {
    inner: Arc<Inner>,
}

struct Inner {
    control: Control,
    udp_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    /// The running configuration, when there is a file (or the embedded default) to reread.
    config: Option<Mutex<ValidConfig>>,
    set_log: Option<SetFilter>,
    stop_now: CancellationToken,
    /// The SFU's counters, once it runs.
    sfu: std::sync::OnceLock<Arc<crate::sfu::shell::SharedStats>>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("udp", &self.inner.udp_addrs)
            .field("tls", &self.inner.tls_addrs)
            .finish_non_exhaustive()
    }
}

/// A server started directly with `net::start`: no config to reload, no log filter to change.
impl From<&ServerHandle> for Ops {
    fn from(server: &ServerHandle) -> Self {
        Self::new(server, None, None)
    }
}

impl Ops {
    /// The handle for `server`, running `config` (None: reload is not available), changing
    /// the log filter through `set_log` (None: not available).
    pub fn new(
        server: &ServerHandle,
        config: Option<ValidConfig>,
        set_log: Option<SetFilter>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                control: server.control(),
                udp_addrs: server.udp_addrs.clone(),
                tls_addrs: server.tls_addrs.clone(),
                config: config.map(Mutex::new),
                set_log,
                stop_now: CancellationToken::new(),
                sfu: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Bound STUN/TURN listener addresses (UDP and TCP share them).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.inner.udp_addrs
    }

    /// TURN's certificate store (None: no TURN over TLS).
    pub fn tls_store(&self) -> Option<Arc<crate::tls::TlsStore>> {
        self.inner.control.tls.clone()
    }

    /// The shards' control handle (hands shared-port TURN connections to them).
    pub fn control(&self) -> Control {
        self.inner.control.clone()
    }

    /// Bound TURN-over-TLS listener addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.inner.tls_addrs
    }

    /// Every allocation, with its id `shard-key-serial` (blocks up to 2 s on the shards).
    pub fn list_allocations(&self) -> Vec<(String, AllocationInfo)> {
        self.inner.control.list_allocations()
    }

    /// End one allocation by id or all of a user's; returns how many (blocks up to 2 s).
    pub fn end_allocations(&self, id: Option<&str>, user: Option<&str>) -> usize {
        self.inner.control.end_allocations(id, user)
    }

    /// Whether new allocations are refused (shutdown drain).
    pub fn draining(&self) -> bool {
        self.inner.control.is_draining()
    }

    /// Refuse new allocations, or accept them again.
    pub fn set_draining(&self, on: bool) {
        self.inner.control.set_draining(on);
    }

    /// Live allocations on the server.
    pub fn live_allocations(&self) -> usize {
        self.inner.control.live_allocations()
    }

    /// Make REST user `user` a call participant until `until` (one peer connection per other
    /// participant): `factor` × the per-user allocation quota, not charged to its source IP;
    /// signaling client `origin` holds at most `per_origin` of them ([`Quotas::scale_user`]).
    ///
    /// [`Quotas::scale_user`]: crate::relay::quota::Quotas::scale_user
    pub fn scale_user_quota(
        &self,
        user: &str,
        factor: usize,
        until: std::time::Instant,
        origin: std::net::IpAddr,
        per_origin: usize,
    ) {
        self.inner
            .control
            .shared
            .quotas
            .scale_user(user, factor, until, origin, per_origin);
    }

    /// Whether every relay port is taken.
    pub fn relay_ports_exhausted(&self) -> bool {
        let ports = &self.inner.control.shared.ports;
        ports.in_use() >= ports.capacity()
    }

    /// The credentials in force (a copy).
    pub fn credentials(&self) -> Credentials {
        self.inner.control.credentials()
    }

    /// The REST secret that mints browser and admin credentials (the first one).
    pub fn rest_secret(&self) -> Option<Secret> {
        self.credentials().secrets().first().cloned()
    }

    /// Prometheus text of every metric; `signaling` is (rooms, participants).
    pub fn metrics(&self, signaling: Option<(usize, usize)>) -> String {
        let mut snapshot = self.inner.control.metrics(signaling);
        snapshot.sfu = self.inner.sfu.get().map(|s| s.load());
        crate::metrics::render(&snapshot)
    }

    /// The SFU runs: its counters go on `/metrics`.
    pub fn set_sfu(&self, stats: Arc<crate::sfu::shell::SharedStats>) {
        let _ = self.inner.sfu.set(stats);
    }

    /// Whether [`Ops::reload`] can do anything.
    pub fn can_reload(&self) -> bool {
        self.inner.config.is_some()
    }

    /// Read the config file again and apply it (SIGHUP, `POST /admin/reload`): credentials,
    /// peer policy, quotas, TLS certificates, log filter. Ok(notes on what needs a restart),
    /// or Err(why) and the running config stays. Blocks (file reads, certificate parsing).
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let Some(config) = &self.inner.config else {
            return Err("no config file to reload".into());
        };
        let mut current = config.lock().unwrap_or_else(|e| e.into_inner());
        let new = current.reread().map_err(|e| e.to_string())?;
        let mut notes = self.inner.control.apply(&current, &new)?;
        if new.log != current.log {
            if let Err(e) = self.set_log_filter(&new.log) {
                notes.push(format!("log filter not changed: {e}"));
            }
        }
        *current = new;
        Ok(notes)
    }

    /// Whether [`Ops::set_log_filter`] can do anything.
    pub fn can_set_log(&self) -> bool {
        self.inner.set_log.is_some()
    }

    /// Change the log filter.
    pub fn set_log_filter(&self, filter: &str) -> Result<(), String> {
        match &self.inner.set_log {
            Some(f) => f(filter),
            None => Err("the log filter cannot be changed in this process".into()),
        }
    }

    /// End a drain at once (a second SIGTERM/SIGINT).
    pub fn stop_now(&self) {
        self.inner.stop_now.cancel();
    }

    /// Resolves when [`Ops::stop_now`] was called.
    pub async fn stopped_now(&self) {
        self.inner.stop_now.cancelled().await;
    }

    /// Whether [`Ops::stop_now`] was called.
    pub fn is_stopped_now(&self) -> bool {
        self.inner.stop_now.is_cancelled()
    }
}
