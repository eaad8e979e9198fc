//! Operator notices from the core, rate limited: refusals an operator must be able to see at
//! the default log level (a full quota, a refused credential) without letting a flood of
//! them write the logs. At most one line per kind every 10 s, carrying how many were folded
//! into it. `now` is passed in like everywhere in the core.

use std::time::{Duration, Instant};

/// The shortest time between two lines of one kind.
const EVERY: Duration = Duration::from_secs(10);

/// One kind of notice.
#[derive(Debug, Default)]
pub(crate) struct Notice {
    next: Option<Instant>,
    folded: u64,
}

impl Notice {
    /// Whether to log now; `Some(n)`: log it and say `n` more happened since the last line.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.folded += 1;
            return None;
        }
        self.next = Some(now + EVERY);
        Some(std::mem::take(&mut self.folded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_ten_seconds_with_the_folded_count() {
        let t0 = Instant::now();
        let mut n = Notice::default();
        assert_eq!(n.due(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(n.due(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(n.due(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(n.due(t0 + Duration::from_secs(11)), None);
    }
}
