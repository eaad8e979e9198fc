//! Abuse: allocation lifecycle and resource bounds (docs/security.md "Exhaustion"). One user or one
//! source IP cannot take more than its quota; the relay port range running out gives 508 and
//! recovers when allocations end; lifetimes are capped; nothing leaks after all of it.

mod common;

use common::*;
use std::time::Duration;
use stun_types::message::MessageWriteExt;
use turn_types::attribute::{Lifetime, RequestedTransport};
use turn_types::message::ALLOCATE;

fn alloc(c: &UdpClient, user: &str, pass: &str, nonce: &str, lifetime: Option<u32>) -> Vec<u8> {
    c.ask(&signed(ALLOCATE, user, pass, nonce, |w, _| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        if let Some(l) = lifetime {
            w.add_attribute(&Lifetime::new(l)).unwrap();
        }
    }))
}

fn quotas_ports_and_lifetimes_hold() {
    let mut o = alice_loopback();
    o.relay_ports = Some("50100-50129".parse().unwrap());
    let a = Abuse::with(o, |cfg| {
        cfg.quota.allocations_per_user = 10;
        cfg.quota.allocations_per_ip = 25;
        cfg.quota.challenges_per_second = 1000.0; // not what this test is about
    });
    // One user: 10 allocations, then 486.
    let mut alice = Vec::new();
    for _ in 0..10 {
        let c = UdpClient::new(a.addr());
        let (n, _) = c.allocate("alice", "secret");
        alice.push((c, n));
    }
    let c = UdpClient::new(a.addr());
    let n = c.nonce();
    assert_eq!(
        error_code(&alloc(&c, "alice", "secret", &n, None)),
        Some(486),
        "per-user quota"
    );
    // One source IP with ephemeral REST-like usernames: capped per IP (25, control included).
    let mut others = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        let user = if i % 2 == 0 { "bob" } else { "alice" };
        let pass = if user == "bob" { "bobsecret" } else { "secret" };
        let c = UdpClient::new(a.addr());
        let n = c.nonce();
        let r = alloc(&c, user, pass, &n, Some(99_999));
        match error_code(&r) {
            None => {
                assert_eq!(lifetime(&r), 3600, "lifetime capped at the maximum");
                others.push((c, n, user, pass));
            }
            Some(486) | Some(508) => refused += 1,
            Some(code) => panic!("unexpected {code}"),
        }
    }
    let live = a.server.shared.quotas.total();
    assert!(live <= 25, "{live} allocations from one IP");
    assert!(refused > 0);
    // Relay ports: 30 in the range; per-IP caps stop us first, so shrink by freeing and
    // checking the pool accounting instead: every live allocation holds exactly one port.
    assert_eq!(a.server.shared.ports.in_use(), live);
    // Everything ends: ports and quotas come back.
    for (c, n) in &alice {
        assert_eq!(
            error_code(&c.ask(&refresh("alice", "secret", n, Some(0)))),
            None
        );
    }
    for (c, n, u, p) in &others {
        assert_eq!(error_code(&c.ask(&refresh(u, p, n, Some(0)))), None);
    }
    assert_eq!(
        a.server.shared.quotas.total(),
        1,
        "only the control allocation is left"
    );
    assert_eq!(a.server.shared.ports.in_use(), 1);
    drop((alice, others, c));
    a.finish(8 * 1024);
}

fn relay_port_exhaustion_gives_508_and_recovers() {
    let mut o = alice_loopback();
    // Five free ports outside the kernel's ephemeral range (other tests' sockets take ports
    // inside it at any moment, which made a fixed range flaky).
    let base = free_port_block(5);
    o.relay_ports = Some(format!("{base}-{}", base + 4).parse().unwrap());
    let a = Abuse::with(o, |cfg| {
        cfg.quota.allocations_per_user = 100;
        cfg.quota.challenges_per_second = 1000.0;
    });
    let mut held = Vec::new();
    loop {
        let c = UdpClient::new(a.addr());
        let n = c.nonce();
        let r = alloc(&c, "alice", "secret", &n, None);
        match error_code(&r) {
            None => held.push((c, n)),
            Some(508) => break,
            Some(code) => panic!("unexpected {code}"),
        }
        assert!(held.len() <= 5, "more allocations than ports");
    }
    assert_eq!(
        held.len(),
        4,
        "5 ports, one taken by the control allocation"
    );
    let (c, n) = held.pop().unwrap();
    assert_eq!(
        error_code(&c.ask(&refresh("alice", "secret", &n, Some(0)))),
        None
    );
    let c2 = UdpClient::new(a.addr());
    let n2 = c2.nonce();
    assert_eq!(
        error_code(&alloc(&c2, "alice", "secret", &n2, None)),
        None,
        "recovers after a free"
    );
    // End them all: their relay sockets (in this process) close.
    c2.ask(&refresh("alice", "secret", &n2, Some(0)));
    for (h, hn) in &held {
        h.ask(&refresh("alice", "secret", hn, Some(0)));
    }
    drop((held, c, c2));
    std::thread::sleep(Duration::from_millis(50));
    a.finish(8 * 1024);
}

/// The first of `n` consecutive UDP ports on 127.0.0.1 that are free now, above the ephemeral
/// range (61000-65535 on Linux by default), starting at a place that depends on the process
/// so that parallel runs start apart.
fn free_port_block(n: u16) -> u16 {
    let start = 61_000 + (std::process::id() % 4_000) as u16;
    (start..65_535 - n)
        .chain(61_000..start)
        .find(|&base| (base..base + n).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()))
        .expect("no block of free UDP ports above 61000")
}

/// One test per file: the resource baselines are per process.
#[test]
fn allocation_abuse() {
    quotas_ports_and_lifetimes_hold();
    relay_port_exhaustion_gives_508_and_recovers();
}
