//! Abuse: the HTTP listener (docs/security.md, "Exhaustion: HTTP connections"). Half-open
//! requests (`GET / HTTP/1.1` and one header line, never finished) and silent connections are
//! closed at the first-request deadline; one address holds at most its per-IP share; the
//! listener's global cap leaves the process's descriptors to the relay, so TURN keeps
//! allocating while the HTTP side is flooded from many addresses.

use natpass::auth::Secret;
use natpass::signal::Limits;
use natpass::web::limits::HttpLimits;
use natpass::web::{AppState, IceInfo, WebConfig};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HALF_OPEN: &[u8] = b"GET / HTTP/1.1\r\nHost: natpass.test\r\n";

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// Is the server's side of `s` closed (EOF or reset) within `wait`?
fn closed_within(mut s: &TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A complete `GET /` from `from`: the status line.
fn get_page(from: IpAddr, to: SocketAddr) -> String {
    let mut s = connect_from(from, to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: natpass.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn in_process(http: HttpLimits) -> (SocketAddr, Arc<AppState>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = WebConfig {
        ice: IceInfo {
            ports: vec![3478],
            tls_ports: vec![],
            public_host: None,
        },
        secret: Secret::new("s"),
        ttl: 600,
        allowed_origins: vec![],
        signaling: Limits::default(),
        http,
    };
    let state = AppState::new(cfg);
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = l.local_addr().unwrap();
    rt.spawn(natpass::web::serve(
        l,
        state.clone(),
        std::future::pending(),
    ));
    (addr, state, rt)
}

#[test]
fn half_open_and_silent_connections_are_closed_at_the_first_request_deadline() {
    let (addr, state, _rt) = in_process(HttpLimits {
        first_request: Duration::from_secs(1),
        idle: Duration::from_secs(30),
        ..HttpLimits::default()
    });
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let half_open: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect_from(lo, addr).unwrap();
            s.write_all(HALF_OPEN).unwrap();
            s
        })
        .collect();
    let silent = connect_from(lo, addr).unwrap();
    // Trickling one header byte at a time does not extend the deadline either.
    let mut trickle = connect_from(lo, addr).unwrap();
    trickle.write_all(HALF_OPEN).unwrap();
    let t0 = Instant::now();
    let mut trickle_closed = false;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        if trickle.write_all(b"X").is_err() {
            trickle_closed = true;
            break;
        }
    }
    assert!(
        trickle_closed || closed_within(&trickle, Duration::from_secs(2)),
        "a trickled request head outlived its deadline"
    );
    for (i, s) in half_open.iter().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "half-open request {i} still held after {:?}",
            t0.elapsed()
        );
    }
    assert!(closed_within(&silent, Duration::from_secs(3)));
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "closed at the deadline"
    );
    // Every slot came back, and the page still loads.
    let t1 = Instant::now();
    while state.gate().open() > 0 && t1.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state.gate().open(), 0);
    assert_eq!(get_page(lo, addr), "HTTP/1.1 200 OK");
}

#[test]
fn one_address_holds_at_most_its_share_and_all_hold_at_most_the_global_cap() {
    let (addr, state, _rt) = in_process(HttpLimits {
        per_ip: 8,
        max_connections: 20,
        ..HttpLimits::default()
    });
    let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
    let flood: Vec<TcpStream> = (0..30)
        .map(|_| {
            let mut s = connect_from(ip(1), addr).unwrap();
            let _ = s.write_all(HALF_OPEN);
            s
        })
        .collect();
    let refused = flood
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(300)))
        .count();
    assert_eq!(refused, 22, "30 from one address, 8 kept");
    assert_eq!(state.gate().open(), 8);
    // Another address still gets the page while the first one floods.
    assert_eq!(get_page(ip(2), addr), "HTTP/1.1 200 OK");
    // Many addresses: the listener as a whole keeps at most its global cap.
    let mut more = Vec::new();
    for n in 3..10 {
        for _ in 0..4 {
            let mut s = connect_from(ip(n), addr).unwrap();
            let _ = s.write_all(HALF_OPEN);
            more.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state.gate().open(), 20);
    drop(flood);
    drop(more);
    let t0 = Instant::now();
    while state.gate().open() > 0 && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        state.gate().open(),
        0,
        "closed connections give their slots back"
    );
}

