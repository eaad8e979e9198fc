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
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let num_after = |key: &str| -> Option<u64> {
        let i = text.rfind(key)? + key.len();
        text[i..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let sent = num_after("tot_send_msgs=").unwrap_or(0);
    let recv = num_after("tot_recv_msgs=").unwrap_or(0);
    let lost = num_after("Total lost packets").unwrap_or(u64::MAX);
    (sent, recv, lost, text)
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
