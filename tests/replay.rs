//! `antibody replay` against a real history: a controller on the local control plane decides
//! alerts (a plan that restarts and applies, an ignored one, a refused one) and writes its audit
//! log; the log is then replayed offline under a changed antibody.yml. The report must show what
//! really happened (the plan's actions and how it ended) next to what the new rules decide, and
//! the exit status must follow the expectation file and `--fail-on-change`.

use antibody_test_support as support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use antibody::plan::PatchPlan;
use kube::Api;
use support::{ControllerProcess, TestNamespace};

const TOKEN: &str = "replay-test-token-0123456789";

fn config(ns: &str, heartbeat_actions: &str) -> String {
    format!(
        r#"
targets:
  Web: {{deployment: web, namespace: {ns}, {probe}}}
actions:
  restart: [Web]
rules:
  - {{name: heartbeat, category: heartbeat, min_severity: high, actions: {heartbeat_actions}, target: Web}}
  - {{name: policy-quiet, category: policy, actions: []}}
defaults:
  plan_namespace: {ns}
log_path: logs
"#,
        probe = support::STAND_IN_PROBE_YAML,
    )
}

/// `antibody replay ARGS…` → (exit code, stdout, stderr).
fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_antibody")).arg("replay").args(args).output().expect("run replay");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

#[tokio::test]
async fn replays_a_real_audit_log_under_new_rules() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, "replay").await;
    support::create_deployment(&client, &ns.name, &support::deployment("web", 1, None)).await;
    let old_rules = config(&ns.name, "[restart]");
    let tokens = support::token_file(TOKEN);
    let mut controller =
        ControllerProcess::start(&old_rules, &ns.name, &["--token-file", tokens.to_str().expect("utf-8")]);
    controller.wait_ready().await;

    let post =
        |alert: &str| support::http_request(controller.http_port, "POST", "/api/nexus/alert", Some(TOKEN), alert);
    let (code, reply) =
        post(r#"{"id":"hb-1","source":"nexus","category":"heartbeat","severity":"high","msg":"missed"}"#);
    assert_eq!(code, 202, "{reply}");
    let plan_name = serde_json::from_str::<serde_json::Value>(&reply).expect("json")["plan"]
        .as_str()
        .expect("a plan was created")
        .to_string();
    let (code, reply) = post(r#"{"id":"pf-1","source":"nexus","category":"policy","severity":"high","msg":"flood"}"#);
    assert_eq!((code, reply.contains("ignored")), (202, true), "{reply}");
    let (code, reply) = post(
        r#"{"id":"nt-1","source":"nexus","category":"heartbeat","severity":"high","msg":"x","patch_hint":"restart:Nowhere"}"#,
    );
    assert_eq!(code, 403, "an unknown target is refused: {reply}");

    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let done = support::wait_for(plans, &plan_name, Duration::from_secs(60), support::plan_finished()).await;
    let applied = done.condition("PatchApplied").map(|c| c.status.clone());
    assert_eq!(applied.as_deref(), Some("True"), "{}", controller.logs());
    controller.terminate();
    let audit = controller.audit_dir.join("audit.jsonl").display().to_string();

    let work = tempfile::tempdir().expect("temp dir");
    // The same rules: nothing changed, and the history is what happened.
    let same = write(work.path(), "same.yml", &old_rules);
    let (code, out, err) = replay(&["--config", &same, &audit]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 3 alert(s): 0 changed, 3 same"), "{out}");
    let hb_line = out.lines().find(|l| l.contains("hb-1")).expect("hb-1 replayed");
    assert!(hb_line.contains(&plan_name) && hb_line.contains("[restart:Web]"), "{out}");
    assert!(out.contains("→ patch_applied"), "the history says how the plan ended: {out}");
    assert!(out.lines().any(|l| l.contains("nt-1") && l.contains("refused NotAllowed")), "{out}");

    // New rules: heartbeats are now only recorded — the restart is gone, and the refused hint
    // is now ignored by the same rule before its target is looked at.
    let new = write(work.path(), "new.yml", &config(&ns.name, "[]"));
    let (code, out, err) = replay(&["--config", &new, &audit]);
    assert_eq!(code, 0, "a change alone does not fail without --fail-on-change: {out}{err}");
    assert!(out.contains("replayed 3 alert(s): 2 changed, 1 same"), "{out}");
    let changed: Vec<&str> = out.lines().filter(|l| l.starts_with("CHANGED")).collect();
    assert_eq!(changed.len(), 2, "{out}");
    assert!(changed[0].contains("hb-1") && changed[0].contains("was: plan"), "{out}");
    assert!(changed[1].contains("nt-1") && changed[1].contains("was: refused NotAllowed"), "{out}");
    let (code, out, _) = replay(&["--config", &new, "--fail-on-change", &audit]);
    assert_eq!(code, 1, "--fail-on-change fails on the changed heartbeat: {out}");

    // Expectations: pinning the new behaviour passes, pinning the old one fails and says why.
    let pass = write(
        work.path(),
        "pass.yml",
        "expectations:\n  - {alert: hb-1, outcome: ignored, rule: heartbeat}\n  - {category: policy, outcome: ignored}\n",
    );
    let (code, out, err) = replay(&["--config", &new, "--expect", &pass, &audit]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("expectations: 2 checked, 0 failure(s)"), "{out}");
    let fail =
        write(work.path(), "fail.yml", "expectations:\n  - {alert: hb-1, outcome: plan, actions: ['restart:Web']}\n");
    let (code, out, _) = replay(&["--config", &new, "--expect", &fail, &audit]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL alert=hb-1") && out.contains("outcome ignored (expected plan)"), "{out}");

    // JSON for machines.
    let (code, out, _) = replay(&["--config", &new, "--json", &audit]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["changed"], 2, "{report}");
    assert_eq!(report["alerts"].as_array().map(Vec::len), Some(3), "{report}");

    // Bad input changes nothing and says where: exit 2.
    let bad = write(work.path(), "bad.jsonl", "{\"id\": \"x\"}\n");
    let (code, _, err) = replay(&["--config", &new, &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.jsonl:1"), "{err}");
}
