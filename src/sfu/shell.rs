//! The SFU's shell: one thread (`natpass-sfu`) that owns the SFU's UDP socket and drives the
//! sans-IO [`Sfu`] on a mio loop. Signaling talks to it through a bounded command queue and a
//! waker; what the SFU has to tell signaling (offers, participants gone) comes back on a
//! bounded channel that never blocks the loop. The TURN shards never wait on it, nor it on them.
//! With ICE-TCP on, the same thread also owns a TCP listener on the same port number and its
//! connections ([`super::tcp`]).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use super::core::{Notice, Sfu, SfuError, SfuStats};
use super::tcp::TcpSide;

/// What the loop reads and writes: the UDP socket, and the ICE-TCP side when it is on.
struct Sockets {
    udp: UdpSocket,
    tcp: Option<TcpSide>,
}

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
const LISTENER: Token = Token(2);
/// ICE-TCP connections' tokens start here.
const TCP_CONNS: usize = 16;

/// Commands queued for the loop.
const COMMANDS: usize = 1024;
/// Notices queued for signaling.
const NOTICES: usize = 4096;

enum Command {
    Join {
        room: String,
        pid: String,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        room: String,
        pid: String,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        room: String,
        pid: String,
    },
    Pin {
        room: String,
        pid: String,
        target: Option<String>,
    },
    Stop,
}

/// Counters shared with `/metrics` (copied from the loop after each turn).
#[derive(Debug, Default)]
pub struct SharedStats {
    /// Media packets forwarded.
    pub forwarded_packets: AtomicU64,
    /// Their bytes.
    pub forwarded_bytes: AtomicU64,
    /// Keyframe requests passed on.
    pub keyframe_requests: AtomicU64,
    /// Simulcast layer switches.
    pub layer_switches: AtomicU64,
    /// Datagrams dropped.
    pub dropped_datagrams: AtomicU64,
    /// Notices lost because signaling did not keep up.
    pub notices_dropped: AtomicU64,
    /// Participants now.
    pub participants: AtomicU64,
    /// Tracks published now.
    pub tracks: AtomicU64,
    /// Chat messages relayed over data channels, and refused.
    pub chat_messages: AtomicU64,
    pub chat_refused: AtomicU64,
    /// NACKs from subscribers, and to publishers.
    pub nacks_received: AtomicU64,
    pub nacks_sent: AtomicU64,
    /// ICE-TCP connections open, and closed for breaking a limit.
    pub tcp_connections: AtomicU64,
    pub tcp_refused: AtomicU64,
}

impl SharedStats {
    fn store(&self, s: SfuStats) {
        self.forwarded_packets
            .store(s.forwarded_packets, Ordering::Relaxed);
        self.forwarded_bytes
            .store(s.forwarded_bytes, Ordering::Relaxed);
        self.keyframe_requests
            .store(s.keyframe_requests, Ordering::Relaxed);
        self.dropped_datagrams
            .store(s.dropped_datagrams, Ordering::Relaxed);
        self.layer_switches
            .store(s.layer_switches, Ordering::Relaxed);
        self.participants.store(s.participants, Ordering::Relaxed);
        self.tracks.store(s.tracks, Ordering::Relaxed);
        self.chat_messages.store(s.chat_messages, Ordering::Relaxed);
        self.chat_refused.store(s.chat_refused, Ordering::Relaxed);
        self.nacks_received
            .store(s.nacks_received, Ordering::Relaxed);
        self.nacks_sent.store(s.nacks_sent, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn load(&self) -> SfuStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SfuStats {
            forwarded_packets: l(&self.forwarded_packets),
            forwarded_bytes: l(&self.forwarded_bytes),
            keyframe_requests: l(&self.keyframe_requests),
            dropped_datagrams: l(&self.dropped_datagrams),
            layer_switches: l(&self.layer_switches),
            participants: l(&self.participants),
            tracks: l(&self.tracks),
            chat_messages: l(&self.chat_messages),
            chat_refused: l(&self.chat_refused),
            nacks_received: l(&self.nacks_received),
            nacks_sent: l(&self.nacks_sent),
            tcp_connections: l(&self.tcp_connections),
            tcp_refused: l(&self.tcp_refused),
        }
    }
}

/// Why a command could not be handed to the loop.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShellError {
    /// The queue is full (the loop is behind).
    #[error("the SFU is busy")]
    Busy,
    /// The loop stopped.
    #[error("the SFU is not running")]
    Stopped,
    /// The SFU refused.
    #[error(transparent)]
    Sfu(#[from] SfuError),
}

/// The running SFU: commands in, notices out.
#[derive(Debug)]
pub struct SfuHandle {
    tx: SyncSender<Command>,
    waker: Arc<Waker>,
    addr: SocketAddr,
    bound: SocketAddr,
    /// The ICE-TCP listener's address, when it runs.
    tcp: Option<SocketAddr>,
    stats: Arc<SharedStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Join { .. } => "Join",
            Command::Answer { .. } => "Answer",
            Command::Leave { .. } => "Leave",
            Command::Pin { .. } => "Pin",
            Command::Stop => "Stop",
        })
    }
}

