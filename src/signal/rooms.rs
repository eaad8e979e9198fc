//! The rooms of the call, as a sans-IO state machine: participants, resume within a grace
//! period, buffered delivery to a detached participant, the room-size cap, and the
//! compatibility rooms of the classic Zoom-clone events. No sockets, no clock, no locks: the
//! transport passes `now` and fresh ids in, and sends the [`Delivery`]s that come out.
//!
//! `C` is the transport's handle on one connection (a Socket.IO socket id; on several nodes, a
//! node and a socket). A connection speaks for at most one participant.

use super::limits::{
    CHAT_MAX_CHARS, Limits, ROOM_MAX_LEN, clean_name, valid_compat_room, valid_room,
};
use super::payload::Payload;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Instant;

/// What a participant is told.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// Someone joined the room.
    ParticipantJoined {
        /// Their id.
        id: String,
        /// Their display name.
        name: String,
    },
    /// Someone left (or stayed away past the grace period).
    ParticipantLeft {
        /// Their id.
        id: String,
    },
    /// A signal addressed to this participant.
    Signal {
        /// The sender.
        from: String,
        /// Opaque to the server (descriptions, candidates).
        data: Payload,
    },
    /// A chat line for the room.
    Chat {
        /// The sender.
        from: String,
        /// The sender's name.
        name: String,
        /// The text.
        text: String,
    },
    /// An operator closed the room; the connection is closed after this.
    RoomClosed,
    /// The room moved to another mode (a mesh that grew past `mesh-size` now uses the SFU):
    /// every participant renegotiates once.
    RoomMode {
        /// The mode now.
        mode: Mode,
    },
    /// The SFU's offer to this participant (tracks added or removed): answer with
    /// `sfu-answer`.
    SfuOffer {
        /// SDP text.
        sdp: String,
    },
    /// The SFU lost this participant's session (it stopped answering, or its ICE/DTLS
    /// failed): join the SFU again with a fresh connection.
    SfuRestart,
    /// The SFU room's active speaker changed (from the audio levels it forwards).
    Speaker {
        /// Who speaks.
        id: String,
    },
    /// Compatibility set: someone joined the room.
    Welcome,
    /// Compatibility set: `offer`, `answer` or `ice` from someone else in the room.
    Relay {
        /// The event name.
        event: CompatEvent,
        /// Its payload, as sent.
        payload: Payload,
    },
}

/// How a room's media flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every participant connects to every other one.
    #[default]
    Mesh,
    /// Every participant connects to the SFU only.
    Sfu,
}

impl Mode {
    /// `mesh` or `sfu` (what the page and the join request say).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Mesh => "mesh",
            Mode::Sfu => "sfu",
        }
    }

    /// `mesh` / `sfu`, else `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mesh" => Some(Mode::Mesh),
            "sfu" => Some(Mode::Sfu),
            _ => None,
        }
    }
}

/// The relayed events of the compatibility set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompatEvent {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// An ICE candidate.
    Ice,
}

impl CompatEvent {
    /// The Socket.IO event name.
    pub fn name(self) -> &'static str {
        match self {
            CompatEvent::Offer => "offer",
            CompatEvent::Answer => "answer",
            CompatEvent::Ice => "ice",
        }
    }
}

impl Event {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ParticipantJoined { .. } => "participant-joined",
            Event::ParticipantLeft { .. } => "participant-left",
            Event::Signal { .. } => "signal",
            Event::Chat { .. } => "chat",
            Event::RoomClosed => "room-closed",
            Event::RoomMode { .. } => "room-mode",
            Event::SfuOffer { .. } => "sfu-offer",
            Event::SfuRestart => "sfu-restart",
            Event::Speaker { .. } => "speaker",
            Event::Welcome => "welcome",
            Event::Relay { event, .. } => event.name(),
        }
    }

    /// The event's one argument, to serialize (`None`: an event without arguments).
    pub fn body(&self) -> Option<EventArg<'_>> {
        (!matches!(self, Event::Welcome)).then_some(EventArg(self))
    }
}

/// An event's one argument, serialized straight from the event (a relayed payload verbatim).
#[derive(Debug, Clone, Copy)]
pub struct EventArg<'a>(&'a Event);

impl serde::Serialize for EventArg<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The argument's shape per event (untagged: each variant is just its fields).
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Arg<'a> {
            Joined {
                id: &'a str,
                name: &'a str,
            },
            Left {
                id: &'a str,
            },
            Signal {
                from: &'a str,
                data: &'a Payload,
            },
            Chat {
                from: &'a str,
                name: &'a str,
                text: &'a str,
            },
            Mode {
                mode: Mode,
            },
            Sdp {
                sdp: &'a str,
            },
            Empty {},
            Verbatim(&'a Payload),
        }
        match self.0 {
            Event::ParticipantJoined { id, name } => Arg::Joined { id, name },
            Event::ParticipantLeft { id } | Event::Speaker { id } => Arg::Left { id },
            Event::Signal { from, data } => Arg::Signal { from, data },
            Event::Chat { from, name, text } => Arg::Chat { from, name, text },
            Event::RoomMode { mode } => Arg::Mode { mode: *mode },
            Event::SfuOffer { sdp } => Arg::Sdp { sdp },
            Event::RoomClosed | Event::Welcome | Event::SfuRestart => Arg::Empty {},
            Event::Relay { payload, .. } => Arg::Verbatim(payload),
        }
        .serialize(s)
    }
}

/// How much a detached participant's buffer holds.
#[derive(Debug, Clone, Copy)]
struct Cap {
    events: usize,
    bytes: usize,
}

impl Cap {
    fn of(l: &Limits) -> Self {
        Cap {
            events: l.buffer,
            bytes: l.buffer_bytes,
        }
    }
}

impl Event {
    /// About how many bytes it holds (its strings and payload).
    pub fn size(&self) -> usize {
        match self {
            Event::ParticipantJoined { id, name } => id.len() + name.len(),
            Event::ParticipantLeft { id } | Event::Speaker { id } => id.len(),
            Event::Signal { from, data } => from.len() + data.json().len(),
            Event::Chat { from, name, text } => from.len() + name.len() + text.len(),
            Event::RoomClosed | Event::Welcome | Event::SfuRestart | Event::RoomMode { .. } => 0,
            Event::SfuOffer { sdp } => sdp.len(),
            Event::Relay { payload, .. } => payload.json().len(),
        }
    }
}

/// An event for one connection.
pub type Delivery<C> = (C, Event);

