#![no_main]
//! Any JSON spec → canonical bytes: deterministic and stable through a serialise/parse round trip.
//! The property lives in `fuzz/checks.rs`, shared with the stable replay in `tests/fuzz_corpus.rs`.
use libfuzzer_sys::fuzz_target;

// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::plan_canonical(data));
