//! The shell: owns sockets and the clock, drives the sans-IO core.
//!
//! One OS thread per shard, each running a mio event loop over its own `SO_REUSEPORT` copy of
//! every UDP listener plus the relay sockets of the allocations it owns. The kernel hashes a
//! client's 4-tuple to one listener copy, so a client always meets the shard that holds its
//! allocation, and no lock or channel is on the data path.

mod shard;
mod spin;
pub use crate::tls;

use crate::auth::{Credentials, Secret};
use crate::config::ValidConfig;
use crate::proto::{CoreConfig, RelayAddr, Stats};
use crate::relay::policy::PeerPolicy;
use crate::relay::ports::PortPool;
use crate::relay::quota::{QuotaLimits, Quotas};
use crate::relay::{ShardResources, Shared};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS certificate or key is unusable.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Another socket (another natpass, another program) already holds a listener's port.
    #[error(
        "{proto} port {} on {} is already in use by another process (another natpass?); \
         refusing to share it",
        addr.port(),
        addr.ip()
    )]
    InUse {
        /// "UDP" or "TCP".
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
    },
    /// No listener at all could be bound.
    #[error("no listener could be bound")]
    NoListener,
    /// Event loop setup failed.
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
}

/// A TURN connection accepted by the web side on a port it shares with TURN (`http` on a
/// `tls-listen` address) and handed to a shard once it proved to be TURN: plain TCP whose
/// first byte is STUN (nothing read from it yet), or TLS with the handshake done.
pub struct Adopted {
    /// The connection (non-blocking).
    pub stream: std::net::TcpStream,
    /// The client.
    pub peer: SocketAddr,
    /// The shared port's local address.
    pub local: SocketAddr,
    /// The TLS session, handshake complete (None: plain TCP).
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// Plaintext already read from the TLS session (the first bytes that told it was STUN).
    pub prefix: Vec<u8>,
}

impl std::fmt::Debug for Adopted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adopted")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("tls", &self.tls.is_some())
            .field("prefix", &self.prefix.len())
            .finish()
    }
}

/// A command for a shard's thread.
#[derive(Debug)]
pub enum ShardCmd {
    /// Serve this TURN connection from now on.
    Adopt(Adopted),
    /// List allocations: (shard, allocations).
    List(std::sync::mpsc::Sender<(usize, Vec<crate::proto::AllocationInfo>)>),
    /// End allocations: one by (shard, key, serial), or all of a user's; replies with the count.
    End {
        /// (shard, key, serial).
        id: Option<(usize, usize, u32)>,
        /// Username.
        user: Option<String>,
        /// Reply channel.
        reply: std::sync::mpsc::Sender<usize>,
    },
    /// Send a copy of the core's counters: (shard, counters).
    Stats(std::sync::mpsc::Sender<(usize, Stats)>),
    /// Use these credentials and this peer policy from now on; reply when done.
    Reload {
        /// The new credentials.
        credentials: Credentials,
        /// The new peer policy.
        policy: PeerPolicy,
        /// Acknowledgement.
        reply: std::sync::mpsc::Sender<()>,
    },
}

/// A cloneable handle on a running server for operators (admin API, metrics, signals).
#[derive(Debug, Clone)]
pub struct Control {
    /// Relay resources shared by the shards (ports, quotas, drain switch).
    pub shared: Arc<Shared>,
    /// The credentials the shards use (the web side mints REST credentials from them).
    credentials: Arc<Mutex<Credentials>>,
    /// Each shard's counters as it last reported them.
    last_stats: Arc<Mutex<Vec<Stats>>>,
    /// Connection counters.
    pub limits: Arc<ConnLimits>,
    /// TLS certificate store.
    pub tls: Option<Arc<tls::TlsStore>>,
    cmds: Vec<std::sync::mpsc::Sender<ShardCmd>>,
    wakers: Vec<Arc<mio::Waker>>,
    own_ips: Vec<IpAddr>,
    sfu_addrs: Vec<SocketAddr>,
    listeners: Vec<SocketAddr>,
    /// The XDP fast path, when it is attached.
    xdp: Option<Arc<crate::xdp::FastPath>>,
}

impl Control {
    fn broadcast(&self, make: impl Fn() -> ShardCmd) {
        for (tx, w) in self.cmds.iter().zip(&self.wakers) {
            let _ = tx.send(make());
            let _ = w.wake();
        }
    }

