//! Sans-IO SFU core: participants' `str0m` sessions (ICE-lite, DTLS-SRTP), datagram demux,
//! track forwarding, keyframe requests and renegotiation, driven by datagrams and timeouts
//! with `now` passed in. Nothing here owns a socket or reads the clock.
//!
//! A participant joins with an SDP offer (its own tracks, send or sendrecv, and optionally a
//! data channel) and gets the answer at once. Every track another participant publishes is
//! added to its session as a send-only track (stream id = the publisher's id); those changes
//! go out as a server offer ([`Notice::Offer`]) over signaling, one negotiation at a time, and
//! the participant's answer comes back through [`Sfu::answer`]. Media of a publisher's track is
//! written to each subscriber's matching track; a subscriber's PLI/FIR goes to the publisher.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};

use super::layers::{Offered, Speaker, Switcher, Want, choose, desired};
use str0m::bwe::{Bitrate, BweKind};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// Why an SFU operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SfuError {
    /// The room (the SFU instance) holds its maximum of participants.
    #[error("the SFU room is full ({0} participants)")]
    Full(usize),
    /// The participant id is taken already.
    #[error("participant {0} is in the SFU already")]
    Duplicate(String),
    /// No such participant.
    #[error("no participant {0} in the SFU")]
    Unknown(String),
    /// The SDP did not parse or could not be applied.
    #[error("bad SDP: {0}")]
    Sdp(String),
    /// An answer arrived but no offer of ours was waiting for one.
    #[error("no offer is waiting for an answer")]
    NoPendingOffer,
}

/// A datagram to send from the SFU's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Over TCP (a participant connected to the SFU's ICE-TCP candidate; RFC 4571 framing is
    /// the shell's) rather than UDP.
    pub tcp: bool,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// What the shell must tell the signaling side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Send this offer to participant `to`; its answer goes to [`Sfu::answer`].
    Offer {
        /// Its room.
        room: String,
        /// The participant.
        to: String,
        /// SDP text.
        sdp: String,
    },
    /// The participant's session ended (it stopped answering, or its DTLS/ICE failed): its
    /// tracks are gone from everyone else's session.
    Gone {
        /// Its room.
        room: String,
        /// The participant.
        pid: String,
    },
    /// A chat line of `from` that could not go on `to`'s data channel (not open yet, or its
    /// buffer full): signaling delivers it instead, so nobody misses a line.
    Chat {
        /// The room.
        room: String,
        /// Who should get it.
        to: String,
        /// Who sent it.
        from: String,
        /// The line (checked).
        text: String,
    },
    /// Room `room` has a new active speaker (from the audio levels its participants send).
    Speaker {
        /// The room.
        room: String,
        /// The speaker.
        pid: String,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SfuStats {
    /// Media packets written to subscribers.
    pub forwarded_packets: u64,
    /// Their payload bytes.
    pub forwarded_bytes: u64,
    /// Keyframe requests passed to publishers (PLI or FIR).
    pub keyframe_requests: u64,
    /// Datagrams that belonged to no participant or did not parse.
    pub dropped_datagrams: u64,
    /// Times a receiver moved to another simulcast layer of a track.
    pub layer_switches: u64,
    /// Participants now (a gauge).
    pub participants: u64,
    /// Tracks published now (a gauge).
    pub tracks: u64,
    /// Chat messages relayed over the SFU's data channels (each counted once, whatever the
    /// room's size).
    pub chat_messages: u64,
    /// Chat messages refused (not `{"text": …}`, too long, or over the rate).
    pub chat_refused: u64,
    /// NACKs subscribers sent the SFU (it resends from its own buffer), and NACKs the SFU
    /// sent publishers for what it lost from them.
    pub nacks_received: u64,
    pub nacks_sent: u64,
    /// ICE-TCP connections open now (a gauge; the shell's, 0 in the core).
    pub tcp_connections: u64,
    /// ICE-TCP connections closed for breaking a limit (the shell's, 0 in the core).
    pub tcp_refused: u64,
}

/// A track a participant publishes.
#[derive(Debug)]
struct Published {
    mid: Mid,
    kind: MediaKind,
    /// Its simulcast layers' rids, lowest first (empty: one layer, no rid).
    rids: Vec<Rid>,
    /// When we last asked its publisher for a keyframe, per layer (throttled).
    keyframe_asked: Vec<(Option<Rid>, Instant)>,
    /// When a packet of each layer last arrived (index = layer, lowest first). A publisher
    /// short of CPU or upload stops sending its upper layers: nobody waits for those.
    seen: Vec<Option<Instant>>,
    /// Payload bytes of each layer since the last rate measurement, and the rate measured then.
    bytes: Vec<u64>,
    rate: Vec<Option<u64>>,
}

impl Published {
    fn new(mid: Mid, kind: MediaKind, rids: Vec<Rid>) -> Self {
        let n = rids.len().max(1);
        Self {
            mid,
            kind,
            rids,
            keyframe_asked: Vec::new(),
            seen: vec![None; n],
            bytes: vec![0; n],
            rate: vec![None; n],
        }
    }

    /// Whether layer `i` arrived within [`LAYER_IDLE`] of `now`.
    fn active(&self, i: usize, now: Instant) -> bool {
        self.seen
            .get(i)
            .copied()
            .flatten()
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_IDLE)
    }

    /// The layers arriving now with their bitrates (measured, or the page's nominal ones
    /// until a measurement exists), lowest first.
    fn sent(&self, now: Instant) -> Vec<(usize, u64)> {
        (0..self.seen.len())
            .filter(|&i| self.active(i, now))
            .map(|i| {
                let nominal = NOMINAL_RATES[i.min(NOMINAL_RATES.len() - 1)];
                (i, self.rate[i].unwrap_or(nominal))
            })
            .collect()
    }

    /// Close a rate window of `secs` seconds: each layer's bitrate, averaged with the last
    /// window's (a keyframe burst in one second must not flip a receiver's layer up and down).
    fn measure(&mut self, secs: f64) {
        for (b, r) in self.bytes.iter_mut().zip(&mut self.rate) {
            if secs > 0.0 {
                let now = (*b as f64 * 8.0 / secs) as u64;
                *r = (*b > 0).then(|| r.map_or(now, |before| before / 2 + now / 2));
            }
            *b = 0;
        }
    }

    fn offered(&self, want: Want, now: Instant) -> Offered {
        Offered {
            want,
            layers: self.seen.len(),
            sent: self.sent(now),
        }
    }
}

