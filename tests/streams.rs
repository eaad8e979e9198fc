//! TURN over TCP and TLS (RFC 8656 §3.1, stream framing §12.5): the whole flow with a client
//! written here (framing by hand, messages by stun-types, TLS by rustls), bad input over
//! streams, connection limits, and certificate reload.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun_types::message::Message;
use turn_types::attribute::{Data, XorPeerAddress};

/// A byte stream (plain TCP or TLS) with STUN/ChannelData framing done here.
struct Framed<S: Read + Write> {
    s: S,
    rbuf: Vec<u8>,
}

impl<S: Read + Write> Framed<S> {
    fn new(s: S) -> Self {
        Self {
            s,
            rbuf: Vec::new(),
        }
    }
    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
        self.s.flush().unwrap();
    }
    /// Next frame, raw (ChannelData keeps its padding).
    fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.rbuf.len() >= 4 {
                let len = u16::from_be_bytes([self.rbuf[2], self.rbuf[3]]) as usize;
                let total = if self.rbuf[0] >> 6 == 0 {
                    20 + len
                } else {
                    4 + len.div_ceil(4) * 4
                };
                if self.rbuf.len() >= total {
                    return Some(self.rbuf.drain(..total).collect());
                }
            }
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.rbuf.extend_from_slice(&b[..n]),
            }
        }
    }
    fn ask(&mut self, req: &[u8]) -> Vec<u8> {
        self.send(req);
        loop {
            let f = self.recv().expect("answer");
            if f.len() >= 20 && f[8..20] == req[8..20] {
                return f;
            }
        }
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn tls_config(trust: &[Vec<u8>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trust {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(natpass::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"stun.turn".to_vec()];
    Arc::new(cfg)
}

fn tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s
}

/// Allocate → CreatePermission → Send/Data → ChannelBind → ChannelData both ways → Refresh(0).
fn full_flow<S: Read + Write>(mut c: Framed<S>) {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let pa = peer.local_addr().unwrap();
    let r = c.ask(&allocate_plain());
    assert_eq!(error_code(&r), Some(401));
    let nonce = Message::from_bytes(&r)
        .unwrap()
        .attribute::<stun_types::attribute::Nonce>()
        .unwrap()
        .nonce()
        .to_owned();
    let r = c.ask(&allocate_req("alice", "secret", &nonce));
    assert_eq!(error_code(&r), None);
    let relay = relayed(&r);
    assert_eq!(
        error_code(&c.ask(&create_permission(
            "alice",
            "secret",
            &nonce,
            &[&pa.to_string()]
        ))),
        None
    );
    // Send indication → peer; peer → Data indication back over the stream.
    c.send(&send_indication(&pa.to_string(), b"via send"));
    let mut buf = [0u8; 100];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"via send"[..], relay));
    peer.send_to(b"data back", relay).unwrap();
    let f = c.recv().unwrap();
    let m = Message::from_bytes(&f).unwrap();
    assert_eq!(m.attribute::<Data>().unwrap().data(), b"data back");
    assert_eq!(
        m.attribute::<XorPeerAddress>()
            .unwrap()
            .addr(m.transaction_id()),
        pa
    );
    // ChannelBind, then ChannelData both ways; frames on the stream are padded to 4 bytes.
    assert_eq!(
        error_code(&c.ask(&channel_bind(
            "alice",
            "secret",
            &nonce,
            0x4001,
            &pa.to_string()
        ))),
        None
    );
    let mut cd = channel_data(0x4001, b"odd5!");
    cd.extend_from_slice(&[0, 0, 0]);
    c.send(&cd);
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"odd5!");
    peer.send_to(b"12345", relay).unwrap();
    let f = c.recv().unwrap();
    assert_eq!(f.len(), 12, "ChannelData padded on the stream");
    assert_eq!(&f[..4], &[0x40, 0x01, 0x00, 0x05]);
    assert_eq!(&f[4..9], b"12345");
    // Two messages in one write are both handled.
    let mut two = channel_data(0x4001, b"abcd");
    two.extend_from_slice(&channel_data(0x4001, b"efgh"));
    c.send(&two);
    for want in [&b"abcd"[..], &b"efgh"[..]] {
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
    // A burst in one write (64 KiB: a keyframe, or a server busy for a moment): every frame
    // arrives and the connection stays (over TLS, more than 16 KiB of plaintext in one read
    // used to close it).
    let mut burst = Vec::new();
    for i in 0..64u8 {
        burst.extend_from_slice(&channel_data(0x4001, &[i; 1000]));
    }
    c.send(&burst);
    let mut big = [0u8; 2000];
    for i in 0..64u8 {
        let (n, _) = peer.recv_from(&mut big).unwrap();
        assert_eq!((n, big[0]), (1000, i), "frame {i} of the burst");
    }
    // Refresh(0) ends the allocation: the peer's datagrams go nowhere.
    let r = c.ask(&refresh("alice", "secret", &nonce, Some(0)));
    assert_eq!((error_code(&r), lifetime(&r)), (None, 0));
}

