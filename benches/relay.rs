//! Micro-benchmarks of the codec and the core's relay decisions (no sockets): what natpass spends
//! per packet before the syscalls. Whole-server comparisons: scripts/bench-vs-coturn.sh.

use criterion::{Criterion, criterion_group, criterion_main};
use natpass::auth::{Credentials, Secret};
use natpass::proto::{Core, FiveTuple, PeerRoute, RelayOwner, Transport};
use natpass::relay::ShardResources;
use natpass::testing::{FakeRelays, Setup};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;
use stun_types::attribute::{Nonce, Realm, Username};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageIntegrityCredentials,
    MessageWrite, MessageWriteExt, MessageWriteVec,
};

fn setup() -> (
    Core<ShardResources>,
    FakeRelays,
    FiveTuple,
    Instant,
    RelayOwner,
) {
    let mut credentials = Credentials::new("natpass", 3600);
    credentials.add_user("alice", "pw");
    credentials.add_secret(Secret::new("s"));
    let now = Instant::now();
    let setup = Setup {
        credentials,
        ..Setup::default()
    };
    let (mut core, _) = natpass::testing::core(setup, now, 1_800_000_000);
    let mut relays = FakeRelays::default();
    let ft = FiveTuple {
        transport: Transport::Udp,
        client: "203.0.113.9:4000".parse().unwrap(),
        server: "192.0.2.1:3478".parse().unwrap(),
    };
    let mut out = Vec::new();
    let req = |method,
               nonce: &str,
               f: &dyn Fn(&mut MessageWriteVec, stun_types::message::TransactionId)| {
        let mut w = Message::builder_request(method, MessageWriteVec::new());
        let t = w.transaction_id();
        f(&mut w, t);
        if !nonce.is_empty() {
            w.add_attribute(&Username::new("alice").unwrap()).unwrap();
            w.add_attribute(&Realm::new("natpass").unwrap()).unwrap();
            w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
            let c = LongTermKeyCredentials::new("alice".into(), "pw".into(), "natpass".into());
            w.add_message_integrity(
                &MessageIntegrityCredentials::LongTerm(c),
                IntegrityAlgorithm::Sha1,
            )
            .unwrap();
        }
        w.finish()
    };
    let alloc_attrs = |w: &mut MessageWriteVec, _| {
        w.add_attribute(&turn_types::attribute::RequestedTransport::new(17))
            .unwrap();
    };
    core.handle_client(
        now,
        ft,
        &req(turn_types::message::ALLOCATE, "", &alloc_attrs),
        &mut relays,
        &mut out,
    );
    let m = Message::from_bytes(&out[0].data).unwrap();
    let nonce = m.attribute::<Nonce>().unwrap().nonce().to_owned();
    out.clear();
    core.handle_client(
        now,
        ft,
        &req(turn_types::message::ALLOCATE, &nonce, &alloc_attrs),
        &mut relays,
        &mut out,
    );
    let bind = |w: &mut MessageWriteVec, t| {
        w.add_attribute(&turn_types::attribute::ChannelNumber::new(0x4000))
            .unwrap();
        w.add_attribute(&turn_types::attribute::XorPeerAddress::new(
            "8.8.8.8:5000".parse().unwrap(),
            t,
        ))
        .unwrap();
    };
    core.handle_client(
        now,
        ft,
        &req(turn_types::message::CHANNEL_BIND, &nonce, &bind),
        &mut relays,
        &mut out,
    );
    let owner = relays.bound.values().next().expect("allocated").1;
    (core, relays, ft, now, owner)
}

fn benches(c: &mut Criterion) {
    let binding = {
        let mut w = Message::builder_request(BINDING, MessageWriteVec::new());
        w.add_fingerprint().unwrap();
        w.finish()
    };
    c.bench_function("codec: parse a Binding request with FINGERPRINT", |b| {
        b.iter(|| Message::from_bytes(black_box(&binding)).is_ok())
    });
    let (mut core, mut relays, ft, now, owner) = setup();
    let mut out = Vec::with_capacity(8);
    c.bench_function("core: Binding request → response", |b| {
        b.iter(|| {
            out.clear();
            core.handle_client(now, ft, black_box(&binding), &mut relays, &mut out);
        })
    });
    let mut cd = vec![0x40, 0x00, 0x00, 100];
    cd.extend_from_slice(&[7u8; 100]);
    c.bench_function("core: ChannelData client → peer route", |b| {
        b.iter(|| {
            core.handle_client(now, ft, black_box(&cd), &mut relays, &mut out)
                .is_some()
        })
    });
    let peer: SocketAddr = "8.8.8.8:5000".parse().unwrap();
    let payload = [7u8; 100];
    c.bench_function("core: peer datagram → ChannelData route", |b| {
        b.iter(|| {
            matches!(
                core.handle_peer(now, owner, peer, black_box(&payload)),
                PeerRoute::Channel { .. }
            )
        })
    });
}

criterion_group!(relay, benches);
criterion_main!(relay);
