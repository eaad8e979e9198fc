//! Allocations (RFC 8656 §7; RFC 6156 for IPv6 and dual-stack): Allocate (§7.2), Refresh and
//! deletion with LIFETIME 0 (§7.3), EVEN-PORT / RESERVATION-TOKEN pairs (§7.2, §14.6,
//! §14.9), REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §14.1, §14.2,
//! RFC 6156 §4), and the end of an allocation, whatever ends it.
//!
//! Lifetimes: below the default (600 s) become the default, above the maximum (3600 s) the
//! maximum. Quotas and relay ports are taken from [`RelayResources`] and always given back.

use super::authenticate::Auth;
use super::channel::Channel;
use super::core::{Core, Request};
use super::error::TurnError;
use super::message::{optional, required};
use super::permission::Permission;
use super::relayed_address::Bound;
use super::reply::Reply;
use super::resources::{PortChoice, QuotaOwner, RelayOwner, RelayResources, RelaySockets};
use super::stats::EndReason;
use super::timers::Timer;
use super::transactions::CachedAnswer;
use super::{Family, FiveTuple};
use crate::auth::LongTermKey;
use rand::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use stun_types::AddressFamily;
use stun_types::attribute::{ErrorCode, XorMappedAddress};
use stun_types::message::Message;
use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, EvenPort, Lifetime, RequestedAddressFamily,
    RequestedTransport, ReservationToken, XorRelayedAddress,
};

/// How long a reserved port waits for its RESERVATION-TOKEN (RFC 8656 §7.2: about 30 s).
const RESERVATION_TTL: Duration = Duration::from_secs(30);

/// A relay socket of an allocation.
#[derive(Debug)]
pub(crate) struct Relay {
    pub handle: usize,
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
}

/// One allocation.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub serial: u32,
    pub ft: FiveTuple,
    pub username: Box<str>,
    pub quota_id: Box<str>,
    pub key: LongTermKey,
    /// The second half of an EVEN-PORT pair (counted once against user and IP).
    pub pair_member: bool,
    /// Relayed addresses by [`Family`].
    pub relays: [Option<Relay>; 2],
    pub expires: Instant,
    pub perms: Vec<Permission>,
    pub channels: Vec<Channel>,
    pub last: Option<CachedAnswer>,
    pub span: tracing::Span,
    pub created: Instant,
    /// Bytes relayed by Send and Data indications (channel traffic is counted on its route).
    pub bytes_to_peer: u64,
    pub bytes_to_client: u64,
}

impl Allocation {
    /// The relay socket that reaches `peer` (its family).
    pub fn relay_for(&self, peer: &SocketAddr) -> Option<&Relay> {
        self.relays[Family::of(peer.ip()).index()].as_ref()
    }

    fn quota_owner(&self) -> QuotaOwner<'_> {
        if self.pair_member {
            QuotaOwner::PairMember
        } else {
            QuotaOwner::User {
                user: &self.quota_id,
                ip: self.ft.client.ip(),
            }
        }
    }
}

/// An Allocate request's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateRequest {
    /// REQUESTED-ADDRESS-FAMILY (IPv4 when absent).
    pub family: Family,
    /// ADDITIONAL-ADDRESS-FAMILY IPv6: a dual-stack allocation.
    pub also_v6: bool,
    /// EVEN-PORT (with or without the R bit).
    pub port: PortChoice,
    /// RESERVATION-TOKEN: take the port held for it.
    pub token: Option<u64>,
    /// LIFETIME, if asked for (a malformed one is 400, judged after the address family).
    pub lifetime: Result<Option<u32>, TurnError>,
}