    /// Hand a TURN connection accepted on a shared port to a shard (chosen by the client's
    /// address). False when every shard has stopped.
    pub fn adopt(&self, conn: Adopted) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conn.peer.hash(&mut h);
        let n = self.cmds.len().max(1);
        let i = (h.finish() % n as u64) as usize;
        match (self.cmds.get(i), self.wakers.get(i)) {
            (Some(tx), Some(w)) => tx.send(ShardCmd::Adopt(conn)).is_ok() && w.wake().is_ok(),
            _ => false,
        }
    }

    /// Ask every shard and collect one answer each (2 s at most in all).
    fn ask<T>(&self, make: impl Fn(std::sync::mpsc::Sender<T>) -> ShardCmd) -> Vec<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.broadcast(|| make(tx.clone()));
        drop(tx);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut out = Vec::with_capacity(self.cmds.len());
        for _ in 0..self.cmds.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    /// The server's counters: every shard's, summed. A shard that does not answer within the
    /// deadline (or has stopped) counts with the last figures it gave, so counters never go
    /// backwards.
    pub fn stats(&self) -> Stats {
        let fresh = self.ask(ShardCmd::Stats);
        let mut last = self.last_stats.lock().unwrap_or_else(|e| e.into_inner());
        for (shard, s) in fresh {
            if let Some(slot) = last.get_mut(shard) {
                *slot = s;
            }
        }
        let mut total = Stats::default();
        for s in last.iter() {
            total.add(s);
        }
        total
    }

    /// The credentials in force.
    pub fn credentials(&self) -> Credentials {
        self.credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What `/metrics` shows, read now (`signaling`: rooms and participants of the web side).
    pub fn metrics(&self, signaling: Option<(usize, usize)>) -> crate::metrics::Snapshot {
        crate::metrics::Snapshot {
            stats: self.stats(),
            ports_in_use: self.shared.ports.in_use(),
            ports_capacity: self.shared.ports.capacity(),
            streams_open: self.limits.open(),
            streams_accepted: self.limits.accepted.load(Ordering::Relaxed),
            streams_refused: self.limits.refused.load(Ordering::Relaxed),
            tls_handshakes: self.limits.handshakes_in_progress(),
            signaling,
            sfu: None,
            xdp: self.xdp.as_ref().map(|x| x.counters()),
        }
    }

    /// The XDP fast path, when it is attached.
    pub fn xdp(&self) -> Option<&crate::xdp::FastPath> {
        self.xdp.as_deref()
    }

    /// Whether new allocations are refused (drain).
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Every allocation, with its id `shard/key/serial`. What the XDP fast path relayed on
    /// live routes is read from the kernel here, on the caller's thread: two map reads per
    /// route would otherwise pause a shard's relaying for a long list. A route removed between
    /// the listing and the reads has handed its count to the core after the listing, so the
    /// listing is taken again (up to 3 times; after that, one listing may miss such a route's
    /// kernel bytes, never count them twice).
    pub fn list_allocations(&self) -> Vec<(String, crate::proto::AllocationInfo)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let removed = self.xdp.as_ref().map(|x| x.removed());
            let mut out: Vec<_> = self
                .ask(ShardCmd::List)
                .into_iter()
                .flat_map(|(shard, list)| {
                    list.into_iter()
                        .map(move |a| (format!("{shard}-{}-{}", a.key, a.serial), a))
                })
                .collect();
            if let Some(x) = &self.xdp {
                for (_, a) in &mut out {
                    for r in std::mem::take(&mut a.offloaded) {
                        let (to_peer, to_client) = x.route_bytes(&r.ft, r.channel, r.relay, r.peer);
                        a.bytes_to_peer += to_peer;
                        a.bytes_to_client += to_client;
                    }
                }
                if removed != Some(x.removed()) && attempt < 3 {
                    continue;
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            return out;
        }
    }

    /// End one allocation by id (`shard-key-serial`) or all of a user's; returns how many.
    pub fn end_allocations(&self, id: Option<&str>, user: Option<&str>) -> usize {
        let id = id.and_then(|s| {
            let mut it = s.split('-');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ))
        });
        if id.is_none() && user.is_none() {
            return 0;
        }
        let user = user.map(str::to_owned);
        self.ask(|reply| ShardCmd::End {
            id,
            user: user.clone(),
            reply,
        })
        .into_iter()
        .sum()
    }

    /// Refuse new allocations (shutdown drain) or accept them again.
    pub fn set_draining(&self, on: bool) {
        self.shared.set_draining(on);
    }

    /// Live allocations on the server.
    pub fn live_allocations(&self) -> usize {
        self.shared.quotas.total()
    }

    /// Apply a reloaded config: credentials, peer policy, quotas, TLS certificates. Listener
    /// changes are not applied; the returned notes say what needs a restart.
    pub fn apply(&self, old: &ValidConfig, new: &ValidConfig) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        if old.listen != new.listen
            || old.tls_listen != new.tls_listen
            || old.alt_listen != new.alt_listen
            || old.relay_ips != new.relay_ips
            || old.external_ips != new.external_ips
            || old.relay_ports != new.relay_ports
            || old.threads != new.threads
            || old.http.as_ref().map(|h| h.addr) != new.http.as_ref().map(|h| h.addr)
            || old.xdp_interfaces != new.xdp_interfaces
        {
            notes.push("listener, relay address, port range, thread or xdp-interface changes need a restart; they were not applied".to_owned());
        }
        let (oq, nq) = (&old.quota, &new.quota);
        if oq.permissions_per_allocation != nq.permissions_per_allocation
            || oq.channels_per_allocation != nq.channels_per_allocation
            || oq.default_lifetime != nq.default_lifetime
            || oq.max_lifetime != nq.max_lifetime
            || oq.connections_per_ip != nq.connections_per_ip
        {
            notes.push("per-allocation and per-connection limits (permissions, channels, lifetimes, connections) apply after a restart; allocation quotas were applied".to_owned());
        }
        if old.realm != new.realm {
            notes.push("a new realm applies to new nonces and allocations".to_owned());
        }
        if let Some(t) = &self.tls {
            t.reload().map_err(|e| e.to_string())?;
        }
        let policy = PeerPolicy::new(
            new.allow_peers.clone(),
            new.deny_peers.clone(),
            self.own_ips.clone(),
            self.listeners.clone(),
        )
        .with_sfu(self.sfu_addrs.clone());
        // A generated secret is carried over by `ValidConfig::reread` (browsers hold
        // credentials minted from it); users and configured secrets come from the new config.
        let creds = new.credentials.clone();
        *self.credentials.lock().unwrap_or_else(|e| e.into_inner()) = creds.clone();
        self.ask(|reply| ShardCmd::Reload {
            credentials: creds.clone(),
            policy: policy.clone(),
            reply,
        });
        self.shared.quotas.set_limits(QuotaLimits {
            per_user: new.quota.allocations_per_user,
            per_ip: new.quota.allocations_per_ip,
            total: new.quota.total_allocations,
        });
        Ok(notes)
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// Bound UDP listener addresses (actual ports when 0 was asked).
    pub udp_addrs: Vec<SocketAddr>,
    /// RFC 5780 addresses when `--alt-listen` is set.
    pub rfc5780: Option<crate::proto::Rfc5780>,
    /// TCP listener addresses (same ports as UDP).
    pub tcp_addrs: Vec<SocketAddr>,
    /// TLS listener addresses.
    pub tls_addrs: Vec<SocketAddr>,
    /// The TLS certificate store (reloadable).
    pub tls: Option<Arc<tls::TlsStore>>,
    /// Relay addresses in use (bind/advertise).
    pub relays: Vec<RelayAddr>,
    /// Relay resources shared by the shards (ports, quotas).
    pub shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    control: Control,
}

