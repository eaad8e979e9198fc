//! Every protocol failure as one type, and the one place that turns it into an answer.
//!
//! Handlers return `Result<Reply, TurnError>`; `Core::answer` maps a [`TurnError`] to its
//! STUN error code (RFC 8489 §14.8, RFC 8656 §19): 401/438 get REALM and a fresh NONCE
//! (RFC 8489 §9.2.4) and are rate limited per source over UDP (SECURITY: reflection), 420
//! lists UNKNOWN-ATTRIBUTES (§6.3.1), errors after authentication are signed (§9.2.4), and
//! Allocate failures are counted by code.

use super::core::{Core, Request};
use super::reply::{Finish, Reply};
use super::resources::{QuotaExceeded, RelayResources};
use super::{Transport, integrity::Algo};
use crate::auth::LongTermKey;
use std::time::Instant;
use stun_types::attribute::{
    AlternateServer, AttributeType, ErrorCode, Nonce, Realm, UnknownAttributes,
};
use turn_types::message::ALLOCATE;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// Malformed or contradictory attributes (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// No MESSAGE-INTEGRITY: the client must be challenged (401 with REALM and NONCE).
    #[error("credentials required")]
    Unauthenticated,
    /// Wrong realm, unknown user or wrong key (401, after the failure rate limit).
    #[error("authentication failed")]
    AuthFailed,
    /// The nonce is not ours, expired or bound to another address (438).
    #[error("stale nonce")]
    StaleNonce,
    /// Comprehension-required attributes natpass does not understand (420).
    #[error("unknown comprehension-required attributes")]
    UnknownAttributes(Vec<AttributeType>),
    /// The peer address is denied by policy (403).
    #[error("peer denied by policy")]
    Forbidden,
    /// Allocate on a live 5-tuple, or another request without one (437).
    #[error("allocation mismatch")]
    AllocationMismatch,
    /// Credentials other than the allocation owner's (441).
    #[error("wrong credentials for this allocation")]
    WrongCredentials,
    /// REQUESTED-TRANSPORT other than UDP (442).
    #[error("unsupported transport protocol")]
    UnsupportedTransport,
    /// No relay address of the requested family (440).
    #[error("address family not supported")]
    AddressFamilyNotSupported,
    /// The peer's family has no relayed address in this allocation (443).
    #[error("peer address family mismatch")]
    PeerAddressFamilyMismatch,
    /// A quota is full (486).
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// No relay port, too many permissions or channels, or draining (508).
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(&'static str),
    /// Draining, with another server to go to (300 with ALTERNATE-SERVER, RFC 8489 §10).
    #[error("try alternate server {0}")]
    TryAlternate(std::net::SocketAddr),
}

impl TurnError {
    /// The STUN error code.
    pub fn code(&self) -> u16 {
        match self {
            TurnError::BadRequest(_) => ErrorCode::BAD_REQUEST,
            TurnError::Unauthenticated | TurnError::AuthFailed => ErrorCode::UNAUTHORIZED,
            TurnError::StaleNonce => ErrorCode::STALE_NONCE,
            TurnError::UnknownAttributes(_) => ErrorCode::UNKNOWN_ATTRIBUTE,
            TurnError::Forbidden => ErrorCode::FORBIDDEN,
            TurnError::AllocationMismatch => ErrorCode::ALLOCATION_MISMATCH,
            TurnError::WrongCredentials => ErrorCode::WRONG_CREDENTIALS,
            TurnError::UnsupportedTransport => ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
            TurnError::AddressFamilyNotSupported => ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
            TurnError::PeerAddressFamilyMismatch => ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
            TurnError::Quota(_) => ErrorCode::ALLOCATION_QUOTA_REACHED,
            TurnError::InsufficientCapacity(_) => ErrorCode::INSUFFICIENT_CAPACITY,
            TurnError::TryAlternate(_) => ErrorCode::TRY_ALTERNATE,
        }
    }

