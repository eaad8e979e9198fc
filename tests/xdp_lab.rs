//! The XDP fast path (issue 17) in a network-namespace lab (scripts/xdp-lab.sh): a client
//! behind one veth relays through natpass to a peer behind another, native XDP on natpass's
//! two veths. Needs root, iproute2, ethtool and clang; skips with a message elsewhere (CI runs
//! it as root, in the NAT lab step). Traffic never leaves the lab's namespaces; every
//! namespace and process is removed however a test ends.
//!
//! Checked: channel traffic both ways is counted by the XDP program and not by natpass's
//! userspace path, and arrives intact (the receivers' kernels check the checksums the program
//! rewrote, with and without UDP padding); a truncated ChannelData never reaches the peer; a denied peer stays denied;
//! permission expiry stops forwarding when the userspace path stops; RFC 8656's channel rules
//! (padding, empty and nested payloads, unbound channels, Data indications from another port,
//! rebinding, two clients to one peer, deleting the allocation) read the same on the wire with
//! the fast path on and off; coturn's turnutils_uclient (with channels, and with Send
//! indications, which stay on the userspace path) and the `turn` crate's client relay with 0
//! loss through it; and natpass without privileges says why and relays in userspace.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "npxt";
const SERVER: &str = "10.81.1.1:3478";
const CLIENT_IP: &str = "10.81.1.2";
const PEER_IP: &str = "10.81.2.2";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ns(name: &str) -> String {
    format!("{PREFIX}-{name}")
}

fn available() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    for tool in ["ip", "ethtool", "clang"] {
        if !have_tool(tool) {
            return Err(format!("{tool} not installed"));
        }
    }
    if option_env!("NATPASS_XDP_BUILD_ERROR").is_some() {
        return Err("natpass was built without its XDP program (no clang at build time)".into());
    }
    Ok(())
}

/// Skip with the reason, except in CI where the lab must run.
fn lab_or_skip() -> Option<Lab> {
    lab_or_skip_with(false)
}

/// The lab; with `nic`, in its NIC-like mode (XDPLAB_NIC=1: frames reach natpass's side as
/// XDP frames in pages, as a NIC driver hands them up, rather than as the sender's skbs).
fn lab_or_skip_with(nic: bool) -> Option<Lab> {
    if let Err(why) = available() {
        assert!(
            std::env::var("CI").is_err(),
            "the XDP lab must run in CI: {why}"
        );
        eprintln!("skipped: {why}");
        return None;
    }
    // One lab at a time (the tests of this file share its names).
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // The guard first: a set-up that fails half-way is taken down too.
    let lab = Lab { _guard: guard };
    let out = Command::new(repo().join("scripts/xdp-lab.sh"))
        .arg("up")
        .env("XDPLAB_PREFIX", PREFIX)
        .env("XDPLAB_NIC", if nic { "1" } else { "0" })
        .output()
        .expect("xdp-lab.sh runs");
    assert!(
        out.status.success(),
        "lab up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(lab)
}

/// Removes the lab however the test ends.
struct Lab {
    _guard: std::sync::MutexGuard<'static, ()>,
}
impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/xdp-lab.sh"))
            .arg("down")
            .env("XDPLAB_PREFIX", PREFIX)
            .output();
    }
}

/// A UDP socket created inside namespace `name` (it stays there when used from this thread).
fn socket_in(name: &str, addr: &str) -> UdpSocket {
    let path = format!("/run/netns/{}", ns(name));
    let addr = addr.to_owned();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("namespace exists");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let s = UdpSocket::bind(addr).expect("bind in the namespace");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    })
    .join()
    .unwrap()
}

/// natpass in the server namespace with the fast path on `xc` and `xp` (without privileges,
/// when asked, through setpriv); returns once it listens, with its log so far.
fn natpass(env: &[(&str, &str)], unprivileged: bool) -> (Proc, String) {
    natpass_with(env, unprivileged, true)
}

