//! Signaling over WebSocket (`/ws`): rooms, participants, and relaying of offers, answers,
//! ICE candidates and chat between them. The protocol (JSON text frames):
//!
//! Requests (client → server), each with an `id` echoed in the answer:
//! - `{"type":"join","id":1,"room":"r","name":"Ann","resume":"<token>"?}` →
//!   `{"type":"joined","id":1,"you":"<pid>","resume":"<token>","room":"r",
//!     "participants":[{"id":"<pid>","name":"Bob"}],"iceServers":[…],"ttl":600}`
//! - `{"type":"signal","id":2,"to":"<pid>","data":{…}}` → `{"type":"ack","id":2}`; the target
//!   gets `{"type":"signal","from":"<pid>","data":{…}}` (`data` is opaque: offer, answer,
//!   candidate).
//! - `{"type":"chat","id":3,"text":"hi"}` → ack; others get
//!   `{"type":"chat","from":"<pid>","name":"Ann","text":"hi"}`.
//! - `{"type":"ice-servers","id":4}` → `{"type":"ice-servers","id":4,"iceServers":[…],"ttl":600}`
//! - `{"type":"leave","id":5}` → ack; others get `{"type":"participant-left","id":"<pid>"}`.
//!
//! Events: `{"type":"participant-joined","participant":{"id","name"}}`,
//! `{"type":"participant-left","id":"<pid>"}`. Errors: `{"type":"error","id":N,"reason":"…"}`.
//!
//! Reconnection: a dropped socket leaves its participant detached for a grace period; a `join`
//! with its `resume` token takes the identity back and receives, in order, what was addressed
//! to it meanwhile. Limits: message size, messages per second, room size, idle timeout with
//! ping/pong; Origin checked at the upgrade. Message bodies are never logged.

use super::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Signaling limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Participants per room.
    pub room_size: usize,
    /// Largest message in bytes.
    pub max_message: usize,
    /// Messages per second per connection (sustained).
    pub rate: f64,
    /// Burst of messages per connection.
    pub burst: f64,
    /// Close a connection silent for this long (pings are sent at a third of it).
    pub idle: Duration,
    /// How long a dropped participant keeps its identity.
    pub grace: Duration,
    /// Messages buffered for a detached participant.
    pub buffer: usize,
    /// Rooms on the server.
    pub max_rooms: usize,
    /// Signaling connections per client IP.
    pub per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            room_size: 8,
            max_message: 64 * 1024,
            rate: 20.0,
            burst: 100.0,
            idle: Duration::from_secs(45),
            grace: Duration::from_secs(20),
            buffer: 256,
            max_rooms: 10_000,
            per_ip: 32,
        }
    }
}

