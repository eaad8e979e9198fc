//! RFC 5780 NAT behaviour discovery: with a second IP and port the server answers Binding
//! requests from any of four addresses (A1:P1, A1:P2, A2:P1, A2:P2), honours CHANGE-REQUEST
//! (§7.2) by answering from the flipped address, and tells the client OTHER-ADDRESS (§7.3) and
//! RESPONSE-ORIGIN (§7.4). Over UDP only: a stream cannot change its source.

use std::net::SocketAddr;

/// CHANGE-REQUEST (RFC 5780 §7.2).
pub const CHANGE_REQUEST: u16 = 0x0003;
/// RESPONSE-ORIGIN (RFC 5780 §7.3).
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// OTHER-ADDRESS (RFC 5780 §7.4).
pub const OTHER_ADDRESS: u16 = 0x802C;

/// RFC 5780 addresses: primary A1:P1 and alternate A2:P2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc5780 {
    /// A1:P1.
    pub primary: SocketAddr,
    /// A2:P2.
    pub alt: SocketAddr,
}

/// The flags of a CHANGE-REQUEST value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeRequest {
    /// Answer from the other IP.
    pub ip: bool,
    /// Answer from the other port.
    pub port: bool,
}

impl ChangeRequest {
    /// Parse the 4-byte value (None when shorter).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let flags = value.get(3)?;
        Some(Self {
            ip: flags & 0x04 != 0,
            port: flags & 0x02 != 0,
        })
    }
}

impl Rfc5780 {
    /// The listener reached by flipping IP and/or port of `at` (one of the four addresses).
    pub fn flip(&self, at: SocketAddr, change: ChangeRequest) -> Option<SocketAddr> {
        let ip_alt = flip_side(at.ip(), self.primary.ip(), self.alt.ip(), change.ip)?;
        let port_alt = flip_side(at.port(), self.primary.port(), self.alt.port(), change.port)?;
        let ip = if ip_alt {
            self.alt.ip()
        } else {
            self.primary.ip()
        };
        let port = if port_alt {
            self.alt.port()
        } else {
            self.primary.port()
        };
        Some(SocketAddr::new(ip, port))
    }

    /// All four addresses.
    pub fn all(&self) -> [SocketAddr; 4] {
        [
            self.primary,
            SocketAddr::new(self.primary.ip(), self.alt.port()),
            SocketAddr::new(self.alt.ip(), self.primary.port()),
            self.alt,
        ]
    }
}

/// Whether the flipped address is on the alternate side, for one of IP or port (None when
/// `here` is neither the primary nor the alternate value).
fn flip_side<T: PartialEq>(here: T, primary: T, alt: T, flip: bool) -> Option<bool> {
    let on_alt = if here == primary {
        false
    } else if here == alt {
        true
    } else {
        return None;
    };
    Some(on_alt ^ flip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five() -> Rfc5780 {
        Rfc5780 {
            primary: "127.0.0.1:3478".parse().unwrap(),
            alt: "127.0.0.2:3479".parse().unwrap(),
        }
    }

    #[test]
    fn change_request_flips_ip_port_or_both() {
        let f = five();
        let a = f.primary;
        let both = ChangeRequest {
            ip: true,
            port: true,
        };
        assert_eq!(f.flip(a, ChangeRequest::default()), Some(a));
        assert_eq!(f.flip(a, both), Some(f.alt));
        assert_eq!(
            f.flip(
                a,
                ChangeRequest {
                    ip: false,
                    port: true
                }
            ),
            Some("127.0.0.1:3479".parse().unwrap())
        );
        assert_eq!(f.flip(f.alt, both), Some(a));
        assert_eq!(f.flip("127.0.0.9:3478".parse().unwrap(), both), None);
        assert_eq!(f.all().len(), 4);
    }

    #[test]
    fn change_request_value_needs_four_bytes() {
        assert_eq!(ChangeRequest::parse(&[0, 0, 0]), None);
        assert_eq!(
            ChangeRequest::parse(&[0, 0, 0, 6]),
            Some(ChangeRequest {
                ip: true,
                port: true
            })
        );
    }
}
