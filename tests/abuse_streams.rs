//! Abuse: TCP and TLS connections (docs/security.md "Exhaustion": connections, slowloris, half-open
//! TLS). Garbage closes the connection at once; a slowloris trickle and a stalled handshake are
//! closed by the deadline; past the per-IP cap connections are refused; nothing leaks.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn connection_abuse_is_closed_and_bounded() {
    let dir = temp_dir("abuse-streams");
    let (cert, key, _) = make_cert(&dir, "s", &["localhost"]);
    let mut o = alice_loopback();
    o.tls_cert = Some(cert);
    o.tls_key = Some(key);
    let a = Abuse::with(o, |cfg| {
        cfg.quota.first_message_timeout = 1;
        cfg.quota.idle_timeout = 2;
        cfg.quota.allocations_per_user = 100;
        cfg.quota.connections_per_ip = 16;
    });
    let addr = a.server.tcp_addrs[0];
    // Garbage → closed at once.
    let mut g = TcpStream::connect(addr).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_within(&mut g, Duration::from_millis(800)));
    // Slowloris: one byte of a valid request every 300 ms → closed by the 1 s frame deadline.
    let mut s = TcpStream::connect(addr).unwrap();
    let req = allocate_plain();
    let t0 = Instant::now();
    let mut closed = false;
    for b in &req {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if t0.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(
        closed || closed_within(&mut s, Duration::from_secs(2)),
        "slowloris closed"
    );
    // Half-open TLS: a ClientHello record header and nothing else.
    let mut t = TcpStream::connect(addr).unwrap();
    t.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00]).unwrap();
    assert!(closed_within(&mut t, Duration::from_secs(3)));
    // Per-IP cap: 16 open connections; the 17th is closed by the server.
    let mut held: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(800)),
        "17th connection refused"
    );
    let st = &a.server.control().limits;
    assert!(st.refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // They are all idle: closed at the deadline, and the cap frees up.
    for h in held.iter_mut() {
        assert!(closed_within(h, Duration::from_secs(3)));
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(3);
    while st.open() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(st.open(), 0, "every connection accounted for");
    // A connection that holds an allocation does not count against the per-IP cap (a call
    // behind one NAT opens one per peer connection; the allocation quotas bound them): 20
    // allocating connections from one address, and the cap of 16 still applies to the rest.
    let mut allocated: Vec<(TcpClient, String)> = (0..20)
        .map(|_| {
            let mut c = TcpClient::new(addr);
            let n = c.allocate("alice", "secret");
            (c, n)
        })
        .collect();
    let mut bare: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(800)),
        "beside 20 allocations, the 17th connection without one is refused"
    );
    // An allocation ends while the cap is full: its connection counts again, so it closes
    // (after the answer) instead of becoming a free slot past the cap.
    let (c, n) = &mut allocated[0];
    let r = c.ask(&refresh("alice", "secret", n, Some(0)));
    assert_eq!(error_code(&r), None, "deleted");
    assert!(
        closed_within(&mut c.stream, Duration::from_millis(800)),
        "no allocation, no room under the cap: closed"
    );
    // The other allocations keep their connections open past the idle deadline.
    std::thread::sleep(Duration::from_millis(2500));
    let (c, n) = &mut allocated[1];
    assert_eq!(
        error_code(&c.ask(&refresh("alice", "secret", n, None))),
        None,
        "an allocating connection outlives the idle deadline"
    );
    for b in bare.iter_mut() {
        assert!(
            closed_within(b, Duration::from_secs(3)),
            "idle bare ones close"
        );
    }
    drop((allocated, bare));
    let deadline = Instant::now() + Duration::from_secs(3);
    while st.open() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        st.open(),
        0,
        "every connection accounted for, allocating ones too"
    );
    let _ = std::fs::remove_dir_all(dir);
    a.finish(16 * 1024);
}
