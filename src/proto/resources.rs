//! What the core asks of the world outside it, as two small traits.
//!
//! - [`RelaySockets`]: the shell binds and closes UDP relay sockets (RFC 8656 §7.2 step 5).
//! - [`RelayResources`]: everything shared across shards or decided by the operator — the
//!   relay port pool, allocation quotas (per user, per source IP, global), RESERVATION-TOKEN
//!   holds (RFC 8656 §7.2: the second Allocate of an EVEN-PORT pair may arrive on another
//!   5-tuple, hence another shard), the drain switch, and the peer address policy (RFC 8656
//!   §21, the deny list). `relay/` implements it; the core holds no lock, `Arc` or atomic of
//!   its own, so a test can drive it with a plain struct.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A relay IP: the address sockets bind to, and the one advertised in XOR-RELAYED-ADDRESS
/// (different behind 1:1 NAT, `--external-ip PUBLIC/PRIVATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddr {
    /// Bound locally.
    pub bind: IpAddr,
    /// Told to clients.
    pub advertise: IpAddr,
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

/// What the peer policy says about a peer IP (at permission time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVerdict {
    /// Relaying to this IP is allowed.
    Allow,
    /// One of this server's own relay IPs: only currently allocated relay ports are reachable.
    OwnRelay,
    /// Denied by policy (403).
    Deny,
}

/// Which relay port an Allocate wants (RFC 8656 §7.2, EVEN-PORT §14.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    /// Any port.
    Any,
    /// An even port.
    Even,
    /// An even port, with the next one held for a RESERVATION-TOKEN.
    EvenPair,
}

/// Whom an allocation counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOwner<'a> {
    /// A user (REST credentials: the name after the expiry) from a source IP.
    User {
        /// Quota id of the credential.
        user: &'a str,
        /// The client's source IP.
        ip: IpAddr,
    },
    /// The second half of an RTP/RTCP pair (RESERVATION-TOKEN): the first half already
    /// counted against the user and IP; only the global cap applies.
    PairMember,
}

/// Which quota refused an allocation (486).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// Per-user cap.
    #[error("allocation quota per user reached")]
    User,
    /// Per-IP cap.
    #[error("allocation quota per source IP reached")]
    Ip,
    /// Global cap.
    #[error("server allocation capacity reached")]
    Total,
}

/// Ports, quotas, reservations, drain state and the peer policy.
pub trait RelayResources {
    /// Whether the server is draining: new allocations get 508, existing ones keep relaying.
    fn draining(&self) -> bool;
    /// Take one allocation from the quotas.
    fn acquire_quota(&mut self, owner: QuotaOwner<'_>) -> Result<(), QuotaExceeded>;
    /// Give back one allocation taken by [`RelayResources::acquire_quota`].
    fn release_quota(&mut self, owner: QuotaOwner<'_>);
    /// Reserve a free relay port on `ip` (`seed` picks where the search starts). For
    /// [`PortChoice::EvenPair`] the returned port is even and the next one is held too.
    fn reserve_port(&mut self, ip: IpAddr, seed: u32, choice: PortChoice) -> Option<u16>;
    /// Return a port to the pool.
    fn release_port(&mut self, ip: IpAddr, port: u16);
    /// Hold `port` on `ip` for `token` until `expires`.
    fn hold_reservation(&mut self, token: u64, ip: IpAddr, port: u16, expires: Instant);
    /// Claim the port held for `token`, if it is still held at `now`.
    fn take_reservation(&mut self, token: u64, now: Instant) -> Option<(IpAddr, u16)>;
    /// Release holds that expired by `now`.
    fn sweep_reservations(&mut self, now: Instant);
    /// The policy's decision for a peer IP (checked after canonicalisation).
    fn check_peer_ip(&self, ip: IpAddr) -> IpVerdict;
    /// True when `addr` is (or, for wildcard listeners, may be) one of this server's own
    /// client-facing listeners: never a valid peer.
    fn is_listener(&self, addr: SocketAddr) -> bool;
    /// True when `peer` is a currently allocated relay port on one of this server's relay IPs
    /// (relay-to-relay on one server).
    fn own_relay_port_allocated(&self, peer: SocketAddr) -> bool;
    /// An Allocate carrying `username` arrived from `ft` and was answered: success (None) or
    /// this error code. The self-test page's view of the server side; the default keeps
    /// nothing.
    fn allocate_seen(&mut self, _username: &str, _ft: &super::FiveTuple, _code: Option<u16>) {}
    /// True when `peer` is this server's SFU socket (the one own port a relay may reach).
    fn is_sfu(&self, _peer: SocketAddr) -> bool {
        false
    }
    /// On our own relay (and SFU) IPs, a peer may be an allocated relay port or the SFU.
    fn own_peer_reachable(&self, peer: SocketAddr) -> bool {
        self.own_relay_port_allocated(peer) || self.is_sfu(peer)
    }

    /// The per-packet part of the policy: never a listener of ours; on our own relay (and SFU)
    /// IPs, only currently allocated relay ports and the SFU's port.
    fn peer_addr_allowed(&self, verdict: IpVerdict, peer: SocketAddr) -> bool {
        match verdict {
            IpVerdict::Deny => false,
            IpVerdict::Allow => !self.is_listener(peer),
            IpVerdict::OwnRelay => !self.is_listener(peer) && self.own_peer_reachable(peer),
        }
    }
}
