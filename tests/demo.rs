//! `make demo` (README "Quick start"): `demo/run.sh` runs to its documented end state — the
//! three high/critical matrix alerts end `PatchApplied`, the info alert gets no plan, the audit
//! chain verifies — within a bounded time, and stops everything it started: no process of its
//! process group is left, and its namespace is being deleted.
//!
//! The demo runs with the binary this test build made (`ANTIBODY_BIN`) instead of its own
//! release build: CI builds no release profile (time), so the release step itself is not run
//! here. The control plane is the suite's (already up), which the demo leaves running.

use antibody_test_support as support;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Four alerts 2 s apart, three plans with rollouts and reloads, plus the demo's setup (namespace,
/// three Deployments, gunicorn, NEXUS stand-in) on a loaded 2-core machine.
const DEMO_BOUND: Duration = Duration::from_secs(240);

/// Pids of live processes whose process group is `pgid`.
fn processes_in_group(pgid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp …: comm may hold spaces, so split after its closing ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, group) = (fields.first().copied(), fields.get(2).and_then(|g| g.parse::<u32>().ok()));
        if group == Some(pgid) && state != Some("Z") {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

#[test]
fn make_demo_reaches_its_end_state_and_stops_what_it_started() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut demo = Command::new("bash")
        .arg(format!("{root}/demo/run.sh"))
        .current_dir(root)
        .env("ANTIBODY_BIN", env!("CARGO_BIN_EXE_antibody"))
        .env("KUBECONFIG", support::kubeconfig_path())
        // Its own process group: everything the demo starts is in it unless it detaches.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start demo/run.sh");
    let group = demo.id();
    let (mut stdout, mut stderr) = (demo.stdout.take().expect("stdout"), demo.stderr.take().expect("stderr"));
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().expect("wait for the demo") {
            break Some(status);
        }
        if started.elapsed() > DEMO_BOUND {
            // Ours: the group this test created for the demo.
            let _ = Command::new("kill").args(["-TERM", "--", &format!("-{group}")]).status();
            let _ = demo.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let transcript = format!("--- stdout\n{out}\n--- stderr\n{err}");
    let status = status.unwrap_or_else(|| panic!("make demo did not finish within {DEMO_BOUND:?}:\n{transcript}"));
    eprintln!("make demo finished in {took:?}");
    assert!(status.success(), "make demo failed ({status}):\n{transcript}");

    // The documented end state: the table's four rows and the audit chain.
    let rows = |prefix: &str| out.lines().find(|l| l.starts_with(prefix)).map(str::to_string);
    for (alert, result) in
        [("hb-", "PatchApplied"), ("pol-", "PatchApplied"), ("crit-", "PatchApplied"), ("info-", "no action (by rule)")]
    {
        let row = rows(alert).unwrap_or_else(|| panic!("no {alert} row:\n{transcript}"));
        assert!(row.contains(result), "{alert} row is not {result}: {row}\n{transcript}");
    }
    let crit = rows("crit-").unwrap_or_default();
    assert!(crit.contains("restart:VAEL_Core, reloadFlask:VAEL_Core"), "the critical row's actions: {crit}");
    assert!(out.lines().any(|l| l.starts_with("OK: ") && l.contains("chain from genesis")), "audit: {transcript}");
    assert!(err.contains("== 7/7 done"), "{transcript}");

    // Stopped everything it started (gunicorn and its workers, the NEXUS stand-in, the
    // controller, the kubectl watch): nothing of its group is left once it exited.
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left = processes_in_group(group);
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(left.is_empty(), "the demo left processes running: {left:#?}");
    // Its namespace is gone or going (deleted without waiting).
    let namespace = support::kubectl()
        .args(["get", "namespace", "vael-demo", "--ignore-not-found", "-o", "jsonpath={.metadata.deletionTimestamp}"])
        .output()
        .expect("kubectl get namespace");
    let namespace = String::from_utf8_lossy(&namespace.stdout);
    let exists = support::kubectl().args(["get", "namespace", "vael-demo", "-o", "name"]).output().expect("kubectl");
    assert!(
        !exists.status.success() || !namespace.trim().is_empty(),
        "namespace vael-demo is still there and not being deleted"
    );
}
