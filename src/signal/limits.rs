//! The rules every signaling transport enforces: sizes, rates, room names, name and chat
//! lengths. The page gets the same rules from `/api/config` (see `web::page_config`).

use std::time::{Duration, Instant};

/// Signaling limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Participants per room.
    pub room_size: usize,
    /// Largest message in bytes.
    pub max_message: usize,
    /// Messages per second per connection (sustained).
    pub rate: f64,
    /// Burst of messages per connection.
    pub burst: f64,
    /// Drop a connection silent for this long (the transport pings at a third of it).
    pub idle: Duration,
    /// How long a dropped participant keeps its identity.
    pub grace: Duration,
    /// Messages buffered for a detached participant.
    pub buffer: usize,
    /// Bytes of payload buffered for a detached participant (what passes either cap is
    /// dropped: the participant resumes with a gap, as after a long outage).
    pub buffer_bytes: usize,
    /// Rooms on the server.
    pub max_rooms: usize,
    /// Signaling connections per client IP.
    pub per_ip: usize,
    /// A room moves to the SFU when a join takes it past this many participants (`None`: no
    /// SFU runs; every room is a mesh of at most `room_size`).
    pub mesh_size: Option<usize>,
    /// Participants per SFU room (a room that may still move to the SFU is capped by this too).
    pub sfu_room_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            room_size: 8,
            max_message: 64 * 1024,
            rate: 20.0,
            burst: 100.0,
            idle: Duration::from_secs(45),
            grace: Duration::from_secs(20),
            buffer: 256,
            buffer_bytes: 1024 * 1024,
            max_rooms: 10_000,
            per_ip: 32,
            mesh_size: None,
            sfu_room_size: 25,
        }
    }
}

impl Limits {
    /// The pace the page keeps under these limits (messages per second, burst): three
    /// quarters of the rate and of the burst, so timer jitter never trips the server's bucket.
    pub fn client_pacing(&self) -> (f64, f64) {
        (self.rate * 0.75, (self.burst * 0.75).floor().max(1.0))
    }
}

/// Longest room name, in bytes.
pub const ROOM_MAX_LEN: usize = 64;
/// Longest display name, in characters.
pub const NAME_MAX_CHARS: usize = 40;
/// Longest chat message, in characters.
pub const CHAT_MAX_CHARS: usize = 2000;
/// The characters of a room name, as the body of a regular-expression character class. The
/// page gets the rule from [`room_pattern`]; [`valid_room`] is the same rule for the server,
/// and a test checks that they agree on every byte.
const ROOM_CLASS: &str = "A-Za-z0-9_-";

/// The room-name rule as a regular expression (for the page's input check).
pub fn room_pattern() -> String {
    format!("^[{ROOM_CLASS}]{{1,{ROOM_MAX_LEN}}}$")
}

fn room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Is `r` an acceptable room name?
pub fn valid_room(r: &str) -> bool {
    !r.is_empty() && r.len() <= ROOM_MAX_LEN && r.bytes().all(room_byte)
}

/// Is `r` an acceptable room name for the compatibility events? Front-ends written for them
/// let people type any name, so any printable text of 1–64 bytes is taken.
pub fn valid_compat_room(r: &str) -> bool {
    !r.is_empty() && r.len() <= ROOM_MAX_LEN && !r.chars().any(char::is_control)
}

/// A display name as kept: trimmed, at most [`NAME_MAX_CHARS`]; `None` when empty or not
/// printable.
pub fn clean_name(n: &str) -> Option<String> {
    let name: String = n.trim().chars().take(NAME_MAX_CHARS).collect();
    (!name.is_empty() && !name.chars().any(char::is_control)).then_some(name)
}

/// A token bucket: `rate` per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limits: &Limits, now: Instant) -> Self {
        Self {
            tokens: limits.burst,
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, limits: &Limits, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * limits.rate).min(limits.burst);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes matched by a character-class body made of `x-y` ranges and single characters.
    fn class_matches(class: &str, b: u8) -> bool {
        let c = class.as_bytes();
        let mut i = 0;
        while i < c.len() {
            if i + 2 < c.len() && c[i + 1] == b'-' {
                if (c[i]..=c[i + 2]).contains(&b) {
                    return true;
                }
                i += 3;
            } else {
                if c[i] == b {
                    return true;
                }
                i += 1;
            }
        }
        false
    }

    #[test]
    fn the_room_pattern_served_to_the_page_is_the_servers_rule() {
        for b in 0..=255u8 {
            assert_eq!(class_matches(ROOM_CLASS, b), room_byte(b), "byte {b:#04x}");
        }
        assert_eq!(room_pattern(), "^[A-Za-z0-9_-]{1,64}$");
        assert!(valid_room(&"a".repeat(ROOM_MAX_LEN)));
        assert!(!valid_room(&"a".repeat(ROOM_MAX_LEN + 1)));
        assert!(!valid_room(""));
        assert!(!valid_room("a b"));
        assert!(valid_compat_room("Room of Ann"));
        assert!(!valid_compat_room("a\nb"));
    }

    #[test]
    fn the_page_paces_itself_under_the_server_bucket() {
        let l = Limits::default();
        let (rate, burst) = l.client_pacing();
        assert!(rate < l.rate && burst < l.burst && rate > 0.0 && burst >= 1.0);
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let l = Limits {
            rate: 2.0,
            burst: 3.0,
            ..Limits::default()
        };
        let t0 = Instant::now();
        let mut b = Bucket::new(&l, t0);
        assert_eq!((0..5).filter(|_| b.take(&l, t0)).count(), 3);
        assert!(!b.take(&l, t0 + Duration::from_millis(400)));
        assert!(b.take(&l, t0 + Duration::from_millis(600)));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(clean_name("  Ann "), Some("Ann".into()));
        assert_eq!(
            clean_name(&"x".repeat(99)).map(|n| n.len()),
            Some(NAME_MAX_CHARS)
        );
        assert_eq!(clean_name("   "), None);
        assert_eq!(clean_name("a\u{7}"), None);
    }
}
