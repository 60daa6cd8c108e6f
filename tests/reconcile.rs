//! The reconciler on the real local control plane: the original testing matrix, editEnv with a
//! backup, crash-resume without repeating an action, and refusal of what is not whitelisted.
//! Each test runs the real `antibody` binary against its own namespace.

use antibody::names::RESTARTED_AT_ANNOTATION;
use antibody_test_support as support;

use std::time::Duration;

use antibody::alert::{Severity, ThreatAlert};
use antibody::config::Config;
use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction, StepState};
use antibody::policy::{self, Decision};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use support::{ControllerProcess, Gunicorn, TestNamespace};

const PLAN_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "reconcile-test-token-0123456789";

/// antibody.yml with every target moved into the test namespace and reloads aimed at the
/// gunicorn master this test started (never at PID 1 of this host).
fn test_config(ns: &str, gunicorn_pid: Option<u32>) -> String {
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    for target in config.targets.values_mut() {
        target.namespace = Some(ns.to_string());
        target.container = Some("app".into());
        target.reload_command = match gunicorn_pid {
            Some(pid) => vec!["kill".into(), "-HUP".into(), pid.to_string()],
            None => vec!["true".into()],
        };
        target.verify = Some(support::stand_in_probe());
    }
    config.defaults.rollout_timeout_seconds = 30;
    // A whitelisted target whose Deployment does not exist (TargetNotFound).
    let mut gone = config.targets.get("Sentinel").cloned().expect("Sentinel target");
    gone.deployment = "gone".into();
    config.targets.insert("Gone".into(), gone);
    config.actions.restart.push("Gone".into());
    // Plans created from alerts land here, where the test can see them.
    config.defaults.plan_namespace = ns.to_string();
    serde_yaml::to_string(&config).expect("config serialises")
}

fn alert(id: &str, category: &str, severity: Severity, hint: &str) -> ThreatAlert {
    ThreatAlert {
        id: id.into(),
        source: "NEXUS".into(),
        category: category.into(),
        severity,
        msg: format!("matrix alert {id}"),
        patch_hint: Some(hint.into()),
        ts: Some("2025-05-30T12:34:56Z".into()),
    }
}

/// alert → policy → PatchPlan, as the ingest path will create it.
fn plan_for(config_yaml: &str, ns: &str, alert: &ThreatAlert) -> Option<PatchPlan> {
    let config = Config::from_yaml(config_yaml).expect("test config valid");
    match policy::decide(&config, alert, ns) {
        Decision::Plan { rule, name, spec } => Some(policy::plan_object(&name, ns, &rule, spec)),
        Decision::Ignore { .. } => None,
        Decision::Refuse(r) => panic!("alert {} refused: {r:?}", alert.id),
    }
}

fn manual_plan(name: &str, actions: Vec<PlanAction>) -> PatchPlan {
    PatchPlan::new(name, PatchPlanSpec { actions, ..Default::default() })
}

async fn setup(client: &Client, ns: &str, with_config_map: bool) {
    support::install_crd(client).await;
    if with_config_map {
        support::create_config_map(client, ns, "vael-core-env", &[("LOG_LEVEL", "info"), ("MODE", "normal")]).await;
    }
    let core = support::deployment("vael-core", 2, with_config_map.then_some("vael-core-env"));
    support::create_deployment(client, ns, &core).await;
    support::create_deployment(client, ns, &support::deployment("vael-ui", 1, None)).await;
    support::create_deployment(client, ns, &support::deployment("sentinel", 1, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for name in ["vael-core", "vael-ui", "sentinel"] {
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
}

async fn wait_ready(client: &Client, ns: &str, name: &str) -> PatchPlan {
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), ns);
    let plan = support::wait_for(plans, name, PLAN_TIMEOUT, support::plan_finished()).await;
    let ready = plan.condition("Ready").expect("Ready condition");
    assert_eq!(ready.status, "True", "plan {name} not Ready: {} — {}", ready.reason, ready.message);
    assert_eq!(plan.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"), "PatchApplied");
    assert_eq!(plan.condition("Reconciling").map(|c| c.status.as_str()), Some("False"));
    assert_eq!(plan.condition("Stalled").map(|c| c.status.as_str()), Some("False"));
    plan
}

async fn replicasets(client: &Client, ns: &str, app: &str) -> usize {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("app={app}"))).await.expect("list rs").items.len()
}

