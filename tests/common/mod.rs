//! Test helpers, by purpose: [`harness`] drives the sans-IO core with fake time;
//! [`messages`] builds requests with stun-types' own integrity code (independent of
//! natpass's); [`server`] runs a real natpass on loopback; [`coturn`] runs the reference
//! server; [`abuse`] is the frame of the abuse tests.
#![allow(dead_code, unused_imports)]

pub mod abuse;
pub mod coturn;
pub mod harness;
pub mod messages;
pub mod server;
pub mod sio;

pub use abuse::*;
pub use coturn::*;
pub use harness::*;
pub use messages::*;
pub use server::*;

/// What every helper module imports.
mod prelude {
    pub use natpass::auth::{Credentials, Secret};
    pub use natpass::proto::{
        Core, CoreConfig, FiveTuple, Forward, PeerRoute, RelayAddr, Transmit, Transport,
    };
    pub use natpass::relay::policy::parse_net;
    pub use natpass::relay::quota::QuotaLimits;
    pub use natpass::relay::{ShardResources, Shared};
    pub use std::net::{IpAddr, SocketAddr};
    pub use std::sync::Arc;
    pub use std::time::{Duration, Instant};
    pub use stun_types::attribute::{
        AttributeStaticType, ErrorCode, Fingerprint, Nonce, Realm, Username, XorMappedAddress,
    };
    pub use stun_types::message::{
        IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
        MessageIntegrityCredentials, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
        Method, TransactionId,
    };
    pub use turn_types::attribute::{
        ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
    };
    pub use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
}