impl AllocateRequest {
    /// Read and check the attributes (400, 442 for a transport other than UDP).
    pub fn decode(msg: &Message<'_>) -> Result<Self, TurnError> {
        let transport = required::<RequestedTransport>(msg, "REQUESTED-TRANSPORT")?;
        if transport.protocol() != RequestedTransport::UDP {
            return Err(TurnError::UnsupportedTransport);
        }
        let requested = optional::<RequestedAddressFamily>(msg, "REQUESTED-ADDRESS-FAMILY")?;
        let additional = optional::<AdditionalAddressFamily>(msg, "ADDITIONAL-ADDRESS-FAMILY")?;
        let even = optional::<EvenPort>(msg, "EVEN-PORT")?;
        let token = optional::<ReservationToken>(msg, "RESERVATION-TOKEN")?;
        if requested.is_some() && additional.is_some() {
            return Err(TurnError::BadRequest("both address family attributes"));
        }
        if token.is_some() && (even.is_some() || requested.is_some() || additional.is_some()) {
            return Err(TurnError::BadRequest(
                "RESERVATION-TOKEN with other port attributes",
            ));
        }
        if additional
            .as_ref()
            .is_some_and(|a| a.family() != AddressFamily::IPV6)
        {
            return Err(TurnError::BadRequest(
                "ADDITIONAL-ADDRESS-FAMILY other than IPv6",
            ));
        }
        let lifetime = optional::<Lifetime>(msg, "LIFETIME").map(|l| l.map(|l| l.seconds()));
        Ok(Self {
            family: match requested.map(|r| r.family()) {
                Some(AddressFamily::IPV6) => Family::V6,
                _ => Family::V4,
            },
            also_v6: additional.is_some(),
            port: match even.map(|e| e.requested()) {
                None => PortChoice::Any,
                Some(false) => PortChoice::Even,
                Some(true) => PortChoice::EvenPair,
            },
            token: token.map(|t| t.token()),
            lifetime,
        })
    }
}

/// A Refresh request's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    /// LIFETIME (0 deletes); the default when absent.
    pub lifetime: Option<u32>,
    /// REQUESTED-ADDRESS-FAMILY: the family the client believes is relayed (443 if not).
    pub family: Option<Family>,
}

impl RefreshRequest {
    /// Read the attributes (400 when malformed).
    pub fn decode(msg: &Message<'_>) -> Result<Self, TurnError> {
        let lifetime = optional::<Lifetime>(msg, "LIFETIME")?.map(|l| l.seconds());
        let family =
            optional::<RequestedAddressFamily>(msg, "REQUESTED-ADDRESS-FAMILY")?.map(|f| {
                if f.family() == AddressFamily::IPV6 {
                    Family::V6
                } else {
                    Family::V4
                }
            });
        Ok(Self { lifetime, family })
    }
}

impl<R: RelayResources> Core<R> {
    fn lifetime(&self, asked: Option<u32>) -> u32 {
        asked
            .unwrap_or(self.cfg.default_lifetime)
            .clamp(self.cfg.default_lifetime, self.cfg.max_lifetime)
    }

