//! RFC 3489 ("classic STUN") Binding: requests without the magic cookie get a Binding
//! response with MAPPED-ADDRESS. stun-types rejects cookie-less messages, so this is the one
//! message natpass frames by hand. CHANGE-REQUEST and RESPONSE-ADDRESS are never honoured:
//! the answer goes to the source only (docs/security.md, "Reflection / amplification").

use std::net::SocketAddr;

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// If `data` is a classic Binding request, the response to send back to `client`.
pub fn binding_response(data: &[u8], client: SocketAddr) -> Option<Vec<u8>> {
    if data.len() < 20 || data[0..2] != [0x00, 0x01] || data[4..8] == MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if len % 4 != 0 || 20 + len != data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(44);
    out.extend_from_slice(&[0x01, 0x01, 0, 0]);
    out.extend_from_slice(&data[4..20]);
    match client {
        SocketAddr::V4(a) => {
            out.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01]);
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.extend_from_slice(&[0x00, 0x01, 0x00, 0x14, 0x00, 0x02]);
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
        }
    }
    let alen = (out.len() - 20) as u16;
    out[2..4].copy_from_slice(&alen.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_binding_gets_mapped_address() {
        let mut req = vec![0x00, 0x01, 0x00, 0x00];
        req.extend_from_slice(&[9; 16]);
        let resp = binding_response(&req, "192.0.2.7:5000".parse().unwrap()).unwrap();
        assert_eq!(&resp[0..4], &[0x01, 0x01, 0x00, 0x0c]);
        assert_eq!(&resp[4..20], &[9; 16]);
        assert_eq!(&resp[20..], &[0, 1, 0, 8, 0, 1, 0x13, 0x88, 192, 0, 2, 7]);
    }

    #[test]
    fn modern_and_malformed_messages_are_not_classic() {
        let mut modern = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        modern.extend_from_slice(&[0; 12]);
        let c = "192.0.2.7:5000".parse().unwrap();
        assert!(binding_response(&modern, c).is_none());
        let mut bad_len = vec![0x00, 0x01, 0x00, 0x08];
        bad_len.extend_from_slice(&[1; 16]);
        assert!(binding_response(&bad_len, c).is_none());
        assert!(binding_response(&[0, 1], c).is_none());
    }
}
