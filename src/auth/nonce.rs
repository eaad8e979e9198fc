//! Stateless nonces (SECURITY.md "Credential attacks" and "Reflection"): a nonce carries its
//! own expiry and an HMAC over (expiry, client IP) with a per-process key, so the server keeps
//! no memory per request and a nonce replayed from another address or after expiry is stale
//! (438 with a fresh nonce).
//!
//! Format: 8 hex digits of the expiry (Unix seconds) followed by 24 hex digits of
//! HMAC-SHA256(key, expiry || ip)[..12]: 32 printable characters.

use hmac::{Hmac, Mac};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Result of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by us, for this address, not expired.
    Valid,
    /// Ours but expired, or not ours at all: answer 438 with a fresh nonce.
    Stale,
}

/// Issues and checks nonces.
#[derive(Clone)]
pub struct NonceIssuer {
    key: [u8; 32],
    lifetime: u64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl NonceIssuer {
    /// An issuer with a key (random per process, injected) and a lifetime in seconds.
    pub fn new(key: [u8; 32], lifetime: u64) -> Self {
        Self { key, lifetime }
    }

    fn mac(&self, expiry: u32, ip: IpAddr) -> [u8; 12] {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        m.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => m.update(&v4.octets()),
            IpAddr::V6(v6) => m.update(&v6.octets()),
        }
        let out = m.finalize().into_bytes();
        let mut r = [0u8; 12];
        r.copy_from_slice(&out[..12]);
        r
    }

    /// A fresh nonce for `ip` at `unix_now`.
    pub fn issue(&self, unix_now: u64, ip: IpAddr) -> String {
        let expiry = (unix_now.saturating_add(self.lifetime)).min(u64::from(u32::MAX)) as u32;
        let mac = self.mac(expiry, ip);
        let mut s = String::with_capacity(32);
        s.push_str(&format!("{expiry:08x}"));
        for b in mac {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
        s
    }

    /// Check a nonce presented by `ip` at `unix_now`.
    pub fn check(&self, nonce: &str, unix_now: u64, ip: IpAddr) -> NonceCheck {
        let b = nonce.as_bytes();
        if b.len() != 32 || !b.iter().all(u8::is_ascii_hexdigit) {
            return NonceCheck::Stale;
        }
        let Ok(expiry) = u32::from_str_radix(&nonce[..8], 16) else {
            return NonceCheck::Stale;
        };
        let mut given = [0u8; 12];
        for (i, g) in given.iter_mut().enumerate() {
            match u8::from_str_radix(&nonce[8 + 2 * i..10 + 2 * i], 16) {
                Ok(v) => *g = v,
                Err(_) => return NonceCheck::Stale,
            }
        }
        let ok: bool = self.mac(expiry, ip).ct_eq(&given).into();
        if ok && u64::from(expiry) >= unix_now {
            NonceCheck::Valid
        } else {
            NonceCheck::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_bound_to_address_and_expires() {
        let n = NonceIssuer::new([7; 32], 600);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let nonce = n.issue(1000, a);
        assert_eq!(nonce.len(), 32);
        assert_eq!(n.check(&nonce, 1000, a), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1600, a), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1601, a), NonceCheck::Stale);
        assert_eq!(n.check(&nonce, 1000, b), NonceCheck::Stale);
        let other = NonceIssuer::new([8; 32], 600);
        assert_eq!(other.check(&nonce, 1000, a), NonceCheck::Stale);
    }

    #[test]
    fn garbage_nonces_are_stale_not_panics() {
        let n = NonceIssuer::new([7; 32], 600);
        let a: IpAddr = "::1".parse().unwrap();
        for g in [
            "",
            "x",
            "ffffffff",
            "€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€",
            &"f".repeat(33),
            &"g".repeat(32),
        ] {
            assert_eq!(n.check(g, 0, a), NonceCheck::Stale);
        }
    }
}
