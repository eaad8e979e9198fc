//! Relay-only calls: every participant's TURN credential (minted by the signaling join)
//! serves one peer connection per other participant, and a browser opens an allocation per
//! local address and transport for each, keeping the old ones during an ICE restart. A full
//! room (the default 8 people) must fit in the allocation quota on the embedded default
//! config — it did not at 10 allocations per user.

mod common;
use common::*;
use natpass::CancellationToken;
use natpass::config::{Settings, ValidConfig};
use natpass::lifecycle::Server;

use common::sio::Sio;
use std::time::Duration;
use stun_types::message::MessageWriteExt;
use turn_types::attribute::RequestedTransport;
use turn_types::message::ALLOCATE;

/// What one Chromium needs per peer connection with "relay only" on one interface: UDP and
/// TCP TURN URLs, and the previous pair kept alive during an ICE restart.
const ALLOCATIONS_PER_PEER_CONNECTION: usize = 4;

#[test]
fn a_full_relay_only_room_fits_in_the_allocation_quotas() {
    full_room(false);
}

/// Eight people in one office behind one NAT: 8 × 28 allocations from one address, past the
/// per-IP cap of 64 (which is for credentials anyone can fetch, not for participants).
#[test]
fn a_full_relay_only_room_behind_one_nat_fits_too() {
    full_room(true);
}

fn full_room(one_address: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        http: Some("127.0.0.1:0".parse().unwrap()),
        threads: Some(2),
        ..Default::default()
    };
    let cfg = ValidConfig::load(None, settings).expect("the embedded default config");
    let room_size = cfg.http.as_ref().unwrap().room_size;
    assert_eq!(room_size, 8, "the default room");
    let server = rt.block_on(Server::start(cfg, None)).expect("starts");
    let turn = server.net().udp_addrs[0];
    let http = server.http_addr().unwrap();
    let shutdown = CancellationToken::new();
    let served = rt.spawn(server.serve(shutdown.clone()));

    // Eight people join one room over Socket.IO signaling; each gets its credential.
    let (creds, sockets) = rt.block_on(async {
        let mut creds = Vec::new();
        let mut sockets = Vec::new();
        for i in 0..room_size {
            let mut ws = Sio::connect(http, None, None).await.unwrap();
            let joined = ws.join("relayroom", &format!("p{i}")).await;
            assert_eq!(joined["ok"], true, "{joined}");
            let turn = joined["iceServers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s.get("username").is_some())
                .expect("a TURN entry")
                .clone();
            creds.push((
                turn["username"].as_str().unwrap().to_owned(),
                turn["credential"].as_str().unwrap().to_owned(),
            ));
            sockets.push(ws);
        }
        (creds, sockets)
    });

    // Each allocates what its browser would for a mesh with the seven others, from its own
    // address (people in one call on different machines) or all from one.
    let per_person = (room_size - 1) * ALLOCATIONS_PER_PEER_CONNECTION;
    // Every client keeps its socket (its 5-tuple) for the whole test.
    let mut clients = Vec::new();
    // One challenge per address: 401s are rate limited per source IP (5/s per shard here), and
    // this client does not retry as a browser would.
    let mut nonces = std::collections::HashMap::new();
    for (i, (user, pass)) in creds.iter().enumerate() {
        let ip = format!("127.0.1.{}", if one_address { 10 } else { 10 + i });
        let nonce = nonces
            .entry(ip.clone())
            .or_insert_with(|| UdpClient::from_ip(turn, &ip).nonce())
            .clone();
        for n in 0..per_person {
            let c = UdpClient::from_ip(turn, &ip);
            let r = c.ask(&signed(ALLOCATE, user, pass, &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
            }));
            assert_eq!(
                error_code(&r),
                None,
                "participant {i}, allocation {} of {per_person}",
                n + 1
            );
            clients.push(c);
        }
    }
    assert_eq!(
        server_live(&rt, http),
        room_size * per_person,
        "every allocation is live"
    );
    drop(sockets);
    shutdown.cancel();
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), served).await });
}

/// Live allocations, read from /metrics.
fn server_live(rt: &tokio::runtime::Runtime, http: std::net::SocketAddr) -> usize {
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines()
            .filter(|l| l.starts_with("natpass_allocations{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .sum()
    })
}
