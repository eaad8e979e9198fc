//! Scenario tests on the sans-IO core with fake time: every rule of RFC 8656 that natpass
//! implements, and the UDP-applicable rules of docs/security.md. Named after the rule they check.

mod common;

use common::*;
use natpass::auth::Secret;
use natpass::auth::mint_rest;
use natpass::proto::{CoreConfig, PeerRoute, RelayAddr};
use natpass::relay::quota::QuotaLimits;
use std::net::SocketAddr;
use stun_types::attribute::{Nonce, Realm, Software, UnknownAttributes};
use stun_types::message::{BINDING, IntegrityAlgorithm, Message, MessageClass, MessageWriteExt};
use turn_types::AddressFamily;
use turn_types::attribute::{
    AdditionalAddressFamily, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, DATA};

const PEER: &str = "198.18.0.1:9"; // denied by default (benchmarking range)
const PUBLIC_PEER: &str = "8.8.8.8:5000";

/// Alice's allocation from `ft` with channel 0x4001 bound to PUBLIC_PEER: (relayed address,
/// the nonce that signed it).
fn bound_channel(h: &mut Harness, ft: natpass::proto::FiveTuple) -> (SocketAddr, String) {
    let relay = h.allocate(ft, "alice", "alicepw");
    let nonce = h.nonce(ft);
    let r = h.ask(
        ft,
        &channel_bind("alice", "alicepw", &nonce, 0x4001, PUBLIC_PEER),
    );
    assert_eq!(error_code(&r), None, "ChannelBind succeeds");
    (relay, nonce)
}
const PUBLIC_PEER2: &str = "1.1.1.1:6000";

fn h() -> Harness {
    Harness::new(Options::default())
}

fn h_default() -> Harness {
    Harness::new(Options::default())
}

/// RFC 8489 §7.3 Binding, RFC 3489 clients, §6.3 message handling and answers.
mod rfc8489_binding {
    use super::*;

    #[test]
    fn binding_gets_xor_mapped_address_and_fingerprint_only_when_asked() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let plain = request(BINDING, |_, _| {});
        let r = h.ask(ft, &plain);
        assert_eq!(mapped(&r), ft.client);
        assert!(!has_fingerprint(&r));
        let m = Message::from_bytes(&r).unwrap();
        assert!(m.attribute::<Software>().is_err(), "no SOFTWARE by default");
        // Amplification: the Binding answer is at most twice the request.
        assert!(r.len() <= 2 * plain.len().max(20) + 12);
        let with_fp = request(BINDING, |w, _| w.add_fingerprint().unwrap());
        let r = h.ask(ft, &with_fp);
        assert!(has_fingerprint(&r));
        assert!(r.len() <= 2 * with_fp.len());
    }

    #[test]
    fn classic_rfc3489_binding_gets_mapped_address() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let mut req = vec![0x00, 0x01, 0x00, 0x00];
        req.extend_from_slice(&[7; 16]);
        let r = h.ask(ft, &req);
        assert_eq!(&r[0..2], &[0x01, 0x01]);
        assert_eq!(&r[20..24], &[0x00, 0x01, 0x00, 0x08]);
    }

    #[test]
    fn malformed_datagrams_are_dropped_without_response_or_panic() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let good = request(BINDING, |w, _| w.add_fingerprint().unwrap());
        let mut bad_fp = good.clone();
        let n = bad_fp.len();
        bad_fp[n - 1] ^= 1;
        let mut truncated = good.clone();
        truncated.truncate(good.len() - 4);
        let mut long_len = good.clone();
        long_len[3] = 0xF0;
        let mut attr_overflow = request(BINDING, |w, _| {
            w.add_attribute(&Software::new("abcd").unwrap()).unwrap()
        });
        attr_overflow[22] = 0xFF; // attribute length beyond the message
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0; 19],
            vec![0xFF; 40],
            bad_fp,
            truncated,
            long_len,
            attr_overflow,
            vec![0x40, 0x00],          // ChannelData header too short
            vec![0x40, 0x00, 0x00, 9], // ChannelData longer than datagram
        ];
        for c in cases {
            let (r, f) = h.send(ft, &c);
            assert!(r.is_empty() && f.is_none(), "answered garbage {c:?}");
        }
    }

    #[test]
    fn responses_carry_no_stale_bytes_and_fixed_reason_phrases() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let r = h.ask(ft, &allocate_plain());
        let m = Message::from_bytes(&r).unwrap();
        let e = m.attribute::<stun_types::attribute::ErrorCode>().unwrap();
        // A challenge to an unauthenticated source carries no reason phrase (amplification):
        // header, ERROR-CODE, REALM and a 16-character NONCE, nothing else.
        assert_eq!(e.reason(), "");
        assert_eq!(
            r.len(),
            20 + 8 + 4 + REALM.len().next_multiple_of(4) + 4 + 16
        );
        // The whole response parses exactly (length field covers every byte).
        assert_eq!(r.len(), 20 + usize::from(u16::from_be_bytes([r[2], r[3]])));
        // Other errors keep their fixed phrase: a Binding with an unknown comprehension-required
        // attribute gets 420.
        let req = request(stun_types::message::BINDING, |w, _| {
            w.add_attribute(&stun_types::attribute::RawAttribute::new(
                stun_types::attribute::AttributeType::new(0x0077),
                &[1, 2, 3, 4],
            ))
            .unwrap();
        });
        let r = h.ask(ft, &req);
        let m = Message::from_bytes(&r).unwrap();
        let e = m.attribute::<stun_types::attribute::ErrorCode>().unwrap();
        assert_eq!((e.code(), e.reason()), (420, "Unknown Attribute"));
    }

    #[test]
    fn unknown_comprehension_required_attribute_gets_420_and_indications_with_one_are_dropped() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let unknown = stun_types::attribute::RawAttribute::new(
            stun_types::attribute::AttributeType::new(0x0077),
            &[1, 2, 3, 4],
        );
        let req = request(BINDING, |w, _| w.add_attribute(&unknown).unwrap());
        let r = h.ask(ft, &req);
        assert_eq!(error_code(&r), Some(420));
        let m = Message::from_bytes(&r).unwrap();
        let ua = m.attribute::<UnknownAttributes>().unwrap();
        assert!(ua.has_attribute(stun_types::attribute::AttributeType::new(0x0077)));
        assert!(m.attribute::<Software>().is_err());
        // Comprehension-optional unknown attributes are ignored.
        let opt = stun_types::attribute::RawAttribute::new(
            stun_types::attribute::AttributeType::new(0x8077),
            &[1, 2, 3, 4],
        );
        assert_eq!(
            error_code(&h.ask(ft, &request(BINDING, |w, _| w.add_attribute(&opt).unwrap()))),
            None
        );
        // An authenticated TURN request with one: 420 after authentication.
        h.allocate(ft, "alice", "alicepw");
        let ft2 = udp("203.0.113.9:4002");
        let nonce = h.nonce(ft2);
        let r = h.ask(
            ft2,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&unknown).unwrap();
            }),
        );
        assert_eq!(error_code(&r), Some(420));
        // Send indication with an unknown comprehension-required attribute: dropped.
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        let ind = indication(turn_types::message::SEND, |w, t| {
            peers_attr(w, t, PUBLIC_PEER);
            w.add_attribute(&turn_types::attribute::Data::new(b"x"))
                .unwrap();
            w.add_attribute(&unknown).unwrap();
        });
        let (r, f) = h.send(ft, &ind);
        assert!(r.is_empty() && f.is_none());
    }
}

