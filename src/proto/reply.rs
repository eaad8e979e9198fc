//! Building responses (RFC 8489 §6.3): a success or error response to one request, finished
//! with SOFTWARE (when configured), MESSAGE-INTEGRITY(-SHA256) with the request's key and
//! algorithm when it was authenticated (§9.2.4), and FINGERPRINT when the request carried one
//! (§14.7). Reason phrases are fixed strings; every response is built in a fresh buffer.

use super::integrity::{self, Algo};
use crate::auth::LongTermKey;
use stun_types::attribute::{AttributeWrite, ErrorCode, Software};
use stun_types::message::{Message, MessageWrite, MessageWriteExt, MessageWriteVec};

/// A response under construction.
pub struct Reply {
    w: MessageWriteVec,
}

impl Reply {
    /// A success response to `req`.
    pub fn success(req: &Message<'_>) -> Self {
        Self {
            w: Message::builder_success(req, MessageWriteVec::with_capacity(128)),
        }
    }

    /// An error response to `req` with `code` and `reason` (empty for the smallest answer).
    pub fn error(req: &Message<'_>, code: u16, reason: &str) -> Self {
        let mut w = Message::builder_error(req, MessageWriteVec::with_capacity(96));
        if let Ok(e) = ErrorCode::new(code, reason) {
            let _ = w.add_attribute(&e);
        }
        Self { w }
    }

    /// Add an attribute.
    pub fn add(&mut self, attr: &dyn AttributeWrite) {
        // Only fails when the message would exceed 64 KiB, impossible for our replies.
        let _ = self.w.add_attribute(attr);
    }

    /// The finished bytes.
    pub fn finish(mut self, how: &Finish<'_>) -> Vec<u8> {
        if let Some(s) = how.software.and_then(|s| Software::new(s).ok()) {
            self.add(&s);
        }
        if let Some((algo, key)) = how.sign {
            integrity::sign(&mut self.w, algo, &key[..]);
        }
        if how.fingerprint {
            let _ = self.w.add_fingerprint();
        }
        self.w.finish()
    }
}

/// How the responses to one request are finished.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// SOFTWARE value (None: no SOFTWARE, the default).
    pub software: Option<&'a str>,
    /// Sign with this algorithm and key (the request was authenticated with them).
    pub sign: Option<(Algo, LongTermKey)>,
    /// Add FINGERPRINT (the request had one).
    pub fingerprint: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_types::attribute::{AttributeStaticType, Fingerprint, MessageIntegrity};
    use stun_types::message::BINDING;

    fn request(fingerprint: bool) -> Vec<u8> {
        let mut w = Message::builder_request(BINDING, MessageWriteVec::new());
        if fingerprint {
            w.add_fingerprint().unwrap();
        }
        w.finish()
    }

    #[test]
    fn responses_carry_fingerprint_only_when_the_request_did() {
        for fp in [false, true] {
            let req = request(fp);
            let req = Message::from_bytes(&req).unwrap();
            let how = Finish {
                software: None,
                sign: None,
                fingerprint: fp,
            };
            let out = Reply::success(&req).finish(&how);
            let m = Message::from_bytes(&out).unwrap();
            assert_eq!(m.has_attribute(Fingerprint::TYPE), fp);
            assert!(!m.has_attribute(Software::TYPE));
        }
    }

    #[test]
    fn authenticated_errors_are_signed_with_the_request_key() {
        let req = request(false);
        let req = Message::from_bytes(&req).unwrap();
        let key = crate::auth::long_term_key("u", "r", "p");
        let how = Finish {
            software: Some("natpass"),
            sign: Some((Algo::Sha1, key)),
            fingerprint: true,
        };
        let out = Reply::error(&req, 441, "Wrong Credentials").finish(&how);
        let m = Message::from_bytes(&out).unwrap();
        let (algo, off) = integrity::find(&m).unwrap();
        assert_eq!(algo, Algo::Sha1);
        assert!(integrity::verify(&m, algo, off, &key));
        assert!(m.has_attribute(MessageIntegrity::TYPE));
        assert_eq!(m.attribute::<ErrorCode>().unwrap().code(), 441);
        assert_eq!(m.attribute::<Software>().unwrap().software(), "natpass");
    }
}
