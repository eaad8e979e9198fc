//! Secrets never reach the logs (docs/security.md "Secrets in logs"): natpass runs at trace level
//! through an authenticated relay and a signaling exchange carrying SDP; its whole log is then
//! searched for the password, the REST secret, the MESSAGE-INTEGRITY values and `a=ice-pwd`.
//! Also: MESSAGE-INTEGRITY is compared with a constant-time primitive.

mod common;

use common::sio::Sio;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use stun_types::message::Message;

const PASSWORD: &str = "Pa55w0rd-never-logged";
const SECRET: &str = "rest-secret-never-logged";
const ICE_PWD: &str = "icepwdNEVERLOGGED0123456789";

#[test]
// Every child is reaped: `try_wait` did when it exited, `kill` + `wait` on the deadline, and
// the test's end for the one that runs (clippy cannot follow the retry loop).
#[allow(clippy::zombie_processes)]
fn trace_logs_of_an_authenticated_call_hold_no_secrets() {
    let dir = temp_dir("logs");
    let log = dir.join("natpass.log");
    // A free UDP port whose TCP twin (and the SFU's, two above) may still be taken by some
    // other socket: when natpass refuses to start, try other ports.
    let mut tries = 0;
    let (udp, http, mut child) = loop {
        tries += 1;
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_natpass"))
            .args([
                "serve",
                "--listen",
                &udp.to_string(),
                "--http",
                &http.to_string(),
                "--log",
                "trace",
                "--user",
                &format!("alice:{PASSWORD}"),
                "--auth-secret",
                SECRET,
                "--allow-peer",
                "127.0.0.0/8",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        let mut exited = false;
        while std::net::TcpStream::connect(http).is_err() {
            if child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "natpass did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            break (udp, http, child);
        }
        assert!(
            tries < 5,
            "natpass never started: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    // TURN with the password, and with a REST credential.
    let mut macs = Vec::new();
    let c = UdpClient::new(udp);
    let nonce = c.nonce();
    let req = signed(
        turn_types::message::ALLOCATE,
        "alice",
        PASSWORD,
        &nonce,
        |w, _| {
            use stun_types::message::MessageWriteExt;
            w.add_attribute(&turn_types::attribute::RequestedTransport::new(17))
                .unwrap();
        },
    );
    let m = Message::from_bytes(&req).unwrap();
    let mi = m
        .raw_attribute(stun_types::attribute::AttributeType::new(0x0008))
        .unwrap();
    macs.push(
        mi.value
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    assert_eq!(error_code(&c.ask(&req)), None);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let pa = peer.local_addr().unwrap().to_string();
    c.ask(&channel_bind("alice", PASSWORD, &nonce, 0x4000, &pa));
    c.send(&channel_data(0x4000, b"media"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (u, p) = natpass::auth::mint_rest(&natpass::auth::Secret::new(SECRET), "web", 600, now);
    UdpClient::new(udp).allocate(&u, &p);
    // Signaling with SDP that carries an ice-pwd.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut a = Sio::connect(http, None, None).await.unwrap();
        let mut b = Sio::connect(http, None, None).await.unwrap();
        let ja = a.join("logs", "A").await;
        b.join("logs", "B").await;
        let sdp = format!("v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:{ICE_PWD}\r\n");
        let sent = b.call("signal", serde_json::json!({"to": ja["you"], "data": {"description": {"type": "offer", "sdp": sdp}}})).await;
        assert_eq!(sent["ok"], true);
        assert_eq!(a.next().await.0, "participant-joined");
        assert!(a.next().await.1["data"]["description"]["sdp"].as_str().unwrap().contains(ICE_PWD), "the SDP reached the other side");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = reqwest_free_get(http).await;
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.len() > 1000,
        "trace logging produced output ({} bytes)",
        text.len()
    );
    for needle in [PASSWORD, SECRET, ICE_PWD, "a=ice-pwd", &p] {
        assert!(!text.contains(needle), "log contains {needle}");
    }
    for mac in &macs {
        assert!(
            !text.contains(mac.as_str()),
            "log contains a MESSAGE-INTEGRITY value"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// GET /api/ice-servers so credential minting is exercised too.
async fn reqwest_free_get(http: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /api/ice-servers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

/// The MAC comparison uses `subtle::ConstantTimeEq`, never `==` on MAC bytes (a source check:
/// timing itself is not measurable reliably in a test).
#[test]
fn message_integrity_uses_a_constant_time_comparison() {
    let src = include_str!("../src/proto/integrity.rs");
    let verify = &src[src.find("pub fn verify").unwrap()..src.find("pub fn sign").unwrap()];
    assert!(
        verify.contains(".ct_eq(given)"),
        "verify compares with ct_eq"
    );
    assert!(!verify.contains("== given") && !verify.contains("given =="));
    let nonce = include_str!("../src/auth/nonce.rs");
    assert!(nonce.contains(".ct_eq(given)"), "nonce MACs too");
    let admin = include_str!("../src/web/admin.rs");
    assert!(admin.contains(".ct_eq(token.expose())"), "admin token too");
}
