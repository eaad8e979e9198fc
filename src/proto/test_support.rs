//! Unit-test support inside the core: resources as a plain struct (no relay/, no locks — the
//! trait is all the core needs), and requests signed with stun-types' own integrity code.

use super::resources::{IpVerdict, PortChoice, QuotaExceeded, QuotaOwner, RelayResources};
use super::{Core, CoreConfig, FiveTuple, RelayAddr, Transport};
use crate::auth::Credentials;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use stun_types::attribute::{Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageIntegrityCredentials, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId,
};

pub const RELAY_IP: [u8; 4] = [192, 0, 2, 100];
pub const UNIX0: u64 = 1_800_000_000;

/// Everything in plain fields.
#[derive(Debug, Default)]
pub struct FakeResources {
    pub draining: bool,
    pub quota_left: usize,
    pub next_port: u16,
    pub ports: Vec<u16>,
    pub holds: HashMap<u64, (IpAddr, u16, Instant)>,
    pub denied: Vec<IpAddr>,
}

impl RelayResources for FakeResources {
    fn draining(&self) -> bool {
        self.draining
    }
    fn acquire_quota(&mut self, _: QuotaOwner<'_>) -> Result<(), QuotaExceeded> {
        if self.quota_left == 0 {
            return Err(QuotaExceeded::User);
        }
        self.quota_left -= 1;
        Ok(())
    }
    fn release_quota(&mut self, _: QuotaOwner<'_>) {
        self.quota_left += 1;
    }
    fn reserve_port(&mut self, _: IpAddr, _: u32, _: PortChoice) -> Option<u16> {
        self.next_port += 2;
        self.ports.push(self.next_port);
        Some(self.next_port)
    }
    fn release_port(&mut self, _: IpAddr, port: u16) {
        self.ports.retain(|p| *p != port);
    }
    fn hold_reservation(&mut self, token: u64, ip: IpAddr, port: u16, expires: Instant) {
        self.holds.insert(token, (ip, port, expires));
    }
    fn take_reservation(&mut self, token: u64, now: Instant) -> Option<(IpAddr, u16)> {
        self.holds
            .remove(&token)
            .filter(|h| h.2 > now)
            .map(|h| (h.0, h.1))
    }
    fn sweep_reservations(&mut self, now: Instant) {
        self.holds.retain(|_, h| h.2 > now);
    }
    fn check_peer_ip(&self, ip: IpAddr) -> IpVerdict {
        if self.denied.contains(&ip) {
            IpVerdict::Deny
        } else {
            IpVerdict::Allow
        }
    }
    fn is_listener(&self, _: SocketAddr) -> bool {
        false
    }
    fn own_relay_port_allocated(&self, _: SocketAddr) -> bool {
        false
    }
}

/// A core with user alice/pw over [`FakeResources`] with `quota` allocations.
pub fn core(quota: usize, now: Instant) -> Core<FakeResources> {
    core_with(quota, now, |_| {})
}

/// [`core`] with its configuration changed by `f`.
pub fn core_with(
    quota: usize,
    now: Instant,
    f: impl FnOnce(&mut CoreConfig),
) -> Core<FakeResources> {
    let mut creds = Credentials::new("natpass", 3600);
    creds.add_user("alice", "pw");
    let mut cfg = CoreConfig {
        relays: vec![RelayAddr {
            bind: RELAY_IP.into(),
            advertise: RELAY_IP.into(),
        }],
        ..CoreConfig::default()
    };
    f(&mut cfg);
    let res = FakeResources {
        quota_left: quota,
        next_port: 50_000,
        ..FakeResources::default()
    };
    Core::new(cfg, res, creds, [1; 32], [2; 32], now, UNIX0)
}

pub fn client() -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: "203.0.113.9:4000".parse().expect("literal"),
        server: "192.0.2.1:3478".parse().expect("literal"),
    }
}

/// A request with the attributes `attrs` adds; signed as alice with `nonce` unless empty.
pub fn request(
    method: Method,
    nonce: &str,
    attrs: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    request_as("alice", "pw", method, nonce, attrs)
}

/// [`request`] signed as `user` with `password`.
pub fn request_as(
    user: &str,
    password: &str,
    method: Method,
    nonce: &str,
    attrs: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    let mut w = Message::builder_request(method, MessageWriteVec::new());
    let t = w.transaction_id();
    attrs(&mut w, t);
    if !nonce.is_empty() {
        w.add_attribute(&Username::new(user).expect("valid"))
            .expect("fits");
        w.add_attribute(&Realm::new("natpass").expect("valid"))
            .expect("fits");
        w.add_attribute(&Nonce::new(nonce).expect("valid"))
            .expect("fits");
        let c = LongTermKeyCredentials::new(user.into(), password.into(), "natpass".into());
        w.add_message_integrity(
            &MessageIntegrityCredentials::LongTerm(c),
            IntegrityAlgorithm::Sha1,
        )
        .expect("fits");
    }
    w.finish()
}

/// Send `method` unsigned from [`client`] and return the NONCE of the 401.
pub fn nonce_for(
    c: &mut Core<FakeResources>,
    now: Instant,
    relays: &mut crate::testing::FakeRelays,
    method: Method,
    attrs: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> String {
    let mut out = Vec::new();
    c.handle_client(now, client(), &request(method, "", attrs), relays, &mut out);
    nonce_of(&out.pop().expect("a challenge").data)
}

/// The 401 round trip, then `method` signed with its nonce: (nonce, the answer).
pub fn exchange(
    c: &mut Core<FakeResources>,
    now: Instant,
    relays: &mut crate::testing::FakeRelays,
    method: Method,
    attrs: impl Fn(&mut MessageWriteVec, TransactionId),
) -> (String, Vec<u8>) {
    let nonce = nonce_for(c, now, relays, method, &attrs);
    let mut out = Vec::new();
    c.handle_client(
        now,
        client(),
        &request(method, &nonce, &attrs),
        relays,
        &mut out,
    );
    (nonce, out.pop().expect("an answer").data)
}

/// REQUESTED-TRANSPORT UDP, what every Allocate carries.
pub fn udp_transport(w: &mut MessageWriteVec, _: TransactionId) {
    let udp = turn_types::attribute::RequestedTransport::UDP;
    w.add_attribute(&turn_types::attribute::RequestedTransport::new(udp))
        .expect("fits");
}

/// The error code of an answer, if it is an error.
pub fn code(answer: &[u8]) -> Option<u16> {
    let m = Message::from_bytes(answer).ok()?;
    m.attribute::<stun_types::attribute::ErrorCode>()
        .ok()
        .map(|e| e.code())
}

/// The NONCE of a 401/438.
pub fn nonce_of(answer: &[u8]) -> String {
    let m = Message::from_bytes(answer).expect("an answer");
    m.attribute::<Nonce>().expect("a nonce").nonce().to_owned()
}

/// Log lines written while `f` runs (fmt layer, INFO and above, no ANSI).
pub fn logged(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || out.clone())
        .finish();
    tracing::subscriber::with_default(sub, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}
