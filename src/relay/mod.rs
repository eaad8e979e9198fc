//! Relay resources: peer address policy, relay port pool, quotas.

pub mod policy;
pub mod ports;
pub mod quota;
