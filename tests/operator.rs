//! Operator control on the real local control plane: approval gates (approve → runs, deny →
//! Denied, an approval for another spec digest is ignored, no decision → ApprovalExpired,
//! critical auto-approved, the REST endpoint's token scope), change windows (wait until a window
//! computed from "now" opens, refuse outside a refusing window) and a freeze with an expiry.
//! Each test runs the real `antibody` binary (controller and CLI) against its own namespace.

use antibody::names::APPROVAL_ANNOTATION;
use antibody_test_support as support;

use std::time::Duration;

use antibody::approval::{self, Decision, Verdict};
use antibody::config::Config;
use antibody::plan::{ActionType, AlertSummary, PatchPlan, PatchPlanSpec, PlanAction, StepState};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use support::{ControllerProcess, TestNamespace};

const PLAN_TIMEOUT: Duration = Duration::from_secs(60);
const APPROVER_TOKEN: &str = "operator-approver-token-0123456789";
const INGEST_TOKEN: &str = "operator-ingest-token-0123456789ab";

/// antibody.yml with the targets moved into the test namespace (restarts only matter here),
/// plus the operator sections under test.
fn test_config(ns: &str, operator_yaml: &str) -> String {
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    for target in config.targets.values_mut() {
        target.namespace = Some(ns.to_string());
        target.container = Some("app".into());
        target.reload_command = vec!["true".into()];
        target.verify = Some(support::stand_in_probe());
    }
    config.defaults.rollout_timeout_seconds = 30;
    config.actions.restart = vec!["VAEL_Core".into(), "VAEL_UI".into(), "Sentinel".into()];
    config.defaults.plan_namespace = ns.to_string();
    let operator: Config = Config::from_yaml(operator_yaml).expect("operator sections valid");
    config.approvals = operator.approvals;
    config.notify = operator.notify;
    config.change_windows = operator.change_windows;
    let yaml = serde_yaml::to_string(&config).expect("config serialises");
    Config::from_yaml(&yaml).expect("combined config valid");
    yaml
}

/// A loopback HTTP sink for the webhook notifier: every request body it received.
fn webhook_sink() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind webhook sink");
    let port = listener.local_addr().expect("addr").port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let text = String::from_utf8_lossy(&data).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
                    });
                    if length.is_some_and(|n| body.len() >= n) || (length.is_none() && body.ends_with("0\r\n\r\n")) {
                        seen.lock().expect("lock").push(body.to_string());
                        break;
                    }
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

async fn setup(client: &Client, ns: &str) {
    support::install_crd(client).await;
    for name in ["vael-core", "vael-ui", "sentinel"] {
        support::create_deployment(client, ns, &support::deployment(name, 1, None)).await;
    }
}

fn restart(name: &str, target: &str, severity: Option<&str>) -> PatchPlan {
    let alert = severity.map(|s| AlertSummary {
        id: name.into(),
        source: "tests".into(),
        category: "heartbeat".into(),
        severity: s.into(),
        ..Default::default()
    });
    PatchPlan::new(
        name,
        PatchPlanSpec { alert, actions: vec![PlanAction::new(ActionType::Restart, target)], ..Default::default() },
    )
}

fn ready(plan: &PatchPlan) -> (String, String) {
    plan.condition("Ready").map(|c| (c.status.clone(), c.reason.clone())).unwrap_or_default()
}

fn audit_text(controller: &ControllerProcess) -> String {
    std::fs::read_to_string(controller.audit_dir.join("audit.jsonl")).unwrap_or_default()
}

