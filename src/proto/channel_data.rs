//! ChannelData messages (RFC 8656 §12.4): a 4-byte header — channel number, payload length —
//! then the payload; over TCP/TLS padded to a multiple of 4 bytes (§12.5).
//!
//! The one implementation of this framing: the core parses client frames with
//! [`ChannelData::parse`]; the shell writes the header for peer → client traffic in place with
//! [`encode_header_to_slice`]; the client, probes and tests build frames with [`encode`].

/// A channel number in the range ChannelData can carry (`0x4000..=0x7FFF`: the first two bits
/// are `01`). RFC 8656 §12 narrows valid bindings to `0x4000..=0x4FFF`; RFC 5766 clients (and
/// coturn's tools) use up to `0x7FFF`: which one a server accepts is configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(u16);

impl ChannelNumber {
    /// The lowest channel number.
    pub const MIN: ChannelNumber = ChannelNumber(0x4000);
    /// The highest number RFC 8656 allows in a ChannelBind.
    pub const MAX_RFC8656: ChannelNumber = ChannelNumber(0x4FFF);
    /// The highest number RFC 5766 allows (and ChannelData can carry).
    pub const MAX_RFC5766: ChannelNumber = ChannelNumber(0x7FFF);

    /// A channel number, if `n` is in `0x4000..=0x7FFF`.
    pub fn new(n: u16) -> Option<Self> {
        (Self::MIN.0..=Self::MAX_RFC5766.0)
            .contains(&n)
            .then_some(ChannelNumber(n))
    }

    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl std::fmt::Display for ChannelNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// Length of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// A parsed ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel.
    pub channel: ChannelNumber,
    /// The payload (without padding).
    pub payload: &'a [u8],
}

/// Why bytes are not a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Shorter than the header.
    #[error("shorter than the ChannelData header")]
    TooShort,
    /// The first two bits are not `01`.
    #[error("not a channel number")]
    NotChannelData,
    /// The length field claims more bytes than there are (RFC 8656 §12.4: discard).
    #[error("length field longer than the datagram")]
    Truncated,
}

impl<'a> ChannelData<'a> {
    /// Parse the message at the start of `data`. Bytes after the payload (stream padding, or
    /// anything a UDP sender appended) are ignored, as RFC 8656 §12.4 allows.
    pub fn parse(data: &'a [u8]) -> Result<Self, ChannelDataError> {
        let [a, b, c, d] = *data.first_chunk::<4>().ok_or(ChannelDataError::TooShort)?;
        let channel = ChannelNumber::new(u16::from_be_bytes([a, b]))
            .ok_or(ChannelDataError::NotChannelData)?;
        let len = usize::from(u16::from_be_bytes([c, d]));
        let payload = data
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(ChannelDataError::Truncated)?;
        Ok(ChannelData { channel, payload })
    }

    /// Where the payload sits in the buffer that was parsed.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        HEADER_LEN..HEADER_LEN + self.payload.len()
    }
}

/// Padding after a payload of `len` bytes on a stream (RFC 8656 §12.5).
pub fn stream_padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Write the header for a payload of `len` bytes into `out[..4]` (the shell reads peer
/// datagrams 4 bytes into its buffer so this needs no copy). Returns false, writing nothing,
/// when `out` is shorter than the header or `len` does not fit the length field.
pub fn encode_header_to_slice(channel: ChannelNumber, len: usize, out: &mut [u8]) -> bool {
    let (Ok(len), Some(h)) = (u16::try_from(len), out.first_chunk_mut::<4>()) else {
        return false;
    };
    h[..2].copy_from_slice(&channel.0.to_be_bytes());
    h[2..].copy_from_slice(&len.to_be_bytes());
    true
}

/// A whole ChannelData message, padded for streams when `stream` is true. Payloads longer than
/// the length field can say are cut at 65535 bytes.
pub fn encode(channel: ChannelNumber, payload: &[u8], stream: bool) -> Vec<u8> {
    let payload = &payload[..payload.len().min(usize::from(u16::MAX))];
    let pad = if stream {
        stream_padding(payload.len())
    } else {
        0
    };
    let mut v = vec![0; HEADER_LEN + payload.len() + pad];
    encode_header_to_slice(channel, payload.len(), &mut v);
    v[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_numbers_outside_0x4000_to_0x7fff_are_not_channels() {
        assert_eq!(ChannelNumber::new(0x3FFF), None);
        assert_eq!(ChannelNumber::new(0x8000), None);
        assert_eq!(ChannelNumber::new(0x4000), Some(ChannelNumber::MIN));
        assert_eq!(ChannelNumber::new(0x7FFF), Some(ChannelNumber::MAX_RFC5766));
    }

    #[test]
    fn parse_reads_the_payload_and_ignores_trailing_padding() {
        let m = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
        let cd = ChannelData::parse(&m).unwrap();
        assert_eq!(cd.channel.get(), 0x4001);
        assert_eq!(cd.payload, b"abc");
        assert_eq!(cd.payload_range(), 4..7);
    }

    #[test]
    fn length_longer_than_the_datagram_is_refused() {
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 5, 1, 2, 3, 4]),
            Err(ChannelDataError::Truncated)
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0]),
            Err(ChannelDataError::TooShort)
        );
        assert_eq!(
            ChannelData::parse(&[0x00, 1, 0, 0]),
            Err(ChannelDataError::NotChannelData)
        );
    }

    #[test]
    fn encode_pads_streams_to_four_bytes_and_round_trips() {
        let ch = ChannelNumber::new(0x4abc).unwrap();
        let dgram = encode(ch, b"hello", false);
        assert_eq!(dgram.len(), 9);
        let stream = encode(ch, b"hello", true);
        assert_eq!(stream.len(), 12);
        assert_eq!(&stream[9..], &[0, 0, 0]);
        for m in [&dgram, &stream] {
            let cd = ChannelData::parse(m).unwrap();
            assert_eq!((cd.channel, cd.payload), (ch, &b"hello"[..]));
        }
    }

    #[test]
    fn header_is_written_in_place_or_not_at_all() {
        let mut buf = [9u8; 8];
        assert!(encode_header_to_slice(ChannelNumber::MIN, 4, &mut buf));
        assert_eq!(&buf[..4], &[0x40, 0, 0, 4]);
        let mut short = [9u8; 3];
        assert!(!encode_header_to_slice(ChannelNumber::MIN, 4, &mut short));
        assert_eq!(short, [9; 3]);
        assert!(!encode_header_to_slice(
            ChannelNumber::MIN,
            70_000,
            &mut buf
        ));
    }
}
