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
    /// `polled`: the wait did not sleep because of this policy alone (not because the shard
    /// had sockets left to read, or busy-polls anyway) — only such waits are scored.
    pub(crate) fn round(
        &mut self,
        polled: bool,
        waited_from: Instant,
        woke: Instant,
        datagrams: usize,
        now: Instant,
    ) {
        if polled {
            self.idle += woke.saturating_duration_since(waited_from);
            if datagrams > 0 {
                self.caught += 1;
            }
        }
        let end = *self.period_end.get_or_insert(now + PERIOD);
        let paid = self.idle <= self.max_cost.saturating_mul(self.caught);
        if now >= end || (!paid && self.idle >= EVIDENCE) {
            tracing::trace!(idle = ?self.idle, caught = self.caught, paid, "spin period");
            if !paid {
                self.paused_until = Some(now + self.pause);
                self.until = None;
                self.pause = (self.pause * 2).min(MAX_PAUSE);
            } else if self.caught > 0 {
                // Polling paid: back to the shortest pause. (A period without any polling
                // says nothing and leaves the pause as it was.)
                self.pause = PAUSE;
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

    /// One round as the shard runs it: the wait from the previous round's end polled if the
    /// policy said so then; it returned at `woke` with `datagrams`, and the round ends 1 µs
    /// later. Returns the round's end.
    fn round(p: &mut SpinPolicy, waited_from: Instant, woke: Instant, datagrams: usize) -> Instant {
        let polled = p.polling(waited_from);
        p.round(polled, waited_from, woke, datagrams, woke + US);
        woke + US
    }

    #[test]
    fn polls_only_after_a_burst_and_only_for_the_window() {
        let mut p = policy();
        let t0 = Instant::now();
        let t = round(&mut p, t0, t0, 7);
        assert!(!p.polling(t), "7 datagrams are no burst");
        let t = round(&mut p, t, t, 8);
        assert!(p.polling(t + 49 * US));
        assert!(!p.polling(t + 50 * US));
        let mut off = SpinPolicy::new(0, 50 * US, 10 * US);
        let t = round(&mut off, t0, t0, 1000);
        assert!(!off.polling(t), "after = 0 turns polling off");
    }

    /// A closed loop: every round's datagrams come `gap` after the previous round ended.
    /// Whether the shard still polls after 1 s of it.
    fn polls_after_a_closed_loop(gap: Duration) -> bool {
        let mut p = policy();
        let t0 = Instant::now();
        let mut t = t0;
        let mut was_on = false;
        while t < t0 + Duration::from_secs(1) {
            t = round(&mut p, t, t + gap, 8);
            was_on |= p.polling(t);
        }
        assert!(was_on, "never polled");
        p.polling(t)
    }

    /// Polling pays while catching a round's datagrams costs less idle polling than the
    /// limit (10 µs here), and stops when it costs more.
    #[test]
    fn keeps_polling_while_it_pays_and_stops_when_it_costs_more_than_a_wake_up() {
        assert!(polls_after_a_closed_loop(3 * US));
        assert!(polls_after_a_closed_loop(9 * US));
        assert!(!polls_after_a_closed_loop(11 * US));
        assert!(!polls_after_a_closed_loop(30 * US));
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
            let end = round(&mut p, t, t, 8);
            let on = p.polling(end);
            match (on, stops.len() > pauses.len()) {
                (false, false) => stops.push(t),
                (true, true) => pauses.push(t - *stops.last().unwrap()),
                _ => {}
            }
            if on {
                // The poll runs to the window's end, empty.
                round(&mut p, end, end + 50 * US, 0);
                polled += 50 * US;
            }
            // The next burst comes 1 ms later.
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
                m + 1 >= want && m <= want + 2,
                "pause {i}: {m} ms, want {want}: {ms:?}"
            );
        }
        // Polling in vain took well under 1 % of the 20 s.
        assert!(polled < Duration::from_millis(100), "polled {polled:?}");
    }

    /// A quiet spell (no bursts, so no polling) between two periods that did not pay says
    /// nothing about polling: the next pause is still the doubled one.
    #[test]
    fn a_period_without_polling_keeps_the_pause_doubled() {
        let mut p = policy();
        let t0 = Instant::now();
        // Bursts with nothing after them until polling stops (the first pause: 200 ms).
        let mut t = t0;
        while p.paused_until.is_none() {
            let end = round(&mut p, t, t, 8);
            round(&mut p, end, end + 50 * US, 0);
            t += Duration::from_millis(1);
        }
        assert_eq!(p.pause, 2 * PAUSE);
        // Quiet for 2 s: rounds without datagrams (timers), no polling.
        let quiet_end = t + Duration::from_secs(2);
        while t < quiet_end {
            t = round(&mut p, t, t + Duration::from_millis(10), 0);
        }
        assert_eq!(p.pause, 2 * PAUSE, "the quiet spell reset the back-off");
        // Wasted polls again: this pause is the doubled one.
        let stopped = loop {
            let end = round(&mut p, t, t, 8);
            if !p.polling(end) && p.paused_until.is_some_and(|u| u > end) {
                break end;
            }
            round(&mut p, end, end + 50 * US, 0);
            t += Duration::from_millis(1);
        };
        // Decided at the previous burst's poll, ≤ 1 ms before `stopped`.
        let pause = p.paused_until.unwrap() - stopped;
        assert!(
            pause + Duration::from_millis(1) >= 2 * PAUSE,
            "paused {pause:?}"
        );
        assert_eq!(p.pause, 4 * PAUSE);
    }
}