/// Why a request was refused (the text is the `error` a client gets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// A second join on one connection.
    #[error("already joined")]
    AlreadyJoined,
    /// Bad room name.
    #[error("room must be 1-64 letters, digits, - or _")]
    BadRoom,
    /// Bad compatibility room name.
    #[error("room must be 1-64 printable characters")]
    BadCompatRoom,
    /// Bad display name.
    #[error("name must be 1-40 printable characters")]
    BadName,
    /// The room is at its cap.
    #[error("room full")]
    RoomFull,
    /// The server holds as many rooms as it may.
    #[error("server full: too many rooms")]
    TooManyRooms,
    /// A request that needs a room before joining one.
    #[error("join a room first")]
    NotJoined,
    /// A signal to someone not in the room.
    #[error("no such participant")]
    NoSuchParticipant,
    /// Chat text empty or too long.
    #[error("chat text must be 1-2000 characters")]
    BadChat,
    /// A compatibility event naming a room the sender is not in.
    #[error("not in that room")]
    NotInRoom,
    /// An SFU request from a participant whose room is a mesh.
    #[error("this room does not use the SFU")]
    NotSfu,
    /// A join asked for a mode this server cannot give (`sfu` without an SFU).
    #[error("mode must be mesh or sfu (sfu only where the server runs one)")]
    BadMode,
}

/// Room names live in two spaces: the call's own rooms and the compatibility set's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RoomKey {
    Call(String),
    Compat(String),
}

impl RoomKey {
    fn name(&self) -> &str {
        match self {
            RoomKey::Call(n) | RoomKey::Compat(n) => n,
        }
    }
}

#[derive(Debug)]
struct Participant<C> {
    name: String,
    resume: String,
    /// The live connection; `None` while detached.
    conn: Option<C>,
    /// Attached at connect but not told yet ([`Rooms::attach`]): events wait in the buffer.
    pending: bool,
    /// The client's key of the join that made it.
    join_key: Option<String>,
    buffer: VecDeque<Event>,
    detached_at: Option<Instant>,
    /// The connection it had before it was detached (events bounced back from it belong here).
    last_conn: Option<C>,
}

#[derive(Debug)]
struct Room<C> {
    /// Participants in order of arrival.
    order: Vec<String>,
    members: HashMap<String, Participant<C>>,
    /// How its media flows now.
    mode: Mode,
    /// Its first participant chose the mode (`?mode=`): it never changes.
    forced: bool,
}

impl<C> Default for Room<C> {
    fn default() -> Self {
        Self {
            order: Vec::new(),
            members: HashMap::new(),
            mode: Mode::Mesh,
            forced: false,
        }
    }
}

/// A join request of the call's own protocol.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Room name.
    pub room: String,
    /// Display name.
    pub name: String,
    /// A resume token from an earlier `joined`.
    pub resume: Option<String>,
    /// A key the client chose for this join: the same join sent again (its answer was lost
    /// with the connection) gets the same identity instead of a second one.
    pub key: Option<String>,
    /// The mode the first participant asks for (`?mode=` on the room link); ignored once the
    /// room exists.
    pub mode: Option<Mode>,
}

/// Fresh random ids for a new participant, made by the caller.
#[derive(Debug, Clone)]
pub struct FreshIds {
    /// Participant id.
    pub pid: String,
    /// Resume token.
    pub token: String,
}

/// The answer to a join (or a resume at connect).
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The participant's id.
    pub you: String,
    /// Its resume token.
    pub resume: String,
    /// The room.
    pub room: String,
    /// Everyone else, in order of arrival: (id, name).
    pub participants: Vec<(String, String)>,
    /// What was addressed to it while it was away (resume only), in order.
    pub backlog: Vec<Event>,
    /// Whether an existing identity was taken back.
    pub resumed: bool,
    /// How the room's media flows.
    pub mode: Mode,
}

/// All rooms of one server (or, on several nodes, of one room owner).
#[derive(Debug)]
pub struct Rooms<C> {
    limits: Limits,
    rooms: HashMap<RoomKey, Room<C>>,
    /// Which participant each live connection speaks for.
    by_conn: HashMap<C, (RoomKey, String)>,
    /// Resume tokens of the call's participants.
    by_token: HashMap<String, (RoomKey, String)>,
    /// Participants of SFU rooms that left since [`Rooms::take_sfu_left`]: (room, id).
    sfu_left: Vec<(String, String)>,
}

