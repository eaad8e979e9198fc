//! The signaling benchmark's library floor: socketioxide on its own (its rooms, its broadcast,
//! nothing of natpass) doing the same Zoom-clone relaying as `server.mjs` does on Node's
//! socket.io, with the same limits (ping 15 s / timeout 30 s, 64 KiB payloads, room cap).
//! natpass's Socket.IO server is built on socketioxide, so what this costs per connection and
//! per delivery is what natpass cannot go below without replacing the library.
//!
//!   cargo run --release --example sio-bare -- PORT [ROOM_SIZE]    (127.0.0.1:PORT)
//!
//! `SIO_BARE_WS_READ_BUFFER=N` sets Engine.IO's websocket read buffer (default 4096 bytes).
//!
//! join_room(room, done): join, done(), `welcome` to the others; a full room gets
//! done({error: "room full"}). offer/answer/ice(payload, room): relayed to everyone else in
//! that room when the sender is in it. Event handlers run as socketioxide spawns them (it does
//! not keep their order; natpass does, at a cost).

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use std::time::Duration;

fn room_ok(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let room_size: usize = args.next().and_then(|p| p.parse().ok()).unwrap_or(8);
    let (layer, io) = SocketIo::builder()
        .ping_interval(Duration::from_secs(15))
        .ping_timeout(Duration::from_secs(30))
        .max_payload(64 * 1024)
        .ws_read_buffer_size(
            std::env::var("SIO_BARE_WS_READ_BUFFER")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4096),
        )
        .build_layer();
    io.ns("/", async move |s: SocketRef| {
        s.on(
            "join_room",
            async move |s: SocketRef, Data(room): Data<Value>, ack: AckSender| {
                let Some(room) = room.as_str().filter(|r| room_ok(r)).map(str::to_owned) else {
                    let _ =
                        ack.send(&json!({"error": "room must be 1-64 letters, digits, - or _"}));
                    return;
                };
                let members = s.within(room.clone()).sockets();
                if members.len() >= room_size && !members.iter().any(|m| m.id == s.id) {
                    let _ = ack.send(&json!({"error": "room full"}));
                    return;
                }
                s.join(room.clone());
                let _ = ack.send(&[(); 0]);
                let _ = s.to(room).emit("welcome", &[(); 0]).await;
            },
        );
        for event in ["offer", "answer", "ice"] {
            s.on(
                event,
                async move |s: SocketRef, Data((payload, room)): Data<(Value, Value)>| {
                    let Some(room) = room.as_str() else { return };
                    if room != s.id.as_str() && s.rooms().iter().any(|r| r == room) {
                        let _ = s.to(room.to_owned()).emit(event, &payload).await;
                    }
                },
            );
        }
    });
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening {}", listener.local_addr()?.port());
    // Exits on SIGINT (a heap profiler then gets its report).
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
