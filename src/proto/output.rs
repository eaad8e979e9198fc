//! What the core is configured with and what it hands back to the shell: answers to send
//! ([`Transmit`]), zero-copy routes for relayed payloads ([`Forward`], [`PeerRoute`]), and
//! what an operator sees of an allocation ([`AllocationInfo`]).

use super::FiveTuple;
use super::channel_data::ChannelNumber;
use super::resources::RelayAddr;
use super::rfc5780::Rfc5780;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

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
    /// Highest channel number accepted in ChannelBind: 0x7FFF (RFC 5766, what coturn's tools
    /// use) by default, 0x4FFF with `strict-channel-numbers` (RFC 8656 §12).
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
    /// Servers that new Allocates are sent to while draining (300 Try Alternate, RFC 8489
    /// §10); none: 508.
    pub alternate_servers: Vec<std::net::SocketAddr>,
    /// Tell the shell of every channel route to copy into a kernel fast path
    /// ([`Offload`], `xdp-interface`); off: nothing is recorded.
    pub offload: bool,
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
            alternate_servers: Vec::new(),
            offload: false,
        }
    }
}

/// A message for a client, built by the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The client's 5-tuple (sent from `ft.server` to `ft.client`).
    pub ft: FiveTuple,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A channel route for a kernel fast path (the XDP program, issue 17), in the order the core
/// decided them. The fast path forwards a route's traffic both ways until `expires` — the
/// earlier of the channel's and its permission's end, so it stops when the userspace path
/// would — and the shell applies `Remove` when the channel or its permission ends earlier
/// than that, or the allocation goes. Only UDP clients' routes to peers the policy allows
/// (never our own relay or SFU addresses, which are checked per packet) are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Forward this channel until `expires` (installed, or refreshed with a new deadline).
    Install {
        /// The client's 5-tuple.
        ft: FiveTuple,
        /// The channel.
        channel: ChannelNumber,
        /// The relay socket's local address.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// Forwarding stops here.
        expires: std::time::Instant,
    },
    /// Stop forwarding this channel.
    Remove {
        /// The allocation it was (what the fast path relayed on it is counted there, if it
        /// still exists).
        owner: crate::proto::RelayOwner,
        /// The client's 5-tuple.
        ft: FiveTuple,
        /// The channel.
        channel: ChannelNumber,
        /// The relay socket's local address.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
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
        channel: ChannelNumber,
    },
    /// Send this Data indication.
    Indication(Transmit),
}

/// An allocation as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllocationInfo {
    /// Slab key (with the shard number, forms the allocation id).
    pub key: usize,
    /// Serial.
    pub serial: u32,
    /// The authenticated username.
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
    /// Live or expired permissions still held.
    pub permissions: usize,
    /// Bound channels.
    pub channels: usize,
    /// Payload bytes relayed to peers.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed to the client.
    pub bytes_to_client: u64,
    /// The channel routes the XDP fast path carries: what it relayed on them is counted in the
    /// kernel and not yet in the two byte counts above.
    #[serde(skip)]
    pub offloaded: Vec<OffloadedRoute>,
}

/// A channel route the XDP fast path carries, as [`AllocationInfo`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadedRoute {
    /// The client's 5-tuple.
    pub ft: FiveTuple,
    /// The channel.
    pub channel: ChannelNumber,
    /// The relayed address the peer sees.
    pub relay: SocketAddr,
    /// The peer.
    pub peer: SocketAddr,
}