/// The same, with the fast path configured or not (`xdp`).
fn natpass_with(env: &[(&str, &str)], unprivileged: bool, xdp: bool) -> (Proc, String) {
    let dir = temp_dir("xdplab");
    // Readable and writable for the unprivileged run too.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let cfg = dir.join("natpass.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = [\"{SERVER}\"]\nrelay-ips = [\"10.81.2.1\"]\nallow-peers = [\"10.81.2.0/24\"]\n\
             users = [\"alice:alicepw\"]\nmetrics = \"10.81.1.1:9100\"\n\
             admin-listen = \"10.81.1.1:9101\"\nadmin-token = \"{ADMIN_TOKEN}\"\n{}\
             state-dir = \"{}\"\n[quota]\nallocations-per-user = 1000\nallocations-per-ip = 1000\n",
            if xdp {
                "xdp-interface = [\"xc\", \"xp\"]\n"
            } else {
                ""
            },
            dir.display()
        ),
    )
    .unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns("srv")]);
    if unprivileged {
        c.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]);
    }
    c.arg(env!("CARGO_BIN_EXE_natpass"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("natpass starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let proc = Proc(child);
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                log.push_str(&l);
                log.push('\n');
                if l.contains("metrics at") {
                    // Keep draining its log so it never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return (proc, log);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    panic!("natpass did not start in the lab:\n{log}");
}

const ADMIN_TOKEN: &str = "xdp-lab-admin-token-0123";

/// The admin API's allocations (bytes relayed each way, by client address).
fn allocation_bytes() -> Vec<(String, u64, u64)> {
    let out = curl_in_server_namespace(&[
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        "10.81.1.1:9101/admin/allocations",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("the admin API answers JSON");
    v["allocations"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| {
            (
                a["client"].as_str().unwrap_or_default().to_owned(),
                a["bytes_to_peer"].as_u64().unwrap_or(0),
                a["bytes_to_client"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// `curl -s ARGS` inside the server namespace: the body.
fn curl_in_server_namespace(args: &[&str]) -> Vec<u8> {
    Command::new("ip")
        .args(["netns", "exec", &ns("srv"), "curl", "-s"])
        .args(args)
        .output()
        .expect("curl runs")
        .stdout
}

/// natpass's /metrics, read inside the server namespace.
fn metric(name_and_labels: &str) -> u64 {
    metric_opt(name_and_labels).unwrap_or_else(|| panic!("no {name_and_labels} in /metrics"))
}

fn metric_opt(name_and_labels: &str) -> Option<u64> {
    let out = curl_in_server_namespace(&["10.81.1.1:9100/metrics"]);
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

struct Counts {
    xdp_to_peer: u64,
    xdp_to_client: u64,
    user_to_peer: u64,
    user_to_client: u64,
}

fn counts() -> Counts {
    Counts {
        xdp_to_peer: metric_opt("natpass_xdp_packets_total{direction=\"to_peer\"}").unwrap_or(0),
        xdp_to_client: metric_opt("natpass_xdp_packets_total{direction=\"to_client\"}")
            .unwrap_or(0),
        user_to_peer: metric("natpass_relayed_packets_total{direction=\"to_peer\"}"),
        user_to_client: metric("natpass_relayed_packets_total{direction=\"to_client\"}"),
    }
}

/// A TURN client in the client namespace with an allocation and channel 0x4001 to `peer`.
fn client_with_channel(peer: SocketAddr) -> (UdpClient, String, SocketAddr) {
    let sock = socket_in("cli", &format!("{CLIENT_IP}:0"));
    let c = UdpClient {
        sock,
        server: SERVER.parse().unwrap(),
    };
    let (nonce, relay) = c.allocate("alice", "alicepw");
    let r = c.ask(&channel_bind(
        "alice",
        "alicepw",
        &nonce,
        0x4001,
        &peer.to_string(),
    ));
    assert_eq!(error_code(&r), None, "ChannelBind");
    (c, nonce, relay)
}

fn recv(s: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, a)| (buf[..n].to_vec(), a))
}

/// One exchange both ways: the client's ChannelData reaches the peer from the relay address,
/// the peer's answer reaches the client as ChannelData on the channel.
fn round_trip(c: &UdpClient, peer: &UdpSocket, relay: SocketAddr, payload: &[u8]) {
    c.send(&channel_data(0x4001, payload));
    let (got, from) = recv(peer, Duration::from_secs(2)).expect("the peer got the ChannelData");
    assert_eq!((got.as_slice(), from), (payload, relay));
    peer.send_to(payload, relay).unwrap();
    let back = c
        .recv_timeout(Duration::from_secs(2))
        .expect("the client got the peer's datagram");
    assert_eq!(back, channel_data(0x4001, payload));
}

#[test]
fn natlab_xdp_forwards_channels_in_the_kernel_and_keeps_the_rules() {
    let Some(_lab) = lab_or_skip() else { return };
    let (_server, log) = natpass(&[], false);
    assert!(
        log.matches("XDP fast path attached").count() == 2 && log.contains("mode=\"native\""),
        "native XDP on both veths:\n{log}"
    );
    let peer = socket_in("peer", &format!("{PEER_IP}:9000"));
    let (c, nonce, relay) = client_with_channel(peer.local_addr().unwrap());
    // The first packets learn the way to each side (they go the userspace way).
    round_trip(&c, &peer, relay, b"hello");
    let before = counts();
    const N: usize = 1000;
    let mut payload_bytes = 5;
    for i in 0..N {
        let payload = format!("media {i:04} {}", "x".repeat(i % 900));
        payload_bytes += payload.len() as u64;
        round_trip(&c, &peer, relay, payload.as_bytes());
    }
    let after = counts();
    // The allocation's byte counts (admin API) include what the kernel relayed, exactly.
    let client = c.sock.local_addr().unwrap().to_string();
    assert_eq!(
        allocation_bytes(),
        vec![(client, payload_bytes, payload_bytes)],
        "bytes relayed each way, userspace and XDP together"
    );
    println!(
        "xdp: to_peer +{} to_client +{}; userspace: to_peer +{} to_client +{}",
        after.xdp_to_peer - before.xdp_to_peer,
        after.xdp_to_client - before.xdp_to_client,
        after.user_to_peer - before.user_to_peer,
        after.user_to_client - before.user_to_client
    );
    assert_eq!(after.xdp_to_peer - before.xdp_to_peer, N as u64);
    assert_eq!(after.xdp_to_client - before.xdp_to_client, N as u64);
    assert_eq!(
        (after.user_to_peer, after.user_to_client),
        (before.user_to_peer, before.user_to_client),
        "channel traffic never reached natpass's userspace path"
    );

    // ChannelData padded to 4 bytes (RFC 8656 §12.5; pion's and webrtc-rs's clients always
    // pad): the program strips header and padding, and the peer's kernel accepts the
    // checksum it corrected for every padding length and byte offset.
    let before = counts();
    for len in 1..=16usize {
        let payload: Vec<u8> = (0..len)
            .map(|i| 0xa0 ^ (i as u8).wrapping_mul(37))
            .collect();
        let mut padded = channel_data(0x4001, &payload);
        padded.extend(std::iter::repeat_n(0xee, (4 - len % 4) % 4));
        c.send(&padded);
        let (got, from) = recv(&peer, Duration::from_secs(2)).expect("padded ChannelData relayed");
        assert_eq!((got, from), (payload, relay));
    }
    let after = counts();
    assert_eq!(after.xdp_to_peer - before.xdp_to_peer, 16);
    assert_eq!(after.user_to_peer, before.user_to_peer);

    // Malformed ChannelData: a length beyond the datagram, a header alone that claims data,
    // a header cut short. None reaches the peer, by either path.
    let mut truncated = channel_data(0x4001, b"0123456789");
    truncated.truncate(truncated.len() - 3);
    for bad in [
        truncated,
        vec![0x40, 0x01, 0x00, 0x08],
        vec![0x40, 0x01, 0x00],
    ] {
        c.send(&bad);
    }
    assert!(
        recv(&peer, Duration::from_millis(500)).is_none(),
        "a malformed ChannelData reached the peer"
    );
    assert!(metric("natpass_xdp_passed_total{reason=\"malformed\"}") >= 2);
    round_trip(&c, &peer, relay, b"still fine");

    // A denied peer stays denied: 403, and ChannelData on that channel goes nowhere.
    let denied = socket_in("cli", &format!("{CLIENT_IP}:9001"));
    let r = c.ask(&channel_bind(
        "alice",
        "alicepw",
        &nonce,
        0x4002,
        &denied.local_addr().unwrap().to_string(),
    ));
    assert_eq!(error_code(&r), Some(403));
    c.send(&channel_data(0x4002, b"to a denied peer"));
    assert!(recv(&denied, Duration::from_millis(500)).is_none());

    // Send indications stay on the userspace path, and work.
    let user_before = counts().user_to_peer;
    c.send(&send_indication(
        &peer.local_addr().unwrap().to_string(),
        b"by indication",
    ));
    let (got, _) = recv(&peer, Duration::from_secs(2)).expect("Send indication relayed");
    assert_eq!(got, b"by indication");
    assert_eq!(counts().user_to_peer, user_before + 1);
}

#[test]
fn natlab_xdp_permission_expiry_stops_forwarding_when_userspace_would() {
    let Some(_lab) = lab_or_skip() else { return };
    let (_server, _) = natpass(&[("NATPASS_TEST_PERMISSION_SECONDS", "3")], false);
    let peer = socket_in("peer", &format!("{PEER_IP}:9000"));
    let bound_at = Instant::now();
    let (c, _, relay) = client_with_channel(peer.local_addr().unwrap());
    let answered = Instant::now();
    round_trip(&c, &peer, relay, b"learn");
    let expiry_earliest = bound_at + Duration::from_secs(3);
    let expiry_latest = answered + Duration::from_secs(3);
    // The peer sends every 5 ms for 4.5 s; the client notes what arrives.
    let mut last_delivered = None;
    let mut delivered = 5; // "learn"
    let mut late = Vec::new();
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_millis(4500) {
        let sent_at = Instant::now();
        peer.send_to(&i.to_be_bytes(), relay).unwrap();
        if let Some(b) = c.recv_timeout(Duration::from_millis(20)) {
            let at = Instant::now();
            assert_eq!(b[..2], [0x40, 0x01]);
            delivered += (b.len() - 4) as u64;
            if sent_at > expiry_latest {
                late.push(at - answered);
            }
            last_delivered = Some(sent_at);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5).saturating_sub(sent_at.elapsed()));
    }
    let last = last_delivered.expect("traffic flowed before the expiry");
    assert!(
        late.is_empty(),
        "delivered after the permission ended: {late:?}"
    );
    assert!(
        last + Duration::from_millis(300) >= expiry_earliest,
        "forwarding stopped {:?} before the permission ended",
        expiry_earliest - last
    );
    let xdp = metric("natpass_xdp_packets_total{direction=\"to_client\"}");
    assert!(
        xdp > 100,
        "the traffic before the expiry went through XDP ({xdp})"
    );
    // Whether the route's own deadline or the shard's removal at that moment stopped it first
    // is a race (both are right); the counters of either are not asserted. What the kernel
    // relayed before the route was removed is in the allocation's count, exactly.
    let client = c.sock.local_addr().unwrap().to_string();
    let listed = allocation_bytes();
    let mine = listed.iter().find(|(a, ..)| *a == client).expect("listed");
    assert_eq!(
        mine.2, delivered,
        "bytes to the client after the route's removal"
    );
    // A new permission opens it again.
    let (c2, _, relay2) = client_with_channel(peer.local_addr().unwrap());
    round_trip(&c2, &peer, relay2, b"again");
}

/// RFC 8656's channel rules, seen from the wire, as one transcript: what the peer and the
/// client receive for each case. Run with the fast path on and off, it must read the same
/// (and as written here); with it on, the channel traffic of the run went through XDP.
fn channel_rules_transcript() -> Vec<String> {
    use stun_types::message::Message;
    use turn_types::attribute::{Data, XorPeerAddress};
    let mut t = Vec::new();
    let peer = socket_in("peer", &format!("{PEER_IP}:9000"));
    let peer_addr = peer.local_addr().unwrap();
    let (c, nonce, relay) = client_with_channel(peer_addr);
    round_trip(&c, &peer, relay, b"learn the way");
    let quiet = Duration::from_millis(400);
    let at_peer = |t: &mut Vec<String>, case: &str| {
        t.push(match recv(&peer, Duration::from_secs(2)) {
            Some((d, from)) if from == relay => format!("{case}: peer got {d:?}"),
            Some((d, from)) => format!("{case}: peer got {d:?} from {from}"),
            None => format!("{case}: peer got nothing"),
        })
    };
    let at_client = |t: &mut Vec<String>, case: &str, c: &UdpClient, wait: Duration| {
        t.push(match c.recv_timeout(wait) {
            Some(d) if d.first().is_some_and(|b| b & 0xc0 == 0x40) => {
                format!("{case}: client got ChannelData {d:?}")
            }
            Some(d) => match Message::from_bytes(&d) {
                Ok(m) => format!(
                    "{case}: client got {:?} from {:?}: {:?}",
                    m.method(),
                    m.attribute::<XorPeerAddress>()
                        .ok()
                        .map(|a| a.addr(m.transaction_id()).port()),
                    m.attribute::<Data>().ok().map(|a| a.data().to_vec())
                ),
                Err(_) => format!("{case}: client got {d:?}"),
            },
            None => format!("{case}: client got nothing"),
        })
    };

    // Padding after the payload (allowed over UDP, RFC 8656 §12.5) is not relayed.
    let mut padded = channel_data(0x4001, b"abc");
    padded.push(0);
    c.send(&padded);
    at_peer(&mut t, "padded");
    // Empty payloads, both ways.
    c.send(&channel_data(0x4001, b""));
    at_peer(&mut t, "empty to peer");
    peer.send_to(b"", relay).unwrap();
    at_client(&mut t, "empty to client", &c, Duration::from_secs(2));
    // A payload that looks like ChannelData itself, both ways.
    c.send(&channel_data(0x4001, &channel_data(0x4001, b"inner")));
    at_peer(&mut t, "nested to peer");
    peer.send_to(&channel_data(0x4001, b"inner"), relay)
        .unwrap();
    at_client(&mut t, "nested to client", &c, Duration::from_secs(2));
    // A channel number that is not bound, and one outside the channel range.
    c.send(&channel_data(0x4005, b"unbound"));
    c.send(&[0x80, 0x01, 0x00, 0x02, b'h', b'i']);
    t.push(match recv(&peer, quiet) {
        Some((d, _)) => format!("unbound channel: peer got {d:?}"),
        None => "unbound channel: peer got nothing".into(),
    });
    // The same peer IP from another port: a Data indication (the permission is per IP).
    let other = socket_in("peer", &format!("{PEER_IP}:9002"));
    other.send_to(b"other port", relay).unwrap();
    at_client(&mut t, "other port", &c, Duration::from_secs(2));
    // Binding the channel again refreshes it; binding it to another peer is refused.
    let again = c.ask(&channel_bind(
        "alice",
        "alicepw",
        &nonce,
        0x4001,
        &peer_addr.to_string(),
    ));
    t.push(format!("rebind same peer: error {:?}", error_code(&again)));
    let moved = c.ask(&channel_bind(
        "alice",
        "alicepw",
        &nonce,
        0x4001,
        &other.local_addr().unwrap().to_string(),
    ));
    t.push(format!(
        "bind to another peer: error {:?}",
        error_code(&moved)
    ));
    round_trip(&c, &peer, relay, b"still bound");
    // A second client to the same peer: each gets only its own traffic.
    let (c2, nonce2, relay2) = client_with_channel(peer_addr);
    round_trip(&c2, &peer, relay2, b"second client");
    peer.send_to(b"for the second", relay2).unwrap();
    at_client(&mut t, "second client's", &c2, Duration::from_secs(2));
    at_client(&mut t, "first client, from the second's relay", &c, quiet);
    // Deleting the allocation (Refresh 0) ends relaying both ways at once.
    let gone = c.ask(&refresh("alice", "alicepw", &nonce, Some(0)));
    t.push(format!("refresh 0: error {:?}", error_code(&gone)));
    c.send(&channel_data(0x4001, b"after delete"));
    t.push(match recv(&peer, quiet) {
        Some((d, _)) => format!("after delete: peer got {d:?}"),
        None => "after delete: peer got nothing".into(),
    });
    peer.send_to(b"after delete", relay).unwrap();
    at_client(&mut t, "after delete", &c, quiet);
    // The other allocation is untouched.
    round_trip(&c2, &peer, relay2, b"the second lives on");
    drop(nonce2);
    t
}

/// The transcript both ways must match, line by line.
const CHANNEL_RULES: &[&str] = &[
    "padded: peer got [97, 98, 99]",
    "empty to peer: peer got []",
    "empty to client: client got ChannelData [64, 1, 0, 0]",
    "nested to peer: peer got [64, 1, 0, 5, 105, 110, 110, 101, 114]",
    "nested to client: client got ChannelData [64, 1, 0, 9, 64, 1, 0, 5, 105, 110, 110, 101, 114]",
    "unbound channel: peer got nothing",
    // Method 7: a Data indication, from the other port.
    "other port: client got Method(7) from Some(9002): Some([111, 116, 104, 101, 114, 32, 112, 111, 114, 116])",
    "rebind same peer: error None",
    "bind to another peer: error Some(400)",
    "second client's: client got ChannelData [64, 1, 0, 14, 102, 111, 114, 32, 116, 104, 101, 32, 115, 101, 99, 111, 110, 100]",
    "first client, from the second's relay: client got nothing",
    "refresh 0: error None",
    "after delete: peer got nothing",
    "after delete: client got nothing",
];

/// The channel-rules transcript against natpass with the fast path on or off; asserts that
/// the bound channel's round trips after the first went through the kernel (on) or that none
/// did (off).
fn transcript_through(xdp: bool) -> Vec<String> {
    let (_server, _) = natpass_with(&[], false, xdp);
    let before = counts();
    let transcript = channel_rules_transcript();
    let after = counts();
    let fast = (
        after.xdp_to_peer - before.xdp_to_peer,
        after.xdp_to_client - before.xdp_to_client,
    );
    println!(
        "fast path {xdp}: XDP packets {fast:?}\n{}",
        transcript.join("\n")
    );
    if xdp {
        assert!(
            fast.0 >= 4 && fast.1 >= 4,
            "XDP carried the channel traffic: {fast:?}"
        );
    } else {
        assert_eq!(fast, (0, 0));
    }
    transcript
}

#[test]
fn natlab_xdp_channel_rules_read_the_same_with_and_without_the_fast_path() {
    let Some(_lab) = lab_or_skip() else { return };
    let runs = [transcript_through(false), transcript_through(true)];
    assert_eq!(
        runs[0], runs[1],
        "the fast path changed what the wire shows"
    );
    assert_eq!(runs[1], CHANNEL_RULES, "RFC 8656's channel rules");
}

/// The same rules when frames arrive the way a NIC's driver hands them to XDP (the lab's
/// NIC-like mode): the program then runs on XDP frames, and its XDP_TX and redirect send
/// frames, not skbs — another path through the kernel, the one production servers take.
#[test]
fn natlab_xdp_channel_rules_hold_when_frames_arrive_as_from_a_nic() {
    let Some(_lab) = lab_or_skip_with(true) else {
        return;
    };
    assert!(
        std::path::Path::new(&format!("/run/netns/{}", ns("mid"))).exists(),
        "the lab runs in its NIC-like mode (the wire namespace is there)"
    );
    assert_eq!(
        transcript_through(true),
        CHANNEL_RULES,
        "RFC 8656's channel rules"
    );
}

/// The `turn` crate's client (webrtc-rs, written by others) relays through natpass with the
/// fast path on: Send indications first, then the channel it binds by itself, through XDP.
#[test]
fn natlab_xdp_turn_crate_client_relays_through_the_fast_path() {
    use webrtc_util::Conn;
    let Some(_lab) = lab_or_skip() else { return };
    let (_server, _) = natpass(&[], false);
    // An echo peer in the peer namespace, stopped when the test ends.
    let peer = socket_in("peer", &format!("{PEER_IP}:9000"));
    let peer_addr = peer.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            peer.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = peer.recv_from(&mut buf) {
                    let _ = peer.send_to(&buf[..n], from);
                }
            }
        })
    };
    let sock = socket_in("cli", &format!("{CLIENT_IP}:0"));
    sock.set_nonblocking(true).unwrap();
    let before = counts();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async move {
        let cfg = turn::client::ClientConfig {
            stun_serv_addr: SERVER.into(),
            turn_serv_addr: SERVER.into(),
            username: "alice".into(),
            password: "alicepw".into(),
            realm: "natpass".into(),
            software: String::new(),
            rto_in_ms: 0,
            conn: std::sync::Arc::new(tokio::net::UdpSocket::from_std(sock).unwrap()),
            vnet: None,
        };
        let client = turn::client::Client::new(cfg).await.unwrap();
        client.listen().await.unwrap();
        let relay = client.allocate().await.unwrap();
        let mut buf = vec![0u8; 1500];
        for i in 0..300u32 {
            let msg = format!("turn crate {i} {}", "y".repeat(i as usize % 1000));
            relay.send_to(msg.as_bytes(), peer_addr).await.unwrap();
            let (n, from) = tokio::time::timeout(Duration::from_secs(3), relay.recv_from(&mut buf))
                .await
                .map_err(|_| format!("no echo of message {i} within 3 s"))?
                .unwrap();
            assert_eq!((from, &buf[..n]), (peer_addr, msg.as_bytes()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relay.close().await.unwrap();
        client.close().await.unwrap();
        Ok::<_, String>(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo.join().unwrap();
    result.unwrap();
    let after = counts();
    let fast = (
        after.xdp_to_peer - before.xdp_to_peer,
        after.xdp_to_client - before.xdp_to_client,
    );
    let user = (
        after.user_to_peer - before.user_to_peer,
        after.user_to_client - before.user_to_client,
    );
    println!("turn crate: XDP {fast:?}, userspace {user:?}");
    assert_eq!(fast.0 + user.0, 300, "every message reached the peer once");
    assert_eq!(fast.1 + user.1, 300, "every echo reached the client once");
    assert!(
        fast.0 >= 200 && fast.1 >= 200,
        "once the crate's channel was bound, XDP carried it: {fast:?}"
    );
}

/// turnutils_uclient relays with 0 loss: (sent, received, lost).
fn uclient_in_lab(extra: &[&str]) -> (u64, u64, u64, String) {
    let mut args: Vec<&str> = vec![
        "netns",
        "exec",
        "",
        "timeout",
        "90",
        "turnutils_uclient",
        "-u",
        "alice",
        "-w",
        "alicepw",
        "-e",
        PEER_IP,
        "-r",
        "3480",
        "-m",
        "10",
        "-n",
        "200",
        "-p",
        "3478",
    ];
    let srv_ns = ns("cli");
    args[2] = &srv_ns;
    args.extend_from_slice(extra);
    args.push("10.81.1.1");
    let out = Command::new("ip")
        .args(&args)
        .output()
        .expect("uclient runs");
    uclient_summary(&out)
}

#[test]
fn natlab_xdp_coturn_uclient_relays_through_the_fast_path() {
    let Some(_lab) = lab_or_skip() else { return };
    if !have_tool("turnutils_uclient") {
        assert!(
            std::env::var("CI").is_err(),
            "coturn's tools are needed in CI"
        );
        eprintln!("skipped: turnutils_uclient not installed");
        return;
    }
    let (_server, _) = natpass(&[], false);
    let _peer = Proc(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns("peer"),
                "turnutils_peer",
                "-L",
                PEER_IP,
                "-p",
                "3480",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer starts"),
    );
    std::thread::sleep(Duration::from_millis(300));
    for extra in [&[][..], &["-s"][..]] {
        let before = counts();
        let (sent, recvd, lost, text) = uclient_in_lab(extra);
        let after = counts();
        let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        println!(
            "turnutils_uclient {extra:?}: sent={sent} received={recvd} lost={lost}; xdp +{} +{}, userspace +{} +{}",
            after.xdp_to_peer - before.xdp_to_peer,
            after.xdp_to_client - before.xdp_to_client,
            after.user_to_peer - before.user_to_peer,
            after.user_to_client - before.user_to_client
        );
        assert_eq!(lost, 0, "{tail}");
        assert!(sent >= 2000 && recvd >= sent, "{tail}");
        if extra.is_empty() {
            // With channels: the bulk goes through the kernel.
            assert!(after.xdp_to_peer - before.xdp_to_peer >= sent / 2, "{tail}");
            assert!(
                after.xdp_to_client - before.xdp_to_client >= sent / 2,
                "{tail}"
            );
        } else {
            // `-s`: Send/Data indications, all in userspace.
            assert_eq!(after.xdp_to_peer, before.xdp_to_peer);
            assert!(after.user_to_peer - before.user_to_peer >= sent);
        }
    }
}

#[test]
fn natlab_xdp_without_privileges_natpass_says_why_and_relays_in_userspace() {
    let Some(_lab) = lab_or_skip() else { return };
    if !have_tool("setpriv") {
        assert!(
            std::env::var("CI").is_err(),
            "setpriv (util-linux) is needed in CI"
        );
        return;
    }
    let (_server, log) = natpass(&[], true);
    assert!(
        log.contains("XDP fast path off") && log.contains("needs root"),
        "the reason is logged:\n{log}"
    );
    let peer = socket_in("peer", &format!("{PEER_IP}:9000"));
    let (c, _, relay) = client_with_channel(peer.local_addr().unwrap());
    for i in 0..20 {
        round_trip(&c, &peer, relay, format!("userspace {i}").as_bytes());
    }
    let c = counts();
    assert!(c.user_to_peer >= 20 && c.user_to_client >= 20);
    assert!(
        metric_opt("natpass_xdp_packets_total{direction=\"to_peer\"}").is_none(),
        "no XDP counters without the fast path"
    );
}