/// RFC 5780 §7: CHANGE-REQUEST, OTHER-ADDRESS, RESPONSE-ORIGIN.
mod rfc5780_nat_discovery {
    use super::*;

    #[test]
    fn change_request_without_rfc5780_gets_420_and_with_it_answers_from_the_other_address() {
        let change = stun_types::attribute::RawAttribute::new(
            stun_types::attribute::AttributeType::new(0x0003),
            &[0, 0, 0, 6],
        );
        let req = request(BINDING, |w, _| w.add_attribute(&change).unwrap());
        let mut plain = h_default();
        let ft = udp("203.0.113.9:4000");
        assert_eq!(error_code(&plain.ask(ft, &req)), Some(420));

        let five = natpass::proto::Rfc5780 {
            primary: server_addr(),
            alt: "192.0.2.2:3479".parse().unwrap(),
        };
        let mut h = Harness::new(Options {
            cfg: CoreConfig {
                rfc5780: Some(five),
                ..CoreConfig::default()
            },
            ..Options::default()
        });
        h.out.clear();
        h.core
            .handle_client(h.now, ft, &req, &mut h.relays, &mut h.out);
        assert_eq!(h.out.len(), 1);
        assert_eq!(h.out[0].ft.server, five.alt, "answered from A2:P2");
        let m = Message::from_bytes(&h.out[0].data).unwrap();
        assert!(
            m.has_attribute(stun_types::attribute::AttributeType::new(0x802C)),
            "OTHER-ADDRESS"
        );
        assert!(
            m.has_attribute(stun_types::attribute::AttributeType::new(0x802B)),
            "RESPONSE-ORIGIN"
        );
        assert_eq!(
            five.flip(
                five.primary,
                natpass::proto::rfc5780::ChangeRequest {
                    ip: false,
                    port: true
                }
            ),
            Some("192.0.2.1:3479".parse().unwrap())
        );
        assert_eq!(
            five.flip(
                "198.51.100.1:1".parse().unwrap(),
                natpass::proto::rfc5780::ChangeRequest {
                    ip: true,
                    port: true
                }
            ),
            None
        );
    }
}

/// RFC 8489 §9.2 long-term credentials and nonces; TURN REST usernames; rate limits on challenges and failures.
mod rfc8489_long_term_credentials {
    use super::*;

    #[test]
    fn allocate_without_credentials_gets_401_with_realm_and_nonce() {
        let mut h = h();
        let r = h.ask(udp("203.0.113.9:4000"), &allocate_plain());
        assert_eq!(error_code(&r), Some(401));
        let m = Message::from_bytes(&r).unwrap();
        assert_eq!(m.attribute::<Realm>().unwrap().realm(), REALM);
        assert_eq!(m.attribute::<Nonce>().unwrap().nonce().len(), 16);
    }

    #[test]
    fn allocate_with_wrong_password_or_unknown_user_or_realm_gets_401() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let nonce = h.nonce(ft);
        let alloc = |user: &str, pass: &str, realm: &str| {
            signed_with(
                ALLOCATE,
                user,
                pass,
                realm,
                &nonce,
                IntegrityAlgorithm::Sha1,
                |w, _| {
                    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                        .unwrap()
                },
            )
        };
        assert_eq!(
            error_code(&h.ask(ft, &alloc("alice", "wrong", REALM))),
            Some(401)
        );
        assert_eq!(
            error_code(&h.ask(ft, &alloc("mallory", "x", REALM))),
            Some(401)
        );
        assert_eq!(
            error_code(&h.ask(ft, &alloc("alice", "alicepw", "other"))),
            Some(401)
        );
        assert_eq!(h.core.allocation_count(), 0);
    }

    #[test]
    fn missing_username_realm_or_nonce_with_integrity_gets_400() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let req = request(ALLOCATE, |w, _| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
            let creds = stun_types::message::LongTermKeyCredentials::new(
                "alice".into(),
                "alicepw".into(),
                REALM.into(),
            );
            w.add_message_integrity(
                &stun_types::message::MessageIntegrityCredentials::LongTerm(creds),
                IntegrityAlgorithm::Sha1,
            )
            .unwrap();
        });
        assert_eq!(error_code(&h.ask(ft, &req)), Some(400));
    }

    #[test]
    fn stale_nonce_gets_438_with_a_fresh_nonce() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let nonce = h.nonce(ft);
        h.advance(601);
        let r = h.ask(ft, &allocate_req("alice", "alicepw", &nonce));
        assert_eq!(error_code(&r), Some(438));
        let fresh = Message::from_bytes(&r)
            .unwrap()
            .attribute::<Nonce>()
            .unwrap()
            .nonce()
            .to_owned();
        assert_ne!(fresh, nonce);
        let r = h.ask(ft, &allocate_req("alice", "alicepw", &fresh));
        assert_eq!(error_code(&r), None);
    }

    #[test]
    fn nonce_is_bound_to_the_client_address() {
        let mut h = h();
        let nonce = h.nonce(udp("203.0.113.9:4000"));
        let r = h.ask(
            udp("203.0.113.10:4000"),
            &allocate_req("alice", "alicepw", &nonce),
        );
        assert_eq!(error_code(&r), Some(438));
    }

    #[test]
    fn rest_credentials_work_with_either_active_secret_and_expired_ones_fail() {
        let mut h = h();
        for (i, secret) in ["old-secret", "new-secret"].into_iter().enumerate() {
            let (user, pass) = mint_rest(&Secret::new(secret), "web", 600, UNIX0);
            let ft = udp(&format!("203.0.113.9:{}", 4000 + i));
            h.allocate(ft, &user, &pass);
        }
        let (user, pass) = mint_rest(&Secret::new("new-secret"), "web", 60, UNIX0);
        let ft = udp("203.0.113.9:5000");
        h.advance(61);
        let nonce = h.nonce(ft);
        let r = h.ask(ft, &allocate_req(&user, &pass, &nonce));
        assert_eq!(error_code(&r), Some(401));
        let (user, pass) = mint_rest(&Secret::new("unknown"), "web", 600, UNIX0);
        let r = h.ask(ft, &allocate_req(&user, &pass, &nonce));
        assert_eq!(error_code(&r), Some(401));
    }

    #[test]
    fn user_given_by_hex_key_authenticates() {
        let mut h = h();
        h.allocate(udp("203.0.113.9:4000"), "carol", "carolpw");
    }

    #[test]
    fn sha256_message_integrity_with_md5_key_is_accepted() {
        // RFC 8489 §14.6 with the default (MD5) password algorithm: HMAC-SHA256 over the MD5 key.
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let nonce = h.nonce(ft);
        let key = natpass::auth::long_term_key("alice", REALM, "alicepw");
        let req = request(ALLOCATE, |w, _| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
            w.add_attribute(&stun_types::attribute::Username::new("alice").unwrap())
                .unwrap();
            w.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
            w.add_attribute(&Nonce::new(&nonce).unwrap()).unwrap();
            natpass::proto::integrity::sign(w, natpass::proto::integrity::Algo::Sha256, &key);
        });
        let r = h.ask(ft, &req);
        assert_eq!(error_code(&r), None);
        let m = Message::from_bytes(&r).unwrap();
        assert!(
            m.has_attribute(stun_types::attribute::AttributeType::new(0x001C)),
            "answered with SHA-256 integrity"
        );
    }

    #[test]
    fn unauthenticated_challenges_are_rate_limited_per_source() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let answered = (0..100)
            .filter(|_| !h.send(ft, &allocate_plain()).0.is_empty())
            .count();
        assert_eq!(answered, 10);
        let other = udp("203.0.113.10:4000");
        assert_eq!(
            h.send(other, &allocate_plain()).0.len(),
            1,
            "other sources unaffected"
        );
        h.advance(1);
        assert_eq!(
            h.send(ft, &allocate_plain()).0.len(),
            1,
            "refills with time"
        );
    }

    #[test]
    fn authentication_failures_are_rate_limited_per_source() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let nonce = h.nonce(ft);
        let bad = || allocate_req("alice", "guess", &nonce);
        let mut answered = 0;
        for i in 0..60 {
            if i % 9 == 0 {
                h.advance(1); // stay under the 401 challenge rate, test the failure limit
            }
            if !h.send(ft, &bad()).0.is_empty() {
                answered += 1;
            }
        }
        // A burst of 20, then 20 per minute: at most 22 answers in these ~6 seconds.
        assert!(answered <= 22, "{answered}");
        assert!(answered >= 20, "{answered}");
        assert!(h.core.stats().auth_failures >= 60);
    }
}

