//! One shard's event loop: mio over its listener copies (UDP, TCP), its TCP/TLS connections
//! and its relay sockets.
//!
//! Hot path: `recv_from` into a fixed buffer (peer datagrams land 4 bytes in, so a ChannelData
//! header is written in place), one call into the core, `send_to` of a sub-slice. No
//! allocation, lock or `.await` between receive and send. Work per socket per wake-up is
//! capped; sockets not drained are revisited before sleeping again.
//!
//! Streams (RFC 8656 §3.1): TCP and TLS connections are framed with
//! [`crate::proto::framing`]; each connection is its own 5-tuple; a TLS ClientHello (first
//! byte 0x16) on any TCP listener switches the connection to TLS when a certificate is
//! configured, so one port can serve both. Limits: connections per IP, TLS handshakes in
//! progress, a deadline for the first valid message and for any started frame, an idle
//! deadline without an allocation, bounded read and write buffers.

use super::{ConnLimits, ShardCmd, StreamSettings};
use crate::proto::channel_data::{encode_header_to_slice, stream_padding};
use crate::proto::framing;
use crate::proto::{
    Core, DropReason, FiveTuple, PeerRoute, RelayOwner, RelaySockets, Transmit, Transport,
};
use crate::relay::ShardResources;
use crate::udp::{PEER_OFFSET, Pool, SLOTS, Tx, TxSock};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const TCP_LISTENER_BASE: usize = 1 << 16;
const RELAY_BASE: usize = 1 << 20;
const CONN_BASE: usize = 1 << 28;
/// Datagrams read from one socket per wake-up before others get a turn.
const BUDGET: usize = 256;
/// Datagrams in one round after which the shard polls without sleeping for a while.
const SPIN_AFTER: usize = 8;
/// How long it polls without sleeping after such a round: long enough for the next packets of
/// a burst (a video frame, a closed loop's round trip) to arrive, short enough that paced
/// traffic still sleeps between bursts (100 µs cost 10 % more CPU with calls' pacing than 50;
/// docs/performance.md, media section).
const SPIN_WINDOW_US: u64 = 50;
/// Idle polling per round that found datagrams above which polling stops for a while: about
/// what a sleep and a wake-up cost. On this project's VMs polling still lowered the server's CPU
/// at 15 µs per catch (calls on loopback) and never paid where the kernel's receive path shares
/// the core (hundreds of µs per catch); docs/performance.md, media section.
const SPIN_COST_US: u64 = 20;
/// A number from the environment (measurement knobs), or the default.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const BUF: usize = 65_536 + 8;
/// The largest frame on a stream: a STUN message of 65535+20 bytes or padded ChannelData.
const MAX_FRAME: usize = 65_536 + 20;

struct RelaySock {
    sock: UdpSocket,
    owner: RelayOwner,
    /// Receive headers are kept per address family.
    v6: bool,
    /// Bumped on every bind so queued datagrams never leave from a reused slab key.
    generation: u64,
}

/// The shard's relay sockets by slab key.
#[derive(Default)]
struct RelayTable {
    slab: Slab<RelaySock>,
    next_generation: u64,
}

struct Listener {
    sock: UdpSocket,
    local: SocketAddr,
    /// UDP_GRO on (quinn-udp turned it on and reads the segment sizes); None: plain receives
    /// (`NATPASS_UDP_GRO=0`, or a kernel without it).
    gro: Option<quinn_udp::UdpSocketState>,
}

struct TcpListen {
    sock: TcpListener,
    local: SocketAddr,
}

#[derive(PartialEq, Eq)]
enum Mode {
    /// Waiting for the first byte.
    Detect,
    Plain,
    Tls,
}

struct Conn {
    stream: TcpStream,
    ft: FiveTuple,
    mode: Mode,
    tls: Option<Box<rustls::ServerConnection>>,
    rbuf: Vec<u8>,
    /// Bytes for the client not written yet: plain bytes for the socket, or (TLS) plaintext
    /// not yet handed to rustls. Filled during a round, written once at its end.
    wbuf: Vec<u8>,
    /// In the shard's list of connections to write at the end of this round.
    dirty: bool,
    accepted: Instant,
    last_rx: Instant,
    partial_since: Option<Instant>,
    valid: bool,
    handshaking: bool,
    writable: bool,
    closing: bool,
    /// Counted against the per-IP connection cap. A connection that holds an allocation is
    /// not: the allocation quotas bound those (a TCP connection carries one allocation), and a
    /// call behind one NAT opens one per peer connection and transport. It counts again when
    /// its allocation is gone.
    counted: bool,
}

