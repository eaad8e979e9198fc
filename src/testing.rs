//! Support for tests, benchmarks and fuzz targets that drive the sans-IO core without
//! sockets: relay sockets that only record what the core asked for, and a core set up over
//! real relay resources (port pool, quotas, policy) with fixed seeds.

use crate::auth::Credentials;
use crate::proto::{Core, CoreConfig, RelayAddr, RelayOwner, RelaySockets};
use crate::relay::policy::PeerPolicy;
use crate::relay::ports::PortPool;
use crate::relay::quota::{QuotaLimits, Quotas};
use crate::relay::{ShardResources, Shared};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Relay sockets that only record what the core asked for.
#[derive(Debug, Default)]
pub struct FakeRelays {
    /// Bound sockets by handle.
    pub bound: HashMap<usize, (SocketAddr, RelayOwner)>,
    /// Last handle given out.
    pub next: usize,
    /// Ports whose bind fails (as if another program held them).
    pub busy_ports: HashSet<u16>,
}

impl RelaySockets for FakeRelays {
    fn bind(&mut self, addr: SocketAddr, owner: RelayOwner) -> std::io::Result<usize> {
        if self.busy_ports.contains(&addr.port()) {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "busy"));
        }
        self.next += 1;
        self.bound.insert(self.next, (addr, owner));
        Ok(self.next)
    }

    fn release(&mut self, handle: usize) {
        self.bound.remove(&handle);
    }
}

impl FakeRelays {
    /// The owner of the socket bound at `relay`.
    pub fn owner_of(&self, relay: SocketAddr) -> Option<RelayOwner> {
        self.bound
            .values()
            .find(|(a, _)| *a == relay)
            .map(|(_, o)| *o)
    }
}

/// What a test core is built from.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Relay addresses (also this server's own relay IPs for the policy).
    pub relays: Vec<RelayAddr>,
    /// Operator allow ranges.
    pub allow: Vec<IpNet>,
    /// This server's listeners (never valid peers).
    pub listeners: Vec<SocketAddr>,
    /// Relay port range.
    pub ports: (u16, u16),
    /// Quotas.
    pub limits: QuotaLimits,
    /// Protocol settings (`relays` is filled in from [`Setup::relays`]).
    pub cfg: CoreConfig,
    /// Credentials.
    pub credentials: Credentials,
}

impl Default for Setup {
    fn default() -> Self {
        let ip: IpAddr = "192.0.2.100".parse().expect("literal");
        Self {
            relays: vec![RelayAddr {
                bind: ip,
                advertise: ip,
            }],
            allow: vec![],
            listeners: vec!["192.0.2.1:3478".parse().expect("literal")],
            ports: (50000, 50999),
            limits: QuotaLimits::default(),
            cfg: CoreConfig::default(),
            credentials: Credentials::new("natpass", 3600),
        }
    }
}

/// A core over fresh relay resources, with fixed seeds; returns the shared resources too so
/// a test can check that ports and quotas are given back.
pub fn core(setup: Setup, now: Instant, unix_now: u64) -> (Core<ShardResources>, Arc<Shared>) {
    let mut own: Vec<IpAddr> = Vec::new();
    for r in &setup.relays {
        own.extend([r.bind, r.advertise]);
    }
    let policy = PeerPolicy::new(setup.allow, vec![], own, setup.listeners);
    let binds: Vec<IpAddr> = setup.relays.iter().map(|r| r.bind).collect();
    let shared = Arc::new(Shared::new(
        Quotas::new(setup.limits),
        PortPool::new(&binds, setup.ports.0..=setup.ports.1),
    ));
    let resources = ShardResources::new(shared.clone(), policy, setup.relays.clone());
    let cfg = CoreConfig {
        relays: setup.relays,
        ..setup.cfg
    };
    let core = Core::new(
        cfg,
        resources,
        setup.credentials,
        [3; 32],
        [9; 32],
        now,
        unix_now,
    );
    (core, shared)
}
