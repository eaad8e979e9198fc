//! The probes, run as the `natpass` binary, against natpass and against coturn (a server
//! nobody here wrote), plus their error paths.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Output};

fn natpass(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args(args)
        .output()
        .expect("runs")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Servers to probe: natpass, and coturn when installed. (name, address, guard)
fn servers() -> Vec<(&'static str, String, Box<dyn std::any::Any>)> {
    let mut v: Vec<(&'static str, String, Box<dyn std::any::Any>)> = Vec::new();
    let n = start_server(alice_loopback());
    v.push(("natpass", n.udp_addrs[0].to_string(), Box::new(n)));
    if let Some(c) = coturn(&[]) {
        v.push(("coturn", format!("127.0.0.1:{}", c.port), Box::new(c)));
    }
    v
}

#[test]
fn probe_stun_reports_mapped_address_on_both_servers() {
    for (name, addr, _g) in servers() {
        let out = natpass(&["probe", "stun", &addr, "--count", "2", "--json"]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = json(&out);
        assert_eq!(j["results"].as_array().unwrap().len(), 2, "{name}");
        let mapped = j["results"][0]["mapped"].as_str().unwrap();
        assert_eq!(
            mapped,
            j["local"].as_str().unwrap().replace("0.0.0.0", "127.0.0.1"),
            "{name}"
        );
        assert_eq!(j["results"][0]["from"].as_str().unwrap(), addr, "{name}");
        // The stun: URL form and text output.
        let out = natpass(&["probe", "stun", &format!("stun:{addr}")]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("mapped 127.0.0.1:"),
            "{name}"
        );
    }
}

#[test]
fn probe_turn_relays_with_channel_and_with_indications_on_both_servers() {
    for (name, addr, _g) in servers() {
        for extra in [&[][..], &["--no-channel"][..]] {
            let mut args = vec![
                "probe",
                "turn",
                &addr,
                "--user",
                "alice",
                "--password",
                "secret",
                "--count",
                "20",
                "--rate",
                "200",
                "--json",
            ];
            args.extend_from_slice(extra);
            let out = natpass(&args);
            assert!(
                out.status.success(),
                "{name} {extra:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let j = json(&out);
            assert_eq!(j["lost"], 0, "{name} {extra:?}");
            assert_eq!(j["received"], 20, "{name} {extra:?}");
            assert!(
                j["relayed"][0].as_str().unwrap().starts_with("127.0.0.1:"),
                "{name}"
            );
            assert_eq!(j["channel"], extra.is_empty());
        }
    }
}

#[test]
fn probe_turn_over_tcp_against_coturn() {
    let Some(c) = coturn(&[]) else { return };
    let addr = format!("turn:127.0.0.1:{}?transport=tcp", c.port);
    let out = natpass(&[
        "probe",
        "turn",
        &addr,
        "--user",
        "alice",
        "--password",
        "secret",
        "--count",
        "10",
        "--rate",
        "200",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&out);
    assert_eq!(
        (j["transport"].as_str(), j["lost"].as_u64()),
        (Some("tcp"), Some(0))
    );
}

#[test]
fn probe_turn_with_rest_secret_against_both_servers() {
    let mut o = alice_loopback();
    o.auth_secrets = vec!["rest-s".parse().unwrap()];
    let n = start_server(o);
    let mut targets = vec![(n.udp_addrs[0].to_string(), None)];
    let c = coturn(&["use-auth-secret", "static-auth-secret=rest-s"]);
    if let Some(c) = &c {
        targets.push((format!("127.0.0.1:{}", c.port), Some(())));
    }
    for (addr, _) in targets {
        let out = natpass(&[
            "probe", "turn", &addr, "--secret", "rest-s", "--user", "probe", "--count", "5",
            "--rate", "200", "--json",
        ]);
        assert!(
            out.status.success(),
            "{addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json(&out)["lost"], 0);
    }
}

#[test]
fn probe_nat_reports_endpoint_independent_mapping_on_loopback() {
    let mut o = alice_loopback();
    o.alt_listen = Some("127.0.0.2:0".parse().unwrap());
    let n = start_server(o);
    let mut targets = vec![n.udp_addrs[0].to_string()];
    let c = coturn(&[]);
    if let Some(c) = &c {
        targets.push(format!("127.0.0.1:{}", c.port));
    }
    for addr in targets {
        let out = natpass(&["probe", "nat", &addr, "--json"]);
        assert!(
            out.status.success(),
            "{addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = json(&out);
        assert_eq!(j["mapping"], "endpoint-independent", "{addr}: {j}");
        assert_eq!(j["filtering"], "endpoint-independent", "{addr}: {j}");
        assert_eq!(j["behind_nat"], false);
        assert!(
            j["other_address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.2:"),
            "{addr}: {j}"
        );
    }
    // Without an alternate address natpass is a plain RFC 8489 server: no OTHER-ADDRESS.
    let plain = start_server(alice_loopback());
    let out = natpass(&["probe", "nat", &plain.udp_addrs[0].to_string(), "--json"]);
    let j = json(&out);
    assert!(j["other_address"].is_null());
    assert!(
        j["verdict"]
            .as_str()
            .unwrap()
            .contains("does not support RFC 5780")
    );
}

#[test]
fn probe_load_drives_both_servers_over_udp_and_tcp() {
    for (name, addr, _g) in servers() {
        for transport in ["udp", "tcp"] {
            let args = [
                "probe",
                "load",
                &addr,
                "--user",
                "alice",
                "--password",
                "secret",
                "--allocations",
                "5",
                "--rate",
                "2000",
                "--duration",
                "1",
                "--transport",
                transport,
                "--json",
            ];
            let out = natpass(&args);
            let what = format!("{name} over {transport}");
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let j = json(&out);
            let sent = j["sent"].as_u64().unwrap();
            assert!(sent >= 1500, "{what}: {j}");
            assert_eq!(j["allocations"], 5);
            assert!(
                j["received"].as_u64().unwrap() >= sent * 99 / 100,
                "{what}: {j}"
            );
            assert!(j["latency_us"]["p50"].as_u64().unwrap() > 0);
        }
    }
}

#[test]
fn probe_errors_are_clear_with_nonzero_exit() {
    let n = start_server(alice_loopback());
    let addr = n.udp_addrs[0].to_string();
    let out = natpass(&[
        "probe",
        "turn",
        &addr,
        "--user",
        "alice",
        "--password",
        "wrong",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401 Unauthorized (") && err.contains("wrong username/password"),
        "{err}"
    );
    assert!(!err.contains("  "), "no double space: {err}");
    // Denied peer: 403 with its meaning.
    let out = natpass(&[
        "probe",
        "turn",
        &addr,
        "--user",
        "alice",
        "--password",
        "secret",
        "--peer",
        "10.1.2.3:9",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") && err.contains("policy"), "{err}");
    // Unreachable server: a timeout that says so.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    let out = natpass(&["probe", "stun", &dead_addr]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no response"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Bad server names.
    let out = natpass(&["probe", "stun", "turn:"]);
    assert!(!out.status.success());
    let out = natpass(&["probe", "turn", &addr]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password"));
}

#[test]
fn credential_and_peer_subcommands_work_together() {
    let o = natpass::config::Overrides {
        auth_secrets: vec!["abc".parse().unwrap()],
        allow_peers: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    let n = start_server(o);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut peer = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args(["peer", "--listen", &listen])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cred = natpass(&["credential", "--secret", "abc", "--user", "x"]);
    let text = String::from_utf8_lossy(&cred.stdout);
    let user = text
        .lines()
        .find_map(|l| l.strip_prefix("username: "))
        .unwrap()
        .to_owned();
    let pass = text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();
    let out = natpass(&[
        "probe",
        "turn",
        &n.udp_addrs[0].to_string(),
        "--user",
        &user,
        "--password",
        &pass,
        "--peer",
        &listen,
        "--count",
        "5",
        "--rate",
        "100",
        "--json",
    ]);
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["lost"], 0);
}

#[test]
fn server_names_parse_in_every_documented_form() {
    use natpass::probe::{ProbeTransport, parse_server};
    let s = parse_server("127.0.0.1").unwrap();
    assert_eq!(s.addr.port(), 3478);
    let s = parse_server("turns:127.0.0.1").unwrap();
    assert_eq!(
        (s.addr.port(), s.transport),
        (5349, Some(ProbeTransport::Tls))
    );
    let s = parse_server("turn:127.0.0.1:3479?transport=tcp").unwrap();
    assert_eq!(
        (s.addr.port(), s.transport),
        (3479, Some(ProbeTransport::Tcp))
    );
    let s = parse_server("[::1]:4000").unwrap();
    assert_eq!(s.addr.to_string(), "[::1]:4000");
    let s = parse_server("stun:[::1]").unwrap();
    assert_eq!(s.addr.port(), 3478);
    assert!(parse_server("turn:127.0.0.1?transport=sctp").is_err());
    assert!(parse_server("127.0.0.1:notaport").is_err());
}

#[test]
fn probes_over_tcp_and_tls_against_natpass() {
    let dir = temp_dir("probe-tls");
    let (cert, key, _) = make_cert(&dir, "s", &["localhost"]);
    let mut o = alice_loopback();
    o.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    o.tls_cert = Some(cert.clone());
    o.tls_key = Some(key);
    let n = start_server(o);
    let tcp = format!("turn:127.0.0.1:{}?transport=tcp", n.tcp_addrs[0].port());
    let tls = format!("turns:localhost:{}", n.tls_addrs[0].port());
    let ca = cert.to_str().unwrap();
    let out = natpass(&["probe", "stun", &tcp, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["transport"], "tcp");
    for (target, extra) in [(&tcp, vec![]), (&tls, vec!["--ca", ca])] {
        let mut args = vec![
            "probe",
            "turn",
            target.as_str(),
            "--user",
            "alice",
            "--password",
            "secret",
            "--count",
            "10",
            "--rate",
            "200",
            "--json",
        ];
        args.extend(extra);
        let out = natpass(&args);
        assert!(
            out.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json(&out)["lost"], 0, "{target}");
    }
    // The load generator over TLS (issue 17): a session per allocation, ChannelData framed.
    let out = natpass(&[
        "probe",
        "load",
        &tls,
        "--transport",
        "tls",
        "--ca",
        ca,
        "--user",
        "alice",
        "--password",
        "secret",
        "--allocations",
        "5",
        "--rate",
        "2000",
        "--duration",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "load over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&out);
    assert!(j["sent"].as_u64().unwrap() >= 1500, "{j}");
    assert_eq!(j["lost"], 0, "{j}");
    assert_eq!(j["allocations"], 5);
    // Without trusting the self-signed certificate the probe says why it fails.
    let out = natpass(&["probe", "stun", &tls]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    let out = natpass(&["probe", "stun", &tls, "--insecure", "--json"]);
    assert!(out.status.success());
    assert_eq!(json(&out)["transport"], "tls");
    let _ = std::fs::remove_dir_all(dir);
}

/// The credentials `turnutils_uclient -W` and most web apps mint (valid for a day) work on a
/// default server; a 401 to a REST credential says whether it expired or is too far ahead;
/// `natpass credential` warns when its `--ttl` is above the server's limit.
#[test]
fn rest_credentials_valid_for_a_day_work_and_refusals_name_their_cause() {
    let mut o = alice_loopback();
    o.auth_secrets = vec!["day-s".parse().unwrap()];
    let n = start_server(o);
    let addr = n.udp_addrs[0].to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secret: natpass::auth::Secret = "day-s".parse().unwrap();
    let probe = |user: &str, pass: &str| {
        natpass(&[
            "probe",
            "turn",
            &addr,
            "--user",
            user,
            "--password",
            pass,
            "--count",
            "3",
            "--rate",
            "100",
        ])
    };
    let (u, p) = natpass::auth::mint_rest(&secret, "app", 86_400, now);
    let out = probe(&u, &p);
    assert!(
        out.status.success(),
        "a day-long credential: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (u, p) = natpass::auth::mint_rest(&secret, "app", 90_000, now);
    let err = String::from_utf8_lossy(&probe(&u, &p).stderr).into_owned();
    assert!(
        err.contains("401") && err.contains("too far in the future") && !err.contains("expired"),
        "{err}"
    );
    let (u, p) = natpass::auth::mint_rest(&secret, "app", 0, now - 100);
    let err = String::from_utf8_lossy(&probe(&u, &p).stderr).into_owned();
    assert!(err.contains("401") && err.contains("expired"), "{err}");

    let warned = natpass(&[
        "credential",
        "--secret",
        "s",
        "--user",
        "x",
        "--ttl",
        "90000",
    ]);
    assert!(warned.status.success());
    let w = String::from_utf8_lossy(&warned.stderr);
    assert!(w.contains("warning") && w.contains("86400"), "{w}");
    let quiet = natpass(&[
        "credential",
        "--secret",
        "s",
        "--user",
        "x",
        "--ttl",
        "86400",
    ]);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let dir = temp_dir("cred-ttl");
    let file = dir.join("server.toml");
    std::fs::write(&file, "rest-max-ttl = 600\n").unwrap();
    let warned = natpass(&[
        "credential",
        "--secret",
        "s",
        "--user",
        "x",
        "--ttl",
        "601",
        "--config",
        file.to_str().unwrap(),
    ]);
    let w = String::from_utf8_lossy(&warned.stderr);
    assert!(w.contains("warning") && w.contains("600 s"), "{w}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `probe load` deletes its allocations when it fails part-way (486 at the user's quota of
/// 10) and when it is interrupted (SIGINT, SIGTERM): right after, the same user can allocate.
/// `--media`: paced like calls (issue 17). 10 allocations × (6 video packets of 1,100 B at
/// 30 frames/s + 50 audio packets of 100 B) = 2,300 messages per second and 16.24 Mbit/s of
/// payload one way, on natpass and on coturn.
#[test]
fn probe_load_paces_like_calls_with_media() {
    for (name, addr, _g) in servers() {
        let out = natpass(&[
            "probe",
            "load",
            &addr,
            "--user",
            "alice",
            "--password",
            "secret",
            "--allocations",
            "10",
            "--media",
            "1.5",
            "--size",
            "1100",
            "--duration",
            "2",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = json(&out);
        assert_eq!(j["offered_rate"], 2300.0, "{name}: {j}");
        assert_eq!(j["media_mbit"], 1.5, "{name}: {j}");
        let sent = j["sent"].as_u64().unwrap();
        assert!((4300..=4700).contains(&sent), "{name}: {j}");
        assert_eq!(j["lost"], 0, "{name}: {j}");
        let mbit = j["achieved_mbit"].as_f64().unwrap();
        assert!((14.5..=18.0).contains(&mbit), "{name}: {j}");
    }
    // Media pacing is for channels (an audio packet is the frame cut short).
    let out = natpass(&[
        "probe",
        "load",
        "127.0.0.1:9",
        "--media",
        "1",
        "--no-channel",
    ]);
    assert!(!out.status.success());
}

#[test]
fn probe_load_frees_the_users_quota_after_failing_or_being_interrupted() {
    let n = start_server(alice_loopback());
    let addr = n.udp_addrs[0].to_string();
    let turn_works = |when: &str| {
        let out = natpass(&[
            "probe",
            "turn",
            &addr,
            "--user",
            "alice",
            "--password",
            "secret",
            "--count",
            "2",
            "--rate",
            "100",
        ]);
        assert!(
            out.status.success(),
            "{when}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let load = |allocations: &str, duration: &str| {
        vec![
            "probe".to_owned(),
            "load".into(),
            addr.clone(),
            "--user".into(),
            "alice".into(),
            "--password".into(),
            "secret".into(),
            "--allocations".into(),
            allocations.into(),
            "--rate".into(),
            "200".into(),
            "--duration".into(),
            duration.into(),
        ]
    };
    // Failing part-way: 12 allocations against a quota of 10.
    let out = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args(load("12", "1"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("486"), "{err}");
    turn_works("after a load that failed with 486");
    // `probe turn` failing after its Allocate (403 for a denied peer), more times than the quota.
    for _ in 0..11 {
        let out = natpass(&[
            "probe",
            "turn",
            &addr,
            "--user",
            "alice",
            "--password",
            "secret",
            "--peer",
            "10.1.2.3:9",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("403"), "{err}");
    }
    turn_works("after eleven probe turn runs that failed with 403");
    // Interrupted while sending, by either signal.
    for signal in ["-INT", "-TERM"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natpass"))
            .args(load("10", "60"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let pid = child.id().to_string();
        let killed = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("probe load did not stop within 10 s of {signal}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(130), "{signal}: {err}");
        assert!(err.contains("interrupted"), "{signal}: {err}");
        turn_works(&format!("after a load interrupted by {signal}"));
    }
}

/// On a default server (no users, a generated secret, loopback peers denied) `probe turn`
/// says in one line what to do; progress shows as it happens (each Binding as it is answered
/// or given up on; on a terminal, each TURN step and a live line of `probe load`).
#[test]
fn probe_turn_explains_the_first_run_and_probes_show_progress() {
    let n = start_server(natpass::config::Overrides::default());
    let addr = n.udp_addrs[0].to_string();
    let out = natpass(&["probe", "turn", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--auth-secret") && err.lines().count() == 1,
        "{err}"
    );
    let o = natpass::config::Overrides {
        auth_secrets: vec!["first".parse().unwrap()],
        ..Default::default()
    };
    let n = start_server(o);
    let addr = n.udp_addrs[0].to_string();
    let out = natpass(&["probe", "turn", &addr, "--secret", "first"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--allow-peer 127.0.0.0/8")
            && err.contains("--peer")
            && err.lines().count() == 1,
        "{err}"
    );

    // A dead port: the first Binding's outcome shows before the other two are tried.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .args(["probe", "stun", &dead_addr, "--count", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(10));
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let first = first.expect("a line within 10 s");
    assert!(
        first.contains("binding 1/3") && first.contains("no response") && still_running,
        "{first}"
    );

    // On a terminal (`script` gives the probe one): TURN steps and the load's live line.
    if Command::new("script").arg("--version").output().is_err() {
        return;
    }
    let mut o = alice_loopback();
    o.listen = vec![];
    let n = start_server(o);
    let addr = n.udp_addrs[0].to_string();
    let bin = env!("CARGO_BIN_EXE_natpass");
    let on_tty = |cmd: String| {
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = on_tty(format!(
        "{bin} probe turn {addr} --user alice --password secret --count 3 --rate 100"
    ));
    for step in [
        "allocating",
        "allocated 127.0.0.1:",
        "permission for peer",
        "echoing 3",
    ] {
        assert!(text.contains(step), "`{step}` not in:\n{text}");
    }
    let text = on_tty(format!(
        "{bin} probe load {addr} --user alice --password secret --allocations 2 --rate 200 --duration 1.2"
    ));
    assert!(
        text.contains("setup: 2/2 allocations") && text.contains("s: sent "),
        "{text}"
    );
}

/// Every command's errors begin the same way; a refused TCP connection names the address;
/// JSON figures have no binary float noise; `credential --json` without `--uri` is an error.
#[test]
fn errors_share_one_prefix_and_reports_are_clean() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = natpass(&["probe", "stun", &closed_addr, "--transport", "tcp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("natpass: error: ") && err.contains(&closed_addr),
        "{err}"
    );
    let out = natpass(&["credential", "--secret", "s", "--user", "x", "--json"]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--uri"));
    // The same prefix from check-config, serve and peer.
    let dir = temp_dir("prefix");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "realm = \"\"\n").unwrap();
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let held_addr = held.local_addr().unwrap().to_string();
    for args in [
        vec!["check-config", bad.to_str().unwrap()],
        vec!["serve", "--config", bad.to_str().unwrap()],
        vec!["peer", "--listen", &held_addr],
        vec!["probe", "turn", &closed_addr],
    ] {
        let out = natpass(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.starts_with("natpass: error: "), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // JSON: three decimals at most, whatever the measured times.
    let n = start_server(alice_loopback());
    let addr = n.udp_addrs[0].to_string();
    fn noisy(v: &Value) -> bool {
        match v {
            Value::Number(n) => n
                .to_string()
                .split_once('.')
                .is_some_and(|(_, frac)| frac.len() > 3),
            Value::Array(a) => a.iter().any(noisy),
            Value::Object(o) => o.values().any(noisy),
            _ => false,
        }
    }
    for args in [
        vec!["probe", "stun", &addr, "--count", "3", "--json"],
        vec![
            "probe",
            "turn",
            &addr,
            "--user",
            "alice",
            "--password",
            "secret",
            "--count",
            "10",
            "--rate",
            "200",
            "--json",
        ],
        vec![
            "probe",
            "load",
            &addr,
            "--user",
            "alice",
            "--password",
            "secret",
            "--allocations",
            "2",
            "--rate",
            "300",
            "--duration",
            "0.7",
            "--json",
        ],
    ] {
        let out = natpass(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = json(&out);
        assert!(!noisy(&j), "{args:?}: {j}");
    }
}