#[test]
fn full_flow_over_tcp() {
    let server = start_server(alice_loopback());
    full_flow(Framed::new(tcp(server.tcp_addrs[0])));
}

#[test]
fn full_flow_over_tls_on_the_tls_port_and_on_the_shared_port() {
    let dir = temp_dir("tls");
    let (cert, key, der) = make_cert(&dir, "a", &["localhost"]);
    let mut o = alice_loopback();
    o.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    o.tls_cert = Some(cert);
    o.tls_key = Some(key);
    let server = start_server(o);
    let cfg = tls_config(&[der]);
    full_flow(Framed::new(tls(server.tls_addrs[0], cfg.clone())));
    // TLS detected by its first byte on the plain TURN port too.
    full_flow(Framed::new(tls(server.tcp_addrs[0], cfg.clone())));
    // Plain TCP is accepted on the TLS port as well.
    full_flow(Framed::new(tcp(server.tls_addrs[0])));
    let s = tls(server.tls_addrs[0], cfg);
    assert_eq!(s.conn.alpn_protocol(), Some(&b"stun.turn"[..]));
    let _ = std::fs::remove_dir_all(dir);
}

fn short_deadlines(cfg: &mut natpass::config::ValidConfig) {
    cfg.quota.first_message_timeout = 1;
    cfg.quota.idle_timeout = 2;
}

/// A UDP allocation that must keep relaying while streams misbehave.
struct Control {
    c: UdpClient,
    peer: UdpSocket,
}

impl Control {
    fn new(server: SocketAddr) -> Self {
        let c = UdpClient::new(server);
        let (nonce, _) = c.allocate("bob", "bobsecret");
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let pa = peer.local_addr().unwrap().to_string();
        assert_eq!(
            error_code(&c.ask(&channel_bind("bob", "bobsecret", &nonce, 0x4000, &pa))),
            None
        );
        Self { c, peer }
    }
    fn check(&self) {
        self.c.send(&channel_data(0x4000, b"control"));
        let mut b = [0u8; 32];
        let (n, _) = self
            .peer
            .recv_from(&mut b)
            .expect("control allocation still relays");
        assert_eq!(&b[..n], b"control");
    }
}

#[test]
fn bad_stream_input_closes_only_that_connection() {
    let dir = temp_dir("bad");
    let (cert, key, _) = make_cert(&dir, "a", &["localhost"]);
    let mut o = alice_loopback();
    o.tls_cert = Some(cert);
    o.tls_key = Some(key);
    let server = start_server_with(o, short_deadlines);
    let addr = server.tcp_addrs[0];
    let control = Control::new(server.udp_addrs[0]);
    control.check();
    // Garbage: neither STUN nor ChannelData → closed at once.
    let mut g = tcp(addr);
    g.write_all(&[0xFF; 64]).unwrap();
    assert!(
        closed_within(&mut g, Duration::from_millis(800)),
        "garbage closed"
    );
    // A ChannelData frame as first message (no valid STUN yet) → closed.
    let mut g = tcp(addr);
    g.write_all(&channel_data(0x4000, b"abcd")).unwrap();
    assert!(
        closed_within(&mut g, Duration::from_millis(800)),
        "ChannelData first closed"
    );
    // A truncated STUN frame, then silence → closed by the deadline, not before.
    let mut t = tcp(addr);
    let req = allocate_plain();
    t.write_all(&req[..req.len() - 4]).unwrap();
    assert!(
        !closed_within(&mut t, Duration::from_millis(300)),
        "still waiting for the rest"
    );
    assert!(
        closed_within(&mut t, Duration::from_secs(3)),
        "truncated frame closed at the deadline"
    );
    // A valid Binding, then a header announcing 65 KB and silence → closed by the deadline.
    let mut h = Framed::new(tcp(addr));
    let r = h.ask(&request(stun_types::message::BINDING, |_, _| {}));
    assert_eq!(error_code(&r), None);
    h.send(&[0x40, 0x00, 0xFF, 0xFF, 1, 2, 3, 4]);
    let mut s = h.s;
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "huge announced frame closed"
    );
    // A stalled TLS ClientHello → closed by the deadline.
    let mut c = tcp(addr);
    c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "stalled handshake closed"
    );
    control.check();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn closing_a_connection_releases_its_allocation_at_once() {
    let server = start_server(alice_loopback());
    let mut c = Framed::new(tcp(server.tcp_addrs[0]));
    let r = c.ask(&allocate_plain());
    let nonce = Message::from_bytes(&r)
        .unwrap()
        .attribute::<stun_types::attribute::Nonce>()
        .unwrap()
        .nonce()
        .to_owned();
    let r = c.ask(&allocate_req("alice", "secret", &nonce));
    assert_eq!(error_code(&r), None);
    assert_eq!(server.shared.quotas.total(), 1);
    drop(c);
    let start = Instant::now();
    while server.shared.quotas.total() != 0 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        server.shared.quotas.total(),
        0,
        "allocation released on close"
    );
    assert_eq!(server.shared.ports.in_use(), 0);
}