async fn restarted_at(client: &Client, ns: &str, name: &str) -> Option<String> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns).get(name).await.expect("get deployment");
    d.spec?.template.metadata?.annotations?.get(RESTARTED_AT_ANNOTATION).cloned()
}

/// `kubectl wait --for=condition=Ready` returns for a finished plan.
fn kubectl_wait_ready(ns: &str, name: &str) {
    let out = support::kubectl()
        .args(["wait", "--for=condition=Ready", &format!("patchplan/{name}"), "-n", ns, "--timeout=30s"])
        .output()
        .expect("run kubectl wait");
    assert!(out.status.success(), "kubectl wait failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
}

#[tokio::test]
async fn matrix_heartbeat_restarts_and_info_does_nothing() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "matrix-hb").await;
    setup(&client, &ns.name, false).await;
    let config = test_config(&ns.name, None);
    let tokens = support::token_file(TOKEN);
    let controller = ControllerProcess::start(&config, &ns.name, &["--token-file", &tokens.display().to_string()]);

    // heartbeat/high → VAEL_Core rollout restarted and complete.
    let plan =
        plan_for(&config, &ns.name, &alert("hb1", "heartbeat", Severity::High, "restart:VAEL_Core")).expect("a plan");
    assert_eq!(plan.summary(), "restart:VAEL_Core");
    support::apply_plan(&client, &ns.name, &plan).await;
    let done = wait_ready(&client, &ns.name, &plan.name_any()).await;
    kubectl_wait_ready(&ns.name, &plan.name_any());
    let stored = done.status.as_ref().and_then(|s| s.actions[0].restarted_at.clone()).expect("restartedAt in status");
    assert_eq!(restarted_at(&client, &ns.name, "vael-core").await, Some(stored), "the value from status was written");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let core = deployments.get("vael-core").await.expect("get");
    assert_eq!(
        antibody::actions::rollout::rollout_state(&core, core.metadata.generation.unwrap_or(0)),
        antibody::actions::rollout::RolloutState::Complete
    );
    assert_eq!(replicasets(&client, &ns.name, "vael-core").await, 2, "exactly one rollout");

    // info (and warn) → no plan, no action: sent to the running controller over REST, which
    // records them as ignored (the observable that it decided) and creates nothing.
    controller.wait_ready().await;
    let quiet = [
        alert("i1", "heartbeat", Severity::Info, "restart:VAEL_Core"),
        alert("w1", "policy", Severity::Warn, "reload_flask:VAEL_UI"),
    ];
    for quiet_alert in &quiet {
        assert!(plan_for(&config, &ns.name, quiet_alert).is_none(), "the policy ignores {}", quiet_alert.id);
        let body = serde_json::to_string(quiet_alert).expect("alert json");
        let (code, reply) = support::http_request(controller.http_port, "POST", "/api/nexus/alert", Some(TOKEN), &body);
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        assert_eq!((code, reply["outcome"].as_str()), (202, Some("ignored")), "{}: {reply}", quiet_alert.id);
    }
    let ignored = r#"antibody_alerts_total{feed="rest",outcome="ignored"}"#;
    let counted = support::wait_metric(controller.http_port, ignored, 2.0, Duration::from_secs(10)).await;
    assert_eq!(counted, 2.0, "both quiet alerts recorded as ignored");
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        plans.list(&ListParams::default()).await.expect("list").items.len(),
        1,
        "only the heartbeat plan exists"
    );
    assert_eq!(replicasets(&client, &ns.name, "sentinel").await, 1);
    assert_eq!(replicasets(&client, &ns.name, "vael-ui").await, 1);

    // Alerts that cannot be acted on get the README's status codes end to end, naming the
    // reason, and create nothing: an unknown target is 403 NotAllowed, a hint naming no known
    // action 400 InvalidAlert, a rule that needs an edit the alert does not give 422.
    let refused = [
        (alert("bad1", "policy", Severity::High, "reload_flask:No_Such_Target"), 403, "NotAllowed"),
        (alert("bad2", "policy", Severity::High, "reboot_everything:VAEL_Core"), 400, "InvalidAlert"),
        (ThreatAlert { patch_hint: None, ..alert("bad3", "config", Severity::High, "") }, 422, "InvalidSpec"),
    ];
    for (bad, want_code, want_error) in refused {
        let body = serde_json::to_string(&bad).expect("alert json");
        let (code, reply) = support::http_request(controller.http_port, "POST", "/api/nexus/alert", Some(TOKEN), &body);
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        assert_eq!((code, reply["error"].as_str()), (want_code, Some(want_error)), "{}: {reply}", bad.id);
        assert!(reply["reason"].as_str().is_some_and(|r| !r.is_empty()), "{reply}");
    }
    assert_eq!(plans.list(&ListParams::default()).await.expect("list").items.len(), 1, "nothing created");

    // defaults.plan_namespace: a plan created from an alert lands there (the test namespace;
    // the default `antibody` does not exist on this cluster).
    let reload = alert("pol1", "policy", Severity::High, "reload_flask:VAEL_UI");
    let body = serde_json::to_string(&reload).expect("alert json");
    let (code, reply) = support::http_request(controller.http_port, "POST", "/api/nexus/alert", Some(TOKEN), &body);
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
    assert_eq!((code, reply["outcome"].as_str()), (202, Some("plan_created")), "{reply}");
    let name = reply["plan"].as_str().expect("plan name").to_string();
    let created = support::wait_for(plans.clone(), &name, PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(created.metadata.namespace.as_deref(), Some(ns.name.as_str()));
    assert_eq!(created.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"), "{:?}", created.status);
}

#[tokio::test]
async fn matrix_policy_reloads_flask_and_critical_restarts_then_reloads() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "matrix-reload").await;
    setup(&client, &ns.name, false).await;
    let gunicorn = Gunicorn::start();
    let config = test_config(&ns.name, Some(gunicorn.pid));
    let _controller = ControllerProcess::start(&config, &ns.name, &[]);

    // policy/high → the Flask pod's reload command runs: gunicorn's workers change.
    let worker = gunicorn.worker_pid().expect("worker");
    let plan =
        plan_for(&config, &ns.name, &alert("p1", "policy", Severity::High, "reload_flask:VAEL_UI")).expect("a plan");
    assert_eq!(plan.summary(), "reloadFlask:VAEL_UI");
    support::apply_plan(&client, &ns.name, &plan).await;
    let done = wait_ready(&client, &ns.name, &plan.name_any()).await;
    let new_worker = gunicorn.wait_new_worker(worker);
    assert_ne!(worker, new_worker);
    assert_eq!(gunicorn.hup_count(), 1, "one ready pod → one SIGHUP: {}", gunicorn.log());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let ui_pod = pods.list(&ListParams::default().labels("app=vael-ui")).await.expect("pods").items.remove(0);
    let signalled = &done.status.as_ref().expect("status").actions[0].signalled_pods;
    assert_eq!(signalled, &vec![ui_pod.uid().expect("uid")], "the pod UID is recorded");

    // critical → restart, then reload, in that order.
    let plan =
        plan_for(&config, &ns.name, &alert("c1", "kernel", Severity::Critical, "restart:VAEL_Core")).expect("a plan");
    assert_eq!(plan.summary(), "restart:VAEL_Core, reloadFlask:VAEL_Core");
    support::apply_plan(&client, &ns.name, &plan).await;
    let done = wait_ready(&client, &ns.name, &plan.name_any()).await;
    let actions = &done.status.as_ref().expect("status").actions;
    assert!(actions.iter().all(|a| a.state == StepState::Succeeded));
    let restart_done = actions[0].finished_at.as_ref().expect("restart finished").0;
    let reload_started = actions[1].started_at.as_ref().expect("reload started").0;
    assert!(restart_done <= reload_started, "reload started only after the rollout completed");
    assert_eq!(replicasets(&client, &ns.name, "vael-core").await, 2);
    assert_eq!(actions[1].signalled_pods.len(), 2, "both new vael-core pods signalled");
    // Both pods' reload commands reach the same test gunicorn.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gunicorn.hup_count() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gunicorn.hup_count(), 3, "1 (policy) + 2 (critical)");
}

