//! The sans-IO core fed arbitrary client messages, peer datagrams and time, starting from a
//! real authenticated allocation so signed paths are reachable by mutation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use natpass::auth::{Credentials, Secret};
use natpass::proto::{Core, CoreConfig, FiveTuple, RelayAddr, RelayOwner, RelaySockets, Shared, Transport};
use natpass::relay::policy::PeerPolicy;
use natpass::relay::ports::PortPool;
use natpass::relay::quota::{QuotaLimits, Quotas};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Fake(HashMap<usize, (SocketAddr, RelayOwner)>, usize);
impl RelaySockets for Fake {
    fn bind(&mut self, a: SocketAddr, o: RelayOwner) -> std::io::Result<usize> {
        self.1 += 1;
        self.0.insert(self.1, (a, o));
        Ok(self.1)
    }
    fn release(&mut self, h: usize) {
        self.0.remove(&h);
    }
}

fuzz_target!(|data: &[u8]| {
    let ip = "192.0.2.100".parse().unwrap();
    let mut creds = Credentials::new("natpass", 3600);
    creds.add_user("alice", "pw");
    creds.add_secret(Secret::new("s"));
    let shared = Arc::new(Shared::new(
        creds,
        PeerPolicy::new(vec![], vec![], vec![ip], vec!["192.0.2.1:3478".parse().unwrap()]),
        Quotas::new(QuotaLimits::default()),
        PortPool::new(&[ip], 50000..=50063),
        [1; 32],
    ));
    let mut now = Instant::now();
    let cfg = CoreConfig { relays: vec![RelayAddr { bind: ip, advertise: ip }], ..CoreConfig::default() };
    let mut core = Core::new(cfg, shared.clone(), [2; 32], now, 1_800_000_000);
    let mut relays = Fake::default();
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
                let owners: Vec<RelayOwner> = relays.0.values().map(|(_, o)| *o).collect();
                if let Some(o) = owners.first() {
                    let _ = core.handle_peer(now, *o, "8.8.8.8:9".parse().unwrap(), body);
                }
            }
            _ => {
                now += Duration::from_secs(len as u64 * 10);
                core.handle_timeout(now, &mut relays);
            }
        }
        assert_eq!(shared.ports.in_use(), relays.0.len());
    }
});
