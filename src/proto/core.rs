//! The dispatching core of one shard (RFC 8656 §5–§12, RFC 8489 §6–§9, RFC 6156).
//!
//! Input: datagrams/frames from clients ([`Core::handle_client`]), datagrams from peers at
//! relay sockets ([`Core::handle_peer`]), time ([`Core::handle_timeout`]), and snapshots of
//! credentials ([`Core::set_credentials`]). Output: answers pushed into a caller-owned
//! `Vec<Transmit>`, and zero-copy routes ([`Forward`], [`PeerRoute`]) naming the sub-slice of
//! the shell's own buffer that goes where.
//!
//! A request flows through one pipeline: decode ([`super::message`]) → retransmission check
//! (RFC 8489 §6.3.4: same 5-tuple and transaction id, same answer) → authenticate
//! ([`super::authenticate`]) → allocation ownership (437/441) → the method's handler →
//! `Core::answer` ([`super::error`]).
//!
//! Routing is one hash lookup per ChannelData packet in each direction: `(5-tuple, channel)`
//! for client → peer, `(relay owner, peer)` for peer → client ([`super::channel`]).

use super::allocation::{AllocateRequest, Allocation, RefreshRequest};
use super::authenticate::Auth;
use super::channel::{ChannelBindRequest, ClientRoute, PeerRouteEntry};
use super::channel_data::{ChannelData, ChannelNumber};
use super::error::TurnError;
use super::message::{self, ClientMessage, unknown_required};
use super::notice::Notice;
pub use super::output::{
    AllocationInfo, CoreConfig, Forward, Offload, OffloadedRoute, PeerRoute, Transmit,
};
use super::permission::CreatePermissionRequest;
use super::reply::Reply;
use super::resources::{RelayOwner, RelayResources, RelaySockets};
use super::stats::{DropReason, EndReason, Stats};
use super::timers::{Timer, Timers};
use super::transactions::{CachedAnswer, RecentAnswers};
use super::{FiveTuple, classic, integrity};
use crate::auth::Credentials;
use crate::auth::nonce::NonceIssuer;
use crate::auth::ratelimit::RateLimiter;
use rand::SeedableRng;
use rand::rngs::StdRng;
use slab::Slab;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use stun_types::message::{BINDING, Message, Method};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};

/// One request being handled.
pub(crate) struct Request<'m, 'a> {
    pub ft: FiveTuple,
    pub msg: &'m Message<'a>,
    /// The request carried FINGERPRINT, so every answer does (RFC 8489 §14.7).
    pub fingerprint: bool,
}

/// The TURN methods (RFC 8656 §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnMethod {
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
}

impl TurnMethod {
    fn of(m: Method) -> Option<Self> {
        match m {
            ALLOCATE => Some(TurnMethod::Allocate),
            REFRESH => Some(TurnMethod::Refresh),
            CREATE_PERMISSION => Some(TurnMethod::CreatePermission),
            CHANNEL_BIND => Some(TurnMethod::ChannelBind),
            _ => None,
        }
    }
}

/// One shard's protocol state.
#[derive(Debug)]
pub struct Core<R> {
    pub(crate) cfg: CoreConfig,
    pub(crate) res: R,
    pub(crate) creds: Credentials,
    pub(crate) nonces: NonceIssuer,
    epoch: (Instant, u64),
    pub(crate) rng: StdRng,
    pub(crate) allocs: Slab<Allocation>,
    pub(crate) by_ft: HashMap<FiveTuple, usize>,
    /// `(client 5-tuple, channel)` → where its ChannelData goes.
    pub(crate) to_peer: HashMap<(FiveTuple, ChannelNumber), PeerRouteEntry>,
    /// `(relay owner, peer)` → the client and channel its datagrams go to.
    pub(crate) to_client: HashMap<(RelayOwner, SocketAddr), ClientRoute>,
    pub(crate) timers: Timers,
    pub(crate) next_serial: u32,
    recent: RecentAnswers,
    pub(crate) challenges: RateLimiter,
    pub(crate) failures: RateLimiter,
    pub(crate) relay_rr: [usize; 2],
    next_reservation_sweep: Instant,
    pub(crate) stats: Stats,
    /// Allocations refused by a quota (486), logged at info, rate limited.
    pub(crate) quota_notice: Notice,
    /// Credentials refused (401), logged at info, rate limited.
    pub(crate) auth_notice: Notice,
    /// Channel routes for the shell's kernel fast path, when `cfg.offload`.
    pub(crate) offload: Vec<Offload>,
}