/// RFC 8656 §7 Allocate and Refresh, EVEN-PORT and RESERVATION-TOKEN, quotas, relay ports, timers.
mod rfc8656_allocations {
    use super::*;

    #[test]
    fn allocate_succeeds_signed_and_lifetime_is_clamped_to_600_3600() {
        let mut h = h();
        for (asked, granted) in [
            (Some(60), 600),
            (None, 600),
            (Some(1800), 1800),
            (Some(99_999), 3600),
        ] {
            let ft = udp(&format!(
                "203.0.113.9:{}",
                4000 + granted + asked.unwrap_or(1) % 1000
            ));
            let nonce = h.nonce(ft);
            let r = h.ask(
                ft,
                &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                        .unwrap();
                    if let Some(s) = asked {
                        w.add_attribute(&Lifetime::new(s)).unwrap();
                    }
                }),
            );
            assert_eq!(error_code(&r), None);
            assert_eq!(lifetime(&r), granted);
            assert_eq!(mapped(&r), ft.client);
            assert!(has_fingerprint(&r));
            // The success response is signed with the same key (verified by stun-types).
            let creds = stun_types::message::LongTermKeyCredentials::new(
                "alice".into(),
                "alicepw".into(),
                REALM.into(),
            );
            let key = stun_types::message::MessageIntegrityCredentials::LongTerm(creds)
                .make_key(IntegrityAlgorithm::Sha1);
            Message::from_bytes(&r)
                .unwrap()
                .validate_integrity_with_key(&key)
                .unwrap();
            let relay = relayed(&r);
            assert_eq!(relay.ip().to_string(), "192.0.2.100");
            assert!((50000..=50999).contains(&relay.port()));
        }
    }

    #[test]
    fn second_allocate_on_live_5tuple_gets_437_and_retransmission_gets_same_answer() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let nonce = h.nonce(ft);
        let req = allocate_req("alice", "alicepw", &nonce);
        let first = h.ask(ft, &req);
        assert_eq!(error_code(&first), None);
        let again = h.ask(ft, &req);
        assert_eq!(first, again, "retransmission answered identically");
        assert_eq!(h.core.allocation_count(), 1);
        assert_eq!(h.shared.ports.in_use(), 1);
        let other = allocate_req("alice", "alicepw", &nonce);
        assert_eq!(error_code(&h.ask(ft, &other)), Some(437));
        assert_eq!(h.core.allocation_count(), 1);
    }

    #[test]
    fn allocate_needs_requested_transport_udp() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let nonce = h.nonce(ft);
        let none = signed(ALLOCATE, "alice", "alicepw", &nonce, |_, _| {});
        assert_eq!(error_code(&h.ask(ft, &none)), Some(400));
        let tcp = signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
                .unwrap()
        });
        assert_eq!(error_code(&h.ask(ft, &tcp)), Some(442));
    }

    #[test]
    fn refresh_zero_deletes_allocation_frees_port_and_retransmission_is_answered_the_same() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        assert_eq!(h.shared.ports.in_use(), 1);
        let nonce = h.nonce(ft);
        let del = refresh("alice", "alicepw", &nonce, Some(0));
        let r = h.ask(ft, &del);
        assert_eq!(error_code(&r), None);
        assert_eq!(lifetime(&r), 0);
        assert_eq!(h.core.allocation_count(), 0);
        assert_eq!(h.shared.ports.in_use(), 0);
        assert!(h.relays.bound.is_empty());
        assert_eq!(h.shared.quotas.total(), 0);
        assert_eq!(
            h.ask(ft, &del),
            r,
            "retransmitted Refresh(0) gets the same answer"
        );
        // A new Refresh on the dead 5-tuple: 437.
        assert_eq!(
            error_code(&h.ask(ft, &refresh("alice", "alicepw", &nonce, Some(600)))),
            Some(437)
        );
    }

    #[test]
    fn refresh_extends_and_allocation_expires_at_its_lifetime() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        h.advance(500);
        let nonce = h.nonce(ft);
        let r = h.ask(ft, &refresh("alice", "alicepw", &nonce, Some(900)));
        assert_eq!(lifetime(&r), 900);
        h.advance(800); // 1300 s after creation: alive thanks to the refresh
        assert_eq!(h.core.allocation_count(), 1);
        h.advance(101);
        assert_eq!(h.core.allocation_count(), 0);
        assert_eq!(h.shared.ports.in_use(), 0);
        assert!(h.relays.bound.is_empty());
    }

    #[test]
    fn request_on_another_users_allocation_gets_441() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        assert_eq!(
            error_code(&h.ask(ft, &refresh("bob", "bobpw", &nonce, Some(600)))),
            Some(441)
        );
        assert_eq!(
            error_code(&h.ask(
                ft,
                &create_permission("bob", "bobpw", &nonce, &[PUBLIC_PEER])
            )),
            Some(441)
        );
    }

    #[test]
    fn quotas_per_user_per_ip_give_486_and_are_returned() {
        let mut h = Harness::new(Options {
            limits: QuotaLimits {
                per_user: 2,
                per_ip: 3,
                total: 100,
            },
            ..Options::default()
        });
        h.allocate(udp("203.0.113.1:1"), "alice", "alicepw");
        h.allocate(udp("203.0.113.2:1"), "alice", "alicepw");
        let ft = udp("203.0.113.3:1");
        let nonce = h.nonce(ft);
        let alloc = |u: &str, p: &str, n: &str| allocate_req(u, p, n);
        assert_eq!(
            error_code(&h.ask(ft, &alloc("alice", "alicepw", &nonce))),
            Some(486)
        );
        // Per IP: three from one IP, whatever the users.
        h.allocate(udp("203.0.113.4:1"), "bob", "bobpw");
        h.allocate(udp("203.0.113.4:2"), "carol", "carolpw");
        let (u, p) = mint_rest(&Secret::new("new-secret"), "x", 600, UNIX0);
        h.allocate(udp("203.0.113.4:3"), &u, &p);
        let ft4 = udp("203.0.113.4:4");
        let nonce4 = h.nonce(ft4);
        let (u, p) = mint_rest(&Secret::new("new-secret"), "y", 600, UNIX0);
        assert_eq!(error_code(&h.ask(ft4, &alloc(&u, &p, &nonce4))), Some(486));
        // Freed allocations give their quota back.
        let ft1 = udp("203.0.113.1:1");
        let n1 = h.nonce(ft1);
        h.ask(ft1, &refresh("alice", "alicepw", &n1, Some(0)));
        h.allocate(ft, "alice", "alicepw");
    }

    #[test]
    fn relay_port_exhaustion_gives_508_and_recovers_after_frees() {
        let mut h = Harness::new(Options {
            ports: (50000, 50001),
            ..Options::default()
        });
        h.relays.busy_ports.insert(50001); // taken by another program: skipped
        h.allocate(udp("203.0.113.1:1"), "alice", "alicepw");
        let ft = udp("203.0.113.2:1");
        let nonce = h.nonce(ft);
        let req = || allocate_req("bob", "bobpw", &nonce);
        assert_eq!(error_code(&h.ask(ft, &req())), Some(508));
        assert_eq!(
            h.shared.quotas.total(),
            1,
            "a refused allocation keeps no quota"
        );
        h.relays.busy_ports.clear();
        assert_eq!(error_code(&h.ask(ft, &req())), None);
    }

    /// An Allocate with EVEN-PORT (R set) from `from`: the answer and its RESERVATION-TOKEN.
    fn allocate_even_pair(h: &mut Harness, from: &str) -> (Vec<u8>, u64) {
        let ft = udp(from);
        let nonce = h.nonce(ft);
        let r = h.ask(
            ft,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&EvenPort::new(true)).unwrap();
            }),
        );
        let token = Message::from_bytes(&r)
            .unwrap()
            .attribute::<ReservationToken>()
            .unwrap()
            .token();
        (r, token)
    }

    /// An Allocate with RESERVATION-TOKEN `token` from `from`: the answer.
    fn allocate_reserved(h: &mut Harness, from: &str, token: u64) -> Vec<u8> {
        let ft = udp(from);
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&ReservationToken::new(token)).unwrap();
            }),
        )
    }

    #[test]
    fn even_port_reservation_token_pair() {
        let mut h = h();
        let (r, token) = allocate_even_pair(&mut h, "203.0.113.9:4000");
        let rtp = relayed(&r);
        assert_eq!(rtp.port() % 2, 0);
        let r = allocate_reserved(&mut h, "203.0.113.9:4001", token);
        assert_eq!(relayed(&r).port(), rtp.port() + 1);
        // A token works once.
        let r = allocate_reserved(&mut h, "203.0.113.9:4002", token);
        assert_eq!(error_code(&r), Some(508));
    }

    #[test]
    fn an_even_pair_whose_odd_port_is_taken_on_the_host_is_not_reserved() {
        // Another program holds 50001: the pair 50000/50001 would give a token whose Allocate
        // fails (508). The server takes the next pair whose both ports it can bind.
        let mut h = Harness::new(Options {
            ports: (50000, 50003),
            ..Options::default()
        });
        h.relays.busy_ports.insert(50001);
        let (r, token) = allocate_even_pair(&mut h, "203.0.113.9:4000");
        assert_eq!(relayed(&r).port(), 50002);
        let r = allocate_reserved(&mut h, "203.0.113.9:4001", token);
        assert_eq!(relayed(&r).port(), 50003, "the token's port binds");
        assert!(
            !h.relays.bound.values().any(|(a, _)| a.port() == 50001),
            "the check bound nothing that stayed"
        );
    }

    #[test]
    fn the_last_port_of_the_range_is_allocatable() {
        // Regression: port 65535 overflowed `port + 1` (found by the soak test).
        let mut h = Harness::new(Options {
            ports: (65535, 65535),
            ..Options::default()
        });
        let relay = h.allocate(udp("203.0.113.9:4000"), "alice", "alicepw");
        assert_eq!(relay.port(), 65535);
    }

    #[test]
    fn churn_does_not_grow_the_timer_heap_without_bound() {
        // Allocate and delete in a loop: timers of dead allocations must not pile up until their
        // deadlines (found by the soak test: memory grew with churn rate × lifetime).
        let mut h = Harness::new(Options {
            cfg: CoreConfig {
                challenge_rate: 1e9,
                ..CoreConfig::default()
            },
            ..Options::default()
        });
        let ft = udp("203.0.113.9:4000");
        for i in 0..20_000u32 {
            let ft = natpass::proto::FiveTuple {
                client: format!("203.0.113.9:{}", 1000 + i % 50_000)
                    .parse()
                    .unwrap(),
                ..ft
            };
            h.allocate(ft, "alice", "alicepw");
            let nonce = h.nonce(ft);
            h.ask(ft, &refresh("alice", "alicepw", &nonce, Some(0)));
            if i % 100 == 0 {
                h.core.handle_timeout(h.now, &mut h.relays);
            }
        }
        h.core.handle_timeout(h.now, &mut h.relays);
        assert!(
            h.core.timer_entries() <= 4096 + 8,
            "{} timer entries after 20,000 ended allocations",
            h.core.timer_entries()
        );
    }
}

