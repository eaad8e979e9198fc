//! Counters of one core (RFC 8656 has no counters; these are what an operator watches).
//!
//! Plain integers written only by the core that owns them: no atomics, no shared cache lines
//! on the relay path. The shell asks each shard for a copy ([`Core::stats`]) and sums them
//! ([`Stats::add`]); gauges (`*_live`) are per-core counts, so their sum is the server's.
//!
//! [`Core::stats`]: super::Core::stats

use super::{Family, Transport};

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

impl DropReason {
    /// Every reason, in metric label order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Malformed,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::DeniedPeer,
        DropReason::BufferFull,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::DeniedPeer => "denied_peer",
            DropReason::BufferFull => "buffer_full",
        }
    }
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its lifetime ran out (RFC 8656 §7: no Refresh in time).
    Expired = 0,
    /// Refresh with LIFETIME 0 (RFC 8656 §7.3).
    Deleted = 1,
    /// The client's TCP/TLS connection closed (RFC 8656 §3.1).
    Closed = 2,
    /// Ended by an operator (admin API) or at shutdown.
    Ended = 3,
}

impl EndReason {
    /// Every reason, in metric label order.
    pub const ALL: [EndReason; 4] = [
        EndReason::Expired,
        EndReason::Deleted,
        EndReason::Closed,
        EndReason::Ended,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::Closed => "closed",
            EndReason::Ended => "ended",
        }
    }
}

/// Error codes counted for Allocate failures.
pub const ALLOCATE_ERROR_CODES: [u16; 13] = [
    400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 500, 508,
];

/// One core's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations ended, by [`EndReason`].
    pub allocations_ended: [u64; 4],
    /// Live allocations by [`Transport`] and [`Family`] of the first relayed address.
    pub allocations_live: [[i64; 2]; 3],
    /// Allocate error responses by [`ALLOCATE_ERROR_CODES`].
    pub allocate_errors: [u64; 13],
    /// Live permissions.
    pub permissions_live: i64,
    /// Live channels.
    pub channels_live: i64,
    /// Binding requests answered.
    pub bindings: u64,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Packets dropped, by [`DropReason`].
    pub drops: [u64; 5],
    /// Authentication failures.
    pub auth_failures: u64,
    /// 401/438 challenges not sent because of the per-source rate limit.
    pub challenges_suppressed: u64,
    /// Authentication failures not answered because of the per-source failure limit.
    pub failures_suppressed: u64,
}

impl Stats {
    /// Count a dropped packet.
    pub fn drop(&mut self, why: DropReason) {
        self.drops[why as usize] += 1;
    }

    /// Packets dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Allocations ended for any reason.
    pub fn allocations_ended_total(&self) -> u64 {
        self.allocations_ended.iter().sum()
    }

    /// Live allocations on one transport and family.
    pub fn live(&self, transport: Transport, family: Family) -> i64 {
        self.allocations_live[transport.index()][family.index()]
    }

    pub(crate) fn allocate_error(&mut self, code: u16) {
        if let Some(i) = ALLOCATE_ERROR_CODES.iter().position(|c| *c == code) {
            self.allocate_errors[i] += 1;
        }
    }

    pub(crate) fn ended(&mut self, why: EndReason) {
        self.allocations_ended[why as usize] += 1;
    }

    pub(crate) fn relayed_to_peer(&mut self, bytes: usize) {
        self.packets_to_peer += 1;
        self.bytes_to_peer += bytes as u64;
    }

    pub(crate) fn relayed_to_client(&mut self, bytes: usize) {
        self.packets_to_client += 1;
        self.bytes_to_client += bytes as u64;
    }

    /// Add another core's counters (the server's figures are the sum over shards).
    pub fn add(&mut self, o: &Stats) {
        fn sum<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            a.iter_mut()
                .zip(b)
                .for_each(|(x, y)| *x = x.wrapping_add(*y));
        }
        self.allocations_created = self.allocations_created.wrapping_add(o.allocations_created);
        sum(&mut self.allocations_ended, &o.allocations_ended);
        for (a, b) in self.allocations_live.iter_mut().zip(&o.allocations_live) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += *y);
        }
        sum(&mut self.allocate_errors, &o.allocate_errors);
        self.permissions_live += o.permissions_live;
        self.channels_live += o.channels_live;
        self.bindings = self.bindings.wrapping_add(o.bindings);
        self.packets_to_peer = self.packets_to_peer.wrapping_add(o.packets_to_peer);
        self.bytes_to_peer = self.bytes_to_peer.wrapping_add(o.bytes_to_peer);
        self.packets_to_client = self.packets_to_client.wrapping_add(o.packets_to_client);
        self.bytes_to_client = self.bytes_to_client.wrapping_add(o.bytes_to_client);
        sum(&mut self.drops, &o.drops);
        self.auth_failures = self.auth_failures.wrapping_add(o.auth_failures);
        self.challenges_suppressed = self
            .challenges_suppressed
            .wrapping_add(o.challenges_suppressed);
        self.failures_suppressed = self.failures_suppressed.wrapping_add(o.failures_suppressed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_figures_add_up_including_gauges() {
        let mut a = Stats::default();
        a.relayed_to_peer(100);
        a.drop(DropReason::NoPermission);
        a.allocations_live[Transport::Tcp.index()][Family::V6.index()] = 2;
        a.allocate_error(486);
        let mut b = Stats::default();
        b.relayed_to_peer(50);
        b.relayed_to_client(7);
        b.ended(EndReason::Closed);
        b.allocations_live[Transport::Tcp.index()][Family::V6.index()] = -1;
        let mut total = Stats::default();
        total.add(&a);
        total.add(&b);
        assert_eq!((total.packets_to_peer, total.bytes_to_peer), (2, 150));
        assert_eq!((total.packets_to_client, total.bytes_to_client), (1, 7));
        assert_eq!(total.live(Transport::Tcp, Family::V6), 1);
        assert_eq!(total.dropped(), 1);
        assert_eq!(total.allocations_ended_total(), 1);
        assert_eq!(total.allocate_errors[10], 1, "486 is the 11th counted code");
    }

    #[test]
    fn codes_outside_the_table_are_not_counted() {
        let mut s = Stats::default();
        s.allocate_error(499);
        assert_eq!(s.allocate_errors.iter().sum::<u64>(), 0);
    }
}
