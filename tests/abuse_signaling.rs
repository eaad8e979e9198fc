//! Abuse: Socket.IO signaling (docs/security.md, "Signaling"): cross-site origins, floods,
//! oversize messages, full rooms, too many connections from one address, and markup in names
//! and chat (the page renders text only; the server passes strings through unchanged).

mod common;

use common::sio::{Sio, SioError};
use natpass::auth::Secret;
use natpass::signal::Limits;
use natpass::web::{AppState, IceInfo, WebConfig};
use serde_json::json;
use std::time::Duration;

async fn server() -> (
    std::net::SocketAddr,
    std::sync::Arc<natpass::web::socketio::Hub>,
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

#[tokio::test]
async fn signaling_abuse_is_refused_and_bounded() {
    let (addr, hub) = server().await;
    // Cross-site WebSocket hijacking: another origin is refused at the upgrade.
    for o in [
        "http://evil.example",
        "null",
        "https://127.0.0.1.evil.example",
    ] {
        let e = Sio::connect(addr, Some(o), None).await.err();
        assert!(matches!(e, Some(SioError::Http(403))), "{o}: {e:?}");
    }
    // Too many connections from one address: the 9th is refused (429).
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(Sio::connect(addr, None, None).await.unwrap());
    }
    assert!(matches!(
        Sio::connect(addr, None, None).await,
        Err(SioError::Http(429))
    ));
    // Room full at 3.
    for (i, c) in conns.iter_mut().take(3).enumerate() {
        let j = c
            .join("r", &format!("<img src=x onerror=alert({i})>"))
            .await;
        assert_eq!(j["ok"], true);
    }
    assert_eq!(conns[3].join("r", "late").await["error"], "room full");
    // Markup goes through as text (never interpreted by the server; the page uses textContent).
    let (_, ev) = conns[0].next().await;
    assert_eq!(ev["name"], "<img src=x onerror=alert(1)>");
    // Flood: answers are rate limited, the connection survives.
    let c5 = &mut conns[4];
    for _ in 0..300 {
        c5.emit("ice-servers", json!({})).await;
    }
    // Accepted events without an ack are not answered; each refused one gets an `error`.
    let mut limited = 0;
    while let Some((name, args)) = c5.try_next().await {
        assert_eq!(name, "error");
        assert_eq!(args[0]["reason"], "rate limit: slow down");
        limited += 1;
        if limited == 300 {
            break;
        }
    }
    assert!(
        (150..=200).contains(&limited),
        "{limited} of 300 refused (burst 100)"
    );
    // Still up; by now the bucket has refilled (the wait for the last error took 3 s).
    assert_eq!(
        c5.call("chat", json!({"text": "x"})).await["error"],
        "join a room first"
    );
    // Oversize: connection closed, others fine.
    let c6 = &mut conns[5];
    c6.raw_send(format!(
        "42[\"chat\",{{\"text\":\"{}\"}}]",
        "x".repeat(10_000)
    ))
    .await;
    assert!(c6.closes().await);
    // Closing connections frees their per-IP slots.
    drop(conns);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Vec::new();
    for _ in 0..8 {
        again.push(Sio::connect(addr, None, None).await.expect("slots freed"));
    }
    let (rooms, people) = hub.counts();
    assert!(rooms <= 1 && people <= 3);
}
