#![no_main]
//! Any bytes → `ThreatAlert::from_json`: never panics; what it accepts is valid and re-validates.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(alert) = antibody::alert::ThreatAlert::from_json(text) {
            assert!(alert.validate().is_ok());
            let _ = alert.plan_name();
        }
    }
});
