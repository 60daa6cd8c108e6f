#![no_main]
//! Any text → `Config::from_yaml`: never panics; an accepted config validates again.
//! The property lives in `fuzz/checks.rs`, shared with the stable replay in `tests/fuzz_corpus.rs`.
use libfuzzer_sys::fuzz_target;

// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::config_loader(data));
