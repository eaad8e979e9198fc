//! Long-term credential check (RFC 8489 §9.2.4; RFC 8656 §5): MESSAGE-INTEGRITY or
//! MESSAGE-INTEGRITY-SHA256 with the key of USERNAME in REALM, a NONCE this server issued to
//! this source and still valid (stateless HMAC nonces, [`crate::auth::nonce`]). Static users
//! and TURN REST usernames (`expiry:id`) come from the [`Credentials`] snapshot.
//!
//! Missing integrity is a challenge (401), a bad nonce 438, anything else wrong 401 after the
//! failure limit — decided in [`super::error`]. Keys are compared in constant time, and every
//! candidate key is checked so timing does not tell which one matched.
//!
//! [`Credentials`]: crate::auth::Credentials

use super::core::{Core, Request};
use super::error::TurnError;
use super::integrity::{self, Algo};
use super::resources::RelayResources;
use crate::auth::LongTermKey;
use crate::auth::nonce::NonceCheck;
use std::time::Instant;
use stun_types::attribute::{Nonce, Realm, Username};

/// A successfully authenticated request.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    pub key: LongTermKey,
    pub algo: Algo,
    pub username: Box<str>,
    /// Whom quotas count against (REST: the name after the expiry).
    pub quota_id: Box<str>,
}

impl<R: RelayResources> Core<R> {
    pub(crate) fn authenticate(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
    ) -> Result<Auth, TurnError> {
        let msg = req.msg;
        let (algo, offset) = integrity::find(msg).ok_or(TurnError::Unauthenticated)?;
        let (Ok(user), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            return Err(TurnError::BadRequest("USERNAME, REALM and NONCE"));
        };
        let unix = self.unix(now);
        if self.nonces.check(nonce.nonce(), unix, req.ft.client.ip()) != NonceCheck::Valid {
            return Err(TurnError::StaleNonce);
        }
        if realm.realm() != self.creds.realm() {
            return Err(TurnError::AuthFailed);
        }
        let username = user.username();
        let (keys, quota_id) = self
            .creds
            .keys_for(username, unix)
            .map_err(|_| TurnError::AuthFailed)?;
        let mut found = None;
        for k in keys.as_slice() {
            if integrity::verify(msg, algo, offset, k) && found.is_none() {
                found = Some(*k);
            }
        }
        let key = found.ok_or(TurnError::AuthFailed)?;
        Ok(Auth {
            key,
            algo,
            username: username.into(),
            quota_id: quota_id.into(),
        })
    }
}
