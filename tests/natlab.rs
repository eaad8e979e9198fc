//! NAT traversal in a network-namespace lab (scripts/natlab.sh): two hosts behind
//! address-and-port-dependent NATs with stateful filtering, natpass on the "public" side.
//! Needs root and `ip netns`/nftables; skips with a message elsewhere (CI runs it as root).
//! Traffic never leaves the lab's namespaces; every namespace is removed afterwards.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "npt";
const SERVER: &str = "203.0.113.1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab(args: &[&str]) -> std::process::Output {
    Command::new(repo().join("scripts/natlab.sh"))
        .args(args)
        .env("NATLAB_PREFIX", PREFIX)
        .output()
        .expect("natlab.sh runs")
}

fn in_ns(host: &str, cmd: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{PREFIX}-{host}")])
        .args(cmd);
    c
}

fn available() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    for tool in ["ip", "nft", "python3"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!("{tool} not installed"));
        }
    }
    // A name of this call's own: the tests of this file check at the same time.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("{PREFIX}-probe{n}");
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if !ok {
        return Err("cannot create network namespaces here".into());
    }
    Ok(())
}

/// Removes the lab (and what runs in it) however the test ends.
struct Lab;
impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab(&["down"]);
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn natpass() -> &'static str {
    env!("CARGO_BIN_EXE_natpass")
}

