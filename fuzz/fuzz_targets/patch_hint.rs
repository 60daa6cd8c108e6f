#![no_main]
//! Any string → `PatchHint::parse`: never panics; an accepted target is a valid logical name
//! and an accepted env value holds no control character.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(hint) = antibody::alert::PatchHint::parse(text) {
            assert!(antibody::validate::logical_name(&hint.target).is_ok());
            if let Some((key, value)) = &hint.env {
                assert!(antibody::validate::env_key(key).is_ok());
                assert!(!value.chars().any(char::is_control));
            }
        }
    }
});
