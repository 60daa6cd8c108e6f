//! The durable, anchored audit log on the real local control plane, with the real binary:
//!
//! - a controller killed (SIGKILL) while a plan is mid-run: the restarted controller continues
//!   the same keyed chain, the plan finishes, and `antibody audit verify --key-file --anchor`
//!   accepts the log; the same log with its last records cut off is refused (the anchor in the
//!   plan namespace pinned them), while the chain alone cannot tell; a controller whose volume
//!   was lost (same log id, empty directory) records `anchor_ahead` with what was pinned;
//! - `audit.fail_closed: true`: with the log's directory gone, a plan does not act (condition
//!   reason `AuditUnavailable`, the Deployment untouched); once the directory is back the plan
//!   runs and the log records the loss (`write_failed`) before it.

use antibody_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use serde_json::Value;
use support::{ControllerProcess, TestNamespace};

const PLAN_TIMEOUT: Duration = Duration::from_secs(60);

/// This test's own antibody.yml: one restartable target in the test namespace.
fn config(ns: &str, key_file: &Path, fail_closed: bool) -> String {
    format!(
        "actions:\n  restart: [Core]\n\
         targets:\n  Core: {{namespace: {ns}, deployment: core, container: app}}\n\
         defaults: {{plan_namespace: {ns}, rollout_timeout_seconds: 30}}\n\
         audit: {{key_file: {}, anchor_seconds: 1, fail_closed: {fail_closed}}}\n",
        key_file.display()
    )
}

fn key_file(ns: &str) -> PathBuf {
    let path = std::env::temp_dir().join("antibody-tests").join(format!("{ns}-audit.key"));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(&path, support::unique("audit-key-material-")).expect("key");
    path
}

fn restart(name: &str) -> PatchPlan {
    PatchPlan::new(
        name,
        PatchPlanSpec { actions: vec![PlanAction::new(ActionType::Restart, "Core")], ..Default::default() },
    )
}

async fn setup(client: &Client, ns: &str) {
    support::install_crd(client).await;
    support::create_deployment(client, ns, &support::deployment("core", 1, None)).await;
}

fn ready_reason(plan: &PatchPlan) -> String {
    plan.condition("Ready").map(|c| c.reason.clone()).unwrap_or_default()
}

