//! The load generator (`natpass probe load`): N allocations (one UDP socket each) spread over
//! worker threads, each relaying messages through the server to echo peers via a channel
//! (or Send indications), paced at a total rate or as fast as a bounded window allows, for a
//! bounded duration and/or count. Reports offered and achieved rates, loss and latency.
//!
//! Messages carry a sequence number and a send timestamp; frames are built once per
//! allocation and patched in place, so the hot loop allocates nothing.

use super::echo::{bind_echo_socket, echo_pending};
use super::{Creds, ProbeTransport, ServerSpec};
use crate::client::{Client, ClientError};
use crate::udp::{Pool, SLOTS};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use stun_types::attribute::AttributeStaticType;
use stun_types::message::Message;
use turn_types::attribute::Data;

/// Load settings.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Credentials (a REST secret mints one name per allocation).
    pub creds: Creds,
    /// Transport (UDP).
    pub transport: ProbeTransport,
    /// Concurrent allocations.
    pub allocations: usize,
    /// Payload bytes (at least 16).
    pub size: usize,
    /// Total messages per second; 0 = as fast as the window allows.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Stop after this many messages in total.
    pub count: Option<u64>,
    /// Worker threads.
    pub threads: usize,
    /// Send indications instead of channels.
    pub no_channel: bool,
    /// Echo peers; empty starts local ones.
    pub peers: Vec<SocketAddr>,
    /// In-flight messages per allocation when rate is 0.
    pub window: u32,
    /// Local IP to bind client sockets to (default: per the route to the server).
    pub bind_ip: Option<IpAddr>,
    /// No TURN: send plain UDP to SERVER, which must echo (to measure the floor).
    pub raw: bool,
    /// No TURN: send STUN Binding requests to SERVER and count the answers.
    pub binding: bool,
    /// How TLS checks the server (`--transport tls`).
    pub tls: super::TlsOptions,
    /// Pace like calls instead of `rate` (`--media MBIT`): each allocation sends a video
    /// frame of `size`-byte packets 30 times a second adding up to this many Mbit/s, and a
    /// 100-byte audio packet every 20 ms; flows start spread over one frame interval.
    pub media: Option<f64>,
    /// Told of the setup and, twice a second, of what was sent and received so far (a
    /// terminal's live line), if set.
    pub progress: Option<fn(&str)>,
}

/// What the workers have sent and received so far, for the live line.
#[derive(Default)]
struct Live {
    sent: std::sync::atomic::AtomicU64,
    received: std::sync::atomic::AtomicU64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

/// Load report.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Server.
    pub server: SocketAddr,
    /// Allocations made.
    pub allocations: usize,
    /// Allocation setup time (s) and rate (allocations/s, with authentication).
    pub setup_seconds: f64,
    /// Allocations per second during setup.
    pub setup_rate: f64,
    /// Payload size.
    pub size: usize,
    /// Channel (true) or Send indications.
    pub channel: bool,
    /// Offered messages/s (0: unpaced; under media pacing, what the pacing offers).
    pub offered_rate: f64,
    /// Media pacing: Mbit/s of video per allocation (None: paced by rate).
    pub media_mbit: Option<f64>,
    /// Sending time (s).
    pub duration_seconds: f64,
    /// Messages sent.
    pub sent: u64,
    /// Echoes received.
    pub received: u64,
    /// Lost (sent − received).
    pub lost: u64,
    /// Loss in percent.
    pub loss_percent: f64,
    /// Messages/s achieved (echoes received per second of sending).
    pub achieved_rate: f64,
    /// Payload Mbit/s achieved (one direction).
    pub achieved_mbit: f64,
    /// Round-trip latency.
    pub latency_us: Latency,
}

enum FlowSock {
    Udp(UdpSocket),
    /// TCP with its read buffer (frames) and unsent bytes.
    Tcp(mio::net::TcpStream, Vec<u8>, Vec<u8>),
    /// TLS: the socket, the session (its own send buffer), the plaintext read buffer.
    Tls(mio::net::TcpStream, Box<rustls::ClientConnection>, Vec<u8>),
}

struct Flow {
    sock: FlowSock,
    frame: Vec<u8>,
    payload_at: usize,
    in_flight: u32,
}

impl Flow {
    /// Send the frame; false when the socket cannot take it now.
    fn send(&mut self) -> bool {
        self.send_len(self.frame.len())
    }

