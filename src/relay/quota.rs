//! Allocation quotas (docs/security.md, "Exhaustion"): per username AND per source IP (ephemeral
//! REST usernames defeat per-user quotas alone) and a global cap. Shared by every shard;
//! touched only when allocations are created or freed, never per packet.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
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
    /// A call participant's allocations that were not charged to their source IP, by
    /// (user, source IP).
    exempt: HashMap<(String, IpAddr), usize>,
    total: usize,
    /// Call participants: users whose per-user cap is a multiple of the limit until a
    /// deadline, and whose allocations are charged to that cap instead of their source IP's.
    scaled: HashMap<String, Scaled>,
    /// The participants minted for each signaling client address, oldest first (bounded).
    origins: HashMap<IpAddr, VecDeque<String>>,
}

#[derive(Debug, Clone, Copy)]
struct Scaled {
    factor: usize,
    until: Instant,
    origin: IpAddr,
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
        self.acquire_at(user, ip, Instant::now())
    }

    fn acquire_at(&self, user: &str, ip: IpAddr, now: Instant) -> Result<(), QuotaError> {
        let limits = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= limits.total {
            return Err(QuotaError::Total);
        }
        let participant = match c.scaled.get(user) {
            Some(s) if s.until > now => Some(s.factor),
            _ => None,
        };
        let per_user = participant.map_or(limits.per_user, |f| limits.per_user.saturating_mul(f));
        if c.users.get(user).copied().unwrap_or(0) >= per_user {
            return Err(QuotaError::User);
        }
        if participant.is_some() {
            // Six people in one office share an address and need ~30 allocations each; what
            // bounds them is their own cap and the participants an address can hold.
            *c.exempt.entry((user.to_owned(), ip)).or_default() += 1;
        } else if c.ips.get(&ip).copied().unwrap_or(0) >= limits.per_ip {
            return Err(QuotaError::Ip);
        } else {
            *c.ips.entry(ip).or_default() += 1;
        }
        c.total += 1;
        *c.users.entry(user.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Make `user` a call participant until `until`: it may hold `factor` times the per-user
    /// limit (at least 1×), and its allocations are not charged to their source IP. A
    /// participant's credential serves one peer connection per other participant, and a
    /// browser opens an allocation per local address and transport for each (keeping the old
    /// ones during an ICE restart); people behind one NAT share an address. `origin` is the
    /// signaling client's address: it holds at most `per_origin` participants at once (the
    /// signaling sessions it may have), and minting one more turns its oldest back into a
    /// plain user, so an address cannot churn joins into an unbounded number of exempt users.
    pub fn scale_user(
        &self,
        user: &str,
        factor: usize,
        until: Instant,
        origin: IpAddr,
        per_origin: usize,
    ) {
        self.scale_user_at(user, factor, until, origin, per_origin, Instant::now());
    }

    fn scale_user_at(
        &self,
        user: &str,
        factor: usize,
        until: Instant,
        origin: IpAddr,
        per_origin: usize,
        now: Instant,
    ) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let Counts {
            scaled, origins, ..
        } = &mut *c;
        let live = |scaled: &HashMap<String, Scaled>, u: &str, o: IpAddr| {
            scaled
                .get(u)
                .is_some_and(|s| s.until > now && s.origin == o)
        };
        if scaled.len() >= MAX_SCALED {
            scaled.retain(|_, s| s.until > now);
            origins.retain(|o, q| {
                q.retain(|u| live(scaled, u, *o));
                !q.is_empty()
            });
        }
        scaled.insert(
            user.to_owned(),
            Scaled {
                factor: factor.max(1),
                until,
                origin,
            },
        );
        let q = origins.entry(origin).or_default();
        q.retain(|u| u != user && live(scaled, u, origin));
        q.push_back(user.to_owned());
        while q.len() > per_origin.max(1) {
            if let Some(old) = q.pop_front() {
                scaled.remove(&old);
            }
        }
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
        decrement(&mut c.users, user);
        let key = (user.to_owned(), ip);
        if c.exempt.contains_key(&key) {
            decrement(&mut c.exempt, &key);
        } else {
            decrement(&mut c.ips, &ip);
        }
    }

    /// Live allocations on the whole server.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One less in a count map; an entry at zero goes.
fn decrement<K: Hash + Eq + std::borrow::Borrow<Q>, Q: Hash + Eq + ?Sized>(
    m: &mut HashMap<K, usize>,
    k: &Q,
) {
    if let Some(n) = m.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: std::time::Duration = std::time::Duration::from_secs(60);

    fn quotas(per_user: usize, per_ip: usize, total: usize) -> Quotas {
        Quotas::new(QuotaLimits {
            per_user,
            per_ip,
            total,
        })
    }

    #[test]
    fn a_scaled_user_holds_a_multiple_of_the_per_user_cap_until_its_deadline() {
        let q = quotas(2, 100, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        q.scale_user_at("p1", 3, now + MIN, ip, 32, now);
        for _ in 0..6 {
            q.acquire_at("p1", ip, now).unwrap();
        }
        assert_eq!(q.acquire_at("p1", ip, now), Err(QuotaError::User));
        q.acquire_at("p2", ip, now).unwrap();
        q.acquire_at("p2", ip, now).unwrap();
        assert_eq!(
            q.acquire_at("p2", ip, now),
            Err(QuotaError::User),
            "others keep the plain cap"
        );
        q.scale_user_at("p3", 3, now + MIN, ip, 32, now);
        let later = now + MIN;
        q.acquire_at("p3", ip, later).unwrap();
        q.acquire_at("p3", ip, later).unwrap();
        assert_eq!(
            q.acquire_at("p3", ip, later),
            Err(QuotaError::User),
            "an expired scale is 1×"
        );
    }

    #[test]
    fn participants_behind_one_address_are_not_held_to_its_per_ip_cap() {
        let q = quotas(10, 4, 1000);
        let nat: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        // Six people in one office: 6 × 28 allocations from one address whose cap is 4.
        for p in 0..6 {
            q.scale_user_at(&format!("p{p}"), 7, now + MIN, nat, 32, now);
            for _ in 0..28 {
                q.acquire_at(&format!("p{p}"), nat, now).unwrap();
            }
        }
        assert_eq!(q.total(), 168);
        // A plain REST user from that address still has the address's whole cap of 4.
        for _ in 0..4 {
            q.acquire_at("web", nat, now).unwrap();
        }
        assert_eq!(q.acquire_at("web", nat, now), Err(QuotaError::Ip));
        // Releases go back where they were charged: a participant's free no slot of the IP.
        q.release("p0", nat);
        assert_eq!(q.acquire_at("web2", nat, now), Err(QuotaError::Ip));
        q.release("web", nat);
        q.acquire_at("web2", nat, now).unwrap();
        // An expired participant is a plain user again (28 held ≥ 10) and its allocations stay
        // exempt until released: the address's count is untouched by their release.
        let later = now + MIN;
        assert_eq!(q.acquire_at("p1", nat, later), Err(QuotaError::User));
        for _ in 0..28 {
            q.release("p1", nat);
        }
        assert_eq!(
            q.acquire_at("p1", nat, later),
            Err(QuotaError::Ip),
            "plain now: charged to the full address"
        );
        assert_eq!(
            q.acquire_at("web3", nat, later),
            Err(QuotaError::Ip),
            "IP count untouched"
        );
        assert_eq!(q.total(), 168 + 4 - 1 - 1 + 1 - 28);
    }

    #[test]
    fn an_address_holds_at_most_its_share_of_participants() {
        let q = quotas(2, 2, 1000);
        let origin: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Instant::now();
        // Joining again and again mints new participants; only the last 3 stay participants.
        for p in 0..10 {
            q.scale_user_at(&format!("p{p}"), 5, now + MIN, origin, 3, now);
        }
        // Renewing one (a credential refresh) does not count it twice.
        q.scale_user_at("p9", 5, now + MIN, origin, 3, now);
        for p in 7..10 {
            for _ in 0..10 {
                q.acquire_at(&format!("p{p}"), origin, now).unwrap();
            }
        }
        // The evicted ones are plain users again: 2 each and charged to the address (cap 2).
        q.acquire_at("p0", origin, now).unwrap();
        q.acquire_at("p1", origin, now).unwrap();
        assert_eq!(q.acquire_at("p2", origin, now), Err(QuotaError::Ip));
        assert_eq!(q.acquire_at("p0", origin, now), Err(QuotaError::Ip));
    }

    #[test]
    fn per_user_per_ip_and_total_caps_are_enforced_and_released() {
        let q = quotas(2, 3, 4);
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
