//! The running server over loopback UDP, driven by independent clients: the webrtc-rs `turn`
//! crate's client, and raw STUN built with stun-types.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stun_types::message::Message;
use turn_types::attribute::{Data, XorPeerAddress};
use webrtc_util::Conn;

async fn echo_peer() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

async fn turn_client(server: SocketAddr, user: &str, pass: &str) -> turn::client::Client {
    let conn = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: user.into(),
        password: pass.into(),
        realm: "natpass".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    };
    let c = turn::client::Client::new(cfg).await.unwrap();
    c.listen().await.unwrap();
    c
}

async fn relay_round_trips(server: SocketAddr, user: &str, pass: &str) {
    let (peer, _task) = echo_peer().await;
    let client = turn_client(server, user, pass).await;
    let mapped = client.send_binding_request().await.unwrap();
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");
    let relay = client.allocate().await.unwrap();
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    let mut buf = vec![0u8; 1500];
    // The turn client creates a permission, then binds a channel in the background: the
    // exchange covers Send/Data indications first and ChannelData later.
    for i in 0..40u32 {
        let msg = format!("ping {i}");
        relay.send_to(msg.as_bytes(), peer).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(3), relay.recv_from(&mut buf))
            .await
            .expect("echo within 3 s")
            .unwrap();
        assert_eq!(from, peer);
        assert_eq!(&buf[..n], msg.as_bytes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.close().await.unwrap();
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_crate_client_allocates_and_relays_through_natpass() {
    let server = start_server(alice_loopback());
    relay_round_trips(server.udp_addrs[0], "alice", "secret").await;
    let st = server.stats();
    assert!(st.packets_to_peer >= 40);
    assert!(st.packets_to_client >= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_crate_client_with_rest_credentials() {
    let mut o = alice_loopback();
    o.auth_secrets = vec!["rest-secret".parse().unwrap()];
    let server = start_server(o);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (u, p) =
        natpass::auth::mint_rest(&natpass::auth::Secret::new("rest-secret"), "web", 600, now);
    relay_round_trips(server.udp_addrs[0], &u, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_crate_client_with_wrong_password_fails() {
    let server = start_server(alice_loopback());
    let client = turn_client(server.udp_addrs[0], "alice", "nope").await;
    assert!(client.allocate().await.is_err());
    client.close().await.unwrap();
}

#[test]
fn generated_secret_serves_rest_credentials_when_nothing_is_configured() {
    let server = start_server(natpass::config::Overrides {
        allow_peers: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    });
    let secret = server.rest_secret().expect("a generated secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (u, p) = natpass::auth::mint_rest(&secret, "demo", 600, now);
    let c = UdpClient::new(server.udp_addrs[0]);
    c.allocate(&u, &p);
    // No open relay: without credentials, 401.
    assert_eq!(error_code(&c.ask(&allocate_plain())), Some(401));
}

/// The acceptance scenario: default policy, `--relay-ip 127.0.0.2`.
#[test]
fn default_policy_with_relay_ip_127_0_0_2() {
    let server = start_server(natpass::config::Overrides {
        users: vec![
            "alice:secret".parse().unwrap(),
            "bob:bobsecret".parse().unwrap(),
        ],
        relay_ips: vec!["127.0.0.2".parse().unwrap()],
        ..Default::default()
    });
    let a = UdpClient::new(server.udp_addrs[0]);
    let b = UdpClient::new(server.udp_addrs[0]);
    let (na, relay_a) = a.allocate("alice", "secret");
    let (nb, relay_b) = b.allocate("bob", "bobsecret");
    assert_eq!(relay_a.ip().to_string(), "127.0.0.2");
    for denied in [
        "127.0.0.1:5000",
        "[::ffff:127.0.0.1]:5000",
        "169.254.169.254:80",
    ] {
        let r = a.ask(&create_permission("alice", "secret", &na, &[denied]));
        assert_eq!(error_code(&r), Some(403), "{denied}");
    }
    let r = a.ask(&create_permission("alice", "secret", &na, &["127.0.0.2:1"]));
    assert_eq!(error_code(&r), None, "own relay IP: permission granted");
    let r = b.ask(&create_permission(
        "bob",
        "bobsecret",
        &nb,
        &["127.0.0.2:1"],
    ));
    assert_eq!(error_code(&r), None);
    // A Send indication to a port of 127.0.0.2 that is not an allocated relay port reaches
    // nothing.
    let victim = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    a.send(&send_indication(
        &victim.local_addr().unwrap().to_string(),
        b"probe",
    ));
    let mut buf = [0u8; 64];
    assert!(
        victim.recv_from(&mut buf).is_err(),
        "nothing reached a non-relay port"
    );
    // The two allocations relay to each other.
    a.send(&send_indication(&relay_b.to_string(), b"hello bob"));
    let d = b
        .recv_timeout(Duration::from_secs(2))
        .expect("Data indication to bob");
    let m = Message::from_bytes(&d).unwrap();
    assert_eq!(m.attribute::<Data>().unwrap().data(), b"hello bob");
    assert_eq!(
        m.attribute::<XorPeerAddress>()
            .unwrap()
            .addr(m.transaction_id()),
        relay_a
    );
    // And with channels, both ways.
    assert_eq!(
        error_code(&a.ask(&channel_bind(
            "alice",
            "secret",
            &na,
            0x4000,
            &relay_b.to_string()
        ))),
        None
    );
    assert_eq!(
        error_code(&b.ask(&channel_bind(
            "bob",
            "bobsecret",
            &nb,
            0x4001,
            &relay_a.to_string()
        ))),
        None
    );
    a.send(&channel_data(0x4000, b"over a channel"));
    let d = b
        .recv_timeout(Duration::from_secs(2))
        .expect("ChannelData to bob");
    assert_eq!(&d[..2], &[0x40, 0x01]);
    assert_eq!(&d[4..], b"over a channel");
}

#[test]
fn garbage_does_not_disturb_a_live_allocation() {
    let server = start_server(alice_loopback());
    let a = UdpClient::new(server.udp_addrs[0]);
    let (na, _) = a.allocate("alice", "secret");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_addr = peer.local_addr().unwrap().to_string();
    a.ask(&channel_bind("alice", "secret", &na, 0x4000, &peer_addr));
    let junk = UdpClient::new(server.udp_addrs[0]);
    for i in 0..2000u32 {
        let mut g = i.to_be_bytes().repeat(1 + (i as usize % 40));
        g[0] &= if i % 2 == 0 { 0x3f } else { 0x7f };
        junk.send(&g);
    }
    a.send(&channel_data(0x4000, b"still here"));
    let mut buf = [0u8; 64];
    let (n, _) = peer.recv_from(&mut buf).expect("relayed after the garbage");
    assert_eq!(&buf[..n], b"still here");
}

/// RFC 6156: an IPv6 allocation on an IPv6 listener relays to an IPv6 peer.
#[test]
fn ipv6_allocation_relays_to_an_ipv6_peer() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback here");
        return;
    }
    let server = start_server(natpass::config::Overrides {
        listen: vec!["[::1]:0".parse().unwrap()],
        users: vec!["alice:secret".parse().unwrap()],
        allow_peers: vec!["::1/128".parse().unwrap()],
        ..Default::default()
    });
    let sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let c = UdpClient {
        sock,
        server: server.udp_addrs[0],
    };
    let nonce = c.nonce();
    let r = c.ask(&signed(
        turn_types::message::ALLOCATE,
        "alice",
        "secret",
        &nonce,
        |w, _| {
            use stun_types::message::MessageWriteExt;
            w.add_attribute(&turn_types::attribute::RequestedTransport::new(17))
                .unwrap();
            w.add_attribute(&turn_types::attribute::RequestedAddressFamily::new(
                turn_types::AddressFamily::IPV6,
            ))
            .unwrap();
        },
    ));
    assert_eq!(error_code(&r), None);
    let relay = relayed(&r);
    assert_eq!(relay.ip().to_string(), "::1");
    let peer = std::net::UdpSocket::bind("[::1]:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let pa = peer.local_addr().unwrap().to_string();
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &nonce, 0x4000, &pa))),
        None
    );
    c.send(&channel_data(0x4000, b"v6 hello"));
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("relayed over IPv6");
    assert_eq!((&buf[..n], from), (&b"v6 hello"[..], relay));
    peer.send_to(b"v6 back", from).unwrap();
    let d = c
        .recv_timeout(Duration::from_secs(2))
        .expect("ChannelData back");
    assert_eq!(&d[4..], b"v6 back");
    // A burst each way over IPv6 (batched receive, GSO send): whole, in order.
    for k in 0..21u8 {
        let n = if k == 20 { 40 } else { 100 };
        c.send(&channel_data(0x4000, &vec![k; n]));
    }
    let mut big = [0u8; 256];
    for k in 0..21u8 {
        let (n, _) = peer.recv_from(&mut big).expect("burst relayed over IPv6");
        assert_eq!(&big[..n], &vec![k; if k == 20 { 40 } else { 100 }][..]);
    }
    for k in 0..21u8 {
        peer.send_to(&[k; 90], relay).unwrap();
    }
    for k in 0..21u8 {
        let d = c.recv_timeout(Duration::from_secs(2)).expect("burst back");
        assert_eq!(&d[4..], &[k; 90][..]);
    }
}

/// Bursts through the batched shell (recvmmsg, then sendmmsg/GSO per destination): two
/// clients each send a burst of ChannelData of mixed sizes (equal runs become one GSO send,
/// a shorter one closes a run, one above the GSO segment limit goes alone), their peers
/// answer with bursts. Every datagram arrives whole, in order, at the right destination.
#[test]
fn bursts_keep_datagram_boundaries_order_and_destinations() {
    let server = start_server(alice_loopback());
    let sizes = |k: usize| -> usize { [100, 100, 100, 40, 100, 1450, 100, 7][k % 8] };
    let payload = |who: u8, k: usize| -> Vec<u8> {
        let mut p = vec![who; sizes(k)];
        p[0] = k as u8;
        p
    };
    let mut pairs = Vec::new();
    for who in [1u8, 2] {
        let c = UdpClient::from_ip(server.udp_addrs[0], &format!("127.0.0.{}", 20 + who));
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let pa = peer.local_addr().unwrap().to_string();
        let (n, relay) = c.allocate("alice", "secret");
        let r = c.ask(&channel_bind("alice", "secret", &n, 0x4000, &pa));
        assert_eq!(error_code(&r), None);
        pairs.push((who, c, peer, relay));
    }
    const N: usize = 48;
    for k in 0..N {
        for (who, c, ..) in &pairs {
            c.send(&channel_data(0x4000, &payload(*who, k)));
        }
    }
    let mut buf = vec![0u8; 4096];
    for (who, _, peer, relay) in &pairs {
        for k in 0..N {
            let (n, from) = peer.recv_from(&mut buf).expect("relayed to the peer");
            assert_eq!(from, *relay);
            assert_eq!(
                &buf[..n],
                &payload(*who, k)[..],
                "client {who} datagram {k}"
            );
        }
    }
    for k in 0..N {
        for (who, _, peer, relay) in &pairs {
            peer.send_to(&payload(*who + 10, k), relay).unwrap();
        }
    }
    for (who, c, ..) in &pairs {
        for k in 0..N {
            let d = c
                .recv_timeout(Duration::from_secs(2))
                .expect("ChannelData back");
            assert_eq!(&d[..2], &[0x40, 0x00]);
            assert_eq!(
                usize::from(u16::from_be_bytes([d[2], d[3]])),
                sizes(k),
                "client {who} datagram {k}"
            );
            assert_eq!(
                &d[4..],
                &payload(*who + 10, k)[..],
                "client {who} datagram {k}"
            );
        }
    }
}

/// A client that sends its ChannelData as one UDP GSO burst reaches natpass's listener as one
/// coalesced receive (UDP_GRO on the listener): every datagram of it is relayed, whole and in
/// order, including a shorter last one; a STUN request inside a burst is answered.
/// `burst` to the client's server in one UDP GSO send of `seg`-byte datagrams.
fn gso_send(c: &UdpClient, seg: u16, burst: &[u8]) {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
    use std::os::fd::AsRawFd;
    let iov = [std::io::IoSlice::new(burst)];
    let cm = [ControlMessage::UdpGsoSegments(&seg)];
    let to = SockaddrStorage::from(c.server);
    sendmsg(c.sock.as_raw_fd(), &iov, &cm, MsgFlags::empty(), Some(&to)).expect("GSO send");
}

#[test]
fn a_clients_gso_burst_is_split_again_datagram_by_datagram() {
    let server = start_server(alice_loopback());
    let c = UdpClient::new(server.udp_addrs[0]);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (n, relay) = c.allocate("alice", "secret");
    let r = c.ask(&channel_bind(
        "alice",
        "secret",
        &n,
        0x4000,
        &peer.local_addr().unwrap().to_string(),
    ));
    assert_eq!(error_code(&r), None);
    for round in 0..3u8 {
        // 20 frames of 4 + 96 bytes and a last one of 4 + 40, in one sendmsg.
        let mut burst = Vec::new();
        for k in 0..21u8 {
            let mut p = vec![round; if k == 20 { 40 } else { 96 }];
            p[0] = k;
            burst.extend_from_slice(&channel_data(0x4000, &p));
        }
        gso_send(&c, 100, &burst);
        let mut buf = [0u8; 2048];
        for k in 0..21u8 {
            let (got, from) = peer.recv_from(&mut buf).expect("relayed");
            assert_eq!(from, relay);
            assert_eq!(
                got,
                if k == 20 { 40 } else { 96 },
                "round {round} datagram {k}"
            );
            assert_eq!((buf[0], buf[1]), (k, round), "round {round} datagram {k}");
        }
    }
    // Binding requests of equal size in one burst: each is answered.
    let reqs: Vec<Vec<u8>> = (0..4)
        .map(|_| request(stun_types::message::BINDING, |_, _| {}))
        .collect();
    gso_send(&c, reqs[0].len() as u16, &reqs.concat());
    for r in &reqs {
        let a = c
            .recv_timeout(Duration::from_secs(2))
            .expect("an answer per request");
        assert_eq!(
            &a[8..20],
            &r[8..20],
            "answers in order, one per transaction"
        );
    }
}

/// Relay counters are kept per shard (no shared cache line on the data path); the totals
/// read by `/metrics` add every shard's. Eight clients on two shards relay 25 packets each
/// way; the totals are exact.
#[test]
fn relay_counters_from_every_shard_add_up() {
    let mut o = alice_loopback();
    o.threads = Some(2);
    let server = start_server(o);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let pa = peer.local_addr().unwrap().to_string();
    let mut relays = Vec::new();
    // Each client from its own loopback address: 401s are rate limited per source IP.
    let clients: Vec<UdpClient> = (0..8)
        .map(|i| UdpClient::from_ip(server.udp_addrs[0], &format!("127.0.0.{}", 10 + i)))
        .collect();
    for c in &clients {
        let (n, relay) = c.allocate("alice", "secret");
        let r = c.ask(&channel_bind("alice", "secret", &n, 0x4000, &pa));
        assert_eq!(error_code(&r), None);
        relays.push(relay);
    }
    let mut buf = [0u8; 64];
    for k in 0..25u8 {
        for c in &clients {
            c.send(&channel_data(0x4000, &[k; 10]));
            peer.recv_from(&mut buf).expect("relayed");
        }
        for (c, relay) in clients.iter().zip(&relays) {
            peer.send_to(&[k; 6], relay).unwrap();
            c.recv_timeout(Duration::from_secs(2))
                .expect("relayed back");
        }
    }
    let st = server.stats();
    assert_eq!(st.packets_to_peer, 200);
    assert_eq!(st.bytes_to_peer, 2000);
    assert_eq!(st.packets_to_client, 200);
    assert_eq!(st.bytes_to_client, 1200);
}
