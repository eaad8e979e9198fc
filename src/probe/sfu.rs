//! `natpass probe sfu`: a synthetic load on natpass's SFU without browsers. Publishers and
//! subscribers are `str0m` WebRTC clients (full ICE, DTLS-SRTP, the same library the SFU is
//! built on, but the client side of it) on loopback UDP sockets, all driven by one thread; the
//! SFU is natpass's own shell ([`SfuHandle`]: the `natpass-sfu` thread and socket that `natpass
//! serve` runs), started in this process so its thread's CPU time can be read from
//! `/proc/self/task`. Rooms: `publishers` participants each publish one VP8 track and receive
//! every other publisher's (an N × N room), plus `subscribers` receive-only participants
//! (1 × N with one publisher).
//!
//! Every publisher sends `rate` frames a second of `size` bytes (one RTP packet each; a
//! keyframe every 30 frames and whenever the SFU asks for one). After every subscription
//! carries frames the counters are read, the load runs for `duration`, and they are read again:
//! forwarded packets per second (the SFU's own count), frames received by the clients against
//! the frames the SFU should have forwarded (loss), and the SFU thread's CPU time per forwarded
//! packet, the figure to put beside the UDP echo floor (`benches/floor`, `scripts/bench-sfu.sh`).
//!
//! `--janus URL` runs the same clients and frames against Janus's VideoRoom instead ([`janus`]),
//! measuring the whole `janus` process's CPU per packet its subscribers received.

mod janus;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::sfu::{Notice, SfuHandle};

/// What to run.
#[derive(Debug, Clone)]
pub struct SfuLoadOptions {
    /// Participants that publish a video track (and receive the other publishers').
    pub publishers: usize,
    /// Receive-only participants.
    pub subscribers: usize,
    /// Frames (= RTP packets) a second per publisher.
    pub rate: u32,
    /// Bytes per frame (one packet each: at most 1,100).
    pub size: usize,
    /// How long to measure once every subscription carries frames.
    pub duration: Duration,
    /// How long the sessions may take to connect.
    pub setup_timeout: Duration,
    /// Pin the SFU's thread to the first core and the clients' to the second (so the SFU's CPU
    /// compares with a floor pinned the same way).
    pub cores: Option<(usize, usize)>,
    /// Run against Janus's VideoRoom at this HTTP API URL instead of natpass's SFU.
    pub janus: Option<JanusTarget>,
    /// The clients' address (Janus gathers no loopback candidate: `scripts/bench-sfu.sh` runs
    /// it in a namespace of its own with an address on a veth).
    pub bind: std::net::IpAddr,
}

/// A running Janus to load.
#[derive(Debug, Clone)]
pub struct JanusTarget {
    /// Its HTTP API, e.g. `http://127.0.0.1:8088/janus`.
    pub url: String,
    /// Its process (whose CPU is measured); `None`: the one process named `janus`.
    pub pid: Option<u32>,
}

/// Why the probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum SfuProbeError {
    /// A bad option.
    #[error("{0}")]
    Options(String),
    /// A socket or the SFU thread could not start.
    #[error("starting: {0}")]
    Io(#[from] std::io::Error),
    /// The SFU refused a join or an answer.
    #[error("the SFU refused {what}: {error}")]
    Refused {
        /// Which step.
        what: String,
        /// Its answer.
        error: String,
    },
    /// Not every subscription carried frames within the setup time.
    #[error("after {0:?} only {1} of {2} subscriptions carry frames")]
    Setup(Duration, usize, usize),
}

/// The result (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct SfuLoadReport {
    /// `natpass` or `janus`.
    pub server: &'static str,
    /// Peer connections the server holds (Janus: one per publisher and one per receiver).
    pub peer_connections: usize,
    /// Publishers and receive-only subscribers.
    pub publishers: usize,
    /// Receive-only participants.
    pub subscribers: usize,
    /// Frames a second per publisher, and their size.
    pub rate: u32,
    /// Bytes per frame.
    pub size: usize,
    /// Seconds until every subscription carried frames.
    pub setup_seconds: f64,
    /// The measured window.
    pub duration_seconds: f64,
    /// Frames the publishers sent in the window.
    pub sent: u64,
    /// Frames the SFU should have delivered in it (each sent frame × its receivers).
    pub expected: u64,
    /// Frames the clients received in it.
    pub received: u64,
    /// 100 × (expected − received) / expected, floored at 0.
    pub loss_percent: f64,
    /// Packets the SFU forwarded in the window (natpass: its own counter; Janus has none on
    /// its API: the packets its subscribers received).
    pub forwarded_packets: u64,
    /// Per second.
    pub forwarded_per_second: f64,
    /// CPU seconds (user + system) in the window of the `natpass-sfu` thread, or of the whole
    /// `janus` process.
    pub sfu_cpu_seconds: f64,
    /// Microseconds of SFU CPU per forwarded packet.
    pub cpu_us_per_forwarded: f64,
    /// CPU seconds of the client thread (publishers and subscribers) in the window.
    pub client_cpu_seconds: f64,
}

