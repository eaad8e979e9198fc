//! Abuse: reflection and amplification (docs/security.md). Unauthenticated exchanges are measured in
//! bytes: the Binding answer is at most twice its request; challenges (401) are bounded by the
//! per-source rate limit, so the bytes a spoofed victim can receive per second are capped;
//! malformed input is never answered; RESPONSE-ADDRESS and CHANGE-REQUEST (without RFC 5780)
//! never redirect an answer.

mod common;

use common::*;
use std::time::Duration;
use stun_types::message::{BINDING, MessageWriteExt};

#[test]
fn unauthenticated_answers_are_small_and_rate_limited() {
    let a = Abuse::new(alice_loopback());
    let c = UdpClient::new(a.addr());
    // Binding: ≤ 2× the request, with and without FINGERPRINT.
    for req in [
        request(BINDING, |_, _| {}),
        request(BINDING, |w, _| w.add_fingerprint().unwrap()),
    ] {
        let r = c.ask(&req);
        eprintln!("amplification: Binding {} → {} bytes", req.len(), r.len());
        assert!(r.len() <= 2 * req.len(), "{} > 2 × {}", r.len(), req.len());
    }
    // A 401 is larger than the smallest Allocate (it must carry REALM and NONCE), so the
    // amplified volume is bounded by the per-source limit instead: ≤ 10 answers/s.
    let req = allocate_plain();
    let r = c.ask(&req);
    let ratio = r.len() as f64 / req.len() as f64;
    eprintln!(
        "amplification: unauthenticated Allocate {} → 401 {} bytes ({ratio:.2}×), at most 10 per second per source",
        req.len(),
        r.len()
    );
    assert!(ratio <= 3.5);
    // Flood: bytes out stay tiny next to bytes in.
    let f = UdpClient::new(a.addr());
    let mut bytes_in = 0;
    for _ in 0..2000 {
        f.send(&req);
        bytes_in += req.len();
    }
    let mut bytes_out = 0;
    while let Some(r) = f.recv_timeout(Duration::from_millis(300)) {
        bytes_out += r.len();
    }
    eprintln!("amplification: flood of {bytes_in} bytes → {bytes_out} bytes answered");
    assert!(
        bytes_out * 20 <= bytes_in,
        "rate limit keeps answers ≪ requests"
    );
    // Malformed requests get nothing.
    c.send(&[0u8; 40]);
    assert!(c.recv_timeout(Duration::from_millis(150)).is_none());
    // RESPONSE-ADDRESS (RFC 3489) is never honoured: the answer goes to the source only.
    let victim = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let va = victim.local_addr().unwrap();
    let mut resp_addr = vec![
        0u8,
        1,
        (va.port() >> 8) as u8,
        va.port() as u8,
        127,
        0,
        0,
        1,
    ];
    let raw = stun_types::attribute::RawAttribute::new(
        stun_types::attribute::AttributeType::new(0x0002),
        &resp_addr,
    );
    let r = c.ask(&request(BINDING, |w, _| w.add_attribute(&raw).unwrap()));
    assert_eq!(
        error_code(&r),
        Some(420),
        "comprehension-required and unknown: 420 to the source"
    );
    resp_addr.clear();
    let mut b = [0u8; 64];
    assert!(
        victim.recv_from(&mut b).is_err(),
        "nothing reached the named address"
    );
    a.finish(8 * 1024);
}
