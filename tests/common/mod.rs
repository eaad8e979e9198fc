//! Test helpers: a client side built with stun-types' own integrity code (independent of
//! natpass's), and a harness around the sans-IO core with fake time and fake relay sockets.
#![allow(dead_code)]

use natpass::auth::{Credentials, Secret};
use natpass::proto::{
    Core, CoreConfig, FiveTuple, Forward, PeerRoute, RelayAddr, Transmit, Transport,
};
use natpass::relay::policy::parse_net;
use natpass::relay::quota::QuotaLimits;
use natpass::relay::{ShardResources, Shared};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun_types::attribute::{
    AttributeStaticType, ErrorCode, Fingerprint, Nonce, Realm, Username, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use turn_types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

pub const REALM: &str = "natpass";
pub const UNIX0: u64 = 1_800_000_000;

pub use natpass::testing::FakeRelays;

pub struct Options {
    pub relays: Vec<RelayAddr>,
    pub allow: Vec<&'static str>,
    pub listeners: Vec<SocketAddr>,
    pub ports: (u16, u16),
    pub limits: QuotaLimits,
    pub cfg: CoreConfig,
}

impl Default for Options {
    fn default() -> Self {
        let ip: IpAddr = "192.0.2.100".parse().unwrap();
        Self {
            relays: vec![RelayAddr {
                bind: ip,
                advertise: ip,
            }],
            allow: vec![],
            listeners: vec![server_addr()],
            ports: (50000, 50999),
            limits: QuotaLimits::default(),
            cfg: CoreConfig::default(),
        }
    }
}

pub fn server_addr() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}

pub fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: client.parse().unwrap(),
        server: server_addr(),
    }
}

pub struct Harness {
    pub core: Core<ShardResources>,
    pub relays: FakeRelays,
    pub now: Instant,
    pub shared: Arc<Shared>,
    pub out: Vec<Transmit>,
}

pub fn credentials() -> Credentials {
    let mut c = Credentials::new(REALM, 3600);
    c.add_user("alice", "alicepw");
    c.add_user("bob", "bobpw");
    c.add_user_key(
        "carol",
        natpass::auth::long_term_key("carol", REALM, "carolpw"),
    );
    c.add_secret(Secret::new("old-secret"));
    c.add_secret(Secret::new("new-secret"));
    c
}

impl Harness {
    pub fn new(o: Options) -> Self {
        let now = Instant::now();
        let setup = natpass::testing::Setup {
            relays: o.relays,
            allow: o.allow.iter().map(|s| parse_net(s).unwrap()).collect(),
            listeners: o.listeners,
            ports: o.ports,
            limits: o.limits,
            cfg: o.cfg,
            credentials: credentials(),
        };
        let (core, shared) = natpass::testing::core(setup, now, UNIX0);
        Self {
            core,
            relays: FakeRelays::default(),
            now,
            shared,
            out: Vec::new(),
        }
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.core.handle_timeout(self.now, &mut self.relays);
    }

    /// Send bytes from a client; returns (replies, forward).
    pub fn send(&mut self, ft: FiveTuple, data: &[u8]) -> (Vec<Vec<u8>>, Option<Forward>) {
        self.out.clear();
        let fwd = self
            .core
            .handle_client(self.now, ft, data, &mut self.relays, &mut self.out);
        for t in &self.out {
            assert_eq!(t.ft, ft, "replies go back on the request's 5-tuple");
        }
        (self.out.drain(..).map(|t| t.data).collect(), fwd)
    }

    /// Send a request and return its single reply.
    pub fn ask(&mut self, ft: FiveTuple, data: &[u8]) -> Vec<u8> {
        let (mut r, _) = self.send(ft, data);
        assert_eq!(r.len(), 1, "expected exactly one reply");
        r.pop().unwrap()
    }

    pub fn peer(&mut self, relay: SocketAddr, peer: &str, payload: &[u8]) -> PeerRoute {
        let owner = self.relays.owner_of(relay).expect("relay bound");
        self.core
            .handle_peer(self.now, owner, peer.parse().unwrap(), payload)
    }

    /// The 401 dance: returns the nonce.
    pub fn nonce(&mut self, ft: FiveTuple) -> String {
        let r = self.ask(ft, &allocate_plain());
        let m = Message::from_bytes(&r).unwrap();
        assert_eq!(error_code(&r), Some(401));
        m.attribute::<Nonce>().unwrap().nonce().to_owned()
    }