/// RFC 6156 / RFC 8656 §14.1-14.2: address families, 440, 443, dual-stack allocations.
mod rfc6156_ipv6 {
    use super::*;

    #[test]
    fn address_families_440_443_and_dual_allocation() {
        let v4: std::net::IpAddr = "192.0.2.100".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8::100".parse().unwrap();
        let mut only4 = Harness::new(Options::default());
        let ft = udp("203.0.113.9:4000");
        let nonce = only4.nonce(ft);
        let r = only4.ask(
            ft,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
                    .unwrap();
            }),
        );
        assert_eq!(error_code(&r), Some(440));
        // Dual allocation requested on a v4-only server: v4 relay plus ADDRESS-ERROR-CODE 440.
        let r = only4.ask(
            ft,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
                    .unwrap();
            }),
        );
        assert_eq!(error_code(&r), None);
        assert!(
            Message::from_bytes(&r)
                .unwrap()
                .has_attribute(stun_types::attribute::AttributeType::new(0x8001))
        );
        let nonce = only4.nonce(ft);
        assert_eq!(
            error_code(&only4.ask(
                ft,
                &create_permission("alice", "alicepw", &nonce, &["[2606:4700::1]:1"])
            )),
            Some(443)
        );

        let mut both = Harness::new(Options {
            relays: vec![
                RelayAddr {
                    bind: v4,
                    advertise: v4,
                },
                RelayAddr {
                    bind: v6,
                    advertise: v6,
                },
            ],
            ..Options::default()
        });
        let ft = udp("203.0.113.9:4000");
        let nonce = both.nonce(ft);
        let r = both.ask(
            ft,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
                    .unwrap();
            }),
        );
        assert_eq!(relayed(&r).ip(), v6);
        let ft2 = udp("203.0.113.9:4001");
        let nonce = both.nonce(ft2);
        let r = both.ask(
            ft2,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
                    .unwrap();
            }),
        );
        let m = Message::from_bytes(&r).unwrap();
        let a0 = m
            .nth_attribute::<XorRelayedAddress>(0)
            .unwrap()
            .addr(m.transaction_id());
        let a1 = m
            .nth_attribute::<XorRelayedAddress>(1)
            .unwrap()
            .addr(m.transaction_id());
        assert_eq!((a0.ip(), a1.ip()), (v4, v6));
        // Both REQUESTED and ADDITIONAL: 400.
        let ft3 = udp("203.0.113.9:4002");
        let nonce = both.nonce(ft3);
        let r = both.ask(
            ft3,
            &signed(ALLOCATE, "alice", "alicepw", &nonce, |w, _| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .unwrap();
                w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV4))
                    .unwrap();
                w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
                    .unwrap();
            }),
        );
        assert_eq!(error_code(&r), Some(400));
    }
}