#[tokio::test]
async fn edit_env_backs_up_then_restart_rolls_new_pods() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "editenv").await;
    setup(&client, &ns.name, true).await;
    let config = test_config(&ns.name, None);
    let _controller = ControllerProcess::start(&config, &ns.name, &[]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let old_pods: Vec<String> = pods
        .list(&ListParams::default().labels("app=vael-core"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();

    let plan =
        plan_for(&config, &ns.name, &alert("e1", "config", Severity::High, "edit_env:VAEL_Core:LOG_LEVEL=debug"))
            .expect("a plan");
    assert_eq!(
        plan.summary(),
        "editEnv:VAEL_Core:LOG_LEVEL, restart:VAEL_Core",
        "env consumed as env → restart follows"
    );
    support::apply_plan(&client, &ns.name, &plan).await;
    let done = wait_ready(&client, &ns.name, &plan.name_any()).await;

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = config_maps.get("vael-core-env").await.expect("configmap");
    let data = cm.data.clone().expect("data");
    assert_eq!(data.get("LOG_LEVEL").map(String::as_str), Some("debug"));
    assert_eq!(data.get("MODE").map(String::as_str), Some("normal"), "other keys untouched");
    let owner =
        cm.managed_fields().iter().find(|m| m.manager.as_deref() == Some("antibody")).expect("antibody field manager");
    assert_eq!(owner.operation.as_deref(), Some("Apply"), "server-side apply");

    let status = done.status.expect("status");
    let backup_name = status.actions[0].backup_name.clone().expect("backup recorded");
    let backup = config_maps.get(&backup_name).await.expect("backup exists");
    assert_eq!(
        backup.data.as_ref().and_then(|d| d.get("LOG_LEVEL")).map(String::as_str),
        Some("info"),
        "backup holds the old value"
    );
    assert_eq!(backup.labels().get("antibody.vael.io/backup-of").map(String::as_str), Some("vael-core-env"));

    // The restart replaced every pod after the edit: envFrom is read at container start.
    let edited_at = status.actions[0].finished_at.as_ref().expect("edit finished").0;
    let new_pods = pods.list(&ListParams::default().labels("app=vael-core")).await.expect("pods").items;
    let live: Vec<_> = new_pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    assert_eq!(live.len(), 2);
    for pod in live {
        assert!(!old_pods.contains(&pod.uid().expect("uid")), "pod {} predates the edit", pod.name_any());
        let created = pod.metadata.creation_timestamp.as_ref().expect("created").0;
        assert!(created.as_second() >= edited_at.as_second(), "pod {} created after the edit", pod.name_any());
    }
}

#[tokio::test]
async fn controller_killed_mid_plan_resumes_without_repeating() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "crash").await;
    setup(&client, &ns.name, false).await;
    // More replicas with surge 1: a rollout that takes long enough to crash in the middle of.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let slow = serde_json::json!({"spec": {"replicas": 6, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}});
    deployments.patch("vael-core", &PatchParams::default(), &Patch::Merge(&slow)).await.expect("scale");
    support::wait_for(deployments.clone(), "vael-core", Duration::from_secs(60), support::rollout_complete(2)).await;
    let gunicorn = Gunicorn::start();
    let config = test_config(&ns.name, Some(gunicorn.pid));
    let mut controller = ControllerProcess::start(&config, &ns.name, &[]);

    let plan = manual_plan(
        "crash-restart-reload",
        vec![PlanAction::new(ActionType::Restart, "VAEL_Core"), PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")],
    );
    support::apply_plan(&client, &ns.name, &plan).await;
    // Crash right after the restartedAt value is saved, while the rollout is in flight.
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let in_flight = support::wait_for(plans.clone(), &plan.name_any(), PLAN_TIMEOUT, |p: Option<&PatchPlan>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.actions.first().is_some_and(|a| a.restarted_at.is_some()))
    })
    .await;
    controller.kill();
    let after_kill = plans.get(&plan.name_any()).await.expect("get plan");
    assert!(!after_kill.phase().is_terminal(), "the controller died mid-plan: {:?}", after_kill.status);
    let stored = in_flight.status.as_ref().and_then(|s| s.actions[0].restarted_at.clone());

    // Let the rollout progress while nobody watches, then restart the controller.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = ControllerProcess::start(&config, &ns.name, &[]);
    let done = wait_ready(&client, &ns.name, &plan.name_any()).await;
    assert_eq!(done.status.as_ref().and_then(|s| s.actions[0].restarted_at.clone()), stored, "same restartedAt");
    assert_eq!(restarted_at(&client, &ns.name, "vael-core").await, stored);
    assert_eq!(replicasets(&client, &ns.name, "vael-core").await, 2, "one rollout, not two");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gunicorn.hup_count(), 1, "one HUP: {}", gunicorn.log());

    // Crash again after completion and restart: a finished plan is never acted on again. The
    // new controller is ready (watches synced) and has finished a later plan, so it has seen
    // the finished one; a bounded settle lets a wrongly repeated action show.
    resumed.kill();
    let again = ControllerProcess::start(&config, &ns.name, &[]);
    again.wait_ready().await;
    let probe = PatchPlan::new(
        "probe",
        PatchPlanSpec {
            actions: vec![PlanAction::new(ActionType::Restart, "Sentinel")],
            dry_run: true,
            ..Default::default()
        },
    );
    support::apply_plan(&client, &ns.name, &probe).await;
    support::wait_for(plans.clone(), "probe", PLAN_TIMEOUT, support::plan_finished()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(replicasets(&client, &ns.name, "vael-core").await, 2);
    assert_eq!(gunicorn.hup_count(), 1);
}