/// 1,000 idle connections from one IP: beyond the cap they are refused, the idle ones are
/// closed at the deadline, and a normal client (another IP) allocates meanwhile.
#[test]
fn a_thousand_idle_connections_from_one_ip_cannot_exhaust_the_server() {
    let server = start_server_with(alice_loopback(), short_deadlines);
    let addr = server.tcp_addrs[0];
    let mut conns = Vec::new();
    for _ in 0..1000 {
        // The kernel completes the handshake; natpass then keeps or closes the connection.
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            conns.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let open: Vec<&mut TcpStream> = conns
        .iter_mut()
        .filter_map(|s| {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(s),
                _ => None, // EOF or reset: refused
            }
        })
        .collect();
    // The default cap on connections without an allocation is 64 per IP.
    assert!(
        open.len() <= 64,
        "{} connections kept from one IP",
        open.len()
    );
    assert!(!open.is_empty());
    // Meanwhile a normal client from another address allocates over TCP.
    let s = std::net::TcpStream::connect(addr);
    drop(s);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&addr.into()).unwrap();
    let other: TcpStream = sock.into();
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut c = Framed::new(other);
    let r = c.ask(&allocate_plain());
    assert_eq!(error_code(&r), Some(401));
    // The idle ones are closed at the deadline (1 s to the first message).
    std::thread::sleep(Duration::from_millis(1500));
    for s in conns.iter_mut() {
        s.set_nonblocking(false).unwrap();
        assert!(
            closed_within(s, Duration::from_secs(2)),
            "idle connection closed"
        );
    }
}

#[test]
fn idle_connection_without_allocation_is_closed_but_one_with_an_allocation_stays() {
    let server = start_server_with(alice_loopback(), short_deadlines);
    let mut idle = Framed::new(tcp(server.tcp_addrs[0]));
    assert_eq!(
        error_code(&idle.ask(&request(stun_types::message::BINDING, |_, _| {}))),
        None
    );
    let mut busy = Framed::new(tcp(server.tcp_addrs[0]));
    let r = busy.ask(&allocate_plain());
    let nonce = Message::from_bytes(&r)
        .unwrap()
        .attribute::<stun_types::attribute::Nonce>()
        .unwrap()
        .nonce()
        .to_owned();
    let r = busy.ask(&allocate_req("alice", "secret", &nonce));
    assert_eq!(error_code(&r), None);
    let mut s = idle.s;
    assert!(
        closed_within(&mut s, Duration::from_secs(4)),
        "idle without allocation closed"
    );
    // The allocated connection is still served.
    let r = busy.ask(&refresh("alice", "secret", &nonce, Some(600)));
    assert_eq!(error_code(&r), None);
}

#[test]
fn certificate_swap_and_sighup_reach_new_connections_without_dropping_allocations() {
    let dir = temp_dir("hup");
    let (cert_a, key_a, der_a) = make_cert(&dir, "a", &["localhost"]);
    let (cert_b, key_b, der_b) = make_cert(&dir, "b", &["localhost"]);
    let live_cert = dir.join("live-cert.pem");
    let live_key = dir.join("live-key.pem");
    std::fs::copy(&cert_a, &live_cert).unwrap();
    std::fs::copy(&key_a, &live_key).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_natpass"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{udp_port}"),
                "--tls-listen",
                &format!("127.0.0.1:{port}"),
                "--tls-cert",
                live_cert.to_str().unwrap(),
                "--tls-key",
                live_key.to_str().unwrap(),
                "--user",
                "alice:secret",
                "--http",
                "127.0.0.1:0",
                "--log",
                "warn",
            ])
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = tls_config(&[der_a.clone(), der_b.clone()]);
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let peer_cert = |s: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        s.conn.peer_certificates().unwrap()[0].to_vec()
    };
    let first = tls(addr, cfg.clone());
    assert_eq!(peer_cert(&first), der_a);
    let mut old = Framed::new(first);
    let r = old.ask(&allocate_plain());
    let nonce = Message::from_bytes(&r)
        .unwrap()
        .attribute::<stun_types::attribute::Nonce>()
        .unwrap()
        .nonce()
        .to_owned();
    let r = old.ask(&allocate_req("alice", "secret", &nonce));
    assert_eq!(error_code(&r), None);
    // Swap to B and signal.
    std::fs::copy(&cert_b, &live_cert).unwrap();
    std::fs::copy(&key_b, &live_key).unwrap();
    let hup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    };
    hup(child.0.id());
    assert_eq!(
        peer_cert(&tls(addr, cfg.clone())),
        der_b,
        "new connections get the new certificate"
    );
    // The old connection and its allocation live on.
    let r = old.ask(&refresh("alice", "secret", &nonce, Some(600)));
    assert_eq!(error_code(&r), None);
    // A broken certificate: the previous one keeps serving.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    hup(child.0.id());
    assert_eq!(peer_cert(&tls(addr, cfg.clone())), der_b);
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert!(child.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}
