//! Permissions (RFC 8656 §9): CreatePermission installs or refreshes one permission per peer
//! IP (ports are not part of a permission), each for 300 s; ChannelBind installs one too
//! (§11). Every XOR-PEER-ADDRESS of a request is checked against the peer policy and
//! installed, or none is (403 when any is denied). Data from a peer without a live
//! permission is dropped (§9: "Data Received without a Permission").

use super::core::{Core, Request};
use super::error::TurnError;
use super::reply::Reply;
use super::resources::{IpVerdict, RelayOwner, RelayResources};
use super::timers::Timer;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use stun_types::message::{Message, StunParseError};
use turn_types::attribute::XorPeerAddress;

/// Peer addresses read from one request at most (a request cannot name more usefully).
const MAX_PEERS_PER_REQUEST: usize = 64;

/// One peer IP's permission.
#[derive(Debug)]
pub(crate) struct Permission {
    pub ip: IpAddr,
    pub state: PermissionState,
}

/// What the relay path needs to know of a permission: until when, and whether the peer is
/// one of our own relay IPs (then only allocated relay ports are reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PermissionState {
    pub expires: Instant,
    pub verdict: IpVerdict,
}

impl PermissionState {
    /// No permission: expired at creation.
    pub fn none(now: Instant) -> Self {
        Self {
            expires: now,
            verdict: IpVerdict::Allow,
        }
    }

    /// The peer is one of our own relay IPs.
    pub fn own_relay(&self) -> bool {
        self.verdict == IpVerdict::OwnRelay
    }
}

/// A CreatePermission request's peer addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePermissionRequest {
    /// The XOR-PEER-ADDRESSes, in order, up to the first malformed one.
    pub peers: Vec<SocketAddr>,
    /// A malformed XOR-PEER-ADDRESS follows them (400 once the ones before pass).
    pub malformed_after: bool,
}

impl CreatePermissionRequest {
    /// Read every XOR-PEER-ADDRESS (400 when none, or one is malformed).
    pub fn decode(msg: &Message<'_>) -> Result<Self, TurnError> {
        let txid = msg.transaction_id();
        let mut peers = Vec::new();
        let mut malformed_after = false;
        for n in 0..MAX_PEERS_PER_REQUEST {
            match msg.nth_attribute::<XorPeerAddress>(n) {
                Ok(p) => peers.push(p.addr(txid)),
                Err(StunParseError::MissingAttribute(_)) => break,
                Err(_) => {
                    malformed_after = true;
                    break;
                }
            }
        }
        if peers.is_empty() && !malformed_after {
            return Err(TurnError::BadRequest("no XOR-PEER-ADDRESS"));
        }
        Ok(Self {
            peers,
            malformed_after,
        })
    }
}

impl<R: RelayResources> Core<R> {
    /// CreatePermission (RFC 8656 §9.2).
    pub(crate) fn create_permission(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        key: usize,
        ask: CreatePermissionRequest,
    ) -> Result<Reply, TurnError> {
        let mut peers: Vec<(IpAddr, IpVerdict)> = Vec::new();
        for addr in ask.peers {
            let verdict = self.res.check_peer_ip(addr.ip());
            if verdict == IpVerdict::Deny {
                tracing::debug!(parent: &self.allocs[key].span, peer = %addr.ip(), "permission denied by peer policy");
                return Err(TurnError::Forbidden);
            }
            if self.allocs[key].relay_for(&addr).is_none() {
                return Err(TurnError::PeerAddressFamilyMismatch);
            }
            if !peers.iter().any(|(ip, _)| *ip == addr.ip()) {
                peers.push((addr.ip(), verdict));
            }
        }
        // Each address is judged in order, as the request lists them.
        if ask.malformed_after {
            return Err(TurnError::BadRequest("XOR-PEER-ADDRESS"));
        }
        let a = &self.allocs[key];
        let live = a.perms.iter().filter(|p| p.state.expires > now).count();
        let new = peers
            .iter()
            .filter(|(ip, _)| self.permission(key, *ip, now).is_none())
            .count();
        if live + new > self.cfg.max_permissions {
            return Err(TurnError::InsufficientCapacity(
                "permissions per allocation",
            ));
        }
        let expires = now + self.cfg.permission_lifetime;
        for (ip, verdict) in peers {
            self.install_permission(key, ip, PermissionState { expires, verdict });
        }
        let serial = self.allocs[key].serial;
        self.timers.push(expires, Timer::Sweep { key, serial });
        Ok(Reply::success(req.msg))
    }

    /// The live permission for `ip` in allocation `key`.
    pub(crate) fn permission(
        &self,
        key: usize,
        ip: IpAddr,
        now: Instant,
    ) -> Option<PermissionState> {
        self.allocs[key]
            .perms
            .iter()
            .find(|p| p.ip == ip && p.state.expires > now)
            .map(|p| p.state)
    }

    /// Live permissions of allocation `key`.
    pub(crate) fn live_permissions(&self, key: usize, now: Instant) -> usize {
        let perms = &self.allocs[key].perms;
        perms.iter().filter(|p| p.state.expires > now).count()
    }