impl Conn {
    /// A connection just accepted (or adopted), counted against its address's cap.
    fn new(
        stream: TcpStream,
        ft: FiveTuple,
        mode: Mode,
        tls: Option<Box<rustls::ServerConnection>>,
        rbuf: Vec<u8>,
        now: Instant,
    ) -> Self {
        Self {
            stream,
            ft,
            mode,
            tls,
            rbuf,
            wbuf: Vec::new(),
            dirty: false,
            accepted: now,
            last_rx: now,
            partial_since: None,
            valid: false,
            handshaking: false,
            writable: false,
            closing: false,
            counted: true,
        }
    }
}

/// The relay sockets of this shard, handed to the core as its [`RelaySockets`].
struct Relays<'a> {
    registry: &'a Registry,
    table: &'a mut RelayTable,
}

impl RelaySockets for Relays<'_> {
    fn bind(&mut self, addr: SocketAddr, owner: RelayOwner) -> std::io::Result<usize> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let mut sock = UdpSocket::from_std(s.into());
        let entry = self.table.slab.vacant_entry();
        let key = entry.key();
        self.registry
            .register(&mut sock, Token(RELAY_BASE + key), Interest::READABLE)?;
        self.table.next_generation += 1;
        entry.insert(RelaySock {
            sock,
            owner,
            v6: addr.is_ipv6(),
            generation: self.table.next_generation,
        });
        Ok(key)
    }

    fn release(&mut self, handle: usize) {
        if let Some(mut r) = self.table.slab.try_remove(handle) {
            let _ = self.registry.deregister(&mut r.sock);
        }
    }
}