#[derive(Debug)]
struct Participant {
    name: String,
    resume: String,
    /// The live connection: (generation, sender). None while detached.
    tx: Option<(u64, mpsc::Sender<String>)>,
    buffer: VecDeque<String>,
    detached_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Room {
    order: Vec<String>,
    members: HashMap<String, Participant>,
}

/// In-band instruction to a connection task: close the socket.
const CLOSE: &str = "\u{0}close";

/// All rooms.
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    rooms: Mutex<HashMap<String, Room>>,
    next_gen: std::sync::atomic::AtomicU64,
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// Counts a signaling connection against its IP while alive.
struct IpSlot {
    hub: Arc<Hub>,
    ip: std::net::IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.hub.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Longest room name, in bytes.
pub const ROOM_MAX_LEN: usize = 64;
/// Longest display name, in characters.
pub const NAME_MAX_CHARS: usize = 40;
/// Longest chat message, in characters.
pub const CHAT_MAX_CHARS: usize = 2000;
/// The characters of a room name, as the body of a regular-expression character class. The
/// page gets the rule from [`room_pattern`] (served at `/api/config`); [`valid_room`] is the
/// same rule for the server, and a test checks that they agree on every byte.
const ROOM_CLASS: &str = "A-Za-z0-9_-";

/// The room-name rule as a regular expression (for the page's input check).
pub fn room_pattern() -> String {
    format!("^[{ROOM_CLASS}]{{1,{ROOM_MAX_LEN}}}$")
}

fn room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Is `r` an acceptable room name?
pub fn valid_room(r: &str) -> bool {
    !r.is_empty() && r.len() <= ROOM_MAX_LEN && r.bytes().all(room_byte)
}

impl Limits {
    /// The pace the page keeps under these limits (messages per second, burst): three
    /// quarters of the rate and of the burst, so timer jitter never trips the server's bucket.
    pub fn client_pacing(&self) -> (f64, f64) {
        (self.rate * 0.75, (self.burst * 0.75).floor().max(1.0))
    }
}

impl Hub {
    /// A hub with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            rooms: Mutex::default(),
            next_gen: std::sync::atomic::AtomicU64::new(1),
            per_ip: Mutex::default(),
        })
    }

    /// Rooms and participants now (for metrics and tests).
    pub fn counts(&self) -> (usize, usize) {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        (rooms.len(), rooms.values().map(|r| r.members.len()).sum())
    }

    /// Deliver `msg` to `pid` in `room`: live socket, or the buffer while detached.
    fn deliver(p: &mut Participant, msg: String, cap: usize) {
        if let Some((_, tx)) = &p.tx {
            if tx.try_send(msg.clone()).is_ok() {
                return;
            }
        }
        if p.buffer.len() < cap {
            p.buffer.push_back(msg);
        }
    }

    fn broadcast(room: &mut Room, except: &str, msg: &Value, cap: usize) {
        let text = msg.to_string();
        for (id, p) in room.members.iter_mut() {
            if id != except {
                Self::deliver(p, text.clone(), cap);
            }
        }
    }

    /// Rooms with their participants (admin API).
    pub fn snapshot(&self) -> Vec<Value> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Value> = rooms
            .iter()
            .map(|(name, r)| {
                let people: Vec<Value> = r
                    .order
                    .iter()
                    .filter_map(|pid| r.members.get(pid).map(|p| (pid, p)))
                    .map(|(pid, p)| json!({"id": pid, "name": p.name, "connected": p.tx.is_some()}))
                    .collect();
                json!({"room": name, "participants": people})
            })
            .collect();
        v.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
        v
    }

    /// Close a room: its participants are told and disconnected. Returns how many there were.
    pub fn close_room(&self, room: &str) -> usize {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = rooms.remove(room) else {
            return 0;
        };
        let closed = json!({"type": "room-closed"}).to_string();
        for p in r.members.values() {
            if let Some((_, tx)) = &p.tx {
                let _ = tx.try_send(closed.clone());
                let _ = tx.try_send(CLOSE.to_owned());
            }
        }
        tracing::info!(
            room,
            participants = r.members.len(),
            "room closed by an operator"
        );
        r.members.len()
    }

    /// Remove participants detached longer than the grace period; tell the others.
    pub fn sweep(&self, now: Instant) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let cap = self.limits.buffer;
        for room in rooms.values_mut() {
            let gone: Vec<String> = room
                .members
                .iter()
                .filter(|(_, p)| {
                    p.detached_at
                        .is_some_and(|t| now.duration_since(t) > self.limits.grace)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                room.members.remove(&id);
                room.order.retain(|x| *x != id);
                tracing::debug!(participant = %id, "participant left (grace expired)");
                Self::broadcast(
                    room,
                    &id,
                    &json!({"type": "participant-left", "id": id}),
                    cap,
                );
            }
        }
        rooms.retain(|_, r| !r.members.is_empty());
    }

    /// Run [`Hub::sweep`] every second until the hub is dropped.
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
                h.sweep(Instant::now());
            }
        })
    }
}

/// The participant a connection speaks for.
struct Session {
    room: String,
    pid: String,
    generation: u64,
}

/// `GET /ws`: check the Origin, then upgrade.
pub async fn upgrade(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !st.origin_allowed(origin, host) {
        tracing::debug!(client = %peer, "signaling refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let slot = {
        let mut m = st.hub.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(peer.ip()).or_default();
        if *n >= st.hub.limits.per_ip {
            tracing::debug!(client = %peer, "signaling refused: too many connections from this address");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "too many signaling connections\n",
            )
                .into_response();
        }
        *n += 1;
        IpSlot {
            hub: st.hub.clone(),
            ip: peer.ip(),
        }
    };
    let ice_host = st.ice_host(&headers, None);
    let max = st.hub.limits.max_message;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            connection(socket, st, ice_host).await
        })
}

fn error(id: &Value, reason: &str) -> String {
    json!({"type": "error", "id": id, "reason": reason}).to_string()
}

/// Parse one client message: the JSON value and its `type`/`id`, or why it is refused.
pub fn parse_request(text: &str) -> Result<(Value, Req), &'static str> {
    let v: Value = serde_json::from_str(text).map_err(|_| "not JSON")?;
    let req = serde_json::from_value::<Req>(v.clone()).map_err(|_| "missing \"type\"")?;
    Ok((v, req))
}

/// The envelope of a client message.
#[derive(Debug, Deserialize)]
pub struct Req {
    /// Message type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Request id, echoed in the answer.
    #[serde(default)]
    pub id: Value,
}

