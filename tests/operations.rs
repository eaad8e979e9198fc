//! Operations. In-process, through `natpass::lifecycle` (what `natpass serve` runs): metrics
//! move while relaying, a reload takes new users (also with the generated secret) and rejects
//! an invalid file, the admin API's authentication and actions, the shutdown drain and cutting
//! it short, and a second server on a taken port refused. Against the binary, once: the
//! signals (SIGHUP reload, SIGTERM drain, a second signal exits at once) and the port refusal.

mod common;

use common::*;
use natpass::CancellationToken;
use natpass::config::{Settings, ValidConfig};
use natpass::lifecycle::Server;
use natpass::ops::Ops;
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
/// A port free for both UDP and TCP (natpass listens on both; a port another process holds
/// makes it refuse to start).
fn free_udp() -> u16 {
    for _ in 0..100 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP")
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
    let mut n = n;
    let t0 = Instant::now();
    while TcpStream::connect(n.admin).is_err() || TcpStream::connect(n.metrics).is_err() {
        if let Ok(Some(status)) = n.child.try_wait() {
            let log = std::fs::read_to_string(&n.stderr_file).unwrap_or_default();
            panic!("natpass exited ({status}) before it listened:\n{log}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
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

/// A server started in this process the way `natpass serve` starts it: a config file under
/// the same settings the binary tests pass as flags, every listener on an ephemeral port.
struct InProc {
    rt: tokio::runtime::Runtime,
    ops: Ops,
    shutdown: CancellationToken,
    served: Option<tokio::task::JoinHandle<()>>,
    udp: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    config: std::path::PathBuf,
    dir: std::path::PathBuf,
}

fn loopback0() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

fn in_process(config_text: &str, tweak: impl FnOnce(&mut Settings)) -> InProc {
    let dir = temp_dir("ops-inproc");
    let config = dir.join("natpass.toml");
    std::fs::write(&config, config_text).unwrap();
    let mut settings = Settings {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        http: loopback0(),
        admin_listen: loopback0(),
        admin_token: Some(TOKEN.parse().unwrap()),
        metrics: loopback0(),
        allow_peers: vec!["127.0.0.0/8".parse().unwrap()],
        threads: Some(2),
        ..Default::default()
    };
    tweak(&mut settings);
    let cfg = ValidConfig::load(Some(&config), settings).expect("valid config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The log filter is checked the way the binary's is, without installing a subscriber.
    let set_log: natpass::logging::SetFilter =
        std::sync::Arc::new(|f: &str| natpass::logging::filter_for(f).map(|_| ()));
    let server = rt
        .block_on(Server::start(cfg, Some(set_log)))
        .expect("starts");
    let shutdown = CancellationToken::new();
    InProc {
        ops: server.ops(),
        udp: server.net().udp_addrs[0],
        http: server.http_addr().unwrap(),
        admin: server.admin_addr().unwrap(),
        metrics: server.metrics_addr().unwrap(),
        served: Some(rt.spawn(server.serve(shutdown.clone()))),
        shutdown,
        rt,
        config,
        dir,
    }
}

impl InProc {
    /// Whether `serve` has returned (the drain is over and everything stopped).
    fn stopped(&self) -> bool {
        self.served.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.ops.stop_now();
        if let Some(h) = self.served.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), h).await });
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait (bounded) for `cond`.
fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_show_relayed_traffic_in_both_directions_live() {
    let n = in_process(CONFIG, |_| {});
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
fn reload_takes_new_users_and_rejects_an_invalid_file() {
    let n = in_process(CONFIG, |_| {});
    let c = UdpClient::new(n.udp);
    let nonce = c.nonce();
    assert_eq!(
        error_code(&c.ask(&allocate_req("carol", "pw2", &nonce))),
        Some(401)
    );
    std::fs::write(
        &n.config,
        CONFIG.replace("[\"alice:secret\"]", "[\"alice:secret\", \"carol:pw2\"]"),
    )
    .unwrap();
    n.ops.reload().expect("applied");
    UdpClient::new(n.udp).allocate("carol", "pw2");
    // An invalid file: rejected with the key and line, the running config stays.
    std::fs::write(&n.config, "users = [\"nocolon\"]\nbogus-key = 1\n").unwrap();
    let e = n.ops.reload().unwrap_err();
    assert!(e.contains("bogus-key") && e.contains("line 2"), "{e}");
    UdpClient::new(n.udp).allocate("carol", "pw2");
    assert!(!e.contains("pw2"), "no passwords in errors: {e}");
}

/// With no `auth-secrets` the server runs on a generated secret. A reload must still take the
/// file's new users; only the generated secret is kept (browsers hold credentials from it).
#[test]
fn reload_with_the_generated_secret_takes_new_users_and_keeps_the_secret() {
    let n = in_process("users = [\"alice:secret\"]\n", |_| {});
    let (code, body) = http(n.http, "GET", "/api/ice-servers", None, "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let turn = &v["iceServers"][1];
    let (web_user, web_pass) = (
        turn["username"].as_str().unwrap().to_owned(),
        turn["credential"].as_str().unwrap().to_owned(),
    );
    std::fs::write(&n.config, "users = [\"alice:secret\", \"carol:pw\"]\n").unwrap();
    n.ops.reload().expect("applied");
    let c = UdpClient::new(n.udp);
    let nonce = c.nonce();
    assert_eq!(
        error_code(&c.ask(&allocate_req("carol", "pw", &nonce))),
        None,
        "the user added to the file"
    );
    UdpClient::new(n.udp).allocate("alice", "secret");
    UdpClient::new(n.udp).allocate(&web_user, &web_pass);
    // And a user removed from the file is gone.
    std::fs::write(&n.config, "users = [\"carol:pw\"]\n").unwrap();
    n.ops.reload().expect("applied");
    let c = UdpClient::new(n.udp);
    let nonce = c.nonce();
    assert_eq!(
        error_code(&c.ask(&allocate_req("alice", "secret", &nonce))),
        Some(401)
    );
}

#[test]
fn admin_api_requires_the_token_and_acts() {
    let n = in_process(CONFIG, |_| {});
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
    let path = format!("/admin/allocations/{id}");
    assert_eq!(http(n.admin, "DELETE", &path, Some(TOKEN), "").0, 200);
    assert_eq!(http(n.admin, "DELETE", &path, Some(TOKEN), "").0, 404);
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
    std::fs::write(&n.config, "bogus-key = 1\n").unwrap();
    let (code, body) = http(n.admin, "POST", "/admin/reload", Some(TOKEN), "");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("bogus-key") && body.contains("\"applied\":false"),
        "{body}"
    );
    // The admin listener is not the public page: no admin routes on the HTTP listener.
    assert_eq!(
        http(n.http, "GET", "/admin/allocations", Some(TOKEN), "").0,
        404
    );
}

#[test]
fn shutdown_drains_live_allocations_then_stops() {
    let n = in_process(CONFIG, |s| s.drain_seconds = Some(2));
    let c = UdpClient::new(n.udp);
    c.allocate("alice", "secret");
    let t0 = Instant::now();
    n.shutdown.cancel();
    std::thread::sleep(Duration::from_millis(300));
    // Draining: not ready, and new allocations are refused while the old one lives.
    assert_eq!(http(n.metrics, "GET", "/readyz", None, "").0, 503);
    let c2 = UdpClient::new(n.udp);
    let nonce = c2.nonce();
    let r = c2.ask(&allocate_req("alice", "secret", &nonce));
    assert_eq!(error_code(&r), Some(508));
    wait_for("stops after the drain", Duration::from_secs(8), || {
        n.stopped()
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(1800),
        "waited for the live allocation"
    );
    assert!(
        TcpStream::connect(n.metrics).is_err(),
        "HTTP listeners closed"
    );
}

#[test]
fn shutdown_without_allocations_does_not_wait_for_the_drain() {
    let n = in_process(CONFIG, |s| s.drain_seconds = Some(30));
    n.shutdown.cancel();
    wait_for("stops at once", Duration::from_secs(5), || n.stopped());
}

#[test]
fn stop_now_cuts_the_drain_short() {
    let n = in_process(CONFIG, |s| s.drain_seconds = Some(30));
    UdpClient::new(n.udp).allocate("alice", "secret");
    n.shutdown.cancel();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!n.stopped(), "draining while the allocation lives");
    n.ops.stop_now();
    wait_for("stops quickly", Duration::from_secs(5), || n.stopped());
}

/// `SO_REUSEPORT` would let a second server join the first one's port and split its traffic;
/// it must be refused, naming the port, and servers on other ports must run side by side.
#[test]
fn a_second_server_on_a_taken_port_is_refused_naming_it() {
    let first = in_process(CONFIG, |_| {});
    let port = first.udp.port();
    let taken = first.udp;
    let cfg = |listen: SocketAddr| {
        ValidConfig::load(
            None,
            Settings {
                listen: vec![listen],
                users: vec!["alice:secret".parse().unwrap()],
                threads: Some(2),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let Err(e) = natpass::net::start(&cfg(taken)) else {
        panic!("a second server started on the taken port {port}");
    };
    let msg = e.to_string();
    assert!(
        msg.contains(&port.to_string()) && msg.contains("in use"),
        "{msg}"
    );
    // The first one still answers alone.
    UdpClient::new(taken).allocate("alice", "secret");
    // A TCP-only (TLS) listener port taken by another program is refused too.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = temp_dir("ops-tls");
    let (cert, key, _) = make_cert(&dir, "t", &["localhost"]);
    let mut c = cfg("127.0.0.1:0".parse().unwrap());
    c.tls_listen = vec![tcp.local_addr().unwrap()];
    c.tls_files = Some((cert, key));
    let Err(e) = natpass::net::start(&c) else {
        panic!("a server started on a taken TLS port");
    };
    assert!(
        e.to_string()
            .contains(&tcp.local_addr().unwrap().port().to_string()),
        "{e}"
    );
    // A different port: both run.
    let second = natpass::net::start(&cfg("127.0.0.1:0".parse().unwrap())).expect("starts");
    assert_ne!(second.udp_addrs[0].port(), port);
    UdpClient::new(second.udp_addrs[0]).allocate("alice", "secret");
    UdpClient::new(taken).allocate("alice", "secret");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary's signals: SIGHUP reloads (a new user works; an invalid file is logged and
/// rejected, and no password reaches the log), the first SIGTERM drains, a second signal exits
/// at once with status 0.
#[test]
fn sighup_reloads_users_and_rejects_an_invalid_file() {
    let mut n = start(CONFIG, &["--drain-seconds", "30"]);
    assert_eq!(http(n.http, "GET", "/healthz", None, "").0, 200);
    // SIGHUP: a new user works without a restart.
    let c = UdpClient::new(n.udp);
    let nonce = c.nonce();
    assert_eq!(
        error_code(&c.ask(&allocate_req("carol", "pw2", &nonce))),
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
    UdpClient::new(n.udp).allocate("carol", "pw2");
    let log = std::fs::read_to_string(&n.stderr_file).unwrap();
    assert!(
        log.contains("invalid") && log.contains("running one stays"),
        "{log}"
    );
    assert!(
        !log.contains("pw2") && !log.contains("secret\""),
        "no passwords in logs"
    );
    // SIGTERM: draining (not ready, new allocations refused) while allocations live.
    let t0 = Instant::now();
    Command::new("kill")
        .args(["-TERM", &n.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http(n.metrics, "GET", "/readyz", None, "").0, 503);
    let c3 = UdpClient::new(n.udp);
    let nonce = c3.nonce();
    assert_eq!(
        error_code(&c3.ask(&allocate_req("alice", "secret", &nonce))),
        Some(508)
    );
    assert!(n.child.try_wait().unwrap().is_none(), "still draining");
    // A second signal: exit at once.
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
    assert!(status.success(), "{status:?}");
}

/// The binary: a second `natpass serve` on the same STUN/TURN port, with HTTP ports of its
/// own, exits with a message naming the port instead of sharing it.
#[test]
fn a_second_natpass_on_the_same_port_exits_naming_it() {
    let n = start(CONFIG, &[]);
    let second_err = n.dir.join("second.log");
    let mut second = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args(["serve", "--listen", &n.udp.to_string(), "--user", "a:b"])
        .args(["--http", "127.0.0.1:0", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&second_err).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let exited = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(5) {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&second_err).unwrap();
    assert!(
        exited.is_some_and(|s| !s.success()),
        "a second server started on the same port: {exited:?} {err}"
    );
    assert!(
        err.contains(&format!("port {}", n.udp.port())) && err.contains("in use"),
        "{err}"
    );
    UdpClient::new(n.udp).allocate("alice", "secret");
    // Another port: both run side by side.
    let mut other = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args(["serve", "--listen", "127.0.0.1:0", "--user", "a:b"])
        .args(["--http", "127.0.0.1:0", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let still = other.try_wait().unwrap().is_none();
    let _ = other.kill();
    let _ = other.wait();
    assert!(still, "a natpass on another port runs beside the first");
    UdpClient::new(n.udp).allocate("alice", "secret");
}

/// `natpass::run` is the whole lifecycle: it serves until the token is cancelled, then
/// returns; a start failure comes back as an error instead.
#[test]
fn run_serves_until_the_token_is_cancelled() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = |listen: &str| Settings {
        listen: vec![listen.parse().unwrap()],
        http: loopback0(),
        users: vec!["alice:secret".parse().unwrap()],
        threads: Some(1),
        ..Default::default()
    };
    let token = CancellationToken::new();
    let cfg = ValidConfig::load(None, settings("127.0.0.1:0")).unwrap();
    rt.block_on(async {
        let served = tokio::spawn(natpass::run(cfg, token.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!served.is_finished(), "serving");
        token.cancel();
        let res = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert!(matches!(res, Ok(Ok(Ok(())))), "returns once cancelled");
    });
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = ValidConfig::load(None, settings(&taken.local_addr().unwrap().to_string())).unwrap();
    let res = rt.block_on(natpass::run(cfg, CancellationToken::new()));
    assert!(
        matches!(res, Err(natpass::lifecycle::RunError::Start(_))),
        "{res:?}"
    );
}

#[test]
fn a_draining_server_sends_new_allocations_to_an_alternate_server() {
    let alt: std::net::SocketAddr = "127.0.0.1:3479".parse().unwrap();
    let n = in_process(CONFIG, |s| {
        s.drain_seconds = Some(2);
        s.alternate_servers = vec![alt];
    });
    let c = UdpClient::new(n.udp);
    c.allocate("alice", "secret");
    n.shutdown.cancel();
    std::thread::sleep(Duration::from_millis(300));
    let c2 = UdpClient::new(n.udp);
    let nonce = c2.nonce();
    let r = c2.ask(&allocate_req("alice", "secret", &nonce));
    assert_eq!(error_code(&r), Some(300), "300 Try Alternate");
    let msg = stun_types::message::Message::from_bytes(&r).unwrap();
    let a: stun_types::attribute::AlternateServer = msg.attribute().expect("ALTERNATE-SERVER");
    assert_eq!(a.server(), alt);
    wait_for("stops after the drain", Duration::from_secs(8), || {
        n.stopped()
    });
}

#[test]
fn the_sfu_starts_with_the_demo_and_shows_on_metrics() {
    let n = in_process(CONFIG, |_| {});
    let (code, text) = http(n.metrics, "GET", "/metrics", None, "");
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "natpass_sfu_participants"), 0.0, "{text}");
    assert_eq!(metric(&text, "natpass_sfu_forwarded_packets_total"), 0.0);
    drop(n);
    let off = in_process(CONFIG, |s| s.sfu = Some(false));
    let (_, text) = http(off.metrics, "GET", "/metrics", None, "");
    assert!(!text.contains("natpass_sfu_"), "no SFU, no SFU metrics");
}

#[test]
fn a_taken_sfu_port_is_refused_naming_the_key() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = ValidConfig::load(
        None,
        Settings {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            http: loopback0(),
            sfu_listen: Some(taken.local_addr().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(Server::start(cfg, None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sfu-listen") && e.contains(&taken.local_addr().unwrap().to_string()),
        "{e}"
    );
}
