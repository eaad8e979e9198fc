//! Every example config parses and validates; `natpass check-config` reports errors with the
//! key and line and a non-zero exit; the CLI's flags exist with the documented names.

use std::process::Command;

fn natpass() -> Command {
    Command::new(env!("CARGO_BIN_EXE_natpass"))
}

#[test]
fn every_config_in_config_dir_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let f =
                natpass::config::load_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            natpass::config::ValidConfig::build(f, Default::default(), &p.display().to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let out = natpass().arg("check-config").arg(&p).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 2, "config/ holds the default and an example");
}

#[test]
fn check_config_names_the_bad_key_and_line() {
    let dir = std::env::temp_dir().join(format!("natpass-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "realm = \"x\"\nrelay-portz = \"1-2\"\n",
            &["relay-portz", "line 2"][..],
        ),
        (
            "listen = [\"127.0.0.1:3478\"]\n\nallow-peers = [\"10.0.0.0/99\"]\n",
            &["line 3", "10.0.0.0/99"][..],
        ),
        (
            "[quota]\nmax-lifetime = 100\n",
            &["quota.default-lifetime"][..],
        ),
        ("users = [\"nocolon\"]\n", &["line 1", "NAME:PASSWORD"][..]),
        ("log = \"[[[\"\n", &["log"][..]),
        (
            "realm = \"x\"\ndrain-seconds = 99999\n",
            &["drain-seconds", "line 2", "at most 3600"][..],
        ),
        (
            "tls-cert = \"/nonexistent/cert.pem\"\ntls-key = \"/nonexistent/key.pem\"\n",
            &["/nonexistent/cert.pem"][..],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = natpass().arg("check-config").arg(&p).output().unwrap();
        assert!(!out.status.success(), "case {i} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in *needles {
            assert!(err.contains(n), "case {i}: `{n}` not in:\n{err}");
        }
    }
    let out = natpass()
        .args(["check-config", "/nonexistent/natpass.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_accepts_every_documented_flag() {
    let out = natpass().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--realm",
        "--user",
        "--auth-secret",
        "--allow-peer",
        "--deny-peer",
        "--relay-ip",
        "--external-ip",
        "--relay-ports",
        "--log",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn serve_rejects_bad_flags_with_a_clear_error() {
    let out = natpass()
        .args(["serve", "--relay-ports", "70000-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("relay-ports"));
    let out = natpass()
        .args(["serve", "--user", "nopassword"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Keys that used to be file-only are flags of the same name, validated the same way.
    let out = natpass()
        .args(["serve", "--nonce-lifetime", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonce-lifetime"));
}

#[test]
fn credential_subcommand_mints_a_working_rest_pair() {
    let out = natpass()
        .args([
            "credential",
            "--secret",
            "s3cret",
            "--user",
            "web",
            "--ttl",
            "600",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let user = text
        .lines()
        .find_map(|l| l.strip_prefix("username: "))
        .unwrap();
    let pass = text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap();
    assert!(user.ends_with(":web"));
    assert_eq!(
        pass,
        natpass::auth::rest_password(&natpass::auth::Secret::new("s3cret"), user)
    );
    let out = natpass()
        .args([
            "credential",
            "--secret",
            "s",
            "--user",
            "u",
            "--json",
            "--uri",
            "turn:example.org:3478",
        ])
        .output()
        .unwrap();
    let j = String::from_utf8_lossy(&out.stdout);
    assert!(
        j.contains("\"urls\":[\"turn:example.org:3478\"]") && j.contains("\"credential\""),
        "{j}"
    );
}

#[test]
fn serve_runs_and_exits_cleanly_on_sigterm() {
    let mut child = natpass()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--user",
            "a:b",
            "--log",
            "warn",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `check-config` reports every error of a file at once, each with its key and line, and
/// rejects what `serve` could not run.
#[test]
fn check_config_reports_every_error_and_what_serve_cannot_run() {
    let dir = std::env::temp_dir().join(format!("natpass-cfg-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, &[&str])] = &[
        // Two unknown keys: both, with their lines.
        (
            "realm = \"x\"\n\nlistne = []\n\nrelay-portz = \"1-2\"\n",
            &["line 3", "`listne`", "line 5", "`relay-portz`"],
        ),
        // A listener given twice.
        (
            "listen = [\"127.0.0.1:3478\", \"127.0.0.1:3478\"]\n",
            &["line 1", "key `listen`", "twice"],
        ),
        // HTTP on the TCP port of a TURN listener.
        (
            "listen = [\"127.0.0.1:3478\"]\nhttp = \"127.0.0.1:3478\"\n",
            &["line 2", "key `http`", "TCP port"],
        ),
        ("listen = []\n", &["line 1", "key `listen`", "nowhere"]),
        ("room-size = 0\n", &["line 1", "key `room-size`"]),
        ("credential-ttl = 0\n", &["line 1", "key `credential-ttl`"]),
        (
            "[quota]\nmax-lifetime = 0\n",
            &["line 2", "key `quota.max-lifetime`"],
        ),
        // Value errors of several sections at once, each with its line.
        (
            "threads = 0\nrealm = \"x\"\nlog = \"[[[\"\n",
            &["line 1", "key `threads`", "line 3", "key `log`"],
        ),
        (
            "realm = \"x\"\ntls-cert = \"/nonexistent/c.pem\"\ntls-key = \"/nonexistent/k.pem\"\n",
            &["line 2", "key `tls-cert`", "/nonexistent/c.pem"],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = natpass().arg("check-config").arg(&p).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} accepted:\n{text}");
        for n in *needles {
            assert!(err.contains(n), "case {i}: `{n}` not in:\n{err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
