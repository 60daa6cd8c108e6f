//! Replays every input the fuzzers kept (`fuzz/corpus/<target>/`) and every crash they ever
//! saved (`fuzz/artifacts/<target>/`) through the same property checks the `cargo fuzz` targets
//! run (`fuzz/checks.rs`), on stable Rust: a regression of a fixed fuzz finding fails here.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// A fuzz target's property: panics when it breaks.
type Check = fn(&[u8]);

fn replay(target: &str, check: Check) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
                let why = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                panic!("{target}: {} breaks the property: {why}", path.display());
            }
            count += 1;
        }
    }
    count
}

#[test]
fn fuzz_corpora_replay_without_a_broken_property() {
    let targets: [(&str, Check); 4] = [
        ("alert_parser", checks::alert_parser),
        ("patch_hint", checks::patch_hint),
        ("config_loader", checks::config_loader),
        ("plan_canonical", checks::plan_canonical),
    ];
    for (target, check) in targets {
        let replayed = replay(target, check);
        eprintln!("{target}: {replayed} inputs replayed");
        // The corpora are committed; an empty one means the path or the checkout is wrong.
        assert!(replayed >= 50, "{target}: only {replayed} corpus inputs found under fuzz/");
    }
}