    /// Send the frame's first `n` bytes (a ChannelData whose length field says `n - 4`).
    fn send_len(&mut self, n: usize) -> bool {
        let frame = &self.frame[..n];
        match &mut self.sock {
            FlowSock::Udp(s) => s.send(frame).is_ok(),
            FlowSock::Tcp(s, _, wbuf) => {
                if !flush(s, wbuf) {
                    return false;
                }
                match s.write(frame) {
                    Ok(n) => {
                        if n < frame.len() {
                            wbuf.extend_from_slice(&frame[n..]);
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            FlowSock::Tls(s, conn, _) => {
                if !tls_flush(s, conn) {
                    return false;
                }
                if conn.writer().write_all(frame).is_err() {
                    return false;
                }
                let _ = tls_flush(s, conn);
                true
            }
        }
    }
}

/// Write the session's pending TLS records; true when nothing is left.
fn tls_flush(s: &mut mio::net::TcpStream, conn: &mut rustls::ClientConnection) -> bool {
    while conn.wants_write() {
        match conn.write_tls(s) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

/// Read what the socket has into the session and its plaintext into `rbuf`.
fn tls_read(
    s: &mut mio::net::TcpStream,
    conn: &mut rustls::ClientConnection,
    rbuf: &mut Vec<u8>,
    buf: &mut [u8],
) {
    loop {
        match conn.read_tls(s) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    break;
                }
                while let Ok(n) = conn.reader().read(buf) {
                    if n == 0 {
                        break;
                    }
                    rbuf.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// Write pending stream bytes; true when nothing is left.
fn flush(s: &mut mio::net::TcpStream, wbuf: &mut Vec<u8>) -> bool {
    while !wbuf.is_empty() {
        match s.write(wbuf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                wbuf.drain(..n);
            }
        }
    }
    true
}

/// Latency histogram: 1 µs buckets to 1 ms, 10 µs to 100 ms, 1 ms to 10 s.
#[derive(Clone)]
struct Hist {
    b: Vec<u64>,
    max: u64,
}

impl Hist {
    fn new() -> Self {
        Self {
            b: vec![0; 1000 + 9900 + 9900 + 1],
            max: 0,
        }
    }
    fn idx(us: u64) -> usize {
        if us < 1000 {
            us as usize
        } else if us < 100_000 {
            1000 + ((us - 1000) / 10) as usize
        } else {
            (10_900 + (us.min(10_000_000) - 100_000) / 1000) as usize
        }
    }
    fn value(i: usize) -> u64 {
        if i < 1000 {
            i as u64
        } else if i < 10_900 {
            1000 + (i as u64 - 1000) * 10
        } else {
            100_000 + (i as u64 - 10_900) * 1000
        }
    }
    fn add(&mut self, us: u64) {
        let last = self.b.len() - 1;
        self.b[Self::idx(us).min(last)] += 1;
        self.max = self.max.max(us);
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.b.iter_mut().zip(&o.b) {
            *a += b;
        }
        self.max = self.max.max(o.max);
    }
    fn pct(&self, p: f64) -> u64 {
        let total: u64 = self.b.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * p).ceil() as u64;
        let mut acc = 0;
        for (i, c) in self.b.iter().enumerate() {
            acc += c;
            if acc >= want.max(1) {
                return Self::value(i);
            }
        }
        self.max
    }
}

struct WorkerResult {
    sent: u64,
    received: u64,
    /// Payload bytes sent (media pacing mixes sizes).
    bytes: u64,
    hist: Hist,
}

/// Set up the allocations, run the load, release the allocations.
pub fn run(spec: &ServerSpec, o: &LoadOptions) -> Result<LoadReport, ClientError> {
    if o.media.is_some() && (o.no_channel || o.raw || o.binding || o.size < MEDIA_AUDIO) {
        return Err(ClientError::Protocol(format!(
            "--media needs channels and --size of at least {MEDIA_AUDIO} bytes"
        )));
    }
    // Streams (TCP and TLS) frame ChannelData with padding.
    let tcp = o.transport != ProbeTransport::Udp;
    let tls = match o.transport {
        ProbeTransport::Tls => Some(super::tls_client_config(&o.tls)?),
        _ => None,
    };
    let size = o.size.max(16);
    let bind_ip = match o.bind_ip {
        Some(ip) => ip,
        None => super::local_ip_towards(spec.addr)?,
    };
    if o.raw || o.binding {
        return run_raw(spec, o, bind_ip, size);
    }
    // Local echo peers run inside the workers' event loops (one per worker, serving that
    // worker's flows), not on threads of their own: on a busy core, threads of their own would
    // be time-sliced against the worker and their milliseconds of waiting would show up as
    // relay latency.
    let threads = o.threads.max(1);
    let mut echoes: Vec<Vec<UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
    let peers = if o.peers.is_empty() {
        let mut p = Vec::new();
        for e in echoes.iter_mut() {
            let s = bind_echo_socket(SocketAddr::new(bind_ip, 0))?;
            s.set_nonblocking(true)?;
            p.push(s.local_addr()?);
            e.push(UdpSocket::from_std(s));
        }
        p
    } else {
        o.peers.clone()
    };
    // Setup: allocate, permit and bind, from a few threads at once.
    let setup_start = Instant::now();
    let setup_threads = o.threads.clamp(1, 8).min(o.allocations.max(1));
    let mut clients: Vec<(usize, Client)> = Vec::with_capacity(o.allocations);
    let made = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, Client)>, ClientError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..setup_threads)
            .map(|t| {
                let peers = &peers;
                let made = &made;
                let tls = &tls;
                sc.spawn(move || {
                    let mut mine: Vec<(usize, Client)> = Vec::new();
                    let mut known: Option<(String, String)> = None;
                    for i in (t..o.allocations).step_by(setup_threads) {
                        // On an error or an interrupt, `mine` is dropped and every client in it
                        // deletes its allocation.
                        if super::interrupted() {
                            return Err(ClientError::Interrupted);
                        }
                        let (u, p) = match &o.creds {
                            Creds::Secret(s, name) => {
                                Creds::Secret(s.clone(), format!("{name}{i}")).resolve()
                            }
                            c => c.resolve(),
                        };
                        // A 437 means the new socket's port still has an allocation (one a
                        // previous run could not release): try again from another port.
                        let mut tries = 0;
                        let mut c = loop {
                            let mut c = if let Some(cfg) = tls {
                                Client::tls(
                                    spec.addr,
                                    &spec.host,
                                    cfg.clone(),
                                    Duration::from_secs(5),
                                )?
                            } else if tcp {
                                Client::tcp(spec.addr, Duration::from_secs(5))?
                            } else {
                                Client::udp(spec.addr, Some(SocketAddr::new(bind_ip, 0)))?
                            };
                            c.set_credentials(&u, &p);
                            if let Some((realm, nonce)) = &known {
                                c.set_realm_nonce(realm, nonce);
                            }
                            match c.allocate(None, None) {
                                Ok(_) => break c,
                                Err(ClientError::Stun { code: 437, .. }) if tries < 50 => {
                                    tries += 1
                                }
                                Err(e) => return Err(e),
                            }
                        };
                        known = c.realm_nonce();
                        let peer = peers[i % peers.len()];
                        c.create_permission(&[peer])?;
                        if !o.no_channel {
                            c.channel_bind(crate::proto::ChannelNumber::MIN, peer)?;
                        }
                        mine.push((i, c));
                        let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if let Some(p) = o.progress {
                            p(&format!("setup: {n}/{} allocations", o.allocations));
                        }
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("setup thread"))
            .collect()
    });
    // One failed setup thread fails the run; the clients of the others are dropped with
    // `results`, which deletes their allocations too.
    let mut failed = None;
    for r in results {
        match r {
            Ok(mine) => clients.extend(mine),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        release_all(&mut clients);
        return Err(e);
    }
    clients.sort_by_key(|(i, _)| *i);
    let setup_seconds = setup_start.elapsed().as_secs_f64();

    // Frames: built once per allocation, payload patched in place.
    let mut flows: Vec<Vec<Flow>> = (0..o.threads.max(1)).map(|_| Vec::new()).collect();
    for (i, c) in clients.iter_mut() {
        let i = &*i;
        let peer = peers[i % peers.len()];
        let payload = vec![0u8; size];
        let (frame, payload_at) = if o.no_channel {
            let f = crate::client::send_indication_bytes(peer, &payload);
            let m = Message::from_bytes(&f).map_err(|e| ClientError::Protocol(e.to_string()))?;
            let (off, _) = m
                .raw_attribute_and_offset(Data::TYPE)
                .ok_or_else(|| ClientError::Protocol("no DATA".into()))?;
            (f.clone(), off + 4)
        } else {
            (
                crate::client::channel_data_bytes(crate::proto::ChannelNumber::MIN, &payload, tcp),
                4,
            )
        };
        let sock = if let Some((conn, t, rbuf)) = c.take_tls() {
            t.set_nonblocking(true)?;
            t.set_read_timeout(None)?;
            FlowSock::Tls(mio::net::TcpStream::from_std(t), Box::new(conn), rbuf)
        } else if let Some(u) = c.udp_socket() {
            let sock = u.try_clone()?;
            sock.set_nonblocking(true)?;
            sock.connect(spec.addr)?;
            FlowSock::Udp(UdpSocket::from_std(sock))
        } else {
            let t = c
                .tcp_stream()
                .ok_or_else(|| ClientError::Protocol("no socket".into()))?
                .try_clone()?;
            t.set_nonblocking(true)?;
            FlowSock::Tcp(mio::net::TcpStream::from_std(t), Vec::new(), Vec::new())
        };
        flows[i % o.threads.max(1)].push(Flow {
            sock,
            frame,
            payload_at,
            in_flight: 0,
        });
    }
    let (sent, received, hist, send_end, echoed) =
        drive(flows, echoes, o, if o.no_channel { 1 } else { 0 });
    release_all(&mut clients);
    if super::interrupted() {
        return Err(ClientError::Interrupted);
    }
    Ok(report(
        spec,
        o,
        clients.len(),
        setup_seconds,
        size,
        sent,
        received,
        &hist,
        send_end,
        echoed,
    ))
}

/// Delete every allocation (Refresh with LIFETIME 0), from a few threads at once: after a
/// failure or an interrupt the user's quota is free again before the probe exits.
fn release_all(clients: &mut [(usize, Client)]) {
    let per = clients.len().div_ceil(8).max(1);
    std::thread::scope(|sc| {
        for chunk in clients.chunks_mut(per) {
            sc.spawn(move || {
                for (_, c) in chunk {
                    c.release();
                }
            });
        }
    });
}

/// Plain UDP to an echo server (the floor the TURN figures are compared with), or STUN
/// Binding requests (20 bytes, no attributes; the transaction ID carries the sequence number
/// and the send time).
fn run_raw(
    spec: &ServerSpec,
    o: &LoadOptions,
    bind_ip: IpAddr,
    size: usize,
) -> Result<LoadReport, ClientError> {
    let mut flows: Vec<Vec<Flow>> = (0..o.threads.max(1)).map(|_| Vec::new()).collect();
    for i in 0..o.allocations {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
        sock.set_nonblocking(true)?;
        sock.connect(spec.addr)?;
        let (frame, payload_at) = if o.binding {
            let mut f = vec![0u8; 20];
            f[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
            f[4..8].copy_from_slice(&stun_types::message::MAGIC_COOKIE.to_be_bytes());
            (f, BINDING_TXID)
        } else {
            (vec![0u8; size], 0)
        };
        flows[i % o.threads.max(1)].push(Flow {
            sock: FlowSock::Udp(UdpSocket::from_std(sock)),
            frame,
            payload_at,
            in_flight: 0,
        });
    }
    let no_echoes = (0..o.threads.max(1)).map(|_| Vec::new()).collect();
    let (sent, received, hist, send_end, echoed) =
        drive(flows, no_echoes, o, if o.binding { 3 } else { 2 });
    Ok(report(
        spec,
        o,
        o.allocations,
        0.0,
        if o.binding { 20 } else { size },
        sent,
        received,
        &hist,
        send_end,
        echoed,
    ))
}

#[allow(clippy::too_many_arguments)]
fn report(
    spec: &ServerSpec,
    o: &LoadOptions,
    allocations: usize,
    setup_seconds: f64,
    size: usize,
    sent: u64,
    received: u64,
    hist: &Hist,
    send_end: f64,
    echoed_bytes: u64,
) -> LoadReport {
    let lost = sent.saturating_sub(received);
    // Three decimals: what the figures mean, without binary float noise in the JSON.
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    LoadReport {
        server: spec.addr,
        allocations,
        setup_seconds: r3(setup_seconds),
        setup_rate: r3(allocations as f64 / setup_seconds.max(1e-9)),
        size,
        channel: !o.no_channel,
        offered_rate: r3(match o.media {
            Some(m) => {
                let p = MediaPlan::new(m, size);
                allocations as f64 * (p.video_packets as f64 * 30.0 + 50.0)
            }
            None => o.rate,
        }),
        media_mbit: o.media,
        duration_seconds: r3(send_end),
        sent,
        received,
        lost,
        loss_percent: if sent == 0 {
            0.0
        } else {
            r3(lost as f64 * 100.0 / sent as f64)
        },
        achieved_rate: r3(received as f64 / send_end.max(1e-9)),
        achieved_mbit: r3(if o.media.is_some() {
            echoed_bytes as f64 * 8.0 / 1e6 / send_end.max(1e-9)
        } else {
            received as f64 * size as f64 * 8.0 / 1e6 / send_end.max(1e-9)
        }),
        latency_us: Latency {
            p50: hist.pct(0.5),
            p90: hist.pct(0.9),
            p99: hist.pct(0.99),
            max: hist.max,
        },
    }
}

/// Run the workers over `flows`; (sent, received, latency histogram, sending seconds).
fn drive(
    flows: Vec<Vec<Flow>>,
    echoes: Vec<Vec<UdpSocket>>,
    o: &LoadOptions,
    kind: u8,
) -> (u64, u64, Hist, f64, u64) {
    let start = Instant::now();
    let per_thread_rate = o.rate / o.threads.max(1) as f64;
    let per_thread_count = o.count.map(|c| c.div_ceil(o.threads.max(1) as u64));
    let window = o.window.max(1);
    let live = Live::default();
    let media = o.media.map(|m| MediaPlan::new(m, o.size.max(16)));
    let outcomes: Vec<WorkerResult> = std::thread::scope(|sc| {
        let live = &live;
        let handles: Vec<_> = flows
            .into_iter()
            .zip(echoes)
            .map(|(fl, ec)| {
                sc.spawn(move || {
                    worker(
                        fl,
                        ec,
                        start,
                        o.duration,
                        per_thread_rate,
                        per_thread_count,
                        window,
                        kind,
                        live,
                        media,
                    )
                })
            })
            .collect();
        if let Some(p) = o.progress {
            use std::sync::atomic::Ordering::Relaxed;
            let mut ticks = 0u64;
            while !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(100));
                ticks += 1;
                if ticks.is_multiple_of(5) {
                    p(&format!(
                        "{:.1} s: sent {}, received {}",
                        start.elapsed().as_secs_f64(),
                        live.sent.load(Relaxed),
                        live.received.load(Relaxed)
                    ));
                }
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("load worker"))
            .collect()
    });
    let mut hist = Hist::new();
    let (mut sent, mut received, mut bytes) = (0, 0, 0u64);
    for w in &outcomes {
        sent += w.sent;
        received += w.received;
        bytes += w.bytes;
        hist.merge(&w.hist);
    }
    // The payload bytes echoed (sizes mix under media pacing), from the share received.
    let echoed = (bytes as f64 * received as f64 / sent.max(1) as f64) as u64;
    let send_end = o.duration.as_secs_f64().min(start.elapsed().as_secs_f64());
    (sent, received, hist, send_end, echoed)
}

/// Where a Binding request's sequence number and send time go: the transaction ID's last 12
/// bytes hold 4 bytes of sequence and 8 of time, like a load message's first 16 minus 4.
const BINDING_TXID: usize = 4;

/// Account one echoed frame; true when it carried a load message.
fn on_frame(frame: &[u8], kind: u8, start: Instant, res: &mut WorkerResult) -> bool {
    let payload = if kind == 3 {
        // A Binding success response; its transaction ID is bytes 8..20.
        frame
            .get(0..2)
            .filter(|t| t == &[0x01, 0x01])
            .and_then(|_| frame.get(BINDING_TXID..20))
    } else if kind == 2 {
        Some(frame)
    } else if kind == 1 {
        Message::from_bytes(frame)
            .ok()
            .and_then(|m| {
                m.raw_attribute_and_offset(Data::TYPE)
                    .map(|(o, r)| (o + 4, usize::from(r.header.length())))
            })
            .and_then(|(o, l)| frame.get(o..o + l))
    } else {
        crate::proto::ChannelData::parse(frame)
            .ok()
            .map(|cd| cd.payload)
    };
    let Some(p) = payload.filter(|p| p.len() >= 16) else {
        return false;
    };
    let mut t = [0u8; 8];
    t.copy_from_slice(&p[8..16]);
    let sent_at = Duration::from_nanos(u64::from_be_bytes(t));
    let rtt = start.elapsed().saturating_sub(sent_at);
    res.hist.add(rtt.as_micros() as u64);
    res.received += 1;
    true
}

/// Most messages sent per loop turn when paced: a generator that falls behind catches up in
/// steps, reading echoes in between, instead of queueing its own backlog into the latency.
const DUE_MAX: u64 = 256;

/// Most messages sent to one flow in one GSO burst.
const BURST_MAX: usize = 32;

/// Write the sequence number and send time into a load message (or a Binding request's
/// transaction ID, keeping its magic cookie).
fn stamp(frame: &mut [u8], p: usize, kind: u8, seq: u64, t: u64) {
    if kind == 3 {
        frame[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
    } else {
        frame[p..p + 8].copy_from_slice(&seq.to_be_bytes());
    }
    frame[p + 8..p + 16].copy_from_slice(&t.to_be_bytes());
}

/// Account the complete frames at the front of a stream's read buffer and drop them; the
/// number of load messages among them.
fn stream_frames(rbuf: &mut Vec<u8>, kind: u8, start: Instant, res: &mut WorkerResult) -> u32 {
    let (mut at, mut echoed) = (0, 0);
    while let Ok(Some(len)) = crate::proto::framing::frame_len(&rbuf[at..]) {
        if rbuf.len() - at < len {
            break;
        }
        if on_frame(&rbuf[at..at + len], kind, start, res) {
            echoed += 1;
        }
        at += len;
    }
    rbuf.drain(..at);
    echoed
}

/// Payload bytes of a media run's audio packets (Opus at 20 ms is 60–160).
const MEDIA_AUDIO: usize = 100;

/// Media pacing ([`LoadOptions::media`]) for one worker.
#[derive(Debug, Clone, Copy)]
struct MediaPlan {
    /// Packets per video frame.
    video_packets: usize,
    /// Between video frames (30 per second).
    frame_ns: u64,
    /// Between audio packets (20 ms).
    audio_ns: u64,
}

impl MediaPlan {
    fn new(mbit: f64, size: usize) -> Self {
        let frame_bytes = mbit * 1e6 / 8.0 / 30.0;
        Self {
            video_packets: ((frame_bytes / size.max(1) as f64).ceil() as usize).max(1),
            frame_ns: 1_000_000_000 / 30,
            audio_ns: 20_000_000,
        }
    }
}

/// Poll tokens of a worker's echo sockets start here (flows use 0..).
const ECHO_TOKEN: usize = 1 << 30;

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn worker(
    mut flows: Vec<Flow>,
    mut echoes: Vec<UdpSocket>,
    start: Instant,
    duration: Duration,
    rate: f64,
    count: Option<u64>,
    window: u32,
    kind: u8,
    live: &Live,
    media: Option<MediaPlan>,
) -> WorkerResult {
    let mut res = WorkerResult {
        sent: 0,
        received: 0,
        bytes: 0,
        hist: Hist::new(),
    };
    if flows.is_empty() {
        return res;
    }
    let Ok(mut poll) = Poll::new() else {
        return res;
    };
    for (i, f) in flows.iter_mut().enumerate() {
        let r = match &mut f.sock {
            FlowSock::Udp(s) => poll.registry().register(s, Token(i), Interest::READABLE),
            FlowSock::Tcp(s, ..) | FlowSock::Tls(s, ..) => {
                poll.registry().register(s, Token(i), Interest::READABLE)
            }
        };
        if r.is_err() {
            return res;
        }
    }
    for (j, e) in echoes.iter_mut().enumerate() {
        if poll
            .registry()
            .register(e, Token(ECHO_TOKEN + j), Interest::READABLE)
            .is_err()
        {
            return res;
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65_536];
    let mut pool = Pool::new();
    let v6 = flows.iter().any(|f| match &f.sock {
        FlowSock::Udp(s) => s.local_addr().is_ok_and(|a| a.is_ipv6()),
        FlowSock::Tcp(..) | FlowSock::Tls(..) => false,
    });
    let mut scratch = vec![0u8; BURST_MAX * 1400];
    let mut next_flow = 0usize;
    // Media pacing: each flow's next video frame and audio packet (ns from start), spread.
    let mut plan: Vec<(u64, u64)> = match media {
        Some(m) => {
            let n = flows.len() as u64;
            (0..n)
                .map(|i| (i * m.frame_ns / n, i * m.audio_ns / n))
                .collect()
        }
        None => Vec::new(),
    };
    let grace = Duration::from_secs(1);
    let mut seq: u64 = 0;
    let (mut told_sent, mut told_received, mut told_at) = (0, 0, Instant::now());
    loop {
        let now = Instant::now();
        if now.duration_since(told_at) >= Duration::from_millis(200) {
            use std::sync::atomic::Ordering::Relaxed;
            live.sent.fetch_add(res.sent - told_sent, Relaxed);
            live.received
                .fetch_add(res.received - told_received, Relaxed);
            (told_sent, told_received, told_at) = (res.sent, res.received, now);
        }
        let elapsed = now.duration_since(start);
        let stop = super::interrupted();
        let sending = !stop && elapsed < duration && count.is_none_or(|c| res.sent < c);
        if stop || (!sending && (res.received >= res.sent || elapsed > duration + grace)) {
            break;
        }
        if let (true, Some(m)) = (sending, media) {
            let t = elapsed.as_nanos() as u64;
            for (i, f) in flows.iter_mut().enumerate() {
                while plan[i].0 <= t {
                    plan[i].0 += m.frame_ns;
                    for _ in 0..m.video_packets {
                        let now_ns = Instant::now().duration_since(start).as_nanos() as u64;
                        stamp(&mut f.frame, f.payload_at, kind, seq, now_ns);
                        if !f.send() {
                            break;
                        }
                        seq += 1;
                        res.sent += 1;
                        res.bytes += (f.frame.len() - f.payload_at) as u64;
                    }
                }
                while plan[i].1 <= t {
                    plan[i].1 += m.audio_ns;
                    // The same frame cut to an audio packet: its length field says so.
                    let n = f.payload_at + MEDIA_AUDIO;
                    let full = [f.frame[2], f.frame[3]];
                    f.frame[2..4].copy_from_slice(&(MEDIA_AUDIO as u16).to_be_bytes());
                    let now_ns = Instant::now().duration_since(start).as_nanos() as u64;
                    stamp(&mut f.frame, f.payload_at, kind, seq, now_ns);
                    let ok = f.send_len(n);
                    f.frame[2..4].copy_from_slice(&full);
                    if ok {
                        seq += 1;
                        res.sent += 1;
                        res.bytes += MEDIA_AUDIO as u64;
                    }
                }
            }
        } else if sending {
            // How many messages are due now.
            let due = if rate > 0.0 {
                let target = (elapsed.as_secs_f64() * rate) as u64;
                target.saturating_sub(res.sent).min(DUE_MAX)
            } else {
                flows.len() as u64 * 8
            };
            let mut budget = due;
            let mut tried = 0;
            let flows_len = flows.len();
            while budget > 0 && tried < flows.len() * 2 {
                let n_flows = flows.len();
                let f = &mut flows[next_flow];
                next_flow = (next_flow + 1) % n_flows;
                tried += 1;
                if rate <= 0.0 && f.in_flight >= window {
                    continue;
                }
                // Unpaced UDP: a burst per flow up to its window, in one GSO send (the
                // kernel splits it again; the server sees separate datagrams). Keeps the
                // generator from being what limits a throughput run.
                let mut burst = if rate <= 0.0 {
                    (window - f.in_flight) as usize
                } else {
                    // Paced: what is due, spread over the flows.
                    (budget as usize).div_ceil(flows_len)
                };
                burst = burst.min(budget as usize).min(BURST_MAX);
                if let Some(c) = count {
                    burst = burst.min(c.saturating_sub(res.sent) as usize).max(1);
                }
                let flen = f.frame.len();
                if burst > 1 && matches!(f.sock, FlowSock::Udp(_)) && flen <= 1400 {
                    for b in 0..burst {
                        let t = Instant::now().duration_since(start).as_nanos() as u64;
                        stamp(&mut f.frame, f.payload_at, kind, seq + b as u64, t);
                        scratch[b * flen..(b + 1) * flen].copy_from_slice(&f.frame);
                    }
                    let FlowSock::Udp(sock) = &f.sock else {
                        unreachable!("checked above")
                    };
                    let seg = flen as u16;
                    let iov = [std::io::IoSlice::new(&scratch[..burst * flen])];
                    let cm = [nix::sys::socket::ControlMessage::UdpGsoSegments(&seg)];
                    let ok = nix::sys::socket::sendmsg::<()>(
                        std::os::fd::AsRawFd::as_raw_fd(sock),
                        &iov,
                        &cm,
                        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                        None,
                    )
                    .is_ok();
                    if ok {
                        seq += burst as u64;
                        res.sent += burst as u64;
                        f.in_flight += burst as u32;
                        budget -= burst as u64;
                        tried = 0;
                        if count.is_some_and(|c| res.sent >= c) {
                            break;
                        }
                        continue;
                    }
                    // GSO refused: fall back to one datagram at a time.
                }
                let t = Instant::now().duration_since(start).as_nanos() as u64;
                stamp(&mut f.frame, f.payload_at, kind, seq, t);
                match f.send() {
                    true => {
                        seq += 1;
                        res.sent += 1;
                        f.in_flight += 1;
                        budget -= 1;
                        tried = 0;
                        if count.is_some_and(|c| res.sent >= c) {
                            break;
                        }
                    }
                    false => break, // socket buffer full: read first
                }
            }
        }
        let timeout = if let (true, Some(_)) = (sending, media) {
            let next = plan.iter().map(|p| p.0.min(p.1)).min().unwrap_or(0);
            Duration::from_nanos(next)
                .saturating_sub(start.elapsed())
                .min(Duration::from_millis(5))
        } else if rate > 0.0 && sending {
            let next_due = Duration::from_secs_f64((res.sent + 1) as f64 / rate);
            next_due
                .saturating_sub(start.elapsed())
                .min(Duration::from_millis(5))
        } else {
            Duration::from_millis(if sending { 1 } else { 20 })
        };
        if poll.poll(&mut events, Some(timeout)).is_err() {
            continue;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if let Some(e) = i.checked_sub(ECHO_TOKEN).and_then(|j| echoes.get(j)) {
                let fd = std::os::fd::AsRawFd::as_raw_fd(e);
                echo_pending(&mut pool, fd, v6);
                continue;
            }
            let Some(f) = flows.get_mut(i) else {
                continue;
            };
            match &mut f.sock {
                FlowSock::Udp(sock) => {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
                    loop {
                        pool.reset();
                        let Ok(n) = pool.recv(fd, v6, 0, SLOTS) else {
                            break;
                        };
                        for i in 0..n {
                            let len = pool.meta[i].len;
                            if on_frame(&pool.slot(i)[..len], kind, start, &mut res) {
                                f.in_flight = f.in_flight.saturating_sub(1);
                            }
                        }
                        if n < SLOTS {
                            break;
                        }
                    }
                }
                FlowSock::Tcp(sock, rbuf, wbuf) => {
                    let _ = flush(sock, wbuf);
                    while let Ok(n) = sock.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        rbuf.extend_from_slice(&buf[..n]);
                    }
                    let echoed = stream_frames(rbuf, kind, start, &mut res);
                    f.in_flight = f.in_flight.saturating_sub(echoed);
                }
                FlowSock::Tls(sock, conn, rbuf) => {
                    let _ = tls_flush(sock, conn);
                    tls_read(sock, conn, rbuf, &mut buf);
                    let echoed = stream_frames(rbuf, kind, start, &mut res);
                    f.in_flight = f.in_flight.saturating_sub(echoed);
                }
            }
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_close() {
        let mut h = Hist::new();
        for us in 1..=10_000u64 {
            h.add(us);
        }
        let p50 = h.pct(0.5);
        assert!((4990..=5010).contains(&p50), "{p50}");
        let p99 = h.pct(0.99);
        assert!((9890..=9910).contains(&p99), "{p99}");
        assert_eq!(h.max, 10_000);
    }
}
