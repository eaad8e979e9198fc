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
use super::reply::Reply;
use super::resources::{
    PortChoice, QuotaOwner, RelayAddr, RelayOwner, RelayResources, RelaySockets,
};
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
    /// LIFETIME, if asked for.
    pub lifetime: Option<u32>,
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
        let lifetime = optional::<Lifetime>(msg, "LIFETIME")?.map(|l| l.seconds());
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

/// Relays bound for a new allocation.
struct Bound {
    relays: [Option<Relay>; 2],
    /// The port held for the RESERVATION-TOKEN we hand out (EVEN-PORT R).
    reserved: Option<u16>,
    /// IPv6 was asked for in addition but is not available (ADDRESS-ERROR-CODE 440).
    v6_refused: bool,
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
        let lifetime = self.lifetime(ask.lifetime);
        if self.res.draining() {
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
            tracing::debug!(five_tuple = %req.ft, user = %auth.username, reason = %q, "allocation refused: quota");
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

    /// Bind the relay sockets an Allocate asks for, or none (everything given back).
    fn bind_relays(
        &mut self,
        now: Instant,
        ask: &AllocateRequest,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<Bound> {
        let (first, reserved) = match ask.token {
            Some(t) => (self.bind_reserved(t, owner, relays, now)?, None),
            None => self.bind_relay(ask.family, ask.port, owner, relays)?,
        };
        let v6_refused = ask.also_v6 && !self.has_family(Family::V6);
        let mut pair: [Option<Relay>; 2] = [None, None];
        if ask.also_v6 && !v6_refused {
            match self.bind_relay(Family::V6, PortChoice::Any, owner, relays) {
                Some((second, _)) => pair[Family::V6.index()] = Some(second),
                None => {
                    self.release_relay(&first, relays);
                    if let Some(p) = reserved {
                        self.res.release_port(first.bind.ip(), p);
                    }
                    return None;
                }
            }
        }
        let primary = Family::of(first.bind.ip()).index();
        pair[primary] = Some(first);
        Some(Bound {
            relays: pair,
            reserved,
            v6_refused,
        })
    }

    fn has_family(&self, family: Family) -> bool {
        self.cfg.relays.iter().any(|r| Family::of(r.bind) == family)
    }

    fn pick_relay(&mut self, family: Family) -> Option<RelayAddr> {
        let candidates: Vec<RelayAddr> = self
            .cfg
            .relays
            .iter()
            .filter(|r| Family::of(r.bind) == family)
            .copied()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let rr = &mut self.relay_rr[family.index()];
        *rr = rr.wrapping_add(1);
        Some(candidates[*rr % candidates.len()])
    }

    /// Bind a relay socket of `family` on a port chosen as asked; for an even pair, the next
    /// port is held too and returned as the second value.
    fn bind_relay(
        &mut self,
        family: Family,
        choice: PortChoice,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<(Relay, Option<u16>)> {
        let ra = self.pick_relay(family)?;
        for _ in 0..16 {
            let seed: u32 = self.rng.random();
            let port = self.res.reserve_port(ra.bind, seed, choice)?;
            let held = (choice == PortChoice::EvenPair).then(|| port + 1);
            match self.bind_port(ra, port, owner, relays) {
                Some(r) => return Some((r, held)),
                None => {
                    if let Some(h) = held {
                        self.res.release_port(ra.bind, h);
                    }
                }
            }
        }
        None
    }

    /// Bind an already reserved port; on failure the port goes back to the pool.
    fn bind_port(
        &mut self,
        ra: RelayAddr,
        port: u16,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<Relay> {
        let bind = SocketAddr::new(ra.bind, port);
        match relays.bind(bind, owner) {
            Ok(handle) => Some(Relay {
                handle,
                bind,
                advertise: SocketAddr::new(ra.advertise, port),
            }),
            Err(e) => {
                tracing::debug!(%bind, error = %e, "relay port unavailable");
                self.res.release_port(ra.bind, port);
                None
            }
        }
    }

    /// Bind the port held for a RESERVATION-TOKEN (508 when unknown or expired).
    fn bind_reserved(
        &mut self,
        token: u64,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
        now: Instant,
    ) -> Option<Relay> {
        let (ip, port) = self.res.take_reservation(token, now)?;
        let Some(ra) = self.cfg.relays.iter().find(|r| r.bind == ip).copied() else {
            self.res.release_port(ip, port);
            return None;
        };
        self.bind_port(ra, port, owner, relays)
    }

    fn release_relay(&mut self, relay: &Relay, relays: &mut dyn RelaySockets) {
        relays.release(relay.handle);
        self.res.release_port(relay.bind.ip(), relay.bind.port());
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
            self.to_peer.remove(&(a.ft, c.number));
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