/// The page's layers' bitrates (`sfu.js`'s `maxBitrate`s), lowest first: what a layer is taken
/// to cost until its rate has been measured.
pub const NOMINAL_RATES: [u64; 3] = [150_000, 500_000, 1_500_000];

/// The estimate each subscriber's BWE starts from (str0m probes up from it towards what the
/// subscriber's tiles want).
pub const INITIAL_ESTIMATE: u64 = 1_500_000;

/// A receiver's layers are chosen again when its estimate moved by more than this share.
const ESTIMATE_MOVE: f64 = 0.1;

/// A simulcast layer with no packet for this long counts as stopped (publishers pause upper
/// layers under CPU or bandwidth pressure; a receiver waiting for one would freeze on the old).
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// How often every room's layer choice is looked at again (layers that stopped or came back).
pub const RETARGET_INTERVAL: Duration = Duration::from_secs(1);

/// Keyframe requests to one publisher's track are at least this far apart: a room of
/// subscribers joining or losing packets at once costs the publisher one keyframe.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// A track forwarded to a subscriber.
#[derive(Debug)]
struct Forwarded {
    /// Publisher and its track.
    from: String,
    from_mid: Mid,
    kind: MediaKind,
    /// The subscriber's track it is written to.
    mid: Mid,
    /// Offered, the answer not applied yet.
    fresh: bool,
    /// Which of the publisher's simulcast layers goes to this subscriber.
    switch: Switcher,
    /// The layer last written, and the offset that keeps the subscriber's timestamps going
    /// on across a layer switch (each layer has its own RTP clock origin).
    written: Option<(usize, u64)>,
    offset: u64,
}

#[derive(Debug)]
struct Participant {
    pid: String,
    rtc: Rtc,
    /// Its own tracks.
    published: Vec<Published>,
    /// Other participants' tracks in its session.
    forwarded: Vec<Forwarded>,
    /// Tracks to add at the next negotiation: (publisher, its mid, kind).
    to_add: Vec<(String, Mid, MediaKind)>,
    /// Its tracks to stop at the next negotiation (their publisher left).
    to_stop: Vec<Mid>,
    /// Our offer waiting for its answer.
    pending: Option<SdpPendingOffer>,
    /// When str0m wants `handle_input(Timeout)` next.
    wake: Instant,
    /// Whether the session ended.
    dead: bool,
    /// When its last datagram arrived (or it joined).
    last_rx: Instant,
    /// The participant whose tile it pinned.
    pinned: Option<String>,
    /// Its bandwidth estimate (from TWCC or REMB feedback), and the one its layers were last
    /// chosen with.
    bwe: Option<u64>,
    bwe_used: Option<u64>,
    /// Its chat data channel, once open.
    chat: Option<ChannelId>,
    /// Chat messages it sent in the current second (start, count): at most [`CHAT_PER_SECOND`].
    chat_window: (Instant, u32),
    /// The cumulative NACK counts str0m last reported per stream (egress or ingress, mid,
    /// rid), so the SFU's counters grow by the differences.
    nacks: Vec<(bool, Mid, Option<Rid>, u64)>,
}

/// Upper bound on str0m's outputs drained per poll (a session never loops us forever).
const MAX_OUTPUTS_PER_POLL: usize = 4096;

/// `sfu-timeout`'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Tracks a participant may publish (a camera, a microphone, a screen and spares).
pub const MAX_PUBLISHED: usize = 8;

/// Chat messages a participant may send over its data channel per second (signaling's own
/// chat limit is its 20 messages/s for everything).
pub const CHAT_PER_SECOND: u32 = 10;

/// The largest chat message read from a data channel, in bytes (the text itself is held to
/// signaling's character limit).
const CHAT_MAX_BYTES: usize = 16 * 1024;

/// The SFU of one node: every participant of its SFU rooms. (Rooms are a signaling notion; the
/// core forwards within a room id.)
#[derive(Debug)]
pub struct Sfu {
    local: SocketAddr,
    /// Where the SFU accepts ICE-TCP connections (a passive host candidate), if it does.
    local_tcp: Option<SocketAddr>,
    max_participants: usize,
    timeout: Duration,
    rooms: Vec<(String, Vec<Participant>)>,
    /// The active speaker of each room.
    speakers: Vec<(String, Speaker)>,
    transmits: VecDeque<Transmit>,
    notices: VecDeque<Notice>,
    stats: SfuStats,
    /// When every room's layer choice is next looked at again.
    next_retarget: Option<Instant>,
}