    /// Allocate with user/password; returns the relayed address.
    pub fn allocate(&mut self, ft: FiveTuple, user: &str, pass: &str) -> SocketAddr {
        let nonce = self.nonce(ft);
        let r = self.ask(
            ft,
            &signed(ALLOCATE, user, pass, &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
            }),
        );
        assert_eq!(
            error_code(&r),
            None,
            "allocate failed: {:?}",
            error_code(&r)
        );
        relayed(&r)
    }
}

pub fn request(method: Method, f: impl FnOnce(&mut MessageWriteVec, TransactionId)) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Request, method),
        txid,
        MessageWriteVec::new(),
    );
    f(&mut w, txid);
    w.finish()
}

pub fn indication(method: Method, f: impl FnOnce(&mut MessageWriteVec, TransactionId)) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, method),
        txid,
        MessageWriteVec::new(),
    );
    f(&mut w, txid);
    w.finish()
}

pub fn allocate_plain() -> Vec<u8> {
    request(ALLOCATE, |w, _| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    })
}

/// A request signed by stun-types' own MESSAGE-INTEGRITY code (SHA-1, MD5 long-term key), with
/// FINGERPRINT, as browsers send.
pub fn signed(
    method: Method,
    user: &str,
    pass: &str,
    nonce: &str,
    f: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    signed_with(
        method,
        user,
        pass,
        REALM,
        nonce,
        IntegrityAlgorithm::Sha1,
        f,
    )
}

pub fn signed_with(
    method: Method,
    user: &str,
    pass: &str,
    realm: &str,
    nonce: &str,
    algo: IntegrityAlgorithm,
    f: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Request, method),
        txid,
        MessageWriteVec::new(),
    );
    f(&mut w, txid);
    w.add_attribute(&Username::new(user).unwrap()).unwrap();
    w.add_attribute(&Realm::new(realm).unwrap()).unwrap();
    w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
    let creds = LongTermKeyCredentials::new(user.into(), pass.into(), realm.into());
    w.add_message_integrity(&MessageIntegrityCredentials::LongTerm(creds), algo)
        .unwrap();
    w.add_fingerprint().unwrap();
    w.finish()
}

pub fn error_code(resp: &[u8]) -> Option<u16> {
    let m = Message::from_bytes(resp).expect("reply parses");
    if m.has_class(MessageClass::Error) {
        Some(
            m.attribute::<ErrorCode>()
                .expect("error has ERROR-CODE")
                .code(),
        )
    } else {
        assert!(m.has_class(MessageClass::Success), "reply is a response");
        None
    }
}

pub fn relayed(resp: &[u8]) -> SocketAddr {
    let m = Message::from_bytes(resp).unwrap();
    m.attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(m.transaction_id())
}

pub fn mapped(resp: &[u8]) -> SocketAddr {
    let m = Message::from_bytes(resp).unwrap();
    m.attribute::<XorMappedAddress>()
        .unwrap()
        .addr(m.transaction_id())
}

pub fn lifetime(resp: &[u8]) -> u32 {
    Message::from_bytes(resp)
        .unwrap()
        .attribute::<Lifetime>()
        .unwrap()
        .seconds()
}

pub fn has_fingerprint(resp: &[u8]) -> bool {
    Message::from_bytes(resp)
        .unwrap()
        .has_attribute(Fingerprint::TYPE)
}

pub fn peers_attr(w: &mut MessageWriteVec, txid: TransactionId, peer: &str) {
    w.add_attribute(&XorPeerAddress::new(peer.parse().unwrap(), txid))
        .unwrap();
}

/// A signed Allocate for UDP relaying.
pub fn allocate_req(user: &str, pass: &str, nonce: &str) -> Vec<u8> {
    signed(ALLOCATE, user, pass, nonce, |w, _| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    })
}

pub fn create_permission(user: &str, pass: &str, nonce: &str, peers: &[&str]) -> Vec<u8> {
    signed(CREATE_PERMISSION, user, pass, nonce, |w, t| {
        for p in peers {
            peers_attr(w, t, p);
        }
    })
}

pub fn channel_bind(user: &str, pass: &str, nonce: &str, ch: u16, peer: &str) -> Vec<u8> {
    signed(CHANNEL_BIND, user, pass, nonce, |w, t| {
        w.add_attribute(&ChannelNumber::new(ch)).unwrap();
        peers_attr(w, t, peer);
    })
}

