//! Signaling over Socket.IO (Engine.IO v4 / Socket.IO v5: `socket.io-client` 3.x and 4.x) at
//! `/socket.io/`, long-polling and WebSocket with the upgrade, on socketioxide. This file is
//! the transport only: the rooms are [`crate::signal::Rooms`].
//!
//! Events (each with an optional ack as its last argument; acks answer `{ok:true,…}` or
//! `{error}`; an event without an ack that fails gets an `error` event `{reason, event}`):
//! - `join` `{room, name, resume?}` → `{ok, you, resume, room, participants, iceServers, ttl}`
//! - `signal` `{to, data}`, `chat` `{text}`, `ice-servers` `{}`, `leave` `{}`
//! - server → client: `participant-joined`, `participant-left`, `signal`, `chat`,
//!   `room-closed`, `resumed`, `resume-failed`, `error`.
//! - the classic Zoom-clone set: `join_room` (room, ack?) → the others get `welcome`;
//!   `offer`/`answer`/`ice` (payload, room) go to the rest of the room.
//!
//! Resume: a client that connects with `auth: {resume: TOKEN}` takes its identity back before
//! any of its events is handled, then gets `resumed` and what was addressed to it meanwhile.
//!
//! Order: socketioxide runs every event handler in a task of its own, which may run in any
//! order. Signals must keep their order (a candidate must not overtake its description), so
//! every event is handled in the [`Inline`] extractor, which socketioxide calls in arrival
//! order before it spawns anything; the handlers themselves do nothing.
//!
//! Limits: Origin (page origin or `--allow-origin`) and the per-IP connection cap are checked
//! on every HTTP request under `/socket.io/` ([`guard`]), the payload size by Engine.IO, the
//! event rate per socket here; idle sockets are dropped by Engine.IO's ping timeout. Bodies are
//! never logged.

use super::AppState;
use crate::signal::{
    Bucket, CompatEvent, Event, FreshIds, JoinRequest, Joined, Limits, Rooms, SignalError,
};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::handler::message::FromMessageParts;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::{DisconnectReason, Sid, Socket};
use socketioxide::{SocketIo, TransportType};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The `socket.io-client` bundle, vendored from the npm package (see web-demo/vendor/).
pub const CLIENT_BUNDLE: &str = include_str!("../../web-demo/vendor/socket.io.min.js");

/// Rooms, their transport and the per-connection bookkeeping.
pub struct Hub {
    limits: Limits,
    rooms: Mutex<Rooms<Sid>>,
    io: SocketIo,
    layer: SocketIoLayer,
    conns: Mutex<HashMap<Sid, Conn>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    app: OnceLock<Weak<AppState>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One socket's bookkeeping.
#[derive(Debug)]
struct Conn {
    ip: IpAddr,
    bucket: Bucket,
    /// The host to put in its ICE URLs (from its handshake).
    ice_host: String,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn fresh_ids() -> FreshIds {
    FreshIds {
        pid: random_hex(8),
        token: random_hex(16),
    }
}

impl Hub {
    /// A hub with these limits; [`Hub::install`] connects it to the web side's state.
    pub fn new(limits: Limits) -> Arc<Self> {
        let (layer, io) = SocketIo::builder()
            .req_path("/socket.io")
            .ping_interval(limits.idle / 3)
            .ping_timeout(limits.idle * 2 / 3)
            .max_payload(limits.max_message as u64)
            .ws_max_message_size(limits.max_message)
            .ws_max_frame_size(limits.max_message)
            .max_buffer_size(limits.buffer)
            .connect_timeout(Duration::from_secs(10))
            .transports([TransportType::Polling, TransportType::Websocket])
            .build_layer();
        Arc::new(Self {
            rooms: Mutex::new(Rooms::new(limits.clone())),
            limits,
            io,
            layer,
            conns: Mutex::default(),
            per_ip: Mutex::default(),
            app: OnceLock::new(),
        })
    }

    /// The tower layer serving `/socket.io/`.
    pub fn layer(&self) -> SocketIoLayer {
        self.layer.clone()
    }

    /// Register the namespace's handlers for `app` (once; later calls do nothing).
    pub fn install(self: &Arc<Self>, app: &Arc<AppState>) {
        if self.app.set(Arc::downgrade(app)).is_err() {
            return;
        }
        let hub = Arc::downgrade(self);
        let admit = {
            let hub = hub.clone();
            async move |s: SocketRef, TryData(auth): TryData<Value>| -> Result<(), Refusal> {
                let Some(hub) = hub.upgrade() else {
                    return Ok(());
                };
                hub.admit(&s, auth.ok())
            }
        };
        let connected = async move |s: SocketRef| {
            let Some(hub) = hub.upgrade() else {
                return;
            };
            hub.connected(&s);
        };
        self.io.ns("/", connected.with(admit));
    }

