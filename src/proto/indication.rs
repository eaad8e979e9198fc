//! Send and Data indications (RFC 8656 §11): a client without a channel sends
//! `Send(XOR-PEER-ADDRESS, DATA)`, and a peer's datagram reaches it as
//! `Data(XOR-PEER-ADDRESS, DATA)`. Both need a live permission for the peer's IP (§9), and on
//! our own relay IPs only allocated relay ports are reachable. Indications with unknown
//! comprehension-required attributes are dropped (RFC 8489 §6.3.2). The payload of a Send
//! leaves as a sub-slice of the client's datagram.

use super::FiveTuple;
use super::core::{Core, Forward, PeerRoute, Transmit};
use super::message::unknown_required;
use super::resources::{RelayOwner, RelayResources};
use super::stats::DropReason;
use rand::Rng;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;
use stun_types::attribute::{Attribute, AttributeStaticType};
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId,
};
use turn_types::attribute::{Data, XorPeerAddress};
use turn_types::message::DATA;

/// A Send indication's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendIndication {
    /// XOR-PEER-ADDRESS.
    pub peer: SocketAddr,
    /// Where DATA's value sits in the datagram.
    pub data: Range<usize>,
}

impl SendIndication {
    /// Read the attributes; anything wrong drops the indication.
    pub fn decode(msg: &Message<'_>) -> Result<Self, DropReason> {
        if unknown_required(msg, &[]).is_err() {
            return Err(DropReason::Malformed);
        }
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| DropReason::Malformed)?
            .addr(msg.transaction_id());
        let (off, raw) = msg
            .raw_attribute_and_offset(Data::TYPE)
            .ok_or(DropReason::Malformed)?;
        let start = off + 4;
        Ok(Self {
            peer,
            data: start..start + usize::from(raw.length()),
        })
    }
}

impl<R: RelayResources> Core<R> {
    /// Send indication (RFC 8656 §11.2): where its DATA goes.
    pub(crate) fn send_indication(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Forward, DropReason> {
        if unknown_required(msg, &[]).is_err() {
            return Err(DropReason::Malformed);
        }
        let &key = self.by_ft.get(&ft).ok_or(DropReason::NoAllocation)?;
        let send = SendIndication::decode(msg)?;
        let peer = send.peer;
        let perm = self
            .permission(key, peer.ip(), now)
            .ok_or(DropReason::NoPermission)?;
        if !self.res.peer_addr_allowed(perm.verdict, peer) {
            return Err(DropReason::DeniedPeer);
        }
        let a = &mut self.allocs[key];
        let r = a.relay_for(&peer).ok_or(DropReason::NoPermission)?;
        let f = Forward {
            handle: r.handle,
            relay: r.bind,
            peer,
            range: send.data,
        };
        a.bytes_to_peer += f.range.len() as u64;
        Ok(f)
    }

    /// A datagram from a peer without a channel: a Data indication (RFC 8656 §11.3), if the
    /// peer's IP has a live permission.
    pub(crate) fn data_indication(
        &mut self,
        now: Instant,
        owner: RelayOwner,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Result<PeerRoute, DropReason> {
        let key = owner.alloc;
        if self
            .allocs
            .get(key)
            .is_none_or(|a| a.serial != owner.serial)
        {
            return Err(DropReason::NoAllocation);
        }
        let perm = self
            .permission(key, peer.ip(), now)
            .ok_or(DropReason::NoPermission)?;
        if perm.own_relay() && !self.res.own_peer_reachable(peer) {
            return Err(DropReason::DeniedPeer);
        }
        let a = &mut self.allocs[key];
        a.bytes_to_client += payload.len() as u64;
        let ft = a.ft;
        let txid = TransactionId::from(self.rng.random::<u128>());
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Indication, DATA),
            txid,
            MessageWriteVec::with_capacity(40 + payload.len()),
        );
        let _ = w.add_attribute(&XorPeerAddress::new(peer, txid));
        let _ = w.add_attribute(&Data::new(payload));
        Ok(PeerRoute::Indication(Transmit {
            ft,
            data: w.finish(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turn_types::message::SEND;

    fn send(attrs: impl FnOnce(&mut MessageWriteVec, TransactionId)) -> Vec<u8> {
        let txid = TransactionId::generate();
        let mut w = Message::builder(
            MessageType::from_class_method(MessageClass::Indication, SEND),
            txid,
            MessageWriteVec::new(),
        );
        attrs(&mut w, txid);
        w.finish()
    }

    #[test]
    fn send_indication_names_the_data_value_inside_the_datagram() {
        let bytes = send(|w, t| {
            w.add_attribute(&XorPeerAddress::new("8.8.8.8:9".parse().unwrap(), t))
                .unwrap();
            w.add_attribute(&Data::new(b"payload")).unwrap();
        });
        let s = SendIndication::decode(&Message::from_bytes(&bytes).unwrap()).unwrap();
        assert_eq!(s.peer, "8.8.8.8:9".parse().unwrap());
        assert_eq!(&bytes[s.data], b"payload");
    }

    #[test]
    fn send_without_peer_or_data_is_dropped_as_malformed() {
        let no_data = send(|w, t| {
            w.add_attribute(&XorPeerAddress::new("8.8.8.8:9".parse().unwrap(), t))
                .unwrap();
        });
        let no_peer = send(|w, _| w.add_attribute(&Data::new(b"x")).unwrap());
        for b in [no_data, no_peer] {
            let m = Message::from_bytes(&b).unwrap();
            assert_eq!(SendIndication::decode(&m), Err(DropReason::Malformed));
        }
    }
}