/// RFC 8656 §9 permissions.
mod rfc8656_permissions {
    use super::*;

    #[test]
    fn create_permission_to_denied_peer_gets_403_and_multiple_peers_are_all_or_nothing() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let relay = h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        for denied in [
            "127.0.0.1:1",
            "[::ffff:127.0.0.1]:1",
            "169.254.169.254:80",
            "10.0.0.1:1",
            "[::1]:1",
            "0.0.0.0:1",
            PEER,
        ] {
            let r = h.ask(
                ft,
                &create_permission("alice", "alicepw", &nonce, &[denied]),
            );
            let code = error_code(&r);
            assert!(code == Some(403) || code == Some(443), "{denied}: {code:?}");
        }
        let r = h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER, "127.0.0.1:1"]),
        );
        assert_eq!(error_code(&r), Some(403));
        // PUBLIC_PEER was not installed: its datagrams are dropped.
        assert_eq!(h.peer(relay, PUBLIC_PEER, b"hi"), PeerRoute::Drop);
        let r = h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER, PUBLIC_PEER2]),
        );
        assert_eq!(error_code(&r), None);
        assert!(matches!(
            h.peer(relay, PUBLIC_PEER, b"hi"),
            PeerRoute::Indication(_)
        ));
        assert!(matches!(
            h.peer(relay, PUBLIC_PEER2, b"hi"),
            PeerRoute::Indication(_)
        ));
    }

    #[test]
    fn create_permission_without_peer_gets_400_and_past_quota_gets_508() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        assert_eq!(
            error_code(&h.ask(ft, &create_permission("alice", "alicepw", &nonce, &[]))),
            Some(400)
        );
        let peers: Vec<String> = (1..=10).map(|i| format!("8.8.8.{i}:1")).collect();
        let refs: Vec<&str> = peers.iter().map(String::as_str).collect();
        assert_eq!(
            error_code(&h.ask(ft, &create_permission("alice", "alicepw", &nonce, &refs))),
            None
        );
        // Refreshing existing ones is fine; an 11th peer is not.
        assert_eq!(
            error_code(&h.ask(
                ft,
                &create_permission("alice", "alicepw", &nonce, &refs[..3])
            )),
            None
        );
        assert_eq!(
            error_code(&h.ask(
                ft,
                &create_permission("alice", "alicepw", &nonce, &["8.8.4.4:1"])
            )),
            Some(508)
        );
    }

    #[test]
    fn data_from_peer_without_permission_is_dropped_and_permission_expires_after_300s() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let relay = h.allocate(ft, "alice", "alicepw");
        assert_eq!(h.peer(relay, PUBLIC_PEER, b"hi"), PeerRoute::Drop);
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        // Permissions are per IP: another port of the same IP is let in.
        match h.peer(relay, "8.8.8.8:7777", b"hello") {
            PeerRoute::Indication(t) => {
                assert_eq!(t.ft, ft);
                let m = Message::from_bytes(&t.data).unwrap();
                assert!(m.has_class(MessageClass::Indication) && m.has_method(DATA));
                let p = m
                    .attribute::<turn_types::attribute::XorPeerAddress>()
                    .unwrap()
                    .addr(m.transaction_id());
                assert_eq!(p, "8.8.8.8:7777".parse::<SocketAddr>().unwrap());
                assert_eq!(
                    m.attribute::<turn_types::attribute::Data>().unwrap().data(),
                    b"hello"
                );
            }
            other => panic!("{other:?}"),
        }
        h.advance(301);
        assert_eq!(h.peer(relay, PUBLIC_PEER, b"hi"), PeerRoute::Drop);
    }
}

/// RFC 8656 §11 Send and Data indications.
mod rfc8656_send_data {
    use super::*;

    #[test]
    fn send_indication_needs_a_permission_and_forwards_the_data_slice() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let ind = send_indication(PUBLIC_PEER, b"payload");
        let (_, f) = h.send(ft, &ind);
        assert!(f.is_none(), "no permission yet");
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        let (r, f) = h.send(ft, &ind);
        assert!(r.is_empty());
        let f = f.unwrap();
        assert_eq!(&ind[f.range.clone()], b"payload");
        assert_eq!(f.peer, PUBLIC_PEER.parse::<SocketAddr>().unwrap());
        // From another 5-tuple (no allocation): dropped.
        let (_, f) = h.send(udp("203.0.113.9:4001"), &ind);
        assert!(f.is_none());
    }
}

/// RFC 8656 §11-12 ChannelBind and ChannelData.
mod rfc8656_channels {
    use super::*;

