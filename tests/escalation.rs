//! Escalation ladders and per-target breakers on the real local control plane, with the real
//! binary (controller and CLI) and alerts over REST:
//!
//! - a rule `restart` → `restart` → `page`: the alert again right after step 1 applied gives a
//!   step-2 plan (annotated with the plan it escalates from); once more → `paged`, the target's
//!   breaker opens, the last plan gets `escalation_exhausted` (audit); a manual plan on the target
//!   then waits `BreakerOpen` without acting until `antibody breaker reset`;
//! - an alert after `cure_seconds` starts a new episode at step 1;
//! - `safety.breaker.failures: 2`: two failed plans in a row on a target hold the third.

use antibody_test_support as support;

use std::time::Duration;

use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{ControllerProcess, TestNamespace};

const TOKEN: &str = "escalation-tests-token-0123456789";

/// This test's own antibody.yml.
fn config(ns: &str, cure_seconds: u64) -> String {
    format!(
        "actions:\n  restart: [Core, Ghost]\n\
         targets:\n  Core: {{namespace: {ns}, deployment: core, container: app}}\n  \
         Ghost: {{namespace: {ns}, deployment: ghost, container: app}}\n\
         rules:\n  - name: heartbeat\n    category: heartbeat\n    min_severity: high\n    actions: [restart]\n    \
         target: Core\n    escalate: {{cure_seconds: {cure_seconds}, then: [restart, page]}}\n\
         defaults: {{plan_namespace: {ns}, rollout_timeout_seconds: 30}}\n\
         safety: {{breaker: {{failures: 2}}}}\n\
         ingest: {{cooldown_seconds: 0}}\n"
    )
}

async fn start(client: &Client, ns: &str, cure_seconds: u64) -> ControllerProcess {
    support::install_crd(client).await;
    support::create_deployment(client, ns, &support::deployment("core", 1, None)).await;
    let tokens = support::token_file(TOKEN);
    let extra = ["--token-file", tokens.to_str().expect("utf-8"), "--plan-namespace", ns];
    let controller = ControllerProcess::start(&config(ns, cure_seconds), ns, &extra);
    controller.wait_ready().await;
    controller
}

fn alert(port: u16, id: &str) -> Value {
    let body =
        json!({"id": id, "source": "NEXUS", "category": "heartbeat", "severity": "high", "msg": "heartbeat missed"});
    let (code, text) = support::http_request(port, "POST", "/api/nexus/alert", Some(TOKEN), &body.to_string());
    assert_eq!(code, 202, "{text}");
    serde_json::from_str(&text).expect("JSON answer")
}

fn restart(name: &str, target: &str) -> PatchPlan {
    PatchPlan::new(
        name,
        PatchPlanSpec { actions: vec![PlanAction::new(ActionType::Restart, target)], ..Default::default() },
    )
}