    /// Allocate (RFC 8656 §7.2).
    pub(crate) fn allocate(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        ask: AllocateRequest,
        auth: &Auth,
        relays: &mut dyn RelaySockets,
    ) -> Result<Reply, TurnError> {
        if ask.token.is_none() && !self.has_family(ask.family) {
            return Err(TurnError::AddressFamilyNotSupported);
        }
        let lifetime = self.lifetime(ask.lifetime.clone()?);
        if self.res.draining() {
            // RFC 8489 §10: the alternate is of the request's own address family; several
            // are spread over clients by their address.
            let client = req.ft.client;
            let same: Vec<_> = self
                .cfg
                .alternate_servers
                .iter()
                .filter(|a| a.is_ipv4() == client.is_ipv4())
                .collect();
            if !same.is_empty() {
                let pick = spread(client) % same.len();
                return Err(TurnError::TryAlternate(*same[pick]));
            }
            return Err(TurnError::InsufficientCapacity("draining"));
        }
        // An RTP/RTCP pair (EVEN-PORT R + RESERVATION-TOKEN) counts once against the user's
        // and the IP's quota; the global cap counts both.
        let quota = match ask.token {
            Some(_) => QuotaOwner::PairMember,
            None => QuotaOwner::User {
                user: &auth.quota_id,
                ip: req.ft.client.ip(),
            },
        };
        if let Err(q) = self.res.acquire_quota(quota) {
            if let Some(more) = self.quota_notice.due(now) {
                tracing::info!(five_tuple = %req.ft, user = %auth.quota_id, reason = %q, more, "allocation refused (486): quota");
            }
            return Err(q.into());
        }
        let key = self.allocs.vacant_entry().key();
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        let owner = RelayOwner { alloc: key, serial };
        let Some(bound) = self.bind_relays(now, &ask, owner, relays) else {
            self.res.release_quota(quota);
            return Err(TurnError::InsufficientCapacity("no relay port"));
        };
        let token_out = bound.reserved.map(|port| {
            let t: u64 = self.rng.random();
            let ip = bound.relays.iter().flatten().next().map(|r| r.bind.ip());
            if let Some(ip) = ip {
                self.res
                    .hold_reservation(t, ip, port, now + RESERVATION_TTL);
            }
            t
        });
        let reply = allocate_reply(req, &bound, lifetime, token_out);
        self.insert_allocation(
            now,
            req.ft,
            auth,
            ask.token.is_some(),
            bound.relays,
            lifetime,
            serial,
        );
        Ok(reply)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_allocation(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        auth: &Auth,
        pair_member: bool,
        relays: [Option<Relay>; 2],
        lifetime: u32,
        serial: u32,
    ) {
        let expires = now + Duration::from_secs(lifetime.into());
        let span = tracing::debug_span!("allocation", five_tuple = %ft, user = %auth.username);
        span.in_scope(|| {
            let relayed: Vec<_> = relays.iter().flatten().map(|r| r.advertise).collect();
            tracing::debug!(relay = ?relayed, lifetime, "allocation created");
        });
        let family = relays
            .iter()
            .flatten()
            .next()
            .map_or(Family::V4, |r| Family::of(r.bind.ip()));
        let key = self.allocs.insert(Allocation {
            serial,
            ft,
            username: auth.username.clone(),
            quota_id: auth.quota_id.clone(),
            key: auth.key,
            pair_member,
            relays,
            expires,
            perms: Vec::new(),
            channels: Vec::new(),
            last: None,
            span,
            created: now,
            bytes_to_peer: 0,
            bytes_to_client: 0,
        });
        self.by_ft.insert(ft, key);
        self.timers.push(expires, Timer::Allocation { key, serial });
        self.stats.allocations_created += 1;
        self.stats.allocations_live[ft.transport.index()][family.index()] += 1;
    }

    /// End an allocation: sockets, ports, quota, routes, gauges.
    pub(crate) fn free(&mut self, key: usize, relays: &mut dyn RelaySockets, why: EndReason) {
        let Some(a) = self.allocs.try_remove(key) else {
            return;
        };
        self.by_ft.remove(&a.ft);
        let owner = RelayOwner {
            alloc: key,
            serial: a.serial,
        };
        for c in &a.channels {
            if let Some(r) = self.to_peer.remove(&(a.ft, c.number)) {
                if self.cfg.offload {
                    self.offload.extend(super::permission::offload(
                        owner, a.ft, c.number, r.relay, c.peer, None,
                    ));
                }
            }
            self.to_client.remove(&(owner, c.peer));
        }
        for r in a.relays.iter().flatten() {
            self.release_relay(r, relays);
        }
        self.res.release_quota(a.quota_owner());
        self.stats.ended(why);
        if let Some(r) = a.relays.iter().flatten().next() {
            self.stats.allocations_live[a.ft.transport.index()][Family::of(r.bind.ip()).index()] -=
                1;
        }
        self.stats.permissions_live -= a.perms.len() as i64;
        self.stats.channels_live -= a.channels.len() as i64;
        a.span
            .in_scope(|| tracing::debug!(reason = why.name(), "allocation ended"));
    }

    /// Refresh (RFC 8656 §7.3): LIFETIME 0 deletes.
    pub(crate) fn refresh(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        key: usize,
        ask: RefreshRequest,
        relays: &mut dyn RelaySockets,
    ) -> Result<Reply, TurnError> {
        if let Some(f) = ask.family {
            if self.allocs[key].relays[f.index()].is_none() {
                return Err(TurnError::PeerAddressFamilyMismatch);
            }
        }
        let mut r = Reply::success(req.msg);
        if ask.lifetime == Some(0) {
            self.free(key, relays, EndReason::Deleted);
            r.add(&Lifetime::new(0));
            return Ok(r);
        }
        let secs = self.lifetime(ask.lifetime);
        let a = &mut self.allocs[key];
        a.expires = now + Duration::from_secs(secs.into());
        let (expires, serial) = (a.expires, a.serial);
        self.timers.push(expires, Timer::Allocation { key, serial });
        // The fast path's deadlines include the allocation's end: move them with it.
        self.offload_channels(key, None);
        r.add(&Lifetime::new(secs));
        Ok(r)
    }
}

fn allocate_reply(
    req: &Request<'_, '_>,
    bound: &Bound,
    lifetime: u32,
    token: Option<u64>,
) -> Reply {
    let txid = req.msg.transaction_id();
    let mut r = Reply::success(req.msg);
    for relay in bound.relays.iter().flatten() {
        r.add(&XorRelayedAddress::new(relay.advertise, txid));
    }
    r.add(&Lifetime::new(lifetime));
    r.add(&XorMappedAddress::new(req.ft.client, txid));
    if let Some(t) = token {
        r.add(&ReservationToken::new(t));
    }
    if bound.v6_refused {
        let code = ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED;
        if let Ok(code) = ErrorCode::new(code, "Address Family not Supported") {
            r.add(&AddressErrorCode::new(AddressFamily::IPV6, code));
        }
    }
    r
}

/// A number from a client address, to spread clients over several alternates.
fn spread(client: std::net::SocketAddr) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = match client.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    for b in bytes.iter().chain(&client.port().to_be_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::test_support::{code, core, exchange, request};
    use crate::testing::FakeRelays;
    use stun_types::message::MessageWriteExt;
    use turn_types::message::ALLOCATE;

    fn decode(
        attrs: impl FnOnce(&mut stun_types::message::MessageWriteVec),
    ) -> Result<AllocateRequest, TurnError> {
        let bytes = request(ALLOCATE, "", |w, _| attrs(w));
        AllocateRequest::decode(&Message::from_bytes(&bytes).unwrap())
    }

    fn udp(w: &mut stun_types::message::MessageWriteVec) {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    }

    #[test]
    fn allocate_needs_requested_transport_and_only_udp_is_supported() {
        assert_eq!(
            decode(|_| {}),
            Err(TurnError::BadRequest("REQUESTED-TRANSPORT"))
        );
        assert_eq!(
            decode(|w| w.add_attribute(&RequestedTransport::new(6)).unwrap()),
            Err(TurnError::UnsupportedTransport)
        );
        let ask = decode(udp).unwrap();
        assert_eq!(
            (ask.family, ask.also_v6, ask.port, ask.token),
            (Family::V4, false, PortChoice::Any, None)
        );
    }

    #[test]
    fn contradictory_family_and_reservation_attributes_are_400() {
        let both = decode(|w| {
            udp(w);
            w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
                .unwrap();
            w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
                .unwrap();
        });
        assert!(matches!(both, Err(TurnError::BadRequest(_))));
        let token_and_even = decode(|w| {
            udp(w);
            w.add_attribute(&ReservationToken::new(7)).unwrap();
            w.add_attribute(&EvenPort::new(true)).unwrap();
        });
        assert!(matches!(token_and_even, Err(TurnError::BadRequest(_))));
        let pair = decode(|w| {
            udp(w);
            w.add_attribute(&EvenPort::new(true)).unwrap();
            w.add_attribute(&Lifetime::new(1200)).unwrap();
        })
        .unwrap();
        assert_eq!(
            (pair.port, pair.lifetime),
            (PortChoice::EvenPair, Ok(Some(1200)))
        );
    }

    /// Allocate twice (the 401, then signed) and return the answer.
    fn allocate(
        c: &mut Core<crate::proto::test_support::FakeResources>,
        now: Instant,
        lifetime: Option<u32>,
    ) -> Vec<u8> {
        let mut relays = FakeRelays::default();
        let attrs = |w: &mut stun_types::message::MessageWriteVec, _| {
            udp(w);
            if let Some(l) = lifetime {
                w.add_attribute(&Lifetime::new(l)).unwrap();
            }
        };
        exchange(c, now, &mut relays, ALLOCATE, attrs).1
    }

    #[test]
    fn lifetime_is_clamped_between_the_default_and_the_maximum() {
        for (asked, granted) in [
            (Some(1), 600),
            (None, 600),
            (Some(1800), 1800),
            (Some(99_999), 3600),
        ] {
            let now = Instant::now();
            let mut c = core(1, now);
            let answer = allocate(&mut c, now, asked);
            let m = Message::from_bytes(&answer).unwrap();
            assert_eq!(
                m.attribute::<Lifetime>().unwrap().seconds(),
                granted,
                "{asked:?}"
            );
        }
    }

    #[test]
    fn a_full_quota_gives_486_is_logged_at_info_and_takes_no_port() {
        let now = Instant::now();
        let mut c = core(0, now);
        let log = crate::proto::test_support::logged(|| {
            assert_eq!(code(&allocate(&mut c, now, None)), Some(486));
        });
        assert!(
            log.contains(" INFO ") && log.contains("allocation refused (486)"),
            "{log}"
        );
        assert!(c.resources().ports.is_empty());
        assert_eq!(c.stats().allocate_errors[10], 1, "counted under 486");
    }

    #[test]
    fn a_draining_server_refuses_new_allocations_with_508() {
        let now = Instant::now();
        let mut c = core(5, now);
        c.resources_mut().draining = true;
        assert_eq!(code(&allocate(&mut c, now, None)), Some(508));
        assert_eq!(c.resources().quota_left, 5, "nothing taken");
    }

    #[test]
    fn a_draining_server_with_alternates_answers_300_with_one_of_the_clients_family() {
        use stun_types::attribute::AlternateServer;
        use stun_types::message::Message;
        let now = Instant::now();
        let v4: std::net::SocketAddr = "192.0.2.7:3478".parse().unwrap();
        let v6: std::net::SocketAddr = "[2001:db8::7]:3478".parse().unwrap();
        let mut c = crate::proto::test_support::core_with(5, now, |cfg| {
            cfg.alternate_servers = vec![v6, v4];
        });
        c.resources_mut().draining = true;
        let answer = allocate(&mut c, now, None);
        assert_eq!(code(&answer), Some(300));
        let msg = Message::from_bytes(&answer).unwrap();
        let alt: AlternateServer = msg.attribute().expect("ALTERNATE-SERVER");
        assert_eq!(alt.server(), v4, "the request came over IPv4");
        assert!(
            msg.has_attribute(stun_types::attribute::AttributeType::new(0x0008)),
            "signed: the request was authenticated"
        );
        assert_eq!(c.resources().quota_left, 5, "nothing taken");
        // Not draining: the alternates change nothing.
        c.resources_mut().draining = false;
        assert_eq!(code(&allocate(&mut c, now, None)), None);
    }

    #[test]
    fn the_address_family_is_judged_before_a_malformed_lifetime() {
        use stun_types::attribute::{AttributeType, RawAttribute};
        let now = Instant::now();
        let mut c = core(1, now);
        let mut relays = FakeRelays::default();
        let attrs = |w: &mut stun_types::message::MessageWriteVec, _| {
            udp(w);
            w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
                .unwrap();
            let short = RawAttribute::new(AttributeType::new(0x000D), &[0, 1]);
            w.add_attribute(&short).unwrap();
        };
        let (_, answer) = exchange(&mut c, now, &mut relays, ALLOCATE, attrs);
        assert_eq!(code(&answer), Some(440), "no IPv6 relay: 440 first");
    }
}
