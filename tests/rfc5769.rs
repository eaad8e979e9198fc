//! RFC 5769 test vectors through the codec (stun-types) and natpass's integrity code, and the
//! sample request through the server core.

mod common;

use natpass::proto::integrity;
use stun_types::attribute::{AttributeStaticType, Fingerprint, Software, XorMappedAddress};
use stun_types::message::{BINDING, Message, MessageClass};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// §2.1 Sample Request (short-term password "VOkJxbRl1RmTxUk/WvJxBt").
const REQUEST: &str = "0001 0058 2112a442 b7e7a701 bc34d686 fa87dfae
    80220010 5354554e 20746573 7420636c 69656e74
    00240004 6e0001ff
    80290008 932ff9b1 51263b36
    00060009 6576746a 3a683676 59202020
    00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
    80280004 e57a3bcf";
/// §2.2 Sample IPv4 Response.
const RESPONSE_V4: &str = "0101 003c 2112a442 b7e7a701 bc34d686 fa87dfae
    8022000b 74657374 20766563 746f7220
    00200008 0001a147 e112a643
    00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
    80280004 c07d4c96";
/// §2.3 Sample IPv6 Response.
const RESPONSE_V6: &str = "0101 0048 2112a442 b7e7a701 bc34d686 fa87dfae
    8022000b 74657374 20766563 746f7220
    00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
    00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
    80280004 c8fb0b4c";
/// §2.4 Sample Request with Long-Term Authentication.
const LONG_TERM: &str = "0001 0060 2112a442 78ad3433 c6ad72c0 29da412e
    00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
    0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
    0014000b 6578616d 706c652e 6f726700
    00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666";

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

fn check_integrity(bytes: &[u8], key: &[u8]) {
    let m = Message::from_bytes(bytes).expect("vector parses (FINGERPRINT checked)");
    let (algo, off) = integrity::find(&m).expect("has MESSAGE-INTEGRITY");
    assert_eq!(algo, integrity::Algo::Sha1);
    assert!(integrity::verify(&m, algo, off, key), "HMAC matches");
    assert!(
        !integrity::verify(&m, algo, off, b"wrong"),
        "wrong key rejected"
    );
}

#[test]
fn sample_request_parses_with_valid_fingerprint_and_integrity() {
    let b = hex(REQUEST);
    check_integrity(&b, PASSWORD);
    let m = Message::from_bytes(&b).unwrap();
    assert!(m.has_class(MessageClass::Request) && m.has_method(BINDING));
    assert!(m.has_attribute(Fingerprint::TYPE));
    assert_eq!(
        m.attribute::<Software>().unwrap().software(),
        "STUN test client"
    );
    let mut corrupt = b.clone();
    corrupt[30] ^= 0x01; // inside SOFTWARE: the FINGERPRINT no longer matches
    assert!(Message::from_bytes(&corrupt).is_err());
}

#[test]
fn sample_ipv4_response_decodes_xor_mapped_address() {
    let b = hex(RESPONSE_V4);
    check_integrity(&b, PASSWORD);
    let m = Message::from_bytes(&b).unwrap();
    let a = m
        .attribute::<XorMappedAddress>()
        .unwrap()
        .addr(m.transaction_id());
    assert_eq!(a, "192.0.2.1:32853".parse().unwrap());
}

#[test]
fn sample_ipv6_response_decodes_xor_mapped_address() {
    let b = hex(RESPONSE_V6);
    check_integrity(&b, PASSWORD);
    let m = Message::from_bytes(&b).unwrap();
    let a = m
        .attribute::<XorMappedAddress>()
        .unwrap()
        .addr(m.transaction_id());
    assert_eq!(
        a,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap()
    );
}

#[test]
fn sample_long_term_request_verifies_with_md5_key() {
    // User "マトリックス", realm "example.org", password "TheMatrIX" after SASLprep.
    let key = natpass::auth::long_term_key(
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
        "example.org",
        "TheMatrIX",
    );
    check_integrity(&hex(LONG_TERM), &key);
}

#[test]
fn sample_request_through_the_core_gets_a_binding_answer() {
    let mut h = common::Harness::new(common::Options::default());
    let ft = common::udp("192.0.2.1:32853");
    let r = h.ask(ft, &hex(REQUEST));
    let m = Message::from_bytes(&r).unwrap();
    assert!(m.has_class(MessageClass::Success));
    assert_eq!(
        u128::from(m.transaction_id()),
        0xb7e7_a701_bc34_d686_fa87_dfae
    );
    assert_eq!(common::mapped(&r), ft.client);
    assert!(
        common::has_fingerprint(&r),
        "the request carried FINGERPRINT"
    );
}
