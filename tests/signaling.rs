//! The signaling protocol and its limits over a real WebSocket (tokio-tungstenite): join,
//! relay, acks, reconnect-and-resume with buffered delivery, oversize messages, floods, wrong
//! Origin, full rooms, and the credential endpoint.

use futures_util::{SinkExt, StreamExt};
use natpass::auth::Secret;
use natpass::web::signaling::Limits;
use natpass::web::{AppState, IceInfo, WebConfig};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

async fn connect(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Next JSON text message (skipping pings), within 3 s.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .expect("a message within 3 s")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn join(ws: &mut Ws, room: &str, name: &str, resume: Option<&str>) -> Value {
    send(
        ws,
        json!({"type": "join", "id": 1, "room": room, "name": name, "resume": resume}),
    )
    .await;
    recv(ws).await
}

#[tokio::test]
async fn join_relay_chat_and_leave_with_acks() {
    let (addr, _stop) = server(Limits::default()).await;
    let mut a = connect(addr, None).await.unwrap();
    let ja = join(&mut a, "room1", "Ann", None).await;
    assert_eq!(ja["type"], "joined");
    assert_eq!(ja["id"], 1);
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

    let mut b = connect(addr, None).await.unwrap();
    let jb = join(&mut b, "room1", "Bob", None).await;
    assert_eq!(
        jb["participants"],
        json!([{"id": ja["you"], "name": "Ann"}])
    );
    let ev = recv(&mut a).await;
    assert_eq!(ev["type"], "participant-joined");
    assert_eq!(ev["participant"]["name"], "Bob");

    // Offer relayed to one named participant, acked with the request id.
    send(&mut b, json!({"type": "signal", "id": 7, "to": ja["you"], "data": {"description": {"type": "offer", "sdp": "v=0"}}})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "ack", "id": 7}));
    let sig = recv(&mut a).await;
    assert_eq!(sig["type"], "signal");
    assert_eq!(sig["from"], jb["you"]);
    assert_eq!(sig["data"]["description"]["type"], "offer");

    // Unknown target and unknown types get errors with the id.
    send(
        &mut b,
        json!({"type": "signal", "id": 8, "to": "nobody", "data": {}}),
    )
    .await;
    let e = recv(&mut b).await;
    assert_eq!(
        (e["type"].as_str(), e["id"].as_i64()),
        (Some("error"), Some(8))
    );
    send(&mut b, json!({"type": "dance", "id": 9})).await;
    assert_eq!(recv(&mut b).await["reason"], "unknown type");
    send(&mut b, json!({"nope": 1})).await;
    assert_eq!(recv(&mut b).await["type"], "error");
    b.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(recv(&mut b).await["reason"], "not JSON");

    // Chat broadcast, fresh ICE servers on request.
    send(&mut a, json!({"type": "chat", "id": 10, "text": "hi <b>"})).await;
    assert_eq!(recv(&mut a).await["type"], "ack");
    let chat = recv(&mut b).await;
    assert_eq!(
        (chat["name"].as_str(), chat["text"].as_str()),
        (Some("Ann"), Some("hi <b>"))
    );
    send(&mut a, json!({"type": "ice-servers", "id": 11})).await;
    assert_eq!(
        recv(&mut a).await["iceServers"][0]["urls"][0],
        "stun:127.0.0.1:3478"
    );

    // Leave: ack, and the other side is told.
    send(&mut b, json!({"type": "leave", "id": 12})).await;
    assert_eq!(recv(&mut b).await, json!({"type": "ack", "id": 12}));
    let left = recv(&mut a).await;
    assert_eq!(
        (left["type"].as_str(), &left["id"]),
        (Some("participant-left"), &jb["you"])
    );
}

