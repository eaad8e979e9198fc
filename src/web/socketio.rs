//! Signaling over Socket.IO (Engine.IO v4 / Socket.IO v5: `socket.io-client` 3.x and 4.x) at
//! `/socket.io/`, long-polling and WebSocket with the upgrade, on socketioxide. This file is
//! the transport only: the rooms are [`crate::signal::Rooms`], driven by
//! [`crate::signal::driver`] on this node or, with `--redis`, on the elected node
//! ([`super::cluster`]).
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
use super::cluster::{Change, Cluster};
use crate::sfu::core::Notice;
use crate::sfu::shell::{SfuHandle, ShellError};
use crate::signal::driver::{self, Endpoint, Op, Out, SfuOp};
use crate::signal::{Bucket, Event, FreshIds, Limits, Rooms};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The `socket.io-client` bundle, vendored from the npm package (see web-demo/vendor/).
pub const CLIENT_BUNDLE: &str = include_str!("../../web-demo/vendor/socket.io.min.js");

/// Rooms, their transport and the per-connection bookkeeping.
pub struct Hub {
    limits: Limits,
    /// The rooms, when this node keeps them (always without Redis).
    rooms: Mutex<Rooms<Endpoint>>,
    io: SocketIo,
    layer: SocketIoLayer,
    conns: Mutex<HashMap<Sid, Conn>>,
    per_ip: Mutex<HashMap<IpAddr, IpCount>>,
    /// Sockets closed for not keeping up: room events for them go back to the keeper.
    bouncing: Mutex<std::collections::HashSet<Sid>>,
    /// Acks waiting for the room keeper's answer, by (socket, number).
    acks: Mutex<HashMap<(Sid, u64), AckSender>>,
    next_ack: AtomicU64,
    app: OnceLock<Weak<AppState>>,
    /// This node's id (in every [`Endpoint`] of its sockets).
    node: String,
    cluster: OnceLock<Arc<Cluster>>,
    /// This node's SFU (rooms past mesh-size meet there while this node keeps the rooms).
    sfu: OnceLock<Arc<SfuHandle>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("limits", &self.limits)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// One socket's bookkeeping.
#[derive(Debug)]
struct Conn {
    ip: IpAddr,
    /// When its namespace connect was admitted.
    since: Instant,
    bucket: Bucket,
    /// The host to put in its ICE URLs (from its handshake).
    ice_host: String,
}

/// Engine.IO sessions of one client address: connected ones, and handshakes still inside
/// their connect timeout (when they connect, or when Engine.IO drops them, they leave).
#[derive(Debug, Default)]
struct IpCount {
    live: usize,
    pending: std::collections::VecDeque<Instant>,
}

/// Engine.IO's websocket read buffer, per socket.
const WS_READ_BUFFER: usize = 512;

/// How long a new Engine.IO session may take to connect to the namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What nodes send each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Bus {
    /// For the room keeper.
    Op(Op),
    /// For sockets on the receiving node, in order.
    Outs(Vec<Out>),
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
            // Engine.IO's default is 4 KiB, kept by every idle websocket; frames of any size
            // are still read whole (the buffer grows for a frame it knows the length of).
            // Measured: 3.6 KiB less per idle client (scripts/bench-signaling.sh, sio-bare).
            .ws_read_buffer_size(WS_READ_BUFFER)
            .connect_timeout(CONNECT_TIMEOUT)
            .transports([TransportType::Polling, TransportType::Websocket])
            .build_layer();
        Arc::new(Self {
            rooms: Mutex::new(Rooms::new(limits.clone())),
            limits,
            io,
            layer,
            conns: Mutex::default(),
            per_ip: Mutex::default(),
            acks: Mutex::default(),
            bouncing: Mutex::default(),
            next_ack: AtomicU64::new(1),
            app: OnceLock::new(),
            node: random_hex(6),
            cluster: OnceLock::new(),
            sfu: OnceLock::new(),
        })
    }

    /// Use this SFU for the rooms that move to it; its notices (offers, sessions lost) go to
    /// the participants they name.
    pub fn set_sfu(self: &Arc<Self>, sfu: Arc<SfuHandle>, mut notices: mpsc::Receiver<Notice>) {
        if self.sfu.set(sfu).is_err() {
            return;
        }
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(n) = notices.recv().await {
                let Some(hub) = hub.upgrade() else {
                    return;
                };
                hub.on_sfu_notice(n);
            }
        });
    }

    /// An offer of the SFU, or a session it lost, for the participant it names (on the node
    /// that keeps the rooms; elsewhere the rooms are not here and nor are SFU sessions).
    fn on_sfu_notice(&self, n: Notice) {
        if !self.keeper() {
            return;
        }
        let mut rooms = self.rooms();
        let out = match n {
            Notice::Offer { room, to, sdp } => {
                driver::sfu_event(&mut rooms, &room, &to, Event::SfuOffer { sdp })
            }
            Notice::Gone { room, pid } => {
                driver::sfu_event(&mut rooms, &room, &pid, Event::SfuRestart)
            }
            Notice::Speaker { room, pid } => driver::sfu_speaker(&mut rooms, &room, &pid),
            Notice::Chat {
                room,
                to,
                from,
                text,
            } => driver::sfu_chat(&mut rooms, &room, &to, &from, &text),
        };
        for (sid, events) in self.apply(out) {
            let from = self.endpoint(sid);
            self.run_local(&mut rooms, Op::Bounced { from, events });
        }
    }

    /// Carry out a request for the SFU (made by the room keeper, which is this node); its
    /// answer goes to the socket that asked, wherever it is.
    fn run_sfu(&self, to: Endpoint, ack: Option<u64>, op: SfuOp) {
        let Some(sfu) = self.sfu.get().cloned() else {
            if let Some(ack) = ack {
                let args = vec![json!({"error": ShellError::Stopped.to_string()})];
                drop(self.apply(vec![Out::Ack { to, ack, args }]));
            }
            return;
        };
        let (room, pid, sdp, join) = match op {
            SfuOp::Leave { room, pid } => {
                if let Err(e) = sfu.leave(&room, &pid) {
                    tracing::debug!(%room, %pid, error = %e, "SFU leave not queued");
                }
                return;
            }
            SfuOp::Pin { room, pid, target } => {
                if let Err(e) = sfu.pin(&room, &pid, target.as_deref()) {
                    tracing::debug!(%room, %pid, error = %e, "SFU pin not queued");
                }
                return;
            }
            SfuOp::Join { room, pid, sdp } => (room, pid, sdp, true),
            SfuOp::Answer { room, pid, sdp } => (room, pid, sdp, false),
        };
        let hub = self.me();
        tokio::spawn(async move {
            let reply = if join {
                sfu.join(&room, &pid, &sdp)
                    .await
                    .map(|answer| json!({"ok": true, "sdp": answer}))
            } else {
                sfu.answer(&room, &pid, &sdp)
                    .await
                    .map(|()| json!({"ok": true}))
            };
            let args = vec![reply.unwrap_or_else(|e| json!({"error": e.to_string()}))];
            if let (Some(ack), Some(hub)) = (ack, hub.upgrade()) {
                drop(hub.apply(vec![Out::Ack { to, ack, args }]));
            }
        });
    }

    /// Share the rooms with every node on the same Redis (once, before serving).
    pub fn join_cluster(self: &Arc<Self>, cluster: Arc<Cluster>) {
        if self.cluster.set(cluster.clone()).is_err() {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        cluster.spawn(tx);
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let Some(hub) = hub.upgrade() else {
                    return;
                };
                hub.on_change(change);
            }
        });
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        self.cluster.get().map_or(&self.node, |c| c.node())
    }

    /// Can signaling work now? (False while Redis is unreachable.)
    pub fn ready(&self) -> bool {
        self.cluster
            .get()
            .is_none_or(|c| c.healthy() && c.leader().is_some())
    }

    /// Does this node keep the rooms?
    fn keeper(&self) -> bool {
        self.cluster.get().is_none_or(|c| c.is_leader())
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
            let tried = s.extensions.get::<Resume>().is_some();
            let from = hub.endpoint(s.id);
            hub.submit(Op::Activate { from, tried });
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

    fn endpoint(&self, sid: Sid) -> Endpoint {
        Endpoint {
            node: self.node().to_owned(),
            sid: sid.to_string(),
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms<Endpoint>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<Sid, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rooms and participants now, as kept here (metrics and admin; on a node that does not
    /// keep the rooms, none).
    pub fn counts(&self) -> (usize, usize) {
        self.rooms().counts()
    }

    /// Rooms with their participants (admin API; on the node that keeps them).
    pub fn snapshot(&self) -> Vec<Value> {
        self.rooms().snapshot()
    }

    /// Close a room: its participants are told and disconnected. Returns how many there were
    /// (connected ones), or 0 when there is no such room here.
    pub fn close_room(&self, room: &str) -> usize {
        let mut rooms = self.rooms();
        let mut out = driver::close_room(&mut rooms, room);
        let n = out.len() / 2;
        driver::sfu_left(&mut rooms, &mut out);
        // Closing sockets: what they miss has nowhere to go.
        drop(self.apply(out));
        drop(rooms);
        tracing::info!(room, participants = n, "room closed by an operator");
        n
    }

    /// Forget participants past their grace period every half second until the hub goes.
    pub fn spawn_sweeper(hub: Arc<Hub>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&hub);
        drop(hub);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(500));
            for round in 0u64.. {
                t.tick().await;
                let Some(h) = weak.upgrade() else {
                    return;
                };
                if round % 4 == 0 {
                    h.detach_gone_nodes().await;
                }
                if h.keeper() {
                    let mut rooms = h.rooms();
                    let mut out = Vec::new();
                    driver::deliveries(&mut out, rooms.sweep(Instant::now()));
                    driver::sfu_left(&mut rooms, &mut out);
                    for (sid, events) in h.apply(out) {
                        let from = h.endpoint(sid);
                        h.run_local(&mut rooms, Op::Bounced { from, events });
                    }
                }
                h.prune();
            }
        })
    }

    /// On the leader: detach the participants held by nodes that stopped renewing their
    /// liveness key (killed, or cut off from Redis). They leave after the grace period unless
    /// they resume on a node that is alive.
    async fn detach_gone_nodes(&self) {
        let Some(c) = self.cluster.get().filter(|c| c.is_leader()) else {
            return;
        };
        let me = self.node();
        let mut nodes: Vec<String> = self
            .rooms()
            .connections()
            .filter(|e| e.node != me)
            .map(|e| e.node.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        if nodes.is_empty() {
            return;
        }
        let gone = match c.gone(nodes).await {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = %e, "node liveness not readable");
                return;
            }
        };
        if gone.is_empty() || !self.keeper() {
            return;
        }
        let mut rooms = self.rooms();
        let held: Vec<Endpoint> = rooms
            .connections()
            .filter(|e| gone.contains(&e.node))
            .cloned()
            .collect();
        tracing::info!(nodes = ?gone, participants = held.len(), "signaling nodes gone: their participants are detached");
        for from in held {
            self.run_local(&mut rooms, Op::Detach { from });
        }
    }

    /// Forget what sockets that are gone left behind without a disconnect: a socket whose
    /// connect failed after it was admitted (its session closed at that moment) never reaches
    /// [`Hub::closed`], and would hold its per-IP slot and its participant for good. Also drop
    /// per-IP entries with nothing left in them, and marks of sockets no longer there.
    fn prune(&self) {
        let now = Instant::now();
        let gone: Vec<Sid> = self
            .conns()
            .iter()
            .filter(|(sid, c)| {
                now.saturating_duration_since(c.since) > CONNECT_TIMEOUT
                    && self.io.get_socket(**sid).is_none()
            })
            .map(|(sid, _)| *sid)
            .collect();
        for sid in gone {
            tracing::debug!(%sid, "signaling socket gone without a disconnect: cleaned up");
            self.closed(sid);
        }
        self.per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| {
                while c
                    .pending
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > CONNECT_TIMEOUT)
                {
                    c.pending.pop_front();
                }
                c.live > 0 || !c.pending.is_empty()
            });
        self.bouncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|sid| self.io.get_socket(*sid).is_some());
    }

    /// Run `op` where the rooms are kept: here, under the lock, with what it causes sent
    /// before the lock is released (so two requests' sends never interleave); or on the
    /// leader, through Redis, in order with this node's other requests.
    fn submit(&self, op: Op) {
        if self.keeper() {
            let mut rooms = self.rooms();
            self.run_local(&mut rooms, op);
            return;
        }
        match self.cluster.get().and_then(|c| c.leader().map(|l| (c, l))) {
            Some((c, leader)) => c.publish(&leader, bus_text(&Bus::Op(op))),
            None => {
                // No leader yet (Redis just restarted): the client's ack times out, or it is
                // reconnected when one is elected.
                tracing::debug!("signaling request while no node keeps the rooms");
            }
        }
    }

    /// Run `op` on the rooms kept here and send what it causes, with the lock held: what a
    /// full socket could not take goes back into its participant's buffer before anything
    /// else can be sent.
    fn run_local(&self, rooms: &mut Rooms<Endpoint>, op: Op) {
        // Each bounce detaches a connection or buffers for a detached participant, so this
        // ends: what it causes can bounce only from the sockets still attached.
        let mut queue = std::collections::VecDeque::from([op]);
        while let Some(next) = queue.pop_front() {
            let out = driver::execute(rooms, next, &mut fresh_ids, Instant::now());
            for (sid, events) in self.apply(out) {
                let from = self.endpoint(sid);
                queue.push_back(Op::Bounced { from, events });
            }
        }
    }

    /// Send what the room keeper handed back: to this node's sockets, or to the nodes that
    /// hold the others. Returns, per socket of this node that could not take them, the room
    /// events it missed (in order).
    fn apply(&self, out: Vec<Out>) -> Vec<(Sid, Vec<Event>)> {
        let mut remote: HashMap<String, Vec<Out>> = HashMap::new();
        let mut bounced: Vec<(Sid, Vec<Event>)> = Vec::new();
        for o in out {
            if let Out::Sfu { to, ack, op } = o {
                self.run_sfu(to, ack, op);
            } else if o.to().node == self.node() {
                self.deliver(o, &mut bounced);
            } else {
                remote.entry(o.to().node.clone()).or_default().push(o);
            }
        }
        if let Some(c) = self.cluster.get() {
            for (node, outs) in remote {
                c.publish(&node, bus_text(&Bus::Outs(outs)));
            }
        }
        bounced
    }

    /// One send to a socket of this node. A socket that cannot take a room event (its buffer
    /// is full: the client stopped reading) is closed, and that event and every later one for
    /// it go to `bounced`, to be kept for its resume.
    fn deliver(&self, o: Out, bounced: &mut Vec<(Sid, Vec<Event>)>) {
        let Ok(sid) = o.to().sid.parse::<Sid>() else {
            return;
        };
        let socket = self.io.get_socket(sid);
        match (o, &socket) {
            (Out::Event { event, .. }, Some(s)) => {
                let full = self
                    .bouncing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&sid);
                if full || !emit(s, event.name(), event.body()) {
                    if !full {
                        tracing::debug!(%sid, "signaling socket not keeping up: closing it");
                        self.bouncing
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(sid);
                        let _ = s.clone().disconnect();
                    }
                    keep_for(bounced, sid, event);
                }
            }
            (Out::Emit { event, body, .. }, Some(s)) => {
                emit(s, &event, body);
            }
            (Out::Ack { ack, args, .. }, _) => {
                let sender = self
                    .acks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(sid, ack));
                if let Some(a) = sender {
                    let _ = a.send(&Args(args));
                }
            }
            (
                Out::Joined {
                    ack, event, joined, ..
                },
                Some(s),
            ) => {
                s.extensions.insert(Pid(joined.you.clone()));
                let body = self.joined_body(sid, &joined);
                let sender = ack.and_then(|n| {
                    self.acks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(sid, n))
                });
                let _ = match sender {
                    Some(a) => a.send(&body).is_ok(),
                    None => s.emit(event.as_str(), &body).is_ok(),
                };
            }
            (Out::Close { .. }, Some(s)) => {
                let _ = s.clone().disconnect();
            }
            (Out::Sfu { to, ack, op }, _) => {
                // Carried out where it is made (see `apply`); never sent between nodes.
                self.run_sfu(to, ack, op);
            }
            (Out::Event { event, .. }, None) => {
                // Gone meanwhile (its detach may have reached the room keeper already): the
                // event goes back, to wait for the participant's resume.
                keep_for(bounced, sid, event);
            }
            (_, None) => {
                // Gone meanwhile: the room keeper hears of it from its disconnect.
            }
        }
    }

    /// A message from Redis, a new leader, or Redis back after an outage.
    fn on_change(&self, change: Change) {
        match change {
            Change::Message(text) => match serde_json::from_str::<Bus>(&text) {
                Ok(Bus::Op(op)) if self.keeper() => {
                    let mut rooms = self.rooms();
                    self.run_local(&mut rooms, op);
                }
                Ok(Bus::Op(_)) => {
                    tracing::debug!("a signaling request for a former leader: dropped")
                }
                Ok(Bus::Outs(outs)) => {
                    let mut bounced = Vec::new();
                    for o in outs {
                        self.deliver(o, &mut bounced);
                    }
                    for (sid, events) in bounced {
                        self.submit(Op::Bounced {
                            from: self.endpoint(sid),
                            events,
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "unreadable message from another node"),
            },
            Change::Leader(me) => {
                // The rooms of the previous leader are gone: start over with empty rooms here,
                // and have every client here reconnect (and join the rooms afresh).
                *self.rooms() = Rooms::new(self.limits.clone());
                tracing::info!(
                    keeper = me,
                    "signaling rooms start over after a leader change"
                );
                self.restart_sockets();
            }
            Change::Recovered => self.restart_sockets(),
        }
    }

    /// Close every signaling socket of this node: clients reconnect and resume by themselves.
    fn restart_sockets(&self) {
        for s in self.io.sockets() {
            let _ = s.disconnect();
        }
    }

    /// An Engine.IO handshake from `ip` (a new session): allowed while the address holds
    /// fewer than `per_ip` sessions, connected or still in their connect timeout.
    fn handshake(&self, ip: IpAddr) -> bool {
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(ip).or_default();
        let now = Instant::now();
        while c
            .pending
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > CONNECT_TIMEOUT)
        {
            c.pending.pop_front();
        }
        if c.live + c.pending.len() >= self.limits.per_ip {
            if c.live == 0 && c.pending.is_empty() {
                m.remove(&ip);
            }
            return false;
        }
        c.pending.push_back(now);
        true
    }

    /// A socket is connecting (before its connect packet): count it, and take its identity
    /// back when its handshake carries a resume token.
    fn admit(&self, s: &SocketRef, auth: Option<Value>) -> Result<(), Refusal> {
        let parts = s.req_parts();
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        {
            // Its session was counted as pending at the handshake; now it is connected (or
            // refused: either way no longer pending).
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let c = m.entry(ip).or_default();
            c.pending.pop_front();
            if !self.ready() {
                return Err(Refusal::NotReady);
            }
            if c.live >= self.limits.per_ip {
                return Err(Refusal::TooManyConnections);
            }
            c.live += 1;
        }
        let ice_host = self.app.get().and_then(Weak::upgrade).map_or_else(
            || "localhost".into(),
            |app| app.ice_host(&parts.headers, None),
        );
        self.conns().insert(
            s.id,
            Conn {
                ip,
                since: Instant::now(),
                bucket: Bucket::new(&self.limits, Instant::now()),
                ice_host,
            },
        );
        s.extensions.insert(HubRef(self.me()));
        let token = auth
            .as_ref()
            .and_then(|a| a.get("resume"))
            .and_then(Value::as_str);
        if let Some(token) = token {
            s.extensions.insert(Resume);
            self.submit(Op::Attach {
                from: self.endpoint(s.id),
                token: token.to_owned(),
            });
        }
        let hub = self.app.get().cloned();
        s.on_disconnect(async move |s: SocketRef, reason: DisconnectReason| {
            tracing::debug!(sid = %s.id, ?reason, "signaling socket closed");
            if let Some(app) = hub.as_ref().and_then(Weak::upgrade) {
                app.hub.closed(s.id);
            }
        });
        // One handler for every event (the room keeper answers an unknown one with an
        // error): a handler per event name would cost each socket a map of boxed handlers.
        s.on_fallback(async |_: Inline| {});
        Ok(())
    }

    /// A socket is gone: its participant keeps its identity for the grace period.
    fn closed(&self, sid: Sid) {
        if let Some(c) = self.conns().remove(&sid) {
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&c.ip) {
                n.live = n.live.saturating_sub(1);
                if n.live == 0 && n.pending.is_empty() {
                    m.remove(&c.ip);
                }
            }
        }
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _), _| *s != sid);
        self.bouncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
        self.submit(Op::Detach {
            from: self.endpoint(sid),
        });
    }

    /// The join answer as the client gets it: this node's ICE servers for the participant.
    fn joined_body(&self, sid: Sid, j: &driver::JoinedWire) -> Value {
        let (servers, ttl) = self.ice_servers(sid, Some(&j.you));
        let participants: Vec<Value> = j
            .participants
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect();
        json!({
            "ok": true, "you": j.you, "resume": j.resume, "room": j.room,
            "participants": participants, "iceServers": servers, "ttl": ttl,
            "mode": j.mode.name(),
        })
    }

    /// This node's ICE servers for a socket (with a participant's credential when it has one).
    fn ice_servers(&self, sid: Sid, pid: Option<&str>) -> (Value, u64) {
        let app = self.app.get().and_then(Weak::upgrade);
        let (host, origin) = self
            .conns()
            .get(&sid)
            .map(|c| (c.ice_host.clone(), Some(c.ip)))
            .unwrap_or_default();
        match (&app, pid, origin) {
            (Some(app), Some(pid), Some(origin)) => (
                json!(app.participant_ice_servers(&host, pid, origin)),
                app.ttl(),
            ),
            (Some(app), Some(pid), None) => (json!(app.ice_servers(&host, pid)), app.ttl()),
            (Some(app), None, _) => (json!(app.ice_servers(&host, "web")), app.ttl()),
            (None, _, _) => (json!([]), 0),
        }
    }

    /// Handle one event of `s`, in arrival order: the rate limit and `ice-servers` here, the
    /// rest where the rooms are kept.
    fn handle(&self, s: &SocketRef, event: String, args: Vec<Value>, ack: Option<AckSender>) {
        let sid = s.id;
        let allowed = self
            .conns()
            .get_mut(&sid)
            .is_some_and(|c| c.bucket.take(&self.limits, Instant::now()));
        if !allowed {
            let reason = Refusal::RateLimited.to_string();
            match ack {
                Some(a) => {
                    let _ = a.send(&json!({"error": reason}));
                }
                None => {
                    let _ = s.emit("error", &json!({"reason": reason, "event": event}));
                }
            }
            return;
        }
        if event == "ice-servers" {
            // This node's own TURN URLs, with a credential for the participant this socket
            // joined as (learnt from its join answer), or a plain one before it joined.
            let pid = s.extensions.get::<Pid>().map(|p| p.0);
            let (servers, ttl) = self.ice_servers(sid, pid.as_deref());
            if let Some(a) = ack {
                let _ = a.send(&json!({"ok": true, "iceServers": servers, "ttl": ttl}));
            }
            return;
        }
        let ack = ack.map(|a| {
            let n = self.next_ack.fetch_add(1, Ordering::Relaxed);
            self.acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((sid, n), a);
            n
        });
        self.submit(Op::Event {
            from: self.endpoint(sid),
            event,
            args,
            ack,
        });
    }
}