/// `antibody audit verify ARGS`: (exit success, output).
fn verify(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["audit", "verify"])
        .args(args)
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("run antibody audit verify");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn records(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn events_of(records: &[Value], plan: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["kind"] == "plan" && r["plan"]["name"] == plan)
        .map(|r| r["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The anchor this log has in the namespace's ConfigMap: its seq.
async fn anchored_seq(client: &Client, ns: &str, log_id: &str) -> Option<u64> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let map = maps.get_opt("antibody-audit-anchor").await.ok().flatten()?;
    let value = map.data?.get(log_id)?.clone();
    serde_json::from_str::<Value>(&value).ok()?["seq"].as_u64()
}

#[tokio::test]
async fn a_controller_killed_mid_plan_continues_the_anchored_chain() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "audit-kill").await;
    setup(&client, &ns.name).await;
    let key = key_file(&ns.name);
    let yaml = config(&ns.name, &key, true);
    let dir = std::env::temp_dir().join("antibody-tests").join(support::unique("audit-kill-log"));
    let log_id = format!("{}-0", ns.name);
    let extra = ["--audit-dir", dir.to_str().expect("utf-8"), "--audit-log-id", &log_id];
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);

    let mut first = ControllerProcess::start(&yaml, &ns.name, &extra);
    first.wait_ready().await;
    support::apply_plan(&client, &ns.name, &restart("before-kill")).await;
    support::wait_reason(&plans, "before-kill", "Applied").await;

    // Kill it while the next plan is mid-run: started, its rollout not yet complete.
    support::apply_plan(&client, &ns.name, &restart("mid-run")).await;
    let running = support::wait_for(plans.clone(), "mid-run", PLAN_TIMEOUT, |p: Option<&PatchPlan>| {
        p.is_some_and(|p| p.phase() != antibody::plan::Phase::Pending)
    })
    .await;
    first.kill();
    assert!(!running.phase().is_terminal(), "killed mid-run, not after: {:?}", running.status);
    let at_kill = records(&dir);
    assert!(events_of(&at_kill, "mid-run").contains(&"started".to_string()), "{at_kill:?}");
    assert!(!events_of(&at_kill, "mid-run").contains(&"patch_applied".to_string()));

    // A new controller on the same volume: the plan finishes, the chain goes on.
    let mut second = ControllerProcess::start(&yaml, &ns.name, &extra);
    second.wait_ready().await;
    support::wait_reason(&plans, "mid-run", "Applied").await;
    support::apply_plan(&client, &ns.name, &restart("after-kill")).await;
    support::wait_reason(&plans, "after-kill", "Applied").await;
    assert!(second.terminate().is_some_and(|s| s.success()), "graceful stop:\n{}", second.logs());

    let all = records(&dir);
    assert!(events_of(&all, "mid-run").contains(&"patch_applied".to_string()), "{all:?}");
    assert!(all.iter().all(|r| r["prev_mac"].is_string()), "every record keyed");
    let last_seq = all.last().and_then(|r| r["seq"].as_u64()).expect("records");
    // The final anchor (written at shutdown) pins the last record.
    assert_eq!(anchored_seq(&client, &ns.name, &log_id).await, Some(last_seq));

    let dir_arg = dir.to_str().expect("utf-8");
    let key_arg = key.to_str().expect("utf-8");
    let anchored = ["--key-file", key_arg, "--anchor", &ns.name, "--log-id", &log_id, "--require-genesis"];
    let (ok, out) = verify(&[&[dir_arg][..], &anchored[..]].concat());
    assert!(ok, "{out}");
    assert!(out.contains("OK:") && out.contains("matches the anchor"), "{out}");

    // Cut the last two records off a copy: the chain alone is still consistent, the anchor is not.
    let cut = std::env::temp_dir().join("antibody-tests").join(support::unique("audit-cut"));
    std::fs::create_dir_all(&cut).expect("dir");
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).expect("log");
    let lines: Vec<&str> = text.lines().collect();
    let kept: String = lines[..lines.len() - 2].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(cut.join("audit.jsonl"), kept).expect("write");
    let cut_arg = cut.to_str().expect("utf-8");
    let (ok, out) = verify(&[cut_arg, "--key-file", key_arg, "--require-genesis"]);
    assert!(ok, "truncation is invisible to the chain alone: {out}");
    let (ok, out) = verify(&[&[cut_arg][..], &anchored[..]].concat());
    assert!(!ok, "{out}");
    assert!(out.contains("were removed") && out.contains(&last_seq.to_string()), "{out}");
    // And with the wrong key nothing passes.
    let wrong = std::env::temp_dir().join("antibody-tests").join(support::unique("wrong-key"));
    std::fs::write(&wrong, "another-key-of-enough-length").expect("key");
    let (ok, out) = verify(&[dir_arg, "--key-file", wrong.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("MAC mismatch"), "{out}");

    // The volume is lost (a fresh directory under the same log id): the new log says so first.
    let fresh = std::env::temp_dir().join("antibody-tests").join(support::unique("audit-fresh"));
    let extra = ["--audit-dir", fresh.to_str().expect("utf-8"), "--audit-log-id", &log_id];
    let mut third = ControllerProcess::start(&yaml, &ns.name, &extra);
    third.wait_ready().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let noticed = loop {
        let found = records(&fresh).into_iter().find(|r| r["event"] == "anchor_ahead");
        if let Some(record) = found {
            break record;
        }
        assert!(std::time::Instant::now() < deadline, "no anchor_ahead record:\n{}", third.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(noticed["kind"], "chain_break");
    let message = noticed["message"].as_str().unwrap_or("");
    assert!(message.contains(&format!("pinned seq {last_seq}")) && message.contains("this log is empty"), "{message}");
    assert!(third.terminate().is_some_and(|s| s.success()));
}

#[tokio::test]
async fn fail_closed_holds_plans_while_the_log_cannot_be_written() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "audit-closed").await;
    setup(&client, &ns.name).await;
    let key = key_file(&ns.name);
    let dir = std::env::temp_dir().join("antibody-tests").join(support::unique("audit-closed-log"));
    let extra = ["--audit-dir", dir.to_str().expect("utf-8")];
    let controller = ControllerProcess::start(&config(&ns.name, &key, true), &ns.name, &extra);
    controller.wait_ready().await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(&client, &ns.name, &restart("while-writable")).await;
    support::wait_reason(&plans, "while-writable", "Applied").await;
    let before = support::restarted_at(&deployments.get("core").await.expect("deployment"));

    // The log's volume goes away: the next plan must not act.
    std::fs::remove_dir_all(&dir).expect("remove the audit directory");
    support::apply_plan(&client, &ns.name, &restart("while-unwritable")).await;
    let held = support::wait_reason(&plans, "while-unwritable", "AuditUnavailable").await;
    let message = held.condition("Ready").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("audit.fail_closed"), "{message}");
    // Held across retries (every 5 s), never acting meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = plans.get("while-unwritable").await.expect("plan");
    assert_eq!(ready_reason(&still), "AuditUnavailable", "{:?}", still.status);
    assert_eq!(support::restarted_at(&deployments.get("core").await.expect("deployment")), before, "nothing acted");

    // Back: the plan acts, after the loss is on record.
    std::fs::create_dir_all(&dir).expect("recreate the audit directory");
    support::wait_reason(&plans, "while-unwritable", "Applied").await;
    assert_ne!(support::restarted_at(&deployments.get("core").await.expect("deployment")), before, "it acted");
    let after = records(&dir);
    let first = after.first().expect("records after the gap");
    assert_eq!((first["kind"].as_str(), first["event"].as_str()), (Some("chain_break"), Some("write_failed")));
    assert!(first["detail"]["lost_records"].as_u64().is_some_and(|n| n >= 1), "{first}");
    let events = events_of(&after, "while-unwritable");
    assert!(events.contains(&"started".to_string()) && events.contains(&"patch_applied".to_string()), "{events:?}");
    let key_arg = key.to_str().expect("utf-8");
    let (ok, out) = verify(&[dir.to_str().expect("utf-8"), "--key-file", key_arg]);
    assert!(ok, "the continued chain verifies: {out}");
}
