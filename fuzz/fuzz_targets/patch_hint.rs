#![no_main]
//! Any string → `PatchHint::parse`: never panics; an accepted target is a valid logical name
//! The property lives in `fuzz/checks.rs`, shared with the stable replay in `tests/fuzz_corpus.rs`.
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::patch_hint(data));