    fn me(&self) -> Weak<Hub> {
        self.app
            .get()
            .and_then(Weak::upgrade)
            .map(|app| Arc::downgrade(&app.hub))
            .unwrap_or_default()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms<Sid>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<Sid, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rooms and participants now (metrics and admin).
    pub fn counts(&self) -> (usize, usize) {
        self.rooms().counts()
    }

    /// Rooms with their participants (admin API).
    pub fn snapshot(&self) -> Vec<Value> {
        self.rooms().snapshot()
    }

    /// Close a room: its participants are told and disconnected. Returns how many there were
    /// (connected ones), or 0 when there is no such room.
    pub fn close_room(&self, room: &str) -> usize {
        let conns = self.rooms().close_room(room).unwrap_or_default();
        for sid in &conns {
            if let Some(s) = self.io.get_socket(*sid) {
                let _ = s.emit("room-closed", &json!({}));
                let _ = s.disconnect();
            }
        }
        tracing::info!(
            room,
            participants = conns.len(),
            "room closed by an operator"
        );
        conns.len()
    }

    /// Forget participants past their grace period every half second until the hub goes.
    pub fn spawn_sweeper(hub: Arc<Hub>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&hub);
        drop(hub);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(500));
            loop {
                t.tick().await;
                let Some(h) = weak.upgrade() else {
                    return;
                };
                let out = h.rooms().sweep(Instant::now());
                h.send(out);
            }
        })
    }

    /// Would another socket from `ip` be refused?
    fn ip_full(&self, ip: IpAddr) -> bool {
        let m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&ip).copied().unwrap_or(0) >= self.limits.per_ip
    }

    /// A socket is connecting (before its connect packet): count it, and take its identity
    /// back when its handshake carries a resume token.
    fn admit(&self, s: &SocketRef, auth: Option<Value>) -> Result<(), Refusal> {
        let parts = s.req_parts();
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        // The HTTP guard refused handshakes over the cap; this closes the race between two
        // handshakes of one address at the same moment.
        if self.ip_full(ip) {
            return Err(Refusal::TooManyConnections);
        }
        let ice_host = self.app.get().and_then(Weak::upgrade).map_or_else(
            || "localhost".into(),
            |app| app.ice_host(&parts.headers, None),
        );
        *self
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_default() += 1;
        self.conns().insert(
            s.id,
            Conn {
                ip,
                bucket: Bucket::new(&self.limits, Instant::now()),
                ice_host,
            },
        );
        let token = auth
            .as_ref()
            .and_then(|a| a.get("resume"))
            .and_then(Value::as_str);
        s.extensions.insert(HubRef(self.me()));
        if let Some(token) = token {
            s.extensions
                .insert(Resume(self.rooms().attach(s.id, token)));
        }
        let hub = self.app.get().cloned();
        s.on_disconnect(async move |s: SocketRef, reason: DisconnectReason| {
            tracing::debug!(sid = %s.id, ?reason, "signaling socket closed");
            if let Some(app) = hub.as_ref().and_then(Weak::upgrade) {
                app.hub.closed(s.id);
            }
        });
        for event in EVENTS {
            s.on(*event, async |_: Inline| {});
        }
        Ok(())
    }

    /// The connect packet is out: answer a resume.
    fn connected(&self, s: &SocketRef) {
        match s.extensions.get::<Resume>() {
            Some(Resume(true)) => self.flush_resume(s.id),
            Some(Resume(false)) => {
                let _ = s.emit("resume-failed", &json!({}));
            }
            None => {}
        }
    }

    /// Send `resumed` and the backlog, once, before anything else reaches the socket.
    fn flush_resume(&self, sid: Sid) {
        let mut rooms = self.rooms();
        let Some(joined) = rooms.activate(&sid) else {
            return;
        };
        // Under the lock: nothing for this participant can be sent between the answer and
        // its backlog.
        if let Some(s) = self.io.get_socket(sid) {
            let body = self.joined_body(sid, &joined);
            let _ = s.emit("resumed", &body);
            for e in &joined.backlog {
                emit(&s, e);
            }
        }
    }

    /// A socket is gone: its participant keeps its identity for the grace period.
    fn closed(&self, sid: Sid) {
        if let Some(c) = self.conns().remove(&sid) {
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&c.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&c.ip);
                }
            }
        }
        let out = self.rooms().detach(&sid, Instant::now());
        self.send(out);
    }

    /// Send what the room engine handed back. A socket that cannot take more (its buffer is
    /// full) is closed: its participant is detached and gets the rest when it resumes.
    fn send(&self, out: Vec<(Sid, Event)>) {
        for (sid, e) in out {
            match self.io.get_socket(sid) {
                Some(s) => {
                    if !emit(&s, &e) {
                        tracing::debug!(%sid, "signaling socket not keeping up: closing it");
                        let _ = s.disconnect();
                    }
                }
                None => {
                    let out = self.rooms().detach(&sid, Instant::now());
                    self.send(out);
                }
            }
        }
    }

    fn joined_body(&self, sid: Sid, j: &Joined) -> Value {
        let app = self.app.get().and_then(Weak::upgrade);
        let host = self
            .conns()
            .get(&sid)
            .map(|c| c.ice_host.clone())
            .unwrap_or_default();
        let (servers, ttl) = match &app {
            Some(app) => (json!(app.participant_ice_servers(&host, &j.you)), app.ttl()),
            None => (json!([]), 0),
        };
        let participants: Vec<Value> = j
            .participants
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect();
        json!({
            "ok": true, "you": j.you, "resume": j.resume, "room": j.room,
            "participants": participants, "iceServers": servers, "ttl": ttl,
        })
    }

    /// Handle one event of `s`, in arrival order, and answer it: the ack when the client asked
    /// for one, else an `error` event when it failed.
    fn handle(&self, s: &SocketRef, event: &str, args: Vec<Value>, ack: Option<AckSender>) {
        let sid = s.id;
        // A resumed socket's answer goes out before the answer to its first event.
        self.flush_resume(sid);
        let allowed = self
            .conns()
            .get_mut(&sid)
            .is_some_and(|c| c.bucket.take(&self.limits, Instant::now()));
        let mut ack = ack;
        let result = if allowed {
            self.dispatch(s, event, args, &mut ack)
        } else {
            Err(Refusal::RateLimited)
        };
        match (result, ack) {
            (Ok(Reply::Sent), _) => {}
            (Ok(Reply::Ack(v)), Some(ack)) => {
                let _ = ack.send(&v);
            }
            (Ok(Reply::Done), Some(ack)) => {
                let _ = ack.send(&[(); 0]);
            }
            (Ok(_), None) => {}
            (Err(e), Some(ack)) => {
                let _ = ack.send(&json!({"error": e.to_string()}));
            }
            (Err(e), None) => {
                let _ = s.emit("error", &json!({"reason": e.to_string(), "event": event}));
            }
        }
    }

    fn dispatch(
        &self,
        s: &SocketRef,
        event: &str,
        args: Vec<Value>,
        ack: &mut Option<AckSender>,
    ) -> Result<Reply, Refusal> {
        let sid = s.id;
        let arg = args.first().cloned().unwrap_or(Value::Null);
        let text = |k: &str| arg.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let now = Instant::now();
        let ok = || Reply::Ack(json!({"ok": true}));
        Ok(match event {
            "join" => {
                let req = JoinRequest {
                    room: text("room"),
                    name: text("name"),
                    resume: arg.get("resume").and_then(Value::as_str).map(str::to_owned),
                };
                // Under the lock until the backlog is out: nothing addressed to this participant
                // may overtake its answer or its backlog.
                let mut rooms = self.rooms();
                let (joined, out) = rooms.join(sid, req, fresh_ids(), now)?;
                tracing::debug!(participant = %joined.you, resumed = joined.resumed, "participant joined");
                let body = self.joined_body(sid, &joined);
                match ack.take() {
                    Some(a) => {
                        let _ = a.send(&body);
                    }
                    None => {
                        let _ = s.emit("joined", &body);
                    }
                }
                for e in &joined.backlog {
                    emit(s, e);
                }
                drop(rooms);
                self.send(out);
                Reply::Sent
            }
            "signal" => {
                let data = arg
                    .get("data")
                    .cloned()
                    .ok_or(SignalError::NoSuchParticipant)?;
                let out = self.rooms().signal(&sid, &text("to"), data)?;
                self.send(out);
                ok()
            }
            "chat" => {
                let out = self.rooms().chat(&sid, &text("text"))?;
                self.send(out);
                ok()
            }
            "ice-servers" => {
                let app = self.app.get().and_then(Weak::upgrade);
                let host = self
                    .conns()
                    .get(&sid)
                    .map(|c| c.ice_host.clone())
                    .unwrap_or_default();
                let pid = self.rooms().participant(&sid).map(str::to_owned);
                let (servers, ttl) = match (&app, pid) {
                    (Some(app), Some(pid)) => {
                        (json!(app.participant_ice_servers(&host, &pid)), app.ttl())
                    }
                    (Some(app), None) => (json!(app.ice_servers(&host, "web")), app.ttl()),
                    (None, _) => (json!([]), 0),
                };
                Reply::Ack(json!({"ok": true, "iceServers": servers, "ttl": ttl}))
            }
            "leave" => {
                let out = self.rooms().leave(&sid)?;
                self.send(out);
                ok()
            }
            "join_room" => {
                let room = arg.as_str().unwrap_or("");
                let out = self.rooms().join_compat(sid, room, fresh_ids())?;
                self.send(out);
                Reply::Done
            }
            "offer" | "answer" | "ice" => {
                let kind = match event {
                    "offer" => CompatEvent::Offer,
                    "answer" => CompatEvent::Answer,
                    _ => CompatEvent::Ice,
                };
                let room = args.get(1).and_then(Value::as_str).unwrap_or("");
                let out = self.rooms().relay_compat(&sid, room, kind, arg.clone())?;
                self.send(out);
                Reply::Done
            }
            _ => return Err(Refusal::UnknownEvent),
        })
    }
}

