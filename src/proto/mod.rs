//! The sans-IO protocol core: STUN Binding (RFC 8489, RFC 5389 and RFC 3489 clients) and TURN
//! (RFC 8656, RFC 5766 clients, RFC 6156 IPv6) on top of `stun-types`/`turn-types`.
//!
//! Nothing here touches a socket or the clock: `now` is a parameter, randomness is injected,
//! relay sockets are opened through the [`RelaySockets`] trait the shell implements.

pub mod classic;
pub mod framing;
pub mod integrity;
pub mod server;

pub use server::{
    AllocationInfo, Core, CoreConfig, Forward, PeerRoute, RelayAddr, RelayOwner, RelaySockets,
    Rfc5780, Shared, Transmit,
};

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
    /// Whether messages travel over a byte stream (ChannelData then needs padding).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
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
        let t = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        write!(f, "{t}:{}->{}", self.client, self.server)
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
