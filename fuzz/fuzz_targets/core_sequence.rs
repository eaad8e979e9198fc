//! The sans-IO core fed arbitrary client messages, peer datagrams and time, starting from a
//! real authenticated allocation so signed paths are reachable by mutation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use natpass::auth::{Credentials, Secret};
use natpass::proto::{FiveTuple, RelayOwner, Transport};
use natpass::testing::{FakeRelays, Setup};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut credentials = Credentials::new("natpass", 3600);
    credentials.add_user("alice", "pw");
    credentials.add_secret(Secret::new("s"));
    let mut now = Instant::now();
    let setup = Setup { credentials, ports: (50000, 50063), ..Setup::default() };
    let (mut core, shared) = natpass::testing::core(setup, now, 1_800_000_000);
    let mut relays = FakeRelays::default();
    let mut out = Vec::new();
    // Chunks: [kind, len, bytes...]
    let mut rest = data;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        let ft = FiveTuple {
            transport: if kind & 1 == 0 { Transport::Udp } else { Transport::Tcp },
            client: SocketAddr::new("203.0.113.9".parse().unwrap(), 4000 + u16::from(kind >> 5)),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        match kind % 4 {
            0 | 1 => {
                out.clear();
                if let Some(f) = core.handle_client(now, ft, body, &mut relays, &mut out) {
                    assert!(f.range.end <= body.len());
                }
            }
            2 => {
                let owners: Vec<RelayOwner> = relays.bound.values().map(|(_, o)| *o).collect();
                if let Some(o) = owners.first() {
                    let _ = core.handle_peer(now, *o, "8.8.8.8:9".parse().unwrap(), body);
                }
            }
            _ => {
                now += Duration::from_secs(len as u64 * 10);
                core.handle_timeout(now, &mut relays);
            }
        }
        assert_eq!(shared.ports.in_use(), relays.bound.len());
    }
});
