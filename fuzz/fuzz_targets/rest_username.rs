//! REST username parsing and key derivation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = natpass::auth::parse_rest_username(s);
        let mut c = natpass::auth::Credentials::new("natpass", 3600);
        c.add_secret(natpass::auth::Secret::new("s"));
        let _ = c.keys_for(s, 1_800_000_000);
    }
});
