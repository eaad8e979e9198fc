//! Channels (RFC 8656 §11–§12): ChannelBind binds a channel number to one peer address for
//! 600 s (and installs or refreshes the peer IP's permission); a channel cannot be rebound to
//! another peer, nor a peer to a second channel, while the binding lives (400); rebinding the
//! same pair refreshes it.
//!
//! The relay path for channels is two hash maps kept here: `(client 5-tuple, channel)` →
//! `PeerRouteEntry` for ChannelData from the client, `(relay owner, peer)` →
//! `ClientRoute` for datagrams from the peer. Each entry carries its permission's state, so
//! a packet costs one lookup and one compare. ChannelData to an unbound channel is dropped
//! silently and never refreshes anything (§12.5).

use super::FiveTuple;
use super::allocation::Allocation;
use super::channel_data::ChannelNumber;
use super::core::{Core, Request};
use super::error::TurnError;
use super::message::required;
use super::output::OffloadedRoute;
use super::permission::PermissionState;
use super::reply::Reply;
use super::resources::{RelayOwner, RelayResources};
use super::timers::Timer;
use std::net::SocketAddr;
use std::time::Instant;
use stun_types::message::Message;
use turn_types::attribute::{ChannelNumber as ChannelNumberAttr, XorPeerAddress};

/// One bound channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub number: ChannelNumber,
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// Where a client's ChannelData goes.
#[derive(Debug)]
pub(crate) struct PeerRouteEntry {
    pub handle: usize,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub permission: PermissionState,
    /// Payload bytes relayed on this channel to the peer.
    pub bytes: u64,
}

/// Where a peer's datagrams go when it has a channel.
#[derive(Debug)]
pub(crate) struct ClientRoute {
    pub ft: FiveTuple,
    pub channel: ChannelNumber,
    pub permission: PermissionState,
    /// Payload bytes relayed on this channel to the client.
    pub bytes: u64,
}

/// A ChannelBind request's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelBindRequest {
    /// CHANNEL-NUMBER as sent (range checked by the handler against the configured maximum).
    pub number: u16,
    /// XOR-PEER-ADDRESS.
    pub peer: SocketAddr,
}

impl ChannelBindRequest {
    /// Read the attributes (400 when missing or malformed).
    pub fn decode(msg: &Message<'_>) -> Result<Self, TurnError> {
        let number = required::<ChannelNumberAttr>(msg, "CHANNEL-NUMBER")?.channel();
        let peer = required::<XorPeerAddress>(msg, "XOR-PEER-ADDRESS")?.addr(msg.transaction_id());
        Ok(Self { number, peer })
    }
}