impl SfuHandle {
    /// Bind `bind` and start the loop; `advertise` is the address browsers reach the socket
    /// at (its ICE host candidate). Notices come out of the returned receiver.
    /// `advertise` is an IP: the bound port goes with it. A participant silent for `timeout`
    /// is removed. With `tcp`, ICE-TCP is offered on the same port number too; when that TCP
    /// port cannot be bound the SFU runs on UDP alone and says so in the log.
    pub fn spawn(
        bind: SocketAddr,
        advertise: Option<std::net::IpAddr>,
        max_participants: usize,
        timeout: Duration,
        tcp: bool,
    ) -> std::io::Result<(Self, tokio::sync::mpsc::Receiver<Notice>)> {
        let mut sock = UdpSocket::bind(bind)?;
        let local = sock.local_addr()?;
        let addr = match advertise {
            Some(ip) => SocketAddr::new(ip, local.port()),
            None if local.ip().is_unspecified() => SocketAddr::new(
                if local.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                local.port(),
            ),
            None => local,
        };
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut sock, SOCKET, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut core = Sfu::new(addr, max_participants).with_timeout(timeout);
        let tcp = match tcp.then(|| mio::net::TcpListener::bind(local)) {
            None => None,
            Some(Ok(l)) => match TcpSide::new(l, TCP_CONNS).and_then(|mut side| {
                poll.registry()
                    .register(side.listener(), LISTENER, Interest::READABLE)?;
                Ok(side)
            }) {
                Ok(side) => {
                    core = core.with_tcp(SocketAddr::new(addr.ip(), side.local().port()));
                    Some(side)
                }
                Err(e) => {
                    tracing::warn!(addr = %local, error = %e, "SFU: ICE-TCP off: its TCP listener could not start (UDP and TURN still work)");
                    None
                }
            },
            Some(Err(e)) => {
                tracing::warn!(addr = %local, error = %e, "SFU: ICE-TCP off: its TCP port could not be bound (UDP and TURN still work; sfu-tcp = false silences this)");
                None
            }
        };
        let tcp_addr = tcp.as_ref().map(|t| t.local());
        let (tx, rx) = sync_channel(COMMANDS);
        let (ntx, nrx) = tokio::sync::mpsc::channel(NOTICES);
        let stats = Arc::new(SharedStats::default());
        let shared = stats.clone();
        let thread = std::thread::Builder::new()
            .name("natpass-sfu".into())
            .spawn(move || {
                run(
                    poll,
                    Sockets { udp: sock, tcp },
                    addr,
                    core,
                    rx,
                    ntx,
                    shared,
                )
            })?;
        Ok((
            Self {
                tx,
                waker,
                addr,
                bound: local,
                tcp: tcp_addr,
                stats,
                thread: Some(thread),
            },
            nrx,
        ))
    }

    /// Where browsers reach the SFU.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket's own address (a wildcard when bound to one).
    pub fn bound(&self) -> Option<SocketAddr> {
        Some(self.bound)
    }

    /// Where ICE-TCP connections are accepted (its own address), when they are.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Counters.
    pub fn stats(&self) -> &SharedStats {
        &self.stats
    }

    /// The counters, shared (for `/metrics`).
    pub fn shared_stats(&self) -> Arc<SharedStats> {
        self.stats.clone()
    }

    fn send(&self, c: Command) -> Result<(), ShellError> {
        self.tx.try_send(c).map_err(|e| match e {
            TrySendError::Full(_) => ShellError::Busy,
            TrySendError::Disconnected(_) => ShellError::Stopped,
        })?;
        let _ = self.waker.wake();
        Ok(())
    }

