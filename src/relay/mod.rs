//! Relay resources: peer address policy, relay port pool, quotas, reservation tokens — the
//! [`RelayResources`](crate::proto::RelayResources) the protocol core asks for.
//!
//! What every shard shares (ports, quotas, reservations, the drain switch) lives in
//! [`Shared`]; each shard's core holds a [`ShardResources`]: a handle on it plus its own
//! snapshot of the peer policy, replaced on reload.

pub mod policy;
pub mod ports;
pub mod quota;
pub mod shared;

pub use shared::{SelfTestAttempt, SelfTests, ShardResources, Shared};