/// One participant: a str0m client on its own socket.
struct Client {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    wake: Instant,
    /// The track it publishes.
    mid: Option<Mid>,
    /// Frames written, and whether the next one must be a keyframe.
    frames: u64,
    key_wanted: bool,
    /// Frames received, per publisher stream id.
    received: u64,
    /// Publishers whose frames arrived.
    from: HashMap<Mid, bool>,
}

impl Client {
    fn new(now: Instant, ip: std::net::IpAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind((ip, 0))?;
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let mut rtc = Rtc::builder().build(now);
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| std::io::Error::other(format!("candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        Ok(Self {
            rtc,
            sock,
            local,
            wake: now,
            mid: None,
            frames: 0,
            key_wanted: true,
            received: 0,
            from: HashMap::new(),
        })
    }

    /// Its offer: a VP8 track to publish, or a data channel only (a viewer).
    fn offer(&mut self, publish: bool) -> Result<(String, SdpPendingOffer), SfuProbeError> {
        let mut api = self.rtc.sdp_api();
        if publish {
            self.mid = Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        } else {
            api.add_channel("chat".into());
        }
        let (offer, pending) = api.apply().ok_or_else(|| SfuProbeError::Refused {
            what: "the client's own offer".into(),
            error: "nothing to offer".into(),
        })?;
        Ok((offer.to_sdp_string(), pending))
    }

    /// Feed what arrived, run its timers, send what it wants sent. Counts frames received.
    fn pump(&mut self, buf: &mut [u8]) {
        while let Ok((n, src)) = self.sock.recv_from(buf) {
            if let Ok(r) = Receive::new(Protocol::Udp, src, self.local, &buf[..n]) {
                let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
            }
        }
        let now = Instant::now();
        if self.wake <= now {
            let _ = self.rtc.handle_input(Input::Timeout(now));
        }
        self.drain();
    }

    fn drain(&mut self) {
        for _ in 0..100_000 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(t)) => {
                    self.wake = t;
                    return;
                }
                Ok(Output::Event(Event::MediaData(d))) => {
                    self.received += 1;
                    self.from.insert(d.mid, true);
                }
                Ok(Output::Event(Event::KeyframeRequest(_))) => self.key_wanted = true,
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// Write the next frame (one packet): a keyframe every 30 frames or when asked.
    fn write_frame(&mut self, size: usize, t0: Instant) {
        let Some(mid) = self.mid else {
            return;
        };
        let Some(pt) = self
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
        else {
            return;
        };
        let key = self.key_wanted || self.frames.is_multiple_of(30);
        self.key_wanted = false;
        // VP8's frame tag: bit 0 clear = keyframe (RFC 6386 §9.1); the rest is filler.
        let mut frame = vec![0x5a_u8; size.max(1)];
        frame[0] = if key { 0x00 } else { 0x01 };
        let Some(w) = self.rtc.writer(mid) else {
            return;
        };
        if w.write(pt, Instant::now(), MediaTime::from(t0.elapsed()), frame)
            .is_ok()
        {
            self.frames += 1;
        }
        self.drain();
    }
}

/// The /proc/self/task directory of this process's thread named `name`.
fn thread_dir(name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(Result::ok)
        .map(|t| t.path())
        .find(|d| std::fs::read_to_string(d.join("comm")).is_ok_and(|c| c.trim() == name))
}

/// Run thread `tid` (0: the calling one) on `core` only.
fn pin(tid: i32, core: usize) -> Result<(), SfuProbeError> {
    let mut set = nix::sched::CpuSet::new();
    set.set(core)
        .map_err(|e| SfuProbeError::Options(format!("--cores: core {core}: {e}")))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)
        .map_err(|e| SfuProbeError::Options(format!("--cores: core {core}: {e}")))
}