/// A TURN client over UDP with stun-types' own integrity code.
mod turn {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;
    use stun_types::attribute::{ErrorCode, Nonce, Realm, Username};
    use stun_types::message::{
        IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
        MessageIntegrityCredentials, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
        TransactionId,
    };
    use turn_types::attribute::RequestedTransport;
    use turn_types::message::ALLOCATE;

    fn ask(sock: &UdpSocket, server: SocketAddr, req: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..3 {
            sock.send_to(req, server).unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("no answer from the TURN server");
    }

    /// Allocate with a long-term credential: None on success, else the error code.
    pub fn allocate(server: SocketAddr, user: &str, pass: &str) -> Option<u16> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let build = |auth: Option<(&str, &str)>| {
            let mut w = Message::builder(
                MessageType::from_class_method(MessageClass::Request, ALLOCATE),
                TransactionId::generate(),
                MessageWriteVec::new(),
            );
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
            if let Some((realm, nonce)) = auth {
                w.add_attribute(&Username::new(user).unwrap()).unwrap();
                w.add_attribute(&Realm::new(realm).unwrap()).unwrap();
                w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
                let creds = LongTermKeyCredentials::new(user.into(), pass.into(), realm.into());
                w.add_message_integrity(
                    &MessageIntegrityCredentials::LongTerm(creds),
                    IntegrityAlgorithm::Sha1,
                )
                .unwrap();
            }
            w.finish()
        };
        let challenge = ask(&sock, server, &build(None));
        let m = Message::from_bytes(&challenge).unwrap();
        let realm = m.attribute::<Realm>().expect("401 has REALM");
        let nonce = m.attribute::<Nonce>().expect("401 has NONCE");
        let r = ask(&sock, server, &build(Some((realm.realm(), nonce.nonce()))));
        let m = Message::from_bytes(&r).unwrap();
        if m.has_class(MessageClass::Success) {
            None
        } else {
            Some(m.attribute::<ErrorCode>().map_or(0, |e| e.code()))
        }
    }
}

/// The natpass binary, started with a small descriptor limit (soft and hard) so a flood can
/// reach it quickly; killed by PID when dropped.
struct Natpass {
    child: std::process::Child,
}

impl Drop for Natpass {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn turn_keeps_allocating_while_http_is_flooded_with_half_open_requests() {
    const SECRET: &str = "flood-secret";
    const NOFILE: u32 = 256;
    let free_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let turn_addr = free_udp.local_addr().unwrap();
    let free_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = free_tcp.local_addr().unwrap();
    drop((free_udp, free_tcp));
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_natpass"),
            "serve",
            "--listen",
            &turn_addr.to_string(),
            "--http",
            &http.to_string(),
            "--auth-secret",
            SECRET,
            "--threads",
            "1",
            "--log",
            "error",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _server = Natpass { child };
    let t0 = Instant::now();
    while TcpStream::connect(http).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "natpass did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // One REST name per allocation: the per-user quota is not what this test is about.
    let allocate = |n: usize| {
        let (user, pass) =
            natpass::auth::mint_rest(&Secret::new(SECRET), &format!("u{n}"), 600, now);
        turn::allocate(turn_addr, &user, &pass)
    };
    assert_eq!(allocate(0), None, "before the flood");
    // Twice the descriptor limit in half-open requests, from 16 loopback addresses.
    let mut flood = Vec::new();
    let started = Instant::now();
    for i in 0..(2 * NOFILE as usize) {
        if started.elapsed() > Duration::from_secs(20) {
            break; // a starved server stops accepting: connects then wait for the backlog
        }
        let from = IpAddr::from([127, 0, 1, 1 + (i % 16) as u8]);
        if let Ok(mut s) = connect_from(from, http) {
            let _ = s.write_all(HALF_OPEN);
            flood.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut failures = Vec::new();
    for n in 1..=20 {
        if let Some(code) = allocate(n) {
            failures.push(code);
        }
    }
    assert!(
        failures.is_empty(),
        "allocations during the HTTP flood failed: {failures:?}"
    );
    drop(flood);
}