async fn connection(socket: WebSocket, st: Arc<AppState>, ice_host: String) {
    let hub = st.hub.clone();
    let limits = hub.limits.clone();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(limits.buffer);
    let generation = hub
        .next_gen
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut session: Option<Session> = None;
    let mut tokens = limits.burst;
    let mut last_refill = Instant::now();
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(limits.idle / 3);
    ping.tick().await;
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(msg)) = incoming else { break };
                last_seen = Instant::now();
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    Message::Binary(_) => {
                        let _ = sink.send(Message::Text(error(&Value::Null, "binary frames are not part of the protocol").into())).await;
                        continue;
                    }
                    _ => continue, // ping/pong handled by axum
                };
                // Rate limit: token bucket per connection.
                let now = Instant::now();
                tokens = (tokens + now.duration_since(last_refill).as_secs_f64() * limits.rate).min(limits.burst);
                last_refill = now;
                if tokens < 1.0 {
                    let _ = sink.send(Message::Text(error(&Value::Null, "rate limit: slow down").into())).await;
                    continue;
                }
                tokens -= 1.0;
                let reply = handle(&st, &hub, &limits, &text, &mut session, generation, &tx, &ice_host);
                for r in reply {
                    if sink.send(Message::Text(r.into())).await.is_err() {
                        break;
                    }
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                if out == CLOSE {
                    session = None;
                    break;
                }
                if sink.send(Message::Text(out.into())).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > limits.idle {
                    tracing::debug!("signaling connection idle: closing");
                    break;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    // Detach (not leave): the participant may come back within the grace period.
    if let Some(s) = session {
        let mut rooms = hub.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = rooms
            .get_mut(&s.room)
            .and_then(|r| r.members.get_mut(&s.pid))
        {
            if p.tx.as_ref().is_some_and(|(g, _)| *g == s.generation) {
                p.tx = None;
                p.detached_at = Some(Instant::now());
            }
        }
    }
    let _ = sink.close().await;
}

#[allow(clippy::too_many_arguments)]
fn handle(
    st: &AppState,
    hub: &Hub,
    limits: &Limits,
    text: &str,
    session: &mut Option<Session>,
    generation: u64,
    tx: &mpsc::Sender<String>,
    ice_host: &str,
) -> Vec<String> {
    let (v, req) = match parse_request(text) {
        Ok(x) => x,
        Err(reason) => return vec![error(&Value::Null, reason)],
    };
    let id = req.id;
    let cap = limits.buffer;
    match req.kind.as_str() {
        "join" => {
            if session.is_some() {
                return vec![error(&id, "already joined")];
            }
            let room = v["room"].as_str().unwrap_or("");
            if !valid_room(room) {
                return vec![error(
                    &id,
                    &format!("room must be 1-{ROOM_MAX_LEN} letters, digits, - or _"),
                )];
            }
            let name: String = v["name"]
                .as_str()
                .unwrap_or("")
                .trim()
                .chars()
                .take(NAME_MAX_CHARS)
                .collect();
            if name.is_empty() || name.chars().any(char::is_control) {
                return vec![error(
                    &id,
                    &format!("name must be 1-{NAME_MAX_CHARS} printable characters"),
                )];
            }
            let resume = v["resume"].as_str();
            let mut rooms = hub.rooms.lock().unwrap_or_else(|e| e.into_inner());
            if !rooms.contains_key(room) && rooms.len() >= limits.max_rooms {
                return vec![error(&id, "server full: too many rooms")];
            }
            let r = rooms.entry(room.to_owned()).or_default();
            // Resume an identity within its grace period.
            let resumed = resume.and_then(|tok| {
                r.members
                    .iter()
                    .find(|(_, p)| p.resume == tok)
                    .map(|(pid, _)| pid.clone())
            });
            let (pid, backlog, token) = match resumed {
                Some(pid) => {
                    let p = r.members.get_mut(&pid).expect("found above");
                    p.tx = Some((generation, tx.clone()));
                    p.detached_at = None;
                    p.name = name;
                    let backlog: Vec<String> = p.buffer.drain(..).collect();
                    tracing::debug!(room, participant = %pid, "participant resumed");
                    (pid, backlog, p.resume.clone())
                }
                None => {
                    if r.members.len() >= limits.room_size {
                        if r.members.is_empty() {
                            rooms.remove(room);
                        }
                        return vec![error(&id, "room full")];
                    }
                    let pid = random_hex(8);
                    let token = random_hex(16);
                    r.members.insert(
                        pid.clone(),
                        Participant {
                            name: name.clone(),
                            resume: token.clone(),
                            tx: Some((generation, tx.clone())),
                            buffer: VecDeque::new(),
                            detached_at: None,
                        },
                    );
                    r.order.push(pid.clone());
                    tracing::debug!(room, participant = %pid, "participant joined");
                    Hub::broadcast(
                        r,
                        &pid,
                        &json!({"type": "participant-joined", "participant": {"id": pid, "name": name}}),
                        cap,
                    );
                    (pid, Vec::new(), token)
                }
            };
            let participants: Vec<Value> = r
                .order
                .iter()
                .filter(|p| **p != pid)
                .filter_map(|p| r.members.get(p).map(|m| json!({"id": p, "name": m.name})))
                .collect();
            drop(rooms);
            *session = Some(Session {
                room: room.to_owned(),
                pid: pid.clone(),
                generation,
            });
            let mut out = vec![
                json!({
                    "type": "joined", "id": id, "you": pid, "resume": token, "room": room,
                    "participants": participants,
                    "iceServers": st.participant_ice_servers(ice_host, &pid), "ttl": st.ttl(),
                })
                .to_string(),
            ];
            out.extend(backlog);
            out
        }
        "ice-servers" => {
            let servers = match session.as_ref() {
                Some(s) => st.participant_ice_servers(ice_host, &s.pid),
                None => st.ice_servers(ice_host, "web"),
            };
            vec![
                json!({"type": "ice-servers", "id": id, "iceServers": servers, "ttl": st.ttl()})
                    .to_string(),
            ]
        }
        "signal" | "chat" | "leave" => {
            let Some(s) = session.as_ref() else {
                return vec![error(&id, "join a room first")];
            };
            let mut rooms = hub.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let Some(room) = rooms.get_mut(&s.room) else {
                return vec![error(&id, "room closed")];
            };
            match req.kind.as_str() {
                "signal" => {
                    let to = v["to"].as_str().unwrap_or("");
                    if v.get("data").is_none() {
                        return vec![error(&id, "signal needs data")];
                    }
                    let Some(target) = room.members.get_mut(to).filter(|_| to != s.pid) else {
                        return vec![error(&id, "no such participant")];
                    };
                    let msg =
                        json!({"type": "signal", "from": s.pid, "data": v["data"]}).to_string();
                    Hub::deliver(target, msg, cap);
                }
                "chat" => {
                    let text = v["text"].as_str().unwrap_or("");
                    if text.is_empty() || text.chars().count() > CHAT_MAX_CHARS {
                        return vec![error(
                            &id,
                            &format!("chat text must be 1-{CHAT_MAX_CHARS} characters"),
                        )];
                    }
                    let name = room
                        .members
                        .get(&s.pid)
                        .map(|p| p.name.clone())
                        .unwrap_or_default();
                    Hub::broadcast(
                        room,
                        &s.pid,
                        &json!({"type": "chat", "from": s.pid, "name": name, "text": text}),
                        cap,
                    );
                }
                _ => {
                    room.members.remove(&s.pid);
                    room.order.retain(|x| *x != s.pid);
                    tracing::debug!(participant = %s.pid, "participant left");
                    Hub::broadcast(
                        room,
                        &s.pid,
                        &json!({"type": "participant-left", "id": s.pid}),
                        cap,
                    );
                    if room.members.is_empty() {
                        let name = s.room.clone();
                        rooms.remove(&name);
                    }
                    drop(rooms);
                    *session = None;
                }
            }
            vec![json!({"type": "ack", "id": id}).to_string()]
        }
        _ => vec![error(&id, "unknown type")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes matched by a character-class body made of `x-y` ranges and single characters.
    fn class_matches(class: &str, b: u8) -> bool {
        let c = class.as_bytes();
        let mut i = 0;
        while i < c.len() {
            if i + 2 < c.len() && c[i + 1] == b'-' {
                if (c[i]..=c[i + 2]).contains(&b) {
                    return true;
                }
                i += 3;
            } else {
                if c[i] == b {
                    return true;
                }
                i += 1;
            }
        }
        false
    }

    #[test]
    fn the_room_pattern_served_to_the_page_is_the_servers_rule() {
        for b in 0..=255u8 {
            assert_eq!(class_matches(ROOM_CLASS, b), room_byte(b), "byte {b:#04x}");
        }
        assert_eq!(room_pattern(), "^[A-Za-z0-9_-]{1,64}$");
        assert!(valid_room(&"a".repeat(ROOM_MAX_LEN)));
        assert!(!valid_room(&"a".repeat(ROOM_MAX_LEN + 1)));
        assert!(!valid_room(""));
        assert!(!valid_room("a b"));
    }

    #[test]
    fn the_page_paces_itself_under_the_server_bucket() {
        let l = Limits::default();
        let (rate, burst) = l.client_pacing();
        assert!(rate < l.rate && burst < l.burst && rate > 0.0 && burst >= 1.0);
    }
}
