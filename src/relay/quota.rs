//! Allocation quotas (docs/security.md, "Exhaustion"): per username AND per source IP (ephemeral
//! REST usernames defeat per-user quotas alone) and a global cap. Shared by every shard;
//! touched only when allocations are created or freed, never per packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Limits, all inclusive maxima.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Allocations per username (REST credentials: per the name after the expiry).
    pub per_user: usize,
    /// Allocations per client source IP.
    pub per_ip: usize,
    /// Allocations on the whole server.
    pub total: usize,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self {
            per_user: 10,
            per_ip: 64,
            total: 100_000,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    users: HashMap<String, usize>,
    ips: HashMap<IpAddr, usize>,
    total: usize,
    /// Users whose per-user cap is a multiple of the limit, until a deadline (a call
    /// participant: one credential serves a peer connection per other participant).
    scaled: HashMap<String, (usize, Instant)>,
}

/// Scaled users kept before expired entries are swept.
const MAX_SCALED: usize = 65_536;

/// Quota bookkeeping.
#[derive(Debug)]
pub struct Quotas {
    limits: Mutex<QuotaLimits>,
    counts: Mutex<Counts>,
}

/// Why an allocation was refused (486).
pub use crate::proto::QuotaExceeded as QuotaError;

impl Quotas {
    /// New bookkeeping with these limits.
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits: Mutex::new(limits),
            counts: Mutex::default(),
        }
    }

    /// Replace the limits (reload); existing allocations are kept.
    pub fn set_limits(&self, limits: QuotaLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Take one allocation for `user` from `ip`, or say which quota is full.
    pub fn acquire(&self, user: &str, ip: IpAddr) -> Result<(), QuotaError> {
        let limits = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= limits.total {
            return Err(QuotaError::Total);
        }
        let per_user = match c.scaled.get(user) {
            Some(&(factor, until)) if until > Instant::now() => limits.per_user * factor,
            _ => limits.per_user,
        };
        if c.users.get(user).copied().unwrap_or(0) >= per_user {
            return Err(QuotaError::User);
        }
        if c.ips.get(&ip).copied().unwrap_or(0) >= limits.per_ip {
            return Err(QuotaError::Ip);
        }
        c.total += 1;
        *c.users.entry(user.to_owned()).or_default() += 1;
        *c.ips.entry(ip).or_default() += 1;
        Ok(())
    }

    /// Until `until`, let `user` hold `factor` times the per-user limit (at least 1×). A
    /// call participant's credential serves one peer connection per other participant, and a
    /// browser opens an allocation per local address and transport for each (keeping the old
    /// ones during an ICE restart), so its cap follows the room size.
    pub fn scale_user(&self, user: &str, factor: usize, until: Instant) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.scaled.len() >= MAX_SCALED {
            let now = Instant::now();
            c.scaled.retain(|_, (_, t)| *t > now);
        }
        c.scaled.insert(user.to_owned(), (factor.max(1), until));
    }

    /// Take one allocation that completes an RTP/RTCP pair (Allocate with a RESERVATION-TOKEN
    /// issued to an allocation that already counted against the user and IP): only the global
    /// cap applies. Release it with [`Quotas::release_pair_member`].
    pub fn acquire_pair_member(&self) -> Result<(), QuotaError> {
        let limits = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= limits.total {
            return Err(QuotaError::Total);
        }
        c.total += 1;
        Ok(())
    }

    /// Give back an allocation taken by [`Quotas::acquire_pair_member`].
    pub fn release_pair_member(&self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
    }

    /// Give back one allocation taken by [`Quotas::acquire`].
    pub fn release(&self, user: &str, ip: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                c.users.remove(user);
            }
        }
        if let Some(n) = c.ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.ips.remove(&ip);
            }
        }
    }

    /// Live allocations on the whole server.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_user_holds_a_multiple_of_the_per_user_cap_until_its_deadline() {
        let q = Quotas::new(QuotaLimits {
            per_user: 2,
            per_ip: 100,
            total: 100,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        q.scale_user("p1", 3, Instant::now() + std::time::Duration::from_secs(60));
        for _ in 0..6 {
            q.acquire("p1", ip).unwrap();
        }
        assert_eq!(q.acquire("p1", ip), Err(QuotaError::User));
        q.acquire("p2", ip).unwrap();
        q.acquire("p2", ip).unwrap();
        assert_eq!(
            q.acquire("p2", ip),
            Err(QuotaError::User),
            "others keep the plain cap"
        );
        q.scale_user("p3", 3, Instant::now());
        q.acquire("p3", ip).unwrap();
        q.acquire("p3", ip).unwrap();
        assert_eq!(
            q.acquire("p3", ip),
            Err(QuotaError::User),
            "an expired scale is 1×"
        );
    }

    #[test]
    fn per_user_per_ip_and_total_caps_are_enforced_and_released() {
        let q = Quotas::new(QuotaLimits {
            per_user: 2,
            per_ip: 3,
            total: 4,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        q.acquire("u1", a).unwrap();
        q.acquire("u1", a).unwrap();
        assert_eq!(q.acquire("u1", b), Err(QuotaError::User));
        q.acquire("u2", a).unwrap();
        assert_eq!(q.acquire("u3", a), Err(QuotaError::Ip));
        q.acquire("u3", b).unwrap();
        assert_eq!(q.acquire("u4", b), Err(QuotaError::Total));
        q.release("u1", a);
        q.acquire("u4", b).unwrap();
        assert_eq!(q.total(), 4);
    }
}
