//! Certificates from ACME against a real ACME server on loopback: Debian's `pebble` (its own
//! test CA) with `pebble-challtestsrv` as its DNS, which answers every name with 127.0.0.1.
//! natpass serves the page and TURN over TLS on one port with `--domain`, answers pebble's
//! TLS-ALPN-01 validation on that port, serves the issued certificate on HTTPS and `turns:`,
//! renews it without a restart (forced: `acme-renew-days` beyond pebble's 5-year
//! certificates, checked every 2 s), and keeps serving it when the CA goes away.
//! Skipped with a message when the tools are missing, except in CI.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// A CA and a certificate it signed for 127.0.0.1 (pebble's own API is HTTPS).
fn pebble_api_cert(dir: &Path) {
    let d = dir.display();
    let out = sh(&format!(
        "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=test-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
         && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout api-key.pem \
         -out api.csr -subj /CN=pebble \
         && printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf \
         && openssl x509 -req -in api.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
         -out api-cert.pem -days 2 -extfile ext.cnf && echo made"
    ));
    assert!(out.contains("made"), "{out}");
}

fn wait_tcp(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const NAME: &str = "turn.natpass.test";

/// The serial of the certificate served on `port` for NAME, verified against `root`, with
/// `alpn` offered; None when it does not verify.
fn served_serial(port: u16, root: &Path, alpn: &str) -> Option<String> {
    let out = sh(&format!(
        "timeout 10 openssl s_client -connect 127.0.0.1:{port} -servername {NAME} -alpn {alpn} \
         -CAfile {} -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial",
        root.display()
    ));
    out.trim().strip_prefix("serial=").map(str::to_owned)
}

struct Pebble {
    _dns: Proc,
    pebble: Option<Proc>,
    api: u16,
    mgmt: u16,
}

fn start_pebble(dir: &Path, tls_port: u16, http: u16) -> Pebble {
    pebble_api_cert(dir);
    let (api, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let config = dir.join("pebble.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{api}", "managementListenAddress": "127.0.0.1:{mgmt}",
            "certificate": "{d}/api-cert.pem", "privateKey": "{d}/api-key.pem",
            "httpPort": {http}, "tlsPort": {tls_port}, "ocspResponderURL": "",
            "externalAccountBindingRequired": false}}}}"#,
            d = dir.display()
        ),
    )
    .unwrap();
    let dns_proc = Command::new("pebble-challtestsrv")
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args([
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv6",
            "",
        ])
        .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv starts");
    let pebble = Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble starts");
    wait_tcp(api);
    wait_tcp(mgmt);
    Pebble {
        _dns: Proc(dns_proc),
        pebble: Some(Proc(pebble)),
        api,
        mgmt,
    }
}

fn have_tools() -> bool {
    ["pebble", "pebble-challtestsrv", "openssl", "curl"]
        .iter()
        .all(|t| have_tool(t))
}

/// natpass with `--domain NAME` on one port, its ACME directory pebble's.
fn start_natpass(dir: &Path, ca: &Pebble, port: u16, extra: &[&str]) -> (Proc, PathBuf) {
    let log = dir.join("natpass.log");
    let shared = format!("127.0.0.1:{port}");
    let np = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args(["serve", "--listen", "127.0.0.1:0", "--domain", NAME])
        .args([
            "--acme-directory",
            &format!("https://127.0.0.1:{}/dir", ca.api),
        ])
        .arg("--acme-ca-root")
        .arg(dir.join("ca.pem"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--tls-listen", &shared, "--http", &shared, "--sfu", "false"])
        .args(["--user", "alice:secret", "--log", "natpass=info"])
        .args(extra)
        .env("NATPASS_ACME_CHECK_SECONDS", "2")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Proc(np), log)
}

fn fetch_root(dir: &Path, ca: &Pebble) -> PathBuf {
    let root = dir.join("root.pem");
    let got = sh(&format!(
        "curl -sS --cacert {d}/ca.pem https://127.0.0.1:{m}/roots/0 -o {r} && echo fetched",
        d = dir.display(),
        m = ca.mgmt,
        r = root.display()
    ));
    assert!(got.contains("fetched"), "{got}");
    root
}

/// The http-01 challenge (port 80 in production; here the port pebble is told to use): the
/// certificate is issued and served on the TLS port, and the responder is gone afterwards.
#[test]
fn a_certificate_from_acme_over_http_01() {
    if !have_tools() {
        return;
    }
    let dir = temp_dir("acme-http01");
    let (port, http) = (free_port(), free_port());
    let ca = start_pebble(&dir, port, http);
    let root = fetch_root(&dir, &ca);
    let (_np, log) = start_natpass(
        &dir,
        &ca,
        port,
        &[
            "--acme-challenge",
            "http-01",
            "--acme-http-listen",
            &format!("127.0.0.1:{http}"),
        ],
    );
    let start = Instant::now();
    while served_serial(port, &root, "h2").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no certificate over http-01:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The responder listens only while a challenge is pending.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the http-01 responder stays up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_certificate_from_acme_serves_https_and_turns_on_one_port_and_renews() {
    if !have_tools() {
        return;
    }
    let dir = temp_dir("acme");
    let port = free_port();
    let mut ca = start_pebble(&dir, port, free_port());
    let root = fetch_root(&dir, &ca);
    let state = dir.join("state");
    let (_np, log) = start_natpass(
        &dir,
        &ca,
        port,
        &[
            "--acme-challenge",
            "tls-alpn-01",
            "--acme-renew-days",
            "100000",
        ],
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Issued through TLS-ALPN-01 on the shared port, then served on HTTPS and on turns:.
    let start = Instant::now();
    let first = loop {
        if let Some(s) = served_serial(port, &root, "h2") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no certificate from pebble:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // One state directory per CA, under state-dir/acme.
    let kept: PathBuf = std::fs::read_dir(state.join("acme"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a directory for pebble's account and certificate");
    for f in ["account.json", "cert.pem", "key.pem"] {
        assert!(kept.join(f).exists(), "{f} kept in the state directory");
    }
    let page = sh(&format!(
        "curl -sS --cacert {} --resolve {NAME}:{port}:127.0.0.1 https://{NAME}:{port}/healthz",
        root.display()
    ));
    assert_eq!(
        page.trim(),
        "ok",
        "the page over HTTPS with the issued certificate"
    );
    assert!(
        served_serial(port, &root, "stun.turn").is_some(),
        "turns: (ALPN stun.turn) gets the issued certificate too"
    );

    // Renewal without a restart: a new certificate is served.
    let start = Instant::now();
    let renewed = loop {
        match served_serial(port, &root, "h2") {
            Some(s) if s != first => break s,
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never renewed:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    println!("acme: issued serial {first}, renewed to {renewed}");

    // The CA goes away: renewals fail, the running certificate stays and keeps serving.
    drop(ca.pebble.take());
    let start = Instant::now();
    while !log_text().contains("the running one stays") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failed renewal logged:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let still = served_serial(port, &root, "h2").expect("a verified certificate is still served");
    let on_disk = sh(&format!(
        "openssl x509 -noout -serial -in {}",
        kept.join("cert.pem").display()
    ));
    assert_eq!(
        on_disk.trim().strip_prefix("serial="),
        Some(still.as_str()),
        "the certificate served is the last one issued"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
