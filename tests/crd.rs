//! `crds/patchplan.yaml` is generated from the Rust types; this fails when it is stale.

#[test]
fn crd_file_matches_the_rust_types() {
    let generated = antibody::plan::crd_yaml().expect("CRD serialises");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/patchplan.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/patchplan.yaml exists");
    assert!(
        generated == on_disk,
        "crds/patchplan.yaml is stale: regenerate it with `cargo run -- crd > crds/patchplan.yaml`"
    );
}

#[test]
fn crd_has_the_conventions() {
    let yaml = antibody::plan::crd_yaml().expect("CRD serialises");
    for needle in [
        "group: antibody.vael.io",
        "- pp",
        "rule: self == oldSelf",
        "x-kubernetes-list-type: map",
        "subresources:",
        "status: {}",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
}
