//! Config parsing and validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(f) = natpass::config::parse_toml(s, "fuzz") {
            let _ = natpass::config::ValidConfig::build(f, Default::default(), "fuzz");
        }
    }
});
