//! Authentication: long-term credentials (RFC 8489 §9.2) and TURN REST API ephemeral
//! credentials (draft-uberti-behave-turn-rest), stateless HMAC nonces, and rate limiting of
//! failures.
//!
//! Keys, never passwords, are kept at rest: a static user is stored as
//! `MD5(username ":" realm ":" password)`. REST passwords are derived on demand from the
//! shared secrets: `base64(HMAC-SHA1(secret, username))`.

pub mod nonce;
pub mod ratelimit;

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::fmt;

/// A long-term key: MD5(user:realm:password).
pub type LongTermKey = [u8; 16];

/// A secret (REST shared secret, admin token…). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wrap secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
    /// A fresh random secret (32 bytes, URL-safe base64 text).
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into_bytes(),
        )
    }
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a secret must not be empty".into());
        }
        Ok(Self(s.as_bytes().to_vec()))
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Compute the long-term key MD5(user:realm:password).
pub fn long_term_key(user: &str, realm: &str, password: &str) -> LongTermKey {
    let mut d = Md5::new();
    d.update(user.as_bytes());
    d.update(b":");
    d.update(realm.as_bytes());
    d.update(b":");
    d.update(password.as_bytes());
    d.finalize().into()
}

/// Parse `0x` + 32 hex digits (coturn's `user=name:0xKEY` form).
pub fn parse_hex_key(s: &str) -> Option<LongTermKey> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The REST password for a username: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &Secret, username: &str) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.expose()).expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mint a REST credential: (`EXPIRY:NAME`, password).
pub fn mint_rest(secret: &Secret, name: &str, ttl_secs: u64, unix_now: u64) -> (String, String) {
    let username = if name.is_empty() {
        format!("{}", unix_now + ttl_secs)
    } else {
        format!("{}:{}", unix_now + ttl_secs, name)
    };
    let password = rest_password(secret, &username);
    (username, password)
}

/// Parse a REST username `EXPIRY[:NAME]` into (expiry, name).
pub fn parse_rest_username(username: &str) -> Option<(u64, &str)> {
    let (exp, name) = match username.split_once(':') {
        Some((e, n)) => (e, n),
        None => (username, ""),
    };
    if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((exp.parse().ok()?, name))
}

/// Why a username has no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a configured user, and not a REST username.
    #[error("unknown user")]
    UnknownUser,
    /// A REST username whose expiry has passed.
    #[error("REST credential expired")]
    Expired,
    /// A REST username that expires further ahead than the configured maximum TTL.
    #[error("REST credential lifetime exceeds the maximum")]
    TooLong,
}

/// The credential store: static users (keys) and REST secrets. Immutable; swapped on reload.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    users: HashMap<String, LongTermKey>,
    secrets: Vec<Secret>,
    rest_max_ttl: u64,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .field("rest_max_ttl", &self.rest_max_ttl)
            .finish()
    }
}

/// Up to this many candidate keys for one username (one per REST secret).
pub type Candidates = smallvec_lite::Keys;

/// A tiny fixed-capacity list of candidate keys: no allocation on the auth path.
pub mod smallvec_lite {
    use super::LongTermKey;
    /// At most 8 keys (operators rotate secrets, they do not keep dozens).
    #[derive(Debug, Default, Clone)]
    pub struct Keys {
        keys: [LongTermKey; 8],
        len: usize,
    }
    impl Keys {
        /// Append a key; ignored past capacity.
        pub fn push(&mut self, k: LongTermKey) {
            if self.len < self.keys.len() {
                self.keys[self.len] = k;
                self.len += 1;
            }
        }
        /// The keys.
        pub fn as_slice(&self) -> &[LongTermKey] {
            &self.keys[..self.len]
        }
    }
}

