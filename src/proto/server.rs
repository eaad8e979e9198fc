//! The TURN/STUN server state machine for one shard (RFC 8656 §5–§12, RFC 8489 §6–§9,
//! RFC 6156).
//!
//! Input: datagrams/messages from clients ([`Core::handle_client`]), datagrams from peers at
//! relay sockets ([`Core::handle_peer`]), and time ([`Core::handle_timeout`]). Output: replies
//! pushed into a caller-owned `Vec<Transmit>`, and zero-copy routes ([`Forward`],
//! [`PeerRoute`]) telling the shell which sub-slice of its own buffer goes where.
//!
//! Routing tables are O(1): `(5-tuple) → allocation` and `(5-tuple, channel) → (allocation,
//! peer)` for client traffic; peer traffic names its allocation through the [`RelayOwner`]
//! the shell stored with the relay socket. One binary heap holds every expiry of the shard.

use super::integrity::{self, Algo};
use super::{FiveTuple, Kind, Transport, classic, classify};
use crate::auth::nonce::{NonceCheck, NonceIssuer};
use crate::auth::ratelimit::RateLimiter;
use crate::auth::{Credentials, LongTermKey};
use crate::relay::policy::{IpVerdict, PeerPolicy, canonical_ip};
use crate::relay::ports::PortPool;
use crate::relay::quota::Quotas;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use stun_types::AddressFamily;
use stun_types::attribute::{
    Attribute, AttributeStaticType, AttributeType, AttributeWrite, ErrorCode, Fingerprint,
    MappedSocketAddr, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Software,
    UnknownAttributes, Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    StunParseError, TransactionId,
};
use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, Data, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

/// A relay IP: the address sockets bind to, and the one advertised in XOR-RELAYED-ADDRESS
/// (different behind 1:1 NAT, `--external-ip PUBLIC/PRIVATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddr {
    /// Bound locally.
    pub bind: IpAddr,
    /// Told to clients.
    pub advertise: IpAddr,
}

/// Protocol settings of the core (validated config).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Realm for long-term credentials.
    pub realm: String,
    /// SOFTWARE attribute value; None (default) sends none.
    pub software: Option<String>,
    /// Relay IPs (at most one used per family at a time, round robin within a family).
    pub relays: Vec<RelayAddr>,
    /// Allocation lifetime when the client asks for less (and default): 600 s.
    pub default_lifetime: u32,
    /// Maximum allocation lifetime: 3600 s.
    pub max_lifetime: u32,
    /// Permission lifetime: 300 s.
    pub permission_lifetime: Duration,
    /// Channel lifetime: 600 s.
    pub channel_lifetime: Duration,
    /// Peers' permissions per allocation.
    pub max_permissions: usize,
    /// Channels per allocation.
    pub max_channels: usize,
    /// Highest channel number accepted: 0x7FFF (RFC 5766, what coturn's tools use) by default,
    /// 0x4FFF with `strict-channel-numbers` (RFC 8656 §12).
    pub max_channel_number: u16,
    /// Nonce lifetime in seconds.
    pub nonce_lifetime: u64,
    /// RFC 5780 NAT behaviour discovery: the primary (A1:P1) and alternate (A2:P2) addresses;
    /// A1:P2 and A2:P1 are served too. None: CHANGE-REQUEST gets 420, no OTHER-ADDRESS.
    pub rfc5780: Option<Rfc5780>,
    /// 401/438 challenges per second per source IP (this shard's share).
    pub challenge_rate: f64,
    /// Authentication failures per minute per source IP (this shard's share).
    pub failures_per_minute: f64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            realm: "natpass".into(),
            software: None,
            relays: Vec::new(),
            default_lifetime: 600,
            max_lifetime: 3600,
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_permissions: 10,
            max_channels: 64,
            max_channel_number: 0x7FFF,
            rfc5780: None,
            nonce_lifetime: 600,
            challenge_rate: 10.0,
            failures_per_minute: 20.0,
        }
    }
}

/// RFC 5780 addresses: primary A1:P1 and alternate A2:P2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc5780 {
    /// A1:P1.
    pub primary: SocketAddr,
    /// A2:P2.
    pub alt: SocketAddr,
}

impl Rfc5780 {
    /// The listener reached by flipping IP and/or port of `at` (one of the four addresses).
    pub fn flip(&self, at: SocketAddr, ip: bool, port: bool) -> Option<SocketAddr> {
        let on_alt_ip = if at.ip() == self.primary.ip() {
            false
        } else if at.ip() == self.alt.ip() {
            true
        } else {
            return None;
        };
        let on_alt_port = if at.port() == self.primary.port() {
            false
        } else if at.port() == self.alt.port() {
            true
        } else {
            return None;
        };
        let ip_alt = on_alt_ip ^ ip;
        let port_alt = on_alt_port ^ port;
        Some(SocketAddr::new(
            if ip_alt {
                self.alt.ip()
            } else {
                self.primary.ip()
            },
            if port_alt {
                self.alt.port()
            } else {
                self.primary.port()
            },
        ))
    }

    /// All four addresses.
    pub fn all(&self) -> [SocketAddr; 4] {
        [
            self.primary,
            SocketAddr::new(self.primary.ip(), self.alt.port()),
            SocketAddr::new(self.alt.ip(), self.primary.port()),
            self.alt,
        ]
    }
}

const CHANGE_REQUEST: u16 = 0x0003;
const RESPONSE_ORIGIN: u16 = 0x802B;
const OTHER_ADDRESS: u16 = 0x802C;

/// State shared by every shard. Touched on control paths only, except the port pool's
/// lock-free bitmap (relay-to-relay checks) and the generation counter.
#[derive(Debug)]
pub struct Shared {
    credentials: RwLock<Arc<Credentials>>,
    policy: RwLock<Arc<PeerPolicy>>,
    /// Allocation quotas.
    pub quotas: Quotas,
    /// Relay ports in use.
    pub ports: PortPool,
    nonce_key: [u8; 32],
    generation: AtomicU64,
    /// Counters shared by all shards (relaxed atomics).
    pub stats: Stats,
    /// RESERVATION-TOKEN → reserved relay port (RFC 8656 §7.2; the second Allocate may come
    /// from another 5-tuple, hence another shard).
    reservations: Mutex<HashMap<u64, (IpAddr, u16, Instant)>>,
    /// Shutting down: new allocations are refused (508), existing ones keep relaying.
    pub draining: std::sync::atomic::AtomicBool,
}

/// How long a reserved port waits for its RESERVATION-TOKEN (RFC 8656 §7.2: about 30 s).
const RESERVATION_TTL: Duration = Duration::from_secs(30);

/// Why a packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a valid STUN/ChannelData message.
    Malformed = 0,
    /// No allocation on the 5-tuple, or ChannelData on an unbound channel.
    NoAllocation = 1,
    /// The peer has no (live) permission.
    NoPermission = 2,
    /// The peer address is denied by policy (listener, or a non-relay port of ours).
    DeniedPeer = 3,
    /// A slow TCP/TLS client's buffer was full.
    BufferFull = 4,
}

/// Drop reasons in metric label order.
pub const DROP_REASONS: [&str; 5] = [
    "malformed",
    "no_allocation",
    "no_permission",
    "denied_peer",
    "buffer_full",
];

/// Error codes counted for Allocate failures.
pub const ALLOCATE_ERROR_CODES: [u16; 13] = [
    400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 500, 508,
];

/// Why an allocation ended, in metric label order (`ended`: by an operator or at shutdown).
pub const END_REASONS: [&str; 4] = ["expired", "deleted", "closed", "ended"];

