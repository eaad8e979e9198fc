//! Abuse: relaying into places it must not reach (docs/security.md "SSRF"). Every denied form of
//! loopback, private, link-local, metadata, NAT64 and 6to4 addresses gets 403; the server's own
//! listeners and non-relay ports are unreachable even for permitted IPs; nothing arrives there;
//! the SFU's socket is the one address of ours a relay may reach.

mod common;

use common::*;
use std::time::Duration;

/// The default policy (no allow ranges but the control peer's), relay on 127.0.0.2.
fn strict() -> natpass::config::Overrides {
    natpass::config::Overrides {
        users: vec![
            "alice:secret".parse().unwrap(),
            "bob:bobsecret".parse().unwrap(),
        ],
        relay_ips: vec!["127.0.0.2".parse().unwrap()],
        allow_peers: vec!["127.0.0.3/32".parse().unwrap()], // the control peer only
        ..Default::default()
    }
}

fn denied_peers_are_unreachable_in_every_form() {
    let a = Abuse::new(strict());
    let c = UdpClient::new(a.addr());
    let (n, _) = c.allocate("alice", "secret");
    for denied in [
        "127.0.0.1:22",
        "[::ffff:127.0.0.1]:22",
        "[::127.0.0.1]:22",
        "[64:ff9b::7f00:1]:22",
        "[2002:7f00:1::]:22",
        "169.254.169.254:80",
        "[::ffff:169.254.169.254]:80",
        "10.0.0.1:80",
        "172.16.0.1:80",
        "192.168.1.1:80",
        "100.64.0.1:80",
        "0.0.0.0:80",
        "[::]:80",
        "[::1]:80",
        "[fe80::1]:80",
        "[fd00::1]:80",
        "224.0.0.1:80",
        "255.255.255.255:80",
        "168.63.129.16:80",
        "198.18.0.1:80",
    ] {
        let r = c.ask(&create_permission("alice", "secret", &n, &[denied]));
        let code = error_code(&r);
        assert!(code == Some(403) || code == Some(443), "{denied}: {code:?}");
    }
    // Own relay IP: permitted, but only allocated relay ports are reachable.
    assert_eq!(
        error_code(&c.ask(&create_permission("alice", "secret", &n, &["127.0.0.2:1"]))),
        None
    );
    let victim = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let va = victim.local_addr().unwrap().to_string();
    c.send(&send_indication(&va, b"ssrf"));
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &n, 0x4000, &va))),
        Some(403)
    );
    let mut b = [0u8; 32];
    assert!(
        victim.recv_from(&mut b).is_err(),
        "nothing reached a non-relay port of the relay IP"
    );
    c.ask(&refresh("alice", "secret", &n, Some(0)));
    a.finish(8 * 1024);
}

fn listeners_stay_denied_inside_allow_ranges() {
    let a = Abuse::new(alice_loopback());
    let c = UdpClient::new(a.addr());
    let (n, _) = c.allocate("alice", "secret");
    let listener = a.addr().to_string();
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &n, 0x4000, &listener))),
        Some(403)
    );
    assert_eq!(
        error_code(&c.ask(&create_permission("alice", "secret", &n, &[&listener]))),
        None,
        "IP permitted"
    );
    // TURN-in-TURN through a Send indication to our own listener: dropped (the listener would
    // answer a Binding; nothing comes back).
    let inner = request(stun_types::message::BINDING, |_, _| {});
    c.send(&send_indication(&listener, &inner));
    assert!(c.recv_timeout(Duration::from_millis(300)).is_none());
    c.ask(&refresh("alice", "secret", &n, Some(0)));
    a.finish(8 * 1024);
}

/// A relay-only browser reaches natpass's SFU through natpass's own TURN: the SFU's exact
/// address is a permitted peer although its IP is loopback; its other ports and the
/// neighbouring addresses stay closed.
fn the_sfu_port_is_reachable_and_nothing_else_of_ours() {
    let sfu = std::net::UdpSocket::bind("127.0.0.4:0").unwrap();
    sfu.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sfu_addr = sfu.local_addr().unwrap();
    let other = std::net::UdpSocket::bind("127.0.0.4:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let a = Abuse::with(strict(), |cfg| cfg.sfu_addrs = vec![sfu_addr]);
    let c = UdpClient::new(a.addr());
    let (n, relay) = c.allocate("alice", "secret");
    let sa = sfu_addr.to_string();
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &n, 0x4000, &sa))),
        None,
        "the SFU is a peer"
    );
    c.send(&channel_data(0x4000, b"stun-from-browser"));
    let mut b = [0u8; 64];
    let (len, from) = sfu.recv_from(&mut b).expect("relayed to the SFU");
    assert_eq!(&b[..len], b"stun-from-browser");
    assert_eq!(from, relay, "from the client's relayed address");
    sfu.send_to(b"answer", relay).unwrap();
    let back = c
        .recv_timeout(Duration::from_secs(2))
        .expect("the SFU's answer relayed back");
    assert_eq!(&back[4..10], b"answer");
    // The SFU's other ports and its neighbours: closed.
    let oa = other.local_addr().unwrap().to_string();
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &n, 0x4001, &oa))),
        Some(403)
    );
    c.send(&send_indication(&oa, b"ssrf"));
    assert!(
        other.recv_from(&mut b).is_err(),
        "nothing reached another port"
    );
    let code = error_code(&c.ask(&create_permission("alice", "secret", &n, &["127.0.0.5:1"])));
    assert!(code == Some(403) || code == Some(443), "{code:?}");
    c.ask(&refresh("alice", "secret", &n, Some(0)));
    a.finish(8 * 1024);
}

/// One test per file: the resource baselines are per process.
#[test]
fn peer_policy_abuse() {
    denied_peers_are_unreachable_in_every_form();
    listeners_stay_denied_inside_allow_ranges();
    the_sfu_port_is_reachable_and_nothing_else_of_ours();
}