/// What a handled event answers.
enum Reply {
    /// The ack's value.
    Ack(Value),
    /// An ack without arguments (the compatibility set's `done()`).
    Done,
    /// Already answered.
    Sent,
}

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Room(#[from] SignalError),
    #[error("rate limit: slow down")]
    RateLimited,
    #[error("unknown event")]
    UnknownEvent,
    #[error("too many signaling connections from this address")]
    TooManyConnections,
}

/// Whether the handshake's resume token was taken.
#[derive(Debug, Clone, Copy)]
struct Resume(bool);

/// The events a socket may send.
const EVENTS: &[&str] = &[
    "join",
    "signal",
    "chat",
    "ice-servers",
    "leave",
    "join_room",
    "offer",
    "answer",
    "ice",
];

/// Send one event; false when the socket cannot take it.
fn emit(s: &SocketRef, e: &Event) -> bool {
    let r = match e.body() {
        Some(body) => s.emit(e.name(), &body),
        // No argument at all (an empty tuple), not one `null`.
        None => s.emit(e.name(), &[(); 0]),
    };
    r.is_ok()
}

/// Every argument of an event, as sent.
struct Args(Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<Value>()? {
                    v.push(x);
                }
                Ok(Args(v))
            }
        }
        // A tuple, so socketioxide hands over every argument and not only the first.
        d.deserialize_tuple(usize::MAX, V)
    }
}