impl<R: RelayResources> Core<R> {
    /// A shard's core. `nonce_key` is shared by every shard (a nonce issued by one validates
    /// on another); `seed` seeds this core's randomness (ports, transaction ids); `now` and
    /// `unix_now` anchor its notion of wall-clock time for nonces and REST expiries.
    pub fn new(
        cfg: CoreConfig,
        res: R,
        creds: Credentials,
        nonce_key: [u8; 32],
        seed: [u8; 32],
        now: Instant,
        unix_now: u64,
    ) -> Self {
        let nonces = NonceIssuer::new(nonce_key, cfg.nonce_lifetime);
        let challenges =
            RateLimiter::new(cfg.challenge_rate, cfg.challenge_rate.max(1.0), 65_536, now);
        let per_sec = cfg.failures_per_minute / 60.0;
        let failures = RateLimiter::new(per_sec, cfg.failures_per_minute.max(1.0), 65_536, now);
        Self {
            cfg,
            res,
            creds,
            nonces,
            epoch: (now, unix_now),
            rng: StdRng::from_seed(seed),
            allocs: Slab::new(),
            by_ft: HashMap::new(),
            to_peer: HashMap::new(),
            to_client: HashMap::new(),
            timers: Timers::default(),
            next_serial: 1,
            recent: RecentAnswers::default(),
            challenges,
            failures,
            relay_rr: [0; 2],
            next_reservation_sweep: now,
            stats: Stats::default(),
            quota_notice: Notice::default(),
            auth_notice: Notice::default(),
            offload: Vec::new(),
        }
    }