    /// Install or refresh the permission for `ip`, and update the channel routes to peers on
    /// that IP so the relay path sees the new expiry without a second lookup.
    pub(crate) fn install_permission(&mut self, key: usize, ip: IpAddr, state: PermissionState) {
        let a = &mut self.allocs[key];
        match a.perms.iter_mut().find(|p| p.ip == ip) {
            Some(p) => p.state = state,
            None => {
                self.stats.permissions_live += 1;
                a.perms.push(Permission { ip, state });
            }
        }
        let owner = RelayOwner {
            alloc: key,
            serial: a.serial,
        };
        for c in a.channels.iter().filter(|c| c.peer.ip() == ip) {
            if let Some(r) = self.to_peer.get_mut(&(a.ft, c.number)) {
                r.permission = state;
            }
            if let Some(r) = self.to_client.get_mut(&(owner, c.peer)) {
                r.permission = state;
            }
        }
        self.offload_channels(key, Some(ip));
    }

    /// Tell the fast path (when on) the state of allocation `key`'s channels — those to peers
    /// on `ip`, or all: installed until the earliest of the channel's, the permission's and
    /// the allocation's end (the moment the userspace path stops), or removed. Only what the
    /// policy allows outright: own relay/SFU addresses are checked per packet, which only the
    /// userspace path does.
    pub(crate) fn offload_channels(&mut self, key: usize, ip: Option<IpAddr>) {
        if !self.cfg.offload {
            return;
        }
        let a = &self.allocs[key];
        let owner = RelayOwner {
            alloc: key,
            serial: a.serial,
        };
        for c in a
            .channels
            .iter()
            .filter(|c| ip.is_none_or(|ip| c.peer.ip() == ip))
        {
            if let Some(r) = self.to_peer.get(&(a.ft, c.number)) {
                let state = r.permission;
                let install = state.verdict == IpVerdict::Allow;
                let expires = install.then(|| c.expires.min(state.expires).min(a.expires));
                self.offload
                    .extend(offload(owner, a.ft, c.number, r.relay, c.peer, expires));
            }
        }
    }
}

/// The fast-path change for one channel route: install until `expires`, or remove. Only UDP
/// clients' routes: a stream's ChannelData is framed in TCP or TLS.
pub(crate) fn offload(
    owner: RelayOwner,
    ft: super::FiveTuple,
    channel: super::ChannelNumber,
    relay: SocketAddr,
    peer: SocketAddr,
    expires: Option<Instant>,
) -> Option<super::Offload> {
    if ft.transport != super::Transport::Udp {
        return None;
    }
    Some(match expires {
        Some(expires) => super::Offload::Install {
            ft,
            channel,
            relay,
            peer,
            expires,
        },
        None => super::Offload::Remove {
            owner,
            ft,
            channel,
            relay,
            peer,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::test_support::request;
    use stun_types::message::MessageWriteExt;
    use turn_types::message::CREATE_PERMISSION;

    #[test]
    fn create_permission_reads_every_peer_address_and_needs_one() {
        let none = request(CREATE_PERMISSION, "", |_, _| {});
        assert!(matches!(
            CreatePermissionRequest::decode(&Message::from_bytes(&none).unwrap()),
            Err(TurnError::BadRequest(_))
        ));
        let peers = ["8.8.8.8:1", "8.8.4.4:2", "8.8.8.8:3"];
        let bytes = request(CREATE_PERMISSION, "", |w, t| {
            for p in peers {
                w.add_attribute(&XorPeerAddress::new(p.parse().unwrap(), t))
                    .unwrap();
            }
        });
        let ask = CreatePermissionRequest::decode(&Message::from_bytes(&bytes).unwrap()).unwrap();
        let want: Vec<SocketAddr> = peers.iter().map(|p| p.parse().unwrap()).collect();
        assert_eq!(ask.peers, want);
        assert!(!ask.malformed_after);
    }

    #[test]
    fn no_permission_is_an_already_expired_one() {
        let now = Instant::now();
        let p = PermissionState::none(now);
        assert!(p.expires <= now);
        assert!(!p.own_relay());
    }

    #[test]
    fn peer_addresses_are_judged_in_order_a_denied_one_before_a_malformed_one_is_403() {
        use crate::proto::test_support::{client, code, core, exchange, udp_transport};
        use crate::testing::FakeRelays;
        use stun_types::attribute::{AttributeType, RawAttribute};
        use turn_types::message::ALLOCATE;
        let now = Instant::now();
        let mut c = core(1, now);
        c.resources_mut().denied.push("10.0.0.1".parse().unwrap());
        let mut relays = FakeRelays::default();
        let (nonce, _) = exchange(&mut c, now, &mut relays, ALLOCATE, udp_transport);
        let mut out = Vec::new();
        let bad_family = [0, 9, 0, 1, 1, 2, 3, 4];
        for (first, want) in [("10.0.0.1:1", 403), ("8.8.8.8:1", 400)] {
            let req = request(CREATE_PERMISSION, &nonce, |w, t| {
                w.add_attribute(&XorPeerAddress::new(first.parse().unwrap(), t))
                    .unwrap();
                let raw = RawAttribute::new(AttributeType::new(0x0012), &bad_family);
                w.add_attribute(&raw).unwrap();
            });
            out.clear();
            c.handle_client(now, client(), &req, &mut relays, &mut out);
            assert_eq!(code(&out[0].data), Some(want), "first peer {first}");
        }
        assert!(
            c.allocs.iter().all(|(_, a)| a.perms.is_empty()),
            "none installed"
        );
    }
}