/// User + system CPU seconds in a `/proc/.../stat` file.
fn cpu_seconds(stat: &std::path::Path) -> Option<f64> {
    const USER_HZ: f64 = 100.0; // the unit of utime and stime on Linux
    let stat = std::fs::read_to_string(stat).ok()?;
    // The fields after the command (which may hold spaces) start after the last ')'.
    let f: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU seconds of this process's thread named `name`.
fn thread_cpu(name: &str) -> Option<f64> {
    cpu_seconds(&thread_dir(name)?.join("stat"))
}

/// CPU seconds of the calling thread.
fn own_cpu() -> f64 {
    cpu_seconds(std::path::Path::new("/proc/thread-self/stat")).unwrap_or(0.0)
}

/// The server under load (one per run: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Server {
    /// natpass's SFU shell in this process, and the notices (offers) it sends to signaling.
    Natpass {
        rt: tokio::runtime::Runtime,
        sfu: SfuHandle,
        notices: tokio::sync::mpsc::Receiver<Notice>,
    },
    /// A Janus process and our session on it.
    Janus { api: janus::Janus, pid: u32 },
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Server::Natpass { .. } => "natpass",
            Server::Janus { .. } => "janus",
        }
    }

    /// CPU seconds of what forwards: the `natpass-sfu` thread, or the whole `janus` process.
    fn cpu(&self) -> f64 {
        match self {
            Server::Natpass { .. } => thread_cpu("natpass-sfu"),
            Server::Janus { pid, .. } => {
                cpu_seconds(std::path::Path::new(&format!("/proc/{pid}/stat")))
            }
        }
        .unwrap_or(0.0)
    }

    /// Run every thread of the server on `core`.
    fn pin(&self, core: usize) -> Result<(), SfuProbeError> {
        match self {
            Server::Natpass { .. } => {
                // The thread names itself once it runs: give it a moment.
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    let tid = thread_dir("natpass-sfu")
                        .and_then(|d| d.file_name()?.to_str()?.parse::<i32>().ok());
                    match tid {
                        Some(t) => return pin(t, core),
                        None if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        None => {
                            return Err(SfuProbeError::Options(
                                "--cores: no natpass-sfu thread".into(),
                            ));
                        }
                    }
                }
            }
            Server::Janus { pid, .. } => {
                for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.filter_map(Result::ok) {
                    if let Some(tid) = t.file_name().to_str().and_then(|t| t.parse().ok()) {
                        pin(tid, core)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Check the options: the error names the flag.
fn check(o: &SfuLoadOptions) -> Result<(), SfuProbeError> {
    let participants = o.publishers + o.subscribers;
    if o.publishers == 0 {
        return Err(SfuProbeError::Options(
            "--publishers must be at least 1".into(),
        ));
    }
    if !(2..=200).contains(&participants) {
        return Err(SfuProbeError::Options(
            "publishers + subscribers must be between 2 and 200".into(),
        ));
    }
    if o.rate == 0 || o.rate > 2000 {
        return Err(SfuProbeError::Options(
            "--rate must be between 1 and 2000 frames/s".into(),
        ));
    }
    if o.size == 0 || o.size > 1100 {
        return Err(SfuProbeError::Options(
            "--size must be between 1 and 1100 bytes".into(),
        ));
    }
    Ok(())
}

/// natpass's SFU in this process, with one client per participant joined to one room.
fn natpass_room(o: &SfuLoadOptions) -> Result<(Server, Vec<Client>), SfuProbeError> {
    let participants = o.publishers + o.subscribers;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sfu, notices) = SfuHandle::spawn(
        "127.0.0.1:0".parse().expect("literal"),
        None,
        participants,
        Duration::from_secs(30),
        false,
    )?;
    let mut clients = Vec::with_capacity(participants);
    for k in 0..participants {
        let publish = k < o.publishers;
        let mut c = Client::new(Instant::now(), o.bind)?;
        let (offer, pending) = c.offer(publish)?;
        let refused = |what: String, e: String| SfuProbeError::Refused { what, error: e };
        let answer = rt
            .block_on(sfu.join(ROOM, &format!("p{k}"), &offer))
            .map_err(|e| refused(format!("p{k}'s join"), e.to_string()))?;
        let answer = SdpAnswer::from_sdp_string(&answer)
            .map_err(|e| refused("its answer".into(), e.to_string()))?;
        c.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| refused("its answer".into(), e.to_string()))?;
        clients.push(c);
    }
    Ok((Server::Natpass { rt, sfu, notices }, clients))
}

/// A room on Janus: a client per publisher, then a receiving client per participant that has
/// someone to receive (see [`janus`]).
fn janus_room(
    o: &SfuLoadOptions,
    target: &JanusTarget,
) -> Result<(Server, Vec<Client>), SfuProbeError> {
    let pid = match target.pid {
        Some(p) => p,
        None => janus::find_pid()?,
    };
    let participants = o.publishers + o.subscribers;
    let deadline = Instant::now() + o.setup_timeout;
    let mut api = janus::Janus::connect(&target.url, o.publishers)?;
    let mut clients = Vec::with_capacity(o.publishers + participants);
    let joined = (|| {
        for k in 0..o.publishers {
            let mut c = Client::new(Instant::now(), o.bind)?;
            api.publish(k, &mut c, deadline)?;
            clients.push(c);
        }
        let mut buf = vec![0u8; 2048];
        for k in 0..participants {
            let feeds: Vec<usize> = (0..o.publishers).filter(|&p| p != k).collect();
            if feeds.is_empty() {
                continue;
            }
            let mut c = Client::new(Instant::now(), o.bind)?;
            let publishers = &mut clients[..o.publishers];
            api.subscribe(&feeds, &mut c, deadline, &mut || {
                let until = Instant::now() + Duration::from_millis(20);
                while Instant::now() < until {
                    publishers.iter_mut().for_each(|p| p.pump(&mut buf));
                    std::thread::sleep(Duration::from_millis(1));
                }
            })?;
            clients.push(c);
        }
        Ok(())
    })();
    if let Err(e) = joined {
        api.close();
        return Err(e);
    }
    Ok((Server::Janus { api, pid }, clients))
}

const ROOM: &str = "probe";

/// Run the load; see the module docs.
pub fn run(o: &SfuLoadOptions) -> Result<SfuLoadReport, SfuProbeError> {
    check(o)?;
    let participants = o.publishers + o.subscribers;
    let start = Instant::now();
    let (server, clients) = match &o.janus {
        None => natpass_room(o)?,
        Some(t) => janus_room(o, t)?,
    };
    let mut load = Load {
        server,
        clients,
        interval: Duration::from_secs_f64(1.0 / f64::from(o.rate)),
        next_frame: Instant::now(),
        size: o.size,
        start,
        buf: vec![0u8; 2048],
    };
    let result = load.measure(o, start);
    for c in load.clients.iter_mut() {
        c.rtc.disconnect();
    }
    if let Server::Janus { api, .. } = &mut load.server {
        api.close();
    }
    let m = result?;
    let window = o.duration.as_secs_f64();
    // A publisher's frames go to every other participant.
    let expected = m.sent * (participants as u64 - 1);
    Ok(SfuLoadReport {
        server: load.server.name(),
        peer_connections: load.clients.len(),
        publishers: o.publishers,
        subscribers: o.subscribers,
        rate: o.rate,
        size: o.size,
        setup_seconds: m.setup.as_secs_f64(),
        duration_seconds: window,
        sent: m.sent,
        expected,
        received: m.received,
        loss_percent: if expected == 0 {
            0.0
        } else {
            100.0 * expected.saturating_sub(m.received) as f64 / expected as f64
        },
        forwarded_packets: m.forwarded,
        forwarded_per_second: m.forwarded as f64 / window,
        sfu_cpu_seconds: m.cpu,
        cpu_us_per_forwarded: if m.forwarded == 0 {
            0.0
        } else {
            m.cpu * 1e6 / m.forwarded as f64
        },
        client_cpu_seconds: m.client_cpu,
    })
}

/// What one measured window counted.
struct Measured {
    setup: Duration,
    sent: u64,
    received: u64,
    forwarded: u64,
    cpu: f64,
    client_cpu: f64,
}

/// The running load: the server, the clients and the frame clock.
struct Load {
    server: Server,
    clients: Vec<Client>,
    interval: Duration,
    next_frame: Instant,
    size: usize,
    start: Instant,
    buf: Vec<u8>,
}

impl Load {
    /// Packets forwarded so far: natpass's own counter; for Janus, those its subscribers got.
    fn forwarded(&self) -> u64 {
        match &self.server {
            Server::Natpass { sfu, .. } => sfu.stats().forwarded_packets.load(Ordering::Relaxed),
            Server::Janus { .. } => self.received(),
        }
    }

    fn received(&self) -> u64 {
        self.clients.iter().map(|c| c.received).sum()
    }

    fn sent(&self) -> u64 {
        self.clients.iter().map(|c| c.frames).sum()
    }

    /// Setup until every subscription carries frames, then the measured window.
    fn measure(&mut self, o: &SfuLoadOptions, start: Instant) -> Result<Measured, SfuProbeError> {
        // Each participant receives every publisher but itself.
        let participants = o.publishers + o.subscribers;
        let subscriptions: usize = (0..participants)
            .map(|k| o.publishers - usize::from(k < o.publishers))
            .sum();
        let setup_deadline = start + o.setup_timeout;
        loop {
            self.step()?;
            let flowing: usize = self.clients.iter().map(|c| c.from.len()).sum();
            if flowing >= subscriptions {
                break;
            }
            if Instant::now() > setup_deadline {
                return Err(SfuProbeError::Setup(
                    o.setup_timeout,
                    flowing,
                    subscriptions,
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let setup = start.elapsed();
        // Pinned once every thread exists (Janus starts one per handle).
        if let Some((server, clients)) = o.cores {
            self.server.pin(server)?;
            pin(0, clients)?;
        }
        let fwd0 = self.forwarded();
        let cpu0 = self.server.cpu();
        let own0 = own_cpu();
        let sent0 = self.sent();
        let recv0 = self.received();
        let end = Instant::now() + o.duration;
        while Instant::now() < end {
            self.step()?;
            let until = self.next_frame.min(end);
            if let Some(d) = until.checked_duration_since(Instant::now()) {
                std::thread::sleep(d.min(Duration::from_micros(500)));
            }
        }
        let sent = self.sent() - sent0;
        let mut fwd1 = self.forwarded();
        let cpu1 = self.server.cpu();
        // Frames still in flight at the end arrive within a moment: let them in, send nothing.
        let grace = Instant::now() + Duration::from_millis(200);
        while Instant::now() < grace {
            self.pump();
            std::thread::sleep(Duration::from_micros(500));
        }
        if let Server::Janus { .. } = self.server {
            fwd1 = self.forwarded(); // what was forwarded in the window, arriving now
        }
        Ok(Measured {
            setup,
            sent,
            received: self.received() - recv0,
            forwarded: fwd1 - fwd0,
            cpu: (cpu1 - cpu0).max(0.0),
            client_cpu: (own_cpu() - own0).max(0.0),
        })
    }

    fn pump(&mut self) {
        for c in self.clients.iter_mut() {
            c.pump(&mut self.buf);
        }
    }

    /// Answer natpass's offers, move every client's datagrams and timers, and write the next
    /// frames when they are due.
    fn step(&mut self) -> Result<(), SfuProbeError> {
        if let Server::Natpass { rt, sfu, notices } = &mut self.server {
            while let Ok(n) = notices.try_recv() {
                let Notice::Offer { to, sdp, .. } = n else {
                    continue;
                };
                let Some(c) = to
                    .strip_prefix('p')
                    .and_then(|k| k.parse::<usize>().ok())
                    .and_then(|k| self.clients.get_mut(k))
                else {
                    continue;
                };
                let refused = |e: String| SfuProbeError::Refused {
                    what: format!("the SFU's offer to {to}"),
                    error: e,
                };
                let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| refused(e.to_string()))?;
                let answer = c
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| refused(e.to_string()))?;
                rt.block_on(sfu.answer(ROOM, &to, &answer.to_sdp_string()))
                    .map_err(|e| refused(e.to_string()))?;
            }
        }
        self.pump();
        let now = Instant::now();
        if now >= self.next_frame {
            for c in self.clients.iter_mut().filter(|c| c.rtc.is_connected()) {
                c.write_frame(self.size, self.start);
            }
            self.next_frame += self.interval;
            if self.next_frame + self.interval * 10 < now {
                self.next_frame = now; // far behind: do not burst to catch up
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        let base = SfuLoadOptions {
            publishers: 1,
            subscribers: 1,
            rate: 50,
            size: 500,
            duration: Duration::from_millis(10),
            setup_timeout: Duration::from_secs(1),
            cores: None,
            janus: None,
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
        };
        for (o, flag) in [
            (
                SfuLoadOptions {
                    publishers: 0,
                    ..base.clone()
                },
                "--publishers",
            ),
            (
                SfuLoadOptions {
                    rate: 0,
                    ..base.clone()
                },
                "--rate",
            ),
            (
                SfuLoadOptions {
                    size: 5000,
                    ..base.clone()
                },
                "--size",
            ),
            (
                SfuLoadOptions {
                    subscribers: 0,
                    ..base.clone()
                },
                "between 2 and 200",
            ),
        ] {
            let e = run(&o).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