    /// The channel routes decided since the last call, in order, for a kernel fast path
    /// (always empty unless `offload` is configured).
    pub fn drain_offload(&mut self) -> std::vec::Drain<'_, Offload> {
        self.offload.drain(..)
    }

    /// Replace the credentials (reload): new requests are checked against these; existing
    /// allocations keep their key until they end.
    pub fn set_credentials(&mut self, creds: Credentials) {
        self.creds = creds;
    }

    /// The resources (to hand in a new policy snapshot on reload).
    pub fn resources_mut(&mut self) -> &mut R {
        &mut self.res
    }

    /// The resources.
    pub fn resources(&self) -> &R {
        &self.res
    }

    /// This core's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Count a packet the shell dropped (e.g. a slow stream's full buffer).
    pub fn count_drop(&mut self, why: DropReason) {
        self.stats.drop(why);
    }

    /// Number of live allocations in this shard.
    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    pub(crate) fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    /// When [`Core::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Handle a message from a client. Answers are appended to `out`; a returned [`Forward`]
    /// names the part of `data` to relay to a peer.
    pub fn handle_client(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        data: &[u8],
        relays: &mut dyn RelaySockets,
        out: &mut Vec<Transmit>,
    ) -> Option<Forward> {
        if data.is_empty() {
            return None;
        }
        let routed = match message::decode(data) {
            Ok(ClientMessage::ChannelData(cd)) => self.channel_data(now, ft, cd),
            Ok(ClientMessage::Send(msg)) => self.send_indication(now, ft, &msg),
            Ok(ClientMessage::Request(msg)) => {
                self.request(now, ft, &msg, relays, out);
                return None;
            }
            Ok(ClientMessage::OtherIndication) => return None,
            Ok(ClientMessage::Classic(d)) => match classic::binding_response(d, ft.client) {
                Some(data) => {
                    out.push(Transmit { ft, data });
                    return None;
                }
                None => Err(DropReason::Malformed),
            },
            Err(why) => Err(why),
        };
        match routed {
            Ok(f) => {
                self.stats.relayed_to_peer(f.range.len());
                Some(f)
            }
            Err(why) => {
                self.stats.drop(why);
                None
            }
        }
    }

    /// ChannelData client → peer (RFC 8656 §12.5): one lookup, the permission's expiry, and
    /// on our own relay IPs the allocated-port rule that Send and peer traffic follow too.
    fn channel_data(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        cd: ChannelData<'_>,
    ) -> Result<Forward, DropReason> {
        let route = self
            .to_peer
            .get_mut(&(ft, cd.channel))
            .ok_or(DropReason::NoAllocation)?;
        if route.permission.expires <= now {
            return Err(DropReason::NoPermission);
        }
        if route.permission.own_relay() && !self.res.own_peer_reachable(route.peer) {
            return Err(DropReason::DeniedPeer);
        }
        route.bytes += cd.payload.len() as u64;
        Ok(Forward {
            handle: route.handle,
            relay: route.relay,
            peer: route.peer,
            range: cd.payload_range(),
        })
    }

    fn request(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        relays: &mut dyn RelaySockets,
        out: &mut Vec<Transmit>,
    ) {
        let req = Request {
            ft,
            msg,
            fingerprint: integrity::has_fingerprint(msg),
        };
        if msg.method() == BINDING {
            let (result, from) = self.binding(&req);
            if let Some(data) = self.answer(now, &req, None, result) {
                let ft = FiveTuple { server: from, ..ft };
                out.push(Transmit { ft, data });
            }
            return;
        }
        let Some(method) = TurnMethod::of(msg.method()) else {
            let err = Err(TurnError::BadRequest("unknown method"));
            out.extend(
                self.answer(now, &req, None, err)
                    .map(|data| Transmit { ft, data }),
            );
            return;
        };
        let txid: u128 = msg.transaction_id().into();
        let last = self
            .by_ft
            .get(&ft)
            .and_then(|&k| self.allocs[k].last.as_ref());
        if let Some(data) = self.recent.retransmitted(last, &ft, txid) {
            out.push(Transmit { ft, data });
            return;
        }
        let auth = match self.authenticate(now, &req) {
            Ok(a) => a,
            Err(e) => {
                if method == TurnMethod::Allocate {
                    if let Ok(u) = msg.attribute::<stun_types::attribute::Username>() {
                        self.res.allocate_seen(u.username(), &ft, Some(e.code()));
                    }
                }
                out.extend(
                    self.answer(now, &req, None, Err(e))
                        .map(|data| Transmit { ft, data }),
                );
                return;
            }
        };
        let sign = Some((auth.algo, auth.key));
        // Refusals before the handler runs (420, 437, 441) are answered but not remembered:
        // a retransmission of the request answered before them still gets its own answer.
        let key = match self.admit(&req, method, &auth) {
            Ok(key) => key,
            Err(e) => {
                out.extend(
                    self.answer(now, &req, sign, Err(e))
                        .map(|data| Transmit { ft, data }),
                );
                return;
            }
        };
        let result = self.turn_request(now, &req, method, key, &auth, relays);
        if key.is_none() && method == TurnMethod::Allocate {
            let code = result.as_ref().err().map(TurnError::code);
            self.res.allocate_seen(&auth.username, &ft, code);
        }
        let Some(data) = self.answer(now, &req, sign, result) else {
            return;
        };
        let answer = CachedAnswer {
            txid,
            bytes: data.clone(),
        };
        match self.by_ft.get(&ft) {
            Some(&key) => {
                self.allocs[key].last = Some(answer);
                self.recent.forget(&ft);
            }
            None => self.recent.remember(now, ft, answer),
        }
        out.push(Transmit { ft, data });
    }

    /// Unknown comprehension-required attributes (420), then allocation ownership (RFC 8656
    /// §7.2: 437; §5: 441). The allocation the request is for; None for a new Allocate.
    fn admit(
        &self,
        req: &Request<'_, '_>,
        method: TurnMethod,
        auth: &Auth,
    ) -> Result<Option<usize>, TurnError> {
        unknown_required(req.msg, &[])?;
        let key = match (self.by_ft.get(&req.ft).copied(), method) {
            (None, TurnMethod::Allocate) => return Ok(None),
            (Some(_), TurnMethod::Allocate) | (None, _) => {
                return Err(TurnError::AllocationMismatch);
            }
            (Some(key), _) => key,
        };
        let a = &self.allocs[key];
        if *a.username != *auth.username || a.key != auth.key {
            return Err(TurnError::WrongCredentials);
        }
        Ok(Some(key))
    }

    /// The method's handler, for an admitted request.
    fn turn_request(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        method: TurnMethod,
        key: Option<usize>,
        auth: &Auth,
        relays: &mut dyn RelaySockets,
    ) -> Result<Reply, TurnError> {
        let Some(key) = key else {
            let ask = AllocateRequest::decode(req.msg)?;
            return self.allocate(now, req, ask, auth, relays);
        };
        match method {
            TurnMethod::Refresh => {
                let ask = RefreshRequest::decode(req.msg)?;
                self.refresh(now, req, key, ask, relays)
            }
            TurnMethod::CreatePermission => {
                let ask = CreatePermissionRequest::decode(req.msg)?;
                self.create_permission(now, req, key, ask)
            }
            TurnMethod::ChannelBind => {
                let ask = ChannelBindRequest::decode(req.msg)?;
                self.channel_bind(now, req, key, ask)
            }
            TurnMethod::Allocate => Err(TurnError::AllocationMismatch),
        }
    }

    /// A datagram from `peer` arrived at the relay socket of `owner` (RFC 8656 §11.3, §12.6):
    /// one lookup for a bound channel; otherwise a Data indication if a permission allows it.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        owner: RelayOwner,
        peer: SocketAddr,
        payload: &[u8],
    ) -> PeerRoute {
        let routed = match self.to_client.get_mut(&(owner, peer)) {
            Some(route) => {
                if route.permission.expires <= now {
                    Err(DropReason::NoPermission)
                } else if route.permission.own_relay() && !self.res.own_peer_reachable(peer) {
                    Err(DropReason::DeniedPeer)
                } else {
                    route.bytes += payload.len() as u64;
                    Ok(PeerRoute::Channel {
                        ft: route.ft,
                        channel: route.channel,
                    })
                }
            }
            None => self.data_indication(now, owner, peer, payload),
        };
        match routed {
            Ok(route) => {
                self.stats.relayed_to_client(payload.len());
                route
            }
            Err(why) => {
                self.stats.drop(why);
                PeerRoute::Drop
            }
        }
    }

    /// Expire allocations, permissions and channels due by `now`.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut dyn RelaySockets) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Allocation { key, serial } => {
                    let due = self
                        .allocs
                        .get(key)
                        .is_some_and(|a| a.serial == serial && a.expires <= now);
                    if due {
                        self.free(key, relays, EndReason::Expired);
                    }
                }
                Timer::Sweep { key, serial } => self.sweep(now, key, serial),
            }
        }
        self.recent.expire(now);
        let allocs = &self.allocs;
        self.timers.compact(allocs.len(), |key, serial| {
            allocs.get(key).is_some_and(|a| a.serial == serial)
        });
        if now >= self.next_reservation_sweep {
            self.next_reservation_sweep = now + Duration::from_secs(5);
            self.res.sweep_reservations(now);
        }
    }

    /// What an operator sees of each allocation of this shard. With the fast path on, the
    /// bytes it relayed on live routes are in the kernel, not here: each allocation names its
    /// routes ([`AllocationInfo::offloaded`]) for the shell to read them off the data path.
    pub fn list(&self, now: Instant) -> Vec<AllocationInfo> {
        self.allocs
            .iter()
            .map(|(key, a)| {
                let (to_peer, to_client, offloaded) = self.channel_bytes(a);
                AllocationInfo {
                    key,
                    serial: a.serial,
                    username: a.username.to_string(),
                    transport: a.ft.transport.name(),
                    client: a.ft.client,
                    server: a.ft.server,
                    relayed: a.relays.iter().flatten().map(|r| r.advertise).collect(),
                    age_seconds: now.saturating_duration_since(a.created).as_secs(),
                    expires_in_seconds: a.expires.saturating_duration_since(now).as_secs(),
                    permissions: a.perms.len(),
                    channels: a.channels.len(),
                    bytes_to_peer: a.bytes_to_peer + to_peer,
                    bytes_to_client: a.bytes_to_client + to_client,
                    offloaded,
                }
            })
            .collect()
    }

    /// End allocations chosen by an operator (one by key and serial, or all of a user's).
    pub fn end_matching(
        &mut self,
        id: Option<(usize, u32)>,
        user: Option<&str>,
        relays: &mut dyn RelaySockets,
    ) -> usize {
        let keys: Vec<usize> = self
            .allocs
            .iter()
            .filter(|(k, a)| {
                id.is_some_and(|(ik, is)| ik == *k && is == a.serial)
                    || user.is_some_and(|u| *a.username == *u)
            })
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            self.free(*k, relays, EndReason::Ended);
        }
        keys.len()
    }

    /// Whether `ft` holds an allocation.
    pub fn has_allocation(&self, ft: &FiveTuple) -> bool {
        self.by_ft.contains_key(ft)
    }

    /// Timer entries held (for tests of the churn bound).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// The client's connection closed (TCP/TLS): its allocation ends at once.
    pub fn close_connection(&mut self, ft: FiveTuple, relays: &mut dyn RelaySockets) {
        if let Some(&key) = self.by_ft.get(&ft) {
            self.free(key, relays, EndReason::Closed);
        }
        self.recent.forget(&ft);
    }

    /// End every allocation (shutdown).
    pub fn close_all(&mut self, relays: &mut dyn RelaySockets) {
        let keys: Vec<usize> = self.allocs.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.free(k, relays, EndReason::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::test_support::{client, code, core, nonce_for, request, udp_transport};
    use crate::testing::FakeRelays;
    use stun_types::message::MessageWriteExt;

    #[test]
    fn a_retransmitted_allocate_gets_the_same_answer_and_one_allocation() {
        let now = Instant::now();
        let mut c = core(5, now);
        let mut relays = FakeRelays::default();
        let mut out = Vec::new();
        let udp = udp_transport;
        let nonce = nonce_for(&mut c, now, &mut relays, ALLOCATE, udp);
        let req = request(ALLOCATE, &nonce, udp);
        c.handle_client(now, client(), &req, &mut relays, &mut out);
        c.handle_client(now, client(), &req, &mut relays, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], out[1]);
        assert_eq!(code(&out[0].data), None);
        assert_eq!(c.allocation_count(), 1);
        assert_eq!(relays.bound.len(), 1);
        // A new transaction on the same 5-tuple: 437.
        out.clear();
        c.handle_client(
            now,
            client(),
            &request(ALLOCATE, &nonce, udp),
            &mut relays,
            &mut out,
        );
        assert_eq!(code(&out[0].data), Some(437));
    }

    #[test]
    fn unknown_methods_get_400_and_garbage_is_counted_not_answered() {
        let now = Instant::now();
        let mut c = core(0, now);
        let mut out = Vec::new();
        let req = request(Method::new(0x0123), "", |_, _| {});
        c.handle_client(now, client(), &req, &mut FakeRelays::default(), &mut out);
        assert_eq!(code(&out.pop().unwrap().data), Some(400));
        c.handle_client(
            now,
            client(),
            &[0xC0, 1, 2, 3],
            &mut FakeRelays::default(),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(c.stats().drops[DropReason::Malformed as usize], 1);
    }

    #[test]
    fn a_refusal_in_between_does_not_replace_the_answer_a_retransmission_gets() {
        let now = Instant::now();
        let mut c = core(5, now);
        let mut relays = FakeRelays::default();
        let mut out = Vec::new();
        let udp = udp_transport;
        let nonce = nonce_for(&mut c, now, &mut relays, ALLOCATE, udp);
        let mut ask = |c: &mut Core<_>, req: &[u8]| {
            out.clear();
            c.handle_client(now, client(), req, &mut relays, &mut out);
            out.pop().map(|t| t.data).unwrap()
        };
        assert_eq!(code(&ask(&mut c, &request(ALLOCATE, &nonce, udp))), None);
        let delete = request(REFRESH, &nonce, |w, _| {
            w.add_attribute(&turn_types::attribute::Lifetime::new(0))
                .unwrap();
        });
        let deleted = ask(&mut c, &delete);
        assert_eq!(code(&deleted), None);
        // A request that was in flight meets no allocation any more: 437.
        let late = request(CREATE_PERMISSION, &nonce, |w, t| {
            let peer = "8.8.8.8:1".parse().unwrap();
            w.add_attribute(&turn_types::attribute::XorPeerAddress::new(peer, t))
                .unwrap();
        });
        assert_eq!(code(&ask(&mut c, &late)), Some(437));
        // The delete's answer was lost; its retransmission gets it, not a 437.
        assert_eq!(ask(&mut c, &delete), deleted);
    }
}
