//! natpass: a STUN/TURN NAT-traversal server.
//!
//! - [`proto`]: the sans-IO protocol core (no sockets, no clock).
//! - [`auth`]: long-term and TURN REST credentials, nonces, rate limits.
//! - [`relay`]: peer policy, relay ports, quotas.
//! - [`net`]: the shell that owns sockets and drives the core.
//! - [`config`]: configuration model and validation.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod net;
pub mod probe;
pub mod proto;
pub mod relay;
pub mod testing;
pub(crate) mod udp;
pub mod web;
