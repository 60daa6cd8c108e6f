#![no_main]
//! Any JSON spec → canonical bytes: deterministic, and stable through a serialise/parse round trip
//! (so a signature made over one rendering verifies over another).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<antibody::plan::PatchPlanSpec>(data) else { return };
    let Ok(first) = antibody::signing::canonical_bytes("ns", "plan", &spec) else { return };
    let again = serde_yaml::to_string(&spec).ok().and_then(|y| serde_yaml::from_str::<antibody::plan::PatchPlanSpec>(&y).ok());
    if let Some(again) = again {
        assert_eq!(antibody::signing::canonical_bytes("ns", "plan", &again).ok(), Some(first));
    }
});
