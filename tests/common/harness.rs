//! The sans-IO core under fake time: fake relay sockets, fixed seeds, known credentials.

#![allow(unused_imports)]
use super::prelude::*;
use super::*;

pub const REALM: &str = "natpass";
pub const UNIX0: u64 = 1_800_000_000;

pub use natpass::testing::FakeRelays;

pub struct Options {
    pub relays: Vec<RelayAddr>,
    pub allow: Vec<&'static str>,
    pub listeners: Vec<SocketAddr>,
    pub ports: (u16, u16),
    pub limits: QuotaLimits,
    pub cfg: CoreConfig,
}

impl Default for Options {
    fn default() -> Self {
        let ip: IpAddr = "192.0.2.100".parse().unwrap();
        Self {
            relays: vec![RelayAddr {
                bind: ip,
                advertise: ip,
            }],
            allow: vec![],
            listeners: vec![server_addr()],
            ports: (50000, 50999),
            limits: QuotaLimits::default(),
            cfg: CoreConfig::default(),
        }
    }
}

pub fn server_addr() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}

pub fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: client.parse().unwrap(),
        server: server_addr(),
    }
}

pub struct Harness {
    pub core: Core<ShardResources>,
    pub relays: FakeRelays,
    pub now: Instant,
    pub shared: Arc<Shared>,
    pub out: Vec<Transmit>,
}

pub fn credentials() -> Credentials {
    let mut c = Credentials::new(REALM, 3600);
    c.add_user("alice", "alicepw");
    c.add_user("bob", "bobpw");
    c.add_user_key(
        "carol",
        natpass::auth::long_term_key("carol", REALM, "carolpw"),
    );
    c.add_secret(Secret::new("old-secret"));
    c.add_secret(Secret::new("new-secret"));
    c
}

impl Harness {
    pub fn new(o: Options) -> Self {
        let now = Instant::now();
        let setup = natpass::testing::Setup {
            relays: o.relays,
            allow: o.allow.iter().map(|s| parse_net(s).unwrap()).collect(),
            listeners: o.listeners,
            ports: o.ports,
            limits: o.limits,
            cfg: o.cfg,
            credentials: credentials(),
        };
        let (core, shared) = natpass::testing::core(setup, now, UNIX0);
        Self {
            core,
            relays: FakeRelays::default(),
            now,
            shared,
            out: Vec::new(),
        }
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.core.handle_timeout(self.now, &mut self.relays);
    }

    /// Send bytes from a client; returns (replies, forward).
    pub fn send(&mut self, ft: FiveTuple, data: &[u8]) -> (Vec<Vec<u8>>, Option<Forward>) {
        self.out.clear();
        let fwd = self
            .core
            .handle_client(self.now, ft, data, &mut self.relays, &mut self.out);
        for t in &self.out {
            assert_eq!(t.ft, ft, "replies go back on the request's 5-tuple");
        }
        (self.out.drain(..).map(|t| t.data).collect(), fwd)
    }

    /// Send a request and return its single reply.
    pub fn ask(&mut self, ft: FiveTuple, data: &[u8]) -> Vec<u8> {
        let (mut r, _) = self.send(ft, data);
        assert_eq!(r.len(), 1, "expected exactly one reply");
        r.pop().unwrap()
    }

    pub fn peer(&mut self, relay: SocketAddr, peer: &str, payload: &[u8]) -> PeerRoute {
        let owner = self.relays.owner_of(relay).expect("relay bound");
        self.core
            .handle_peer(self.now, owner, peer.parse().unwrap(), payload)
    }

    /// The 401 dance: returns the nonce.
    pub fn nonce(&mut self, ft: FiveTuple) -> String {
        let r = self.ask(ft, &allocate_plain());
        let m = Message::from_bytes(&r).unwrap();
        assert_eq!(error_code(&r), Some(401));
        m.attribute::<Nonce>().unwrap().nonce().to_owned()
    }

    /// Allocate with user/password; returns the relayed address.
    pub fn allocate(&mut self, ft: FiveTuple, user: &str, pass: &str) -> SocketAddr {
        let nonce = self.nonce(ft);
        let r = self.ask(
            ft,
            &signed(ALLOCATE, user, pass, &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
            }),
        );
        assert_eq!(
            error_code(&r),
            None,
            "allocate failed: {:?}",
            error_code(&r)
        );
        relayed(&r)
    }
}