    #[test]
    fn channel_bind_rules_range_conflicts_refresh_and_quota() {
        let mut h = Harness::new(Options {
            cfg: CoreConfig {
                max_channels: 2,
                ..CoreConfig::default()
            },
            ..Options::default()
        });
        let ft = udp("203.0.113.9:4000");
        let relay = h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        let cb = |ch, peer: &str| channel_bind("alice", "alicepw", &nonce, ch, peer);
        assert_eq!(error_code(&h.ask(ft, &cb(0x3FFF, PUBLIC_PEER))), Some(400));
        assert_eq!(error_code(&h.ask(ft, &cb(0x8000, PUBLIC_PEER))), Some(400));
        assert_eq!(error_code(&h.ask(ft, &cb(0x4000, PEER))), Some(403));
        assert_eq!(error_code(&h.ask(ft, &cb(0x4000, PUBLIC_PEER))), None);
        // Same pair again refreshes; the channel to another peer or the peer to another channel: 400.
        assert_eq!(error_code(&h.ask(ft, &cb(0x4000, PUBLIC_PEER))), None);
        assert_eq!(error_code(&h.ask(ft, &cb(0x4000, PUBLIC_PEER2))), Some(400));
        assert_eq!(error_code(&h.ask(ft, &cb(0x4001, PUBLIC_PEER))), Some(400));
        assert_eq!(error_code(&h.ask(ft, &cb(0x4001, PUBLIC_PEER2))), None);
        assert_eq!(error_code(&h.ask(ft, &cb(0x4002, "9.9.9.9:1"))), Some(508));
        // ChannelBind installs the permission, and peer data arrives as ChannelData.
        assert_eq!(
            h.peer(relay, PUBLIC_PEER, b"x"),
            PeerRoute::Channel {
                ft,
                channel: natpass::proto::ChannelNumber::MIN
            }
        );
        // Same IP, other port, no channel: Data indication.
        assert!(matches!(
            h.peer(relay, "8.8.8.8:1", b"x"),
            PeerRoute::Indication(_)
        ));
    }

    #[test]
    fn channel_data_routes_bound_channels_and_drops_the_rest() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let (relay, _) = bound_channel(&mut h, ft);
        let cd = channel_data(0x4001, b"media");
        let (_, f) = h.send(ft, &cd);
        let f = f.unwrap();
        assert_eq!(&cd[f.range.clone()], b"media");
        assert_eq!(f.relay, relay);
        // Padding after the payload is fine; a length beyond the datagram is not.
        let mut padded = channel_data(0x4001, b"abc");
        padded.push(0);
        assert!(h.send(ft, &padded).1.is_some());
        let mut short = channel_data(0x4001, b"abcd");
        short.pop();
        assert!(h.send(ft, &short).1.is_none());
        assert!(
            h.send(ft, &channel_data(0x4002, b"x")).1.is_none(),
            "unbound channel dropped"
        );
        assert!(
            h.send(udp("203.0.113.9:4001"), &cd).1.is_none(),
            "other 5-tuple dropped"
        );
        // The channel does not outlive its 600 s, nor ChannelData its permission's 300 s.
        h.advance(301);
        assert!(h.send(ft, &cd).1.is_none(), "permission expired: dropped");
        assert_eq!(h.peer(relay, PUBLIC_PEER, b"x"), PeerRoute::Drop);
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        assert!(
            h.send(ft, &cd).1.is_some(),
            "permission back, channel still bound"
        );
        h.advance(300);
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        assert!(h.send(ft, &cd).1.is_none(), "channel expired after 600 s");
    }

    #[test]
    fn channel_data_does_not_refresh_permissions() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        bound_channel(&mut h, ft);
        for _ in 0..30 {
            h.advance(10);
            h.send(ft, &channel_data(0x4001, b"x"));
        }
        h.advance(1);
        assert!(h.send(ft, &channel_data(0x4001, b"x")).1.is_none());
    }

    #[test]
    fn strict_channel_numbers_follow_rfc8656_range() {
        let mut h = Harness::new(Options {
            cfg: CoreConfig {
                max_channel_number: 0x4FFF,
                ..CoreConfig::default()
            },
            ..Options::default()
        });
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        assert_eq!(
            error_code(&h.ask(
                ft,
                &channel_bind("alice", "alicepw", &nonce, 0x5000, PUBLIC_PEER)
            )),
            Some(400)
        );
        assert_eq!(
            error_code(&h.ask(
                ft,
                &channel_bind("alice", "alicepw", &nonce, 0x4FFF, PUBLIC_PEER)
            )),
            None
        );
        // The default accepts RFC 5766 numbers up to 0x7FFF (coturn's tools use them).
        let mut h = h_default();
        h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        assert_eq!(
            error_code(&h.ask(
                ft,
                &channel_bind("alice", "alicepw", &nonce, 0x7FFF, PUBLIC_PEER)
            )),
            None
        );
    }

    #[test]
    fn peer_data_on_a_channel_follows_permission_refresh_and_expiry() {
        let mut h = h();
        let ft = udp("203.0.113.9:4000");
        let (relay, _) = bound_channel(&mut h, ft);
        let channel = PeerRoute::Channel {
            ft,
            channel: natpass::proto::ChannelNumber::new(0x4001).unwrap(),
        };
        assert_eq!(h.peer(relay, PUBLIC_PEER, b"x"), channel);
        h.advance(301);
        assert_eq!(
            h.peer(relay, PUBLIC_PEER, b"x"),
            PeerRoute::Drop,
            "the permission expired though the channel lives"
        );
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        assert_eq!(
            h.peer(relay, PUBLIC_PEER, b"x"),
            channel,
            "a refreshed permission reopens the channel route"
        );
        h.ask(ft, &refresh("alice", "alicepw", &nonce, Some(3600)));
        h.advance(300);
        let nonce = h.nonce(ft);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        assert!(
            matches!(h.peer(relay, PUBLIC_PEER, b"x"), PeerRoute::Indication(_)),
            "after the channel expired, the peer's data comes as a Data indication"
        );
        let info = h.core.list(h.now);
        assert_eq!(
            info[0].bytes_to_client, 3,
            "channel bytes survive the channel"
        );
    }
}

/// RFC 8656 §21 (security): the peer policy, own relay IPs, the server's listeners.
mod rfc8656_peer_policy {
    use super::*;

    /// A server whose relay IP is 127.0.0.2 (a loopback lab), listening on 127.0.0.2:3478.
    fn own_relay_harness() -> Harness {
        let relay_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        Harness::new(Options {
            relays: vec![RelayAddr {
                bind: relay_ip,
                advertise: relay_ip,
            }],
            listeners: vec!["127.0.0.2:3478".parse().unwrap()],
            ..Options::default()
        })
    }

