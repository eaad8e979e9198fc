//! Abuse: the signaling WebSocket (docs/security.md, "Signaling"): cross-site origins, floods,
//! oversize messages, full rooms, too many connections from one address, and markup in names
//! and chat (the page renders text only; the server passes strings through unchanged).

use futures_util::{SinkExt, StreamExt};
use natpass::auth::Secret;
use natpass::web::signaling::Limits;
use natpass::web::{AppState, IceInfo, WebConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

async fn server() -> (
    std::net::SocketAddr,
    std::sync::Arc<natpass::web::signaling::Hub>,
) {
    let cfg = WebConfig {
        ice: IceInfo {
            ports: vec![3478],
            tls_ports: vec![],
            public_host: None,
        },
        secret: Secret::new("s"),
        ttl: 600,
        allowed_origins: vec![],
        signaling: Limits {
            per_ip: 8,
            room_size: 3,
            max_message: 4096,
            ..Limits::default()
        },
        http: natpass::web::limits::HttpLimits::default(),
    };
    let state = AppState::new(cfg);
    let hub = state.hub.clone();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(natpass::web::serve(l, state, std::future::pending()));
    (addr, hub)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: std::net::SocketAddr, origin: Option<&str>) -> Result<Ws, String> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(w, _)| w)
        .map_err(|e| e.to_string())
}

async fn recv(w: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), w.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn signaling_abuse_is_refused_and_bounded() {
    let (addr, hub) = server().await;
    // Cross-site WebSocket hijacking: another origin is refused at the upgrade.
    for o in [
        "http://evil.example",
        "null",
        "https://127.0.0.1.evil.example",
    ] {
        let e = ws(addr, Some(o)).await.unwrap_err();
        assert!(e.contains("403"), "{o}: {e}");
    }
    // Too many connections from one address: the 9th is refused (429).
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(ws(addr, None).await.unwrap());
    }
    let e = ws(addr, None).await.unwrap_err();
    assert!(e.contains("429"), "{e}");
    // Room full at 3.
    for (i, c) in conns.iter_mut().take(3).enumerate() {
        c.send(Message::Text(json!({"type":"join","id":1,"room":"r","name":format!("<img src=x onerror=alert({i})>")}).to_string().into())).await.unwrap();
        let j = recv(c).await;
        assert_eq!(j["type"], "joined");
    }
    let c4 = &mut conns[3];
    c4.send(Message::Text(
        json!({"type":"join","id":1,"room":"r","name":"late"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(recv(c4).await["reason"], "room full");
    // Markup goes through as text (never interpreted by the server; the page uses textContent).
    let ev = recv(&mut conns[0]).await;
    assert_eq!(ev["participant"]["name"], "<img src=x onerror=alert(1)>");
    // Flood: answers are rate limited, the connection survives.
    let c5 = &mut conns[4];
    for i in 0..300 {
        c5.send(Message::Text(
            json!({"type":"ice-servers","id":i}).to_string().into(),
        ))
        .await
        .unwrap();
    }
    let mut limited = 0;
    for _ in 0..300 {
        if recv(c5).await["reason"] == "rate limit: slow down" {
            limited += 1;
        }
    }
    assert!(limited >= 150, "{limited} of 300 refused");
    // Oversize: connection closed, others fine.
    let c6 = &mut conns[5];
    let _ = c6.send(Message::Text("x".repeat(10_000).into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match c6.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert!(closed);
    // Closing connections frees their per-IP slots.
    drop(conns);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Vec::new();
    for _ in 0..8 {
        again.push(ws(addr, None).await.expect("slots freed"));
    }
    let (rooms, people) = hub.counts();
    assert!(rooms <= 1 && people <= 3);
}