impl<C: Clone + Eq + Hash> Rooms<C> {
    /// No rooms yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rooms: HashMap::new(),
            by_conn: HashMap::new(),
            by_token: HashMap::new(),
            sfu_left: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Rooms and participants now.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.rooms.len(),
            self.rooms.values().map(|r| r.members.len()).sum(),
        )
    }

    /// Is this connection in a room?
    pub fn joined(&self, conn: &C) -> bool {
        self.by_conn.contains_key(conn)
    }

    /// The participant id a connection speaks for.
    pub fn participant(&self, conn: &C) -> Option<&str> {
        self.by_conn.get(conn).map(|(_, pid)| pid.as_str())
    }

    /// Rooms with their participants (admin API), sorted by room; compatibility rooms are
    /// marked.
    pub fn snapshot(&self) -> Vec<Value> {
        let mut v: Vec<Value> = self
            .rooms
            .iter()
            .map(|(key, r)| {
                let people: Vec<Value> = r
                    .order
                    .iter()
                    .filter_map(|pid| r.members.get(pid).map(|p| (pid, p)))
                    .map(|(pid, p)| json!({"id": pid, "name": p.name, "connected": p.conn.is_some()}))
                    .collect();
                let mut room = json!({"room": key.name(), "participants": people});
                if matches!(key, RoomKey::Compat(_)) {
                    room["compat"] = json!(true);
                }
                room
            })
            .collect();
        v.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
        v
    }

    /// Join a room of the call (or take an identity back with `resume`).
    pub fn join(
        &mut self,
        conn: C,
        req: JoinRequest,
        ids: FreshIds,
        now: Instant,
    ) -> Result<(Joined, Vec<Delivery<C>>), SignalError> {
        if self.by_conn.contains_key(&conn) {
            return Err(SignalError::AlreadyJoined);
        }
        if !valid_room(&req.room) {
            return Err(SignalError::BadRoom);
        }
        let name = clean_name(&req.name).ok_or(SignalError::BadName)?;
        let key = RoomKey::Call(req.room);
        let join_key = req.key.filter(|k| !k.is_empty() && k.len() <= 64);
        // The same join again (its answer never arrived): the identity it made.
        let retried = join_key.as_ref().and_then(|k| {
            let room = self.rooms.get(&key)?;
            room.members
                .values()
                .find(|p| p.join_key.as_ref() == Some(k))
                .map(|p| p.resume.clone())
        });
        if let Some(token) = req.resume.as_ref().or(retried.as_ref()) {
            if self.by_token.get(token).is_some_and(|(k, _)| *k == key) {
                let mut out = self.resume(conn, token, now).expect("token checked above");
                if let Some(p) = self.member_mut(&key, &out.0.you) {
                    p.name = name;
                }
                out.0.resumed = true;
                return Ok(out);
            }
        }
        let fresh = !self.rooms.contains_key(&key);
        if fresh && req.mode == Some(Mode::Sfu) && self.limits.mesh_size.is_none() {
            return Err(SignalError::BadMode);
        }
        let mut out = self.admit(key.clone(), conn, name.clone(), ids)?;
        let mesh_size = self.limits.mesh_size;
        let mut moved = false;
        if let Some(room) = self.rooms.get_mut(&key) {
            if fresh && req.mode.is_some() {
                room.mode = req.mode.unwrap_or_default();
                room.forced = true;
            }
            // Past mesh-size a mesh moves to the SFU, once (it stays there when people leave).
            if room.mode == Mode::Mesh
                && !room.forced
                && mesh_size.is_some_and(|m| room.members.len() > m)
            {
                room.mode = Mode::Sfu;
                moved = true;
            }
            out.mode = room.mode;
            if let Some(p) = room.members.get_mut(&out.you) {
                p.join_key = join_key;
            }
        }
        let mut deliveries = Vec::new();
        self.broadcast(
            &key,
            &out.you,
            Event::ParticipantJoined {
                id: out.you.clone(),
                name,
            },
            &mut deliveries,
        );
        if moved {
            self.broadcast(
                &key,
                &out.you,
                Event::RoomMode { mode: Mode::Sfu },
                &mut deliveries,
            );
        }
        Ok((out, deliveries))
    }

    /// Take back the identity of `token` on `conn` (a reconnect, on any connection): the answer
    /// carries what was buffered meanwhile. `None` when the token is unknown or expired.
    pub fn resume(
        &mut self,
        conn: C,
        token: &str,
        _now: Instant,
    ) -> Option<(Joined, Vec<Delivery<C>>)> {
        if !self.attach(conn.clone(), token) {
            return None;
        }
        self.activate(&conn).map(|j| (j, Vec::new()))
    }

    /// The first half of [`Rooms::resume`], for a transport that learns the token before it
    /// may send on the connection: the identity is `conn`'s from now on (its requests act as
    /// that participant), but what is addressed to it keeps going to the buffer until
    /// [`Rooms::activate`]. False when the token is unknown or expired.
    pub fn attach(&mut self, conn: C, token: &str) -> bool {
        if self.by_conn.contains_key(&conn) {
            return false;
        }
        let Some((key, pid)) = self.by_token.get(token).cloned() else {
            return false;
        };
        let Some(p) = self.member_mut(&key, &pid) else {
            return false;
        };
        // A resume on a new connection while the old one still looks alive: the new one wins
        // (the old one is a half-open socket the client already gave up on).
        let old = p.conn.replace(conn.clone());
        p.pending = true;
        p.detached_at = None;
        if let Some(old) = old {
            self.by_conn.remove(&old);
        }
        self.by_conn.insert(conn, (key, pid));
        true
    }

    /// The second half of [`Rooms::resume`]: the answer to give `conn`, with the backlog to send
    /// right after it; deliveries go to `conn` directly from now on. `None` when `conn` has no
    /// attach waiting (never attached, or already activated).
    pub fn activate(&mut self, conn: &C) -> Option<Joined> {
        let (key, pid) = self.by_conn.get(conn).cloned()?;
        let room = self.rooms.get_mut(&key)?;
        let p = room.members.get_mut(&pid)?;
        if !p.pending {
            return None;
        }
        p.pending = false;
        let backlog: Vec<Event> = p.buffer.drain(..).collect();
        let resume = p.resume.clone();
        Some(Joined {
            participants: Self::others(room, &pid),
            you: pid,
            resume,
            room: key.name().to_owned(),
            backlog,
            resumed: true,
            mode: room.mode,
        })
    }

    /// A signal to one other participant of the sender's room.
    pub fn signal(
        &mut self,
        conn: &C,
        to: &str,
        data: impl Into<Payload>,
    ) -> Result<Vec<Delivery<C>>, SignalError> {
        let data = data.into();
        let (key, from) = self
            .by_conn
            .get(conn)
            .cloned()
            .ok_or(SignalError::NotJoined)?;
        if to == from || matches!(key, RoomKey::Compat(_)) {
            return Err(SignalError::NoSuchParticipant);
        }
        let cap = Cap::of(&self.limits);
        let p = self
            .member_mut(&key, to)
            .ok_or(SignalError::NoSuchParticipant)?;
        let mut out = Vec::new();
        Self::deliver(p, Event::Signal { from, data }, cap, &mut out);
        Ok(out)
    }

    /// A chat line to the sender's room.
    pub fn chat(&mut self, conn: &C, text: &str) -> Result<Vec<Delivery<C>>, SignalError> {
        let (key, from) = self
            .by_conn
            .get(conn)
            .cloned()
            .ok_or(SignalError::NotJoined)?;
        if text.is_empty() || text.chars().count() > CHAT_MAX_CHARS {
            return Err(SignalError::BadChat);
        }
        let name = self
            .member_mut(&key, &from)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        let event = Event::Chat {
            from: from.clone(),
            name,
            text: text.to_owned(),
        };
        self.broadcast(&key, &from, event, &mut out);
        Ok(out)
    }

    /// Leave the room for good.
    pub fn leave(&mut self, conn: &C) -> Result<Vec<Delivery<C>>, SignalError> {
        let (key, pid) = self
            .by_conn
            .get(conn)
            .cloned()
            .ok_or(SignalError::NotJoined)?;
        let mut out = Vec::new();
        self.remove(&key, &pid, true, &mut out);
        Ok(out)
    }

    /// The connections that speak for a participant now.
    pub fn connections(&self) -> impl Iterator<Item = &C> {
        self.by_conn.keys()
    }

    /// The connection is gone: a participant of the call keeps its identity for the grace
    /// period (what is addressed to it is buffered); one of a compatibility room leaves.
    pub fn detach(&mut self, conn: &C, now: Instant) -> Vec<Delivery<C>> {
        let Some((key, pid)) = self.by_conn.remove(conn) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match key {
            RoomKey::Compat(_) => self.remove(&key, &pid, false, &mut out),
            RoomKey::Call(_) => {
                if let Some(p) = self.member_mut(&key, &pid) {
                    p.last_conn = p.conn.take();
                    p.pending = false;
                    p.detached_at = Some(now);
                }
            }
        }
        out
    }

    /// The connection could not take `events` (its send buffer is full: a client that stopped
    /// reading): the participant is detached as if the socket had dropped, and the events wait
    /// first in its buffer, so a resume gets them before anything newer. The same when the
    /// connection was gone already (events in flight to a socket that vanished, on this node
    /// or another): they go to the participant it spoke for, while it has not come back on
    /// another connection. A compatibility participant leaves.
    pub fn bounce(&mut self, conn: &C, events: Vec<Event>, now: Instant) -> Vec<Delivery<C>> {
        let Some((key, pid)) = self
            .by_conn
            .get(conn)
            .cloned()
            .or_else(|| self.detached_from(conn))
        else {
            return Vec::new();
        };
        let out = self.detach(conn, now);
        let cap = Cap::of(&self.limits);
        if let Some(p) = self.member_mut(&key, &pid) {
            for e in events.into_iter().rev() {
                p.buffer.push_front(e);
            }
            p.buffer.truncate(cap.events);
            let mut bytes: usize = p.buffer.iter().map(Event::size).sum();
            while bytes > cap.bytes {
                bytes -= p.buffer.pop_back().map_or(bytes, |e| e.size());
            }
        }
        out
    }

    /// The detached participant whose last connection was `conn`.
    fn detached_from(&self, conn: &C) -> Option<(RoomKey, String)> {
        self.rooms.iter().find_map(|(key, r)| {
            r.members
                .iter()
                .find(|(_, p)| p.conn.is_none() && p.last_conn.as_ref() == Some(conn))
                .map(|(pid, _)| (key.clone(), pid.clone()))
        })
    }

    /// Remove participants detached longer than the grace period; tell the others.
    pub fn sweep(&mut self, now: Instant) -> Vec<Delivery<C>> {
        let grace = self.limits.grace;
        let gone: Vec<(RoomKey, String)> = self
            .rooms
            .iter()
            .flat_map(|(key, r)| {
                r.members
                    .iter()
                    .filter(|(_, p)| {
                        p.detached_at
                            .is_some_and(|t| now.saturating_duration_since(t) > grace)
                    })
                    .map(|(pid, _)| (key.clone(), pid.clone()))
            })
            .collect();
        let mut out = Vec::new();
        for (key, pid) in gone {
            self.remove(&key, &pid, true, &mut out);
        }
        out
    }

    /// Close a room of the call: its live connections are returned (to be told and closed).
    pub fn close_room(&mut self, room: &str) -> Option<Vec<C>> {
        let key = RoomKey::Call(room.to_owned());
        let r = self.rooms.remove(&key)?;
        let mut conns = Vec::new();
        if r.mode == Mode::Sfu {
            self.sfu_left
                .extend(r.order.iter().map(|pid| (room.to_owned(), pid.clone())));
        }
        for p in r.members.into_values() {
            self.by_token.remove(&p.resume);
            if let Some(c) = p.conn {
                self.by_conn.remove(&c);
                conns.push(c);
            }
        }
        Some(conns)
    }

    /// Compatibility set: `join_room(room)`; the others get `welcome`.
    pub fn join_compat(
        &mut self,
        conn: C,
        room: &str,
        ids: FreshIds,
    ) -> Result<Vec<Delivery<C>>, SignalError> {
        if self.by_conn.contains_key(&conn) {
            return Err(SignalError::AlreadyJoined);
        }
        if !valid_compat_room(room) {
            return Err(SignalError::BadCompatRoom);
        }
        let key = RoomKey::Compat(room.to_owned());
        let joined = self.admit(key.clone(), conn, "guest".into(), ids)?;
        // Compatibility participants have no resume: their token is never handed out.
        self.by_token.remove(&joined.resume);
        let mut out = Vec::new();
        self.broadcast(&key, &joined.you, Event::Welcome, &mut out);
        Ok(out)
    }

    /// Compatibility set: `offer`/`answer`/`ice` (payload, room) to the rest of the room.
    pub fn relay_compat(
        &mut self,
        conn: &C,
        room: &str,
        event: CompatEvent,
        payload: impl Into<Payload>,
    ) -> Result<Vec<Delivery<C>>, SignalError> {
        let payload = payload.into();
        let (key, pid) = self
            .by_conn
            .get(conn)
            .cloned()
            .ok_or(SignalError::NotJoined)?;
        if key != RoomKey::Compat(room.to_owned()) {
            return Err(SignalError::NotInRoom);
        }
        let mut out = Vec::new();
        self.broadcast(&key, &pid, Event::Relay { event, payload }, &mut out);
        Ok(out)
    }

    /// The SFU room and participant id `conn` speaks for, if its room uses the SFU.
    pub fn sfu_member(&self, conn: &C) -> Result<(String, String), SignalError> {
        let (key, pid) = self.by_conn.get(conn).ok_or(SignalError::NotJoined)?;
        match (key, self.rooms.get(key)) {
            (RoomKey::Call(room), Some(r)) if r.mode == Mode::Sfu => {
                Ok((room.clone(), pid.clone()))
            }
            _ => Err(SignalError::NotSfu),
        }
    }

    /// An SFU event (its offer, a restart) for participant `pid` of SFU room `room`: to its
    /// connection, or to its buffer while it is away. Nothing when it is not there any more.
    pub fn to_sfu_member(&mut self, room: &str, pid: &str, event: Event) -> Vec<Delivery<C>> {
        let key = RoomKey::Call(room.to_owned());
        let cap = Cap::of(&self.limits);
        let mut out = Vec::new();
        if let Some(r) = self.rooms.get_mut(&key).filter(|r| r.mode == Mode::Sfu) {
            if let Some(p) = r.members.get_mut(pid) {
                Self::deliver(p, event, cap, &mut out);
            }
        }
        out
    }

    /// A chat line of `from` in SFU room `room` for participant `to`, over signaling: the SFU
    /// could not put it on `to`'s data channel (not open yet, or full). Named as signaling names
    /// a chat line; nothing when either has left.
    pub fn sfu_chat(&mut self, room: &str, to: &str, from: &str, text: &str) -> Vec<Delivery<C>> {
        let key = RoomKey::Call(room.to_owned());
        let Some(name) = self.member_mut(&key, from).map(|p| p.name.clone()) else {
            return Vec::new();
        };
        let event = Event::Chat {
            from: from.to_owned(),
            name,
            text: text.to_owned(),
        };
        self.to_sfu_member(room, to, event)
    }

    /// An event for every participant of SFU room `room` (its active speaker changed).
    pub fn to_sfu_room(&mut self, room: &str, event: Event) -> Vec<Delivery<C>> {
        let key = RoomKey::Call(room.to_owned());
        let mut out = Vec::new();
        if self.rooms.get(&key).is_some_and(|r| r.mode == Mode::Sfu) {
            self.broadcast(&key, "", event, &mut out);
        }
        out
    }

    /// Participants of SFU rooms that left (or whose room closed) since the last call: the
    /// SFU must drop their sessions.
    pub fn take_sfu_left(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.sfu_left)
    }

    // ---- inside ----

    fn member_mut(&mut self, key: &RoomKey, pid: &str) -> Option<&mut Participant<C>> {
        self.rooms.get_mut(key)?.members.get_mut(pid)
    }

    fn others(room: &Room<C>, pid: &str) -> Vec<(String, String)> {
        room.order
            .iter()
            .filter(|p| *p != pid)
            .filter_map(|p| room.members.get(p).map(|m| (p.clone(), m.name.clone())))
            .collect()
    }

    /// A new participant in `key` (cap and room count checked).
    fn admit(
        &mut self,
        key: RoomKey,
        conn: C,
        name: String,
        ids: FreshIds,
    ) -> Result<Joined, SignalError> {
        debug_assert!(key.name().len() <= ROOM_MAX_LEN);
        if !self.rooms.contains_key(&key) && self.rooms.len() >= self.limits.max_rooms {
            return Err(SignalError::TooManyRooms);
        }
        let (size, cap) = self
            .rooms
            .get(&key)
            .map_or((0, usize::MAX), |r| (r.members.len(), self.cap(&key, r)));
        if size >= cap {
            return Err(SignalError::RoomFull);
        }
        let room = self.rooms.entry(key.clone()).or_default();
        let participants = Self::others(room, &ids.pid);
        room.members.insert(
            ids.pid.clone(),
            Participant {
                name,
                resume: ids.token.clone(),
                conn: Some(conn.clone()),
                pending: false,
                join_key: None,
                buffer: VecDeque::new(),
                detached_at: None,
                last_conn: None,
            },
        );
        room.order.push(ids.pid.clone());
        self.by_conn.insert(conn, (key.clone(), ids.pid.clone()));
        self.by_token
            .insert(ids.token.clone(), (key.clone(), ids.pid.clone()));
        Ok(Joined {
            you: ids.pid,
            resume: ids.token,
            room: key.name().to_owned(),
            participants,
            backlog: Vec::new(),
            resumed: false,
            mode: Mode::Mesh,
        })
    }

    /// How many participants `room` may hold: `sfu-room-size` once it uses the SFU or while it
    /// may still move there, `room-size` for a mesh that stays one.
    fn cap(&self, key: &RoomKey, room: &Room<C>) -> usize {
        let sfu = matches!(key, RoomKey::Call(_))
            && self.limits.mesh_size.is_some()
            && (room.mode == Mode::Sfu || !room.forced);
        if sfu {
            self.limits.sfu_room_size
        } else {
            self.limits.room_size
        }
    }

    fn remove(&mut self, key: &RoomKey, pid: &str, announce: bool, out: &mut Vec<Delivery<C>>) {
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        let Some(p) = room.members.remove(pid) else {
            return;
        };
        room.order.retain(|x| x != pid);
        if room.mode == Mode::Sfu {
            self.sfu_left.push((key.name().to_owned(), pid.to_owned()));
        }
        self.by_token.remove(&p.resume);
        if let Some(c) = p.conn {
            self.by_conn.remove(&c);
        }
        if room.members.is_empty() {
            self.rooms.remove(key);
        } else if announce && matches!(key, RoomKey::Call(_)) {
            self.broadcast(key, pid, Event::ParticipantLeft { id: pid.to_owned() }, out);
        }
    }

    /// Deliver to a participant: its live connection, or its bounded buffer while detached.
    fn deliver(p: &mut Participant<C>, event: Event, cap: Cap, out: &mut Vec<Delivery<C>>) {
        match &p.conn {
            Some(c) if !p.pending => out.push((c.clone(), event)),
            _ if p.buffer.len() < cap.events
                && p.buffer.iter().map(Event::size).sum::<usize>() + event.size() <= cap.bytes =>
            {
                p.buffer.push_back(event)
            }
            _ => {}
        }
    }

    fn broadcast(&mut self, key: &RoomKey, except: &str, event: Event, out: &mut Vec<Delivery<C>>) {
        let cap = Cap::of(&self.limits);
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        for pid in &room.order {
            if pid != except {
                if let Some(p) = room.members.get_mut(pid) {
                    Self::deliver(p, event.clone(), cap, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ids(n: u32) -> FreshIds {
        FreshIds {
            pid: format!("p{n}"),
            token: format!("t{n}"),
        }
    }

    fn req(room: &str, name: &str, resume: Option<&str>) -> JoinRequest {
        JoinRequest {
            mode: None,
            room: room.into(),
            name: name.into(),
            resume: resume.map(str::to_owned),
            key: None,
        }
    }

    /// The data of the signals among `events`, in order.
    fn signals(events: &[Event]) -> Vec<Value> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Signal { data, .. } => serde_json::from_str(data.json()).ok(),
                _ => None,
            })
            .collect()
    }

    fn rooms(room_size: usize) -> Rooms<u32> {
        Rooms::new(Limits {
            room_size,
            ..Limits::default()
        })
    }

    fn sfu_rooms(mesh_size: usize, sfu_room_size: usize) -> Rooms<u32> {
        Rooms::new(Limits {
            room_size: 8,
            mesh_size: Some(mesh_size),
            sfu_room_size,
            ..Limits::default()
        })
    }

    fn moded(room: &str, mode: Option<Mode>) -> JoinRequest {
        JoinRequest {
            mode,
            ..req(room, "x", None)
        }
    }

    #[test]
    fn a_mesh_moves_to_the_sfu_once_when_it_grows_past_mesh_size() {
        let mut r = sfu_rooms(4, 25);
        let t = Instant::now();
        for n in 1..=4 {
            let (j, out) = r.join(n, moded("r", None), ids(n), t).unwrap();
            assert_eq!(j.mode, Mode::Mesh, "participant {n}");
            assert!(!out.iter().any(|(_, e)| matches!(e, Event::RoomMode { .. })));
        }
        let (fifth, out) = r.join(5, moded("r", None), ids(5), t).unwrap();
        assert_eq!(fifth.mode, Mode::Sfu, "the fifth joins the SFU room");
        let told: Vec<u32> = out
            .iter()
            .filter(|(_, e)| *e == Event::RoomMode { mode: Mode::Sfu })
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(
            told,
            [1, 2, 3, 4],
            "each of the four hears of the move once"
        );
        assert_eq!(r.sfu_member(&5), Ok(("r".into(), "p5".into())));
        // Back to four: still the SFU (no second renegotiation for everyone).
        r.leave(&5).unwrap();
        assert_eq!(r.take_sfu_left(), [("r".to_owned(), "p5".to_owned())]);
        let (again, out) = r.join(6, moded("r", None), ids(6), t).unwrap();
        assert_eq!(again.mode, Mode::Sfu);
        assert!(!out.iter().any(|(_, e)| matches!(e, Event::RoomMode { .. })));
        // An SFU room holds sfu-room-size, not room-size (8).
        for n in 7..=26 {
            r.join(n, moded("r", None), ids(n), t).unwrap();
        }
        assert_eq!(r.counts(), (1, 25));
        assert_eq!(
            r.join(27, moded("r", None), ids(27), t).unwrap_err(),
            SignalError::RoomFull
        );
    }

    #[test]
    fn a_chat_line_the_sfu_could_not_deliver_goes_to_that_participant_named() {
        let mut r = sfu_rooms(4, 25);
        let t = Instant::now();
        let ann = JoinRequest {
            name: "Ann".into(),
            ..moded("s", Some(Mode::Sfu))
        };
        let (a, _) = r.join(1, ann, ids(1), t).unwrap();
        let (b, _) = r.join(2, moded("s", None), ids(2), t).unwrap();
        let out = r.sfu_chat("s", &b.you, &a.you, "hi");
        assert_eq!(
            out,
            vec![(
                2,
                Event::Chat {
                    from: a.you.clone(),
                    name: "Ann".into(),
                    text: "hi".into()
                }
            )],
            "to Ben only, named as signaling names chat"
        );
        assert!(
            r.sfu_chat("s", &b.you, "gone", "hi").is_empty(),
            "a sender who left: nothing"
        );
        assert!(r.sfu_chat("other", &b.you, &a.you, "hi").is_empty());
    }

    #[test]
    fn the_first_joiner_can_force_a_mode_and_later_ones_cannot() {
        let mut r = sfu_rooms(4, 25);
        let t = Instant::now();
        let (a, _) = r.join(1, moded("s", Some(Mode::Sfu)), ids(1), t).unwrap();
        assert_eq!(
            a.mode,
            Mode::Sfu,
            "?mode=sfu: the SFU from the first participant"
        );
        let (b, _) = r.join(2, moded("s", Some(Mode::Mesh)), ids(2), t).unwrap();
        assert_eq!(b.mode, Mode::Sfu, "a later ?mode= changes nothing");
        // A forced mesh stays one, and holds room-size (8).
        for n in 10..18 {
            let (j, out) = r
                .join(n, moded("m", (n == 10).then_some(Mode::Mesh)), ids(n), t)
                .unwrap();
            assert_eq!(j.mode, Mode::Mesh);
            assert!(!out.iter().any(|(_, e)| matches!(e, Event::RoomMode { .. })));
        }
        assert_eq!(
            r.join(18, moded("m", None), ids(18), t).unwrap_err(),
            SignalError::RoomFull
        );
        assert_eq!(r.sfu_member(&10), Err(SignalError::NotSfu));
        // Closing an SFU room ends its SFU sessions.
        r.close_room("s").unwrap();
        let mut left = r.take_sfu_left();
        left.sort();
        assert_eq!(left, [("s".into(), "p1".into()), ("s".into(), "p2".into())]);
        assert!(r.take_sfu_left().is_empty());
    }

    #[test]
    fn without_an_sfu_rooms_stay_meshes_and_mode_sfu_is_refused() {
        let mut r = rooms(8);
        let t = Instant::now();
        assert_eq!(
            r.join(1, moded("r", Some(Mode::Sfu)), ids(1), t)
                .unwrap_err(),
            SignalError::BadMode
        );
        for n in 1..=8 {
            assert_eq!(
                r.join(n, moded("r", None), ids(n), t).unwrap().0.mode,
                Mode::Mesh
            );
        }
        assert_eq!(
            r.join(9, moded("r", None), ids(9), t).unwrap_err(),
            SignalError::RoomFull
        );
        assert!(r.take_sfu_left().is_empty());
    }

    #[test]
    fn sfu_events_reach_the_participant_or_wait_in_its_buffer() {
        let mut r = sfu_rooms(4, 25);
        let t = Instant::now();
        r.join(1, moded("s", Some(Mode::Sfu)), ids(1), t).unwrap();
        let offer = Event::SfuOffer { sdp: "v=0".into() };
        assert_eq!(
            r.to_sfu_member("s", "p1", offer.clone()),
            [(1, offer.clone())]
        );
        r.detach(&1, t);
        assert!(r.to_sfu_member("s", "p1", offer.clone()).is_empty());
        let (j, _) = r.join(2, req("s", "x", Some("t1")), ids(2), t).unwrap();
        assert_eq!(
            j.backlog,
            std::slice::from_ref(&offer),
            "kept for the resume"
        );
        assert!(r.to_sfu_member("s", "nobody", offer.clone()).is_empty());
        assert!(r.to_sfu_member("other", "p1", offer).is_empty());
    }

    #[test]
    fn join_announces_and_lists_the_others_in_order() {
        let mut r = rooms(8);
        let t = Instant::now();
        let (a, out) = r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        assert!(out.is_empty() && a.participants.is_empty() && !a.resumed);
        let (b, out) = r.join(2, req("r", " Ben ", None), ids(2), t).unwrap();
        assert_eq!(b.participants, vec![("p1".into(), "Ann".into())]);
        assert_eq!(
            out,
            vec![(
                1,
                Event::ParticipantJoined {
                    id: "p2".into(),
                    name: "Ben".into()
                }
            )]
        );
        let (c, _) = r.join(3, req("r", "Cy", None), ids(3), t).unwrap();
        assert_eq!(
            c.participants
                .iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>(),
            ["p1", "p2"]
        );
        assert_eq!(r.counts(), (1, 3));
    }

    #[test]
    fn bad_requests_get_their_reasons() {
        let mut r = rooms(1);
        let t = Instant::now();
        assert_eq!(
            r.join(1, req("a b", "Ann", None), ids(1), t).unwrap_err(),
            SignalError::BadRoom
        );
        assert_eq!(
            r.join(1, req("r", "  ", None), ids(1), t).unwrap_err(),
            SignalError::BadName
        );
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        assert_eq!(
            r.join(1, req("q", "Ann", None), ids(9), t).unwrap_err(),
            SignalError::AlreadyJoined
        );
        assert_eq!(
            r.join(2, req("r", "Ben", None), ids(2), t).unwrap_err(),
            SignalError::RoomFull
        );
        assert_eq!(
            r.signal(&2, "p1", json!(1)).unwrap_err(),
            SignalError::NotJoined
        );
        assert_eq!(
            r.signal(&1, "p1", json!(1)).unwrap_err(),
            SignalError::NoSuchParticipant
        );
        assert_eq!(
            r.signal(&1, "nobody", json!(1)).unwrap_err(),
            SignalError::NoSuchParticipant
        );
        assert_eq!(r.chat(&1, "").unwrap_err(), SignalError::BadChat);
        assert_eq!(
            r.chat(&1, &"x".repeat(CHAT_MAX_CHARS + 1)).unwrap_err(),
            SignalError::BadChat
        );
        let mut few = Rooms::<u32>::new(Limits {
            max_rooms: 1,
            ..Limits::default()
        });
        few.join(1, req("a", "Ann", None), ids(1), t).unwrap();
        assert_eq!(
            few.join(2, req("b", "Ben", None), ids(2), t).unwrap_err(),
            SignalError::TooManyRooms
        );
    }

    #[test]
    fn a_detached_participant_gets_its_signals_in_order_when_it_resumes_elsewhere() {
        let mut r = rooms(8);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        assert!(r.detach(&2, t).is_empty());
        for i in 0..3 {
            assert!(
                r.signal(&1, "p2", json!(i)).unwrap().is_empty(),
                "buffered, not sent"
            );
        }
        r.chat(&1, "hi").unwrap();
        // The reconnect lands on another connection (another socket, or another node).
        let (j, _) = r.resume(7, "t2", t + Duration::from_secs(5)).unwrap();
        assert_eq!((j.you.as_str(), j.resumed), ("p2", true));
        let got = signals(&j.backlog);
        assert_eq!(got, vec![json!(0), json!(1), json!(2)]);
        assert!(matches!(j.backlog.last(), Some(Event::Chat { text, .. }) if text == "hi"));
        assert_eq!(
            r.signal(&1, "p2", json!("live")).unwrap(),
            vec![(
                7,
                Event::Signal {
                    from: "p1".into(),
                    data: json!("live").into()
                }
            )]
        );
        assert_eq!(r.participant(&7), Some("p2"));
        assert!(r.resume(8, "nope", t).is_none());
    }

    #[test]
    fn an_attached_connection_acts_at_once_but_is_told_only_when_activated() {
        let mut r = rooms(8);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        r.detach(&2, t);
        r.signal(&1, "p2", json!("while away")).unwrap();
        assert!(r.attach(5, "t2"));
        assert_eq!(r.participant(&5), Some("p2"));
        let conn = 5;
        // It can act as Ben already…
        assert_eq!(r.signal(&conn, "p1", json!("hi")).unwrap().len(), 1);
        // …but what comes for Ben waits behind the backlog until the answer is out.
        assert!(r.signal(&1, "p2", json!("meanwhile")).unwrap().is_empty());
        let j = r.activate(&conn).unwrap();
        let got = signals(&j.backlog);
        assert_eq!(got, vec![json!("while away"), json!("meanwhile")]);
        assert!(r.activate(&conn).is_none(), "once");
        assert_eq!(r.signal(&1, "p2", json!("live")).unwrap().len(), 1);
        assert!(!r.attach(9, "unknown"));
    }

    #[test]
    fn what_a_full_socket_could_not_take_comes_first_on_resume() {
        let mut r = rooms(8);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        let sent = r.signal(&1, "p2", json!(1)).unwrap();
        let bounced: Vec<Event> = sent.into_iter().map(|(_, e)| e).collect();
        assert!(r.bounce(&2, bounced, t).is_empty());
        assert!(
            r.signal(&1, "p2", json!(2)).unwrap().is_empty(),
            "detached: buffered"
        );
        let j = r.resume(3, "t2", t).unwrap().0;
        let got = signals(&j.backlog);
        assert_eq!(got, vec![json!(1), json!(2)]);
    }

    #[test]
    fn a_detached_participants_buffer_is_bounded_in_bytes_too() {
        let mut r = Rooms::<u32>::new(Limits {
            buffer_bytes: 1000,
            ..Limits::default()
        });
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        r.detach(&2, t);
        let big = "x".repeat(300);
        for i in 0..10 {
            r.signal(&1, "p2", json!([i, big])).unwrap();
        }
        // Each is 2 bytes of sender id and 308 of payload: three fit in 1000 bytes.
        let j = r.resume(3, "t2", t).unwrap().0;
        assert_eq!(
            signals(&j.backlog),
            (0..3).map(|i| json!([i, big])).collect::<Vec<_>>()
        );
        // A bounce that brings it past the cap drops the newest.
        let sent: Vec<Event> = (0..5)
            .map(|i| Event::Signal {
                from: "p1".into(),
                data: json!([i, big]).into(),
            })
            .collect();
        assert!(r.bounce(&3, sent, t).is_empty());
        let j = r.resume(4, "t2", t).unwrap().0;
        assert_eq!(signals(&j.backlog).len(), 3);
        assert_eq!(signals(&j.backlog)[0], json!([0, big]));
    }

    #[test]
    fn events_in_flight_to_a_vanished_socket_wait_for_its_resume() {
        let mut r = rooms(8);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        // Sent to Ben's socket, which vanished before it got them; its detach came first.
        let sent = r.signal(&1, "p2", json!(1)).unwrap();
        assert!(r.detach(&2, t).is_empty());
        assert!(r.signal(&1, "p2", json!(2)).unwrap().is_empty());
        let bounced: Vec<Event> = sent.into_iter().map(|(_, e)| e).collect();
        assert!(r.bounce(&2, bounced.clone(), t).is_empty());
        let j = r.resume(3, "t2", t).unwrap().0;
        assert_eq!(signals(&j.backlog), vec![json!(1), json!(2)], "in order");
        // Back on another connection: a late bounce from the old one is not Ben's to take.
        assert!(r.bounce(&2, bounced, t).is_empty());
        assert_eq!(
            r.signal(&1, "p2", json!(3)).unwrap().len(),
            1,
            "still live on 3"
        );
    }

    #[test]
    fn the_buffer_of_a_detached_participant_is_bounded() {
        let mut r = Rooms::<u32>::new(Limits {
            buffer: 4,
            ..Limits::default()
        });
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        r.detach(&2, t);
        for i in 0..100 {
            r.signal(&1, "p2", json!(i)).unwrap();
        }
        assert_eq!(r.resume(3, "t2", t).unwrap().0.backlog.len(), 4);
    }

    #[test]
    fn past_the_grace_period_a_participant_is_gone_and_announced() {
        let mut r = rooms(2);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        r.detach(&2, t);
        assert!(
            r.sweep(t + Duration::from_secs(10)).is_empty(),
            "still within the grace period"
        );
        assert_eq!(
            r.join(3, req("r", "Cy", None), ids(3), t).unwrap_err(),
            SignalError::RoomFull,
            "the seat is kept"
        );
        let out = r.sweep(t + Duration::from_secs(21));
        assert_eq!(out, vec![(1, Event::ParticipantLeft { id: "p2".into() })]);
        assert!(
            r.resume(4, "t2", t + Duration::from_secs(21)).is_none(),
            "the token died with it"
        );
        r.join(3, req("r", "Cy", None), ids(3), t).unwrap();
    }

    #[test]
    fn join_with_a_resume_token_takes_the_identity_back_and_a_foreign_token_does_not() {
        let mut r = rooms(8);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.detach(&1, t);
        let (j, out) = r.join(2, req("r", "Ann B", Some("t1")), ids(2), t).unwrap();
        assert_eq!((j.you.as_str(), j.resumed), ("p1", true));
        assert!(out.is_empty(), "a resume is not announced as a join");
        assert_eq!(r.snapshot()[0]["participants"][0]["name"], "Ann B");
        // A token of another room is a fresh join there.
        let (k, _) = r.join(3, req("q", "Ann", Some("t1")), ids(3), t).unwrap();
        assert_eq!((k.you.as_str(), k.resumed), ("p3", false));
    }

    #[test]
    fn a_join_sent_again_with_its_key_gets_the_same_identity() {
        let mut r = rooms(8);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        let keyed = |k: &str| JoinRequest {
            mode: None,
            key: Some(k.into()),
            ..req("r", "Ben", None)
        };
        r.join(2, keyed("k-ben"), ids(2), t).unwrap();
        // The answer was lost with the connection; the client joins again on a new one.
        r.detach(&2, t);
        let (again, out) = r.join(3, keyed("k-ben"), ids(3), t).unwrap();
        assert_eq!((again.you.as_str(), again.resumed), ("p2", true));
        assert!(out.is_empty(), "not announced twice");
        assert_eq!(r.counts(), (1, 2));
        // Another key is another person.
        assert_eq!(r.join(4, keyed("k-cy"), ids(4), t).unwrap().0.you, "p4");
    }

    #[test]
    fn leave_announces_and_frees_the_seat_and_an_empty_room_goes() {
        let mut r = rooms(2);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        assert_eq!(
            r.leave(&2).unwrap(),
            vec![(1, Event::ParticipantLeft { id: "p2".into() })]
        );
        assert_eq!(r.leave(&2).unwrap_err(), SignalError::NotJoined);
        assert!(r.leave(&1).unwrap().is_empty());
        assert_eq!(r.counts(), (0, 0));
    }

    #[test]
    fn close_room_returns_the_live_connections_and_forgets_the_room() {
        let mut r = rooms(8);
        let t = Instant::now();
        r.join(1, req("r", "Ann", None), ids(1), t).unwrap();
        r.join(2, req("r", "Ben", None), ids(2), t).unwrap();
        r.detach(&2, t);
        assert_eq!(r.close_room("r"), Some(vec![1]));
        assert!(r.close_room("r").is_none());
        assert!(!r.joined(&1));
        assert!(r.resume(3, "t2", t).is_none());
    }

    #[test]
    fn compat_rooms_welcome_relay_and_are_apart_from_the_calls_rooms() {
        let mut r = rooms(2);
        let t = Instant::now();
        assert!(r.join_compat(1, "Room of Ann", ids(1)).unwrap().is_empty());
        assert_eq!(
            r.join_compat(2, "Room of Ann", ids(2)).unwrap(),
            vec![(1, Event::Welcome)]
        );
        assert_eq!(
            r.join_compat(3, "Room of Ann", ids(3)).unwrap_err(),
            SignalError::RoomFull
        );
        assert_eq!(
            r.relay_compat(&1, "Room of Ann", CompatEvent::Offer, json!({"sdp": "x"}))
                .unwrap(),
            vec![(
                2,
                Event::Relay {
                    event: CompatEvent::Offer,
                    payload: json!({"sdp": "x"}).into()
                }
            )]
        );
        assert_eq!(
            r.relay_compat(&1, "other", CompatEvent::Ice, json!(1))
                .unwrap_err(),
            SignalError::NotInRoom
        );
        assert_eq!(
            r.relay_compat(&9, "Room of Ann", CompatEvent::Ice, json!(1))
                .unwrap_err(),
            SignalError::NotJoined
        );
        // A call room of the same name is another room.
        let (j, _) = r.join(4, req("ann", "Ann", None), ids(4), t).unwrap();
        assert!(j.participants.is_empty());
        // Leaving by disconnecting frees the seat at once, without an announcement.
        assert!(r.detach(&2, t).is_empty());
        r.join_compat(3, "Room of Ann", ids(3)).unwrap();
        assert!(
            r.resume(5, "t1", t).is_none(),
            "compat participants have no resume"
        );
        assert!(Event::Welcome.body().is_none());
        assert_eq!(
            r.snapshot().iter().filter(|v| v["compat"] == true).count(),
            1
        );
    }

    #[test]
    fn each_event_has_the_documented_argument() {
        let arg = |e: Event| serde_json::to_value(e.body().unwrap()).unwrap();
        let who = |s: &str| s.to_owned();
        assert_eq!(
            arg(Event::ParticipantJoined {
                id: who("p1"),
                name: who("Ann \"A\"")
            }),
            json!({"id": "p1", "name": "Ann \"A\""})
        );
        assert_eq!(
            arg(Event::ParticipantLeft { id: who("p1") }),
            json!({"id": "p1"})
        );
        let data = json!({"sdp": "v=0\r\n", "type": "offer", "n": [1, 2.5, null]});
        assert_eq!(
            arg(Event::Signal {
                from: who("p2"),
                data: data.clone().into()
            }),
            json!({"from": "p2", "data": data})
        );
        assert_eq!(
            arg(Event::Chat {
                from: who("p2"),
                name: who("Ben"),
                text: who("hi")
            }),
            json!({"from": "p2", "name": "Ben", "text": "hi"})
        );
        assert_eq!(arg(Event::RoomClosed), json!({}));
        assert_eq!(
            arg(Event::Relay {
                event: CompatEvent::Ice,
                payload: json!([1, "x"]).into()
            }),
            json!([1, "x"])
        );
    }
}