    #[test]
    fn own_relay_ip_is_reachable_only_at_allocated_relay_ports() {
        let mut h = own_relay_harness();
        let a = udp("203.0.113.9:4000");
        let b = udp("203.0.113.10:4000");
        let relay_a = h.allocate(a, "alice", "alicepw");
        let relay_b = h.allocate(b, "bob", "bobpw");
        let na = h.nonce(a);
        let nb = h.nonce(b);
        for denied in ["127.0.0.1:1", "[::ffff:127.0.0.1]:1", "169.254.169.254:80"] {
            assert_eq!(
                error_code(&h.ask(a, &create_permission("alice", "alicepw", &na, &[denied]))),
                Some(403)
            );
        }
        assert_eq!(
            error_code(&h.ask(
                a,
                &create_permission("alice", "alicepw", &na, &["127.0.0.2:1"])
            )),
            None
        );
        assert_eq!(
            error_code(&h.ask(b, &create_permission("bob", "bobpw", &nb, &["127.0.0.2:1"]))),
            None
        );
        // Send to a port of ours that is not a relay port: nothing leaves.
        assert!(
            h.send(a, &send_indication("127.0.0.2:22", b"x"))
                .1
                .is_none()
        );
        assert!(
            h.send(a, &send_indication("127.0.0.2:3478", b"x"))
                .1
                .is_none()
        );
        assert_eq!(
            error_code(&h.ask(
                a,
                &channel_bind("alice", "alicepw", &na, 0x4000, "127.0.0.2:22")
            )),
            Some(403)
        );
        // To B's relayed address: relayed; and B's relay accepts it from A's relay address.
        let f = h
            .send(a, &send_indication(&relay_b.to_string(), b"hi"))
            .1
            .unwrap();
        assert_eq!((f.relay, f.peer), (relay_a, relay_b));
        assert!(matches!(
            h.peer(relay_b, &relay_a.to_string(), b"hi"),
            PeerRoute::Indication(_)
        ));
        assert_eq!(
            error_code(&h.ask(
                a,
                &channel_bind("alice", "alicepw", &na, 0x4000, &relay_b.to_string())
            )),
            None
        );
        // A datagram from a non-relay port of our own IP is dropped.
        assert_eq!(h.peer(relay_b, "127.0.0.2:22", b"x"), PeerRoute::Drop);
        // When B's allocation ends, its port is no longer reachable.
        h.ask(b, &refresh("bob", "bobpw", &nb, Some(0)));
        assert!(
            h.send(a, &send_indication(&relay_b.to_string(), b"hi"))
                .1
                .is_none()
        );
    }

    #[test]
    fn listener_addresses_are_denied_even_inside_allow_ranges() {
        let mut h = Harness::new(Options {
            allow: vec!["192.0.2.0/24"],
            ..Options::default()
        });
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        let listener = server_addr().to_string();
        assert_eq!(
            error_code(&h.ask(
                ft,
                &create_permission("alice", "alicepw", &nonce, &[&listener])
            )),
            None
        );
        assert_eq!(
            error_code(&h.ask(
                ft,
                &channel_bind("alice", "alicepw", &nonce, 0x4000, &listener)
            )),
            Some(403)
        );
        assert!(h.send(ft, &send_indication(&listener, b"x")).1.is_none());
        assert!(
            h.send(ft, &send_indication("192.0.2.1:3479", b"x"))
                .1
                .is_some(),
            "other ports of an allowed IP pass"
        );
    }

    #[test]
    fn channel_data_to_an_own_relay_port_stops_when_that_allocation_ends() {
        let mut h = own_relay_harness();
        let a = udp("203.0.113.9:4000");
        let b = udp("203.0.113.10:4000");
        let relay_a = h.allocate(a, "alice", "alicepw");
        let relay_b = h.allocate(b, "bob", "bobpw");
        let na = h.nonce(a);
        let nb = h.nonce(b);
        let bind = channel_bind("alice", "alicepw", &na, 0x4000, &relay_b.to_string());
        assert_eq!(error_code(&h.ask(a, &bind)), None);
        let cd = channel_data(0x4000, b"media");
        let f = h
            .send(a, &cd)
            .1
            .expect("relayed while B's port is allocated");
        assert_eq!((f.relay, f.peer), (relay_a, relay_b));
        h.ask(b, &refresh("bob", "bobpw", &nb, Some(0)));
        let denied =
            |h: &Harness| h.core.stats().drops[natpass::proto::DropReason::DeniedPeer as usize];
        let before = denied(&h);
        assert!(
            h.send(a, &cd).1.is_none(),
            "B's port is free now: the channel must not reach whatever binds it next"
        );
        assert_eq!(denied(&h), before + 1);
        assert_eq!(
            h.peer(relay_a, &relay_b.to_string(), b"x"),
            PeerRoute::Drop,
            "nor does traffic from that port reach A's client"
        );
    }
}

/// Issue 17: the channel routes the core hands to a kernel fast path (XDP) start and stop
/// exactly where the userspace path's do.
mod fast_path_routes {
    use super::*;
    use natpass::proto::{ChannelNumber, Offload, Transport};
    use std::time::Duration;

    fn offloading() -> Harness {
        Harness::new(Options {
            cfg: CoreConfig {
                offload: true,
                ..CoreConfig::default()
            },
            ..Options::default()
        })
    }

    fn drained(h: &mut Harness) -> Vec<Offload> {
        h.core.drain_offload().collect()
    }

    #[test]
    fn a_bound_channel_is_offered_until_its_permission_ends_and_withdrawn_after() {
        let mut h = offloading();
        let ft = udp("203.0.113.9:4000");
        let relay = h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        assert!(drained(&mut h).is_empty(), "no channel yet");
        let bound_at = h.now;
        h.ask(
            ft,
            &channel_bind("alice", "alicepw", &nonce, 0x4001, PUBLIC_PEER),
        );
        let peer: SocketAddr = PUBLIC_PEER.parse().unwrap();
        let channel = ChannelNumber::new(0x4001).unwrap();
        // The permission (300 s) ends before the channel (600 s): that is the deadline.
        let expires = bound_at + Duration::from_secs(300);
        assert_eq!(
            drained(&mut h),
            vec![Offload::Install {
                ft,
                channel,
                relay,
                peer,
                expires
            }]
        );
        // A CreatePermission 100 s later moves the deadline with it.
        h.advance(100);
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        let expires = h.now + Duration::from_secs(300);
        assert_eq!(
            drained(&mut h),
            vec![Offload::Install {
                ft,
                channel,
                relay,
                peer,
                expires
            }]
        );
        // One second before the deadline the userspace path relays; at it, it stops, and the
        // sweep withdraws the route.
        h.advance(299);
        assert!(h.send(ft, &channel_data(0x4001, b"x")).1.is_some());
        assert!(drained(&mut h).is_empty());
        h.advance(1);
        assert_eq!(h.now, expires);
        assert!(h.send(ft, &channel_data(0x4001, b"x")).1.is_none());
        let info = &h.core.list(h.now)[0];
        let owner = natpass::proto::RelayOwner {
            alloc: info.key,
            serial: info.serial,
        };
        assert_eq!(
            drained(&mut h),
            vec![Offload::Remove {
                owner,
                ft,
                channel,
                relay,
                peer
            }]
        );
        // A new permission installs it again; the channel (bound at 0, 600 s) now ends first.
        h.ask(
            ft,
            &create_permission("alice", "alicepw", &nonce, &[PUBLIC_PEER]),
        );
        let channel_end = bound_at + Duration::from_secs(600);
        assert!(
            matches!(drained(&mut h)[..], [Offload::Install { expires, .. }] if expires == channel_end)
        );
        h.advance(200);
        assert!(h.send(ft, &channel_data(0x4001, b"x")).1.is_none());
        assert!(matches!(drained(&mut h)[..], [Offload::Remove { .. }]));
    }

