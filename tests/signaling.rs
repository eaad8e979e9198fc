//! The signaling server and its limits over Socket.IO's WebSocket transport (a minimal client
//! in tests/common/sio.rs; the npm socket.io-client drives the same server in tests/e2e): join,
//! relay, acks, reconnect-and-resume with buffered delivery, oversize messages, floods, wrong
//! Origin, full rooms, the compatibility events, and the credential endpoint.

mod common;

use common::sio::{Sio, SioError};
use natpass::auth::Secret;
use natpass::signal::Limits;
use natpass::web::{AppState, IceInfo, WebConfig};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

async fn server(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let cfg = WebConfig {
        ice: IceInfo {
            ports: vec![3478],
            tls_ports: vec![5349],
            public_host: None,
        },
        secret: Secret::new("sig-secret"),
        ttl: 600,
        allowed_origins: vec!["https://app.example.org".into()],
        signaling: limits,
        http: natpass::web::limits::HttpLimits::default(),
    };
    let state = AppState::new(cfg);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(natpass::web::serve(l, state, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

async fn connect(addr: SocketAddr) -> Sio {
    Sio::connect(addr, None, None).await.unwrap()
}

#[tokio::test]
async fn join_relay_chat_and_leave_with_acks() {
    let (addr, _stop) = server(Limits::default()).await;
    let mut a = connect(addr).await;
    let ja = a.join("room1", "Ann").await;
    assert_eq!(ja["ok"], true, "{ja}");
    assert_eq!(ja["participants"], json!([]));
    assert_eq!(ja["ttl"], 600);
    let turn = &ja["iceServers"][1];
    let user = turn["username"].as_str().unwrap();
    assert!(user.ends_with(&format!(":{}", ja["you"].as_str().unwrap())));
    assert_eq!(
        turn["credential"],
        natpass::auth::rest_password(&Secret::new("sig-secret"), user)
    );
    assert!(
        turn["urls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().starts_with("turns:"))
    );

    let mut b = connect(addr).await;
    let jb = b.join("room1", "Bob").await;
    assert_eq!(
        jb["participants"],
        json!([{"id": ja["you"], "name": "Ann"}])
    );
    assert_eq!(
        a.next().await,
        (
            "participant-joined".into(),
            json!({"id": jb["you"], "name": "Bob"})
        )
    );

    // Offer relayed to one named participant, acked.
    let offer = json!({"description": {"type": "offer", "sdp": "v=0"}});
    assert_eq!(
        b.call("signal", json!({"to": ja["you"], "data": offer}))
            .await,
        json!({"ok": true})
    );
    assert_eq!(
        a.next().await,
        ("signal".into(), json!({"from": jb["you"], "data": offer}))
    );

    // Unknown target, unknown event, garbage: reasons, by ack or as an `error` event.
    assert_eq!(
        b.call("signal", json!({"to": "nobody", "data": {}})).await["error"],
        "no such participant"
    );
    b.emit("signal", json!({"to": "nobody", "data": {}})).await;
    assert_eq!(
        b.next().await,
        (
            "error".into(),
            json!({"reason": "no such participant", "event": "signal"})
        )
    );
    assert_eq!(b.call("dance", json!({})).await["error"], "unknown event");

    // Chat broadcast, fresh ICE servers on request.
    assert_eq!(
        a.call("chat", json!({"text": "hi <b>"})).await,
        json!({"ok": true})
    );
    let (ev, chat) = b.next().await;
    assert_eq!(
        (ev.as_str(), chat["name"].as_str(), chat["text"].as_str()),
        ("chat", Some("Ann"), Some("hi <b>"))
    );
    assert_eq!(
        a.call("ice-servers", json!({})).await["iceServers"][0]["urls"][0],
        "stun:127.0.0.1:3478"
    );

    // Leave: ack, and the other side is told.
    assert_eq!(b.call("leave", json!({})).await, json!({"ok": true}));
    assert_eq!(
        a.next().await,
        ("participant-left".into(), json!({"id": jb["you"]}))
    );

    // A packet that is not Socket.IO closes that connection (the client reconnects); nobody
    // else notices.
    for junk in ["42{not json", "99", "4", "42[]", "42[1,2]"] {
        let mut c = connect(addr).await;
        c.raw_send(junk.into()).await;
        c.raw_send("421[\"ice-servers\",{}]".into()).await;
        // Either the connection was closed for it, or it still answers: never a hang or a
        // crash.
        let (_, args) = c.try_next().await.unwrap_or_default();
        let _ = args;
        assert_eq!(
            connect(addr)
                .await
                .join(&format!("after-{}", junk.len()), "Eve")
                .await["ok"],
            true,
            "{junk}"
        );
    }
    assert_eq!(
        a.call("chat", json!({"text": "still here"})).await,
        json!({"ok": true})
    );
}

#[tokio::test]
async fn signals_keep_their_order() {
    let (addr, _stop) = server(Limits::default()).await;
    let mut a = connect(addr).await;
    a.join("order", "Ann").await;
    let mut b = connect(addr).await;
    let jb = b.join("order", "Bob").await;
    a.next().await;
    // socketioxide runs each handler in a task of its own: without handling in arrival order,
    // a burst comes out shuffled.
    for n in 0..90 {
        a.emit("signal", json!({"to": jb["you"], "data": n})).await;
    }
    let mut got = Vec::new();
    for _ in 0..90 {
        got.push(b.next().await.1["data"].as_i64().unwrap());
    }
    assert_eq!(got, (0..90).collect::<Vec<_>>());
}

#[tokio::test]
async fn reconnect_resumes_identity_and_delivers_what_was_buffered() {
    let (addr, _stop) = server(Limits {
        grace: Duration::from_secs(5),
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr).await;
    let ja = a.join("r", "Ann").await;
    let mut b = connect(addr).await;
    let jb = b.join("r", "Bob").await;
    a.next().await; // participant-joined
    // Bob's socket drops.
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..3 {
        let r = a
            .call("signal", json!({"to": jb["you"], "data": {"n": n}}))
            .await;
        assert_eq!(
            r,
            json!({"ok": true}),
            "delivery to a detached participant is accepted"
        );
    }
    // Bob comes back with his resume token in the handshake: `resumed` with his id, then the
    // buffered signals in order.
    let mut b2 = Sio::connect(addr, None, Some(json!({"resume": jb["resume"]})))
        .await
        .unwrap();
    let (ev, again) = b2.next().await;
    assert_eq!(ev, "resumed");
    assert_eq!(again["you"], jb["you"]);
    assert_eq!(
        again["participants"],
        json!([{"id": ja["you"], "name": "Ann"}])
    );
    for n in 0..3 {
        let (ev, m) = b2.next().await;
        assert_eq!((ev.as_str(), m["data"]["n"].as_i64()), ("signal", Some(n)));
    }
    // Ann was never told Bob left.
    assert_eq!(
        a.call("chat", json!({"text": "still there?"})).await,
        json!({"ok": true})
    );
    assert_eq!(b2.next().await.1["text"], "still there?");
    // A token nobody holds: resume-failed, and a fresh join works.
    let mut c = Sio::connect(addr, None, Some(json!({"resume": "bogus"})))
        .await
        .unwrap();
    assert_eq!(c.next().await.0, "resume-failed");
    assert_eq!(
        c.call("signal", json!({"to": ja["you"], "data": 1})).await["error"],
        "join a room first"
    );
    assert_eq!(c.join("r", "Cy").await["ok"], true);
}

#[tokio::test]
async fn join_with_a_resume_token_takes_the_identity_back_too() {
    let (addr, _stop) = server(Limits::default()).await;
    let mut a = connect(addr).await;
    a.join("j", "Ann").await;
    let mut b = connect(addr).await;
    let jb = b.join("j", "Bob").await;
    a.next().await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.call("signal", json!({"to": jb["you"], "data": "while away"}))
        .await;
    let mut b2 = connect(addr).await;
    let again = b2
        .call(
            "join",
            json!({"room": "j", "name": "Bob", "resume": jb["resume"]}),
        )
        .await;
    assert_eq!(again["you"], jb["you"]);
    assert_eq!(
        b2.next().await,
        (
            "signal".into(),
            json!({"from": a_id(&again), "data": "while away"})
        )
    );
}

fn a_id(joined: &Value) -> Value {
    joined["participants"][0]["id"].clone()
}

#[tokio::test]
async fn a_participant_gone_past_the_grace_period_is_announced_as_left() {
    let (addr, _stop) = server(Limits {
        grace: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr).await;
    a.join("g", "Ann").await;
    let mut b = connect(addr).await;
    let jb = b.join("g", "Bob").await;
    a.next().await;
    drop(b);
    assert_eq!(
        a.next().await,
        ("participant-left".into(), json!({"id": jb["you"]}))
    );
    // The token no longer resumes anything.
    let mut b2 = Sio::connect(addr, None, Some(json!({"resume": jb["resume"]})))
        .await
        .unwrap();
    assert_eq!(b2.next().await.0, "resume-failed");
}

#[tokio::test]
async fn oversize_messages_close_the_connection() {
    let (addr, _stop) = server(Limits {
        max_message: 1024,
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr).await;
    a.join("o", "Ann").await;
    a.emit("chat", json!({"text": "x".repeat(4096)})).await;
    assert!(a.closes().await, "connection closed");
    // The server is fine.
    let mut b = connect(addr).await;
    assert_eq!(b.join("o2", "Bob").await["ok"], true);
}

#[tokio::test]
async fn floods_are_rate_limited_per_connection() {
    let (addr, _stop) = server(Limits {
        rate: 5.0,
        burst: 10.0,
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr).await;
    a.join("f", "Ann").await;
    let mut served = 0;
    let mut limited = 0;
    for _ in 0..100 {
        let r = a.call("ice-servers", json!({})).await;
        if r["ok"] == true {
            served += 1;
        } else if r["error"] == "rate limit: slow down" {
            limited += 1;
        }
    }
    assert!(served <= 12, "{served} served of 100");
    assert_eq!(served + limited, 100);
}

#[tokio::test]
async fn wrong_origin_is_refused_and_allowed_origins_pass() {
    let (addr, _stop) = server(Limits::default()).await;
    assert!(matches!(
        Sio::connect(addr, Some("http://evil.example"), None).await,
        Err(SioError::Http(403))
    ));
    assert!(
        Sio::connect(addr, Some(&format!("http://{addr}")), None)
            .await
            .is_ok(),
        "same origin"
    );
    assert!(
        Sio::connect(addr, Some("https://app.example.org"), None)
            .await
            .is_ok(),
        "configured origin"
    );
}

#[tokio::test]
async fn too_many_connections_from_one_address_are_refused() {
    let (addr, _stop) = server(Limits {
        per_ip: 3,
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(addr).await);
    }
    assert!(matches!(
        Sio::connect(addr, None, None).await,
        Err(SioError::Http(429))
    ));
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        Sio::connect(addr, None, None).await.is_ok(),
        "a freed slot is usable again"
    );
}

#[tokio::test]
async fn full_rooms_refuse_newcomers_and_bad_names_are_refused() {
    let (addr, _stop) = server(Limits {
        room_size: 2,
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    let mut c = connect(addr).await;
    assert_eq!(a.join("full", "A").await["ok"], true);
    assert_eq!(b.join("full", "B").await["ok"], true);
    assert_eq!(c.join("full", "C").await["error"], "room full");
    assert_eq!(
        c.join("../etc", "C").await["error"],
        "room must be 1-64 letters, digits, - or _"
    );
    assert_eq!(
        c.join("ok", "").await["error"],
        "name must be 1-40 printable characters"
    );
    assert_eq!(
        c.call("signal", json!({"to": "x", "data": {}})).await["error"],
        "join a room first"
    );
    assert_eq!(c.join("ok", "C").await["ok"], true);
    assert_eq!(c.join("ok2", "C").await["error"], "already joined");
}

#[tokio::test]
async fn the_zoom_clone_events_work_as_a_node_socket_io_server_would() {
    let (addr, _stop) = server(Limits {
        room_size: 2,
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    // join_room(room, done): done() is called with no arguments.
    assert_eq!(
        a.call_args("join_room", &[json!("Ann's room")]).await,
        Vec::<Value>::new()
    );
    b.emit_args("join_room", &[json!("Ann's room")]).await;
    assert_eq!(a.next_args().await, ("welcome".into(), vec![]));
    let offer = json!({"type": "offer", "sdp": "v=0"});
    a.emit_args("offer", &[offer.clone(), json!("Ann's room")])
        .await;
    assert_eq!(b.next_args().await, ("offer".into(), vec![offer]));
    b.emit_args("answer", &[json!({"type": "answer"}), json!("Ann's room")])
        .await;
    assert_eq!(
        a.next_args().await,
        ("answer".into(), vec![json!({"type": "answer"})])
    );
    a.emit_args("ice", &[json!({"candidate": "c"}), json!("Ann's room")])
        .await;
    assert_eq!(
        b.next_args().await,
        ("ice".into(), vec![json!({"candidate": "c"})])
    );
    // Not in that room, a full room, and a call room of the same name is another room.
    a.emit_args("ice", &[json!(1), json!("elsewhere")]).await;
    assert_eq!(
        a.next().await,
        (
            "error".into(),
            json!({"reason": "not in that room", "event": "ice"})
        )
    );
    let mut c = connect(addr).await;
    assert_eq!(
        c.call_args("join_room", &[json!("Ann's room")]).await,
        vec![json!({"error": "room full"})]
    );
    assert_eq!(c.join("Anns-room", "Cy").await["participants"], json!([]));
    // Leaving by closing the socket frees the seat at once.
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = connect(addr).await;
    assert_eq!(
        d.call_args("join_room", &[json!("Ann's room")]).await,
        Vec::<Value>::new()
    );
}

#[tokio::test]
async fn credential_endpoint_is_rate_limited_and_sets_security_headers() {
    let (addr, _stop) = server(Limits::default()).await;
    let client = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let host = url.split('/').nth(2).unwrap().to_owned();
            let p = url.splitn(4, '/').nth(3).unwrap_or("").to_owned();
            s.write_all(
                format!("GET /{p} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let first = client("/api/ice-servers").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'self'")
    );
    let mut limited = false;
    for _ in 0..30 {
        if client("/api/ice-servers").await.starts_with("HTTP/1.1 429") {
            limited = true;
            break;
        }
    }
    assert!(limited, "credential requests are rate limited per client");
    let page = client("/").await;
    assert!(page.contains("data-testid=\"relay-only\""));
}

/// Credentials handed out by the web side of a running server allocate on its TURN.
#[test]
fn issued_credentials_work_against_natpass_turn() {
    let server = natpass::net::start(
        &natpass::config::ValidConfig::embedded(natpass::config::Overrides {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            http: Some("127.0.0.1:0".parse().unwrap()),
            threads: Some(1),
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap();
    let http = natpass::config::HttpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: natpass::config::HttpTls::Off,
        public_host: None,
        allow_origins: vec![],
        credential_ttl: 600,
        room_size: 8,
        redis: None,
        sfu: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = rt.block_on(async {
        let addr = natpass::web::launch(&http, &server, std::future::pending())
            .await
            .unwrap()
            .addr;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"GET /api/ice-servers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    });
    let json_start = body.find('{').unwrap();
    let v: Value = serde_json::from_str(body[json_start..].trim()).unwrap();
    let turn = v["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("username").is_some())
        .unwrap();
    let url = turn["urls"][0].as_str().unwrap();
    assert_eq!(
        url,
        format!(
            "turn:127.0.0.1:{}?transport=udp",
            server.udp_addrs[0].port()
        )
    );
    let mut c = natpass::client::Client::udp(server.udp_addrs[0], None).unwrap();
    c.set_credentials(
        turn["username"].as_str().unwrap(),
        turn["credential"].as_str().unwrap(),
    );
    let a = c
        .allocate(None, None)
        .expect("the issued credential allocates");
    assert_eq!(a.lifetime, 600);
}

/// `--http-self-signed`: the page and the API are served over HTTPS (phones on a LAN).
#[test]
fn self_signed_https_serves_the_page() {
    let server = natpass::net::start(
        &natpass::config::ValidConfig::embedded(natpass::config::Overrides {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            threads: Some(1),
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap();
    let http = natpass::config::HttpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: natpass::config::HttpTls::SelfSigned,
        public_host: Some("192.0.2.10".into()),
        allow_origins: vec![],
        credential_ttl: 300,
        room_size: 8,
        redis: None,
        sfu: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (page, ice) = rt.block_on(async {
        let addr = natpass::web::launch(&http, &server, std::future::pending())
            .await
            .unwrap()
            .addr;
        let cfg = natpass::probe::tls_client_config(&natpass::probe::TlsOptions {
            ca: None,
            insecure: true,
        })
        .unwrap();
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let get = |path: &'static str| {
            let connector = connector.clone();
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = connector.connect(name, tcp).await.unwrap();
                s.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out).await;
                String::from_utf8_lossy(&out).to_string()
            }
        };
        (get("/").await, get("/api/ice-servers").await)
    });
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("natpass call"),
        "{page}"
    );
    assert!(
        ice.contains("turn:192.0.2.10:"),
        "public host in the ICE URLs: {ice}"
    );
    assert!(ice.contains("\"ttl\":300"));
}

/// `GET path` over a fresh connection: (status line, body).
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_page_config_is_the_rule_the_server_enforces() {
    let limits = Limits {
        rate: 8.0,
        burst: 40.0,
        max_message: 8192,
        ..Limits::default()
    };
    let (addr, _stop) = server(limits).await;
    let (status, body) = http_get(addr, "/api/config").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let c: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["room"]["pattern"], "^[A-Za-z0-9_-]{1,64}$");
    let max = c["room"]["maxLength"].as_u64().unwrap() as usize;
    // The pace served to the page stays under this server's own limits.
    let rate = c["signaling"]["rate"].as_f64().unwrap();
    let burst = c["signaling"]["burst"].as_f64().unwrap();
    assert!(
        rate > 0.0 && rate < 8.0 && (1.0..40.0).contains(&burst),
        "{c}"
    );
    assert_eq!(c["signaling"]["maxMessage"], 8192);
    // The longest name the page allows is joined; one more is refused.
    let mut ws = connect(addr).await;
    assert!(ws.join(&"r".repeat(max + 1), "A").await["error"].is_string());
    assert_eq!(ws.join(&"r".repeat(max), "A").await["ok"], true);
    // Every module of the page is served as JavaScript.
    for m in ["app.js", "config.js", "signaling.js", "peer.js", "ui.js"] {
        let (status, body) = http_get(addr, &format!("/{m}")).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{m}");
        assert!(body.contains("export") || body.contains("import"), "{m}");
    }
    // The Socket.IO client bundle, where a Node Socket.IO server serves it.
    let (status, body) = http_get(addr, "/socket.io/socket.io.js").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, natpass::web::socketio::CLIENT_BUNDLE);
}

#[tokio::test]
async fn a_join_whose_answer_was_lost_is_taken_again_by_its_key() {
    let (addr, _stop) = server(Limits::default()).await;
    let mut a = connect(addr).await;
    let ja = a.join("lost", "Ann").await;
    // Ben's join goes out; the connection dies before he reads the answer.
    let mut b = connect(addr).await;
    b.emit(
        "join",
        json!({"room": "lost", "name": "Ben", "key": "ben-key-1"}),
    )
    .await;
    assert_eq!(a.next().await.0, "participant-joined");
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The library reconnects and the page sends the same join again.
    let mut b2 = connect(addr).await;
    let again = b2
        .call(
            "join",
            json!({"room": "lost", "name": "Ben", "key": "ben-key-1"}),
        )
        .await;
    assert_eq!(
        again["participants"],
        json!([{"id": ja["you"], "name": "Ann"}]),
        "not a ghost of himself"
    );
    // Ann heard of one Ben only.
    assert!(a.try_next().await.is_none(), "no second participant-joined");
    assert_eq!(
        a.call("signal", json!({"to": again["you"], "data": 1}))
            .await["ok"],
        true
    );
    assert_eq!(b2.next().await.1["data"], 1);
}