#[tokio::test]
async fn approvals_gate_plans_by_rule_and_bind_to_the_spec_digest() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "approve").await;
    setup(&client, &ns.name).await;
    let (sink_port, notified) = webhook_sink();
    let config = test_config(
        &ns.name,
        &format!(
            "notify: {{webhooks: [{{name: ops, url: 'http://127.0.0.1:{sink_port}/hook', secret: k}}]}}
approvals:
  timeout_seconds: 20
  default: require
  rules:
    - {{name: critical-auto, decision: auto_approve, severities: [critical]}}
"
        ),
    );
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = dir.join(format!("{}.tokens", support::unique("approve")));
    std::fs::write(&tokens, format!("approver:{APPROVER_TOKEN} scopes=approve\nnexus:{INGEST_TOKEN}\n"))
        .expect("tokens");
    let tokens = tokens.display().to_string();
    let controller = ControllerProcess::start(&config, &ns.name, &["--token-file", &tokens]);
    controller.wait_ready().await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);

    // Critical: auto-approved by the first rule, runs at once.
    support::apply_plan(&client, &ns.name, &restart("crit", "Sentinel", Some("critical"))).await;
    // The others wait for a human.
    for name in ["by-cli", "by-rest-deny", "stale"] {
        support::apply_plan(&client, &ns.name, &restart(name, "VAEL_UI", Some("high"))).await;
    }
    let crit = support::wait_for(plans.clone(), "crit", PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(ready(&crit), ("True".into(), "Applied".into()), "critical auto-approved");
    let waiting = support::wait_reason(&plans, "by-cli", "AwaitingApproval").await;
    assert_eq!(ready(&waiting).0, "False");
    let status = waiting.status.clone().expect("status");
    assert!(status.waiting_for.as_deref().is_some_and(|w| w.starts_with("approval until")), "{status:?}");
    assert!(status.actions.iter().all(|a| a.state == StepState::Pending), "nothing ran while waiting");
    let digest = approval::plan_digest(&waiting);
    assert!(waiting.condition("Ready").expect("Ready").message.contains(&digest[..12]), "message names the digest");

    // `kubectl get pp` shows why it waits.
    let out = support::kubectl().args(["get", "pp", "-n", &ns.name, "by-cli"]).output().expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("WAITS FOR") && table.contains("AwaitingApproval") && table.contains("approval until"),
        "{table}"
    );

    // Notifiers announce it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !notified.lock().expect("lock").iter().any(|b| b.contains("plan_awaiting_approval") && b.contains("by-cli")) {
        assert!(std::time::Instant::now() < deadline, "no plan_awaiting_approval webhook: {:?}", notified.lock());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // CLI approval with the reviewed digest → runs; the audit records who.
    let (ok, text) =
        support::antibody_cli(&["approve", "-n", &ns.name, "by-cli", "--digest", &digest, "--reason", "reviewed"]);
    assert!(ok, "{text}");
    let plan = support::wait_for(plans.clone(), "by-cli", PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(ready(&plan), ("True".into(), "Applied".into()), "{:?}", plan.condition("Ready"));
    assert_eq!(plan.status.as_ref().and_then(|s| s.waiting_for.clone()), None);

    // REST: an ingest-only token may not decide (403); none at all is 401.
    let deny_path = format!("/api/antibody/plans/{}/by-rest-deny/deny", ns.name);
    let (code, body) = support::http_request(controller.http_port, "POST", &deny_path, Some(INGEST_TOKEN), "{}");
    assert_eq!(code, 403, "{body}");
    let (code, _) = support::http_request(controller.http_port, "POST", &deny_path, None, "{}");
    assert_eq!(code, 401);
    let rest_plan = plans.get("by-rest-deny").await.expect("plan");
    assert!(rest_plan.annotations().get(APPROVAL_ANNOTATION).is_none(), "a refused call changes nothing");
    // The approver token denies → Denied.
    let (code, body) = support::http_request(
        controller.http_port,
        "POST",
        &deny_path,
        Some(APPROVER_TOKEN),
        r#"{"reason":"not during the demo"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let plan = support::wait_for(plans.clone(), "by-rest-deny", PLAN_TIMEOUT, support::plan_finished()).await;
    let stalled = plan.condition("Stalled").expect("Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "Denied"));
    assert!(
        stalled.message.contains("token:approver") && stalled.message.contains("not during the demo"),
        "{}",
        stalled.message
    );
    assert!(plan.status.as_ref().expect("status").actions.iter().all(|a| a.state == StepState::Pending));

    // An approval for another spec digest: REST refuses it (409) …
    let approve_path = format!("/api/antibody/plans/{}/stale/approve", ns.name);
    let old_digest = approval::spec_digest(&ns.name, "stale", &restart("stale", "VAEL_Core", Some("high")).spec);
    let (code, body) = support::http_request(
        controller.http_port,
        "POST",
        &approve_path,
        Some(APPROVER_TOKEN),
        &format!(r#"{{"digest":"{old_digest}"}}"#),
    );
    assert_eq!(code, 409, "{body}");
    // … and one written on the plan by hand is ignored: the plan keeps waiting …
    let stale = plans.get("stale").await.expect("plan");
    let forged = Decision {
        decision: Verdict::Approved,
        by: "user:someone".into(),
        digest: old_digest,
        uid: stale.uid().expect("uid"),
        at: jiff::Timestamp::now(),
        expires: Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600)),
        reason: String::new(),
    };
    let patch = serde_json::json!({"metadata": {"annotations": {APPROVAL_ANNOTATION: serde_json::to_string(&forged).expect("json")}}});
    plans.patch("stale", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    let ignored = support::wait_for(plans.clone(), "stale", PLAN_TIMEOUT, |p: Option<&PatchPlan>| {
        p.and_then(|p| p.condition("Ready")).is_some_and(|c| c.message.contains("is for spec digest"))
    })
    .await;
    assert_eq!(ready(&ignored), ("False".into(), "AwaitingApproval".into()));
    // … until nobody decided within timeout_seconds: ApprovalExpired, nothing ran.
    let plan = support::wait_for(plans.clone(), "stale", PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(plan.condition("Stalled").map(|c| c.reason.clone()).as_deref(), Some("ApprovalExpired"));
    assert!(plan.status.as_ref().expect("status").actions.iter().all(|a| a.state == StepState::Pending));
    // Deciding on a finished plan is refused.
    let (ok, text) = support::antibody_cli(&["approve", "-n", &ns.name, "stale"]);
    assert!(!ok && text.contains("already finished"), "{text}");

    // The audit log holds every decision.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let audit = audit_text(&controller);
        let found = audit.contains("awaiting_approval")
            && audit.contains("approved by user:")
            && audit.contains("denied by token:approver")
            && audit.contains("ApprovalExpired");
        if found {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "audit lacks a decision:\n{audit}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn change_windows_wait_or_refuse_and_freezes_expire() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "window").await;
    setup(&client, &ns.name).await;
    let now = jiff::Timestamp::now();
    let clock = |seconds: i64| {
        (now + jiff::SignedDuration::from_secs(seconds))
            .to_zoned(jiff::tz::TimeZone::UTC)
            .time()
            .strftime("%H:%M:%S")
            .to_string()
    };
    // VAEL_UI's window opens 25 s from now; Sentinel's refuses and is hours away.
    // The window's `from` has whole seconds; status times too.
    let opens_at = jiff::Timestamp::from_second((now + jiff::SignedDuration::from_secs(25)).as_second()).expect("ts");
    let config = test_config(
        &ns.name,
        &format!(
            "change_windows:
  windows:
    - {{name: ui-soon, targets: [VAEL_UI], time_zone: UTC, allow: [{{from: '{}', to: '{}'}}]}}
    - {{name: sentinel-later, targets: [Sentinel], time_zone: UTC, outside: refuse, allow: [{{from: '{}', to: '{}'}}]}}
",
            clock(25),
            clock(3600),
            clock(7200),
            clock(10800)
        ),
    );
    let controller = ControllerProcess::start(&config, &ns.name, &[]);
    controller.wait_ready().await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);

    support::apply_plan(&client, &ns.name, &restart("ui", "VAEL_UI", None)).await;
    support::apply_plan(&client, &ns.name, &restart("sentinel", "Sentinel", None)).await;
    let refused = support::wait_for(plans.clone(), "sentinel", PLAN_TIMEOUT, support::plan_finished()).await;
    let stalled = refused.condition("Stalled").expect("Stalled");
    assert_eq!(stalled.reason, "OutsideWindow", "{}", stalled.message);
    assert!(stalled.message.contains("sentinel-later"), "{}", stalled.message);

    let waiting = support::wait_reason(&plans, "ui", "OutsideWindow").await;
    assert!(jiff::Timestamp::now() < opens_at, "the window opened before the check: machine too slow");
    let waits = waiting.status.as_ref().and_then(|s| s.waiting_for.clone()).unwrap_or_default();
    assert!(waits.starts_with("window opens"), "{waits}");
    let out = support::kubectl().args(["get", "pp", "-n", &ns.name, "ui"]).output().expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("OutsideWindow") && table.contains("window opens"), "{table}");
    let plan = support::wait_for(plans.clone(), "ui", PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(ready(&plan), ("True".into(), "Applied".into()), "{:?}", plan.condition("Ready"));
    let started = plan.status.as_ref().and_then(|s| s.actions[0].started_at.clone()).expect("started").0;
    assert!(started >= opens_at, "acted at {started}, before the window opened at {opens_at}");

    // Freeze the namespace for 15 s: a plan waits `Frozen`, then runs once the freeze expired.
    let (ok, text) = support::antibody_cli(&["freeze", &ns.name, "--reason", "release 4.2", "--for-seconds", "15"]);
    assert!(ok, "{text}");
    let freeze_ends = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(15);
    support::apply_plan(&client, &ns.name, &restart("core", "VAEL_Core", None)).await;
    let frozen = support::wait_reason(&plans, "core", "Frozen").await;
    let message = frozen.condition("Ready").expect("Ready").message.clone();
    assert!(message.contains("release 4.2") && message.contains("by user:"), "{message}");
    let plan = support::wait_for(plans.clone(), "core", PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(ready(&plan), ("True".into(), "Applied".into()), "{:?}", plan.condition("Ready"));
    let started = plan.status.as_ref().and_then(|s| s.actions[0].started_at.clone()).expect("started").0;
    assert!(started + jiff::SignedDuration::from_secs(2) >= freeze_ends, "acted at {started} during the freeze");

    // Bad input changes nothing.
    let (ok, text) = support::antibody_cli(&["freeze", &ns.name, "--reason", " ", "--for-seconds", "10"]);
    assert!(!ok && text.contains("--reason"), "{text}");
    let (ok, text) = support::antibody_cli(&["unfreeze", &ns.name]);
    assert!(ok, "{text}");
}