fn bus_text(b: &Bus) -> String {
    serde_json::to_string(b).unwrap_or_default()
}

/// Why a socket or an event was refused on this node.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("rate limit: slow down")]
    RateLimited,
    #[error("too many signaling connections from this address")]
    TooManyConnections,
    #[error("signaling is not available right now")]
    NotReady,
}

/// The handshake carried a resume token.
#[derive(Debug, Clone, Copy)]
struct Resume;

/// The participant id of a joined socket (for its credential refreshes).
#[derive(Debug, Clone)]
struct Pid(String);

/// Add `event` to what goes back to the room keeper for socket `sid`, in order.
fn keep_for(bounced: &mut Vec<(Sid, Vec<Event>)>, sid: Sid, event: Event) {
    match bounced.iter_mut().find(|(x, _)| *x == sid) {
        Some((_, v)) => v.push(event),
        None => bounced.push((sid, vec![event])),
    }
}

/// Send one event (no argument when `body` is `None`); false when the socket cannot take it.
fn emit<T: Serialize>(s: &SocketRef, event: &str, body: Option<T>) -> bool {
    let r = match body {
        Some(body) => s.emit(event, &body),
        // No argument at all (an empty tuple), not one `null`.
        None => s.emit(event, &[(); 0]),
    };
    r.is_ok()
}

/// Every argument of an event, as sent (and, serialized, several ack arguments).
struct Args(Vec<Value>);

impl Serialize for Args {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        // A tuple: socketioxide sends each element as one argument (none for an empty one).
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

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
        hub.handle(&sock, event, args, ack);
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
        if ip.is_some_and(|ip| !app.hub.handshake(ip)) {
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
