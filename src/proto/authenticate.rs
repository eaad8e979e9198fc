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
use crate::auth::nonce::NonceCheck;
use crate::auth::{AuthError, LongTermKey};
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
    /// A refused credential: logged at info with its reason (rate limited; the username is
    /// not a secret, the key and MAC are never logged).
    fn refused(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        user: &str,
        why: &'static str,
    ) -> TurnError {
        if let Some(more) = self.auth_notice.due(now) {
            tracing::info!(client = %req.ft.client, user = ?user, reason = why, more, "credentials refused (401)");
        }
        TurnError::AuthFailed
    }

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
        let username = user.username();
        if realm.realm() != self.creds.realm() {
            return Err(self.refused(now, req, username, "wrong realm"));
        }
        let (keys, quota_id) = match self.creds.keys_for(username, unix) {
            Ok(k) => k,
            Err(AuthError::UnknownUser) => {
                return Err(self.refused(now, req, username, "unknown user"));
            }
            Err(AuthError::Expired) => {
                return Err(self.refused(now, req, username, "REST credential expired"));
            }
            Err(AuthError::TooLong) => {
                let why = "REST credential expires beyond rest-max-ttl from now";
                return Err(self.refused(now, req, username, why));
            }
        };
        let mut found = None;
        for k in keys.as_slice() {
            if integrity::verify(msg, algo, offset, k) && found.is_none() {
                found = Some(*k);
            }
        }
        let Some(key) = found else {
            return Err(self.refused(now, req, username, "wrong password or REST secret"));
        };
        Ok(Auth {
            key,
            algo,
            username: username.into(),
            quota_id: quota_id.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::test_support::{client, code, core, logged, nonce_of, request, request_as};
    use crate::testing::FakeRelays;
    use std::time::{Duration, Instant};
    use stun_types::attribute::{Nonce, Realm, Username};
    use stun_types::message::{
        IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageIntegrityCredentials,
        MessageWrite, MessageWriteExt,
    };
    use turn_types::message::REFRESH;

    fn answer(
        c: &mut crate::proto::Core<crate::proto::test_support::FakeResources>,
        now: Instant,
        req: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        c.handle_client(now, client(), req, &mut FakeRelays::default(), &mut out);
        out.pop().map(|t| t.data).unwrap_or_default()
    }

    #[test]
    fn no_integrity_is_a_401_challenge_with_realm_and_nonce() {
        let now = Instant::now();
        let mut c = core(1, now);
        let a = answer(&mut c, now, &request(REFRESH, "", |_, _| {}));
        assert_eq!(code(&a), Some(401));
        let m = Message::from_bytes(&a).unwrap();
        assert_eq!(m.attribute::<Realm>().unwrap().realm(), "natpass");
        assert!(!nonce_of(&a).is_empty());
    }

    #[test]
    fn an_expired_nonce_is_438_and_a_wrong_password_401() {
        let now = Instant::now();
        let mut c = core(1, now);
        let nonce = nonce_of(&answer(&mut c, now, &request(REFRESH, "", |_, _| {})));
        let later = now + Duration::from_secs(601);
        assert_eq!(
            code(&answer(&mut c, later, &request(REFRESH, &nonce, |_, _| {}))),
            Some(438)
        );
        let mut w = Message::builder_request(REFRESH, stun_types::message::MessageWriteVec::new());
        w.add_attribute(&Username::new("alice").unwrap()).unwrap();
        w.add_attribute(&Realm::new("natpass").unwrap()).unwrap();
        w.add_attribute(&Nonce::new(&nonce).unwrap()).unwrap();
        let wrong = LongTermKeyCredentials::new("alice".into(), "nope".into(), "natpass".into());
        w.add_message_integrity(
            &MessageIntegrityCredentials::LongTerm(wrong),
            IntegrityAlgorithm::Sha1,
        )
        .unwrap();
        assert_eq!(code(&answer(&mut c, now, &w.finish())), Some(401));
        assert_eq!(c.stats().auth_failures, 1);
    }

    #[test]
    fn a_valid_request_passes_authentication_and_meets_allocation_ownership() {
        let now = Instant::now();
        let mut c = core(1, now);
        let nonce = nonce_of(&answer(&mut c, now, &request(REFRESH, "", |_, _| {})));
        // Authenticated, but there is no allocation on this 5-tuple: 437, signed.
        let a = answer(&mut c, now, &request(REFRESH, &nonce, |_, _| {}));
        assert_eq!(code(&a), Some(437));
        let m = Message::from_bytes(&a).unwrap();
        let (algo, off) = crate::proto::integrity::find(&m).expect("signed");
        let key = crate::auth::long_term_key("alice", "natpass", "pw");
        assert!(crate::proto::integrity::verify(&m, algo, off, &key));
    }

    #[test]
    fn refused_rest_credentials_are_logged_at_info_with_their_reason_once_per_ten_seconds() {
        let now = Instant::now();
        let mut c = core(1, now);
        let mut creds = crate::auth::Credentials::new("natpass", 3600);
        let secret = crate::auth::Secret::new("s3cret");
        creds.add_secret(secret.clone());
        c.set_credentials(creds);
        let nonce = nonce_of(&answer(&mut c, now, &request(REFRESH, "", |_, _| {})));
        let unix0 = crate::proto::test_support::UNIX0;
        let cases = [
            (format!("{}:web", unix0 - 10), "REST credential expired"),
            (format!("{}:web", unix0 + 86_400), "beyond rest-max-ttl"),
        ];
        for (i, (user, why)) in cases.iter().enumerate() {
            let pass = crate::auth::rest_password(&secret, user);
            let at = now + Duration::from_secs(20 * i as u64);
            let log = logged(|| {
                for _ in 0..5 {
                    let req = request_as(user, &pass, REFRESH, &nonce, |_, _| {});
                    assert_eq!(code(&answer(&mut c, at, &req)), Some(401));
                }
            });
            assert_eq!(log.matches("credentials refused").count(), 1, "{log}");
            assert!(log.contains(" INFO ") && log.contains(why), "{log}");
            assert!(!log.contains(&pass), "no password in the log");
        }
    }
}