/// A whitelisted target whose Deployment is gone: the plan ends `Stalled/TargetNotFound`.
async fn missing_deployment_is_reported(client: &Client, ns: &str, plans: &Api<PatchPlan>) {
    support::apply_plan(client, ns, &manual_plan("missing", vec![PlanAction::new(ActionType::Restart, "Gone")])).await;
    let plan = support::wait_for(plans.clone(), "missing", PLAN_TIMEOUT, support::plan_finished()).await;
    let stalled = plan.condition("Stalled").expect("Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "TargetNotFound"), "{}", stalled.message);
    assert!(stalled.message.contains("gone"), "the message names the Deployment: {}", stalled.message);
}

#[tokio::test]
async fn refusals_change_nothing() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "refuse").await;
    setup(&client, &ns.name, true).await;
    let config = test_config(&ns.name, None);
    let _controller = ControllerProcess::start(&config, &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);

    let cases = [
        ("not-whitelisted", PlanAction::new(ActionType::ReloadFlask, "Sentinel"), "NotAllowed"),
        ("unknown-target", PlanAction::new(ActionType::Restart, "Intruder"), "NotAllowed"),
        ("bad-value", PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "x\nEVIL=1"), "InvalidSpec"),
    ];
    for (name, action, reason) in cases {
        support::apply_plan(&client, &ns.name, &manual_plan(name, vec![action])).await;
        let plan = support::wait_for(plans.clone(), name, PLAN_TIMEOUT, support::plan_finished()).await;
        let stalled = plan.condition("Stalled").expect("Stalled");
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", reason), "{name}: {}", stalled.message);
        assert_eq!(plan.condition("Ready").map(|c| c.status.as_str()), Some("False"));
        assert!(
            plan.status.as_ref().expect("status").actions.iter().all(|a| a.state == StepState::Pending),
            "{name}: nothing ran"
        );
    }
    // A plan whose second action is refused does not run its first.
    support::apply_plan(
        &client,
        &ns.name,
        &manual_plan(
            "half-allowed",
            vec![PlanAction::new(ActionType::Restart, "VAEL_Core"), PlanAction::new(ActionType::Restart, "Sentinel2")],
        ),
    )
    .await;
    let plan = support::wait_for(plans.clone(), "half-allowed", PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(plan.condition("Stalled").map(|c| c.reason.as_str()), Some("NotAllowed"));

    // A target whose Deployment does not exist is reported, and nothing else runs.
    missing_deployment_is_reported(&client, &ns.name, &plans).await;

    // Paused Deployments are refused.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .patch("sentinel", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"paused": true}})))
        .await
        .expect("pause");
    support::apply_plan(
        &client,
        &ns.name,
        &manual_plan("paused", vec![PlanAction::new(ActionType::Restart, "Sentinel")]),
    )
    .await;
    let plan = support::wait_for(plans.clone(), "paused", PLAN_TIMEOUT, support::plan_finished()).await;
    assert_eq!(plan.condition("Stalled").map(|c| c.reason.as_str()), Some("DeploymentPaused"));

    for name in ["vael-core", "sentinel", "vael-ui"] {
        assert_eq!(restarted_at(&client, &ns.name, name).await, None, "{name} untouched");
        assert_eq!(replicasets(&client, &ns.name, name).await, 1, "{name} not rolled");
    }
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name).get("vael-core-env").await.expect("cm");
    assert_eq!(cm.data.and_then(|d| d.get("LOG_LEVEL").cloned()).as_deref(), Some("info"));

    // Spec is immutable.
    let err = plans
        .patch("paused", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"dryRun": true}})))
        .await
        .expect_err("spec change refused");
    assert!(err.to_string().contains("immutable"), "{err}");
}

