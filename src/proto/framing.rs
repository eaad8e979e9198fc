//! Stream framing (RFC 8656 §12.5 / RFC 8489 §6.2.2): over TCP and TLS, STUN messages and
//! ChannelData follow each other back to back; ChannelData is padded to a multiple of 4 bytes.
//! The frame length is known from the first 4 bytes of either kind.

/// Why a byte stream cannot be framed: the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// First two bits are neither `00` (STUN) nor `01` (ChannelData).
    #[error("neither STUN nor ChannelData")]
    NotTurn,
    /// A STUN length that is not a multiple of 4.
    #[error("STUN length not a multiple of 4")]
    BadLength,
}

/// Total length of the frame at the start of `buf` (ChannelData including its padding), or
/// `None` when fewer than 4 bytes are buffered. Never reads past `buf`.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match buf[0] >> 6 {
        0 => {
            if len % 4 != 0 {
                return Err(FrameError::BadLength);
            }
            Ok(Some(20 + len))
        }
        1 => Ok(Some(4 + len + super::channel_data::stream_padding(len))),
        _ => Err(FrameError::NotTurn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stun_and_padded_channel_data() {
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 1, 0, 8]), Ok(Some(28)));
        assert_eq!(frame_len(&[0, 1, 0, 6]), Err(FrameError::BadLength));
        assert_eq!(frame_len(&[0x40, 0, 0, 5]), Ok(Some(12)));
        assert_eq!(frame_len(&[0x40, 0, 0, 0]), Ok(Some(4)));
        assert_eq!(frame_len(&[0x40, 0, 0xff, 0xff]), Ok(Some(4 + 65536)));
        assert_eq!(frame_len(&[0x80, 0, 0, 0]), Err(FrameError::NotTurn));
    }
}
