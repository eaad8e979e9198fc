//! A bounded churn (the short version run with every test; `NATPASS_SOAK_SECONDS=600` for the
//! long one): allocations created, used and ended from many clients, mixed with garbage and
//! unauthenticated floods. At the end, allocations, ports, quotas, file descriptors and memory
//! are back where they started.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn churn_leaves_nothing_behind() {
    let secs: u64 = std::env::var("NATPASS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let server = start_server_with(alice_loopback(), |cfg| {
        cfg.quota.allocations_per_user = 1000
    });
    let addr = server.udp_addrs[0];
    // Warm up once so lazily allocated buffers do not count as growth.
    // The warm-up client stays alive: its port must not be reused by a churn client (that
    // 5-tuple still holds the warm-up allocation, and would rightly get 437).
    let warm = UdpClient::new(addr);
    warm.allocate("alice", "secret");
    let fds = fd_count();
    let rss = rss_kib();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let pa = peer.local_addr().unwrap().to_string();
    // Garbage and floods come from another address, so they do not eat the churn's challenges.
    let junk = UdpClient::from_ip(addr, "127.0.0.5");
    // natpass binds nonces to the client IP: one nonce serves every churn client.
    let mut nonce = UdpClient::new(addr).nonce();
    let alloc = |c: &UdpClient, nonce: &str| c.ask(&allocate_req("alice", "secret", nonce));
    let t0 = Instant::now();
    let mut made = 0u64;
    let mut relayed = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        let c = UdpClient::new(addr);
        let mut r = alloc(&c, &nonce);
        if error_code(&r) == Some(438) {
            nonce = stun_types::message::Message::from_bytes(&r)
                .unwrap()
                .attribute::<stun_types::attribute::Nonce>()
                .unwrap()
                .nonce()
                .to_owned();
            r = alloc(&c, &nonce);
        }
        assert_eq!(error_code(&r), None, "churn allocation");
        let n = nonce.clone();
        made += 1;
        c.ask(&channel_bind("alice", "secret", &n, 0x4000, &pa));
        for _ in 0..5 {
            c.send(&channel_data(0x4000, b"churn"));
            if peer.recv_from(&mut [0u8; 16]).is_ok() {
                relayed += 1;
            }
        }
        // Garbage and an unauthenticated flood in between.
        for i in 0..20u8 {
            junk.send(&[i; 33]);
            junk.send(&allocate_plain());
        }
        // Half the allocations are deleted, half left to the server to close at shutdown of the
        // client socket (UDP cannot tell; they would expire): delete all to keep the run bounded.
        assert_eq!(
            error_code(&c.ask(&refresh("alice", "secret", &n, Some(0)))),
            None
        );
    }
    while junk.recv_timeout(Duration::from_millis(100)).is_some() {}
    let st = &server.shared;
    eprintln!(
        "soak: {secs} s, {made} allocations made and ended, {relayed} messages relayed; live {}, ports {}, fds {} (was {fds}), RSS {} KiB (was {rss})",
        st.quotas.total(),
        st.ports.in_use(),
        fd_count(),
        rss_kib()
    );
    assert_eq!(st.quotas.total(), 1, "only the warm-up allocation");
    assert_eq!(st.ports.in_use(), 1);
    assert!(made >= 20 && relayed >= made * 4);
    assert!(fd_count() <= fds + 2, "fds {} vs {fds}", fd_count());
    assert!(rss_kib() <= rss + 16 * 1024, "RSS {} vs {rss}", rss_kib());
}
