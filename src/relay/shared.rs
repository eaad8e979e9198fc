//! The cross-shard relay resources and the per-shard view the core uses.
//!
//! Touched on control paths only (Allocate, the end of an allocation, reservations), except
//! the port pool's lock-free bitmap, read per packet for relay-to-relay traffic.

use super::policy::{PeerPolicy, canonical_ip};
use super::ports::PortPool;
use super::quota::Quotas;
use crate::proto::{IpVerdict, PortChoice, QuotaExceeded, QuotaOwner, RelayAddr, RelayResources};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What every shard shares.
#[derive(Debug)]
pub struct Shared {
    /// Allocation quotas.
    pub quotas: Quotas,
    /// Relay ports in use.
    pub ports: PortPool,
    /// RESERVATION-TOKEN → reserved relay port and when the hold ends (RFC 8656 §7.2: the
    /// second Allocate may come from another 5-tuple, hence another shard).
    reservations: Mutex<HashMap<u64, (IpAddr, u16, Instant)>>,
    /// Shutting down: new allocations are refused (508), existing ones keep relaying.
    draining: AtomicBool,
    /// What Allocates the self-test's credentials made (see [`SelfTests`]).
    pub selftests: SelfTests,
}

/// The server's view of self-test attempts (`/selftest`): for REST usernames whose name part
/// starts with `selftest-` only, the Allocates that arrived (transport, answer), at most
/// 16 per username and 1,024 usernames (the oldest forgotten first). Written when an Allocate
/// is answered, never on the relay path.
#[derive(Debug, Default)]
pub struct SelfTests {
    seen: Mutex<SeenBy>,
}

/// Usernames in the order first seen, and their attempts.
type SeenBy = (
    std::collections::VecDeque<String>,
    HashMap<String, Vec<SelfTestAttempt>>,
);

/// One Allocate a self-test credential made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfTestAttempt {
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    /// The client's address as the server saw it (what STUN would answer over UDP).
    pub from: String,
    /// The error code answered (None: an allocation was made).
    pub code: Option<u16>,
}

impl SelfTests {
    const USERS: usize = 1024;
    const PER_USER: usize = 16;

    /// Whether `username` is a self-test credential's (`expiry:selftest-…`).
    pub fn is_selftest(username: &str) -> bool {
        username.split_once(':').is_some_and(|(exp, name)| {
            exp.bytes().all(|b| b.is_ascii_digit()) && name.starts_with("selftest-")
        })
    }

    fn record(&self, username: &str, ft: &crate::proto::FiveTuple, code: Option<u16>) {
        if !Self::is_selftest(username) {
            return;
        }
        let transport = match ft.transport {
            crate::proto::Transport::Udp => "udp",
            crate::proto::Transport::Tcp => "tcp",
            crate::proto::Transport::Tls => "tls",
        };
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Only names /api/selftest handed out: an Allocate carrying a made-up selftest- name
        // (unauthenticated, perhaps spoofed) can neither evict real records nor add any.
        let Some(v) = g.1.get_mut(username) else {
            return;
        };
        if v.len() < Self::PER_USER {
            v.push(SelfTestAttempt {
                transport,
                from: ft.client.to_string(),
                code,
            });
        }
    }

    /// Keep the attempts of `username`, a name /api/selftest just handed out (the oldest of
    /// 1,024 is forgotten first).
    pub fn issue(&self, username: &str) {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (order, map) = &mut *g;
        if map.contains_key(username) {
            return;
        }
        if order.len() >= Self::USERS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        order.push_back(username.to_owned());
        map.insert(username.to_owned(), Vec::new());
    }

    /// The attempts of `username` (empty when none, or not a self-test username).
    pub fn attempts(&self, username: &str) -> Vec<SelfTestAttempt> {
        let g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        g.1.get(username).cloned().unwrap_or_default()
    }
}

impl Shared {
    /// The shared resources over these quotas and ports.
    pub fn new(quotas: Quotas, ports: PortPool) -> Self {
        Self {
            quotas,
            ports,
            reservations: Mutex::default(),
            draining: AtomicBool::new(false),
            selftests: SelfTests::default(),
        }
    }

