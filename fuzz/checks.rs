//! The properties the fuzz targets check, shared with `tests/fuzz_corpus.rs` (which replays the
//! kept corpus on stable Rust in every test run). Each check panics when a property breaks.

/// Any bytes → `ThreatAlert::from_json`: never panics; what it accepts is valid and re-validates.
pub fn alert_parser(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(alert) = antibody::alert::ThreatAlert::from_json(text)
    {
        assert!(alert.validate().is_ok(), "accepted alert does not validate: {text:?}");
        let _ = alert.plan_name();
    }
}

/// Any string → `PatchHint::parse`: never panics; an accepted target is a valid logical name and
/// an accepted env value holds no control character.
pub fn patch_hint(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(hint) = antibody::alert::PatchHint::parse(text)
    {
        if let Some(target) = &hint.target {
            assert!(antibody::validate::logical_name(target).is_ok(), "accepted target: {text:?}");
        }
        if let Some((key, value)) = &hint.env {
            assert!(antibody::validate::env_key(key).is_ok(), "accepted env key: {text:?}");
            assert!(!value.chars().any(char::is_control), "accepted control character: {text:?}");
        }
    }
}

/// Any text → `Config::from_yaml`: never panics; an accepted config validates again.
pub fn config_loader(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = antibody::config::Config::from_yaml(text)
    {
        assert!(config.validate().is_ok(), "accepted config does not validate: {text:?}");
    }
}

/// Any JSON spec → canonical bytes: deterministic, and stable through a serialise/parse round
/// trip (so a signature made over one rendering verifies over another).
pub fn plan_canonical(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<antibody::plan::PatchPlanSpec>(data) else { return };
    let bytes = |spec: antibody::plan::PatchPlanSpec| {
        let mut plan = antibody::plan::PatchPlan::new("plan", spec);
        plan.metadata.namespace = Some("ns".into());
        antibody::signing::canonical_bytes(&plan, 1, "nonce").ok()
    };
    let Some(first) = bytes(spec.clone()) else { return };
    let again =
        serde_yaml::to_string(&spec).ok().and_then(|y| serde_yaml::from_str::<antibody::plan::PatchPlanSpec>(&y).ok());
    if let Some(again) = again {
        assert_eq!(bytes(again), Some(first), "canonical bytes changed");
    }
}
