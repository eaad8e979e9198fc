//! STUN decoding (stun-types) plus natpass's integrity lookup and RFC 3489 path.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stun_types::message::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::from_bytes(data) {
        if let Some((algo, off)) = natpass::proto::integrity::find(&m) {
            let _ = natpass::proto::integrity::verify(&m, algo, off, &[7u8; 16]);
        }
        let _ = m.iter_attributes().count();
    }
    let _ = natpass::proto::classic::binding_response(data, "192.0.2.1:1".parse().unwrap());
    let _ = natpass::client::parse_incoming(data);
});
