//! Interop with coturn's own tools (Debian package `coturn`): turnutils_uclient relaying
//! through natpass to turnutils_peer with channels and with Send indications, and
//! turnutils_stunclient. Skipped with a message when the tools are missing, except in CI.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Peer(Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_peer() -> (Peer, u16) {
    let port = free_udp_port();
    let child = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer starts");
    std::thread::sleep(Duration::from_millis(300));
    (Peer(child), port)
}

/// Run turnutils_uclient and return (sent, received, lost) from its summary.
fn uclient(server_port: u16, peer_port: u16, extra: &[&str]) -> (u64, u64, u64, String) {
    let mut args: Vec<String> = vec![
        "-u".into(),
        "alice".into(),
        "-w".into(),
        "secret".into(),
        "-e".into(),
        "127.0.0.1".into(),
        "-r".into(),
        peer_port.to_string(),
        "-m".into(),
        "10".into(),
        "-n".into(),
        "100".into(),
        "-p".into(),
        server_port.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("127.0.0.1".into());
    let out = Command::new("timeout")
        .args(["90", "stdbuf", "-oL", "-eL"])
        .arg("turnutils_uclient")
        .args(&args)
        .output()
        .expect("turnutils_uclient runs");
    uclient_summary(&out)
}

fn relay_with(extra: &[&str]) {
    if !have_tool("turnutils_uclient") || !have_tool("turnutils_peer") {
        return;
    }
    let dir = temp_dir("uclient");
    let (cert, key, _) = make_cert(&dir, "s", &["localhost"]);
    let mut o = alice_loopback();
    o.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    o.tls_cert = Some(cert);
    o.tls_key = Some(key);
    let server = start_server(o);
    let (_peer, peer_port) = start_peer();
    // `-S` (TLS) goes to the TLS port; the rest to the shared UDP/TCP port.
    let port = if extra.contains(&"-S") {
        server.tls_addrs[0].port()
    } else {
        server.udp_addrs[0].port()
    };
    let (sent, recv, lost, text) = uclient(port, peer_port, extra);
    let _ = std::fs::remove_dir_all(dir);
    let tail: String = text.lines().rev().take(12).collect::<Vec<_>>().join("\n");
    println!("turnutils_uclient {extra:?}: sent={sent} received={recv} lost={lost}");
    assert_eq!(lost, 0, "lost messages:\n{tail}");
    assert!(
        sent >= 1000 && recv >= sent,
        "sent={sent} recv={recv}\n{tail}"
    );
}

#[test]
fn coturn_uclient_relays_through_natpass_with_channels_without_loss() {
    relay_with(&[]);
}

#[test]
fn coturn_uclient_relays_through_natpass_with_send_indications_without_loss() {
    relay_with(&["-s"]);
}

#[test]
fn coturn_stunclient_gets_the_reflexive_address() {
    if !have_tool("turnutils_stunclient") {
        return;
    }
    let server = start_server(alice_loopback());
    let out = Command::new("timeout")
        .args([
            "20",
            "turnutils_stunclient",
            "-p",
            &server.udp_addrs[0].port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("turnutils_stunclient runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

#[test]
fn coturn_uclient_over_tcp_with_channels_without_loss() {
    relay_with(&["-t"]);
}

#[test]
fn coturn_uclient_over_tcp_with_send_indications_without_loss() {
    relay_with(&["-t", "-s"]);
}

#[test]
fn coturn_uclient_over_tls_with_channels_without_loss() {
    relay_with(&["-t", "-S"]);
}

#[test]
fn coturn_uclient_over_tls_with_send_indications_without_loss() {
    relay_with(&["-t", "-S", "-s"]);
}

/// natpass with `http` and `tls-listen` on one port (issue 16's 443 sharing), started as
/// `natpass serve` starts, on a port of its own.
struct OnePort {
    _rt: tokio::runtime::Runtime,
    stop: natpass::CancellationToken,
    port: u16,
    cert: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for OnePort {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The drain ends at once: there is nothing left to relay.
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn one_port() -> OnePort {
    let dir = temp_dir("oneport");
    let (cert, key, _) = make_cert(&dir, "s", &["localhost"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shared: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = alice_loopback();
    s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    s.tls_listen = vec![shared];
    s.http = Some(shared);
    s.tls_cert = Some(cert.clone());
    s.tls_key = Some(key);
    s.threads = Some(2);
    s.sfu = Some(false);
    s.drain_seconds = Some(0);
    let cfg = natpass::config::ValidConfig::load(None, s).expect("a valid one-port config");
    assert_eq!(
        cfg.http.as_ref().unwrap().tls,
        natpass::config::HttpTls::SharedWithTurn
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(natpass::lifecycle::Server::start(cfg, None))
        .expect("starts");
    assert_eq!(server.http_addr(), Some(shared));
    assert_eq!(server.net().tls_addrs, vec![shared]);
    let stop = natpass::CancellationToken::new();
    rt.spawn(server.serve(stop.clone()));
    OnePort {
        _rt: rt,
        stop,
        port,
        cert,
        dir,
    }
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// One TLS port for the page and TURN: curl gets the page over HTTPS (HTTP/1.1, HTTP/2 and no
/// ALPN at all) and plain HTTP, `/api/ice-servers` advertises `turns:` on that same port,
/// coturn's turnutils_uclient relays without loss over TLS (`-S`, which offers `http/1.1`
/// next to `stun.turn`) and over plain TCP on the same port, and natpass's own probe (ALPN
/// `stun.turn` only) relays too. Garbage on the port is closed without disturbing the rest.
#[test]
fn one_port_serves_the_page_and_turn_over_tls_and_tcp() {
    if !have_tool("curl") || !have_tool("turnutils_uclient") || !have_tool("turnutils_peer") {
        return;
    }
    let s = one_port();
    let p = s.port;
    let cert = s.cert.to_str().unwrap().to_owned();
    let https = format!("https://localhost:{p}");
    let (ok, page) = curl(&["--cacert", &cert, &format!("{https}/")]);
    assert!(ok && page.contains("<!doctype html>"), "{page}");
    for how in ["--http1.1", "--http2", "--no-alpn"] {
        let (ok, text) = curl(&[how, "--cacert", &cert, &format!("{https}/api/ice-servers")]);
        assert!(ok, "{how}: {text}");
        assert!(
            text.contains(&format!("turns:localhost:{p}?transport=tcp")),
            "{how}: {text}"
        );
    }
    // Signaling from the page's own origin over HTTP/2 (no Host header there: :authority).
    for how in ["--http1.1", "--http2"] {
        let (ok, text) = curl(&[
            how,
            "--cacert",
            &cert,
            "-H",
            &format!("Origin: {https}"),
            &format!("{https}/socket.io/?EIO=4&transport=polling"),
        ]);
        assert!(ok && text.contains("\"sid\""), "{how}: {text}");
    }
    let (ok, text) = curl(&[&format!("http://127.0.0.1:{p}/healthz")]);
    assert!(ok, "plain HTTP on the shared port: {text}");

    // Garbage: a first byte that is neither TLS nor STUN nor HTTP, and a broken handshake.
    for junk in [
        &[0xff_u8; 64][..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
    ] {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(junk).unwrap();
        let mut b = [0u8; 256];
        let _ = c.read(&mut b); // an HTTP 400, a TLS alert, or the close
    }

    let (_peer, peer_port) = start_peer();
    for extra in [&["-t", "-S"][..], &["-t"][..]] {
        let (sent, recv, lost, text) = uclient(p, peer_port, extra);
        let tail: String = text.lines().rev().take(12).collect::<Vec<_>>().join("\n");
        println!("one port, turnutils_uclient {extra:?}: sent={sent} received={recv} lost={lost}");
        assert_eq!(lost, 0, "{extra:?} lost messages:\n{tail}");
        assert!(sent >= 1000 && recv >= sent, "{extra:?}: {tail}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args([
            "probe",
            "turn",
            &format!("turns:localhost:{p}?transport=tcp"),
        ])
        .args([
            "--ca",
            &cert,
            "--user",
            "alice",
            "--password",
            "secret",
            "--json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, page) = curl(&["--cacert", &cert, &format!("{https}/healthz")]);
    assert!(ok, "the page still answers after all that: {page}");
}
