//! Signaling: the rooms of a call and the rules of the channel, apart from any transport.
//!
//! - [`rooms`]: the room engine (sans-IO): participants, resume within a grace period,
//!   buffered delivery, the room cap, the compatibility rooms of the Zoom-clone events.
//! - [`driver`]: one request in, the sends it causes out, as data (also the messages between
//!   nodes when rooms are shared through Redis).
//! - [`payload`]: a relayed payload, kept as the JSON text it came as and shared by its
//!   recipients.
//! - [`limits`]: sizes, rates, name rules and the token bucket every transport applies.
//!
//! The transport is Socket.IO (`web::socketio`); it owns the sockets, passes `now` and fresh
//! ids in, and sends what the engine hands back.

pub mod driver;
pub mod limits;
pub mod payload;
pub mod rooms;

pub use limits::{
    Bucket, CHAT_MAX_CHARS, Limits, NAME_MAX_CHARS, ROOM_MAX_LEN, room_pattern, valid_room,
};
pub use payload::Payload;
pub use rooms::{CompatEvent, Delivery, Event, FreshIds, JoinRequest, Joined, Rooms, SignalError};