pub fn refresh(user: &str, pass: &str, nonce: &str, secs: Option<u32>) -> Vec<u8> {
    signed(REFRESH, user, pass, nonce, |w, _| {
        if let Some(s) = secs {
            w.add_attribute(&Lifetime::new(s)).unwrap();
        }
    })
}

pub fn send_indication(peer: &str, payload: &[u8]) -> Vec<u8> {
    indication(SEND, |w, t| {
        peers_attr(w, t, peer);
        w.add_attribute(&Data::new(payload)).unwrap();
    })
}

pub fn channel_data(ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&ch.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Start a natpass server on loopback with an ephemeral port and these extra overrides.
pub fn start_server(o: natpass::config::Overrides) -> natpass::net::ServerHandle {
    start_server_with(o, |_| {})
}

/// Like [`start_server`], with a chance to adjust the validated config (quotas, deadlines).
pub fn start_server_with(
    mut o: natpass::config::Overrides,
    tweak: impl FnOnce(&mut natpass::config::ValidConfig),
) -> natpass::net::ServerHandle {
    if o.listen.is_empty() {
        o.listen = vec!["127.0.0.1:0".parse().unwrap()];
    }
    if o.threads.is_none() {
        o.threads = Some(2);
    }
    let mut cfg = natpass::config::ValidConfig::embedded(o).expect("valid test config");
    tweak(&mut cfg);
    natpass::net::start(&cfg).expect("server starts")
}

/// A self-signed certificate for `names`, written as PEM files in `dir`: (cert, key, DER).
pub fn make_cert(
    dir: &std::path::Path,
    tag: &str,
    names: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = dir.join(format!("{tag}-cert.pem"));
    let key = dir.join(format!("{tag}-key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().to_vec())
}

/// A fresh temporary directory for this test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("natpass-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The overrides most tests use: alice/secret, loopback peers allowed.
pub fn alice_loopback() -> natpass::config::Overrides {
    natpass::config::Overrides {
        users: vec![
            "alice:secret".parse().unwrap(),
            "bob:bobsecret".parse().unwrap(),
        ],
        allow_peers: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    }
}

/// A blocking UDP client speaking raw STUN to a real server.
pub struct UdpClient {
    pub sock: std::net::UdpSocket,
    pub server: SocketAddr,
}

impl UdpClient {
    pub fn new(server: SocketAddr) -> Self {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Self { sock, server }
    }
    /// A client bound to a given loopback address (another "source IP").
    pub fn from_ip(server: SocketAddr, ip: &str) -> Self {
        let sock = std::net::UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Self { sock, server }
    }
    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
    pub fn send(&self, data: &[u8]) {
        self.sock.send_to(data, self.server).unwrap();
    }
    /// Next datagram from the server (None on timeout).
    pub fn recv_timeout(&self, t: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(t)).unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
    pub fn ask(&self, data: &[u8]) -> Vec<u8> {
        self.send(data);
        self.recv_timeout(Duration::from_secs(2))
            .expect("server answered")
    }
    pub fn nonce(&self) -> String {
        let r = self.ask(&allocate_plain());
        assert_eq!(error_code(&r), Some(401));
        Message::from_bytes(&r)
            .unwrap()
            .attribute::<Nonce>()
            .unwrap()
            .nonce()
            .to_owned()
    }
    /// Allocate; returns (nonce, relayed address).
    pub fn allocate(&self, user: &str, pass: &str) -> (String, SocketAddr) {
        let nonce = self.nonce();
        let r = self.ask(&signed(ALLOCATE, user, pass, &nonce, |w, _| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        }));
        assert_eq!(error_code(&r), None, "allocate");
        (nonce, relayed(&r))
    }
}

/// Whether a program is on PATH; in CI a missing tool is a failure, elsewhere a skip.
pub fn have_tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok() {
            panic!("{name} is not installed (scripts/test.sh installs it)");
        }
        eprintln!("SKIP: {name} not installed");
    }
    found
}

