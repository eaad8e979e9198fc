//! `natpass doctor` on a good configuration and on broken ones: each finding names its check
//! and its fix, and the exit status tells them apart. The public-address check asks a natpass
//! on loopback (never a public STUN server); DNS is not resolved here (`--no-dns`).

mod common;

use common::*;
use std::process::Command;

fn doctor(args: &[&str]) -> (bool, serde_json::Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .arg("doctor")
        .args(["--json", "--no-dns"])
        .args(args)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_eq!(
        v["ok"],
        o.status.success(),
        "exit status follows the findings: {v}"
    );
    (o.status.success(), v)
}

/// The findings of `check` at `level`.
fn with(v: &serde_json::Value, check: &str, level: &str) -> Vec<serde_json::Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check && f["level"] == level)
        .cloned()
        .collect()
}

fn cert_valid_until(
    dir: &std::path::Path,
    tag: &str,
    names: &[&str],
    year: i32,
) -> (String, String) {
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.not_before = rcgen::date_time_ymd(year - 2, 1, 1);
    p.not_after = rcgen::date_time_ymd(year, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{tag}-cert.pem")),
        dir.join(format!("{tag}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.display().to_string(), k.display().to_string())
}

#[test]
fn doctor_passes_a_good_configuration_and_sees_the_public_address() {
    let stun = start_server(alice_loopback());
    let dir = temp_dir("doctor-good");
    let (cert, key) = cert_valid_until(&dir, "good", &["turn.example.org"], 2099);
    let (ok, v) = doctor(&[
        "--stun-server",
        &stun.udp_addrs[0].to_string(),
        "--listen",
        "127.0.0.1:3478",
        "--tls-listen",
        "127.0.0.1:443",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--public-host",
        "turn.example.org",
        "--http",
        "127.0.0.1:8080",
        "--relay-ports",
        "50000-50100",
    ]);
    assert!(ok, "{v:#}");
    let seen = with(&v, "public-address", "ok");
    assert!(
        seen[0]["message"].as_str().unwrap().contains("127.0.0.1"),
        "{v:#}"
    );
    assert_eq!(with(&v, "certificate", "ok").len(), 1, "{v:#}");
    assert_eq!(with(&v, "relay-ports", "ok").len(), 1, "{v:#}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn doctor_names_what_is_broken_and_how_to_fix_it() {
    let dir = temp_dir("doctor-bad");
    // An expired certificate, and one that does not name the host browsers use.
    let (old, old_key) = cert_valid_until(&dir, "old", &["turn.example.org"], 2021);
    let (ok, v) = doctor(&[
        "--stun-server",
        "none",
        "--tls-listen",
        "127.0.0.1:5349",
        "--tls-cert",
        &old,
        "--tls-key",
        &old_key,
    ]);
    assert!(!ok);
    let e = with(&v, "certificate", "error");
    assert!(
        e[0]["message"].as_str().unwrap().contains("expired"),
        "{v:#}"
    );
    assert!(!e[0]["fix"].as_str().unwrap().is_empty());

    let (other, other_key) = cert_valid_until(&dir, "other", &["localhost"], 2099);
    let (ok, v) = doctor(&[
        "--stun-server",
        "none",
        "--tls-listen",
        "127.0.0.1:5349",
        "--tls-cert",
        &other,
        "--tls-key",
        &other_key,
        "--http",
        "127.0.0.1:8080",
        "--public-host",
        "turn.example.org",
    ]);
    assert!(!ok);
    let e = with(&v, "certificate", "error");
    assert!(
        e[0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid for turn.example.org"),
        "{v:#}"
    );

    // A TURN port browsers refuse, and relay ports another program holds: warnings only.
    let held: Vec<std::net::UdpSocket> = (40100..40104)
        .filter_map(|p| std::net::UdpSocket::bind(("0.0.0.0", p)).ok())
        .collect();
    assert_eq!(held.len(), 4, "the test needs 40100-40103 free");
    let (ok, v) = doctor(&[
        "--stun-server",
        "none",
        "--listen",
        "127.0.0.1:99",
        "--relay-ports",
        "40100-40103",
    ]);
    assert!(ok, "warnings do not fail: {v:#}");
    assert!(
        with(&v, "ports", "warn")[0]["message"]
            .as_str()
            .unwrap()
            .contains("port 99"),
        "{v:#}"
    );
    assert!(
        with(&v, "relay-ports", "warn")[0]["message"]
            .as_str()
            .unwrap()
            .contains("4 of 4"),
        "{v:#}"
    );
    drop(held);

    // A relay address this machine does not have (bind fails; nothing is sent).
    let (ok, v) = doctor(&["--stun-server", "none", "--relay-ip", "192.0.2.7"]);
    assert!(!ok);
    assert!(!with(&v, "relay-ports", "error").is_empty(), "{v:#}");

    // A config that does not load: the key is named.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = [\"127.0.0.1:3478\"]\nrelay-portz = \"1-2\"\n",
    )
    .unwrap();
    let (ok, v) = doctor(&["--stun-server", "none", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    let e = with(&v, "config", "error");
    assert!(
        e[0]["message"].as_str().unwrap().contains("relay-portz"),
        "{v:#}"
    );

    // No STUN answer (a port where nothing listens): a warning about outgoing UDP.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_, v) = doctor(&["--stun-server", &silent.local_addr().unwrap().to_string()]);
    assert!(!with(&v, "public-address", "warn").is_empty(), "{v:#}");
    let _ = std::fs::remove_dir_all(dir);
}
