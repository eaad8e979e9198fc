//! A real natpass server on loopback, a raw UDP client for it, and process resource readings.

#![allow(unused_imports)]
use super::prelude::*;
use super::*;

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

/// A STUN/TURN client over one TCP connection (RFC 6062 framing: messages back to back).
pub struct TcpClient {
    pub stream: std::net::TcpStream,
}

impl TcpClient {
    pub fn new(server: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(server).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        Self { stream }
    }
    /// Send a request and read one whole STUN message back (None: closed or no answer).
    pub fn try_ask(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        use std::io::{Read, Write};
        self.stream.write_all(data).ok()?;
        let mut head = [0u8; 20];
        self.stream.read_exact(&mut head).ok()?;
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let mut msg = head.to_vec();
        msg.resize(20 + len, 0);
        self.stream.read_exact(&mut msg[20..]).ok()?;
        Some(msg)
    }
    pub fn ask(&mut self, data: &[u8]) -> Vec<u8> {
        self.try_ask(data).expect("server answered over TCP")
    }
    /// Allocate; returns the nonce.
    pub fn allocate(&mut self, user: &str, pass: &str) -> String {
        let r = self.ask(&allocate_plain());
        assert_eq!(error_code(&r), Some(401));
        let nonce = Message::from_bytes(&r)
            .unwrap()
            .attribute::<Nonce>()
            .unwrap()
            .nonce()
            .to_owned();
        let r = self.ask(&signed(ALLOCATE, user, pass, &nonce, |w, _| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        }));
        assert_eq!(error_code(&r), None, "allocate over TCP");
        nonce
    }
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

/// A child process killed (and reaped) however the test ends: a failed assertion must not
/// leave a server running.
pub struct Proc(pub std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
