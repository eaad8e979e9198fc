//! natpass: a STUN/TURN NAT-traversal server.
//!
//! - [`proto`]: the sans-IO protocol core (no sockets, no clock).
//! - [`auth`]: long-term and TURN REST credentials, nonces, rate limits.
//! - [`relay`]: peer policy, relay ports, quotas.
//! - [`net`]: the shell that owns sockets and drives the core.
//! - [`config`]: configuration model and validation.
//! - [`lifecycle`]: [`run`] starts everything a config asks for and stops it on a token.
//! - [`ops`]: the operations handle the web side, admin API and signals use.
#![forbid(unsafe_code)]

pub mod acme;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod doctor;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod probe;
pub mod proto;
pub mod relay;
pub mod sfu;
pub mod signal;
pub mod testing;
pub mod tls;
pub(crate) mod udp;
pub mod web;
pub mod xdp;

pub use lifecycle::run;
pub use tokio_util::sync::CancellationToken;
