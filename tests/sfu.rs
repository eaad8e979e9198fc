//! The SFU core (src/sfu) against real WebRTC peers nobody here wrote: two `str0m` clients
//! (full ICE, DTLS-SRTP) on loopback UDP sockets, the SFU on a third. Ann publishes an Opus
//! track; Ben joins with only a data channel, gets the SFU's offer adding Ann's track, answers,
//! and receives Ann's packets byte for byte. Garbage datagrams and bad SDP are refused without
//! a panic; a full room says so.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natpass::sfu::{Notice, Sfu, SfuError, SfuHandle};
use std::sync::atomic::Ordering;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Client {
    rtc: Rtc,
    sock: UdpSocket,
    /// ICE-TCP instead: the connection to the SFU's TCP port, and the bytes read that are not a
    /// whole RFC 4571 frame yet.
    tcp: Option<(std::net::TcpStream, Vec<u8>)>,
    local: SocketAddr,
    wake: Instant,
    events: Vec<Event>,
    /// The track it publishes.
    mid: Option<Mid>,
}

impl Client {
    fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let local = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        Self {
            rtc,
            sock,
            tcp: None,
            local,
            wake: Instant::now(),
            events: Vec::new(),
            mid: None,
        }
    }

    /// A client whose only candidate is an active ICE-TCP one, connected to `server`'s TCP port
    /// (as a browser on a network that lets TCP out but not UDP).
    fn new_tcp(server: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(server).unwrap();
        stream.set_nonblocking(true).unwrap();
        let local = stream.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(
            Candidate::builder()
                .tcp()
                .host(local)
                .tcptype(TcpType::Active)
                .build()
                .unwrap(),
        );
        // No UDP for this one: a socket that never receives anything.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        Self {
            rtc,
            sock,
            tcp: Some((stream, Vec::new())),
            local,
            wake: Instant::now(),
            events: Vec::new(),
            mid: None,
        }
    }

    /// Send what str0m wants sent, feed what arrived, run its timers.
    fn pump(&mut self) {
        let now = Instant::now();
        if self.wake <= now {
            self.rtc.handle_input(Input::Timeout(now)).unwrap();
        }
        let mut buf = vec![0u8; 2000];
        while let Ok((n, src)) = self.sock.recv_from(&mut buf) {
            let r = Receive::new(Protocol::Udp, src, self.local, &buf[..n]).unwrap();
            self.rtc
                .handle_input(Input::Receive(Instant::now(), r))
                .unwrap();
        }
        if let Some((stream, inbuf)) = self.tcp.as_mut() {
            use std::io::Read;
            let peer = stream.peer_addr().unwrap();
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                inbuf.extend_from_slice(&buf[..n]);
            }
            // RFC 4571: two bytes of length, then the packet.
            while inbuf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([inbuf[0], inbuf[1]]));
                if inbuf.len() < 2 + len {
                    break;
                }
                let frame: Vec<u8> = inbuf.drain(..2 + len).skip(2).collect();
                let r = Receive::new(Protocol::Tcp, peer, self.local, &frame).unwrap();
                self.rtc
                    .handle_input(Input::Receive(Instant::now(), r))
                    .unwrap();
            }
        }
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Transmit(t) if t.proto == Protocol::Tcp => {
                    use std::io::Write;
                    let (stream, _) = self.tcp.as_mut().expect("a TCP client");
                    let mut framed = (t.contents.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&t.contents);
                    stream.set_nonblocking(false).unwrap();
                    stream.write_all(&framed).unwrap();
                    stream.set_nonblocking(true).unwrap();
                }
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Timeout(t) => {
                    self.wake = t;
                    break;
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }
}

struct Server {
    sfu: Sfu,
    sock: UdpSocket,
    local: SocketAddr,
}

impl Server {
    fn new(max: usize) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let local = sock.local_addr().unwrap();
        Self {
            sfu: Sfu::new(local, max),
            sock,
            local,
        }
    }

    fn pump(&mut self) {
        let mut buf = vec![0u8; 2000];
        while let Ok((n, src)) = self.sock.recv_from(&mut buf) {
            self.sfu
                .handle_datagram(Instant::now(), src, self.local, &buf[..n]);
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            self.sfu.handle_timeout(Instant::now());
        }
        while let Some(t) = self.sfu.poll_transmit() {
            let _ = self.sock.send_to(&t.contents, t.destination);
        }
    }
}

