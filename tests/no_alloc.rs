//! The relay hot path allocates nothing (STYLE.md "no allocation per packet"): a counting
//! global allocator watches ChannelData client → peer, ChannelData peer → client, and Send
//! indications through the sans-IO core.

mod common;

use common::*;
use natpass::proto::PeerRoute;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn relaying_allocates_nothing_per_packet() {
    let mut h = Harness::new(Options::default());
    let ft = udp("203.0.113.9:4000");
    let relay = h.allocate(ft, "alice", "alicepw");
    let nonce = h.nonce(ft);
    h.ask(
        ft,
        &channel_bind("alice", "alicepw", &nonce, 0x4000, "8.8.8.8:5000"),
    );
    h.ask(
        ft,
        &create_permission("alice", "alicepw", &nonce, &["1.1.1.1:1"]),
    );
    let cd = channel_data(0x4000, &[7u8; 160]);
    let send = send_indication("1.1.1.1:6000", &[7u8; 160]);
    let owner = h.relays.owner_of(relay).unwrap();
    let peer: std::net::SocketAddr = "8.8.8.8:5000".parse().unwrap();
    let mut out = Vec::with_capacity(8);
    // Warm up (lazy statics, first-use buffers).
    for _ in 0..10 {
        h.core
            .handle_client(h.now, ft, &cd, &mut h.relays, &mut out);
        h.core.handle_peer(h.now, owner, peer, &[1u8; 160]);
    }
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..10_000 {
        let f = h
            .core
            .handle_client(h.now, ft, &cd, &mut h.relays, &mut out);
        assert!(f.is_some());
        let r = h.core.handle_peer(h.now, owner, peer, &[1u8; 160]);
        assert!(matches!(r, PeerRoute::Channel { .. }));
        let f = h
            .core
            .handle_client(h.now, ft, &send, &mut h.relays, &mut out);
        assert!(f.is_some());
    }
    COUNTING.store(false, Ordering::Relaxed);
    let n = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(n, 0, "{n} allocations in 30,000 relayed packets");
}