/// Server-wide counters and gauges (relaxed atomics; read by `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Allocations created.
    pub allocations_created: AtomicU64,
    /// Allocations ended, by [`END_REASONS`].
    pub allocations_ended_by: [AtomicU64; 4],
    /// Live allocations by transport (udp, tcp, tls) and family (ipv4, ipv6).
    pub allocations_live: [[AtomicI64; 2]; 3],
    /// Allocate error responses by [`ALLOCATE_ERROR_CODES`].
    pub allocate_errors: [AtomicU64; 13],
    /// Live permissions.
    pub permissions_live: AtomicI64,
    /// Live channels.
    pub channels_live: AtomicI64,
    /// Binding requests answered.
    pub bindings: AtomicU64,
    /// Relayed packets and bytes, one block per shard (see [`PathCounters`]).
    path: std::sync::Mutex<Vec<Arc<PathCounters>>>,
    /// Packets dropped, by [`DROP_REASONS`].
    pub drops: [AtomicU64; 5],
    /// Authentication failures.
    pub auth_failures: AtomicU64,
    /// 401/438 challenges not sent because of the per-source rate limit.
    pub challenges_suppressed: AtomicU64,
    /// Authentication failures not answered because of the per-source failure limit.
    pub failures_suppressed: AtomicU64,
}

/// The counters bumped for every relayed packet, one block per shard core: a single writer
/// each, so an increment is a plain load and store (no locked read-modify-write) on a cache
/// line no other shard writes. `/metrics` sums the blocks.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct PathCounters {
    packets_to_peer: AtomicU64,
    bytes_to_peer: AtomicU64,
    packets_to_client: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl PathCounters {
    fn bump(c: &AtomicU64, by: u64) {
        // Only the owning core writes: load + store is exact and cheaper than fetch_add.
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }

    fn to_peer(&self, bytes: usize) {
        Self::bump(&self.packets_to_peer, 1);
        Self::bump(&self.bytes_to_peer, bytes as u64);
    }

    fn to_client(&self, bytes: usize) {
        Self::bump(&self.packets_to_client, 1);
        Self::bump(&self.bytes_to_client, bytes as u64);
    }
}