impl<R: RelayResources> Core<R> {
    /// ChannelBind (RFC 8656 §11.2).
    pub(crate) fn channel_bind(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        key: usize,
        ask: ChannelBindRequest,
    ) -> Result<Reply, TurnError> {
        let number = ChannelNumber::new(ask.number)
            .filter(|n| n.get() <= self.cfg.max_channel_number)
            .ok_or(TurnError::BadRequest("channel number out of range"))?;
        let peer = ask.peer;
        let a = &self.allocs[key];
        let verdict = self.res.check_peer_ip(peer.ip());
        if !self.res.peer_addr_allowed(verdict, peer) {
            tracing::debug!(parent: &a.span, %peer, "channel bind denied by peer policy");
            return Err(TurnError::Forbidden);
        }
        if a.relay_for(&peer).is_none() {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        let existing = self.check_binding(a, number, peer)?;
        if self.permission(key, peer.ip(), now).is_none()
            && self.live_permissions(key, now) >= self.cfg.max_permissions
        {
            return Err(TurnError::InsufficientCapacity(
                "permissions per allocation",
            ));
        }
        let chan_expires = now + self.cfg.channel_lifetime;
        let permission = PermissionState {
            expires: now + self.cfg.permission_lifetime,
            verdict,
        };
        match existing {
            Some(i) => self.allocs[key].channels[i].expires = chan_expires,
            None => self.add_channel(key, number, peer, chan_expires, now),
        }
        self.install_permission(key, peer.ip(), permission);
        let serial = self.allocs[key].serial;
        self.timers
            .push(permission.expires, Timer::Sweep { key, serial });
        self.timers.push(chan_expires, Timer::Sweep { key, serial });
        Ok(Reply::success(req.msg))
    }

    /// The index of the existing binding of exactly this pair, None for a new one, or 400 when
    /// the number or the peer is bound to something else; 508 past the channel cap.
    fn check_binding(
        &self,
        a: &Allocation,
        number: ChannelNumber,
        peer: SocketAddr,
    ) -> Result<Option<usize>, TurnError> {
        let by_number = a.channels.iter().position(|c| c.number == number);
        let by_peer = a.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(i), Some(j)) if i == j => Ok(Some(i)),
            (None, None) if a.channels.len() >= self.cfg.max_channels => {
                Err(TurnError::InsufficientCapacity("channels per allocation"))
            }
            (None, None) => Ok(None),
            _ => {
                tracing::debug!(parent: &a.span, channel = %number, %peer, "channel bind conflicts with an existing binding");
                Err(TurnError::BadRequest("channel or peer already bound"))
            }
        }
    }

    fn add_channel(
        &mut self,
        key: usize,
        number: ChannelNumber,
        peer: SocketAddr,
        expires: Instant,
        now: Instant,
    ) {
        let a = &mut self.allocs[key];
        let Some(relay) = a.relay_for(&peer) else {
            return;
        };
        let (handle, relay) = (relay.handle, relay.bind);
        a.channels.push(Channel {
            number,
            peer,
            expires,
        });
        let ft = a.ft;
        let owner = RelayOwner {
            alloc: key,
            serial: a.serial,
        };
        // The permission is installed right after, which sets the routes' permission state.
        let permission = PermissionState::none(now);
        let to_peer = PeerRouteEntry {
            handle,
            relay,
            peer,
            permission,
            bytes: 0,
        };
        self.to_peer.insert((ft, number), to_peer);
        let to_client = ClientRoute {
            ft,
            channel: number,
            permission,
            bytes: 0,
        };
        self.to_client.insert((owner, peer), to_client);
        self.stats.channels_live += 1;
    }

    /// Drop the permissions and channels of allocation `key` that expired by `now`.
    pub(crate) fn sweep(&mut self, now: Instant, key: usize, serial: u32) {
        let Some(a) = self.allocs.get_mut(key).filter(|a| a.serial == serial) else {
            return;
        };
        let (np, nc) = (a.perms.len(), a.channels.len());
        a.perms.retain(|p| p.state.expires > now);
        let owner = RelayOwner { alloc: key, serial };
        let ft = a.ft;
        let (to_peer, to_client) = (&mut self.to_peer, &mut self.to_client);
        let (mut sent, mut received) = (0, 0);
        let (perms, offload) = (&a.perms, &mut self.offload);
        let offloading = self.cfg.offload;
        a.channels.retain(|c| {
            let keep = c.expires > now;
            // The fast path stops at its deadline by itself; this removes the entry.
            let lapsed = !keep || !perms.iter().any(|p| p.ip == c.peer.ip());
            if offloading && lapsed {
                if let Some(r) = to_peer.get(&(ft, c.number)) {
                    offload.extend(super::permission::offload(
                        owner, ft, c.number, r.relay, c.peer, None,
                    ));
                }
            }
            if !keep {
                sent += to_peer.remove(&(ft, c.number)).map_or(0, |r| r.bytes);
                received += to_client.remove(&(owner, c.peer)).map_or(0, |r| r.bytes);
            }
            keep
        });
        a.bytes_to_peer += sent;
        a.bytes_to_client += received;
        self.stats.permissions_live -= (np - a.perms.len()) as i64;
        self.stats.channels_live -= (nc - a.channels.len()) as i64;
    }

    /// Payload bytes the userspace path relayed on `a`'s live channels, each way, and the
    /// routes of them the fast path carries (whose own counts the shell reads from the kernel).
    pub(crate) fn channel_bytes(&self, a: &Allocation) -> (u64, u64, Vec<OffloadedRoute>) {
        let owner = |key| RelayOwner {
            alloc: key,
            serial: a.serial,
        };
        let key = self.by_ft.get(&a.ft).copied();
        let mut routes = Vec::new();
        let (p, c) = a.channels.iter().fold((0, 0), |(p, c), ch| {
            let route = self.to_peer.get(&(a.ft, ch.number));
            let to_peer = route.map_or(0, |r| r.bytes);
            let to_client = key
                .and_then(|k| self.to_client.get(&(owner(k), ch.peer)))
                .map_or(0, |r| r.bytes);
            if let (Some(r), true) = (route, self.cfg.offload) {
                routes.push(OffloadedRoute {
                    ft: a.ft,
                    channel: ch.number,
                    relay: r.relay,
                    peer: ch.peer,
                });
            }
            (p + to_peer, c + to_client)
        });
        (p, c, routes)
    }

    /// Count what the fast path relayed on a route it no longer carries, as the userspace path
    /// would have: on the route while the channel lives, else on its allocation — if `owner`
    /// still exists (else only the global XDP counters keep it).
    pub fn add_offloaded_bytes(
        &mut self,
        owner: RelayOwner,
        channel: ChannelNumber,
        peer: SocketAddr,
        to_peer: u64,
        to_client: u64,
    ) {
        let Some(a) = self
            .allocs
            .get_mut(owner.alloc)
            .filter(|a| a.serial == owner.serial)
        else {
            return;
        };
        match self.to_peer.get_mut(&(a.ft, channel)) {
            Some(r) => r.bytes += to_peer,
            None => a.bytes_to_peer += to_peer,
        }
        match self.to_client.get_mut(&(owner, peer)) {
            Some(r) => r.bytes += to_client,
            None => a.bytes_to_client += to_client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::test_support::request;
    use stun_types::message::MessageWriteExt;
    use turn_types::message::CHANNEL_BIND;

    fn decode(number: Option<u16>, peer: Option<&str>) -> Result<ChannelBindRequest, TurnError> {
        let bytes = request(CHANNEL_BIND, "", |w, t| {
            if let Some(n) = number {
                w.add_attribute(&ChannelNumberAttr::new(n)).unwrap();
            }
            if let Some(p) = peer {
                w.add_attribute(&XorPeerAddress::new(p.parse().unwrap(), t))
                    .unwrap();
            }
        });
        ChannelBindRequest::decode(&Message::from_bytes(&bytes).unwrap())
    }

    #[test]
    fn channel_bind_needs_a_number_and_a_peer() {
        assert!(matches!(
            decode(None, Some("8.8.8.8:1")),
            Err(TurnError::BadRequest(_))
        ));
        assert!(matches!(
            decode(Some(0x4000), None),
            Err(TurnError::BadRequest(_))
        ));
        let ok = decode(Some(0x4001), Some("8.8.8.8:1")).unwrap();
        assert_eq!((ok.number, ok.peer), (0x4001, "8.8.8.8:1".parse().unwrap()));
        // The range is the handler's decision (it depends on configuration), not the codec's.
        assert_eq!(
            decode(Some(0x3FFF), Some("8.8.8.8:1")).unwrap().number,
            0x3FFF
        );
    }
}
