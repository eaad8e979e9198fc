//! Stateless nonces (docs/security.md, "Credential attacks" and "Reflection"): a nonce carries its
//! own expiry and an HMAC over (expiry, client IP) with a per-process key, so the server keeps
//! no memory per request and a nonce replayed from another address or after expiry is stale
//! (438 with a fresh nonce).
//!
//! Format: base64url (no padding) of the expiry (4 bytes, Unix seconds, big-endian) followed
//! by HMAC-SHA256(key, expiry || ip)[..8]: 16 printable characters. Short on purpose: the
//! NONCE rides in every 401 sent to an unauthenticated, possibly spoofed, source. 64 bits of
//! MAC are ample: a forged nonce only skips a challenge for an address the forger would
//! still need credentials for.

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

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Bytes of MAC in a nonce.
const MAC_LEN: usize = 8;
/// Characters in a nonce: base64 of 4 + 8 bytes.
const NONCE_LEN: usize = 16;

impl NonceIssuer {
    /// An issuer with a key (random per process, injected) and a lifetime in seconds.
    pub fn new(key: [u8; 32], lifetime: u64) -> Self {
        Self { key, lifetime }
    }

    fn mac(&self, expiry: u32, ip: IpAddr) -> [u8; MAC_LEN] {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        m.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => m.update(&v4.octets()),
            IpAddr::V6(v6) => m.update(&v6.octets()),
        }
        let out = m.finalize().into_bytes();
        let mut r = [0u8; MAC_LEN];
        r.copy_from_slice(&out[..MAC_LEN]);
        r
    }

    /// A fresh nonce for `ip` at `unix_now`.
    pub fn issue(&self, unix_now: u64, ip: IpAddr) -> String {
        let expiry = (unix_now.saturating_add(self.lifetime)).min(u64::from(u32::MAX)) as u32;
        let mut raw = [0u8; 4 + MAC_LEN];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&self.mac(expiry, ip));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Check a nonce presented by `ip` at `unix_now`.
    pub fn check(&self, nonce: &str, unix_now: u64, ip: IpAddr) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Stale;
        }
        let mut raw = [0u8; 4 + MAC_LEN];
        match URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) {
            Ok(n) if n == raw.len() => {}
            _ => return NonceCheck::Stale,
        }
        let expiry = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let given = &raw[4..];
        let ok: bool = self.mac(expiry, ip).ct_eq(given).into();
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
        assert_eq!(nonce.len(), NONCE_LEN);
        assert!(
            nonce
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
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
            "AAAAAAAAAAAAAAA=",
            "!!!!!!!!!!!!!!!!",
            "€€€€€€€€",
        ] {
            assert_eq!(n.check(g, 0, a), NonceCheck::Stale);
        }
    }
}
