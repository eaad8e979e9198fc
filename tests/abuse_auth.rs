//! Abuse: authentication (docs/security.md "Open relay", "Credential attacks", "Reflection").
//! Floods of unauthenticated requests get at most the rate-limited number of 401s; brute force
//! is answered at most at the failure rate; replayed and stale nonces get 438; expired or
//! over-long REST credentials get 401; spoofed-source floods leave no per-request state.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Count answers on `c` until `quiet` passes without one.
fn drain(c: &UdpClient, quiet: Duration) -> usize {
    let mut n = 0;
    while c.recv_timeout(quiet).is_some() {
        n += 1;
    }
    n
}

fn authentication_abuse_is_bounded() {
    let mut o = alice_loopback();
    o.auth_secrets = vec!["rest".parse().unwrap()];
    let a = Abuse::new(o);
    // 10,000 unauthenticated Allocates from one source: ≤ 10/s answered (burst + refill).
    let flood = UdpClient::new(a.addr());
    let t0 = Instant::now();
    let req = allocate_plain();
    for _ in 0..10_000 {
        flood.send(&req);
    }
    let answered = drain(&flood, Duration::from_millis(300));
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("abuse: 10000 unauthenticated requests in {secs:.2} s → {answered} answers");
    assert!(
        answered as f64 <= 10.0 + 10.0 * secs + 2.0,
        "{answered} answers in {secs:.2} s"
    );
    assert!(answered >= 1, "the source still gets challenges");
    let st = a.server.stats();
    assert!(st.challenges_suppressed >= 9_000);
    // A source that was not flooding still gets its challenge.
    let other = UdpClient::from_ip(a.addr(), "127.0.0.2");
    let nonce = other.nonce();
    // Brute force from one source: answers capped at the failure rate (20/min, burst 20).
    let brute = UdpClient::from_ip(a.addr(), "127.0.0.3");
    let bn = brute.nonce();
    let mut answered = 0;
    for i in 0..60 {
        brute.send(&allocate_req("alice", &format!("guess{i}"), &bn));
        if brute.recv_timeout(Duration::from_millis(30)).is_some() {
            answered += 1;
        }
    }
    assert!(answered <= 21, "brute force answered {answered} times");
    // The right password still works from another source.
    other.ask(&allocate_req("alice", "secret", &nonce));
    // A nonce replayed from another address is stale (438).
    let thief = UdpClient::from_ip(a.addr(), "127.0.0.4");
    let r = thief.ask(&allocate_req("bob", "bobsecret", &nonce));
    assert_eq!(error_code(&r), Some(438));
    // Garbage nonces: 438, never a crash.
    for n in ["", "x", &"f".repeat(32), &"€".repeat(8)] {
        let c = UdpClient::from_ip(a.addr(), "127.0.0.5");
        if n.is_empty() {
            continue;
        }
        assert_eq!(
            error_code(&c.ask(&allocate_req("alice", "secret", n))),
            Some(438),
            "{n}"
        );
    }
    // REST credentials: expired and too far ahead are refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let s = natpass::auth::Secret::new("rest");
    for (user, why) in [
        (format!("{}:x", now - 10), "expired"),
        (format!("{}:x", now + 86_400 + 3600), "beyond rest-max-ttl"),
    ] {
        let pass = natpass::auth::rest_password(&s, &user);
        let c = UdpClient::from_ip(a.addr(), "127.0.0.6");
        let n = c.nonce();
        assert_eq!(
            error_code(&c.ask(&allocate_req(&user, &pass, &n))),
            Some(401),
            "{why}"
        );
    }
    other.ask(&refresh("alice", "secret", &nonce, Some(0)));
    a.finish(8 * 1024);
}

/// Stateless nonces: a flood from 100,000 (spoofed) sources leaves the core without per-request
/// state; only the bounded rate-limit table grows, and it stops at its cap.
fn spoofed_source_flood_leaves_no_per_request_state() {
    let mut h = Harness::new(Options::default());
    let req = allocate_plain();
    let before = rss_kib();
    let mut answers = 0;
    for i in 0..100_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0A00_0000 | i);
        let ft = natpass::proto::FiveTuple {
            transport: natpass::proto::Transport::Udp,
            client: std::net::SocketAddr::new(ip.into(), 4000),
            server: server_addr(),
        };
        let (r, _) = h.send(ft, &req);
        answers += r.len();
        if i % 1000 == 0 {
            h.advance(1);
        }
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!("abuse: 100000 spoofed sources → {answers} challenges, RSS +{grown} KiB");
    assert_eq!(h.core.allocation_count(), 0);
    assert!(grown < 32 * 1024, "memory stays flat: +{grown} KiB");
}

/// One test per file: the resource baselines are per process.
#[test]
fn auth_abuse() {
    authentication_abuse_is_bounded();
    spoofed_source_flood_leaves_no_per_request_state();
}