impl ServerHandle {
    /// The operator handle.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The REST secrets the server accepts (the first one mints demo credentials).
    pub fn rest_secret(&self) -> Option<Secret> {
        self.control.credentials().secrets().first().cloned()
    }

    /// The server's counters, summed over shards.
    pub fn stats(&self) -> Stats {
        self.control.stats()
    }

    /// Stop every shard, end all allocations and wait for the threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Connection limits shared by every shard (touched on accept and close only).
#[derive(Debug)]
pub struct ConnLimits {
    per_ip: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
    /// Open connections, counted against the cap or not.
    open: AtomicUsize,
    handshakes: AtomicUsize,
    max_handshakes: usize,
    /// Connections accepted.
    pub accepted: std::sync::atomic::AtomicU64,
    /// Connections refused by the per-IP cap or the handshake cap.
    pub refused: std::sync::atomic::AtomicU64,
}

impl ConnLimits {
    fn new(per_ip: usize, max_handshakes: usize) -> Self {
        Self {
            per_ip,
            counts: Mutex::default(),
            open: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            max_handshakes,
            accepted: Default::default(),
            refused: Default::default(),
        }
    }
    /// Count a new connection from `ip`; false when over the per-IP cap.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let ok = self.count(ip);
        if ok {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            self.open.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
    /// A connection from `ip` closed; `counted`: it was still counted against the cap.
    pub fn close(&self, ip: IpAddr, counted: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if counted {
            self.uncount(ip);
        }
    }
    /// Count an open connection from `ip` again (its allocation is gone); false when over
    /// the per-IP cap (it is closed then, and counted as refused).
    pub fn recount(&self, ip: IpAddr) -> bool {
        self.count(ip)
    }
    fn count(&self, ip: IpAddr) -> bool {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(ip).or_default();
        if *n >= self.per_ip {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *n += 1;
        true
    }
    /// Stop counting an open connection from `ip` against the cap (it holds an allocation).
    pub fn uncount(&self, ip: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&ip);
            }
        }
    }
    /// A TLS handshake starts; false when too many are in progress.
    pub fn handshake_start(&self) -> bool {
        let prev = self.handshakes.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_handshakes {
            self.handshakes.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
    /// A TLS handshake finished or its connection closed.
    pub fn handshake_done(&self) {
        self.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
    /// TLS handshakes in progress.
    pub fn handshakes_in_progress(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }
    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Stream (TCP/TLS) deadlines and buffers.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Deadline for the first valid message and for finishing a started frame.
    pub first_message: Duration,
    /// Idle deadline without an allocation.
    pub idle: Duration,
    /// Write buffer cap per connection.
    pub stream_buffer: usize,
    /// TLS certificates (None: TLS ClientHellos are refused).
    pub tls: Option<Arc<tls::TlsStore>>,
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Claim `want` for this process before its `SO_REUSEPORT` group is bound: a socket without
/// `SO_REUSEPORT` cannot bind a port that any other socket holds, so a second server on the
/// same port is refused here instead of silently joining the group and splitting traffic with
/// the first. Returns the port to bind (the kernel's choice when `want` has port 0). The probe
/// is closed before the group binds; a server started in that instant can still slip in.
fn claim_port(want: SocketAddr, ty: Type) -> Result<SocketAddr, StartError> {
    let (proto, protocol) = if ty == Type::DGRAM {
        ("UDP", Protocol::UDP)
    } else {
        ("TCP", Protocol::TCP)
    };
    let listen_err = |source| StartError::Listen { addr: want, source };
    let s = Socket::new(Domain::for_address(want), ty, Some(protocol)).map_err(listen_err)?;
    if want.is_ipv6() {
        s.set_only_v6(true).map_err(listen_err)?;
    }
    if ty == Type::STREAM {
        // TIME_WAIT leftovers of an earlier run are not a live listener.
        s.set_reuse_address(true).map_err(listen_err)?;
    }
    match s.bind(&want.into()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(StartError::InUse { proto, addr: want });
        }
        Err(source) => return Err(StartError::Listen { addr: want, source }),
    }
    s.local_addr()?.as_socket().ok_or(StartError::NoListener)
}

/// Bind a TCP listener per shard at `want`; returns the actual address.
fn bind_tcp_everywhere(
    want: SocketAddr,
    per_shard: &mut [Vec<std::net::TcpListener>],
) -> Result<SocketAddr, StartError> {
    let want = claim_port(want, Type::STREAM)?;
    let first = tcp_listener(want).map_err(|source| StartError::Listen { addr: want, source })?;
    let actual = first.local_addr()?;
    per_shard[0].push(first);
    for shard in per_shard.iter_mut().skip(1) {
        shard.push(tcp_listener(actual).map_err(|source| StartError::Listen {
            addr: actual,
            source,
        })?);
    }
    Ok(actual)
}

/// The local address the kernel would use to reach the internet (no packet is sent: a UDP
/// `connect` only consults the routing table). Documentation addresses are used as the
/// destination, so nothing real is ever named.
pub fn route_source(v6: bool) -> Option<IpAddr> {
    let (bind, dst): (SocketAddr, SocketAddr) = if v6 {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            "[2001:db8::1]:9".parse().ok()?,
        )
    } else {
        (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            "192.0.2.1:9".parse().ok()?,
        )
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(dst).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Relay IPs: explicit ones, else per listener family the listener IP (if not a wildcard) or
/// the routing source address; then external-IP mappings.
pub fn resolve_relays(cfg: &ValidConfig, listeners: &[SocketAddr]) -> Vec<RelayAddr> {
    let mut ips: Vec<IpAddr> = cfg.relay_ips.clone();
    if ips.is_empty() {
        for l in listeners {
            let ip = if l.ip().is_unspecified() {
                route_source(l.is_ipv6()).or_else(|| {
                    if l.is_ipv4() {
                        tracing::warn!(
                            "no route to the internet: relaying on 127.0.0.1 only (set --relay-ip)"
                        );
                        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    } else {
                        None
                    }
                })
            } else {
                Some(l.ip())
            };
            if let Some(ip) = ip {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    for e in &cfg.external_ips {
        if let Some(p) = e.private {
            if !ips.contains(&p) {
                ips.push(p);
            }
        }
    }
    ips.iter()
        .map(|&bind| {
            let advertise = cfg
                .external_ips
                .iter()
                .find(|e| e.private == Some(bind))
                .or_else(|| {
                    cfg.external_ips
                        .iter()
                        .find(|e| e.private.is_none() && e.public.is_ipv4() == bind.is_ipv4())
                })
                .map_or(bind, |e| e.public);
            RelayAddr { bind, advertise }
        })
        .collect()
}

/// The listeners take coalesced receives (UDP_GRO) unless `NATPASS_UDP_GRO=0`.
pub(crate) fn gro_enabled() -> bool {
    std::env::var("NATPASS_UDP_GRO").map_or(true, |v| v != "0")
}

// nix 0.30 has no IP_MTU_DISCOVER / IPV6_MTU_DISCOVER; its own macro defines them (the
// setsockopt call is nix's).
use nix::{getsockopt_impl, setsockopt_impl};
nix::sockopt_impl!(
    /// `IP_MTU_DISCOVER`.
    IpMtuDiscover,
    Both,
    libc::IPPROTO_IP,
    libc::IP_MTU_DISCOVER,
    libc::c_int,
    nix::sys::socket::sockopt::GetStruct<libc::c_int>,
    nix::sys::socket::sockopt::SetStruct<'_, libc::c_int>
);
nix::sockopt_impl!(
    /// `IPV6_MTU_DISCOVER`.
    Ipv6MtuDiscover,
    Both,
    libc::IPPROTO_IPV6,
    libc::IPV6_MTU_DISCOVER,
    libc::c_int,
    nix::sys::socket::sockopt::GetStruct<libc::c_int>,
    nix::sys::socket::sockopt::SetStruct<'_, libc::c_int>
);

/// A socket's fragmentation settings, which quinn-udp's set-up changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragmentation {
    pub(crate) ip: Option<libc::c_int>,
    pub(crate) ipv6: Option<(libc::c_int, bool)>,
}

pub(crate) fn fragmentation(sock: &std::net::UdpSocket, v6: bool) -> Fragmentation {
    use nix::sys::socket::{getsockopt, sockopt::Ipv6DontFrag};
    Fragmentation {
        ip: getsockopt(sock, IpMtuDiscover).ok(),
        ipv6: v6
            .then(|| {
                Some((
                    getsockopt(sock, Ipv6MtuDiscover).ok()?,
                    getsockopt(sock, Ipv6DontFrag).ok()?,
                ))
            })
            .flatten(),
    }
}

fn set_fragmentation(sock: &std::net::UdpSocket, f: Fragmentation) {
    use nix::sys::socket::{setsockopt, sockopt::Ipv6DontFrag};
    if let Some(v) = f.ip {
        let _ = setsockopt(sock, IpMtuDiscover, &v);
    }
    if let Some((v, dontfrag)) = f.ipv6 {
        let _ = setsockopt(sock, Ipv6MtuDiscover, &v);
        let _ = setsockopt(sock, Ipv6DontFrag, &dontfrag);
    }
}

/// Turn UDP_GRO on for a listener through quinn-udp, which then reads its receives: a burst
/// from one client comes up as one buffer plus its segment size, split again by the shard
/// (zero copy). quinn-udp also asks for each datagram's destination address and ECN bits
/// (unused), and sets the socket to never fragment; that is undone here, so a datagram to a
/// client larger than the path MTU is still fragmented by the host as before. None (and GRO
/// off again) when the kernel has no GRO or the set-up fails.
pub(crate) fn gro_state(
    sock: &std::net::UdpSocket,
    local: SocketAddr,
) -> Option<quinn_udp::UdpSocketState> {
    let before = fragmentation(sock, local.is_ipv6());
    let state = quinn_udp::UdpSocketState::new(sock.into());
    set_fragmentation(sock, before);
    let off = || {
        let _ =
            nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::UdpGroSegment, &false);
    };
    match state {
        Ok(state) if state.gro_segments() > 1 => Some(state),
        Ok(_) => {
            off();
            tracing::info!(%local, "UDP GRO not available; plain receives");
            None
        }
        Err(e) => {
            off();
            tracing::warn!(%local, error = %e, "UDP GRO setup failed; plain receives");
            None
        }
    }
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Bigger buffers absorb bursts; the kernel caps them at net.core.[rw]mem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Bind `want` once per shard (the same actual port for every shard); returns the address.
fn bind_everywhere(
    want: SocketAddr,
    per_shard: &mut [Vec<std::net::UdpSocket>],
) -> Result<SocketAddr, StartError> {
    // With port 0 the claimed port is free but not held; should another socket take it before
    // the group binds, claim another (a few times at most).
    let mut tries = if want.port() == 0 { 3 } else { 1 };
    let first = loop {
        let claimed = claim_port(want, Type::DGRAM)?;
        tries -= 1;
        match udp_socket(claimed, true) {
            Ok(s) => break s,
            Err(e) if tries > 0 && e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(source) => {
                return Err(StartError::Listen {
                    addr: claimed,
                    source,
                });
            }
        }
    };
    let actual = first
        .local_addr()?
        .as_socket()
        .ok_or(StartError::NoListener)?;
    per_shard[0].push(first.into());
    for shard in per_shard.iter_mut().skip(1) {
        let s = udp_socket(actual, true).map_err(|source| StartError::Listen {
            addr: actual,
            source,
        })?;
        shard.push(s.into());
    }
    Ok(actual)
}

type Listeners = (
    Vec<SocketAddr>,
    Option<crate::proto::Rfc5780>,
    Vec<Vec<std::net::UdpSocket>>,
);

/// Bind the listeners, plus the three extra RFC 5780 addresses when an alternate is configured.
fn bind_listeners(cfg: &ValidConfig) -> Result<Listeners, StartError> {
    let (addrs, mut per_shard) = bind_primary(cfg)?;
    let mut rfc5780 = None;
    if let Some(alt) = cfg.alt_listen {
        let primary = *addrs
            .iter()
            .find(|l| l.is_ipv4() == alt.is_ipv4() && !l.ip().is_unspecified())
            .ok_or(StartError::NoListener)?;
        let alt = bind_everywhere(alt, &mut per_shard)?;
        let five = crate::proto::Rfc5780 { primary, alt };
        let [_, a1p2, a2p1, _] = five.all();
        bind_everywhere(a1p2, &mut per_shard)?;
        bind_everywhere(a2p1, &mut per_shard)?;
        rfc5780 = Some(five);
    }
    Ok((addrs, rfc5780, per_shard))
}

/// Bind one listener per shard for each listen address.
fn bind_primary(
    cfg: &ValidConfig,
) -> Result<(Vec<SocketAddr>, Vec<Vec<std::net::UdpSocket>>), StartError> {
    let mut addrs = Vec::new();
    let mut per_shard: Vec<Vec<std::net::UdpSocket>> =
        (0..cfg.threads).map(|_| Vec::new()).collect();
    for &want in &cfg.listen {
        let before = per_shard[0].len();
        match bind_everywhere(want, &mut per_shard) {
            Ok(actual) => addrs.push(actual),
            // The default [::] listener on a host without IPv6: carry on without it.
            Err(StartError::Listen { source, .. })
                if want.is_ipv6() && want.ip().is_unspecified() && per_shard[0].len() == before =>
            {
                tracing::warn!(addr = %want, error = %source, "IPv6 listener unavailable; continuing without it");
            }
            Err(e) => return Err(e),
        }
    }
    if addrs.is_empty() {
        return Err(StartError::NoListener);
    }
    Ok((addrs, per_shard))
}

/// Every listener socket, bound.
struct Bound {
    udp_addrs: Vec<SocketAddr>,
    rfc5780: Option<crate::proto::Rfc5780>,
    per_shard: Vec<Vec<std::net::UdpSocket>>,
    tcp_per_shard: Vec<Vec<std::net::TcpListener>>,
    tcp_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
}

/// Bind UDP, then TCP on the same ports, then TLS; nothing stays bound on error.
fn bind_all(cfg: &ValidConfig) -> Result<Bound, StartError> {
    let (udp_addrs, rfc5780, per_shard) = bind_listeners(cfg)?;
    let mut tcp_per_shard: Vec<Vec<std::net::TcpListener>> =
        (0..cfg.threads).map(|_| Vec::new()).collect();
    let mut tcp_addrs = Vec::new();
    for a in &udp_addrs {
        tcp_addrs.push(bind_tcp_everywhere(*a, &mut tcp_per_shard)?);
    }
    let mut tls_addrs = Vec::new();
    // A port shared with the web side is bound (and split) there; its TURN connections come
    // to the shards through `Control::adopt`.
    let shared = cfg
        .http
        .as_ref()
        .filter(|h| h.tls == crate::config::HttpTls::SharedWithTurn)
        .map(|h| h.addr);
    for a in &cfg.tls_listen {
        if Some(*a) == shared {
            tls_addrs.push(*a);
            continue;
        }
        tls_addrs.push(bind_tcp_everywhere(*a, &mut tcp_per_shard)?);
    }
    Ok(Bound {
        udp_addrs,
        rfc5780,
        per_shard,
        tcp_per_shard,
        tcp_addrs,
        tls_addrs,
    })
}

/// Start the server with a validated config.
pub fn start(cfg: &ValidConfig) -> Result<ServerHandle, StartError> {
    let tls_store = match (&cfg.tls_files, &cfg.acme) {
        (Some((c, k)), _) => Some(Arc::new(tls::TlsStore::new(c.clone(), k.clone())?)),
        // ACME: the kept certificate, or a placeholder until the first issuance.
        (None, Some(a)) => Some(Arc::new(tls::TlsStore::with_key(
            crate::acme::initial_key(a)?,
        )?)),
        (None, None) => None,
    };
    // With port 0 the kernel picks the UDP port and TCP must take the same number, which
    // another program's socket may hold: then pick again (a few times at most). A port the
    // operator named is never retried: it is in use, and that is the answer.
    let mut tries = if cfg.listen.iter().any(|a| a.port() == 0) {
        8
    } else {
        1
    };
    let bound = loop {
        tries -= 1;
        match bind_all(cfg) {
            Err(StartError::InUse { .. }) if tries > 0 => continue,
            other => break other?,
        }
    };
    let Bound {
        udp_addrs,
        rfc5780,
        per_shard,
        tcp_per_shard,
        tcp_addrs,
        tls_addrs,
    } = bound;
    let relays = resolve_relays(cfg, &udp_addrs);
    let mut listener_addrs = udp_addrs.clone();
    listener_addrs.extend_from_slice(&tls_addrs);
    if let Some(f) = rfc5780 {
        listener_addrs.extend_from_slice(&f.all()[1..]);
    }
    let mut own_ips: Vec<IpAddr> = Vec::new();
    let mut cmd_senders = Vec::new();
    for r in &relays {
        for ip in [r.bind, r.advertise] {
            if !own_ips.contains(&ip) {
                own_ips.push(ip);
            }
        }
    }
    let policy = PeerPolicy::new(
        cfg.allow_peers.clone(),
        cfg.deny_peers.clone(),
        own_ips.clone(),
        listener_addrs.clone(),
    )
    .with_sfu(cfg.sfu_addrs.clone());
    let bind_ips: Vec<IpAddr> = relays.iter().map(|r| r.bind).collect();
    let ports = PortPool::new(&bind_ips, cfg.relay_ports.min..=cfg.relay_ports.max);
    let quotas = Quotas::new(QuotaLimits {
        per_user: cfg.quota.allocations_per_user,
        per_ip: cfg.quota.allocations_per_ip,
        total: cfg.quota.total_allocations,
    });
    let shared = Arc::new(Shared::new(quotas, ports));
    let nonce_key: [u8; 32] = rand::random();
    let shards = cfg.threads as f64;
    let core_cfg = CoreConfig {
        realm: cfg.realm.clone(),
        software: cfg.software.clone(),
        relays: relays.clone(),
        default_lifetime: cfg.quota.default_lifetime,
        max_lifetime: cfg.quota.max_lifetime,
        max_permissions: cfg.quota.permissions_per_allocation,
        max_channels: cfg.quota.channels_per_allocation,
        max_channel_number: if cfg.strict_channel_numbers {
            0x4FFF
        } else {
            0x7FFF
        },
        nonce_lifetime: cfg.nonce_lifetime,
        challenge_rate: cfg.quota.challenges_per_second / shards,
        failures_per_minute: cfg.quota.auth_failures_per_minute / shards,
        rfc5780,
        alternate_servers: cfg.alternate_servers.clone(),
        ..CoreConfig::default()
    };
    let xdp = attach_xdp(&cfg.xdp_interfaces);
    let mut core_cfg = CoreConfig {
        offload: xdp.is_some(),
        ..core_cfg
    };
    // Tests only (the XDP lab's expiry test): RFC 8656 fixes permissions at 300 s, and no
    // setting offers another value.
    if let Some(s) = std::env::var("NATPASS_TEST_PERMISSION_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| (1..=300).contains(s))
    {
        core_cfg.permission_lifetime = Duration::from_secs(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut wakers = Vec::new();
    let mut threads = Vec::new();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let limits = Arc::new(ConnLimits::new(
        cfg.quota.connections_per_ip,
        cfg.quota.tls_handshakes,
    ));
    let settings = StreamSettings {
        first_message: Duration::from_secs(cfg.quota.first_message_timeout),
        idle: Duration::from_secs(cfg.quota.idle_timeout),
        stream_buffer: cfg.quota.stream_buffer,
        tls: tls_store.clone(),
    };
    for (i, (sockets, tcp)) in per_shard.into_iter().zip(tcp_per_shard).enumerate() {
        let resources = ShardResources::new(shared.clone(), policy.clone(), relays.clone());
        let core = crate::proto::Core::new(
            core_cfg.clone(),
            resources,
            cfg.credentials.clone(),
            nonce_key,
            rand::random(),
            Instant::now(),
            unix_now,
        );
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        cmd_senders.push(cmd_tx);
        let shard = shard::Shard::new(
            i,
            core,
            sockets,
            tcp,
            stop.clone(),
            limits.clone(),
            settings.clone(),
            cmd_rx,
            xdp.clone(),
        )?;
        wakers.push(shard.waker());
        threads.push(
            std::thread::Builder::new()
                .name(format!("natpass-shard-{i}"))
                .spawn(move || shard.run())?,
        );
    }
    for a in &udp_addrs {
        tracing::info!(addr = %a, "STUN/TURN listening (udp, tcp{})", if tls_store.is_some() { ", tls" } else { "" });
    }
    for a in &tls_addrs {
        tracing::info!(addr = %a, "STUN/TURN listening (tls, tcp)");
    }
    if let Some(f) = rfc5780 {
        tracing::info!(primary = %f.primary, alternate = %f.alt, "RFC 5780 NAT behaviour discovery enabled");
    }
    for r in &relays {
        if r.bind == r.advertise {
            tracing::info!(relay = %r.bind, ports = %format!("{}-{}", cfg.relay_ports.min, cfg.relay_ports.max), "relaying");
        } else {
            tracing::info!(relay = %r.bind, advertised = %r.advertise, "relaying behind 1:1 NAT");
        }
    }
    let control = Control {
        shared: shared.clone(),
        credentials: Arc::new(Mutex::new(cfg.credentials.clone())),
        last_stats: Arc::new(Mutex::new(vec![Stats::default(); wakers.len()])),
        limits: limits.clone(),
        tls: tls_store.clone(),
        cmds: cmd_senders,
        wakers: wakers.clone(),
        own_ips,
        sfu_addrs: cfg.sfu_addrs.clone(),
        listeners: listener_addrs,
        xdp,
    };
    Ok(ServerHandle {
        control,
        udp_addrs,
        rfc5780,
        tcp_addrs,
        tls_addrs,
        tls: tls_store,
        relays,
        shared,
        stop,
        wakers,
        threads,
    })
}

/// The XDP fast path on `ifaces`, or None (off, or it could not be attached: said why).
fn attach_xdp(ifaces: &[String]) -> Option<Arc<crate::xdp::FastPath>> {
    if ifaces.is_empty() {
        return None;
    }
    match crate::xdp::FastPath::attach(ifaces) {
        Ok(x) => {
            for (iface, mode) in &x.attached {
                tracing::info!(%iface, mode, "XDP fast path attached: channel traffic is forwarded in the kernel");
            }
            Some(Arc::new(x))
        }
        Err(e) => {
            tracing::warn!(error = %e, "XDP fast path off; relaying in userspace");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, ValidConfig};

    fn cfg(relay: &[&str], external: &[&str]) -> ValidConfig {
        ValidConfig::embedded(Overrides {
            relay_ips: relay.iter().map(|s| s.parse().unwrap()).collect(),
            external_ips: external.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn external_ip_advertises_public_and_binds_private() {
        let l: Vec<SocketAddr> = vec!["0.0.0.0:3478".parse().unwrap()];
        let r = resolve_relays(&cfg(&[], &["203.0.113.5/10.0.0.5"]), &l);
        let want = RelayAddr {
            bind: "10.0.0.5".parse().unwrap(),
            advertise: "203.0.113.5".parse().unwrap(),
        };
        assert!(r.contains(&want), "{r:?}");
        let r = resolve_relays(&cfg(&["10.0.0.7"], &["203.0.113.7"]), &l);
        assert_eq!(
            r,
            vec![RelayAddr {
                bind: "10.0.0.7".parse().unwrap(),
                advertise: "203.0.113.7".parse().unwrap()
            }]
        );
    }

    #[test]
    fn listen_address_is_the_default_relay_when_not_a_wildcard() {
        let l: Vec<SocketAddr> = vec!["127.0.0.3:3478".parse().unwrap()];
        let r = resolve_relays(&cfg(&[], &[]), &l);
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(
            r,
            vec![RelayAddr {
                bind: ip,
                advertise: ip
            }]
        );
    }
}