/// A coturn `turnserver` started on loopback with its own config; killed when dropped.
pub struct Coturn {
    child: std::process::Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port_pair() -> u16 {
    // A port P with P and P+1 free on 127.0.0.1 (UDP and TCP), for coturn's RFC 5780 alternate.
    for _ in 0..100 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        drop(s);
        if p < 60000
            && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair");
}

/// Start coturn (None when it is not installed outside CI). `extra` lines go into its config.
pub fn coturn(extra: &[&str]) -> Option<Coturn> {
    if !have_tool("turnserver") {
        return None;
    }
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("natpass-coturn-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port_pair();
    let relay_base = 41000 + (port % 200) * 100;
    let mut conf = format!(
        "listening-ip=127.0.0.1\nlistening-ip=127.0.0.2\nlistening-port={port}\nrelay-ip=127.0.0.1\n\
         min-port={relay_base}\nmax-port={}\nrealm=natpass\nno-tls\nno-dtls\nfingerprint\n\
         no-software-attribute\nallow-loopback-peers\nno-cli\nuserdb={}/turndb\n\
         log-file=stdout\npidfile={}/pid\n",
        relay_base + 99,
        dir.display(),
        dir.display()
    );
    if !extra.iter().any(|l| l.starts_with("use-auth-secret")) {
        conf.push_str("lt-cred-mech\nuser=alice:secret\n");
    }
    for l in extra {
        conf.push_str(l);
        conf.push('\n');
    }
    let path = dir.join("turnserver.conf");
    std::fs::write(&path, conf).unwrap();
    let child = std::process::Command::new("turnserver")
        .arg("-c")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnserver starts");
    let c = Coturn { child, port, dir };
    // Ready when it answers a Binding.
    let probe = UdpClient::new(format!("127.0.0.1:{port}").parse().unwrap());
    for _ in 0..50 {
        probe.send(&request(stun_types::message::BINDING, |_, _| {}));
        if probe.recv_timeout(Duration::from_millis(100)).is_some() {
            return Some(c);
        }
    }
    panic!("coturn did not come up on port {port}");
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

/// The frame of an abuse test: a running server, a control allocation that must keep relaying
/// throughout, and resource baselines that must be back at the end.
pub struct Abuse {
    pub server: natpass::net::ServerHandle,
    control: UdpClient,
    control_peer: std::net::UdpSocket,
    fds: usize,
    rss: u64,
}

impl Abuse {
    pub fn new(o: natpass::config::Overrides) -> Self {
        Self::with(o, |_| {})
    }

    pub fn with(
        o: natpass::config::Overrides,
        tweak: impl FnOnce(&mut natpass::config::ValidConfig),
    ) -> Self {
        let server = start_server_with(o, tweak);
        let control = UdpClient::new(server.udp_addrs[0]);
        let (nonce, _) = control.allocate("bob", "bobsecret");
        // The control peer lives on 127.0.0.3 (tests with a strict policy allow just that).
        let control_peer = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
        control_peer
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let pa = control_peer.local_addr().unwrap().to_string();
        assert_eq!(
            error_code(&control.ask(&channel_bind("bob", "bobsecret", &nonce, 0x4000, &pa))),
            None
        );
        let a = Self {
            server,
            control,
            control_peer,
            fds: 0,
            rss: 0,
        };
        a.check_control();
        Self {
            fds: fd_count(),
            rss: rss_kib(),
            ..a
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.udp_addrs[0]
    }

    /// The control allocation still relays.
    pub fn check_control(&self) {
        self.control.send(&channel_data(0x4000, b"control"));
        let mut b = [0u8; 32];
        let (n, _) = self
            .control_peer
            .recv_from(&mut b)
            .expect("control allocation still relays");
        assert_eq!(&b[..n], b"control");
    }

    /// Control relays, the server's relay sockets and connections are back to the baseline,
    /// the process's file descriptors too (give or take the test's own few client sockets),
    /// and memory did not run away.
    pub fn finish(self, max_rss_growth_kib: u64) {
        self.check_control();
        let c = self.server.control();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (c.shared.ports.in_use() > 1 || c.limits.open() > 0 || fd_count() > self.fds + 8)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            c.shared.ports.in_use(),
            1,
            "only the control allocation's relay port"
        );
        assert_eq!(c.shared.quotas.total(), 1, "only the control allocation");
        assert_eq!(c.limits.open(), 0, "no TCP/TLS connection left");
        assert!(
            fd_count() <= self.fds + 8,
            "file descriptors back to baseline: {} vs {}",
            fd_count(),
            self.fds
        );
        let grown = rss_kib().saturating_sub(self.rss);
        assert!(grown <= max_rss_growth_kib, "memory grew by {grown} KiB");
        eprintln!(
            "abuse: control relayed throughout; fds {} (baseline {}); RSS +{} KiB",
            fd_count(),
            self.fds,
            grown
        );
    }
}

/// Whether the server closed `s` (EOF or reset) within `within`.
pub fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}
