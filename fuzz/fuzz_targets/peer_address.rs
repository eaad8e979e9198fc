//! The peer address canonicaliser and policy: any 16 bytes as IPv6 (and its IPv4 tail).
#![no_main]
use libfuzzer_sys::fuzz_target;
use natpass::relay::policy::{PeerPolicy, canonical_ip};
use std::net::{IpAddr, Ipv6Addr};

fuzz_target!(|data: [u8; 18]| {
    let mut o = [0u8; 16];
    o.copy_from_slice(&data[..16]);
    let ip = IpAddr::V6(Ipv6Addr::from(o));
    let p = PeerPolicy::new(vec![], vec![], vec!["203.0.113.1".parse().unwrap()], vec!["203.0.113.1:3478".parse().unwrap()]);
    let v = p.check_ip(ip);
    if let IpAddr::V4(v4) = canonical_ip(ip) {
        assert_eq!(v, p.check_ip(IpAddr::V4(v4)), "wrapped forms judged like the address");
    }
    let port = u16::from_be_bytes([data[16], data[17]]);
    let _ = p.is_listener(std::net::SocketAddr::new(ip, port));
});