impl Credentials {
    /// A store for `realm`.
    pub fn new(realm: impl Into<String>, rest_max_ttl: u64) -> Self {
        Self {
            realm: realm.into(),
            users: HashMap::new(),
            secrets: Vec::new(),
            rest_max_ttl,
        }
    }
    /// Add a user with a password (only its key is kept).
    pub fn add_user(&mut self, name: &str, password: &str) {
        let key = long_term_key(name, &self.realm, password);
        self.users.insert(name.to_owned(), key);
    }
    /// Add a user by key.
    pub fn add_user_key(&mut self, name: &str, key: LongTermKey) {
        self.users.insert(name.to_owned(), key);
    }
    /// Add a REST shared secret (several may be active at once for rotation).
    pub fn add_secret(&mut self, secret: Secret) {
        self.secrets.push(secret);
    }
    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }
    /// The REST secrets.
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }
    /// Whether any credential exists at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.secrets.is_empty()
    }
    /// Maximum REST TTL accepted.
    pub fn rest_max_ttl(&self) -> u64 {
        self.rest_max_ttl
    }

    /// Candidate keys for `username` at `unix_now`, plus the quota identity (the user name,
    /// or for REST the name part after the expiry).
    pub fn keys_for<'u>(
        &self,
        username: &'u str,
        unix_now: u64,
    ) -> Result<(Candidates, &'u str), AuthError> {
        let mut out = Candidates::default();
        if let Some(k) = self.users.get(username) {
            out.push(*k);
            return Ok((out, username));
        }
        if self.secrets.is_empty() {
            return Err(AuthError::UnknownUser);
        }
        let (expiry, name) = parse_rest_username(username).ok_or(AuthError::UnknownUser)?;
        if expiry < unix_now {
            return Err(AuthError::Expired);
        }
        if expiry > unix_now.saturating_add(self.rest_max_ttl) {
            return Err(AuthError::TooLong);
        }
        for s in &self.secrets {
            let pw = rest_password(s, username);
            out.push(long_term_key(username, &self.realm, &pw));
        }
        let quota_id = if name.is_empty() { username } else { name };
        Ok((out, quota_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5769_long_term_key_matches_known_md5() {
        // RFC 5769 §2.4: user "マトリックス" (after SASLprep) realm "example.org" password "TheMatrIX".
        let key = long_term_key(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "example.org",
            "TheMatrIX",
        );
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        // Python: hashlib.md5("マトリックス:example.org:TheMatrIX".encode()).hexdigest()
        assert_eq!(hex, "e8ca7ad59d5eb0518e312911d2dab2a9");
        assert_eq!(parse_hex_key(&format!("0x{hex}")), Some(key));
    }

    #[test]
    fn hex_keys_parse_strictly() {
        assert!(parse_hex_key("0x00112233445566778899aabbccddeeff").is_some());
        assert!(parse_hex_key("00112233445566778899aabbccddeeff").is_none());
        assert!(parse_hex_key("0x00112233").is_none());
        assert!(parse_hex_key("0xzz112233445566778899aabbccddeeff").is_none());
        assert!(parse_hex_key("0x€0112233445566778899aabbccddeef").is_none());
    }

    #[test]
    fn rest_password_matches_coturn_formula() {
        // Reference value: printf '1700000000:alice' | python hmac.new(b"north", ..., sha1), base64
        let pw = rest_password(&Secret::new("north"), "1700000000:alice");
        assert_eq!(pw, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn rest_usernames_are_checked_for_expiry_and_ttl() {
        let mut c = Credentials::new("natpass", 3600);
        c.add_secret(Secret::new("old"));
        c.add_secret(Secret::new("new"));
        let now = 1_700_000_000;
        let (keys, id) = c.keys_for("1700000600:bob", now).unwrap();
        assert_eq!(keys.as_slice().len(), 2);
        assert_eq!(id, "bob");
        let (u, p) = mint_rest(&Secret::new("new"), "bob", 600, now);
        assert_eq!(keys.as_slice()[1], long_term_key(&u, "natpass", &p));
        assert_eq!(
            c.keys_for("1699999999:bob", now).unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            c.keys_for("1700003601:bob", now).unwrap_err(),
            AuthError::TooLong
        );
        assert_eq!(c.keys_for("bob", now).unwrap_err(), AuthError::UnknownUser);
        assert_eq!(
            c.keys_for("99999999999999999999999:x", now).unwrap_err(),
            AuthError::UnknownUser
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = Credentials::new("r", 60);
        c.add_secret(Secret::new("hunter2"));
        c.add_user("alice", "pw-alice");
        let s = format!("{c:?} {:?}", Secret::new("hunter2"));
        assert!(!s.contains("hunter2") && !s.contains("pw-alice"), "{s}");
    }
}
