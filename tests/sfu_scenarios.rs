//! The SFU core's forwarding decisions with fake time and no sockets: str0m clients shaped like
//! the page (a publisher sending three simulcast layers l/m/h, a viewer) are wired to the sans-IO
//! core by handing datagrams across in memory, and the clock only moves when the test moves it.
//! Each frame says which layer it was sent on (its second byte) and whether it is a keyframe
//! (VP8's frame tag, its first byte), so the viewer's frames show what the SFU chose and when.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use natpass::sfu::core::{LAYER_IDLE, RETARGET_INTERVAL};
use natpass::sfu::{Notice, Sfu};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const RIDS: [&str; 3] = ["l", "m", "h"];

struct Peer {
    name: &'static str,
    rtc: Rtc,
    addr: SocketAddr,
    wake: Instant,
    /// Its published track.
    mid: Option<Mid>,
    /// Layers it must send a keyframe on next (asked by the SFU).
    key_wanted: [bool; 3],
    /// Frames received: (layer it was sent on, keyframe).
    got: Vec<(u8, bool)>,
    /// Its chat data channel once open, and the lines that came on it.
    chat: Option<ChannelId>,
    lines: Vec<String>,
}

struct Net {
    now: Instant,
    sfu: Sfu,
    sfu_addr: SocketAddr,
    peers: Vec<Peer>,
    /// Drop one RTP packet in this many in each direction (0: none), counting per direction.
    lose_one_in: usize,
    /// Chat lines the SFU handed to signaling: (to, from, text).
    chat_notices: Vec<(String, String, String)>,
    rtp_counts: [usize; 2],
}

/// Whether to lose this datagram: every `one_in`-th RTP packet of a direction (`count`).
fn lose(one_in: usize, count: &mut usize, d: &[u8]) -> bool {
    if one_in == 0 || !is_rtp(d) {
        return false;
    }
    *count += 1;
    (*count).is_multiple_of(one_in)
}

/// Whether a datagram is RTP (RFC 7983: first byte 128–191; RTCP's packet types 200–206 sit
/// where RTP's marker bit and payload type are).
fn is_rtp(d: &[u8]) -> bool {
    d.len() > 12 && (128..192).contains(&d[0]) && !(200..=206).contains(&d[1])
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        let sfu_addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        Self {
            now,
            sfu: Sfu::new(sfu_addr, 25),
            sfu_addr,
            peers: Vec::new(),
            lose_one_in: 0,
            chat_notices: Vec::new(),
            rtp_counts: [0; 2],
        }
    }

    /// A participant joins: a simulcast publisher (`publish`) or a viewer with a data channel.
    fn join(&mut self, name: &'static str, publish: bool) {
        let addr: SocketAddr = format!("127.0.0.{}:4000", 2 + self.peers.len())
            .parse()
            .unwrap();
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mut mid = None;
        if publish {
            let mut sim = Simulcast::new();
            for r in RIDS {
                sim.add_send_layer(SimulcastLayer::new(r));
            }
            mid = Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, Some(sim)));
        } else {
            api.add_channel("chat".into());
        }
        let (offer, pending) = api.apply().unwrap();
        let answer = self
            .sfu
            .join("r", name, &offer.to_sdp_string(), self.now)
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.peers.push(Peer {
            name,
            rtc,
            addr,
            wake: self.now,
            mid,
            key_wanted: [true; 3],
            got: Vec::new(),
            chat: None,
            lines: Vec::new(),
        });
    }

    fn peer(&mut self, name: &str) -> &mut Peer {
        self.peers.iter_mut().find(|p| p.name == name).unwrap()
    }

    /// Move every datagram, timer and notice until nothing is left at this instant.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for p in &mut self.peers {
                if p.wake <= self.now {
                    p.rtc.handle_input(Input::Timeout(self.now)).unwrap();
                }
                loop {
                    match p.rtc.poll_output().unwrap() {
                        Output::Transmit(t) => {
                            moved = true;
                            assert_eq!(t.destination, self.sfu_addr);
                            if lose(self.lose_one_in, &mut self.rtp_counts[0], &t.contents) {
                                continue;
                            }
                            self.sfu
                                .handle_datagram(self.now, p.addr, self.sfu_addr, &t.contents);
                        }
                        Output::Timeout(t) => {
                            p.wake = t;
                            break;
                        }
                        Output::Event(Event::MediaData(d)) => {
                            p.got.push((d.data[1], d.data[0] & 1 == 0));
                        }
                        Output::Event(Event::KeyframeRequest(k)) => {
                            if let Some(i) = k
                                .rid
                                .and_then(|r| RIDS.iter().position(|x| Rid::from(*x) == r))
                            {
                                p.key_wanted[i] = true;
                            }
                        }
                        Output::Event(Event::ChannelOpen(id, _)) => p.chat = Some(id),
                        Output::Event(Event::ChannelData(d)) => {
                            p.lines.push(String::from_utf8_lossy(&d.data).into_owned());
                        }
                        Output::Event(_) => {}
                    }
                }
            }
            if self.sfu.poll_timeout().is_some_and(|t| t <= self.now) {
                self.sfu.handle_timeout(self.now);
            }
            while let Some(t) = self.sfu.poll_transmit() {
                moved = true;
                if lose(self.lose_one_in, &mut self.rtp_counts[1], &t.contents) {
                    continue;
                }
                let p = self
                    .peers
                    .iter_mut()
                    .find(|p| p.addr == t.destination)
                    .expect("the SFU sends only to participants");
                let r = Receive::new(Protocol::Udp, self.sfu_addr, p.addr, &t.contents).unwrap();
                p.rtc.handle_input(Input::Receive(self.now, r)).unwrap();
            }
            while let Some(n) = self.sfu.poll_notice() {
                moved = true;
                if let Notice::Chat { to, from, text, .. } = &n {
                    self.chat_notices
                        .push((to.clone(), from.clone(), text.clone()));
                }
                if let Notice::Offer { to, sdp, .. } = n {
                    let p = self.peers.iter_mut().find(|p| p.name == to).unwrap();
                    let answer = p
                        .rtc
                        .sdp_api()
                        .accept_offer(SdpOffer::from_sdp_string(&sdp).unwrap())
                        .unwrap();
                    self.sfu
                        .answer("r", &to, &answer.to_sdp_string(), self.now)
                        .unwrap();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settles");
    }

    /// Run for `d` of fake time in 10 ms steps; publishers send a frame on each layer in
    /// `layers` every ~33 ms (a keyframe on a layer when it was asked for one).
    fn run(&mut self, d: Duration, layers: &[usize]) {
        let end = self.now + d;
        let mut next_frame = self.now;
        let mut frame = 0u64;
        while self.now < end {
            if self.now >= next_frame {
                next_frame = self.now + Duration::from_millis(33);
                frame += 1;
                let now = self.now;
                for p in &mut self.peers {
                    let Some(mid) = p.mid else { continue };
                    if !p.rtc.is_connected() {
                        continue;
                    }
                    let pt = p
                        .rtc
                        .codec_config()
                        .find(|c| c.spec().codec == Codec::Vp8)
                        .unwrap()
                        .pt();
                    for &layer in layers {
                        let key = std::mem::take(&mut p.key_wanted[layer]);
                        let data = vec![if key { 0x00 } else { 0x01 }, layer as u8, 0x5a, 0x5a];
                        let time = MediaTime::new(frame * 3000, Frequency::NINETY_KHZ);
                        p.rtc
                            .writer(mid)
                            .unwrap()
                            .rid(Rid::from(RIDS[layer]))
                            .write(pt, now, time, data)
                            .unwrap();
                    }
                }
            }
            self.settle();
            self.now += Duration::from_millis(10);
        }
        self.settle();
    }
}