fn start_server() -> Proc {
    let child = in_ns(
        "pub",
        &[
            natpass(),
            "serve",
            "--listen",
            &format!("{SERVER}:3478"),
            "--alt-listen",
            "198.51.100.1:3479",
            "--allow-peer",
            "203.0.113.0/24",
            "--allow-peer",
            "198.51.100.0/24",
            "--user",
            "alice:secret",
            "--user",
            "bob:secret2",
            "--http",
            &format!("{SERVER}:8080"),
            "--log",
            "warn",
        ],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    // Ready when a Binding from h1 is answered.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let o = in_ns("h1", &[natpass(), "probe", "stun", SERVER])
            .output()
            .unwrap();
        if o.status.success() {
            break;
        }
    }
    Proc(child)
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Both hosts learn their mapped address by STUN and fire UDP at each other's.
fn hole_punch() -> (u64, u64, String) {
    let dir = std::env::temp_dir().join(format!("natlab-punch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let f = |n: &str| dir.join(n).to_string_lossy().to_string();
    let script = repo()
        .join("scripts/punch.py")
        .to_string_lossy()
        .to_string();
    let run = |host: &str, me: &str, other: &str, res: &str| {
        in_ns(
            host,
            &[
                "python3",
                &script,
                SERVER,
                "3478",
                "40000",
                &f(me),
                &f(other),
                &f(res),
            ],
        )
        .spawn()
        .unwrap()
    };
    let mut a = run("h1", "h1.addr", "h2.addr", "h1.res");
    let mut b = run("h2", "h2.addr", "h1.addr", "h2.res");
    a.wait().unwrap();
    b.wait().unwrap();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    let count = |s: &str| {
        s.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (ra, rb) = (read("h1.res"), read("h2.res"));
    let _ = std::fs::remove_dir_all(&dir);
    (count(&ra), count(&rb), format!("h1: {}h2: {}", ra, rb))
}

/// h2 echoes behind its own relay; h1 sends through its relay to h2's relayed address.
fn relay_between_hosts(transport: &str) -> serde_json::Value {
    let mut peer = in_ns(
        "h2",
        &[
            natpass(),
            "peer",
            "--turn",
            SERVER,
            "--user",
            "bob",
            "--password",
            "secret2",
            "--transport",
            transport,
            "--duration",
            "30",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = Proc(peer);
    let relayed = line
        .trim()
        .strip_prefix("relayed ")
        .expect("relayed address")
        .to_owned();
    json(
        in_ns(
            "h1",
            &[
                natpass(),
                "probe",
                "turn",
                SERVER,
                "--user",
                "alice",
                "--password",
                "secret",
                "--transport",
                transport,
                "--peer",
                &relayed,
                "--count",
                "30",
                "--rate",
                "100",
                "--json",
            ],
        )
        .stdout(Stdio::piped()),
    )
}

/// The labs of this file run one at a time (namespaces, Chromium-free but CPU-bound probes).
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn natlab_symmetric_nat_needs_turn_and_turn_connects() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = available() {
        eprintln!("SKIP natlab: {why} (the NAT lab needs root, ip netns and nftables; CI runs it)");
        if std::env::var("CI").is_ok() {
            panic!("natlab cannot run in CI: {why}");
        }
        return;
    }
    let _lab = Lab;
    let up = lab(&["up", "symmetric"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let _server = start_server();

    let nat =
        json(in_ns("h1", &[natpass(), "probe", "nat", SERVER, "--json"]).stdout(Stdio::piped()));
    eprintln!(
        "natlab: probe nat from h1: mapping {}, filtering {}, verdict: {}",
        nat["mapping"], nat["filtering"], nat["verdict"]
    );
    assert_eq!(nat["mapping"], "address-and-port-dependent");
    assert_eq!(nat["behind_nat"], true);

    let (a, b, detail) = hole_punch();
    eprintln!(
        "natlab: UDP hole punch behind symmetric NATs: h1 received {a}, h2 received {b}\n{detail}"
    );
    assert_eq!((a, b), (0, 0), "hole punching must fail behind APDM NATs");

    for transport in ["udp", "tcp"] {
        let r = relay_between_hosts(transport);
        eprintln!(
            "natlab: TURN/{transport} relay h1 -> natpass -> h2 and back: sent {}, received {}, lost {}, rtt min/median/p99/max {} ms",
            r["sent"], r["received"], r["lost"], r["rtt_ms"]
        );
        assert_eq!(r["lost"], 0, "relay over {transport}");
        assert_eq!(r["received"], 30);
    }

    // Control: endpoint-independent (port-preserving) NATs let the same hole punch through,
    // which proves the lab is meaningful.
    drop(_server);
    let up = lab(&["up", "cone"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let _server = start_server();
    let nat =
        json(in_ns("h1", &[natpass(), "probe", "nat", SERVER, "--json"]).stdout(Stdio::piped()));
    assert_eq!(nat["mapping"], "endpoint-independent");
    let (a, b, detail) = hole_punch();
    eprintln!(
        "natlab: control, UDP hole punch behind endpoint-independent NATs: h1 received {a}, h2 received {b}\n{detail}"
    );
    assert!(a > 0 && b > 0, "hole punching works behind EIM NATs");
}

/// Stops the Janus lab (scripts/janus-lab.sh) however the test ends.
struct JanusLab(PathBuf);
impl Drop for JanusLab {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/janus-lab.sh"))
            .args(["down", JANUS_NS])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const JANUS_NS: &str = "npt-janus";
const JANUS_API: &str = "http://10.77.0.1:8088/janus";

/// `natpass probe sfu --janus` against a real Janus (Debian's, VideoRoom plugin) in a namespace
/// of the test's own: the driver behind scripts/bench-sfu.sh's Janus column creates a room,
/// publishes and subscribes through Janus's HTTP API and every frame arrives; the same room on
/// natpass's SFU delivers the same frames over fewer peer connections; a Janus that is not
/// there is a clear error.
#[test]
fn natlab_probe_sfu_drives_janus() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = available() {
        eprintln!("SKIP natlab janus: {why}");
        return;
    }
    let has_janus = Command::new("sh")
        .args(["-c", "command -v janus"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_janus {
        eprintln!("SKIP natlab janus: janus not installed (scripts/test.sh installs it)");
        assert!(std::env::var("CI").is_err(), "CI must install janus");
        return;
    }
    let dir = std::env::temp_dir().join(format!("natlab-janus-{}", std::process::id()));
    let _lab = JanusLab(dir.clone());
    let up = Command::new(repo().join("scripts/janus-lab.sh"))
        .args(["up", JANUS_NS])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let pid = String::from_utf8_lossy(&up.stdout).trim().to_string();
    let probe = |extra: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", JANUS_NS, natpass(), "probe", "sfu"])
            .args(["--publishers", "2", "--subscribers", "1", "--rate", "50"])
            .args(["--size", "800", "--duration", "2", "--json"])
            .args(extra)
            .stdout(Stdio::piped());
        c
    };
    let janus = json(&mut probe(&[
        "--janus",
        JANUS_API,
        "--janus-pid",
        &pid,
        "--bind",
        "10.77.0.1",
    ]));
    eprintln!("natlab: probe sfu on janus: {janus}");
    assert_eq!(janus["server"], "janus");
    // Two publishers, and a subscriber handle for each of the three participants.
    assert_eq!(janus["peer_connections"], 5);
    let sent = janus["sent"].as_u64().unwrap();
    assert!(sent >= 150, "two publishers at 50 frames/s for 2 s: {sent}");
    assert_eq!(janus["expected"].as_u64().unwrap(), sent * 2);
    assert!(
        janus["loss_percent"].as_f64().unwrap() < 1.0,
        "Janus delivered every frame: {janus}"
    );

    let ours = json(&mut probe(&[]));
    eprintln!("natlab: probe sfu on natpass: {ours}");
    assert_eq!(ours["server"], "natpass");
    assert_eq!(ours["peer_connections"], 3);
    assert!(ours["loss_percent"].as_f64().unwrap() < 1.0, "{ours}");

    let o = probe(&[
        "--janus",
        "http://10.77.0.1:8089/janus",
        "--janus-pid",
        &pid,
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("janus"), "the error names Janus: {err}");
}