/// The extractor that handles the event. socketioxide calls extractors in arrival order,
/// before it spawns the handler's task; the work is done here, so events are handled in the
/// order the client sent them.
struct Inline;

impl FromMessageParts<LocalAdapter> for Inline {
    type Error = Infallible;
    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut socketioxide_core::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let sock = SocketRef::from(s.clone());
        let Some(hub) = sock.extensions.get::<HubRef>().and_then(|h| h.0.upgrade()) else {
            return Ok(Inline);
        };
        let event = socketioxide::extract::Event::from_message_parts(s, v, ack_id)
            .map(|e| e.0)
            .unwrap_or_default();
        let args = match TryData::<Args>::from_message_parts(s, v, ack_id) {
            Ok(TryData(Ok(Args(a)))) => a,
            _ => Vec::new(),
        };
        let ack = match ack_id {
            Some(_) => AckSender::from_message_parts(s, v, ack_id).ok(),
            None => None,
        };
        hub.handle(&sock, &event, args, ack);
        Ok(Inline)
    }
}

/// The hub, as a socket's extension (weak: the hub owns the sockets).
#[derive(Clone)]
struct HubRef(Weak<Hub>);

/// HTTP guard in front of `/socket.io/`: the client bundle, then the Origin rule and the
/// per-IP connection cap for handshakes (a request without a `sid`).
pub async fn guard(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/socket.io") {
        return next.run(req).await;
    }
    if path == "/socket.io/socket.io.js" || path == "/socket.io/socket.io.min.js" {
        return (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            CLIENT_BUNDLE,
        )
            .into_response();
    }
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !app.origin_allowed(origin, host) {
        tracing::debug!("signaling refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let handshake = !req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv.starts_with("sid="));
    if handshake {
        let ip = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if ip.is_some_and(|ip| app.hub.ip_full(ip)) {
            tracing::debug!("signaling refused: too many connections from this address");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many signaling connections\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}
