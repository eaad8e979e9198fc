//! The sans-IO protocol core: STUN Binding (RFC 8489, RFC 5389 and RFC 3489 clients) and TURN
//! (RFC 8656, RFC 5766 clients, RFC 6156 IPv6) on top of `stun-types`/`turn-types`.
//!
//! Nothing here touches a socket, a lock or the clock: `now` is a parameter, randomness is
//! seeded by the caller, relay sockets are opened through [`RelaySockets`] (the shell) and
//! ports, quotas, reservation tokens and the peer policy are asked of [`RelayResources`]
//! (implemented in `relay/`). Credentials are a snapshot the shell hands in
//! ([`Core::set_credentials`]).
//!
//! One datagram or frame goes through one pipeline ([`core`]): [`message::decode`] classifies
//! and parses it once; a request is authenticated ([`authenticate`]), dispatched to its
//! handler — [`allocation`] (RFC 8656 §7), [`permission`] (§9), [`channel`] (§11–§12),
//! [`binding`] (RFC 8489 §7.3, RFC 5780) — which returns `Result<Reply, TurnError>`, and
//! [`error`] turns every failure into its error response in one place. Around them:
//! [`relayed_address`] (choosing and binding relay ports), [`transactions`] (retransmitted
//! requests), [`timers`], [`stats`], [`channel_data`] and [`framing`] (the wire framing), and
//! [`output`] (what goes back to the shell).

pub mod allocation;
pub mod authenticate;
pub mod binding;
pub mod channel;
pub mod channel_data;
pub mod classic;
pub mod core;
pub mod error;
pub mod framing;
pub mod indication;
pub mod integrity;
pub mod message;
mod notice;
pub mod output;
pub mod permission;
pub mod relayed_address;
pub mod reply;
pub mod resources;
pub mod rfc5780;
pub mod stats;
#[cfg(test)]
mod test_support;
pub mod timers;
pub mod transactions;

pub use self::core::{
    AllocationInfo, Core, CoreConfig, Forward, Offload, OffloadedRoute, PeerRoute, Transmit,
};
pub use channel_data::{ChannelData, ChannelNumber};
pub use error::TurnError;
pub use resources::{
    IpVerdict, PortChoice, QuotaExceeded, QuotaOwner, RelayAddr, RelayOwner, RelayResources,
    RelaySockets,
};
pub use rfc5780::Rfc5780;
pub use stats::{DropReason, EndReason, Stats};

use std::net::SocketAddr;

/// The transport between a client and this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain UDP.
    Udp,
    /// Plain TCP (RFC 8656 stream framing).
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Every transport, in metric label order.
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    /// Whether messages travel over a byte stream (ChannelData then needs padding).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Lower-case name (metric label, admin API).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Position in [`Transport::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A client's 5-tuple: transport, client address, server (listener) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Transport protocol.
    pub transport: Transport,
    /// The client's address as seen by this server.
    pub client: SocketAddr,
    /// The server address the client talks to.
    pub server: SocketAddr,
}

impl std::fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}->{}",
            self.transport.name(),
            self.client,
            self.server
        )
    }
}

/// Address family of a relayed address (RFC 6156): index 0 IPv4, 1 IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4 = 0,
    /// IPv6.
    V6 = 1,
}

impl Family {
    /// The family of an IP address.
    pub fn of(ip: std::net::IpAddr) -> Self {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// Position in per-family arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// First-byte demultiplexing (RFC 8656 §12): `00` STUN, `01` ChannelData, else not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (or garbage starting like one).
    Stun,
    /// ChannelData.
    ChannelData,
    /// Neither.
    Other,
}

/// Classify a packet by its first two bits.
#[inline]
pub fn classify(first: u8) -> Kind {
    match first >> 6 {
        0 => Kind::Stun,
        1 => Kind::ChannelData,
        _ => Kind::Other,
    }
}
