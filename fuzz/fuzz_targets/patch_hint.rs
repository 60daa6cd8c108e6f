#![no_main]
//! Any string → `PatchHint::parse`: never panics; what it accepts is a valid target and a clean env value.
//! The property lives in `fuzz/checks.rs`, shared with the stable replay in `tests/fuzz_corpus.rs`.
use libfuzzer_sys::fuzz_target;

// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::patch_hint(data));