#[tokio::test]
async fn an_uncured_alert_climbs_the_ladder_then_pages_and_the_breaker_holds_the_target() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "escalate").await;
    let controller = start(&client, &ns.name, 120).await;
    let port = controller.http_port;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);

    let first = alert(port, "hb-1");
    assert_eq!(first["outcome"], "plan_created", "{first}");
    let step1 = first["plan"].as_str().expect("plan").to_string();
    support::wait_reason(&plans, &step1, "Applied").await;

    // The same problem again within cure_seconds: step 2, a new plan that says where it came from.
    let second = alert(port, "hb-2");
    assert_eq!((second["outcome"].as_str(), second["step"].as_u64()), (Some("escalated"), Some(2)), "{second}");
    assert_eq!(second["escalated_from"], step1.as_str());
    let step2 = second["plan"].as_str().expect("plan").to_string();
    let plan = support::wait_reason(&plans, &step2, "Applied").await;
    let annotations = plan.annotations();
    assert_eq!(annotations.get("antibody.vael.io/escalated-from"), Some(&step1));
    assert!(
        annotations.get("antibody.vael.io/escalation").is_some_and(|a| a.contains("step 2 of 3")),
        "{annotations:?}"
    );

    // Once more: the ladder is exhausted — a human is paged, nothing new is created.
    let before = plans.list(&Default::default()).await.expect("list").items.len();
    let third = alert(port, "hb-3");
    assert_eq!((third["outcome"].as_str(), third["target"].as_str()), (Some("paged"), Some("Core")), "{third}");
    let again = alert(port, "hb-4");
    assert_eq!(again["outcome"], "paged", "still paged within cure_seconds: {again}");
    assert_eq!(plans.list(&Default::default()).await.expect("list").items.len(), before, "no plan for a page");
    let (ok, status) = support::antibody_cli(&["breaker", "status", "-n", &ns.name]);
    assert!(ok && status.contains("Core") && status.contains("escalation of rule heartbeat exhausted"), "{status}");
    // The last plan carries the page (audit: escalation_exhausted).
    let audit = controller.audit_dir.join("audit.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let exhausted = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|r| {
            r["kind"] == "plan" && r["event"] == "escalation_exhausted" && r["plan"]["name"] == step2.as_str()
        });
        if exhausted {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no escalation_exhausted record:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // With the breaker open, a plan on the target waits and does not act.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let before = support::restarted_at(&deployments.get("core").await.expect("deployment"));
    support::apply_plan(&client, &ns.name, &restart("manual-while-open", "Core")).await;
    let held = support::wait_reason(&plans, "manual-while-open", "BreakerOpen").await;
    let waiting = held.status.as_ref().and_then(|s| s.waiting_for.clone()).unwrap_or_default();
    assert!(waiting.contains("antibody breaker reset Core"), "{waiting}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(support::restarted_at(&deployments.get("core").await.expect("deployment")), before, "held, not acted");

    let (ok, out) = support::antibody_cli(&["breaker", "reset", "Core", "-n", &ns.name]);
    assert!(ok && out.contains("reset by"), "{out}");
    support::wait_reason(&plans, "manual-while-open", "Applied").await;
    assert_ne!(
        support::restarted_at(&deployments.get("core").await.expect("deployment")),
        before,
        "acted after the reset"
    );
}

#[tokio::test]
async fn an_alert_after_cure_seconds_starts_a_new_episode() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "escalate-cured").await;
    let controller = start(&client, &ns.name, 2).await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let first = alert(controller.http_port, "cured-1");
    let step1 = first["plan"].as_str().expect("plan").to_string();
    support::wait_reason(&plans, &step1, "Applied").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let next = alert(controller.http_port, "cured-2");
    assert_eq!(next["outcome"], "plan_created", "cured: step 1 again, not escalated: {next}");
    let plan = plans.get(next["plan"].as_str().expect("plan")).await.expect("plan");
    assert!(
        plan.annotations().get("antibody.vael.io/escalation").is_some_and(|a| a.contains("step 1 of 3")),
        "{:?}",
        plan.annotations()
    );
}

#[tokio::test]
async fn consecutive_failures_open_a_targets_breaker() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "breaker").await;
    let _controller = start(&client, &ns.name, 60).await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    // Ghost's Deployment does not exist: each restart fails TargetNotFound.
    for name in ["ghost-1", "ghost-2"] {
        support::apply_plan(&client, &ns.name, &restart(name, "Ghost")).await;
        support::wait_reason(&plans, name, "TargetNotFound").await;
    }
    support::apply_plan(&client, &ns.name, &restart("ghost-3", "Ghost")).await;
    let held = support::wait_reason(&plans, "ghost-3", "BreakerOpen").await;
    let message = held.condition("Ready").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("2 failed plans in a row") && message.contains("ghost-2"), "{message}");
    // Other targets are not held.
    support::apply_plan(&client, &ns.name, &restart("core-ok", "Core")).await;
    support::wait_reason(&plans, "core-ok", "Applied").await;
    let (ok, status) = support::antibody_cli(&["breaker", "status", "-n", &ns.name]);
    assert!(ok && status.lines().any(|l| l.starts_with("Ghost") && l.contains(" 2 ")), "{status}");
    let (ok, out) = support::antibody_cli(&["breaker", "reset", "Ghost", "-n", &ns.name]);
    assert!(ok, "{out}");
    support::wait_reason(&plans, "ghost-3", "TargetNotFound").await;
}