/// A client's offer: an Opus track to publish, or only a data channel.
/// The SFU under test: the core driven here, or the shell's thread.
trait Backend {
    fn join(&mut self, pid: &str, offer: &str) -> String;
    fn answer(&mut self, pid: &str, sdp: &str);
    fn pump(&mut self);
    fn notice(&mut self) -> Option<Notice>;
    /// (forwarded packets, forwarded bytes)
    fn forwarded(&self) -> (u64, u64);
    /// Where the SFU's socket is.
    fn addr(&self) -> SocketAddr;
}

impl Backend for Server {
    fn join(&mut self, pid: &str, offer: &str) -> String {
        self.sfu
            .join("room", pid, offer, Instant::now())
            .expect("joins")
    }
    fn answer(&mut self, pid: &str, sdp: &str) {
        self.sfu.answer("room", pid, sdp, Instant::now()).unwrap()
    }
    fn pump(&mut self) {
        Server::pump(self)
    }
    fn notice(&mut self) -> Option<Notice> {
        self.sfu.poll_notice()
    }
    fn forwarded(&self) -> (u64, u64) {
        let s = self.sfu.stats();
        (s.forwarded_packets, s.forwarded_bytes)
    }
    fn addr(&self) -> SocketAddr {
        self.local
    }
}

struct Shell {
    rt: tokio::runtime::Runtime,
    sfu: SfuHandle,
    notices: tokio::sync::mpsc::Receiver<Notice>,
}

impl Shell {
    /// The shell on a loopback port (with ICE-TCP when `tcp`), and a runtime to await it.
    fn start(tcp: bool) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (sfu, notices) = SfuHandle::spawn(
            "127.0.0.1:0".parse().unwrap(),
            None,
            25,
            std::time::Duration::from_secs(10),
            tcp,
        )
        .unwrap();
        Self { rt, sfu, notices }
    }
}

impl Backend for Shell {
    fn join(&mut self, pid: &str, offer: &str) -> String {
        self.rt
            .block_on(self.sfu.join("room", pid, offer))
            .expect("joins")
    }
    fn answer(&mut self, pid: &str, sdp: &str) {
        self.rt.block_on(self.sfu.answer("room", pid, sdp)).unwrap()
    }
    fn pump(&mut self) {}
    fn notice(&mut self) -> Option<Notice> {
        self.notices.try_recv().ok()
    }
    fn forwarded(&self) -> (u64, u64) {
        let s = self.sfu.stats();
        (
            s.forwarded_packets.load(Ordering::Relaxed),
            s.forwarded_bytes.load(Ordering::Relaxed),
        )
    }
    fn addr(&self) -> SocketAddr {
        self.sfu.addr()
    }
}

/// (Its published track's mid when `publish`.)
fn offer(c: &mut Client, publish: Option<MediaKind>) -> (String, str0m::change::SdpPendingOffer) {
    let mut api = c.rtc.sdp_api();
    if let Some(kind) = publish {
        c.mid = Some(api.add_media(kind, Direction::SendOnly, None, None, None));
    } else {
        api.add_channel("chat".into());
    }
    let (o, pending) = api.apply().unwrap();
    (o.to_sdp_string(), pending)
}

#[test]
fn a_published_track_reaches_the_other_participant_through_the_sfu() {
    let mut server = Server::new(25);
    assert!(
        !call(&mut server, MediaKind::Audio, false),
        "no keyframe requests for audio"
    );
    assert_eq!(server.sfu.tracks("room", "ben"), Some((1, 0)));
    assert_eq!(server.sfu.tracks("room", "ann"), Some((0, 1)));
    // Ann leaves: Ben's session drops her track at the next negotiation.
    server.sfu.leave("room", "ann", Instant::now());
    assert_eq!(server.sfu.participants("room"), 1);
    assert_eq!(server.sfu.tracks("room", "ben"), Some((0, 0)));
    assert!(
        matches!(server.sfu.poll_notice(), Some(Notice::Offer { to, .. }) if to == "ben"),
        "Ben is offered a session without Ann's track"
    );
}