    /// Start or stop draining.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Release);
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn reservations(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (IpAddr, u16, Instant)>> {
        self.reservations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One shard's view: the shared resources, its relay addresses and its policy snapshot.
#[derive(Debug)]
pub struct ShardResources {
    shared: Arc<Shared>,
    policy: PeerPolicy,
    relays: Vec<RelayAddr>,
}

impl ShardResources {
    /// A view for one shard.
    pub fn new(shared: Arc<Shared>, policy: PeerPolicy, relays: Vec<RelayAddr>) -> Self {
        Self {
            shared,
            policy,
            relays,
        }
    }

    /// Replace the policy snapshot (reload).
    pub fn set_policy(&mut self, policy: PeerPolicy) {
        self.policy = policy;
    }

    /// The shared resources.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl RelayResources for ShardResources {
    fn draining(&self) -> bool {
        self.shared.is_draining()
    }

    fn allocate_seen(&mut self, username: &str, ft: &crate::proto::FiveTuple, code: Option<u16>) {
        self.shared.selftests.record(username, ft, code);
    }

    fn acquire_quota(&mut self, owner: QuotaOwner<'_>) -> Result<(), QuotaExceeded> {
        match owner {
            QuotaOwner::User { user, ip } => self.shared.quotas.acquire(user, ip),
            QuotaOwner::PairMember => self.shared.quotas.acquire_pair_member(),
        }
    }

    fn release_quota(&mut self, owner: QuotaOwner<'_>) {
        match owner {
            QuotaOwner::User { user, ip } => self.shared.quotas.release(user, ip),
            QuotaOwner::PairMember => self.shared.quotas.release_pair_member(),
        }
    }

    fn reserve_port(&mut self, ip: IpAddr, seed: u32, choice: PortChoice) -> Option<u16> {
        let ports = &self.shared.ports;
        match choice {
            PortChoice::Any => ports.reserve(ip, seed, false),
            PortChoice::Even => ports.reserve(ip, seed, true),
            PortChoice::EvenPair => ports.reserve_pair(ip, seed),
        }
    }

    fn release_port(&mut self, ip: IpAddr, port: u16) {
        self.shared.ports.release(ip, port);
    }

    fn hold_reservation(&mut self, token: u64, ip: IpAddr, port: u16, expires: Instant) {
        self.shared
            .reservations()
            .insert(token, (ip, port, expires));
    }

    fn take_reservation(&mut self, token: u64, now: Instant) -> Option<(IpAddr, u16)> {
        let held = self.shared.reservations().remove(&token);
        match held {
            Some((ip, port, exp)) if exp > now => Some((ip, port)),
            Some((ip, port, _)) => {
                self.shared.ports.release(ip, port);
                None
            }
            None => None,
        }
    }

    fn sweep_reservations(&mut self, now: Instant) {
        let ports = &self.shared.ports;
        self.shared.reservations().retain(|_, (ip, port, exp)| {
            let keep = *exp > now;
            if !keep {
                ports.release(*ip, *port);
            }
            keep
        });
    }

    fn check_peer_ip(&self, ip: IpAddr) -> IpVerdict {
        self.policy.check_ip(ip)
    }

    fn is_listener(&self, addr: SocketAddr) -> bool {
        self.policy.is_listener(addr)
    }

    fn is_sfu(&self, peer: SocketAddr) -> bool {
        self.policy.is_sfu(peer)
    }

    fn own_relay_port_allocated(&self, peer: SocketAddr) -> bool {
        let ip = canonical_ip(peer.ip());
        self.relays
            .iter()
            .filter(|r| canonical_ip(r.bind) == ip || canonical_ip(r.advertise) == ip)
            .any(|r| self.shared.ports.is_allocated(r.bind, peer.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::quota::QuotaLimits;
    use std::time::Duration;

    fn resources() -> ShardResources {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let shared = Arc::new(Shared::new(
            Quotas::new(QuotaLimits::default()),
            PortPool::new(&[ip], 50_000..=50_009),
        ));
        let policy = PeerPolicy::new(vec![], vec![], vec![ip], vec![]);
        let relays = vec![RelayAddr {
            bind: ip,
            advertise: ip,
        }];
        ShardResources::new(shared, policy, relays)
    }

    #[test]
    fn the_sfu_port_is_reachable_and_nothing_else_unallocated() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let sfu = SocketAddr::new(ip, 3479);
        let mut r = resources();
        r.set_policy(PeerPolicy::new(vec![], vec![], vec![ip], vec![]).with_sfu([sfu]));
        assert!(r.peer_addr_allowed(IpVerdict::OwnRelay, sfu));
        assert!(!r.peer_addr_allowed(IpVerdict::OwnRelay, SocketAddr::new(ip, 3478)));
        assert!(
            !resources().peer_addr_allowed(IpVerdict::OwnRelay, sfu),
            "no SFU, no way in"
        );
    }

    #[test]
    fn own_relay_ip_is_reachable_only_on_allocated_ports() {
        let mut r = resources();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(r.check_peer_ip(ip), IpVerdict::OwnRelay);
        let port = r.reserve_port(ip, 0, PortChoice::Any).unwrap();
        assert!(r.own_relay_port_allocated(SocketAddr::new(ip, port)));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(r.own_relay_port_allocated(SocketAddr::new(mapped, port)));
        r.release_port(ip, port);
        assert!(!r.own_relay_port_allocated(SocketAddr::new(ip, port)));
        assert!(!r.peer_addr_allowed(IpVerdict::OwnRelay, SocketAddr::new(ip, port)));
    }

    #[test]
    fn an_expired_reservation_gives_its_port_back() {
        let mut r = resources();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let port = r.reserve_port(ip, 0, PortChoice::Any).unwrap();
        r.hold_reservation(7, ip, port, t0 + Duration::from_secs(30));
        assert_eq!(r.take_reservation(8, t0), None);
        assert_eq!(r.take_reservation(7, t0), Some((ip, port)));
        r.hold_reservation(9, ip, port, t0 + Duration::from_secs(30));
        r.sweep_reservations(t0 + Duration::from_secs(31));
        assert_eq!(r.shared().ports.in_use(), 0);
        assert_eq!(r.take_reservation(9, t0), None);
    }

    #[test]
    fn self_test_attempts_are_kept_for_self_test_usernames_only_and_bounded() {
        use crate::proto::{FiveTuple, Transport};
        let t = SelfTests::default();
        let ft = |transport| FiveTuple {
            transport,
            client: "127.0.0.1:5000".parse().unwrap(),
            server: "127.0.0.1:3478".parse().unwrap(),
        };
        assert!(SelfTests::is_selftest(
            "1700000000:selftest-0123456789abcdef"
        ));
        for not in ["1700000000:web", "selftest-1", "abc:selftest-1", "alice"] {
            assert!(!SelfTests::is_selftest(not), "{not}");
        }
        t.record("1700000000:web", &ft(Transport::Udp), None);
        assert!(
            t.attempts("1700000000:web").is_empty(),
            "ordinary credentials are not kept"
        );
        let u = "1700000000:selftest-1";
        t.record(u, &ft(Transport::Tls), Some(401));
        assert!(
            t.attempts(u).is_empty(),
            "a name never handed out is not kept"
        );
        t.issue(u);
        t.record(u, &ft(Transport::Tls), Some(401));
        t.record(u, &ft(Transport::Tls), None);
        let a = t.attempts(u);
        assert_eq!(
            (a[0].transport, a[0].code, a[1].code),
            ("tls", Some(401), None)
        );
        assert_eq!(a[0].from, "127.0.0.1:5000");
        for _ in 0..100 {
            t.record(u, &ft(Transport::Udp), None);
        }
        assert_eq!(t.attempts(u).len(), SelfTests::PER_USER);
        for i in 0..(SelfTests::USERS + 10) {
            let name = format!("1700000000:selftest-x{i}");
            t.issue(&name);
            t.record(&name, &ft(Transport::Udp), None);
        }
        assert!(
            t.attempts(u).is_empty(),
            "the oldest usernames are forgotten first"
        );
        assert_eq!(t.attempts("1700000000:selftest-x1033").len(), 1);
    }
}
