//! The fuzz targets' inputs, run on stable Rust as property tests (the cargo-fuzz targets in
//! `fuzz/` need a nightly toolchain these machines do not have): arbitrary bytes and mutated
//! valid messages into the STUN decoder, ChannelData framing, the stream framer, the sans-IO
//! core with advancing time (authenticated and unauthenticated), REST usernames, the peer
//! address canonicaliser and config parsing. Nothing may panic; invariants hold throughout.

mod common;

use common::*;
use natpass::proto::{FiveTuple, Transport, framing};
use proptest::prelude::*;
use stun_types::message::{BINDING, Message, MessageWriteExt};
use turn_types::attribute::{Lifetime, RequestedTransport};
use turn_types::message::ALLOCATE;

/// Valid messages to start mutations from.
fn seeds(nonce: &str) -> Vec<Vec<u8>> {
    vec![
        request(BINDING, |w, _| w.add_fingerprint().unwrap()),
        allocate_plain(),
        signed(ALLOCATE, "alice", "alicepw", nonce, |w, _| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
            w.add_attribute(&Lifetime::new(1200)).unwrap();
        }),
        create_permission("alice", "alicepw", nonce, &["8.8.8.8:1", "1.1.1.1:2"]),
        channel_bind("alice", "alicepw", nonce, 0x4001, "8.8.8.8:1"),
        refresh("alice", "alicepw", nonce, Some(900)),
        send_indication("8.8.8.8:1", b"payload bytes"),
        channel_data(0x4001, b"media"),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// Send seed N mutated by (position, xor) pairs and a truncation.
    Mutated(usize, Vec<(usize, u8)>, Option<usize>),
    /// Send arbitrary bytes.
    Raw(Vec<u8>),
    /// A datagram from a peer at one of the relays.
    Peer(u8, Vec<u8>),
    /// Advance time.
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..8, proptest::collection::vec((0usize..200, any::<u8>()), 0..4), proptest::option::of(0usize..200))
            .prop_map(|(s, m, t)| Op::Mutated(s, m, t)),
        2 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(Op::Raw),
        1 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(p, d)| Op::Peer(p, d)),
        1 => (0u16..900).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// The core never panics on any sequence of (mutated) client messages, peer datagrams and
    /// time, and keeps its resources consistent.
    #[test]
    fn core_survives_arbitrary_sequences(ops in proptest::collection::vec(op(), 1..40), tcp in any::<bool>()) {
        let mut h = Harness::new(Options::default());
        let ft = FiveTuple { transport: if tcp { Transport::Tcp } else { Transport::Udp }, ..udp("203.0.113.9:4000") };
        // Start from a real allocation so authenticated paths are reached.
        let nonce = h.nonce(ft);
        let relay = h.allocate(ft, "alice", "alicepw");
        let seeds = seeds(&nonce);
        for op in ops {
            match op {
                Op::Mutated(i, muts, trunc) => {
                    let mut m = seeds[i].clone();
                    for (pos, x) in muts {
                        if let Some(b) = m.get_mut(pos) { *b ^= x; }
                    }
                    if let Some(t) = trunc { m.truncate(t); }
                    let (replies, fwd) = h.send(ft, &m);
                    for r in replies {
                        // A valid RFC 8489 message, or an RFC 3489 Binding answer (no cookie).
                        let classic = r.len() >= 20 && r[4..8] != [0x21, 0x12, 0xA4, 0x42] && r[0..2] == [1, 1];
                        prop_assert!(classic || Message::from_bytes(&r).is_ok(), "replies are valid STUN");
                    }
                    if let Some(f) = fwd {
                        prop_assert!(f.range.end <= m.len(), "forwarded range inside the input");
                    }
                }
                Op::Raw(b) => {
                    let (_, fwd) = h.send(ft, &b);
                    if let Some(f) = fwd { prop_assert!(f.range.end <= b.len()); }
                }
                Op::Peer(p, d) => {
                    if h.relays.owner_of(relay).is_some() {
                        let peer = format!("8.8.8.{}:{}", p % 4, 1 + u16::from(p));
                        let _ = h.peer(relay, &peer, &d);
                    }
                }
                Op::Wait(s) => h.advance(u64::from(s)),
            }
            // Resources: every reserved port is a bound relay, quotas match allocations.
            prop_assert_eq!(h.shared.ports.in_use(), h.relays.bound.len());
            prop_assert_eq!(h.shared.quotas.total(), h.core.allocation_count());
        }
        h.advance(4000);
        prop_assert_eq!(h.core.allocation_count(), 0);
        prop_assert_eq!(h.shared.ports.in_use(), 0);
    }

    /// The STUN decoder and the integrity finder on arbitrary bytes.
    #[test]
    fn stun_decoding_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(m) = Message::from_bytes(&b) {
            if let Some((algo, off)) = natpass::proto::integrity::find(&m) {
                let _ = natpass::proto::integrity::verify(&m, algo, off, &[0u8; 16]);
            }
            let _ = m.iter_attributes().count();
        }
        let _ = natpass::proto::classic::binding_response(&b, "192.0.2.1:1".parse().unwrap());
        let _ = natpass::client::parse_incoming(&b);
    }

    /// The stream framer: never reads past its input, and frame lengths are consistent.
    #[test]
    fn stream_framer_is_consistent(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        match framing::frame_len(&b) {
            Ok(None) => prop_assert!(b.len() < 4),
            Ok(Some(n)) => {
                prop_assert!((4..=65_536 + 20).contains(&n));
                if b[0] >> 6 == 1 { prop_assert_eq!(n % 4, 0); }
            }
            Err(_) => prop_assert!(b[0] >> 6 >= 2 || (b[0] >> 6 == 0 && u16::from_be_bytes([b[2], b[3]]) % 4 != 0)),
        }
    }

    /// REST usernames and the credential store on arbitrary strings.
    #[test]
    fn rest_usernames_never_panic(s in ".{0,80}", now in any::<u32>()) {
        let _ = natpass::auth::parse_rest_username(&s);
        let c = credentials();
        if let Ok((keys, id)) = c.keys_for(&s, u64::from(now)) {
            prop_assert!(!keys.as_slice().is_empty());
            prop_assert!(!id.is_empty() || s.is_empty());
        }
    }

    /// Config parsing on arbitrary text: an error or a config, never a panic.
    #[test]
    fn config_parsing_never_panics(s in "[a-z\\-=\\[\\]\"0-9.:/ \n]{0,200}") {
        if let Ok(f) = natpass::config::parse_toml(&s, "fuzz") {
            let _ = natpass::config::ValidConfig::build(f, Default::default(), "fuzz");
        }
    }
}

/// The seed corpus (RFC 5769 vectors, messages captured from coturn's turnutils_stunclient and
/// turnutils_uclient and from Chromium — tests/e2e/capture-seeds.mjs) parses, and goes through
/// the core without a panic.
#[test]
fn seed_corpus_parses_and_runs_through_the_core() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/stun_decode");
    let mut h = Harness::new(Options::default());
    let ft = udp("203.0.113.9:4000");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        assert!(Message::from_bytes(&b).is_ok(), "{} parses", p.display());
        let _ = h.send(ft, &b);
        n += 1;
    }
    assert!(n >= 20, "{n} seeds");
}