pub(crate) struct Shard {
    id: usize,
    poll: Poll,
    waker: Arc<Waker>,
    listeners: Vec<Listener>,
    tcp_listeners: Vec<TcpListen>,
    relays: RelayTable,
    conns: Slab<Conn>,
    conn_by_ft: HashMap<FiveTuple, usize>,
    core: Core<ShardResources>,
    stop: Arc<AtomicBool>,
    out: Vec<Transmit>,
    limits: Arc<ConnLimits>,
    settings: StreamSettings,
    next_sweep: Instant,
    cmds: std::sync::mpsc::Receiver<ShardCmd>,
    /// Same-destination runs go out as UDP GSO sends (`NATPASS_UDP_GSO=0` turns it off, to
    /// measure the difference).
    gso: bool,
    /// Busy-poll: never sleep in epoll (`NATPASS_SPIN=1`; burns the core, for measurements).
    spin: bool,
    /// When to poll without sleeping after a burst ([`super::spin::SpinPolicy`]).
    spin_policy: super::spin::SpinPolicy,
    /// Datagrams relayed in this round.
    round_datagrams: usize,
    /// The XDP fast path the core's channel routes go to.
    xdp: Option<Arc<crate::xdp::FastPath>>,
    /// Connections with bytes queued this round ([`Shard::flush_dirty`] writes them).
    dirty: Vec<usize>,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: usize,
        core: Core<ShardResources>,
        sockets: Vec<std::net::UdpSocket>,
        tcp: Vec<std::net::TcpListener>,
        stop: Arc<AtomicBool>,
        limits: Arc<ConnLimits>,
        settings: StreamSettings,
        cmds: std::sync::mpsc::Receiver<ShardCmd>,
        xdp: Option<Arc<crate::xdp::FastPath>>,
    ) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::new();
        for (i, s) in sockets.into_iter().enumerate() {
            let local = s.local_addr()?;
            let gro = super::gro_enabled()
                .then(|| super::gro_state(&s, local))
                .flatten();
            let mut sock = UdpSocket::from_std(s);
            poll.registry()
                .register(&mut sock, Token(LISTENER_BASE + i), Interest::READABLE)?;
            listeners.push(Listener { sock, local, gro });
        }
        let mut tcp_listeners = Vec::new();
        for (i, l) in tcp.into_iter().enumerate() {
            let local = l.local_addr()?;
            let mut sock = TcpListener::from_std(l);
            poll.registry().register(
                &mut sock,
                Token(TCP_LISTENER_BASE + i),
                Interest::READABLE,
            )?;
            tcp_listeners.push(TcpListen { sock, local });
        }
        Ok(Self {
            id,
            poll,
            waker,
            listeners,
            tcp_listeners,
            relays: RelayTable::default(),
            conns: Slab::new(),
            conn_by_ft: HashMap::new(),
            core,
            stop,
            out: Vec::with_capacity(16),
            limits,
            settings,
            next_sweep: Instant::now(),
            cmds,
            gso: std::env::var("NATPASS_UDP_GSO").map_or(true, |v| v != "0"),
            spin: std::env::var("NATPASS_SPIN").is_ok_and(|v| v == "1"),
            spin_policy: super::spin::SpinPolicy::new(
                env_or("NATPASS_SPIN_AFTER", SPIN_AFTER),
                Duration::from_micros(env_or("NATPASS_SPIN_WINDOW_US", SPIN_WINDOW_US)),
                Duration::from_micros(env_or("NATPASS_SPIN_COST_US", SPIN_COST_US)),
            ),
            round_datagrams: 0,
            xdp,
            dirty: Vec::new(),
        })
    }

    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // Stream reads (TCP/TLS) use `buf`; UDP datagrams go through the batch pool.
        let mut buf = vec![0u8; BUF].into_boxed_slice();
        let mut pool = Pool::new();
        let mut again: Vec<Token> = Vec::new();
        let mut next_again: Vec<Token> = Vec::new();
        // (token, writable, read until EAGAIN): an event that says the peer closed or erred,
        // and a token polled again, are read until the socket says it is empty.
        let mut tokens: Vec<(Token, bool, bool)> = Vec::with_capacity(1024);
        // The clock is read twice a round (after the wait, after the round's sends): a VM's
        // clock read is not free, and a spinning shard goes round often.
        let mut now = Instant::now();
        loop {
            let spinning = self.spin_policy.polling(now);
            // Only a wait that polls because of the policy alone is scored by it.
            let polled = spinning && again.is_empty() && !self.spin;
            let waited_from = now;
            let timeout = if again.is_empty() && !self.spin && !spinning {
                let t = self
                    .core
                    .poll_timeout()
                    .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
                t.min(Duration::from_secs(1))
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(shard = self.id, error = %e, "poll failed; shard stops");
                    break;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.close_conn(k);
                }
                let mut relays = Relays {
                    registry: self.poll.registry(),
                    table: &mut self.relays,
                };
                self.core.close_all(&mut relays);
                self.offload();
                break;
            }
            now = Instant::now();
            let woke = now;
            next_again.clear();
            tokens.clear();
            tokens.extend(events.iter().map(|e| {
                let closed = e.is_read_closed() || e.is_error();
                (e.token(), e.is_writable(), closed)
            }));
            tokens.extend(again.drain(..).map(|t| (t, false, true)));
            for &(token, writable, to_eagain) in &tokens {
                let more = match token.0 {
                    0 => {
                        self.commands(now);
                        false
                    }
                    t if t >= CONN_BASE => {
                        let key = t - CONN_BASE;
                        self.conn_event(key, writable, to_eagain, now, &mut buf, &mut pool)
                    }
                    t if t >= RELAY_BASE => self.drain_relay(t - RELAY_BASE, now, &mut pool),
                    t if t >= TCP_LISTENER_BASE => {
                        self.accept(t - TCP_LISTENER_BASE, now);
                        false
                    }
                    t => self.drain_listener(t - LISTENER_BASE, now, &mut pool),
                };
                if more && !next_again.contains(&token) {
                    next_again.push(token);
                }
            }
            self.send_queued(&mut pool);
            self.flush_dirty();
            std::mem::swap(&mut again, &mut next_again);
            now = Instant::now();
            self.spin_policy
                .round(polled, waited_from, woke, self.round_datagrams, now);
            self.round_datagrams = 0;
            let mut relays = Relays {
                registry: self.poll.registry(),
                table: &mut self.relays,
            };
            self.core.handle_timeout(now, &mut relays);
            self.offload();
            if now >= self.next_sweep {
                self.next_sweep = now + Duration::from_millis(500);
                self.sweep_conns(now);
            }
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    /// Hand the core's channel-route decisions of this round to the XDP fast path.
    fn offload(&mut self) {
        if let Some(x) = &self.xdp {
            for r in x.apply(self.core.drain_offload()) {
                self.core
                    .add_offloaded_bytes(r.owner, r.channel, r.peer, r.to_peer, r.to_client);
            }
        }
    }

    /// Operator commands from other threads (admin API, shutdown).
    fn commands(&mut self, now: Instant) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                ShardCmd::Adopt(a) => self.adopt(a, now),
                ShardCmd::List(reply) => {
                    let _ = reply.send((self.id, self.core.list(now)));
                }
                ShardCmd::End { id, user, reply } => {
                    let id = id
                        .filter(|(shard, _, _)| *shard == self.id)
                        .map(|(_, k, s)| (k, s));
                    let mut relays = Relays {
                        registry: self.poll.registry(),
                        table: &mut self.relays,
                    };
                    let n = self.core.end_matching(id, user.as_deref(), &mut relays);
                    let _ = reply.send(n);
                }
                ShardCmd::Stats(reply) => {
                    let _ = reply.send((self.id, self.core.stats().clone()));
                }
                ShardCmd::Reload {
                    credentials,
                    policy,
                    reply,
                } => {
                    self.core.set_credentials(credentials);
                    self.core.resources_mut().set_policy(policy);
                    let _ = reply.send(());
                }
            }
        }
    }

    fn listener_index(&self, server: SocketAddr) -> Option<usize> {
        self.listeners.iter().position(|l| l.local == server)
    }

    /// Send built messages to their clients (UDP listener or stream connection). A channel
    /// route the answer tells of reaches the fast path first: the client's next ChannelData
    /// may follow the ChannelBind success at once.
    fn flush(&mut self) {
        self.offload();
        let out = std::mem::take(&mut self.out);
        for t in &out {
            self.send_to_client(&t.ft, &t.data);
        }
        self.out = out;
        self.out.clear();
    }

    fn send_to_client(&mut self, ft: &FiveTuple, data: &[u8]) {
        if ft.transport == Transport::Udp {
            if let Some(l) = self.listener_index(ft.server).map(|i| &self.listeners[i]) {
                let _ = l.sock.send_to(data, ft.client);
            }
        } else if let Some(&k) = self.conn_by_ft.get(ft) {
            self.conn_write(k, data);
        }
    }

    /// Send every queued datagram, one `sendmmsg` per socket, and free the pool.
    fn send_queued(&mut self, pool: &mut Pool) {
        if pool.tx.is_empty() {
            pool.reset();
            return;
        }
        pool.sorted_tx();
        let mut i = 0;
        while i < pool.tx.len() {
            let sock = pool.tx[i].sock;
            let mut j = i + 1;
            while j < pool.tx.len() && pool.tx[j].sock == sock {
                j += 1;
            }
            let fd = match sock {
                TxSock::Listener(idx) => self.listeners.get(idx).map(|l| l.sock.as_raw_fd()),
                TxSock::Relay { key, generation } => self
                    .relays
                    .slab
                    .get(key)
                    .filter(|r| r.generation == generation)
                    .map(|r| r.sock.as_raw_fd()),
            };
            if let Some(fd) = fd {
                // A plan covers at most SLOTS datagrams; coalesced receives (UDP_GRO) can
                // queue more than that for one socket.
                let mut c = i;
                while c < j {
                    let e = (c + SLOTS).min(j);
                    pool.send_group(fd, c..e, self.gso);
                    c = e;
                }
            }
            i = j;
        }
        pool.reset();
    }

    /// Returns true when the budget ran out before the socket was drained.
    fn drain_listener(&mut self, idx: usize, now: Instant, pool: &mut Pool) -> bool {
        let Some(l) = self.listeners.get(idx) else {
            return false;
        };
        let local = l.local;
        let fd = l.sock.as_raw_fd();
        let mut handled = 0;
        while handled < BUDGET {
            if pool.free() == 0 {
                self.send_queued(pool);
            }
            // ICMP-induced errors on UDP come back as an empty, undrained batch: read on.
            let batch = match &self.listeners[idx] {
                Listener {
                    gro: Some(state),
                    sock,
                    ..
                } => pool.next_batch_gro(state, sock, 0),
                _ => pool.next_batch(fd, local.is_ipv6(), 0),
            };
            let Some((first, n, drained)) = batch.ready() else {
                return false;
            };
            for i in 0..n {
                let meta = pool.meta[i];
                let slot = first + i;
                let ft = FiveTuple {
                    transport: Transport::Udp,
                    client: meta.src,
                    server: local,
                };
                // One datagram, or (UDP_GRO) several of one client's, back to back.
                for d in meta.datagrams(0) {
                    let at = d.start;
                    let mut relays = Relays {
                        registry: self.poll.registry(),
                        table: &mut self.relays,
                    };
                    let fwd = self.core.handle_client(
                        now,
                        ft,
                        &pool.slot(slot)[d],
                        &mut relays,
                        &mut self.out,
                    );
                    if let Some(f) = fwd {
                        if let Some(r) = self.relays.slab.get(f.handle) {
                            pool.tx.push(Tx {
                                sock: TxSock::Relay {
                                    key: f.handle,
                                    generation: r.generation,
                                },
                                slot,
                                start: at + f.range.start,
                                end: at + f.range.end,
                                dest: f.peer,
                            });
                        }
                    }
                    if !self.out.is_empty() {
                        self.flush();
                    }
                }
                if meta.seg > 0 {
                    self.round_datagrams += meta.len.div_ceil(meta.seg) - 1;
                }
            }
            handled += n.max(1);
            self.round_datagrams += n;
            if drained {
                // The queue was empty when read: a later datagram raises a new event.
                return false;
            }
        }
        true
    }

    fn drain_relay(&mut self, key: usize, now: Instant, pool: &mut Pool) -> bool {
        let mut handled = 0;
        while handled < BUDGET {
            if pool.free() == 0 {
                self.send_queued(pool);
            }
            let Some(r) = self.relays.slab.get(key) else {
                return false;
            };
            let (owner, fd, v6) = (r.owner, r.sock.as_raw_fd(), r.v6);
            let Some((first, n, drained)) = pool.next_batch(fd, v6, PEER_OFFSET).ready() else {
                return false;
            };
            for i in 0..n {
                let meta = pool.meta[i];
                let slot = first + i;
                let len = meta.len;
                let payload = &pool.slot(slot)[PEER_OFFSET..PEER_OFFSET + len];
                match self.core.handle_peer(now, owner, meta.src, payload) {
                    PeerRoute::Drop => {}
                    PeerRoute::Channel { ft, channel } => {
                        let b = pool.slot_mut(slot);
                        encode_header_to_slice(channel, len, b);
                        if ft.transport == Transport::Udp {
                            if let Some(l) = self.listener_index(ft.server) {
                                pool.tx.push(Tx {
                                    sock: TxSock::Listener(l),
                                    slot,
                                    start: 0,
                                    end: PEER_OFFSET + len,
                                    dest: ft.client,
                                });
                            }
                        } else {
                            // Streams carry ChannelData padded to a multiple of 4.
                            let pad = stream_padding(len);
                            b[4 + len..4 + len + pad].fill(0);
                            if let Some(&k) = self.conn_by_ft.get(&ft) {
                                self.conn_write(k, &pool.slot(slot)[..4 + len + pad]);
                            }
                        }
                    }
                    PeerRoute::Indication(t) => self.send_to_client(&t.ft, &t.data),
                }
            }
            handled += n.max(1);
            self.round_datagrams += n;
            if drained {
                return false;
            }
        }
        true
    }

    fn accept(&mut self, idx: usize, now: Instant) {
        for _ in 0..BUDGET {
            let Some(l) = self.tcp_listeners.get(idx) else {
                return;
            };
            let local = l.local;
            let (stream, peer) = match l.sock.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    return;
                }
            };
            let ft = FiveTuple {
                transport: Transport::Tcp,
                client: peer,
                server: local,
            };
            // Refused (dropping the stream closes it) or registered.
            let _ = self.insert_conn(stream, ft, Mode::Detect, None, Vec::new(), now);
        }
    }

    /// Admit a connection under its address's cap, register it and keep it: its key, or None
    /// when refused (the stream is dropped, which closes it).
    fn insert_conn(
        &mut self,
        mut stream: TcpStream,
        ft: FiveTuple,
        mode: Mode,
        tls: Option<Box<rustls::ServerConnection>>,
        rbuf: Vec<u8>,
        now: Instant,
    ) -> Option<usize> {
        let ip = ft.client.ip();
        if !self.limits.admit(ip) {
            tracing::debug!(client = %ft.client, "connection refused: per-IP connection cap");
            return None;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if self
            .poll
            .registry()
            .register(&mut stream, Token(CONN_BASE + key), Interest::READABLE)
            .is_err()
        {
            self.limits.close(ip, true);
            return None;
        }
        entry.insert(Conn::new(stream, ft, mode, tls, rbuf, now));
        Some(key)
    }

    /// A TURN connection the web side accepted on a shared port: served like one accepted
    /// here, its TLS session (handshake done) and first plaintext bytes included.
    fn adopt(&mut self, a: super::Adopted, now: Instant) {
        let tls = a.tls.is_some();
        let ft = FiveTuple {
            transport: if tls { Transport::Tls } else { Transport::Tcp },
            client: a.peer,
            server: a.local,
        };
        let mode = if tls { Mode::Tls } else { Mode::Plain };
        let stream = TcpStream::from_std(a.stream);
        let Some(key) = self.insert_conn(stream, ft, mode, a.tls, a.prefix, now) else {
            return;
        };
        self.conn_by_ft.insert(ft, key);
        // Plaintext rustls already holds (no new bytes may come to wake us for it), then the
        // frames that are complete.
        if (tls && !self.tls_input(key, 0, &mut [])) || !self.process_frames(key, now, None) {
            self.close_conn(key);
        }
    }

    fn close_conn(&mut self, key: usize) {
        // What this round queued for it (an error answer before a close) goes out first, as
        // far as the socket takes it without waiting.
        if self.conns.get(key).is_some_and(|c| !c.wbuf.is_empty()) {
            let _ = self.conn_flush(key);
        }
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if c.mode != Mode::Detect {
            self.conn_by_ft.remove(&c.ft);
        }
        if c.handshaking {
            self.limits.handshake_done();
        }
        self.limits.close(c.ft.client.ip(), c.counted);
        let mut relays = Relays {
            registry: self.poll.registry(),
            table: &mut self.relays,
        };
        self.core.close_connection(c.ft, &mut relays);
    }

    fn sweep_conns(&mut self, now: Instant) {
        // A connection whose allocation expired counts against the cap again (one that sends
        // STUN is recounted at once; this catches those that only send ChannelData).
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.counted && !self.core.has_allocation(&c.ft))
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            let c = &mut self.conns[k];
            if self.limits.recount(c.ft.client.ip()) {
                c.counted = true;
            } else {
                c.closing = true;
            }
        }
        let s = &self.settings;
        let doomed: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.closing
                    || (!c.valid && now.duration_since(c.accepted) > s.first_message)
                    || c.partial_since
                        .is_some_and(|t| now.duration_since(t) > s.first_message)
                    || (now.duration_since(c.last_rx) > s.idle && !self.core.has_allocation(&c.ft))
            })
            .map(|(k, _)| k)
            .collect();
        for k in doomed {
            tracing::debug!(client = %self.conns[k].ft.client, "closing connection: deadline");
            self.close_conn(k);
        }
    }

    /// Readable/writable on a connection. True when its read budget ran out with data
    /// possibly left (epoll is edge-triggered: the token must be polled again, not waited on).
    fn conn_event(
        &mut self,
        key: usize,
        writable: bool,
        to_eagain: bool,
        now: Instant,
        buf: &mut [u8],
        pool: &mut Pool,
    ) -> bool {
        if !self.conns.contains(key) {
            return false;
        }
        if writable && !self.conn_flush(key) {
            self.close_conn(key);
            return false;
        }
        // Read what is there (bounded per wake-up), frame it, hand frames to the core.
        for _ in 0..16 {
            let c = &mut self.conns[key];
            let want = MAX_FRAME.min(BUF);
            let n = match c.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    self.close_conn(key);
                    return false;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_conn(key);
                    return false;
                }
            };
            c.last_rx = now;
            if c.mode == Mode::Detect {
                if buf[0] == 0x16 {
                    let Some(cfg) = self.settings.tls.as_ref().map(|t| t.current()) else {
                        self.close_conn(key);
                        return false;
                    };
                    if !self.limits.handshake_start() {
                        tracing::debug!(client = %c.ft.client, "TLS handshake refused: too many in progress");
                        self.close_conn(key);
                        return false;
                    }
                    let Ok(tls) = rustls::ServerConnection::new(cfg) else {
                        self.limits.handshake_done();
                        self.close_conn(key);
                        return false;
                    };
                    c.tls = Some(Box::new(tls));
                    c.handshaking = true;
                    c.mode = Mode::Tls;
                    c.ft.transport = Transport::Tls;
                } else {
                    c.mode = Mode::Plain;
                }
                self.conn_by_ft.insert(c.ft, key);
            }
            let ok = if self.conns[key].mode == Mode::Tls {
                self.tls_input(key, n, buf)
            } else {
                let c = &mut self.conns[key];
                c.rbuf.extend_from_slice(&buf[..n]);
                true
            };
            if !ok || !self.process_frames(key, now, Some(&mut *pool)) {
                self.close_conn(key);
                return false;
            }
            if !self.conns.contains(key) {
                return false;
            }
            // A short read emptied the socket's queue: what arrives next raises a new
            // (edge-triggered) event, so the read that would only say EAGAIN is skipped —
            // one syscall per wake-up less. Unless the event said the peer closed: its end
            // of file is only seen by reading on.
            if n < want && !to_eagain {
                return false;
            }
        }
        true
    }

    /// Feed `buf[..n]` (ciphertext) to rustls and move plaintext into `rbuf`, record by record:
    /// rustls refuses more ciphertext while 16 KiB of plaintext wait to be read, so the
    /// plaintext is taken out after every batch of records (a 64 KiB read of relayed media
    /// would otherwise close the connection).
    fn tls_input(&mut self, key: usize, n: usize, buf: &mut [u8]) -> bool {
        let c = &mut self.conns[key];
        let Some(tls) = c.tls.as_mut() else {
            return false;
        };
        let mut rd = &buf[..n];
        let mut plain = [0u8; 16 * 1024];
        loop {
            loop {
                match tls.reader().read(&mut plain) {
                    Ok(0) => break,
                    Ok(m) => {
                        // One read's plaintext and a partial frame at most (frames are taken
                        // out after each read).
                        if c.rbuf.len() + m > MAX_FRAME + BUF {
                            return false;
                        }
                        c.rbuf.extend_from_slice(&plain[..m]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
            if rd.is_empty() {
                break;
            }
            if tls.read_tls(&mut rd).is_err() {
                return false;
            }
            if tls.process_new_packets().is_err() {
                // Send the alert, then close.
                let _ = tls.write_tls(&mut c.stream);
                return false;
            }
        }
        if c.handshaking && !tls.is_handshaking() {
            c.handshaking = false;
            self.limits.handshake_done();
        }
        // Handshake messages to send back.
        self.conn_flush(key)
    }

    /// Frame `rbuf` and run each complete frame through the core. False: close.
    /// Hand the connection's complete frames to the core. Datagrams it relays to peers are
    /// queued in `pool` (sent with the round's other datagrams, `sendmmsg`) when there is one.
    fn process_frames(&mut self, key: usize, now: Instant, mut pool: Option<&mut Pool>) -> bool {
        let mut consumed = 0;
        loop {
            if let Some(p) = pool.as_deref_mut() {
                if p.free() == 0 {
                    self.send_queued(p);
                }
            }
            let c = &mut self.conns[key];
            let rest = &c.rbuf[consumed..];
            // The first message on a connection must be STUN: anything else (an HTTP request,
            // a port scanner) is closed at once instead of waiting for a frame that never ends.
            if !c.valid && rest.first().is_some_and(|b| b >> 6 != 0) {
                return false;
            }
            let len = match framing::frame_len(rest) {
                Err(_) => return false,
                Ok(None) => break,
                Ok(Some(l)) => l,
            };
            if len > MAX_FRAME {
                return false;
            }
            if rest.len() < len {
                break;
            }
            let ft = c.ft;
            let frame_start = consumed;
            consumed += len;
            // The core sees the frame without stream padding (ChannelData length says it).
            let frame = &c.rbuf[frame_start..frame_start + len];
            // Only a STUN message (Allocate, Refresh) can create or end an allocation.
            let stun = frame[0] >> 6 == 0;
            if !c.valid {
                if frame[0] >> 6 == 0 && stun_types::message::Message::from_bytes(frame).is_ok() {
                    c.valid = true;
                } else {
                    return false;
                }
            }
            let mut relays = Relays {
                registry: self.poll.registry(),
                table: &mut self.relays,
            };
            let fwd = self
                .core
                .handle_client(now, ft, frame, &mut relays, &mut self.out);
            if let Some(f) = fwd {
                if let Some(r) = self.relays.slab.get(f.handle) {
                    let data = &frame[f.range];
                    match pool.as_deref_mut().and_then(|p| Some((p.stage(data)?, p))) {
                        Some((slot, p)) => p.tx.push(Tx {
                            sock: TxSock::Relay {
                                key: f.handle,
                                generation: r.generation,
                            },
                            slot,
                            start: 0,
                            end: data.len(),
                            dest: f.peer,
                        }),
                        None => {
                            let _ = r.sock.send_to(data, f.peer);
                        }
                    }
                }
            }
            if !self.out.is_empty() {
                self.flush();
            }
            let Some(c) = self.conns.get_mut(key) else {
                return true;
            };
            if stun && c.counted == self.core.has_allocation(&ft) {
                if c.counted {
                    self.limits.uncount(ft.client.ip());
                    c.counted = false;
                } else if self.limits.recount(ft.client.ip()) {
                    c.counted = true;
                } else {
                    // Its allocation is gone and the address has its cap of other connections.
                    return false;
                }
            }
        }
        let c = &mut self.conns[key];
        c.rbuf.drain(..consumed);
        c.partial_since = if c.rbuf.is_empty() {
            None
        } else {
            c.partial_since.or(Some(now))
        };
        true
    }

    /// Queue bytes for a connection, written at the end of the round ([`Shard::flush_dirty`]):
    /// what a round relays to one client leaves in one write (and, over TLS, in as few records
    /// as 16 KiB allow) instead of one per datagram. Whole frames past the buffer cap are
    /// dropped, as UDP would, rather than growing without bound.
    fn conn_write(&mut self, key: usize, data: &[u8]) {
        let cap = self.settings.stream_buffer;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            return;
        }
        if !c.wbuf.is_empty() && c.wbuf.len() + data.len() > cap {
            // Slow reader.
            self.core.count_drop(DropReason::BufferFull);
            return;
        }
        c.wbuf.extend_from_slice(data);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Write what this round queued for each connection.
    fn flush_dirty(&mut self) {
        while let Some(k) = self.dirty.pop() {
            // A key may have been closed (and even reused) since it was queued.
            match self.conns.get_mut(k) {
                Some(c) if c.dirty => c.dirty = false,
                _ => continue,
            }
            if !self.conn_flush(k) {
                if let Some(c) = self.conns.get_mut(k) {
                    c.closing = true;
                }
            }
        }
    }

    /// Write buffered bytes; (de)register interest in writability. False: the connection is
    /// broken.
    fn conn_flush(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return true;
        };
        let mut pending = false;
        if let Some(tls) = c.tls.as_mut() {
            // rustls's ciphertext first; then the queued plaintext, all at once (the queue is
            // bounded by the cap, so rustls's own buffer is too, and a frame is never split
            // by a buffer limit).
            'out: loop {
                while tls.wants_write() {
                    match tls.write_tls(&mut c.stream) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            pending = true;
                            break 'out;
                        }
                        Err(_) => return false,
                    }
                }
                if c.wbuf.is_empty() || tls.is_handshaking() {
                    break;
                }
                tls.set_buffer_limit(None);
                if tls.writer().write_all(&c.wbuf).is_err() {
                    return false;
                }
                c.wbuf.clear();
            }
        } else {
            while !c.wbuf.is_empty() {
                match c.stream.write(&c.wbuf) {
                    Ok(0) => return false,
                    Ok(n) => {
                        c.wbuf.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        pending = true;
                        break;
                    }
                    Err(_) => return false,
                }
            }
        }
        if pending != c.writable {
            c.writable = pending;
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut c.stream, Token(CONN_BASE + key), interest);
        }
        true
    }
}
