//! The TCP/TLS stream framer: split arbitrary bytes into frames like the server does.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some(n)) = natpass::proto::framing::frame_len(&data[at..]) {
        assert!(n >= 4);
        if data.len() - at < n {
            break;
        }
        at += n;
    }
});
