//! When a shard polls without sleeping after a burst, and when it stops because polling does
//! not pay. Pure: the shard passes the clock in.
//!
//! Polling for a short window after a burst saves the sleep and wake-up of the shard's thread
//! when the next datagrams are about to arrive (a video frame's next packets, a closed loop's
//! round trip). It is a bet: every microsecond polled in vain is CPU the server pays, and where
//! the kernel's receive path runs on the same core (a NIC's softirq, threaded NAPI) the polling
//! also competes with what would deliver the datagram. So the policy keeps score — the idle
//! time polled per round that found datagrams — over a period, and when that cost exceeds what
//! a sleep and a wake-up cost, it stops polling for a while and then measures again.
use std::time::{Duration, Instant};

/// How long one scoring period lasts.
const PERIOD: Duration = Duration::from_millis(50);
/// How long polling stays off after a period in which it did not pay; each further such period
/// doubles it, up to [`MAX_PAUSE`], so that measuring again costs little where it never pays.
const PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_millis(3200);
/// Idle polling after which a period that does not pay ends early: enough to judge.
const EVIDENCE: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub(crate) struct SpinPolicy {
    /// Datagrams in one round after which the shard polls (0: never).
    after: usize,
    /// How long it polls after such a round.
    window: Duration,
    /// Idle time polled per round that found datagrams, above which polling does not pay.
    max_cost: Duration,
    /// While polling: until when.
    until: Option<Instant>,
    /// Polling is off until then (it did not pay in the last period).
    paused_until: Option<Instant>,
    /// The next pause's length.
    pause: Duration,
    period_end: Option<Instant>,
    /// This period: idle time spent polling, and rounds that polling found datagrams in.
    idle: Duration,
    caught: u32,
}

impl SpinPolicy {
    pub(crate) fn new(after: usize, window: Duration, max_cost: Duration) -> Self {
        SpinPolicy {
            after,
            window,
            max_cost,
            until: None,
            paused_until: None,
            pause: PAUSE,
            period_end: None,
            idle: Duration::ZERO,
            caught: 0,
        }
    }

    /// Whether the next wait polls instead of sleeping.
    pub(crate) fn polling(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now < t)
    }

    /// One round of the shard: it waited from `waited_from` (the end of the previous round)
    /// until `woke` (the poll's return), and relayed `datagrams` in it; `now` is its end.
    pub(crate) fn round(
        &mut self,
        waited_from: Instant,
        woke: Instant,
        datagrams: usize,
        now: Instant,
    ) {
        if self.until.is_some_and(|t| waited_from < t) {
            // This round's wait was a poll: score it.
            self.idle += woke.saturating_duration_since(waited_from);
            if datagrams > 0 {
                self.caught += 1;
            }
        }
        let end = *self.period_end.get_or_insert(now + PERIOD);
        let paid = self.idle <= self.max_cost * self.caught;
        if now >= end || (!paid && self.idle >= EVIDENCE) {
            tracing::trace!(idle = ?self.idle, caught = self.caught, paid, "spin period");
            if paid {
                self.pause = PAUSE;
            } else {
                self.paused_until = Some(now + self.pause);
                self.until = None;
                self.pause = (self.pause * 2).min(MAX_PAUSE);
            }
            self.idle = Duration::ZERO;
            self.caught = 0;
            self.period_end = Some(self.paused_until.map_or(now, |p| p.max(now)) + PERIOD);
        }
        let paused = self.paused_until.is_some_and(|p| now < p);
        if self.after > 0 && datagrams >= self.after && !paused {
            self.until = Some(now + self.window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn policy() -> SpinPolicy {
        SpinPolicy::new(8, 50 * US, 10 * US)
    }

    #[test]
    fn polls_only_after_a_burst_and_only_for_the_window() {
        let mut p = policy();
        let t0 = Instant::now();
        p.round(t0, t0, 7, t0);
        assert!(!p.polling(t0), "7 datagrams are no burst");
        p.round(t0, t0, 8, t0);
        assert!(p.polling(t0 + 49 * US));
        assert!(!p.polling(t0 + 50 * US));
        let mut off = SpinPolicy::new(0, 50 * US, 10 * US);
        off.round(t0, t0, 1000, t0);
        assert!(!off.polling(t0), "after = 0 turns polling off");
    }

    /// Bursts whose next datagrams come 3 µs later: polling pays and stays on.
    #[test]
    fn keeps_polling_while_it_catches_datagrams_cheaply() {
        let mut p = policy();
        let mut t = Instant::now();
        for _ in 0..100_000 {
            p.round(t, t, 8, t);
            assert!(p.polling(t), "stopped polling although it paid");
            let woke = t + 3 * US;
            p.round(t, woke, 2, woke + US);
            t = woke + US;
        }
    }

    /// Bursts after which nothing comes within the window: every poll is wasted, so polling
    /// stops as soon as that is clear, and is measured again after a pause that doubles each
    /// time it still does not pay, up to MAX_PAUSE.
    #[test]
    fn stops_polling_when_it_catches_nothing_and_measures_again_less_and_less_often() {
        let mut p = policy();
        let t0 = Instant::now();
        let mut t = t0;
        let mut stops: Vec<Instant> = Vec::new();
        let mut pauses: Vec<Duration> = Vec::new();
        let mut polled = Duration::ZERO;
        while t < t0 + Duration::from_secs(20) {
            p.round(t, t, 8, t);
            match (p.polling(t), stops.len() > pauses.len()) {
                (false, false) => stops.push(t),
                (true, true) => pauses.push(t - *stops.last().unwrap()),
                _ => {}
            }
            if p.polling(t) {
                polled += 50 * US;
            }
            // The poll ends with the window, empty; the next burst comes 1 ms later.
            let end = t + 50 * US;
            p.round(t, end, 0, end);
            t += Duration::from_millis(1);
        }
        assert!(
            stops[0] - t0 <= Duration::from_millis(25),
            "judged after {:?}",
            stops[0] - t0
        );
        let ms: Vec<u128> = pauses.iter().map(|d| d.as_millis()).collect();
        assert!(ms.len() >= 6, "{ms:?}");
        for (i, &m) in ms.iter().enumerate() {
            let want = (200u128 << i).min(3200);
            assert!(
                m + 1 >= want && m <= want + 1,
                "pause {i}: {m} ms, want {want}: {ms:?}"
            );
        }
        // Polling in vain took well under 1 % of the 20 s.
        assert!(polled < Duration::from_millis(100), "polled {polled:?}");
    }

    /// Catching datagrams, but after 30 µs of polling each: dearer than a sleep and a wake-up.
    #[test]
    fn stops_polling_when_catching_costs_more_than_a_wake_up() {
        let mut p = policy();
        let t0 = Instant::now();
        let mut t = t0;
        while t < t0 + 2 * PERIOD {
            p.round(t, t, 8, t);
            let woke = t + 30 * US;
            p.round(t, woke, 1, woke);
            t = woke + 100 * US;
        }
        p.round(t, t, 8, t);
        assert!(!p.polling(t));
    }
}