impl Stats {
    /// A new block of relay counters for one core.
    fn register_path(&self) -> Arc<PathCounters> {
        let c = Arc::new(PathCounters::default());
        self.path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c.clone());
        c
    }

    fn sum(&self, f: impl Fn(&PathCounters) -> &AtomicU64) -> u64 {
        self.path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Packets relayed client → peer, all shards.
    pub fn packets_to_peer(&self) -> u64 {
        self.sum(|c| &c.packets_to_peer)
    }

    /// Payload bytes relayed client → peer, all shards.
    pub fn bytes_to_peer(&self) -> u64 {
        self.sum(|c| &c.bytes_to_peer)
    }

    /// Packets relayed peer → client, all shards.
    pub fn packets_to_client(&self) -> u64 {
        self.sum(|c| &c.packets_to_client)
    }

    /// Payload bytes relayed peer → client, all shards.
    pub fn bytes_to_client(&self) -> u64 {
        self.sum(|c| &c.bytes_to_client)
    }

    /// Count a dropped packet.
    pub fn drop(&self, why: DropReason) {
        self.drops[why as usize].fetch_add(1, Ordering::Relaxed);
    }
    /// Packets dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }
    /// Allocations ended for any reason.
    pub fn allocations_ended(&self) -> u64 {
        self.allocations_ended_by
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum()
    }
    fn allocate_error(&self, code: u16) {
        if let Some(i) = ALLOCATE_ERROR_CODES.iter().position(|c| *c == code) {
            self.allocate_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    }
}

impl Shared {
    /// Build the shared state.
    pub fn new(
        credentials: Credentials,
        policy: PeerPolicy,
        quotas: Quotas,
        ports: PortPool,
        nonce_key: [u8; 32],
    ) -> Self {
        Self {
            credentials: RwLock::new(Arc::new(credentials)),
            policy: RwLock::new(Arc::new(policy)),
            quotas,
            ports,
            nonce_key,
            generation: AtomicU64::new(0),
            stats: Stats::default(),
            reservations: Mutex::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn reserve_token(&self, token: u64, ip: IpAddr, port: u16, now: Instant) {
        let mut r = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        r.insert(token, (ip, port, now + RESERVATION_TTL));
    }

    fn take_token(&self, token: u64, now: Instant) -> Option<(IpAddr, u16)> {
        let mut r = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        match r.remove(&token) {
            Some((ip, port, exp)) if exp > now => Some((ip, port)),
            Some((ip, port, _)) => {
                self.ports.release(ip, port);
                None
            }
            None => None,
        }
    }

    fn sweep_reservations(&self, now: Instant) {
        let mut r = self.reservations.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|_, (ip, port, exp)| {
            let keep = *exp > now;
            if !keep {
                self.ports.release(*ip, *port);
            }
            keep
        });
    }
    /// Current credentials.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Current peer policy.
    pub fn policy(&self) -> Arc<PeerPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Swap credentials and policy atomically for every shard (reload).
    pub fn reload(&self, credentials: Credentials, policy: PeerPolicy) {
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(credentials);
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Identifies the allocation a relay socket belongs to (kept by the shell with the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayOwner {
    /// Slab key of the allocation.
    pub alloc: usize,
    /// Serial, so a reused slab key never matches a stale socket.
    pub serial: u32,
}

/// Relay sockets, opened and closed by the shell on the core's behalf.
pub trait RelaySockets {
    /// Bind a UDP relay socket at `addr` for `owner`, returning the shell's handle for it. An
    /// error (port in use) makes the core try another port.
    fn bind(&mut self, addr: SocketAddr, owner: RelayOwner) -> std::io::Result<usize>;
    /// Close the relay socket with this handle.
    fn release(&mut self, handle: usize);
}

/// A message for a client, built by the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The client's 5-tuple (sent from `ft.server` to `ft.client`).
    pub ft: FiveTuple,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Client → peer: send `input[range]` from the relay socket bound at `relay` to `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The shell's handle of the relay socket.
    pub handle: usize,
    /// Local address of the relay socket.
    pub relay: SocketAddr,
    /// Destination peer.
    pub peer: SocketAddr,
    /// The payload within the input buffer.
    pub range: Range<usize>,
}

/// Peer → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRoute {
    /// No permission, denied, or unknown allocation.
    Drop,
    /// Write a ChannelData header for `channel` in front of the payload and send to `ft`.
    Channel {
        /// The client.
        ft: FiveTuple,
        /// Channel number.
        channel: u16,
    },
    /// Send this Data indication.
    Indication(Transmit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMode {
    Any,
    Even,
    EvenPair,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Allocation { key: usize, serial: u32 },
    Sweep { key: usize, serial: u32 },
}

#[derive(Debug)]
struct Relay {
    handle: usize,
    bind: SocketAddr,
    advertise: SocketAddr,
}

#[derive(Debug)]
struct Permission {
    ip: IpAddr,
    expires: Instant,
    verdict: IpVerdict,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    serial: u32,
    ft: FiveTuple,
    username: Box<str>,
    quota_id: Box<str>,
    key: LongTermKey,
    pair_member: bool,
    relays: [Option<Relay>; 2],
    expires: Instant,
    perms: Vec<Permission>,
    channels: Vec<Channel>,
    last: Option<(u128, Vec<u8>)>,
    span: tracing::Span,
    created: Instant,
    bytes_to_peer: u64,
    bytes_to_client: u64,
}

impl Allocation {
    fn relay_for(&self, peer: &SocketAddr) -> Option<&Relay> {
        self.relays[family_index(peer.ip())].as_ref()
    }
    fn permission(&self, ip: IpAddr, now: Instant) -> Option<&Permission> {
        self.perms.iter().find(|p| p.ip == ip && p.expires > now)
    }
}

fn family_index(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

/// A successfully authenticated request.
struct Auth {
    key: LongTermKey,
    algo: Algo,
    username: String,
    quota_id: String,
}

/// Attributes natpass understands in requests; any other comprehension-required attribute
/// gets 420 (RFC 8489 §6.3.1).
const KNOWN: &[u16] = &[
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x001C, // MESSAGE-INTEGRITY-SHA256
    0x0014, // REALM
    0x0015, // NONCE
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0017, // REQUESTED-ADDRESS-FAMILY
    0x0018, // EVEN-PORT
    0x0019, // REQUESTED-TRANSPORT
    0x0022, // RESERVATION-TOKEN
    0x0024, // PRIORITY (ICE, ignored)
    0x0025, // USE-CANDIDATE (ICE, ignored)
];

const MAX_RECENT: usize = 4096;
const RECENT_TTL: Duration = Duration::from_secs(40);

/// An allocation as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllocationInfo {
    /// Slab key (with the shard number, forms the allocation id).
    pub key: usize,
    /// Serial.
    pub serial: u32,
    /// Username.
    pub username: String,
    /// Client transport.
    pub transport: &'static str,
    /// Client address.
    pub client: SocketAddr,
    /// Server address the client talks to.
    pub server: SocketAddr,
    /// Relayed addresses.
    pub relayed: Vec<SocketAddr>,
    /// Seconds since creation.
    pub age_seconds: u64,
    /// Seconds until expiry.
    pub expires_in_seconds: u64,
    /// Permissions.
    pub permissions: usize,
    /// Channels.
    pub channels: usize,
    /// Payload bytes relayed to peers.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed to the client.
    pub bytes_to_client: u64,
}

/// One shard's protocol state.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    /// This core's relay counters (its own cache line).
    path: Arc<PathCounters>,
    shared: Arc<Shared>,
    creds: Arc<Credentials>,
    policy: Arc<PeerPolicy>,
    generation: u64,
    nonces: NonceIssuer,
    epoch: (Instant, u64),
    rng: StdRng,
    allocs: Slab<Allocation>,
    by_ft: HashMap<FiveTuple, usize>,
    chan_route: HashMap<(FiveTuple, u16), (usize, SocketAddr)>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    next_serial: u32,
    recent: HashMap<FiveTuple, (u128, Vec<u8>, Instant)>,
    challenges: RateLimiter,
    failures: RateLimiter,
    relay_rr: [usize; 2],
    next_reservation_sweep: Instant,
}

fn opt_attr<'a, A>(msg: &'a Message<'a>) -> Result<Option<A>, ()>
where
    A: stun_types::attribute::AttributeFromRaw<'a> + AttributeStaticType,
{
    match msg.attribute::<A>() {
        Ok(a) => Ok(Some(a)),
        Err(StunParseError::MissingAttribute(_)) => Ok(None),
        Err(_) => Err(()),
    }
}

/// A response under construction.
struct Reply {
    w: MessageWriteVec,
}

impl Reply {
    fn success(req: &Message<'_>) -> Self {
        Self {
            w: Message::builder_success(req, MessageWriteVec::with_capacity(128)),
        }
    }
    fn error(req: &Message<'_>, code: u16) -> Self {
        Self::error_with_reason(req, code, ErrorCode::default_reason_for_code(code))
    }
    fn error_with_reason(req: &Message<'_>, code: u16, reason: &str) -> Self {
        let mut w = Message::builder_error(req, MessageWriteVec::with_capacity(96));
        if let Ok(e) = ErrorCode::new(code, reason) {
            let _ = w.add_attribute(&e);
        }
        Self { w }
    }
    fn add(&mut self, attr: &dyn AttributeWrite) {
        // Only fails when the message would exceed 64 KiB, impossible for our replies.
        let _ = self.w.add_attribute(attr);
    }
    fn finish(mut self, software: Option<&str>, sign: Option<(Algo, &[u8])>, fp: bool) -> Vec<u8> {
        if let Some(s) = software.and_then(|s| Software::new(s).ok()) {
            self.add(&s);
        }
        if let Some((algo, key)) = sign {
            integrity::sign(&mut self.w, algo, key);
        }
        if fp {
            let _ = self.w.add_fingerprint();
        }
        self.w.finish()
    }
}

impl Core {
    /// A shard's core. `seed` seeds its randomness (ports, transaction ids); `now`/`unix_now`
    /// anchor its notion of wall-clock time for nonces and REST expiries.
    pub fn new(
        cfg: CoreConfig,
        shared: Arc<Shared>,
        seed: [u8; 32],
        now: Instant,
        unix_now: u64,
    ) -> Self {
        let nonces = NonceIssuer::new(shared.nonce_key, cfg.nonce_lifetime);
        let challenges =
            RateLimiter::new(cfg.challenge_rate, cfg.challenge_rate.max(1.0), 65_536, now);
        let failures = RateLimiter::new(
            cfg.failures_per_minute / 60.0,
            cfg.failures_per_minute.max(1.0),
            65_536,
            now,
        );
        Self {
            path: shared.stats.register_path(),
            creds: shared.credentials(),
            policy: shared.policy(),
            generation: shared.generation.load(Ordering::Acquire),
            cfg,
            shared,
            nonces,
            epoch: (now, unix_now),
            rng: StdRng::from_seed(seed),
            allocs: Slab::new(),
            by_ft: HashMap::new(),
            chan_route: HashMap::new(),
            timers: BinaryHeap::new(),
            next_serial: 1,
            recent: HashMap::new(),
            challenges,
            failures,
            relay_rr: [0; 2],
            next_reservation_sweep: now,
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Number of live allocations in this shard.
    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn refresh_shared(&mut self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.creds = self.shared.credentials();
            self.policy = self.shared.policy();
        }
    }

    /// When [`Core::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Handle a message from a client. Replies are appended to `out`; a returned [`Forward`]
    /// names the part of `data` to relay to a peer.
    pub fn handle_client(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
        relays: &mut dyn RelaySockets,
        out: &mut Vec<Transmit>,
    ) -> Option<Forward> {
        let first = *data.first()?;
        match classify(first) {
            Kind::ChannelData => self.channel_data(now, ft, data),
            Kind::Stun => self.stun(now, ft, data, relays, out),
            Kind::Other => {
                self.drop_packet();
                None
            }
        }
    }

    fn drop_packet(&self) {
        self.shared.stats.drop(DropReason::Malformed);
    }

    /// ChannelData client → peer (RFC 8656 §12.5): one hash lookup, a permission check, and
    /// the payload's range within `data`.
    fn channel_data(&mut self, now: Instant, ft: FiveTuple, data: &[u8]) -> Option<Forward> {
        if data.len() < 4 {
            self.drop_packet();
            return None;
        }
        let ch = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if 4 + len > data.len() {
            self.drop_packet();
            return None;
        }
        let Some(&(key, peer)) = self.chan_route.get(&(ft, ch)) else {
            self.shared.stats.drop(DropReason::NoAllocation);
            return None;
        };
        let alloc = &mut self.allocs[key];
        let (handle, relay) = match (alloc.permission(peer.ip(), now), alloc.relay_for(&peer)) {
            (Some(_), Some(r)) => (r.handle, r.bind),
            _ => {
                self.shared.stats.drop(DropReason::NoPermission);
                return None;
            }
        };
        alloc.bytes_to_peer += len as u64;
        self.path.to_peer(len);
        Some(Forward {
            handle,
            relay,
            peer,
            range: 4..4 + len,
        })
    }

    fn stun(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
        relays: &mut dyn RelaySockets,
        out: &mut Vec<Transmit>,
    ) -> Option<Forward> {
        if data.len() < 20 {
            self.drop_packet();
            return None;
        }
        if data[4..8] != [0x21, 0x12, 0xA4, 0x42] {
            match classic::binding_response(data, ft.client) {
                Some(resp) => out.push(Transmit { ft, data: resp }),
                None => self.drop_packet(),
            }
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if 20 + len != data.len() || len % 4 != 0 {
            self.drop_packet();
            return None;
        }
        let Ok(msg) = Message::from_bytes(data) else {
            self.drop_packet();
            return None;
        };
        match msg.class() {
            MessageClass::Request => {
                self.request(now, ft, &msg, relays, out);
                None
            }
            // Send indication (RFC 8656 §11.2); other indications (Binding keepalives) are
            // silently absorbed.
            MessageClass::Indication if msg.has_method(SEND) => self.send_indication(now, ft, &msg),
            MessageClass::Indication => None,
            _ => {
                self.drop_packet();
                None
            }
        }
    }

    fn send_indication(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Option<Forward> {
        let r = self.send_route(now, ft, msg);
        let st = &self.shared.stats;
        match r {
            Ok(f) => {
                self.path.to_peer(f.range.len());
                Some(f)
            }
            Err(why) => {
                st.drop(why);
                None
            }
        }
    }

    fn send_route(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Forward, DropReason> {
        if unknown_required(msg).is_some() {
            return Err(DropReason::Malformed);
        }
        self.refresh_shared();
        let &key = self.by_ft.get(&ft).ok_or(DropReason::NoAllocation)?;
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| DropReason::Malformed)?
            .addr(msg.transaction_id());
        let (off, raw) = msg
            .raw_attribute_and_offset(Data::TYPE)
            .ok_or(DropReason::Malformed)?;
        let start = off + 4;
        let range = start..start + usize::from(raw.length());
        let alloc = &self.allocs[key];
        let perm = alloc
            .permission(peer.ip(), now)
            .ok_or(DropReason::NoPermission)?;
        if !self.peer_addr_allowed(perm.verdict, peer) {
            return Err(DropReason::DeniedPeer);
        }
        let r = alloc.relay_for(&peer).ok_or(DropReason::NoPermission)?;
        let f = Forward {
            handle: r.handle,
            relay: r.bind,
            peer,
            range,
        };
        self.allocs[key].bytes_to_peer += f.range.len() as u64;
        Ok(f)
    }

    /// Per-packet part of the peer policy: never a listener of ours; on our own relay IPs,
    /// only currently allocated relay ports.
    fn peer_addr_allowed(&self, verdict: IpVerdict, peer: SocketAddr) -> bool {
        match verdict {
            IpVerdict::Deny => false,
            IpVerdict::Allow => !self.policy.is_listener(peer),
            IpVerdict::OwnRelay => {
                !self.policy.is_listener(peer) && self.own_relay_port_allocated(peer)
            }
        }
    }

    fn own_relay_port_allocated(&self, peer: SocketAddr) -> bool {
        let ip = canonical_ip(peer.ip());
        self.cfg
            .relays
            .iter()
            .filter(|r| canonical_ip(r.bind) == ip || canonical_ip(r.advertise) == ip)
            .any(|r| self.shared.ports.is_allocated(r.bind, peer.port()))
    }

    fn request(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        relays: &mut dyn RelaySockets,
        out: &mut Vec<Transmit>,
    ) {
        let fp = integrity::has_fingerprint(msg);
        let method = msg.method();
        if method == BINDING {
            self.binding(ft, msg, fp, out);
            return;
        }
        if ![ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND].contains(&method) {
            let resp = Reply::error(msg, ErrorCode::BAD_REQUEST).finish(
                self.cfg.software.as_deref(),
                None,
                fp,
            );
            out.push(Transmit { ft, data: resp });
            return;
        }
        self.refresh_shared();
        // Retransmissions (same 5-tuple, same transaction id) get the same answer.
        let txid: u128 = msg.transaction_id().into();
        let existing = self.by_ft.get(&ft).copied();
        if let Some(key) = existing {
            if let Some((t, resp)) = &self.allocs[key].last {
                if *t == txid {
                    out.push(Transmit {
                        ft,
                        data: resp.clone(),
                    });
                    return;
                }
            }
        } else if let Some((t, resp, _)) = self.recent.get(&ft) {
            if *t == txid {
                out.push(Transmit {
                    ft,
                    data: resp.clone(),
                });
                return;
            }
        }
        let Some(auth) = self.authenticate(now, ft, msg, fp, out) else {
            return;
        };
        let sign = Some((auth.algo, &auth.key[..]));
        if let Some(unknown) = unknown_required(msg) {
            let resp = self.unknown_reply(msg, &unknown, sign, fp);
            out.push(Transmit { ft, data: resp });
            return;
        }
        if let Some(key) = existing {
            let a = &self.allocs[key];
            if method == ALLOCATE {
                let resp = self.error(msg, ErrorCode::ALLOCATION_MISMATCH, sign, fp);
                out.push(Transmit { ft, data: resp });
                return;
            }
            if *a.username != *auth.username || a.key != auth.key {
                let resp = self.error(msg, ErrorCode::WRONG_CREDENTIALS, sign, fp);
                out.push(Transmit { ft, data: resp });
                return;
            }
        } else if method != ALLOCATE {
            let resp = self.error(msg, ErrorCode::ALLOCATION_MISMATCH, sign, fp);
            out.push(Transmit { ft, data: resp });
            return;
        }
        let resp = match method {
            ALLOCATE => self.allocate(now, ft, msg, &auth, relays, fp),
            REFRESH => self.refresh(now, ft, msg, &auth, relays, fp),
            CREATE_PERMISSION => self.create_permission(now, ft, msg, &auth, fp),
            _ => self.channel_bind(now, ft, msg, &auth, fp),
        };
        if let Some(&key) = self.by_ft.get(&ft) {
            self.allocs[key].last = Some((txid, resp.clone()));
        } else {
            if self.recent.len() >= MAX_RECENT {
                self.recent.retain(|_, (_, _, exp)| *exp > now);
                if self.recent.len() >= MAX_RECENT {
                    self.recent.clear();
                }
            }
            self.recent
                .insert(ft, (txid, resp.clone(), now + RECENT_TTL));
        }
        out.push(Transmit { ft, data: resp });
    }

    /// Binding (RFC 8489 §7.3), with RFC 5780 CHANGE-REQUEST, OTHER-ADDRESS and
    /// RESPONSE-ORIGIN when alternate addresses are configured.
    fn binding(&mut self, ft: FiveTuple, msg: &Message<'_>, fp: bool, out: &mut Vec<Transmit>) {
        let rfc5780 = self.cfg.rfc5780.filter(|_| ft.transport == Transport::Udp);
        let unknown = unknown_required(msg).and_then(|mut u| {
            if rfc5780.is_some() {
                u.retain(|t| t.value() != CHANGE_REQUEST);
            }
            (!u.is_empty()).then_some(u)
        });
        if let Some(unknown) = unknown {
            let resp = self.unknown_reply(msg, &unknown, None, fp);
            out.push(Transmit { ft, data: resp });
            return;
        }
        let mut r = Reply::success(msg);
        r.add(&XorMappedAddress::new(ft.client, msg.transaction_id()));
        let mut from = ft.server;
        if let Some(five) = rfc5780 {
            let (mut ip, mut port) = (false, false);
            if let Some(raw) = msg.raw_attribute(AttributeType::new(CHANGE_REQUEST)) {
                let Some(flags) = raw.value.get(..4) else {
                    let resp = self.error(msg, ErrorCode::BAD_REQUEST, None, fp);
                    out.push(Transmit { ft, data: resp });
                    return;
                };
                ip = flags[3] & 0x04 != 0;
                port = flags[3] & 0x02 != 0;
            }
            if let (Some(src), Some(other)) = (
                five.flip(ft.server, ip, port),
                five.flip(ft.server, true, true),
            ) {
                from = src;
                let other = MappedSocketAddr::new(other);
                r.add(&other.to_raw(AttributeType::new(OTHER_ADDRESS)));
                let origin = MappedSocketAddr::new(src);
                r.add(&origin.to_raw(AttributeType::new(RESPONSE_ORIGIN)));
            }
        }
        let data = r.finish(self.cfg.software.as_deref(), None, fp);
        self.shared.stats.bindings.fetch_add(1, Ordering::Relaxed);
        out.push(Transmit {
            ft: FiveTuple { server: from, ..ft },
            data,
        });
    }

    fn error(
        &self,
        msg: &Message<'_>,
        code: u16,
        sign: Option<(Algo, &[u8])>,
        fp: bool,
    ) -> Vec<u8> {
        if msg.method() == ALLOCATE {
            self.shared.stats.allocate_error(code);
        }
        Reply::error(msg, code).finish(self.cfg.software.as_deref(), sign, fp)
    }

    fn unknown_reply(
        &self,
        msg: &Message<'_>,
        unknown: &[AttributeType],
        sign: Option<(Algo, &[u8])>,
        fp: bool,
    ) -> Vec<u8> {
        tracing::debug!(method = %msg.method(), ?unknown, "420: unknown comprehension-required attributes");
        let mut r = Reply::error(msg, ErrorCode::UNKNOWN_ATTRIBUTE);
        r.add(&UnknownAttributes::new(unknown));
        r.finish(self.cfg.software.as_deref(), sign, fp)
    }

    /// 401/438 with REALM and a fresh NONCE, rate limited per source IP.
    fn challenge(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        code: u16,
        fp: bool,
        out: &mut Vec<Transmit>,
    ) {
        // Over UDP (spoofable sources, amplification) challenges are rate limited per
        // source IP; a stream's source is proven by its handshake and capped per IP, and a
        // dropped answer there would leave an honest client waiting forever.
        if ft.transport == Transport::Udp && !self.challenges.allow(ft.client.ip(), now) {
            self.shared
                .stats
                .challenges_suppressed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if msg.method() == ALLOCATE {
            self.shared.stats.allocate_error(code);
        }
        let nonce = self.nonces.issue(self.unix(now), ft.client.ip());
        // No reason phrase: clients act on the code, and an answer to an unauthenticated
        // (possibly spoofed) request stays as small as REALM and NONCE allow.
        let mut r = Reply::error_with_reason(msg, code, "");
        if let Ok(realm) = Realm::new(self.creds.realm()) {
            r.add(&realm);
        }
        if let Ok(n) = Nonce::new(&nonce) {
            r.add(&n);
        }
        out.push(Transmit {
            ft,
            data: r.finish(self.cfg.software.as_deref(), None, fp),
        });
    }

    fn auth_failure(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        fp: bool,
        out: &mut Vec<Transmit>,
    ) {
        self.shared
            .stats
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        if !self.failures.allow(ft.client.ip(), now) {
            self.shared
                .stats
                .failures_suppressed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.challenge(now, ft, msg, ErrorCode::UNAUTHORIZED, fp, out);
    }

    /// Long-term credential check (RFC 8489 §9.2.4).
    fn authenticate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        fp: bool,
        out: &mut Vec<Transmit>,
    ) -> Option<Auth> {
        let Some((algo, offset)) = integrity::find(msg) else {
            self.challenge(now, ft, msg, ErrorCode::UNAUTHORIZED, fp, out);
            return None;
        };
        let (user, realm, nonce) = match (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) {
            (Ok(u), Ok(r), Ok(n)) => (u, r, n),
            _ => {
                let resp = self.error(msg, ErrorCode::BAD_REQUEST, None, fp);
                out.push(Transmit { ft, data: resp });
                return None;
            }
        };
        let unix = self.unix(now);
        if self.nonces.check(nonce.nonce(), unix, ft.client.ip()) != NonceCheck::Valid {
            self.challenge(now, ft, msg, ErrorCode::STALE_NONCE, fp, out);
            return None;
        }
        if realm.realm() != self.creds.realm() {
            self.auth_failure(now, ft, msg, fp, out);
            return None;
        }
        let username = user.username();
        let Ok((keys, quota_id)) = self.creds.keys_for(username, unix) else {
            self.auth_failure(now, ft, msg, fp, out);
            return None;
        };
        let mut found = None;
        for k in keys.as_slice() {
            // Every candidate is checked (constant time each) so timing does not say which.
            if integrity::verify(msg, algo, offset, k) && found.is_none() {
                found = Some(*k);
            }
        }
        let Some(key) = found else {
            self.auth_failure(now, ft, msg, fp, out);
            return None;
        };
        Some(Auth {
            key,
            algo,
            username: username.to_owned(),
            quota_id: quota_id.to_owned(),
        })
    }

    fn pick_relay(&mut self, family: usize) -> Option<RelayAddr> {
        let candidates: Vec<RelayAddr> = self
            .cfg
            .relays
            .iter()
            .filter(|r| family_index(r.bind) == family)
            .copied()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        self.relay_rr[family] = self.relay_rr[family].wrapping_add(1);
        Some(candidates[self.relay_rr[family] % candidates.len()])
    }

    fn has_family(&self, family: usize) -> bool {
        self.cfg
            .relays
            .iter()
            .any(|r| family_index(r.bind) == family)
    }

    /// Bind a relay socket of `family`. `mode`: any port, an even port, or an even port with
    /// the next one held for a RESERVATION-TOKEN (returned as the second value).
    fn bind_relay(
        &mut self,
        family: usize,
        mode: PortMode,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<(Relay, Option<u16>)> {
        let ra = self.pick_relay(family)?;
        for _ in 0..16 {
            let seed: u32 = self.rng.random();
            let port = match mode {
                PortMode::Any => self.shared.ports.reserve(ra.bind, seed, false)?,
                PortMode::Even => self.shared.ports.reserve(ra.bind, seed, true)?,
                PortMode::EvenPair => self.shared.ports.reserve_pair(ra.bind, seed)?,
            };
            match self.bind_port(ra, port, owner, relays) {
                Some(r) => return Some((r, (mode == PortMode::EvenPair).then(|| port + 1))),
                None => {
                    if mode == PortMode::EvenPair {
                        self.shared.ports.release(ra.bind, port + 1);
                    }
                }
            }
        }
        None
    }

    /// Bind an already reserved port; on failure the port goes back to the pool.
    fn bind_port(
        &mut self,
        ra: RelayAddr,
        port: u16,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<Relay> {
        let bind = SocketAddr::new(ra.bind, port);
        match relays.bind(bind, owner) {
            Ok(handle) => Some(Relay {
                handle,
                bind,
                advertise: SocketAddr::new(ra.advertise, port),
            }),
            Err(e) => {
                tracing::debug!(%bind, error = %e, "relay port unavailable");
                self.shared.ports.release(ra.bind, port);
                None
            }
        }
    }

    /// Allocate (RFC 8656 §7.2).
    fn allocate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
        relays: &mut dyn RelaySockets,
        fp: bool,
    ) -> Vec<u8> {
        let sign = Some((auth.algo, &auth.key[..]));
        let err = |this: &Self, code| this.error(msg, code, sign, fp);
        let transport = match opt_attr::<RequestedTransport>(msg) {
            Ok(Some(t)) => t,
            _ => return err(self, ErrorCode::BAD_REQUEST),
        };
        if transport.protocol() != RequestedTransport::UDP {
            return err(self, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL);
        }
        let (Ok(requested), Ok(additional), Ok(even), Ok(token)) = (
            opt_attr::<RequestedAddressFamily>(msg),
            opt_attr::<AdditionalAddressFamily>(msg),
            opt_attr::<EvenPort>(msg),
            opt_attr::<ReservationToken>(msg),
        ) else {
            return err(self, ErrorCode::BAD_REQUEST);
        };
        if requested.is_some() && additional.is_some() {
            return err(self, ErrorCode::BAD_REQUEST);
        }
        if token.is_some() && (even.is_some() || requested.is_some() || additional.is_some()) {
            return err(self, ErrorCode::BAD_REQUEST);
        }
        if additional
            .as_ref()
            .is_some_and(|a| a.family() != AddressFamily::IPV6)
        {
            return err(self, ErrorCode::BAD_REQUEST);
        }
        let primary = match requested.map(|r| r.family()) {
            Some(AddressFamily::IPV6) => 1,
            _ => 0,
        };
        if token.is_none() && !self.has_family(primary) {
            return err(self, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
        }
        let want_v6_too = additional.is_some();
        let v6_error = want_v6_too && !self.has_family(1);
        let lifetime = match opt_attr::<Lifetime>(msg) {
            Ok(l) => l.map(|l| l.seconds()).unwrap_or(self.cfg.default_lifetime),
            Err(()) => return err(self, ErrorCode::BAD_REQUEST),
        };
        let lifetime = lifetime.clamp(self.cfg.default_lifetime, self.cfg.max_lifetime);
        if self.shared.draining.load(Ordering::Acquire) {
            return err(self, ErrorCode::INSUFFICIENT_CAPACITY);
        }
        // An RTP/RTCP pair (EVEN-PORT R + RESERVATION-TOKEN) counts once against the user's and
        // the IP's quota; the global cap counts both.
        let pair_member = token.is_some();
        let quota = if pair_member {
            self.shared.quotas.acquire_pair_member()
        } else {
            self.shared.quotas.acquire(&auth.quota_id, ft.client.ip())
        };
        if let Err(q) = quota {
            tracing::debug!(%ft, user = %auth.username, reason = %q, "allocation refused: quota");
            return err(self, ErrorCode::ALLOCATION_QUOTA_REACHED);
        }
        let release_quota = |this: &Self| {
            if pair_member {
                this.shared.quotas.release_pair_member();
            } else {
                this.shared.quotas.release(&auth.quota_id, ft.client.ip());
            }
        };
        let entry = self.allocs.vacant_entry();
        let key = entry.key();
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        let owner = RelayOwner { alloc: key, serial };
        let mode = match even.map(|e| e.requested()) {
            None => PortMode::Any,
            Some(false) => PortMode::Even,
            Some(true) => PortMode::EvenPair,
        };
        let bound = match token {
            Some(t) => self.bind_reserved(t.token(), owner, relays, now),
            None => self.bind_relay(primary, mode, owner, relays),
        };
        let Some((first, reserved)) = bound else {
            release_quota(self);
            return err(self, ErrorCode::INSUFFICIENT_CAPACITY);
        };
        let primary = family_index(first.bind.ip());
        let mut pair: [Option<Relay>; 2] = [None, None];
        let second = if want_v6_too && !v6_error {
            self.bind_relay(1, PortMode::Any, owner, relays)
        } else {
            None
        };
        if want_v6_too && !v6_error && second.is_none() {
            self.release_relay(&first, relays);
            if let Some(p) = reserved {
                self.shared.ports.release(first.bind.ip(), p);
            }
            release_quota(self);
            return err(self, ErrorCode::INSUFFICIENT_CAPACITY);
        }
        let token_out = reserved.map(|p| {
            let t: u64 = self.rng.random();
            self.shared.reserve_token(t, first.bind.ip(), p, now);
            t
        });
        pair[primary] = Some(first);
        if let Some((s, _)) = second {
            pair[1] = Some(s);
        }
        let expires = now + Duration::from_secs(lifetime.into());
        let span = tracing::debug_span!("allocation", five_tuple = %ft, user = %auth.username);
        let txid = msg.transaction_id();
        let mut r = Reply::success(msg);
        for relay in pair.iter().flatten() {
            r.add(&XorRelayedAddress::new(relay.advertise, txid));
        }
        r.add(&Lifetime::new(lifetime));
        r.add(&XorMappedAddress::new(ft.client, txid));
        if let Some(t) = token_out {
            r.add(&ReservationToken::new(t));
        }
        if v6_error {
            if let Ok(code) = ErrorCode::new(
                ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                "Address Family not Supported",
            ) {
                r.add(&AddressErrorCode::new(AddressFamily::IPV6, code));
            }
        }
        {
            let _g = span.enter();
            tracing::debug!(relay = ?pair.iter().flatten().map(|r| r.advertise).collect::<Vec<_>>(), lifetime, "allocation created");
        }
        let alloc = Allocation {
            serial,
            ft,
            username: auth.username.clone().into(),
            quota_id: auth.quota_id.clone().into(),
            key: auth.key,
            pair_member,
            relays: pair,
            expires,
            perms: Vec::new(),
            channels: Vec::new(),
            last: None,
            span,
            created: now,
            bytes_to_peer: 0,
            bytes_to_client: 0,
        };
        self.allocs.insert(alloc);
        self.by_ft.insert(ft, key);
        self.recent.remove(&ft);
        self.timers
            .push(Reverse((expires, Timer::Allocation { key, serial })));
        let st = &self.shared.stats;
        st.allocations_created.fetch_add(1, Ordering::Relaxed);
        st.allocations_live[transport_index(ft.transport)][primary].fetch_add(1, Ordering::Relaxed);
        r.finish(self.cfg.software.as_deref(), sign, fp)
    }

    /// Bind the port held for a RESERVATION-TOKEN (508 when unknown or expired).
    fn bind_reserved(
        &mut self,
        token: u64,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
        now: Instant,
    ) -> Option<(Relay, Option<u16>)> {
        let (ip, port) = self.shared.take_token(token, now)?;
        let Some(ra) = self.cfg.relays.iter().find(|r| r.bind == ip).copied() else {
            self.shared.ports.release(ip, port);
            return None;
        };
        self.bind_port(ra, port, owner, relays).map(|r| (r, None))
    }

    fn release_relay(&self, relay: &Relay, relays: &mut dyn RelaySockets) {
        relays.release(relay.handle);
        self.shared
            .ports
            .release(relay.bind.ip(), relay.bind.port());
    }

    fn free(&mut self, key: usize, relays: &mut dyn RelaySockets, why: &str) {
        if !self.allocs.contains(key) {
            return;
        }
        let a = self.allocs.remove(key);
        self.by_ft.remove(&a.ft);
        for c in &a.channels {
            self.chan_route.remove(&(a.ft, c.number));
        }
        for r in a.relays.iter().flatten() {
            self.release_relay(r, relays);
        }
        if a.pair_member {
            self.shared.quotas.release_pair_member();
        } else {
            self.shared.quotas.release(&a.quota_id, a.ft.client.ip());
        }
        let st = &self.shared.stats;
        let idx = match why {
            "expired" => 0,
            "refresh with lifetime 0" => 1,
            "connection closed" => 2,
            _ => 3,
        };
        st.allocations_ended_by[idx].fetch_add(1, Ordering::Relaxed);
        if let Some(r) = a.relays.iter().flatten().next() {
            st.allocations_live[transport_index(a.ft.transport)][family_index(r.bind.ip())]
                .fetch_sub(1, Ordering::Relaxed);
        }
        st.permissions_live
            .fetch_sub(a.perms.len() as i64, Ordering::Relaxed);
        st.channels_live
            .fetch_sub(a.channels.len() as i64, Ordering::Relaxed);
        let _g = a.span.enter();
        tracing::debug!(reason = why, "allocation ended");
    }

    /// Refresh (RFC 8656 §7.3): LIFETIME 0 deletes.
    fn refresh(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
        relays: &mut dyn RelaySockets,
        fp: bool,
    ) -> Vec<u8> {
        let sign = Some((auth.algo, &auth.key[..]));
        let key = self.by_ft[&ft];
        let (Ok(lifetime), Ok(family)) = (
            opt_attr::<Lifetime>(msg),
            opt_attr::<RequestedAddressFamily>(msg),
        ) else {
            return self.error(msg, ErrorCode::BAD_REQUEST, sign, fp);
        };
        if let Some(f) = family {
            let idx = if f.family() == AddressFamily::IPV6 {
                1
            } else {
                0
            };
            if self.allocs[key].relays[idx].is_none() {
                return self.error(msg, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, sign, fp);
            }
        }
        let secs = lifetime
            .map(|l| l.seconds())
            .unwrap_or(self.cfg.default_lifetime);
        let mut r = Reply::success(msg);
        if secs == 0 {
            self.free(key, relays, "refresh with lifetime 0");
            r.add(&Lifetime::new(0));
        } else {
            let secs = secs.clamp(self.cfg.default_lifetime, self.cfg.max_lifetime);
            let a = &mut self.allocs[key];
            a.expires = now + Duration::from_secs(secs.into());
            let serial = a.serial;
            self.timers
                .push(Reverse((a.expires, Timer::Allocation { key, serial })));
            r.add(&Lifetime::new(secs));
        }
        r.finish(self.cfg.software.as_deref(), sign, fp)
    }

    /// CreatePermission (RFC 8656 §9): every XOR-PEER-ADDRESS is checked and installed, or
    /// none is.
    fn create_permission(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
        fp: bool,
    ) -> Vec<u8> {
        let sign = Some((auth.algo, &auth.key[..]));
        let key = self.by_ft[&ft];
        let txid = msg.transaction_id();
        let mut peers: Vec<(IpAddr, IpVerdict)> = Vec::new();
        for n in 0..64 {
            match msg.nth_attribute::<XorPeerAddress>(n) {
                Ok(p) => {
                    let addr = p.addr(txid);
                    let verdict = self.policy.check_ip(addr.ip());
                    if verdict == IpVerdict::Deny {
                        tracing::debug!(parent: &self.allocs[key].span, peer = %addr.ip(), "permission denied by peer policy");
                        return self.error(msg, ErrorCode::FORBIDDEN, sign, fp);
                    }
                    if self.allocs[key].relay_for(&addr).is_none() {
                        return self.error(msg, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, sign, fp);
                    }
                    if !peers.iter().any(|(ip, _)| *ip == addr.ip()) {
                        peers.push((addr.ip(), verdict));
                    }
                }
                Err(StunParseError::MissingAttribute(_)) => break,
                Err(_) => return self.error(msg, ErrorCode::BAD_REQUEST, sign, fp),
            }
        }
        if peers.is_empty() {
            return self.error(msg, ErrorCode::BAD_REQUEST, sign, fp);
        }
        let a = &self.allocs[key];
        let live = a.perms.iter().filter(|p| p.expires > now).count();
        let new = peers
            .iter()
            .filter(|(ip, _)| a.permission(*ip, now).is_none())
            .count();
        if live + new > self.cfg.max_permissions {
            return self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, sign, fp);
        }
        let expires = now + self.cfg.permission_lifetime;
        for (ip, verdict) in peers {
            self.install_permission(key, ip, verdict, expires);
        }
        let serial = self.allocs[key].serial;
        self.timers
            .push(Reverse((expires, Timer::Sweep { key, serial })));
        Reply::success(msg).finish(self.cfg.software.as_deref(), sign, fp)
    }

    fn install_permission(&mut self, key: usize, ip: IpAddr, verdict: IpVerdict, expires: Instant) {
        let a = &mut self.allocs[key];
        if let Some(p) = a.perms.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            p.verdict = verdict;
        } else {
            self.shared
                .stats
                .permissions_live
                .fetch_add(1, Ordering::Relaxed);
            a.perms.push(Permission {
                ip,
                expires,
                verdict,
            });
        }
    }

    /// ChannelBind (RFC 8656 §11.2).
    fn channel_bind(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        auth: &Auth,
        fp: bool,
    ) -> Vec<u8> {
        let sign = Some((auth.algo, &auth.key[..]));
        let key = self.by_ft[&ft];
        let (Ok(Some(number)), Ok(Some(peer))) = (
            opt_attr::<ChannelNumber>(msg),
            opt_attr::<XorPeerAddress>(msg),
        ) else {
            return self.error(msg, ErrorCode::BAD_REQUEST, sign, fp);
        };
        let number = number.channel();
        let peer = peer.addr(msg.transaction_id());
        if !(0x4000..=self.cfg.max_channel_number).contains(&number) {
            tracing::debug!(
                channel = number,
                max = self.cfg.max_channel_number,
                "channel number out of range"
            );
            return self.error(msg, ErrorCode::BAD_REQUEST, sign, fp);
        }
        let a = &self.allocs[key];
        let verdict = self.policy.check_ip(peer.ip());
        if !self.peer_addr_allowed(verdict, peer) {
            tracing::debug!(parent: &a.span, %peer, "channel bind denied by peer policy");
            return self.error(msg, ErrorCode::FORBIDDEN, sign, fp);
        }
        if a.relay_for(&peer).is_none() {
            return self.error(msg, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, sign, fp);
        }
        let by_number = a.channels.iter().position(|c| c.number == number);
        let by_peer = a.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(i), Some(j)) if i == j => {}
            (None, None) => {
                if a.channels.len() >= self.cfg.max_channels {
                    return self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, sign, fp);
                }
            }
            _ => {
                tracing::debug!(parent: &a.span, channel = number, %peer, "channel bind conflicts with an existing binding");
                return self.error(msg, ErrorCode::BAD_REQUEST, sign, fp);
            }
        }
        if a.permission(peer.ip(), now).is_none()
            && a.perms.iter().filter(|p| p.expires > now).count() >= self.cfg.max_permissions
        {
            return self.error(msg, ErrorCode::INSUFFICIENT_CAPACITY, sign, fp);
        }
        let chan_expires = now + self.cfg.channel_lifetime;
        let perm_expires = now + self.cfg.permission_lifetime;
        self.install_permission(key, peer.ip(), verdict, perm_expires);
        let a = &mut self.allocs[key];
        match by_number {
            Some(i) => a.channels[i].expires = chan_expires,
            None => {
                a.channels.push(Channel {
                    number,
                    peer,
                    expires: chan_expires,
                });
                self.shared
                    .stats
                    .channels_live
                    .fetch_add(1, Ordering::Relaxed);
                self.chan_route.insert((ft, number), (key, peer));
            }
        }
        let serial = a.serial;
        self.timers
            .push(Reverse((perm_expires, Timer::Sweep { key, serial })));
        self.timers
            .push(Reverse((chan_expires, Timer::Sweep { key, serial })));
        Reply::success(msg).finish(self.cfg.software.as_deref(), sign, fp)
    }

    /// A datagram from `peer` arrived at the relay socket of `owner` (RFC 8656 §11.3, §12.6).
    pub fn handle_peer(
        &mut self,
        now: Instant,
        owner: RelayOwner,
        peer: SocketAddr,
        payload: &[u8],
    ) -> PeerRoute {
        match self.peer_route(now, owner, peer, payload) {
            Ok(route) => {
                self.path.to_client(payload.len());
                route
            }
            Err(why) => {
                self.shared.stats.drop(why);
                PeerRoute::Drop
            }
        }
    }

    fn peer_route(
        &mut self,
        now: Instant,
        owner: RelayOwner,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Result<PeerRoute, DropReason> {
        let Some(a) = self
            .allocs
            .get(owner.alloc)
            .filter(|a| a.serial == owner.serial)
        else {
            return Err(DropReason::NoAllocation);
        };
        let Some(perm) = a.permission(peer.ip(), now) else {
            return Err(DropReason::NoPermission);
        };
        if perm.verdict == IpVerdict::OwnRelay && !self.own_relay_port_allocated(peer) {
            return Err(DropReason::DeniedPeer);
        }
        let ft = a.ft;
        let channel = a.channels.iter().find(|c| c.peer == peer).map(|c| c.number);
        if let Some(a) = self.allocs.get_mut(owner.alloc) {
            a.bytes_to_client += payload.len() as u64;
        }
        if let Some(channel) = channel {
            return Ok(PeerRoute::Channel { ft, channel });
        }
        let txid = TransactionId::from(self.rng.random::<u128>());
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Indication, DATA),
            txid,
            MessageWriteVec::with_capacity(40 + payload.len()),
        );
        let _ = w.add_attribute(&XorPeerAddress::new(peer, txid));
        let _ = w.add_attribute(&Data::new(payload));
        Ok(PeerRoute::Indication(Transmit {
            ft,
            data: w.finish(),
        }))
    }

    /// Expire allocations, permissions and channels due by `now`.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut dyn RelaySockets) {
        while let Some(Reverse((t, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Allocation { key, serial } => {
                    let due = self
                        .allocs
                        .get(key)
                        .is_some_and(|a| a.serial == serial && a.expires <= now);
                    if due {
                        self.free(key, relays, "expired");
                    }
                }
                Timer::Sweep { key, serial } => {
                    let Some(a) = self.allocs.get_mut(key) else {
                        continue;
                    };
                    if a.serial != serial {
                        continue;
                    }
                    let (np, nc) = (a.perms.len(), a.channels.len());
                    a.perms.retain(|p| p.expires > now);
                    let ft = a.ft;
                    let routes = &mut self.chan_route;
                    a.channels.retain(|c| {
                        let keep = c.expires > now;
                        if !keep {
                            routes.remove(&(ft, c.number));
                        }
                        keep
                    });
                    let st = &self.shared.stats;
                    st.permissions_live
                        .fetch_sub((np - a.perms.len()) as i64, Ordering::Relaxed);
                    st.channels_live
                        .fetch_sub((nc - a.channels.len()) as i64, Ordering::Relaxed);
                }
            }
        }
        if !self.recent.is_empty() {
            self.recent.retain(|_, (_, _, exp)| *exp > now);
        }
        self.compact_timers();
        if now >= self.next_reservation_sweep {
            self.next_reservation_sweep = now + Duration::from_secs(5);
            self.shared.sweep_reservations(now);
        }
    }

    /// What an operator sees of each allocation of this shard.
    pub fn list(&self, now: Instant) -> Vec<AllocationInfo> {
        self.allocs
            .iter()
            .map(|(key, a)| AllocationInfo {
                key,
                serial: a.serial,
                username: a.username.to_string(),
                transport: match a.ft.transport {
                    Transport::Udp => "udp",
                    Transport::Tcp => "tcp",
                    Transport::Tls => "tls",
                },
                client: a.ft.client,
                server: a.ft.server,
                relayed: a.relays.iter().flatten().map(|r| r.advertise).collect(),
                age_seconds: now.saturating_duration_since(a.created).as_secs(),
                expires_in_seconds: a.expires.saturating_duration_since(now).as_secs(),
                permissions: a.perms.len(),
                channels: a.channels.len(),
                bytes_to_peer: a.bytes_to_peer,
                bytes_to_client: a.bytes_to_client,
            })
            .collect()
    }

    /// End allocations chosen by an operator (one by key and serial, or all of a user's).
    pub fn end_matching(
        &mut self,
        id: Option<(usize, u32)>,
        user: Option<&str>,
        relays: &mut dyn RelaySockets,
    ) -> usize {
        let keys: Vec<usize> = self
            .allocs
            .iter()
            .filter(|(k, a)| {
                id.is_some_and(|(ik, is)| ik == *k && is == a.serial)
                    || user.is_some_and(|u| *a.username == *u)
            })
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            self.free(*k, relays, "ended by an operator");
        }
        keys.len()
    }

    /// Whether `ft` holds an allocation.
    pub fn has_allocation(&self, ft: &FiveTuple) -> bool {
        self.by_ft.contains_key(ft)
    }

    /// Timers of ended allocations stay in the heap until their deadline; under heavy churn
    /// (allocate, delete, repeat) that is memory proportional to rate × lifetime. When dead
    /// entries dominate, drop them (O(n), amortised over the entries that made them).
    fn compact_timers(&mut self) {
        let live = self.allocs.len();
        if self.timers.len() <= 4096 + 8 * live {
            return;
        }
        let allocs = &self.allocs;
        self.timers.retain(|Reverse((_, t))| {
            let (Timer::Allocation { key, serial } | Timer::Sweep { key, serial }) = *t;
            allocs.get(key).is_some_and(|a| a.serial == serial)
        });
        if self.timers.capacity() > 4 * self.timers.len() + 4096 {
            self.timers.shrink_to_fit();
        }
        if self.recent.capacity() > 4 * self.recent.len() + 1024 {
            self.recent.shrink_to_fit();
        }
    }

    /// Timer entries held (for tests of the churn bound).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// The client's connection closed (TCP/TLS): its allocation ends at once.
    pub fn close_connection(&mut self, ft: FiveTuple, relays: &mut dyn RelaySockets) {
        if let Some(&key) = self.by_ft.get(&ft) {
            self.free(key, relays, "connection closed");
        }
        self.recent.remove(&ft);
    }

    /// End every allocation (shutdown).
    pub fn close_all(&mut self, relays: &mut dyn RelaySockets) {
        let keys: Vec<usize> = self.allocs.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.free(k, relays, "shutdown");
        }
    }

    /// Whether `ft` carries a stream transport (for shells that pad ChannelData).
    pub fn is_stream(ft: &FiveTuple) -> bool {
        ft.transport != Transport::Udp
    }
}

/// Comprehension-required attributes of `msg` that natpass does not understand.
fn unknown_required(msg: &Message<'_>) -> Option<Vec<AttributeType>> {
    let mut unknown: Vec<AttributeType> = Vec::new();
    for (_, a) in msg.iter_attributes() {
        let t = a.get_type();
        if t.comprehension_required()
            && !KNOWN.contains(&t.value())
            && t != MessageIntegrity::TYPE
            && t != MessageIntegritySha256::TYPE
            && t != Fingerprint::TYPE
            && !unknown.contains(&t)
        {
            unknown.push(t);
        }
    }
    if unknown.is_empty() {
        None
    } else {
        Some(unknown)
    }
}