impl Sfu {
    /// A new SFU whose socket is reached at `local` (the host candidate it advertises: a
    /// concrete address, not 0.0.0.0), holding up to `max_participants` per room.
    pub fn new(local: SocketAddr, max_participants: usize) -> Self {
        Self {
            local,
            local_tcp: None,
            max_participants,
            timeout: DEFAULT_TIMEOUT,
            rooms: Vec::new(),
            speakers: Vec::new(),
            transmits: VecDeque::new(),
            notices: VecDeque::new(),
            stats: SfuStats::default(),
            next_retarget: None,
        }
    }

    /// Also offer a passive ICE-TCP host candidate at `addr` (RFC 6544), for participants whose
    /// network lets TCP out but not UDP; it ranks below the UDP one.
    pub fn with_tcp(mut self, addr: SocketAddr) -> Self {
        self.local_tcp = Some(addr);
        self
    }

    /// Remove a participant that sent nothing for `timeout` (its tiles vanish for the others).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Counters.
    pub fn stats(&self) -> SfuStats {
        let people = self.rooms.iter().flat_map(|(_, r)| r.iter());
        SfuStats {
            participants: people.clone().count() as u64,
            tracks: people.map(|p| p.published.len() as u64).sum(),
            ..self.stats
        }
    }

    /// Participants of `room`.
    pub fn participants(&self, room: &str) -> usize {
        self.room(room).map_or(0, |r| r.len())
    }

    /// Tracks `pid` of `room` receives (forwarded from others) and publishes.
    pub fn tracks(&self, room: &str, pid: &str) -> Option<(usize, usize)> {
        let p = self.room(room)?.iter().find(|p| p.pid == pid)?;
        Some((p.forwarded.len(), p.published.len()))
    }

    fn room(&self, room: &str) -> Option<&Vec<Participant>> {
        self.rooms.iter().find(|(r, _)| r == room).map(|(_, p)| p)
    }

    fn room_mut(&mut self, room: &str) -> Option<&mut Vec<Participant>> {
        room_in(&mut self.rooms, room)
    }

