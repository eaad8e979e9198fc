//! A minimal Socket.IO v5 client over Engine.IO v4's WebSocket transport, for the Rust tests of
//! natpass's signaling server (the real `socket.io-client` drives it in tests/e2e). Text
//! packets only: `0` open, `2`/`3` ping/pong, `40` connect (with auth), `44` connect error,
//! `42[...]` event, `42N[...]` event wanting ack N, `43N[...]` ack.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One Socket.IO client connection.
pub struct Sio {
    ws: Ws,
    next_ack: u64,
    /// Events received while waiting for an ack.
    events: VecDeque<(String, Vec<Value>)>,
}

/// Why a connection failed: the HTTP status of a refused upgrade, or the connect error's text.
#[derive(Debug)]
pub enum SioError {
    /// The WebSocket upgrade was refused with this HTTP status.
    Http(u16),
    /// The namespace connect was refused (`44`) with this message.
    Refused(String),
    /// Anything else.
    Other(String),
}

impl Sio {
    /// Connect to `addr` (optionally with an Origin and a handshake `auth`).
    pub async fn connect(
        addr: SocketAddr,
        origin: Option<&str>,
        auth: Option<Value>,
    ) -> Result<Sio, SioError> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let ws = match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                return Err(SioError::Http(r.status().as_u16()));
            }
            Err(e) => return Err(SioError::Other(e.to_string())),
        };
        let mut s = Sio {
            ws,
            next_ack: 1,
            events: VecDeque::new(),
        };
        let open = s
            .raw_recv()
            .await
            .ok_or(SioError::Other("no open packet".into()))?;
        if !open.starts_with('0') {
            return Err(SioError::Other(format!("expected open, got {open}")));
        }
        let connect = match auth {
            Some(a) => format!("40{a}"),
            None => "40".into(),
        };
        s.raw_send(connect).await;
        loop {
            let p = s.raw_recv().await.ok_or(SioError::Other("closed".into()))?;
            if p.starts_with("40") {
                return Ok(s);
            }
            if let Some(e) = p.strip_prefix("44") {
                let v: Value = serde_json::from_str(e).unwrap_or(Value::Null);
                return Err(SioError::Refused(
                    v["message"].as_str().unwrap_or(e).to_owned(),
                ));
            }
            s.queue_event(&p);
        }
    }

    /// Send a text frame as it is (for malformed or oversize input).
    pub async fn raw_send(&mut self, text: String) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// The next Engine.IO text packet (answering pings on the way); `None` when the connection
    /// ends or nothing comes for 3 s.
    async fn raw_recv(&mut self) -> Option<String> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(3), self.ws.next())
                .await
                .ok()??;
            match m.ok()? {
                Message::Text(t) if t.as_str() == "2" => self.raw_send("3".into()).await,
                Message::Text(t) => return Some(t.to_string()),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    fn queue_event(&mut self, p: &str) {
        if let Some(body) = p.strip_prefix("42") {
            if let Ok(Value::Array(mut a)) = serde_json::from_str::<Value>(body) {
                if !a.is_empty() {
                    let name = a.remove(0).as_str().unwrap_or("").to_owned();
                    self.events.push_back((name, a));
                }
            }
        }
    }

    /// Emit an event with one argument, no ack.
    pub async fn emit(&mut self, event: &str, arg: Value) {
        self.raw_send(format!("42{}", json!([event, arg]))).await;
    }

    /// Emit an event with these arguments, no ack.
    pub async fn emit_args(&mut self, event: &str, args: &[Value]) {
        let mut a = vec![json!(event)];
        a.extend_from_slice(args);
        self.raw_send(format!("42{}", Value::Array(a))).await;
    }

    /// Emit with an ack and wait for it (3 s): the ack's arguments.
    pub async fn call_args(&mut self, event: &str, args: &[Value]) -> Vec<Value> {
        let id = self.next_ack;
        self.next_ack += 1;
        let mut a = vec![json!(event)];
        a.extend_from_slice(args);
        self.raw_send(format!("42{id}{}", Value::Array(a))).await;
        let prefix = format!("43{id}");
        loop {
            let p = self
                .raw_recv()
                .await
                .unwrap_or_else(|| panic!("no ack for {event}"));
            if let Some(body) = p.strip_prefix(&prefix) {
                return match serde_json::from_str(body) {
                    Ok(Value::Array(a)) => a,
                    _ => panic!("bad ack {p}"),
                };
            }
            self.queue_event(&p);
        }
    }

    /// Emit one argument with an ack: the ack's first argument.
    pub async fn call(&mut self, event: &str, arg: Value) -> Value {
        self.call_args(event, &[arg])
            .await
            .into_iter()
            .next()
            .unwrap_or(Value::Null)
    }

    /// The next event (3 s): its name and first argument.
    pub async fn next(&mut self) -> (String, Value) {
        let (name, args) = self.next_args().await;
        (name, args.into_iter().next().unwrap_or(Value::Null))
    }

    /// The next event (3 s): its name and every argument; panics when none comes.
    pub async fn next_args(&mut self) -> (String, Vec<Value>) {
        self.try_next().await.expect("an event within 3 s")
    }

    /// The next event within 3 s, or `None` (nothing came, or the connection ended).
    pub async fn try_next(&mut self) -> Option<(String, Vec<Value>)> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let p = self.raw_recv().await?;
            self.queue_event(&p);
        }
    }

    /// Does the connection end within 3 s (reading and dropping whatever comes first)?
    pub async fn closes(&mut self) -> bool {
        let end = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                    Some(Ok(Message::Text(t))) if t.as_str() == "41" => return true,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        end.unwrap_or(false)
    }

    /// Join a room of the call: the ack.
    pub async fn join(&mut self, room: &str, name: &str) -> Value {
        self.call("join", json!({"room": room, "name": name})).await
    }
}