/// The same call through the shell: its own thread and socket, commands and notices queued.
#[test]
fn the_shell_thread_carries_the_same_call() {
    let mut shell = Shell::start(false);
    assert_eq!(shell.sfu.addr().ip().to_string(), "127.0.0.1");
    call(&mut shell, MediaKind::Audio, false);
    shell.sfu.leave("room", "ann").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut offered = false;
    while Instant::now() < deadline && !offered {
        offered = matches!(shell.notice(), Some(Notice::Offer { to, .. }) if to == "ben");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(offered, "Ben is offered a session without Ann's track");
    drop(shell); // stops and joins the thread
}

/// ICE-TCP (RFC 6544): Ben's network lets only TCP out. His one candidate is an active TCP
/// one; he connects to the SFU's TCP port (same number as its UDP port) and gets Ann's video
/// byte for byte over RFC 4571 framing, while Ann stays on UDP.
#[test]
fn a_participant_with_only_tcp_reaches_the_sfu_over_ice_tcp() {
    let mut shell = Shell::start(true);
    let tcp = shell.sfu.tcp_addr().expect("ICE-TCP is on");
    assert_eq!(
        tcp.port(),
        shell.sfu.addr().port(),
        "the same port number as UDP"
    );
    let ben = Client::new_tcp(tcp);
    call_with(&mut shell, MediaKind::Video, false, ben);
}

/// The SFU's TCP port refuses what is not RFC 4571 framing of sane packets: an oversized
/// length closes the connection; a connection that never sends a frame is closed too.
#[test]
fn the_ice_tcp_port_closes_connections_that_break_its_limits() {
    use std::io::{Read, Write};
    let (sfu, _notices) = SfuHandle::spawn(
        "127.0.0.1:0".parse().unwrap(),
        None,
        25,
        std::time::Duration::from_secs(10),
        true,
    )
    .unwrap();
    let tcp = sfu.tcp_addr().unwrap();
    let mut c = std::net::TcpStream::connect(tcp).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A frame that claims 60,000 bytes: past MAX_FRAME.
    c.write_all(&[0xea, 0x60, 1, 2, 3]).unwrap();
    let mut b = [0u8; 16];
    let n = c.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "closed, nothing answered");
    // A frame shorter than any RTP, STUN or DTLS packet: closed too.
    let mut e = std::net::TcpStream::connect(tcp).unwrap();
    e.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    e.write_all(&[0, 4, 0x16, 0xfe, 0xfd, 0]).unwrap();
    assert_eq!(e.read(&mut b).unwrap_or(0), 0, "closed");
    let deadline = Instant::now() + Duration::from_secs(2);
    while sfu.stats().tcp_refused.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        sfu.stats().tcp_refused.load(Ordering::Relaxed),
        2,
        "both closes counted (natpass_sfu_tcp_refused_total)"
    );
    // A junk frame of a sane size is dropped by the SFU (no session), the connection stays
    // until its first-frame deadline.
    let mut d = std::net::TcpStream::connect(tcp).unwrap();
    let mut junk = vec![0u8, 13, 0x16, 0xfe, 0xfd];
    junk.extend_from_slice(&[0; 10]);
    d.write_all(&junk).unwrap();
    d.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        matches!(d.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "no answer to a packet of no session, and no close"
    );
}

/// Video: Ben's new track can only be decoded from a keyframe, so the SFU asks Ann for one
/// when Ben's answer lands (throttled), and Ben's VP8 frames arrive whole.
#[test]
fn a_subscriber_joining_a_video_track_gets_a_keyframe_asked_of_the_publisher() {
    let mut server = Server::new(25);
    assert!(
        call(&mut server, MediaKind::Video, false),
        "Ann was asked for a keyframe when Ben's video track was negotiated"
    );
    let st = server.sfu.stats();
    assert!(st.keyframe_requests >= 1, "{st:?}");
}

/// Ann publishes a `kind` track, Ben subscribes; Ben must receive 50 of Ann's frames byte for
/// byte. Whether Ann was asked for a keyframe (PLI/FIR) meanwhile.
/// With `junk`, halfway through, Ann's socket (the nominated address, so the SFU's session
/// parses what comes) sends 3,000 malformed datagrams shaped like STUN, DTLS, RTP and RTCP;
/// the call must go on.
fn call(server: &mut dyn Backend, kind: MediaKind, junk: bool) -> bool {
    call_with(server, kind, junk, Client::new())
}