/// The layers of the viewer's frames since `from`, in order, with runs collapsed.
fn layers_seen(p: &Peer, from: usize) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for &(l, _) in &p.got[from..] {
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out
}

/// Ann publishes l/m/h and `viewers` join; 2 s later `pinner` pins Ann; 2 s more pass.
fn pinned_call(viewers: &[&'static str], pinner: &str) -> Net {
    let mut net = Net::new();
    net.join("ann", true);
    for v in viewers {
        net.join(v, false);
    }
    net.run(Duration::from_secs(2), &[0, 1, 2]);
    let now = net.now;
    net.sfu.pin("r", pinner, Some("ann"), now).unwrap();
    net.run(Duration::from_secs(2), &[0, 1, 2]);
    net
}

#[test]
fn a_viewer_gets_the_low_layer_then_the_high_one_from_its_keyframe_when_it_pins() {
    let mut net = Net::new();
    net.join("ann", true);
    net.join("ben", false);
    net.run(Duration::from_secs(3), &[0, 1, 2]);
    let ben = net.peer("ben");
    assert!(
        ben.got.len() > 30,
        "Ben receives Ann's video: {}",
        ben.got.len()
    );
    assert_eq!(
        layers_seen(ben, 0),
        vec![0],
        "an unpinned tile: the low layer only"
    );
    assert!(ben.got[0].1, "and it starts on a keyframe");

    let mark = net.peer("ben").got.len();
    let now = net.now;
    net.sfu.pin("r", "ben", Some("ann"), now).unwrap();
    net.run(Duration::from_secs(2), &[0, 1, 2]);
    let ben = net.peer("ben");
    assert_eq!(
        layers_seen(ben, mark),
        vec![0, 2],
        "low until the switch, then high"
    );
    let first_high = mark + ben.got[mark..].iter().position(|f| f.0 == 2).unwrap();
    assert!(
        ben.got[first_high].1,
        "the switch happens on a keyframe of the high layer"
    );
    assert!(net.sfu.stats().layer_switches >= 1);
    assert_eq!(net.sfu.layer("r", "ben", "ann"), Some(2));

    // Unpinned: back to the low layer (again from a keyframe).
    let mark = net.peer("ben").got.len();
    let now = net.now;
    net.sfu.pin("r", "ben", None, now).unwrap();
    net.run(Duration::from_secs(2), &[0, 1, 2]);
    let ben = net.peer("ben");
    assert_eq!(layers_seen(ben, mark), vec![2, 0]);
    let first_low = mark + ben.got[mark..].iter().position(|f| f.0 == 0).unwrap();
    assert!(ben.got[first_low].1);
}

#[test]
fn a_pinned_tile_whose_high_layer_stops_gets_the_middle_one_and_the_high_one_back_later() {
    let mut net = pinned_call(&["ben"], "ben");
    assert_eq!(net.sfu.layer("r", "ben", "ann"), Some(2));

    // Ann's browser runs short of CPU and stops its high layer: within LAYER_IDLE and one
    // re-choice, Ben moves to the middle layer instead of freezing on the last high frame.
    let mark = net.peer("ben").got.len();
    net.run(LAYER_IDLE + RETARGET_INTERVAL * 2, &[0, 1]);
    assert_eq!(net.sfu.layer("r", "ben", "ann"), Some(1));
    let ben = net.peer("ben");
    assert_eq!(
        layers_seen(ben, mark),
        vec![1],
        "nothing more of the stopped layer; the middle one"
    );
    assert!(ben.got.len() - mark > 10, "frames kept coming");

    // The high layer comes back: so does Ben.
    net.run(RETARGET_INTERVAL * 3, &[0, 1, 2]);
    assert_eq!(net.sfu.layer("r", "ben", "ann"), Some(2));
}

#[test]
fn each_viewer_gets_its_own_layer_of_the_same_publisher() {
    let mut net = pinned_call(&["ben", "cat"], "cat");
    assert_eq!(net.sfu.layer("r", "ben", "ann"), Some(0));
    assert_eq!(net.sfu.layer("r", "cat", "ann"), Some(2));
    let ben_tail = net.peer("ben").got.iter().rev().take(10).all(|f| f.0 == 0);
    let cat_tail = net.peer("cat").got.iter().rev().take(10).all(|f| f.0 == 2);
    assert!(ben_tail && cat_tail, "Ben small, Cat (who pinned) large");
}

#[test]
fn lost_packets_are_asked_again_both_ways_and_counted() {
    let mut net = Net::new();
    net.join("ann", true);
    net.join("ben", false);
    net.run(Duration::from_secs(2), &[0, 1, 2]);
    let before = net.sfu.stats();
    let mark = net.peer("ben").got.len();
    // A lossless stretch of 6 s gives this many frames (one every 40 ms of fake time).
    net.run(Duration::from_secs(6), &[0, 1, 2]);
    let clean = net.peer("ben").got.len() - mark;
    let mark = net.peer("ben").got.len();
    // One RTP packet in 10 lost, Ann -> SFU and SFU -> Ben.
    net.lose_one_in = 10;
    net.run(Duration::from_secs(4), &[0, 1, 2]);
    net.lose_one_in = 0;
    net.run(Duration::from_secs(2), &[0, 1, 2]);
    let after = net.sfu.stats();
    assert!(
        after.nacks_sent > before.nacks_sent,
        "the SFU asked Ann again: {after:?}"
    );
    assert!(
        after.nacks_received > before.nacks_received,
        "Ben asked the SFU again: {after:?}"
    );
    // Resends fill the gaps: about every frame arrives although 19 % of the packets on the
    // way were lost once.
    let lossy = net.peer("ben").got.len() - mark;
    println!("frames in 6 s: {clean} without loss, {lossy} with 10 % loss per leg");
    assert!(lossy * 100 >= clean * 97, "{lossy} of {clean}");
}

#[test]
fn a_chat_line_reaches_open_channels_directly_and_everyone_else_through_signaling() {
    let mut net = Net::new();
    net.join("ann", true); // a publisher without a data channel
    net.join("ben", false);
    net.join("cat", false);
    net.run(Duration::from_secs(2), &[0]);
    let ben = net.peer("ben");
    let id = ben.chat.expect("Ben's chat channel opened");
    ben.rtc
        .channel(id)
        .unwrap()
        .write(false, br#"{"text":"hello room"}"#)
        .unwrap();
    net.run(Duration::from_millis(200), &[0]);
    let line: serde_json::Value = serde_json::from_str(&net.peer("cat").lines[0]).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"from": "ben", "text": "hello room"})
    );
    assert!(net.peer("ben").lines.is_empty(), "not echoed to the sender");
    assert_eq!(
        net.chat_notices,
        vec![("ann".to_owned(), "ben".to_owned(), "hello room".to_owned())],
        "Ann has no channel: signaling carries the line to her, and only to her"
    );
    assert_eq!(net.sfu.stats().chat_messages, 1);
}
