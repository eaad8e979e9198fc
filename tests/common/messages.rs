//! STUN/TURN messages built and read with stun-types' own code (its MESSAGE-INTEGRITY, not
//! natpass's), so the tests do not check natpass against itself.

#![allow(unused_imports)]
use super::prelude::*;
use super::*;

pub fn request(method: Method, f: impl FnOnce(&mut MessageWriteVec, TransactionId)) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Request, method),
        txid,
        MessageWriteVec::new(),
    );
    f(&mut w, txid);
    w.finish()
}

pub fn indication(method: Method, f: impl FnOnce(&mut MessageWriteVec, TransactionId)) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, method),
        txid,
        MessageWriteVec::new(),
    );
    f(&mut w, txid);
    w.finish()
}

pub fn allocate_plain() -> Vec<u8> {
    request(ALLOCATE, |w, _| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    })
}

/// A request signed by stun-types' own MESSAGE-INTEGRITY code (SHA-1, MD5 long-term key), with
/// FINGERPRINT, as browsers send.
pub fn signed(
    method: Method,
    user: &str,
    pass: &str,
    nonce: &str,
    f: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    signed_with(
        method,
        user,
        pass,
        REALM,
        nonce,
        IntegrityAlgorithm::Sha1,
        f,
    )
}

pub fn signed_with(
    method: Method,
    user: &str,
    pass: &str,
    realm: &str,
    nonce: &str,
    algo: IntegrityAlgorithm,
    f: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Request, method),
        txid,
        MessageWriteVec::new(),
    );
    f(&mut w, txid);
    w.add_attribute(&Username::new(user).unwrap()).unwrap();
    w.add_attribute(&Realm::new(realm).unwrap()).unwrap();
    w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
    let creds = LongTermKeyCredentials::new(user.into(), pass.into(), realm.into());
    w.add_message_integrity(&MessageIntegrityCredentials::LongTerm(creds), algo)
        .unwrap();
    w.add_fingerprint().unwrap();
    w.finish()
}

pub fn error_code(resp: &[u8]) -> Option<u16> {
    let m = Message::from_bytes(resp).expect("reply parses");
    if m.has_class(MessageClass::Error) {
        Some(
            m.attribute::<ErrorCode>()
                .expect("error has ERROR-CODE")
                .code(),
        )
    } else {
        assert!(m.has_class(MessageClass::Success), "reply is a response");
        None
    }
}

pub fn relayed(resp: &[u8]) -> SocketAddr {
    let m = Message::from_bytes(resp).unwrap();
    m.attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(m.transaction_id())
}

pub fn mapped(resp: &[u8]) -> SocketAddr {
    let m = Message::from_bytes(resp).unwrap();
    m.attribute::<XorMappedAddress>()
        .unwrap()
        .addr(m.transaction_id())
}

pub fn lifetime(resp: &[u8]) -> u32 {
    Message::from_bytes(resp)
        .unwrap()
        .attribute::<Lifetime>()
        .unwrap()
        .seconds()
}

pub fn has_fingerprint(resp: &[u8]) -> bool {
    Message::from_bytes(resp)
        .unwrap()
        .has_attribute(Fingerprint::TYPE)
}

pub fn peers_attr(w: &mut MessageWriteVec, txid: TransactionId, peer: &str) {
    w.add_attribute(&XorPeerAddress::new(peer.parse().unwrap(), txid))
        .unwrap();
}

/// A signed Allocate for UDP relaying.
pub fn allocate_req(user: &str, pass: &str, nonce: &str) -> Vec<u8> {
    signed(ALLOCATE, user, pass, nonce, |w, _| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    })
}

pub fn create_permission(user: &str, pass: &str, nonce: &str, peers: &[&str]) -> Vec<u8> {
    signed(CREATE_PERMISSION, user, pass, nonce, |w, t| {
        for p in peers {
            peers_attr(w, t, p);
        }
    })
}

pub fn channel_bind(user: &str, pass: &str, nonce: &str, ch: u16, peer: &str) -> Vec<u8> {
    signed(CHANNEL_BIND, user, pass, nonce, |w, t| {
        w.add_attribute(&ChannelNumber::new(ch)).unwrap();
        peers_attr(w, t, peer);
    })
}

pub fn refresh(user: &str, pass: &str, nonce: &str, secs: Option<u32>) -> Vec<u8> {
    signed(REFRESH, user, pass, nonce, |w, _| {
        if let Some(s) = secs {
            w.add_attribute(&Lifetime::new(s)).unwrap();
        }
    })
}

pub fn send_indication(peer: &str, payload: &[u8]) -> Vec<u8> {
    indication(SEND, |w, t| {
        peers_attr(w, t, peer);
        w.add_attribute(&Data::new(payload)).unwrap();
    })
}

/// A ChannelData datagram (the framing is natpass's one implementation, checked against the
/// RFC layout in its own unit tests).
pub fn channel_data(ch: u16, payload: &[u8]) -> Vec<u8> {
    let ch = natpass::proto::ChannelNumber::new(ch).expect("a channel number");
    natpass::proto::channel_data::encode(ch, payload, false)
}
