#![no_main]
//! Any text → `Config::from_yaml`: never panics; an accepted config validates again.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = antibody::config::Config::from_yaml(text) {
            assert!(config.validate().is_ok());
        }
    }
});
