//! Layers point down. This reads every `crate::…` reference in `src/` (including grouped
//! `use crate::{a, b::c}`), builds the graph between top-level modules (the wiring in `lib.rs`,
//! `main.rs` may use everything; the bench and test support are crates of their own) and fails on any dependency cycle, naming the
//! edges on it (issue 18: the config ↔ ingest/notify/approvals, actions ↔ reconcile,
//! signing ↔ report and intake ↔ report cycles are gone; this keeps them gone).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module names referenced as `crate::name` or inside `crate::{…}` (comments stripped).
fn referenced(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> Option<String> {
        let name: String = s.trim_start().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        (!name.is_empty()).then_some(name)
    };
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's top-level items, up to its matching brace.
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.extend(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.extend(ident(&item));
        } else {
            names.extend(ident(rest));
        }
    }
    names
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("src")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_stem()?.to_str()?.to_string();
            (path.is_dir() || path.extension().is_some_and(|x| x == "rs")).then_some(name)
        })
        .filter(|name| !["lib", "main", "bin"].contains(&name.as_str()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or_default();
        let top = top.trim_end_matches(".rs").to_string();
        if !modules.contains(&top) {
            continue; // lib.rs, main.rs: the wiring may use everything
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let edges = graph.entry(top.clone()).or_default();
        edges.extend(referenced(&text).into_iter().filter(|m| *m != top && modules.contains(m)));
    }
    graph
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        if seen.insert(node.clone()) {
            stack.extend(graph.get(&node).into_iter().flatten().cloned());
        }
    }
    false
}

#[test]
fn references_are_read_from_plain_and_grouped_paths() {
    let text = "use crate::alert::X;\nuse crate::{config::{A, B}, plan, report::summary};\n// crate::ingest\n\
                let x = crate::signing::sign();";
    let found: Vec<String> = referenced(text).into_iter().collect();
    assert_eq!(found, ["alert", "config", "plan", "report", "signing"]);
}

#[test]
fn no_new_dependency_cycles_between_modules() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the graph was read: {graph:?}");
    let cyclic: BTreeSet<(String, String)> = graph
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from.clone(), to.clone())))
        .filter(|(from, to)| reaches(&graph, to, from))
        .collect();
    let cycles: Vec<String> = cyclic.iter().map(|(a, b)| format!("{a} → {b}")).collect();
    assert!(cycles.is_empty(), "dependency cycle edges (layers must point down): {cycles:?}");
}

/// The domain core: decisions and model, testable without a cluster. It may use the CRD types
/// (`plan`, derived with kube's macros) but never a client, an API call or the runtime, and it
/// depends only on itself.
const CORE: [&str; 16] = [
    "admission",
    "alert",
    "bounded",
    "clock",
    "conditions",
    "config",
    "effect",
    "names",
    "observation",
    "plan",
    "policy",
    "reason",
    "signing",
    "tokens",
    "validate",
    "window",
];

fn core_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let relative = file.strip_prefix(&src).ok()?;
            let top = relative.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
            CORE.contains(&top.as_str()).then(|| (top, std::fs::read_to_string(&file).expect("read")))
        })
        .collect()
}

#[test]
fn the_domain_core_uses_no_client_and_depends_only_on_itself() {
    let files = core_files();
    assert!(files.len() >= CORE.len(), "every core module was read");
    let mut outside = Vec::new();
    let mut clients = Vec::new();
    for (module, text) in &files {
        for name in referenced(text) {
            if !CORE.contains(&name.as_str()) {
                outside.push(format!("{module} → {name}"));
            }
        }
        for needle in ["kube::Client", "kube::Api", "kube::api::", "kube::runtime", "Api<", "Client,", "Client}"] {
            if text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains(needle)) {
                clients.push(format!("{module}: {needle}"));
            }
        }
    }
    assert!(outside.is_empty(), "core modules reaching out of the core: {outside:?}");
    assert!(clients.is_empty(), "core modules using the Kubernetes client: {clients:?}");
}
