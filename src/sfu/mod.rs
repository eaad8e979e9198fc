//! The selective forwarding unit (rooms past a mesh): one WebRTC session per participant with
//! natpass, which forwards each participant's tracks to the others. [`core`] is sans-IO on
//! `str0m` (no sockets, no clock: `now` passed in), the same shape as the TURN core; a shell
//! owns the UDP socket and drives it.

pub mod core;
pub mod layers;
pub mod shell;
pub mod tcp;

pub use self::core::{Notice, Sfu, SfuError, SfuStats, Transmit};
pub use self::shell::{SfuHandle, SharedStats, ShellError};