    /// The allocation's end bounds the deadline too, and a Refresh moves it.
    #[test]
    fn a_refresh_moves_the_deadline_with_the_allocations_end() {
        let mut h = offloading();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let allocation_end = h.now + Duration::from_secs(600);
        let nonce = h.nonce(ft);
        let deadline = |h: &mut Harness| match drained(h)[..] {
            [Offload::Install { expires, .. }] => expires,
            ref other => panic!("one Install expected, got {other:?}"),
        };
        // Bound 400 s in: the allocation (600 s) ends before the permission (700) and the
        // channel (1,000).
        h.advance(400);
        h.ask(
            ft,
            &channel_bind("alice", "alicepw", &nonce, 0x4001, PUBLIC_PEER),
        );
        assert_eq!(deadline(&mut h), allocation_end);
        // A Refresh of the allocation: the permission is the earliest end now.
        let r = h.ask(ft, &refresh("alice", "alicepw", &nonce, None));
        assert_eq!(error_code(&r), None);
        assert_eq!(deadline(&mut h), h.now + Duration::from_secs(300));
    }

    /// What the fast path relayed counts in the allocation's bytes: live routes through the
    /// shell's reading, removed ones once handed back — on the route while the channel lives,
    /// on the allocation after.
    #[test]
    fn bytes_the_fast_path_relayed_count_for_the_allocation() {
        let mut h = offloading();
        let ft = udp("203.0.113.9:4000");
        let (relay, nonce) = bound_channel(&mut h, ft);
        let peer: SocketAddr = PUBLIC_PEER.parse().unwrap();
        let channel = ChannelNumber::new(0x4001).unwrap();
        // The userspace path relays 3 bytes; the list names the route the kernel carries, for
        // the shell to add what the kernel counted on it.
        assert!(h.send(ft, &channel_data(0x4001, b"abc")).1.is_some());
        let info = h.core.list(h.now);
        assert_eq!((info[0].bytes_to_peer, info[0].bytes_to_client), (3, 0));
        assert_eq!(
            info[0].offloaded,
            [natpass::proto::OffloadedRoute {
                ft,
                channel,
                relay,
                peer
            }]
        );
        let owner = natpass::proto::RelayOwner {
            alloc: info[0].key,
            serial: info[0].serial,
        };
        // The route is withdrawn (permission lapsed) and its counts handed back: on the route.
        h.core.add_offloaded_bytes(owner, channel, peer, 1000, 2000);
        let info = h.core.list(h.now);
        assert_eq!(
            (info[0].bytes_to_peer, info[0].bytes_to_client),
            (1003, 2000)
        );
        // After the channel ended (600 s; the allocation refreshed), on the allocation.
        h.advance(500);
        let r = h.ask(ft, &refresh("alice", "alicepw", &nonce, None));
        assert_eq!(error_code(&r), None);
        h.advance(101);
        h.core.add_offloaded_bytes(owner, channel, peer, 7, 9);
        // A stale owner (another allocation's serial) counts nowhere.
        let stale = natpass::proto::RelayOwner {
            serial: owner.serial.wrapping_add(1),
            ..owner
        };
        h.core
            .add_offloaded_bytes(stale, channel, peer, 100_000, 100_000);
        let info = h.core.list(h.now);
        assert_eq!(
            (
                info[0].channels,
                info[0].bytes_to_peer,
                info[0].bytes_to_client
            ),
            (0, 1010, 2009)
        );
        assert!(info[0].offloaded.is_empty(), "no live route left to read");
    }

    /// Without the Refresh, the userspace path stops at the allocation's end: the same moment.
    #[test]
    fn the_allocations_end_stops_both_paths_at_once() {
        let mut h = offloading();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let allocation_end = h.now + Duration::from_secs(600);
        let nonce = h.nonce(ft);
        h.advance(400);
        h.ask(
            ft,
            &channel_bind("alice", "alicepw", &nonce, 0x4001, PUBLIC_PEER),
        );
        assert!(
            matches!(drained(&mut h)[..], [Offload::Install { expires, .. }] if expires == allocation_end)
        );
        h.advance(199);
        assert!(h.send(ft, &channel_data(0x4001, b"x")).1.is_some());
        h.advance(1);
        assert_eq!(h.now, allocation_end);
        assert!(h.send(ft, &channel_data(0x4001, b"x")).1.is_none());
        assert!(matches!(drained(&mut h)[..], [Offload::Remove { .. }]));
    }

    #[test]
    fn denied_peers_streams_and_a_disabled_fast_path_get_no_route() {
        let mut h = offloading();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        let denied = channel_bind("alice", "alicepw", &nonce, 0x4001, PEER);
        assert_eq!(error_code(&h.ask(ft, &denied)), Some(403));
        assert!(
            drained(&mut h).is_empty(),
            "a denied peer is never offloaded"
        );

        let tcp = natpass::proto::FiveTuple {
            transport: Transport::Tcp,
            ..udp("203.0.113.10:4000")
        };
        h.allocate(tcp, "bob", "bobpw");
        let nonce = h.nonce(tcp);
        h.ask(
            tcp,
            &channel_bind("bob", "bobpw", &nonce, 0x4001, PUBLIC_PEER),
        );
        assert!(
            drained(&mut h).is_empty(),
            "TCP's ChannelData is framed in the stream"
        );

        let mut off = h_default();
        let ft = udp("203.0.113.9:4000");
        off.allocate(ft, "alice", "alicepw");
        let nonce = off.nonce(ft);
        off.ask(
            ft,
            &channel_bind("alice", "alicepw", &nonce, 0x4001, PUBLIC_PEER),
        );
        assert!(drained(&mut off).is_empty(), "nothing is recorded when off");
    }

    #[test]
    fn deleting_the_allocation_withdraws_every_channel() {
        let mut h = offloading();
        let ft = udp("203.0.113.9:4000");
        h.allocate(ft, "alice", "alicepw");
        let nonce = h.nonce(ft);
        for (ch, peer) in [(0x4001, PUBLIC_PEER), (0x4002, PUBLIC_PEER2)] {
            h.ask(ft, &channel_bind("alice", "alicepw", &nonce, ch, peer));
        }
        assert_eq!(drained(&mut h).len(), 2);
        h.ask(ft, &refresh("alice", "alicepw", &nonce, Some(0)));
        let removed: Vec<u16> = drained(&mut h)
            .into_iter()
            .map(|o| match o {
                Offload::Remove { channel, .. } => channel.get(),
                other => panic!("expected removals, got {other:?}"),
            })
            .collect();
        assert_eq!(removed, vec![0x4001, 0x4002]);
    }
}
