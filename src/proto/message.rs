//! Decoding what a client sends, once, into a typed message (RFC 8656 §12: the first two bits
//! tell STUN from ChannelData; RFC 8489 §6: header, length, magic cookie).
//!
//! Each TURN method's attributes are then read into its own request type
//! ([`AllocateRequest`](super::allocation::AllocateRequest),
//! [`RefreshRequest`](super::allocation::RefreshRequest),
//! [`CreatePermissionRequest`](super::permission::CreatePermissionRequest),
//! [`ChannelBindRequest`](super::channel::ChannelBindRequest),
//! [`SendIndication`](super::indication::SendIndication)) by that module, so a handler never
//! parses.

use super::channel_data::ChannelData;
use super::error::TurnError;
use super::stats::DropReason;
use super::{Kind, classify};
use stun_types::attribute::{
    Attribute, AttributeFromRaw, AttributeStaticType, AttributeType, Fingerprint, MessageIntegrity,
    MessageIntegritySha256,
};
use stun_types::message::{Message, MessageClass, StunParseError};
use turn_types::message::SEND;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// One datagram or stream frame from a client.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// ChannelData (RFC 8656 §12.4).
    ChannelData(ChannelData<'a>),
    /// A STUN request.
    Request(Message<'a>),
    /// A Send indication (RFC 8656 §11.2).
    Send(Message<'a>),
    /// Any other indication (Binding keepalives): absorbed silently.
    OtherIndication,
    /// An RFC 3489 message (no magic cookie): maybe a classic Binding request.
    Classic(&'a [u8]),
}

/// Classify and parse `data`. Responses, unknown first bits, bad lengths and unparsable
/// messages are [`DropReason::Malformed`]; ChannelData on a channel number that cannot exist
/// or longer than its datagram too (RFC 8656 §12.4: discard).
pub fn decode(data: &[u8]) -> Result<ClientMessage<'_>, DropReason> {
    let first = *data.first().ok_or(DropReason::Malformed)?;
    match classify(first) {
        Kind::ChannelData => ChannelData::parse(data)
            .map(ClientMessage::ChannelData)
            .map_err(|_| DropReason::Malformed),
        Kind::Stun => decode_stun(data),
        Kind::Other => Err(DropReason::Malformed),
    }
}

fn decode_stun(data: &[u8]) -> Result<ClientMessage<'_>, DropReason> {
    if data.len() < 20 {
        return Err(DropReason::Malformed);
    }
    if data[4..8] != MAGIC_COOKIE {
        return Ok(ClientMessage::Classic(data));
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if 20 + len != data.len() || len % 4 != 0 {
        return Err(DropReason::Malformed);
    }
    let msg = Message::from_bytes(data).map_err(|_| DropReason::Malformed)?;
    match msg.class() {
        MessageClass::Request => Ok(ClientMessage::Request(msg)),
        MessageClass::Indication if msg.has_method(SEND) => Ok(ClientMessage::Send(msg)),
        MessageClass::Indication => Ok(ClientMessage::OtherIndication),
        _ => Err(DropReason::Malformed),
    }
}

/// Attributes natpass understands in requests; any other comprehension-required attribute
/// gets 420 (RFC 8489 §6.3.1).
const KNOWN: &[u16] = &[
    0x0006, // USERNAME
    0x0014, // REALM
    0x0015, // NONCE
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0017, // REQUESTED-ADDRESS-FAMILY
    0x0018, // EVEN-PORT
    0x0019, // REQUESTED-TRANSPORT
    0x0022, // RESERVATION-TOKEN
    0x0024, // PRIORITY (ICE, ignored)
    0x0025, // USE-CANDIDATE (ICE, ignored)
];

/// Comprehension-required attributes of `msg` that natpass does not understand, apart from
/// those in `also_known` (e.g. CHANGE-REQUEST when RFC 5780 is on).
pub fn unknown_required(msg: &Message<'_>, also_known: &[u16]) -> Result<(), TurnError> {
    let mut unknown: Vec<AttributeType> = Vec::new();
    for (_, a) in msg.iter_attributes() {
        let t = a.get_type();
        if t.comprehension_required()
            && !KNOWN.contains(&t.value())
            && !also_known.contains(&t.value())
            && t != MessageIntegrity::TYPE
            && t != MessageIntegritySha256::TYPE
            && t != Fingerprint::TYPE
            && !unknown.contains(&t)
        {
            unknown.push(t);
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(TurnError::UnknownAttributes(unknown))
    }
}

/// An optional attribute: absent is `None`, present but malformed is 400.
pub fn optional<'a, A>(msg: &'a Message<'a>, name: &'static str) -> Result<Option<A>, TurnError>
where
    A: AttributeFromRaw<'a> + AttributeStaticType,
{
    match msg.attribute::<A>() {
        Ok(a) => Ok(Some(a)),
        Err(StunParseError::MissingAttribute(_)) => Ok(None),
        Err(_) => Err(TurnError::BadRequest(name)),
    }
}

/// A required attribute: absent or malformed is 400.
pub fn required<'a, A>(msg: &'a Message<'a>, name: &'static str) -> Result<A, TurnError>
where
    A: AttributeFromRaw<'a> + AttributeStaticType,
{
    optional(msg, name)?.ok_or(TurnError::BadRequest(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_two_bits_pick_the_kind() {
        assert!(matches!(
            decode(&[0x40, 0x00, 0x00, 0x01, 7]),
            Ok(ClientMessage::ChannelData(_))
        ));
        assert_eq!(decode(&[0x80, 0, 0, 0]).err(), Some(DropReason::Malformed));
        assert_eq!(decode(&[]).err(), Some(DropReason::Malformed));
    }

    #[test]
    fn stun_length_must_match_the_datagram_and_be_a_multiple_of_four() {
        let mut m = vec![0, 1, 0, 4, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[0; 12]);
        assert_eq!(
            decode(&m).err(),
            Some(DropReason::Malformed),
            "length says 4, has 0"
        );
        m[3] = 0;
        assert!(matches!(decode(&m), Ok(ClientMessage::Request(_))));
        m.extend_from_slice(&[0; 2]);
        assert_eq!(decode(&m).err(), Some(DropReason::Malformed));
    }

    #[test]
    fn cookie_less_messages_go_to_the_rfc3489_path() {
        let m = [0u8; 20];
        assert!(matches!(decode(&m), Ok(ClientMessage::Classic(_))));
    }

    #[test]
    fn responses_from_clients_are_dropped() {
        let mut m = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[0; 12]);
        assert_eq!(decode(&m).err(), Some(DropReason::Malformed));
    }
}
