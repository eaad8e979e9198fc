//! The relay hot path allocates nothing (STYLE.md "no allocation per packet"): a counting
//! global allocator watches ChannelData client → peer, ChannelData peer → client, and Send
//! indications through the sans-IO core, then the running server (mio shell, recvmmsg,
//! sendmmsg and GSO batches) relaying 32,000 datagrams.

mod common;

use common::*;
use natpass::proto::PeerRoute;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    /// Counting on this thread only (the core check: the harness's own threads may allocate
    /// meanwhile, which once failed this test in a full run with 4 foreign allocations).
    static HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) || HERE.try_with(|h| h.get()).unwrap_or(false) {
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

/// The counter is process-wide (the test harness's own thread allocates when a test ends), so
/// both checks run in one test, one after the other.
#[test]
fn relaying_allocates_nothing_per_packet() {
    core_relays_without_allocating();
    running_server_relays_without_allocating_per_packet();
}

fn core_relays_without_allocating() {
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
    let before = ALLOCS.load(Ordering::Relaxed);
    HERE.with(|h| h.set(true));
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
    HERE.with(|h| h.set(false));
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(n, 0, "{n} allocations in 30,000 relayed packets");
}

/// The same through the running server: the mio shell with its recvmmsg/sendmmsg/GSO batches.
/// The test thread relays with pre-built datagrams and fixed buffers (it allocates nothing
/// itself while counting), so what is counted is the server's threads: a few allocations for
/// timers and sweeps are allowed, far below one per packet.
fn running_server_relays_without_allocating_per_packet() {
    let server = start_server(alice_loopback());
    let c = UdpClient::new(server.udp_addrs[0]);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let pa = peer.local_addr().unwrap().to_string();
    let (nonce, relay) = c.allocate("alice", "secret");
    let r = c.ask(&channel_bind("alice", "secret", &nonce, 0x4000, &pa));
    assert_eq!(error_code(&r), None);
    let cd = channel_data(0x4000, &[7u8; 160]);
    let mut buf = [0u8; 512];
    let round = |buf: &mut [u8]| {
        // A burst of 8 each way, so the server's batches and GSO runs are exercised.
        for _ in 0..8 {
            c.sock.send_to(&cd, server.udp_addrs[0]).unwrap();
        }
        for _ in 0..8 {
            peer.recv_from(buf).expect("relayed to the peer");
        }
        for _ in 0..8 {
            peer.send_to(&[9u8; 160], relay).unwrap();
        }
        for _ in 0..8 {
            c.sock.recv_from(buf).expect("relayed to the client");
        }
    };
    for _ in 0..20 {
        round(&mut buf);
    }
    COUNTING.store(true, Ordering::Relaxed);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..1_000 {
        round(&mut buf);
    }
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    COUNTING.store(false, Ordering::Relaxed);
    println!("running server: {n} allocations for 32,000 relayed datagrams");
    // 16,000 datagrams in and 16,000 out went through the server.
    assert!(n < 32, "{n} allocations for 32,000 relayed datagrams");
}