#[tokio::test]
async fn dry_run_proves_and_changes_nothing() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "dryrun").await;
    setup(&client, &ns.name, true).await;
    let config = test_config(&ns.name, None);
    let _controller = ControllerProcess::start(&config, &ns.name, &[]);
    let mut plan = manual_plan(
        "shadow",
        vec![
            PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug"),
            PlanAction::new(ActionType::Restart, "VAEL_Core"),
        ],
    );
    plan.spec.dry_run = true;
    support::apply_plan(&client, &ns.name, &plan).await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let done = support::wait_for(plans, "shadow", PLAN_TIMEOUT, support::plan_finished()).await;
    let ready = done.condition("Ready").expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "DryRun"));
    assert_eq!(done.condition("PatchApplied").map(|c| c.status.as_str()), Some("False"), "nothing applied");
    let actions = done.status.expect("status").actions;
    assert!(actions[0].diff.as_deref().is_some_and(|d| d.contains("\"info\" → \"debug\"")), "{:?}", actions[0].diff);
    assert!(actions[1].diff.as_deref().is_some_and(|d| d.contains("starts a rollout")), "{:?}", actions[1].diff);
    assert_eq!(restarted_at(&client, &ns.name, "vael-core").await, None);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        config_maps.get("vael-core-env").await.expect("cm").data.and_then(|d| d.get("LOG_LEVEL").cloned()).as_deref(),
        Some("info")
    );
    assert_eq!(
        config_maps.list(&ListParams::default()).await.expect("list").items.len(),
        2,
        "no backup created (plus kube-root-ca.crt)"
    );
}