/// [`call`] with Ben as given (e.g. on ICE-TCP).
fn call_with(server: &mut dyn Backend, kind: MediaKind, junk: bool, mut ben: Client) -> bool {
    let mut ann = Client::new();
    let t0 = Instant::now();

    let (o, pending) = offer(&mut ann, Some(kind));
    let answer = server.join("ann", &o);
    ann.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    // Ann's MediaAdded (her track) comes out of the SFU's session as soon as it runs.
    for _ in 0..20 {
        server.pump();
        ann.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (o, pending) = offer(&mut ben, None);
    let answer = server.join("ben", &o);
    ben.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();

    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut last_write = Instant::now();
    let mut received = 0usize;
    let mut renegotiated = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && received < 50 {
        server.pump();
        while let Some(n) = server.notice() {
            match n {
                Notice::Offer { to, sdp, .. } => {
                    assert_eq!(to, "ben", "only Ben has tracks to add");
                    let a = ben
                        .rtc
                        .sdp_api()
                        .accept_offer(SdpOffer::from_sdp_string(&sdp).unwrap())
                        .unwrap();
                    server.answer("ben", &a.to_sdp_string());
                    renegotiated = true;
                }
                Notice::Gone { pid, .. } => panic!("{pid} gone"),
                Notice::Speaker { .. } | Notice::Chat { .. } => {}
            }
        }
        ann.pump();
        ben.pump();
        // Ann speaks every 20 ms once connected: distinct 80-byte frames.
        if ann.rtc.is_connected() && last_write.elapsed() >= Duration::from_millis(20) {
            last_write = Instant::now();
            let mid = ann.mid.unwrap();
            let pt = ann
                .rtc
                .codec_config()
                .find(|p| {
                    p.spec().codec
                        == if kind == MediaKind::Audio {
                            Codec::Opus
                        } else {
                            Codec::Vp8
                        }
                })
                .unwrap()
                .pt();
            let frame: Vec<u8> = (0..80)
                .map(|k| (sent.len() as u8).wrapping_add(k))
                .collect();
            let w = ann.rtc.writer(mid).unwrap();
            w.write(
                pt,
                Instant::now(),
                MediaTime::from(t0.elapsed()),
                frame.clone(),
            )
            .unwrap();
            sent.push(frame);
        }
        for e in ben.events.drain(..) {
            if let Event::MediaData(d) = e {
                assert!(
                    sent.iter().any(|f| f[..] == d.data[..]),
                    "Ben got bytes Ann never sent"
                );
                received += 1;
                if junk && received == 25 {
                    flood(&ann.sock, server.addr(), 3000);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(renegotiated, "the SFU offered Ben Ann's track");
    assert!(
        received >= 50,
        "Ben received {received} of Ann's {} frames",
        sent.len()
    );
    let (packets, bytes) = server.forwarded();
    assert!(
        packets >= 50 && bytes >= 50 * 80,
        "{packets} packets, {bytes} bytes"
    );
    ann.events
        .iter()
        .any(|e| matches!(e, Event::KeyframeRequest(_)))
}

/// Malformed datagrams from a participant's own address (so its session parses them): the
/// call goes on.
#[test]
fn malformed_datagrams_inside_a_live_session_do_not_break_it() {
    let mut server = Server::new(25);
    call(&mut server, MediaKind::Video, true);
    assert_eq!(server.sfu.participants("room"), 2, "nobody was dropped");
}

/// Datagrams whose first byte says STUN, DTLS, RTP or RTCP (RFC 7983) and whose rest is noise,
/// truncated and overlong.
fn flood(sock: &UdpSocket, to: SocketAddr, n: usize) {
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for k in 0..n {
        let len = [1usize, 2, 12, 13, 20, 28, 64, 200, 1200][k % 9];
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        d[0] = [0x00, 0x01, 0x16, 0x17, 0x14, 0x80, 0x90, 0xc8, 0xc9, 0xcd][(next() % 10) as usize];
        if len > 1 && d[0] >= 0x80 {
            d[1] = [0x60, 0x6f, 0xe0, 0xc8, 0xc9, 0xce][(next() % 6) as usize]; // PTs and RTCP types
        }
        let _ = sock.send_to(&d, to);
        if k % 200 == 0 {
            std::thread::sleep(Duration::from_millis(1)); // stay under the socket buffer
        }
    }
}

#[test]
fn bad_input_is_refused_without_a_panic() {
    let mut server = Server::new(2);
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let now = Instant::now();
    // Datagrams nobody negotiated: STUN-looking, DTLS-looking, RTP-looking, empty, random.
    let mut seed = 0x2545_f491_u32;
    let mut junk = vec![vec![], vec![0u8], vec![0x16, 0xfe, 0xfd], vec![0x80; 12]];
    for len in [1usize, 4, 20, 21, 100, 1200, 1500] {
        for first in [0x00u8, 0x01, 0x14, 0x16, 0x17, 0x80, 0x90, 0xc8, 0xff] {
            let mut d: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            d[0] = first;
            junk.push(d);
        }
    }
    for d in &junk {
        server.sfu.handle_datagram(now, src, server.local, d);
    }
    assert_eq!(server.sfu.stats().dropped_datagrams, junk.len() as u64);
    assert!(server.sfu.poll_transmit().is_none(), "nothing answered");
    assert!(matches!(
        server.sfu.join("r", "x", "v=0 not an offer", now),
        Err(SfuError::Sdp(_))
    ));
    assert_eq!(
        server.sfu.participants("r"),
        0,
        "a refused join leaves nothing"
    );
    // A full room and a duplicate id.
    let mut a = Client::new();
    let mut b = Client::new();
    let mut c = Client::new();
    let (oa, _) = offer(&mut a, Some(MediaKind::Audio));
    let (ob, _) = offer(&mut b, Some(MediaKind::Audio));
    let (oc, _) = offer(&mut c, Some(MediaKind::Audio));
    server.sfu.join("r", "a", &oa, now).unwrap();
    assert_eq!(
        server.sfu.join("r", "a", &ob, now),
        Err(SfuError::Duplicate("a".into()))
    );
    server.sfu.join("r", "b", &ob, now).unwrap();
    assert_eq!(server.sfu.join("r", "c", &oc, now), Err(SfuError::Full(2)));
    assert!(matches!(
        server.sfu.answer("r", "a", "v=0", now),
        Err(SfuError::Sdp(_))
    ));
    assert_eq!(
        server
            .sfu
            .answer("r", "nobody", &oa.replace("offer", "answer"), now),
        Err(SfuError::Unknown("nobody".into()))
    );
}

/// Run the SFU's timers up to `until` (fake time: nothing arrives meanwhile).
fn run_until(sfu: &mut Sfu, until: Instant) {
    for _ in 0..100_000 {
        match sfu.poll_timeout() {
            Some(t) if t <= until => sfu.handle_timeout(t),
            _ => break,
        }
        while sfu.poll_transmit().is_some() {}
    }
    sfu.handle_timeout(until);
}

#[test]
fn a_participant_that_sends_nothing_is_removed_after_the_timeout() {
    let start = Instant::now();
    let mut sfu =
        Sfu::new("127.0.0.1:40000".parse().unwrap(), 25).with_timeout(Duration::from_secs(10));
    let mut ann = Client::new();
    let (o, _ann_pending) = offer(&mut ann, Some(MediaKind::Audio));
    sfu.join("r", "ann", &o, start).unwrap();
    let mut ben = Client::new();
    let (o, _ben_pending) = offer(&mut ben, None);
    sfu.join("r", "ben", &o, start + Duration::from_secs(5))
        .unwrap();
    run_until(&mut sfu, start + Duration::from_secs(9));
    assert_eq!(sfu.participants("r"), 2, "both within the timeout");
    run_until(&mut sfu, start + Duration::from_millis(10_500));
    assert_eq!(
        sfu.participants("r"),
        1,
        "Ann, silent for 10 s, is gone; Ben is not yet"
    );
    let notices: Vec<Notice> = std::iter::from_fn(|| sfu.poll_notice()).collect();
    assert!(
        notices.contains(&Notice::Gone {
            room: "r".into(),
            pid: "ann".into()
        }),
        "{notices:?}"
    );
    assert!(!notices.contains(&Notice::Gone {
        room: "r".into(),
        pid: "ben".into()
    }));
    run_until(&mut sfu, start + Duration::from_millis(15_500));
    assert_eq!(sfu.participants("r"), 0);
    assert_eq!(sfu.stats().participants, 0);
}

/// `natpass probe sfu` end to end, small: two publishers and a viewer through the shell
/// thread; every frame sent reaches each other participant (the counts the benchmark reports
/// are the ones the clients saw), and the SFU's CPU is read from its own thread.
#[test]
fn the_sfu_probe_measures_a_small_room_without_loss() {
    let r = natpass::probe::sfu::run(&natpass::probe::sfu::SfuLoadOptions {
        publishers: 2,
        subscribers: 1,
        rate: 50,
        size: 600,
        duration: Duration::from_secs(1),
        setup_timeout: Duration::from_secs(20),
        cores: None,
        janus: None,
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
    })
    .expect("the probe runs");
    assert_eq!((r.server, r.peer_connections), ("natpass", 3));
    assert!(r.sent >= 80, "two publishers at 50 frames/s for 1 s: {r:?}");
    assert_eq!(r.expected, r.sent * 2, "each frame goes to the two others");
    assert!(r.loss_percent < 1.0, "{r:?}");
    assert!(
        r.forwarded_packets + 4 >= r.expected && r.forwarded_packets <= r.expected + 20,
        "the SFU's own count agrees with the clients': {r:?}"
    );
}
