//! Abuse: channels and permissions (RFC 8656 §9, §12; docs/security.md protocol rules). Out-of-range
//! numbers, rebinding conflicts, permission and channel floods past the quota, ChannelData that
//! lies about its length or targets unbound channels.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn channel_abuse_is_refused_or_dropped() {
    let a = Abuse::new(alice_loopback());
    let c = UdpClient::new(a.addr());
    let (n, _) = c.allocate("alice", "secret");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let pa = peer.local_addr().unwrap().to_string();
    let other = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    // Numbers outside 0x4000-0x7FFF: 400.
    for ch in [0x0000, 0x3FFF, 0x8000, 0xFFFF] {
        assert_eq!(
            error_code(&c.ask(&channel_bind("alice", "secret", &n, ch, &pa))),
            Some(400),
            "{ch:#x}"
        );
    }
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &n, 0x4000, &pa))),
        None
    );
    // Conflicts: 400.
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &n, 0x4000, &other))),
        Some(400)
    );
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &n, 0x4001, &pa))),
        Some(400)
    );
    // 64 channels, then 508.
    let sockets: Vec<std::net::UdpSocket> = (0..64)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut ok = 1;
    let mut full = false;
    for (i, s) in sockets.iter().enumerate() {
        let addr = s.local_addr().unwrap().to_string();
        match error_code(&c.ask(&channel_bind(
            "alice",
            "secret",
            &n,
            0x4002 + i as u16,
            &addr,
        ))) {
            None => ok += 1,
            Some(508) => {
                full = true;
                break;
            }
            Some(code) => panic!("{code}"),
        }
    }
    assert!(full && ok == 64, "{ok} channels before 508");
    // ChannelData lying about its length, or for unbound channels: dropped.
    let mut lying = channel_data(0x4000, b"abcd");
    lying[2..4].copy_from_slice(&100u16.to_be_bytes());
    c.send(&lying);
    c.send(&channel_data(0x4FFF, b"unbound"));
    let mut b = [0u8; 64];
    assert!(peer.recv_from(&mut b).is_err(), "nothing relayed");
    // A good one still goes through.
    c.send(&channel_data(0x4000, b"fine"));
    let (k, _) = peer.recv_from(&mut b).expect("bound channel relays");
    assert_eq!(&b[..k], b"fine");
    // CreatePermission with many peers: past 10 peers per allocation, 508, none installed.
    let peers: Vec<String> = (1..=12).map(|i| format!("127.0.1.{i}:9")).collect();
    let refs: Vec<&str> = peers.iter().map(String::as_str).collect();
    assert_eq!(
        error_code(&c.ask(&create_permission("alice", "secret", &n, &refs))),
        Some(508)
    );
    c.ask(&refresh("alice", "secret", &n, Some(0)));
    drop((sockets, peer, c));
    a.finish(8 * 1024);
}