#[tokio::test]
async fn reconnect_resumes_identity_and_delivers_what_was_buffered() {
    let (addr, _stop) = server(Limits {
        grace: Duration::from_secs(5),
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr, None).await.unwrap();
    let ja = join(&mut a, "r", "Ann", None).await;
    let mut b = connect(addr, None).await.unwrap();
    let jb = join(&mut b, "r", "Bob", None).await;
    let _ = recv(&mut a).await; // participant-joined
    // Bob's socket drops.
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..3 {
        send(
            &mut a,
            json!({"type": "signal", "id": 20 + n, "to": jb["you"], "data": {"n": n}}),
        )
        .await;
        assert_eq!(
            recv(&mut a).await["type"],
            "ack",
            "delivery to a detached participant is accepted"
        );
    }
    // Bob comes back with his resume token: same id, then the buffered signals in order.
    let mut b2 = connect(addr, None).await.unwrap();
    let again = join(&mut b2, "r", "Bob", jb["resume"].as_str()).await;
    assert_eq!(again["you"], jb["you"]);
    assert_eq!(
        again["participants"],
        json!([{"id": ja["you"], "name": "Ann"}])
    );
    for n in 0..3 {
        let m = recv(&mut b2).await;
        assert_eq!(
            (m["type"].as_str(), m["data"]["n"].as_i64()),
            (Some("signal"), Some(n))
        );
    }
    // Ann was never told Bob left.
    send(
        &mut a,
        json!({"type": "chat", "id": 30, "text": "still there?"}),
    )
    .await;
    assert_eq!(recv(&mut a).await["type"], "ack");
    assert_eq!(recv(&mut b2).await["text"], "still there?");
}

#[tokio::test]
async fn a_participant_gone_past_the_grace_period_is_announced_as_left() {
    let (addr, _stop) = server(Limits {
        grace: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr, None).await.unwrap();
    join(&mut a, "g", "Ann", None).await;
    let mut b = connect(addr, None).await.unwrap();
    let jb = join(&mut b, "g", "Bob", None).await;
    let _ = recv(&mut a).await;
    drop(b);
    let left = recv(&mut a).await;
    assert_eq!(
        (left["type"].as_str(), &left["id"]),
        (Some("participant-left"), &jb["you"])
    );
    // The token no longer resumes anything: a new identity.
    let mut b2 = connect(addr, None).await.unwrap();
    let j = join(&mut b2, "g", "Bob", jb["resume"].as_str()).await;
    assert_ne!(j["you"], jb["you"]);
}

#[tokio::test]
async fn oversize_messages_close_the_connection() {
    let (addr, _stop) = server(Limits {
        max_message: 1024,
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr, None).await.unwrap();
    join(&mut a, "o", "Ann", None).await;
    let big = json!({"type": "chat", "id": 2, "text": "x".repeat(4096)}).to_string();
    let _ = a.send(Message::Text(big.into())).await;
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match a.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap();
    assert!(end, "connection closed");
    // The server is fine.
    let mut b = connect(addr, None).await.unwrap();
    assert_eq!(join(&mut b, "o2", "Bob", None).await["type"], "joined");
}

#[tokio::test]
async fn floods_are_rate_limited_per_connection() {
    let (addr, _stop) = server(Limits {
        rate: 5.0,
        burst: 10.0,
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr, None).await.unwrap();
    join(&mut a, "f", "Ann", None).await;
    for i in 0..100 {
        send(&mut a, json!({"type": "ice-servers", "id": 100 + i})).await;
    }
    let mut served = 0;
    let mut limited = 0;
    for _ in 0..100 {
        let m = recv(&mut a).await;
        if m["type"] == "ice-servers" {
            served += 1;
        } else if m["reason"] == "rate limit: slow down" {
            limited += 1;
        }
    }
    assert!(served <= 12, "{served} served of 100");
    assert_eq!(served + limited, 100);
}

#[tokio::test]
async fn wrong_origin_is_refused_and_allowed_origins_pass() {
    let (addr, _stop) = server(Limits::default()).await;
    let err = connect(addr, Some("http://evil.example"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert!(
        connect(addr, Some(&format!("http://{addr}"))).await.is_ok(),
        "same origin"
    );
    assert!(
        connect(addr, Some("https://app.example.org")).await.is_ok(),
        "configured origin"
    );
}

#[tokio::test]
async fn full_rooms_refuse_newcomers_and_bad_names_are_refused() {
    let (addr, _stop) = server(Limits {
        room_size: 2,
        ..Limits::default()
    })
    .await;
    let mut a = connect(addr, None).await.unwrap();
    let mut b = connect(addr, None).await.unwrap();
    let mut c = connect(addr, None).await.unwrap();
    assert_eq!(join(&mut a, "full", "A", None).await["type"], "joined");
    assert_eq!(join(&mut b, "full", "B", None).await["type"], "joined");
    let e = join(&mut c, "full", "C", None).await;
    assert_eq!(
        (e["type"].as_str(), e["reason"].as_str()),
        (Some("error"), Some("room full"))
    );
    let e = join(&mut c, "../etc", "C", None).await;
    assert_eq!(e["type"], "error");
    let e = join(&mut c, "ok", "", None).await;
    assert_eq!(e["type"], "error");
    send(
        &mut c,
        json!({"type": "signal", "id": 5, "to": "x", "data": {}}),
    )
    .await;
    assert_eq!(recv(&mut c).await["reason"], "join a room first");
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
    let mut ws = connect(addr, None).await.unwrap();
    let e = join(&mut ws, &"r".repeat(max + 1), "A", None).await;
    assert_eq!(e["type"], "error");
    assert_eq!(
        join(&mut ws, &"r".repeat(max), "A", None).await["type"],
        "joined"
    );
    // Every module of the page is served as JavaScript.
    for m in ["app.js", "config.js", "signaling.js", "peer.js", "ui.js"] {
        let (status, body) = http_get(addr, &format!("/{m}")).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{m}");
        assert!(body.contains("export") || body.contains("import"), "{m}");
    }
}