    /// 401 and 438 answers carry REALM and a fresh NONCE and no reason phrase.
    fn is_challenge(&self) -> bool {
        matches!(
            self,
            TurnError::Unauthenticated | TurnError::AuthFailed | TurnError::StaleNonce
        )
    }
}

/// The key a request was authenticated with, for signing its answer.
pub type Signer = Option<(Algo, LongTermKey)>;

impl<R: RelayResources> Core<R> {
    /// The bytes to send for a handler's result, or None when rate limits say to stay silent.
    pub(crate) fn answer(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        sign: Signer,
        result: Result<Reply, TurnError>,
    ) -> Option<Vec<u8>> {
        let err = match result {
            Ok(reply) => return Some(reply.finish(&self.finish(req, sign))),
            Err(e) => e,
        };
        if err.is_challenge() {
            return self.challenge(now, req, &err);
        }
        tracing::debug!(five_tuple = %req.ft, method = %req.msg.method(), error = %err, "request refused");
        if req.msg.method() == ALLOCATE {
            self.stats.allocate_error(err.code());
        }
        let reason = ErrorCode::default_reason_for_code(err.code());
        let mut reply = Reply::error(req.msg, err.code(), reason);
        if let TurnError::UnknownAttributes(unknown) = &err {
            reply.add(&UnknownAttributes::new(unknown));
        }
        if let TurnError::TryAlternate(addr) = &err {
            reply.add(&AlternateServer::new(*addr));
        }
        Some(reply.finish(&self.finish(req, sign)))
    }

    fn finish(&self, req: &Request<'_, '_>, sign: Signer) -> Finish<'_> {
        Finish {
            software: self.cfg.software.as_deref(),
            sign,
            fingerprint: req.fingerprint,
        }
    }

    /// 401/438 with REALM and a fresh NONCE, unsigned. Failures are limited per source IP;
    /// over UDP (spoofable sources, amplification) every challenge is too. A stream's source
    /// is proven by its handshake and capped per IP, and a dropped answer there would leave an
    /// honest client waiting forever.
    fn challenge(
        &mut self,
        now: Instant,
        req: &Request<'_, '_>,
        err: &TurnError,
    ) -> Option<Vec<u8>> {
        let ip = req.ft.client.ip();
        if *err == TurnError::AuthFailed {
            self.stats.auth_failures += 1;
            if !self.failures.allow(ip, now) {
                self.stats.failures_suppressed += 1;
                return None;
            }
        }
        if req.ft.transport == Transport::Udp && !self.challenges.allow(ip, now) {
            self.stats.challenges_suppressed += 1;
            return None;
        }
        if req.msg.method() == ALLOCATE {
            self.stats.allocate_error(err.code());
        }
        let nonce = self.nonces.issue(self.unix(now), ip);
        // No reason phrase: clients act on the code, and an answer to an unauthenticated
        // (possibly spoofed) request stays as small as REALM and NONCE allow.
        let mut reply = Reply::error(req.msg, err.code(), "");
        if let Ok(realm) = Realm::new(self.creds.realm()) {
            reply.add(&realm);
        }
        if let Ok(n) = Nonce::new(&nonce) {
            reply.add(&n);
        }
        Some(reply.finish(&self.finish(req, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_rfc_code() {
        let cases = [
            (TurnError::BadRequest("x"), 400),
            (TurnError::Unauthenticated, 401),
            (TurnError::AuthFailed, 401),
            (TurnError::Forbidden, 403),
            (TurnError::UnknownAttributes(vec![]), 420),
            (TurnError::AllocationMismatch, 437),
            (TurnError::StaleNonce, 438),
            (TurnError::AddressFamilyNotSupported, 440),
            (TurnError::WrongCredentials, 441),
            (TurnError::UnsupportedTransport, 442),
            (TurnError::PeerAddressFamilyMismatch, 443),
            (TurnError::Quota(QuotaExceeded::Ip), 486),
            (TurnError::InsufficientCapacity("x"), 508),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.is_challenge(), code == 401 || code == 438);
        }
    }
}
