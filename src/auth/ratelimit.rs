//! Per-source-IP token buckets (401 responses, authentication failures). Memory is bounded:
//! past `max_entries` sources, idle buckets are swept and, if still full, new sources are
//! limited as a group (never unbounded growth under a spoofed-source flood).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token-bucket limiter keyed by IP.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    max_entries: usize,
    buckets: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
    last_sweep: Instant,
}

impl RateLimiter {
    /// `rate_per_sec` tokens per second, bursts of `burst`, at most `max_entries` sources tracked.
    pub fn new(rate_per_sec: f64, burst: f64, max_entries: usize, now: Instant) -> Self {
        Self {
            rate_per_sec,
            burst,
            max_entries,
            buckets: HashMap::new(),
            overflow: Bucket {
                tokens: burst * 16.0,
                last: now,
            },
            last_sweep: now,
        }
    }

    fn refill(b: &mut Bucket, now: Instant, rate: f64, burst: f64) {
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * rate).min(burst);
        b.last = now;
    }

    /// Take one token for `ip`; false when the source is over its rate.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.rate_per_sec, self.burst);
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_entries {
            // Sweep buckets that have refilled completely (they carry no information), at most
            // once a second so a flood of new sources costs O(1) per packet.
            if now.saturating_duration_since(self.last_sweep) >= Duration::from_secs(1) {
                self.last_sweep = now;
                let full_after = Duration::from_secs_f64(burst / rate.max(f64::MIN_POSITIVE));
                self.buckets
                    .retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            }
            if self.buckets.len() >= self.max_entries {
                let o = &mut self.overflow;
                Self::refill(o, now, rate * 16.0, burst * 16.0);
                if o.tokens >= 1.0 {
                    o.tokens -= 1.0;
                    return true;
                }
                return false;
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        Self::refill(b, now, rate, burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_source_and_refills() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 10.0, 100, t0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..100).filter(|_| r.allow(a, t0)).count(), 10);
        assert!(r.allow(b, t0));
        assert!(r.allow(a, t0 + Duration::from_millis(100)));
        assert!(!r.allow(a, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn memory_stays_bounded_under_spoofed_flood() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 10.0, 1000, t0);
        let mut allowed = 0;
        for i in 0..100_000u32 {
            if r.allow(IpAddr::from(i.to_be_bytes()), t0) {
                allowed += 1;
            }
        }
        assert!(r.len() <= 1000);
        // 1000 tracked sources plus the shared overflow bucket's burst.
        assert_eq!(allowed, 1000 + 160);
    }
}
