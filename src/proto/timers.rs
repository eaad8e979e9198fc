//! One timer structure per core (RFC 8656 §7 allocation lifetime, §9 permission lifetime,
//! §11 channel lifetime): a binary heap of deadlines, no task or thread per allocation.
//!
//! Entries are never removed when an allocation refreshes or ends: each names the allocation
//! by slab key and serial, and a stale one is ignored when it fires. Under heavy churn
//! (allocate, delete, repeat) dead entries would pile up in proportion to rate × lifetime, so
//! [`Timers::compact`] drops them once they dominate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The allocation may have expired.
    Allocation {
        /// Slab key.
        key: usize,
        /// Serial of the allocation that armed it.
        serial: u32,
    },
    /// Some of the allocation's permissions or channels may have expired.
    Sweep {
        /// Slab key.
        key: usize,
        /// Serial of the allocation that armed it.
        serial: u32,
    },
}

impl Timer {
    /// The allocation the timer belongs to.
    pub fn owner(self) -> (usize, u32) {
        match self {
            Timer::Allocation { key, serial } | Timer::Sweep { key, serial } => (key, serial),
        }
    }
}

/// The deadlines of one core.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Arm `timer` at `at`.
    pub fn push(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Take the earliest timer if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse((_, timer))| timer),
            _ => None,
        }
    }

    /// Entries held, live or stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// When stale entries dominate (more than 4096 + 8 per live allocation), keep only those
    /// whose allocation `is_live` (O(n), amortised over the entries that made them).
    pub fn compact(&mut self, live: usize, is_live: impl Fn(usize, u32) -> bool) {
        if self.heap.len() <= 4096 + 8 * live {
            return;
        }
        self.heap.retain(|Reverse((_, t))| {
            let (key, serial) = t.owner();
            is_live(key, serial)
        });
        if self.heap.capacity() > 4 * self.heap.len() + 4096 {
            self.heap.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.push(
            t0 + Duration::from_secs(2),
            Timer::Sweep { key: 1, serial: 1 },
        );
        t.push(
            t0 + Duration::from_secs(1),
            Timer::Allocation { key: 0, serial: 1 },
        );
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        let due = t0 + Duration::from_secs(5);
        assert_eq!(
            t.pop_due(due),
            Some(Timer::Allocation { key: 0, serial: 1 })
        );
        assert_eq!(t.pop_due(due), Some(Timer::Sweep { key: 1, serial: 1 }));
        assert!(t.is_empty());
    }

    #[test]
    fn compaction_drops_only_stale_entries_once_they_dominate() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for serial in 0..5000u32 {
            t.push(t0, Timer::Allocation { key: 0, serial });
        }
        t.compact(1, |_, s| s == 7);
        assert_eq!(t.len(), 1);
        let mut few = Timers::default();
        few.push(t0, Timer::Allocation { key: 0, serial: 1 });
        few.compact(0, |_, _| false);
        assert_eq!(few.len(), 1, "below the threshold nothing is scanned");
    }
}