    /// Participant `pid` joins `room` with its offer; returns our answer (SDP text).
    pub fn join(
        &mut self,
        room: &str,
        pid: &str,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        if let Some(r) = self.room(room) {
            if r.iter().any(|p| p.pid == pid) {
                return Err(SfuError::Duplicate(pid.to_owned()));
            }
            if r.len() >= self.max_participants {
                return Err(SfuError::Full(self.max_participants));
            }
        }
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE)))
            // Per-stream counters once a second (NACKs for /metrics).
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let candidate =
            Candidate::host(self.local, "udp").map_err(|e| SfuError::Sdp(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        if let Some(tcp) = self.local_tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| SfuError::Sdp(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        let mut p = Participant {
            pid: pid.to_owned(),
            rtc,
            published: Vec::new(),
            forwarded: Vec::new(),
            to_add: Vec::new(),
            to_stop: Vec::new(),
            pending: None,
            wake: now,
            dead: false,
            last_rx: now,
            pinned: None,
            bwe: None,
            bwe_used: None,
            chat: None,
            chat_window: (now, 0),
            nacks: Vec::new(),
        };
        if self.room(room).is_none() {
            self.rooms.push((room.to_owned(), Vec::new()));
        }
        let r = self.room_mut(room).expect("just made");
        // Everything the others publish comes to the newcomer.
        for other in r.iter() {
            for t in &other.published {
                p.to_add.push((other.pid.clone(), t.mid, t.kind));
            }
        }
        r.push(p);
        self.drive(room, pid, now);
        Ok(answer.to_sdp_string())
    }

    /// Participant `pid`'s answer to our last offer.
    pub fn answer(
        &mut self,
        room: &str,
        pid: &str,
        answer: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let p = self
            .room_mut(room)
            .and_then(|r| r.iter_mut().find(|p| p.pid == pid))
            .ok_or_else(|| SfuError::Unknown(pid.to_owned()))?;
        let pending = p.pending.take().ok_or(SfuError::NoPendingOffer)?;
        p.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        // The subscriber can decode its new video tracks only from a keyframe: ask for one.
        let mut fresh: Vec<(String, Mid)> = Vec::new();
        for f in p.forwarded.iter_mut().filter(|f| f.fresh) {
            f.fresh = false;
            if f.kind == MediaKind::Video {
                fresh.push((f.from.clone(), f.from_mid));
            }
        }
        for (from, from_mid) in fresh {
            if self.ask_keyframe(room, &from, from_mid, None, KeyframeRequestKind::Pli, now) {
                self.drive(room, &from, now);
            }
        }
        // Its new tracks get their layers (and keyframes of them are asked for).
        self.retarget(room, now);
        self.drive(room, pid, now);
        Ok(())
    }

    /// Ask `from`'s track `mid` for a keyframe unless one was asked for within
    /// [`KEYFRAME_INTERVAL`]; whether the request went out.
    fn ask_keyframe(
        &mut self,
        room: &str,
        from: &str,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        now: Instant,
    ) -> bool {
        let Some(p) =
            room_in(&mut self.rooms, room).and_then(|r| r.iter_mut().find(|p| p.pid == from))
        else {
            return false;
        };
        let Some(t) = p.published.iter_mut().find(|t| t.mid == mid) else {
            return false;
        };
        if t.keyframe_asked
            .iter()
            .any(|(r, at)| *r == rid && now.saturating_duration_since(*at) < KEYFRAME_INTERVAL)
        {
            return false;
        }
        let Some(mut w) = p.rtc.writer(mid) else {
            return false;
        };
        if w.request_keyframe(rid, kind).is_err() {
            return false;
        }
        t.keyframe_asked.retain(|(r, _)| *r != rid);
        t.keyframe_asked.push((rid, now));
        self.stats.keyframe_requests += 1;
        true
    }

    /// Participant `pid` of `room` pinned `target`'s tile (`None`: unpinned): it gets that
    /// participant's high layer from the next keyframe on.
    pub fn pin(
        &mut self,
        room: &str,
        pid: &str,
        target: Option<&str>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let p = self
            .room_mut(room)
            .and_then(|r| r.iter_mut().find(|p| p.pid == pid))
            .ok_or_else(|| SfuError::Unknown(pid.to_owned()))?;
        p.pinned = target.map(str::to_owned);
        self.retarget(room, now);
        Ok(())
    }

    /// The active speaker of `room`.
    pub fn speaker(&self, room: &str) -> Option<&str> {
        self.speakers
            .iter()
            .find(|(r, _)| r == room)
            .and_then(|(_, s)| s.current())
    }

    /// The layer (index, lowest 0) `pid` of `room` receives of `from`'s video now.
    pub fn layer(&self, room: &str, pid: &str, from: &str) -> Option<usize> {
        let p = self.room(room)?.iter().find(|p| p.pid == pid)?;
        p.forwarded
            .iter()
            .find(|f| f.from == from && f.kind == MediaKind::Video)
            .and_then(|f| f.switch.current())
    }

    /// Set every subscriber's target layer of every simulcast video it receives (pinned tile
    /// and active speaker: the highest layer; the rest: the lowest; among the layers being
    /// sent, within the subscriber's bandwidth estimate: [`choose`]), point its BWE at what
    /// its tiles want, and ask the publishers for keyframes of the layers someone moves to.
    fn retarget(&mut self, room: &str, now: Instant) {
        let speaker = self.speaker(room).map(str::to_owned);
        let Some(r) = self.room_mut(room) else {
            return;
        };
        // Each receiver's video tracks: what it wants of each, what is being sent of each.
        let mut asks: Vec<(String, Mid, Option<usize>)> = Vec::new();
        let mut plans: Vec<(usize, Vec<usize>, Vec<Offered>)> = Vec::new();
        for (k, p) in r.iter().enumerate() {
            let mut which = Vec::new();
            let mut tracks = Vec::new();
            for (fi, f) in p.forwarded.iter().enumerate() {
                if f.kind != MediaKind::Video {
                    continue;
                }
                let Some(t) = r
                    .iter()
                    .find(|x| x.pid == f.from)
                    .and_then(|x| x.published.iter().find(|t| t.mid == f.from_mid))
                else {
                    continue;
                };
                let want = if p.pinned.as_deref() == Some(f.from.as_str()) {
                    Want::Pinned
                } else if speaker.as_deref() == Some(f.from.as_str()) {
                    Want::Speaker
                } else {
                    Want::Low
                };
                which.push(fi);
                tracks.push(t.offered(want, now));
            }
            plans.push((k, which, tracks));
        }
        for (k, which, tracks) in plans {
            let p = &mut r[k];
            let targets = choose(&tracks, p.bwe);
            p.bwe_used = p.bwe;
            // The BWE probes up to what every tile wants (+25 %), so an estimate that started
            // low can grow into it; audio rides in the headroom.
            let want = desired(&tracks);
            if want > 0 {
                p.rtc
                    .bwe()
                    .set_desired_bitrate(Bitrate::bps(want + want / 4));
            }
            for (fi, target) in which.into_iter().zip(targets) {
                let f = &mut p.forwarded[fi];
                if f.switch.retarget(Some(target)) {
                    asks.push((f.from.clone(), f.from_mid, Some(target)));
                }
            }
        }
        for (from, mid, layer) in asks {
            let rid = layer.and_then(|i| {
                self.room(room)?
                    .iter()
                    .find(|p| p.pid == from)?
                    .published
                    .iter()
                    .find(|t| t.mid == mid)?
                    .rids
                    .get(i)
                    .copied()
                // A track without layers: `None` asks for its one stream.
            });
            if self.ask_keyframe(room, &from, mid, rid, KeyframeRequestKind::Pli, now) {
                self.drive(room, &from, now);
            }
        }
    }

    /// Participant `pid` leaves `room` (signaling said so).
    pub fn leave(&mut self, room: &str, pid: &str, now: Instant) {
        let Some(r) = self.room_mut(room) else {
            return;
        };
        let Some(i) = r.iter().position(|p| p.pid == pid) else {
            return;
        };
        let mut gone = r.remove(i);
        gone.rtc.disconnect();
        let empty = r.is_empty();
        if let Some((_, sp)) = self.speakers.iter_mut().find(|(name, _)| name == room) {
            sp.remove(pid);
        }
        if empty {
            self.speakers.retain(|(name, _)| name != room);
        }
        let Some(r) = self.room_mut(room) else {
            return;
        };
        let others: Vec<String> = r.iter().map(|p| p.pid.clone()).collect();
        for p in r.iter_mut() {
            p.to_add.retain(|(from, _, _)| from != pid);
            let (stop, keep): (Vec<_>, Vec<_>) = p.forwarded.drain(..).partition(|f| f.from == pid);
            p.forwarded = keep;
            // Their NACK counts go too (the session's list would otherwise grow with every
            // publisher who ever came and went).
            p.nacks
                .retain(|(_, mid, _, _)| !stop.iter().any(|f| f.mid == *mid));
            p.to_stop.extend(stop.into_iter().map(|f| f.mid));
        }
        if r.is_empty() {
            self.rooms.retain(|(name, _)| name != room);
        }
        for o in others {
            self.drive(room, &o, now);
        }
    }

    /// A datagram arrived on the SFU's socket at `destination` from `source`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let _ = self.handle_packet(now, Protocol::Udp, source, destination, data);
    }

    /// A frame arrived on a TCP connection to the SFU's ICE-TCP candidate (`destination`)
    /// from `source` (RFC 4571: the shell has taken the length prefix off).
    /// Whether a session took it (a connection that only sends frames nobody takes is not
    /// kept alive by them).
    pub fn handle_tcp_frame(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        self.handle_packet(now, Protocol::Tcp, source, destination, data)
    }

    fn handle_packet(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Ok(receive) = Receive::new(proto, source, destination, data) else {
            self.stats.dropped_datagrams += 1;
            return false;
        };
        let input = Input::Receive(now, receive);
        let mut target = None;
        'find: for (room, r) in &self.rooms {
            for p in r {
                if !p.dead && p.rtc.accepts(&input) {
                    target = Some((room.clone(), p.pid.clone()));
                    break 'find;
                }
            }
        }
        let Some((room, pid)) = target else {
            self.stats.dropped_datagrams += 1;
            return false;
        };
        let p = self
            .room_mut(&room)
            .and_then(|r| r.iter_mut().find(|p| p.pid == pid))
            .expect("found above");
        p.last_rx = now;
        if let Err(e) = p.rtc.handle_input(input) {
            tracing::debug!(%pid, error = %e, "SFU: input refused");
        }
        self.drive(&room, &pid, now);
        true
    }

    /// The earliest moment [`Sfu::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rooms
            .iter()
            .flat_map(|(_, r)| r.iter().map(|p| p.wake.min(p.last_rx + self.timeout)))
            .chain(self.next_retarget)
            .min()
    }

    /// Time passed: every session whose wake-up is due runs.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(due) = self.next_retarget.filter(|t| *t <= now) {
            self.next_retarget = None;
            // The window that just closed: each published layer's bitrate in it.
            let secs = (now.saturating_duration_since(due) + RETARGET_INTERVAL).as_secs_f64();
            for p in self.rooms.iter_mut().flat_map(|(_, r)| r.iter_mut()) {
                for t in &mut p.published {
                    t.measure(secs);
                }
            }
            let rooms: Vec<String> = self.rooms.iter().map(|(r, _)| r.clone()).collect();
            for room in rooms {
                self.retarget(&room, now);
            }
        }
        if self.next_retarget.is_none() && !self.rooms.is_empty() {
            self.next_retarget = Some(now + RETARGET_INTERVAL);
        }
        let due: Vec<(String, String)> = self
            .rooms
            .iter()
            .flat_map(|(room, r)| {
                r.iter()
                    .filter(|p| p.wake <= now || p.last_rx + self.timeout <= now)
                    .map(move |p| (room.clone(), p.pid.clone()))
            })
            .collect();
        let timeout = self.timeout;
        for (room, pid) in due {
            if let Some(p) = self
                .room_mut(&room)
                .and_then(|r| r.iter_mut().find(|p| p.pid == pid))
            {
                if p.last_rx + timeout <= now {
                    tracing::debug!(%pid, "SFU: participant silent past sfu-timeout: removed");
                    p.dead = true;
                } else {
                    let _ = p.rtc.handle_input(Input::Timeout(now));
                }
            }
            self.drive(&room, &pid, now);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing to tell signaling.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Run `pid`'s session: start a negotiation if one is due, drain its outputs, act on its
    /// events (forwarding to the other sessions, which are drained in turn).
    fn drive(&mut self, room: &str, pid: &str, now: Instant) {
        let mut work = VecDeque::from([pid.to_owned()]);
        let mut rounds = 0;
        while let Some(pid) = work.pop_front() {
            rounds += 1;
            if rounds > 64 {
                break; // every participant got its turn several times; the rest waits a tick
            }
            let Some(r) = self.room_mut(room) else {
                return;
            };
            let Some(i) = r.iter().position(|p| p.pid == pid) else {
                continue;
            };
            if let Some(offer) = negotiate(&mut r[i]) {
                self.notices.push_back(Notice::Offer {
                    room: room.to_owned(),
                    to: pid.clone(),
                    sdp: offer,
                });
            }
            let r = room_in(&mut self.rooms, room).expect("present");
            let events = drain(&mut r[i], &mut self.transmits, now);
            let mut retarget = false;
            for e in events {
                retarget |= self.on_event(room, i, e, now, &mut work);
            }
            if retarget {
                // A new active speaker or estimate: layers are chosen again. That drives the
                // publishers asked for keyframes, and one of those may have left the room:
                // find this participant again rather than trust its old index.
                self.retarget(room, now);
            }
            let Some(r) = self.room_mut(room) else {
                return;
            };
            let Some(i) = r.iter().position(|p| p.pid == pid) else {
                continue;
            };
            if !r[i].rtc.is_alive() || r[i].dead {
                let gone = r[i].pid.clone();
                self.notices.push_back(Notice::Gone {
                    room: room.to_owned(),
                    pid: gone.clone(),
                });
                self.leave(room, &gone, now);
                return;
            }
        }
    }

    fn on_event(
        &mut self,
        room: &str,
        i: usize,
        e: Event,
        now: Instant,
        work: &mut VecDeque<String>,
    ) -> bool {
        let Some(r) = room_in(&mut self.rooms, room) else {
            return false;
        };
        match e {
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                if r[i].published.len() >= MAX_PUBLISHED {
                    return false;
                }
                let rids: Vec<Rid> = m
                    .simulcast
                    .as_ref()
                    .map(|s| s.recv.iter().map(|l| l.rid).collect())
                    .unwrap_or_default();
                r[i].published.push(Published::new(m.mid, m.kind, rids));
                let from = r[i].pid.clone();
                for (k, p) in r.iter_mut().enumerate() {
                    if k != i {
                        p.to_add.push((from.clone(), m.mid, m.kind));
                        work.push_back(p.pid.clone());
                    }
                }
            }
            Event::MediaData(d) => {
                let from = r[i].pid.clone();
                let Some(t) = r[i].published.iter_mut().find(|t| t.mid == d.mid) else {
                    return false;
                };
                // Which simulcast layer this is (a track without layers is layer 0).
                let layer = match &d.rid {
                    _ if t.rids.is_empty() => Some(0),
                    Some(rid) => t.rids.iter().position(|x| x == rid),
                    None => None,
                };
                let Some(layer) = layer else {
                    return false;
                };
                if let Some(seen) = t.seen.get_mut(layer) {
                    *seen = Some(now);
                    t.bytes[layer] += d.data.len() as u64;
                }
                let kind = t.kind;
                let mut retarget = false;
                if kind == MediaKind::Audio {
                    if let Some(level) = d.ext_vals.audio_level {
                        let sp = match self.speakers.iter_mut().find(|(r, _)| r == room) {
                            Some((_, sp)) => sp,
                            None => {
                                self.speakers.push((room.to_owned(), Speaker::default()));
                                &mut self.speakers.last_mut().expect("pushed").1
                            }
                        };
                        if let Some(pid) = sp.sample(&from, level.unsigned_abs()) {
                            self.notices.push_back(Notice::Speaker {
                                room: room.to_owned(),
                                pid,
                            });
                            retarget = true;
                        }
                    }
                }
                let keyframe = d.is_keyframe();
                // A subscriber still waiting for a keyframe of this layer (the one asked for
                // went by before it joined, or was lost): asked again, at most every 500 ms.
                let mut reask = false;
                for (k, p) in r.iter_mut().enumerate() {
                    if k == i {
                        continue;
                    }
                    let Some(f) = p
                        .forwarded
                        .iter_mut()
                        .find(|f| f.from == from && f.from_mid == d.mid)
                    else {
                        continue;
                    };
                    let mut time = d.time;
                    if kind == MediaKind::Video {
                        if !f.switch.forward(layer, keyframe) {
                            reask |= f.switch.waiting() == Some(layer);
                            continue;
                        }
                        // Each layer has its own RTP clock origin: after a switch the
                        // subscriber's timestamps continue one frame (at 30 fps) on.
                        let t_in = d.time.numer();
                        if let Some((last_layer, last)) = f.written {
                            if last_layer != layer {
                                let step = u64::from(d.time.denom()) / 30;
                                f.offset = last.wrapping_add(step).wrapping_sub(t_in);
                                self.stats.layer_switches += 1;
                            }
                        }
                        let out = t_in.wrapping_add(f.offset);
                        f.written = Some((layer, out));
                        time = MediaTime::new(out, d.time.frequency());
                    }
                    if forward(&mut p.rtc, f.mid, &d, time) {
                        self.stats.forwarded_packets += 1;
                        self.stats.forwarded_bytes += d.data.len() as u64;
                        work.push_back(p.pid.clone());
                    }
                }
                if reask {
                    let rid = d.rid;
                    if self.ask_keyframe(room, &from, d.mid, rid, KeyframeRequestKind::Pli, now) {
                        work.push_back(from);
                    }
                }
                return retarget;
            }
            Event::KeyframeRequest(req) => {
                let Some(f) = r[i].forwarded.iter().find(|f| f.mid == req.mid) else {
                    return false;
                };
                let (from, from_mid) = (f.from.clone(), f.from_mid);
                if self.ask_keyframe(room, &from, from_mid, req.rid, req.kind, now) {
                    work.push_back(from);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
            | Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                let e = estimate.as_u64();
                r[i].bwe = Some(e);
                // Layers are chosen again when the estimate moved enough to matter.
                return r[i].bwe_used.is_none_or(|used| {
                    (e as f64 - used as f64).abs() > ESTIMATE_MOVE * used as f64
                });
            }
            Event::MediaEgressStats(st) => {
                let d = nack_delta(&mut r[i].nacks, (true, st.mid, st.rid), st.nacks);
                self.stats.nacks_received += d;
            }
            Event::MediaIngressStats(st) => {
                let d = nack_delta(&mut r[i].nacks, (false, st.mid, st.rid), st.nacks);
                self.stats.nacks_sent += d;
            }
            Event::ChannelOpen(id, label) if label == "chat" => r[i].chat = Some(id),
            Event::ChannelClose(id) if r[i].chat == Some(id) => r[i].chat = None,
            Event::ChannelData(cd) if r[i].chat == Some(cd.id) => {
                let me = &mut r[i];
                let from = me.pid.clone();
                let Some((line, text)) =
                    chat_line(&from, (cd.binary, &cd.data), &mut me.chat_window, now)
                else {
                    self.stats.chat_refused += 1;
                    return false;
                };
                self.stats.chat_messages += 1;
                for (k, p) in r.iter_mut().enumerate() {
                    if k == i {
                        continue;
                    }
                    let sent = p
                        .chat
                        .and_then(|id| p.rtc.channel(id))
                        .is_some_and(|mut ch| ch.write(false, line.as_bytes()).unwrap_or(false));
                    if sent {
                        work.push_back(p.pid.clone());
                    } else {
                        // No open channel (still joining, restarting) or a full one: the line
                        // goes over signaling.
                        self.notices.push_back(Notice::Chat {
                            room: room.to_owned(),
                            to: p.pid.clone(),
                            from: from.clone(),
                            text: text.clone(),
                        });
                    }
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                r[i].dead = true;
            }
            _ => {}
        }
        false
    }
}

/// What a participant's chat message becomes for the others: `{"from": pid, "text": …}` (the
/// SFU says who sent it; names come from signaling) and the text alone, or `None` when it is
/// refused — not text, not `{"text": "…"}`, empty, longer than signaling allows, or past
/// [`CHAT_PER_SECOND`].
fn chat_line(
    pid: &str,
    (binary, data): (bool, &[u8]),
    window: &mut (Instant, u32),
    now: Instant,
) -> Option<(String, String)> {
    if now.saturating_duration_since(window.0) >= Duration::from_secs(1) {
        *window = (now, 0);
    }
    if window.1 >= CHAT_PER_SECOND || binary || data.len() > CHAT_MAX_BYTES {
        return None;
    }
    window.1 += 1;
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let text = v.get("text")?.as_str()?.trim();
    if text.is_empty() || text.chars().count() > crate::signal::CHAT_MAX_CHARS {
        return None;
    }
    Some((
        serde_json::json!({ "from": pid, "text": text }).to_string(),
        text.to_owned(),
    ))
}

/// How much a stream's cumulative NACK count grew since str0m last reported it (a stream
/// that started over counts from zero again).
fn nack_delta(
    seen: &mut Vec<(bool, Mid, Option<Rid>, u64)>,
    (egress, mid, rid): (bool, Mid, Option<Rid>),
    total: u64,
) -> u64 {
    match seen
        .iter_mut()
        .find(|(e, m, r, _)| *e == egress && *m == mid && *r == rid)
    {
        Some(entry) => {
            let before = std::mem::replace(&mut entry.3, total);
            if total >= before {
                total - before
            } else {
                total
            }
        }
        None => {
            seen.push((egress, mid, rid, total));
            total
        }
    }
}

/// The participants of `room`.
fn room_in<'a>(
    rooms: &'a mut [(String, Vec<Participant>)],
    room: &str,
) -> Option<&'a mut Vec<Participant>> {
    rooms.iter_mut().find(|(r, _)| r == room).map(|(_, p)| p)
}

