//! Operations, against the `natpass` binary: metrics move while relaying, SIGHUP reloads the
//! config (a new user works without a restart; an invalid file is rejected and the running
//! config stays), the admin API's authentication and actions, and the SIGTERM drain.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (status, body) of an HTTP request.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

struct Natpass {
    child: Child,
    udp: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    config: std::path::PathBuf,
    stderr_file: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for Natpass {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TOKEN: &str = "admin-token-0123456789";

fn start(config_text: &str, extra: &[&str]) -> Natpass {
    let dir = temp_dir("ops");
    let config = dir.join("natpass.toml");
    std::fs::write(&config, config_text).unwrap();
    let udp: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_tcp()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_tcp()).parse().unwrap();
    let stderr_file = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &udp.to_string(),
            "--http",
            &http.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--metrics",
            &metrics.to_string(),
            "--allow-peer",
            "127.0.0.0/8",
        ])
        .args(extra)
        .env("NATPASS_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let n = Natpass {
        child,
        udp,
        http,
        admin,
        metrics,
        config,
        stderr_file,
        dir,
    };
    let t0 = Instant::now();
    while TcpStream::connect(n.admin).is_err() || TcpStream::connect(n.metrics).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "natpass did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    n
}

fn hup(n: &Natpass) {
    Command::new("kill")
        .args(["-HUP", &n.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
}

const CONFIG: &str =
    "users = [\"alice:secret\"]\nauth-secrets = [\"rest-secret\"]\nlog = \"info\"\n";

#[test]
fn metrics_show_relayed_traffic_in_both_directions_live() {
    let n = start(CONFIG, &[]);
    let (code, before) = http(n.metrics, "GET", "/metrics", None, "");
    assert_eq!(code, 200);
    assert_eq!(
        metric(
            &before,
            "natpass_relayed_packets_total{direction=\"to_peer\"}"
        ),
        0.0
    );
    let c = UdpClient::new(n.udp);
    let (nonce, relay) = c.allocate("alice", "secret");
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let pa = peer.local_addr().unwrap().to_string();
    assert_eq!(
        error_code(&c.ask(&channel_bind("alice", "secret", &nonce, 0x4000, &pa))),
        None
    );
    for _ in 0..5 {
        c.send(&channel_data(0x4000, b"ping"));
        let mut b = [0u8; 16];
        let (k, _) = peer.recv_from(&mut b).unwrap();
        peer.send_to(&b[..k], relay).unwrap();
        c.recv_timeout(Duration::from_secs(2)).expect("echo back");
    }
    // Live, while the allocation still exists (not when the session ends).
    let (_, m) = http(n.http, "GET", "/metrics", None, "");
    assert_eq!(
        metric(&m, "natpass_relayed_packets_total{direction=\"to_peer\"}"),
        5.0
    );
    assert_eq!(
        metric(&m, "natpass_relayed_packets_total{direction=\"to_client\"}"),
        5.0
    );
    assert_eq!(
        metric(&m, "natpass_relayed_bytes_total{direction=\"to_peer\"}"),
        20.0
    );
    assert_eq!(
        metric(&m, "natpass_allocations{transport=\"udp\",family=\"ipv4\"}"),
        1.0
    );
    assert_eq!(metric(&m, "natpass_channels"), 1.0);
    assert_eq!(metric(&m, "natpass_permissions"), 1.0);
    assert!(metric(&m, "natpass_allocate_errors_total{code=\"401\"}") >= 1.0);
    assert!(metric(&m, "process_start_time_seconds") > 1.7e9);
    assert!(m.contains("natpass_build_info{version="));
    assert!(
        m.contains("natpass_signaling_rooms 0"),
        "signaling gauges on the HTTP listener"
    );
    assert!(!m.contains("alice"), "no usernames in labels");
    // Health and readiness.
    assert_eq!(http(n.metrics, "GET", "/healthz", None, "").0, 200);
    assert_eq!(http(n.metrics, "GET", "/readyz", None, "").0, 200);
    // Drops are counted by reason.
    c.send(&channel_data(0x4001, b"unbound"));
    std::thread::sleep(Duration::from_millis(100));
    let (_, m) = http(n.metrics, "GET", "/metrics", None, "");
    assert_eq!(
        metric(
            &m,
            "natpass_dropped_packets_total{reason=\"no_allocation\"}"
        ),
        1.0
    );
}

#[test]
fn sighup_reloads_users_and_rejects_an_invalid_file() {
    let n = start(CONFIG, &[]);
    let c = UdpClient::new(n.udp);
    let nonce = c.nonce();
    let alloc = |user: &str, pass: &str, nonce: &str| allocate_req(user, pass, nonce);
    assert_eq!(
        error_code(&c.ask(&alloc("carol", "pw2", &nonce))),
        Some(401)
    );
    std::fs::write(
        &n.config,
        CONFIG.replace("[\"alice:secret\"]", "[\"alice:secret\", \"carol:pw2\"]"),
    )
    .unwrap();
    hup(&n);
    let c2 = UdpClient::new(n.udp);
    c2.allocate("carol", "pw2");
    // An invalid file: rejected, logged, the running config stays (carol still works).
    std::fs::write(&n.config, "users = [\"nocolon\"]\nbogus-key = 1\n").unwrap();
    hup(&n);
    let c3 = UdpClient::new(n.udp);
    c3.allocate("carol", "pw2");
    let log = std::fs::read_to_string(&n.stderr_file).unwrap();
    assert!(
        log.contains("invalid") && log.contains("running one stays"),
        "{log}"
    );
    assert!(
        !log.contains("pw2") && !log.contains("secret\""),
        "no passwords in logs"
    );
}

#[test]
fn admin_api_requires_the_token_and_acts() {
    let n = start(CONFIG, &[]);
    assert_eq!(http(n.admin, "GET", "/admin/allocations", None, "").0, 401);
    assert_eq!(
        http(
            n.admin,
            "GET",
            "/admin/allocations",
            Some("wrong-token-0123456789"),
            ""
        )
        .0,
        403
    );
    let c = UdpClient::new(n.udp);
    let (nonce, relay) = c.allocate("alice", "secret");
    let (code, body) = http(n.admin, "GET", "/admin/allocations", Some(TOKEN), "");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let a = &v["allocations"][0];
    assert_eq!(a["username"], "alice");
    assert_eq!(a["relayed"][0], relay.to_string());
    assert_eq!(a["client"], c.local().to_string());
    assert!(a["age_seconds"].is_u64() && a["bytes_to_peer"] == 0);
    // End all of alice's allocations: the next Refresh finds none (437).
    let (code, body) = http(
        n.admin,
        "DELETE",
        "/admin/users/alice/allocations",
        Some(TOKEN),
        "",
    );
    assert_eq!((code, body.contains("\"ended\":1")), (200, true), "{body}");
    assert_eq!(
        error_code(&c.ask(&refresh("alice", "secret", &nonce, Some(600)))),
        Some(437)
    );
    // One by id.
    let c2 = UdpClient::new(n.udp);
    c2.allocate("alice", "secret");
    let (_, body) = http(n.admin, "GET", "/admin/allocations", Some(TOKEN), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["allocations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        http(
            n.admin,
            "DELETE",
            &format!("/admin/allocations/{id}"),
            Some(TOKEN),
            ""
        )
        .0,
        200
    );
    assert_eq!(
        http(
            n.admin,
            "DELETE",
            &format!("/admin/allocations/{id}"),
            Some(TOKEN),
            ""
        )
        .0,
        404
    );
    // Mint a credential that works.
    let (code, body) = http(
        n.admin,
        "POST",
        "/admin/credentials?user=ops&ttl=120",
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    UdpClient::new(n.udp).allocate(
        v["username"].as_str().unwrap(),
        v["password"].as_str().unwrap(),
    );
    // Log filter, rooms, reload.
    assert_eq!(
        http(n.admin, "PUT", "/admin/log", Some(TOKEN), "natpass=debug").0,
        204
    );
    assert_eq!(
        http(n.admin, "PUT", "/admin/log", Some(TOKEN), "[[[").0,
        400
    );
    let (code, body) = http(n.admin, "GET", "/admin/rooms", Some(TOKEN), "");
    assert_eq!((code, body.as_str()), (200, "{\"rooms\":[]}"));
    assert_eq!(
        http(n.admin, "DELETE", "/admin/rooms/nope", Some(TOKEN), "").0,
        404
    );
    let (code, body) = http(n.admin, "POST", "/admin/reload", Some(TOKEN), "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"applied\":true"));
    // The admin listener is not the public page: no admin routes on the HTTP listener.
    assert_eq!(
        http(n.http, "GET", "/admin/allocations", Some(TOKEN), "").0,
        404
    );
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let mut n = start(CONFIG, &["--drain-seconds", "2"]);
    let c = UdpClient::new(n.udp);
    c.allocate("alice", "secret");
    let t0 = Instant::now();
    Command::new("kill")
        .args(["-TERM", &n.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Draining: not ready, and new allocations are refused while the old one lives.
    assert_eq!(http(n.metrics, "GET", "/readyz", None, "").0, 503);
    let c2 = UdpClient::new(n.udp);
    let nonce = c2.nonce();
    let r = c2.ask(&allocate_req("alice", "secret", &nonce));
    assert_eq!(error_code(&r), Some(508));
    let status = loop {
        if let Some(s) = n.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "exits within the drain period"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1800),
        "waited for the live allocation"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut n = start(CONFIG, &["--drain-seconds", "30"]);
    let c = UdpClient::new(n.udp);
    c.allocate("alice", "secret");
    let t0 = Instant::now();
    Command::new("kill")
        .args(["-TERM", &n.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-INT", &n.child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = n.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "second signal exits quickly"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
}
