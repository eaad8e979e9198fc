//! Abuse: malformed wire input (docs/security.md "Parser memory bugs and DoS"). Every case is
//! answered with silence (or the one error the RFC asks for), never a panic, while a control
//! allocation keeps relaying and resources return to baseline.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn malformed_input_is_dropped_and_nothing_leaks() {
    let a = Abuse::new(alice_loopback());
    let c = UdpClient::new(a.addr());
    let good = request(stun_types::message::BINDING, |w, _| {
        use stun_types::message::MessageWriteExt;
        w.add_fingerprint().unwrap()
    });
    let silent = |name: &str, data: Vec<u8>| {
        c.send(&data);
        assert!(
            c.recv_timeout(Duration::from_millis(150)).is_none(),
            "{name}: answered"
        );
    };
    // input → expected: no answer.
    silent("empty", vec![]);
    silent("one byte", vec![0]);
    silent("short header", vec![0; 19]);
    silent("not STUN (first bits 11)", vec![0xFF; 64]);
    let mut bad_fp = good.clone();
    let n = bad_fp.len();
    bad_fp[n - 1] ^= 0xFF;
    silent("fingerprint mismatch", bad_fp);
    let mut long = good.clone();
    long[2..4].copy_from_slice(&0xFFF0u16.to_be_bytes());
    silent("length beyond the datagram", long);
    let mut odd = good.clone();
    odd[3] |= 1;
    silent("length not a multiple of 4", odd);
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0; 8]);
    silent("bytes after the message", trailing);
    let mut attr = request(stun_types::message::BINDING, |w, _| {
        use stun_types::message::MessageWriteExt;
        w.add_attribute(&stun_types::attribute::Software::new("abcd").unwrap())
            .unwrap()
    });
    attr[22..24].copy_from_slice(&0xFFFFu16.to_be_bytes());
    silent("attribute length overflow", attr);
    silent("ChannelData header only", vec![0x40, 0x00, 0x00, 0x10]);
    silent(
        "ChannelData on an unbound channel",
        channel_data(0x4FFF, b"x"),
    );
    silent("a response class message", {
        let mut r = good.clone();
        r[0] = 0x01;
        r[1] = 0x01;
        r
    });
    // Random garbage, many shapes, from another socket.
    let g = UdpClient::new(a.addr());
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 200) as usize;
        let mut d: Vec<u8> = (0..len).map(|k| (seed >> (k % 56)) as u8).collect();
        if i % 3 == 0 && d.len() >= 20 {
            d[0] &= 0x3F; // looks like STUN
            d[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        }
        g.send(&d);
    }
    // Unknown comprehension-required attribute in a request: 420 (the one error the RFC wants).
    let unknown = stun_types::attribute::RawAttribute::new(
        stun_types::attribute::AttributeType::new(0x0077),
        &[1, 2, 3, 4],
    );
    let r = c.ask(&request(stun_types::message::BINDING, |w, _| {
        use stun_types::message::MessageWriteExt;
        w.add_attribute(&unknown).unwrap()
    }));
    assert_eq!(error_code(&r), Some(420));
    // RFC 3489 Binding without the cookie: MAPPED-ADDRESS.
    let mut classic = vec![0x00, 0x01, 0x00, 0x00];
    classic.extend_from_slice(&[5; 16]);
    let r = c.ask(&classic);
    assert_eq!(&r[0..2], &[0x01, 0x01]);
    a.finish(16 * 1024);
}