/// Start the participant's next negotiation if changes wait and none is in flight; the offer.
fn negotiate(p: &mut Participant) -> Option<String> {
    if p.pending.is_some() || (p.to_add.is_empty() && p.to_stop.is_empty()) {
        return None;
    }
    let mut api = p.rtc.sdp_api();
    for mid in p.to_stop.drain(..) {
        api.stop_media(mid);
    }
    let mut added = Vec::new();
    for (from, from_mid, kind) in p.to_add.drain(..) {
        let mid = api.add_media(kind, Direction::SendOnly, Some(from.clone()), None, None);
        added.push(Forwarded {
            from,
            from_mid,
            kind,
            mid,
            fresh: true,
            switch: Switcher::default(),
            written: None,
            offset: 0,
        });
    }
    let (offer, pending) = api.apply()?;
    p.forwarded.extend(added);
    p.pending = Some(pending);
    Some(offer.to_sdp_string())
}

/// Drain a session's outputs: datagrams out, its wake-up time, and its events.
fn drain(p: &mut Participant, out: &mut VecDeque<Transmit>, now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..MAX_OUTPUTS_PER_POLL {
        match p.rtc.poll_output() {
            Ok(Output::Transmit(t)) => out.push_back(Transmit {
                tcp: t.proto == Protocol::Tcp,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Ok(Output::Timeout(t)) => {
                p.wake = t;
                return events;
            }
            Ok(Output::Event(e)) => events.push(e),
            Err(e) => {
                tracing::debug!(pid = %p.pid, error = %e, "SFU: session failed");
                p.dead = true;
                break;
            }
        }
    }
    // More output than a poll should hold: come back soon rather than spin.
    p.wake = now + Duration::from_millis(1);
    events
}

/// Write a publisher's frame to a subscriber's track at `time` (false: not negotiated yet, or
/// refused).
fn forward(rtc: &mut Rtc, mid: Mid, d: &MediaData, time: MediaTime) -> bool {
    let Some(w) = rtc.writer(mid) else {
        return false;
    };
    let Some(pt) = w.match_params(d.params) else {
        return false;
    };
    w.write(pt, d.network_time, time, d.data.clone()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(layers: usize) -> Published {
        Published::new(
            Mid::from("0"),
            MediaKind::Video,
            ["l", "m", "h"][..layers]
                .iter()
                .map(|r| Rid::from(*r))
                .collect(),
        )
    }

    #[test]
    fn every_layer_being_sent_is_offered_at_its_nominal_rate_until_measured() {
        let now = Instant::now();
        let mut t = track(3);
        t.seen = vec![Some(now); 3];
        assert_eq!(
            t.sent(now),
            vec![(0, 150_000), (1, 500_000), (2, 1_500_000)]
        );
    }

    #[test]
    fn a_stopped_layer_is_no_longer_offered_and_comes_back_with_its_packets() {
        let start = Instant::now();
        let mut t = track(3);
        t.seen = vec![Some(start); 3];
        // The publisher ran short of CPU and stopped its high layer; low and middle go on.
        let later = start + LAYER_IDLE + Duration::from_millis(100);
        t.seen[0] = Some(later);
        t.seen[1] = Some(later);
        assert_eq!(t.sent(later), vec![(0, 150_000), (1, 500_000)]);
        let pinned = choose(&[t.offered(Want::Pinned, later)], None);
        assert_eq!(
            pinned,
            vec![1],
            "the pinned tile gets the middle layer, not a freeze"
        );
        t.seen[2] = Some(later);
        assert_eq!(choose(&[t.offered(Want::Pinned, later)], None), vec![2]);
    }

    #[test]
    fn measured_rates_replace_the_nominal_ones_per_window() {
        let now = Instant::now();
        let mut t = track(3);
        t.seen = vec![Some(now); 3];
        t.bytes = vec![5_000, 30_000, 0];
        t.measure(1.0);
        assert_eq!(t.sent(now), vec![(0, 40_000), (1, 240_000), (2, 1_500_000)]);
        assert_eq!(t.bytes, vec![0, 0, 0], "a new window starts");
        // A keyframe burst doubles the middle layer for one second: half of it shows.
        t.bytes = vec![5_000, 60_000, 0];
        t.measure(1.0);
        assert_eq!(t.sent(now)[1], (1, 360_000));
    }

    fn data(text: &str, binary: bool) -> (bool, &[u8]) {
        (binary, text.as_bytes())
    }

    #[test]
    fn a_chat_line_goes_out_with_the_sender_named_by_the_sfu() {
        let now = Instant::now();
        let mut w = (now, 0);
        let line = chat_line(
            "ann",
            data(r#"{"text":" hi all ","from":"mallory"}"#, false),
            &mut w,
            now,
        );
        let v: serde_json::Value = serde_json::from_str(&line.unwrap().0).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"from": "ann", "text": "hi all"}),
            "its own 'from' is ignored"
        );
    }

    #[test]
    fn malformed_empty_binary_and_overlong_chat_is_refused() {
        let now = Instant::now();
        let long = format!(
            r#"{{"text":"{}"}}"#,
            "x".repeat(crate::signal::CHAT_MAX_CHARS + 1)
        );
        for (text, binary) in [
            ("not json", false),
            (r#"{"text": 5}"#, false),
            (r#"{"text": "   "}"#, false),
            (r#"{"text": "hi"}"#, true),
            (long.as_str(), false),
            ("", false),
        ] {
            let mut w = (now, 0);
            assert_eq!(
                chat_line("ann", data(text, binary), &mut w, now),
                None,
                "{text}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever a page writes on its chat channel: an answer or a refusal, never a panic,
        /// and what goes out is always `{from, text}` with the SFU's own `from`.
        #[test]
        fn any_bytes_on_the_chat_channel_are_answered_or_refused(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            binary in proptest::prelude::any::<bool>(),
        ) {
            let now = Instant::now();
            let mut w = (now, 0);
            if let Some(line) = chat_line("p1", (binary, &data), &mut w, now) {
                let v: serde_json::Value = serde_json::from_str(&line.0).unwrap();
                proptest::prop_assert_eq!(v["from"].as_str(), Some("p1"));
                proptest::prop_assert!(v["text"].is_string());
            }
        }
    }

    #[test]
    fn chat_past_ten_a_second_is_refused_until_the_next_second() {
        let now = Instant::now();
        let mut w = (now, 0);
        let msg = data(r#"{"text":"spam"}"#, false);
        let sent = (0..25)
            .filter(|_| chat_line("ann", msg, &mut w, now).is_some())
            .count();
        assert_eq!(sent, CHAT_PER_SECOND as usize);
        let later = now + Duration::from_secs(1);
        assert!(chat_line("ann", msg, &mut w, later).is_some());
    }

    #[test]
    fn before_any_packet_the_wanted_layer_is_waited_for() {
        let t = track(3);
        let now = Instant::now();
        assert!(t.sent(now).is_empty());
        assert_eq!(choose(&[t.offered(Want::Pinned, now)], None), vec![2]);
        assert_eq!(choose(&[t.offered(Want::Low, now)], None), vec![0]);
        let one = track(1);
        assert_eq!(
            choose(&[one.offered(Want::Pinned, now)], None),
            vec![0],
            "a track without simulcast has one layer"
        );
    }
}