    /// A participant joins with its offer; our answer.
    pub async fn join(&self, room: &str, pid: &str, offer: &str) -> Result<String, ShellError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Join {
            room: room.into(),
            pid: pid.into(),
            offer: offer.into(),
            reply,
        })?;
        Ok(answer.await.map_err(|_| ShellError::Stopped)??)
    }

    /// A participant's answer to our offer.
    pub async fn answer(&self, room: &str, pid: &str, sdp: &str) -> Result<(), ShellError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::Answer {
            room: room.into(),
            pid: pid.into(),
            sdp: sdp.into(),
            reply,
        })?;
        Ok(done.await.map_err(|_| ShellError::Stopped)??)
    }

    /// A participant pinned another's tile (`None`: unpinned).
    pub fn pin(&self, room: &str, pid: &str, target: Option<&str>) -> Result<(), ShellError> {
        self.send(Command::Pin {
            room: room.into(),
            pid: pid.into(),
            target: target.map(str::to_owned),
        })
    }

    /// A participant left.
    pub fn leave(&self, room: &str, pid: &str) -> Result<(), ShellError> {
        self.send(Command::Leave {
            room: room.into(),
            pid: pid.into(),
        })
    }
}

impl Drop for SfuHandle {
    fn drop(&mut self) {
        // The queue may be full; the loop also stops when every sender is gone.
        let _ = self.tx.try_send(Command::Stop);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut poll: Poll,
    mut sockets: Sockets,
    addr: SocketAddr,
    mut sfu: Sfu,
    rx: Receiver<Command>,
    notices: tokio::sync::mpsc::Sender<Notice>,
    stats: Arc<SharedStats>,
) {
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 2048];
    // The address ICE-TCP frames arrive at, as the core's candidate names it.
    let tcp_local = sockets
        .tcp
        .as_ref()
        .map(|t| SocketAddr::new(addr.ip(), t.local().port()));
    let mut next_sweep = Instant::now() + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        let timeout = sfu
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!(error = %e, "SFU loop: poll failed; stopping");
                return;
            }
        }
        if let (Some(tcp), Some(local)) = (sockets.tcp.as_mut(), tcp_local) {
            let now = Instant::now();
            tcp.serve_backlog(poll.registry(), now, |src, frame| {
                sfu.handle_tcp_frame(now, src, local, frame)
            });
            for ev in events.iter() {
                let now = Instant::now();
                if ev.token() == LISTENER {
                    tcp.accept(poll.registry(), now);
                } else if tcp.owns(ev.token()) {
                    tcp.ready(ev.token(), poll.registry(), now, |src, frame| {
                        sfu.handle_tcp_frame(now, src, local, frame)
                    });
                }
            }
            if now >= next_sweep {
                tcp.sweep(now, poll.registry());
                next_sweep = now + Duration::from_secs(1);
            }
        }
        // Datagrams (bounded per turn so commands and timers keep their turn).
        for _ in 0..1024 {
            match sockets.udp.recv_from(&mut buf) {
                Ok((n, src)) => sfu.handle_datagram(Instant::now(), src, addr, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SFU socket: receive error");
                    break;
                }
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Command::Join {
                    room,
                    pid,
                    offer,
                    reply,
                }) => {
                    // Joining again (the page's connection failed): the old session goes first.
                    let now = Instant::now();
                    sfu.leave(&room, &pid, now);
                    let _ = reply.send(sfu.join(&room, &pid, &offer, now));
                }
                Ok(Command::Answer {
                    room,
                    pid,
                    sdp,
                    reply,
                }) => {
                    let _ = reply.send(sfu.answer(&room, &pid, &sdp, Instant::now()));
                }
                Ok(Command::Leave { room, pid }) => sfu.leave(&room, &pid, Instant::now()),
                Ok(Command::Pin { room, pid, target }) => {
                    if let Err(e) = sfu.pin(&room, &pid, target.as_deref(), Instant::now()) {
                        tracing::debug!(error = %e, "SFU pin refused");
                    }
                }
                Ok(Command::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
            }
        }
        let now = Instant::now();
        if sfu.poll_timeout().is_some_and(|t| t <= now) {
            sfu.handle_timeout(now);
        }
        while let Some(t) = sfu.poll_transmit() {
            // A full socket buffer (or a connection too far behind) drops the packet, as the
            // network would.
            match sockets.tcp.as_mut() {
                Some(tcp) if t.tcp => {
                    tcp.send(t.destination, &t.contents, poll.registry());
                }
                _ => {
                    let _ = sockets.udp.send_to(&t.contents, t.destination);
                }
            }
        }
        while let Some(n) = sfu.poll_notice() {
            if notices.try_send(n).is_err() {
                stats.notices_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.store(sfu.stats());
        if let Some(tcp) = &sockets.tcp {
            stats
                .tcp_connections
                .store(tcp.connections() as u64, Ordering::Relaxed);
            stats.tcp_refused.store(tcp.refused, Ordering::Relaxed);
        }
    }
}
