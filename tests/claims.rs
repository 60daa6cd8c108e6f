//! README claims proved on the real control plane, one test per claim: `safety.paused` (new
//! plans wait, in-flight ones finish), `safety.on_throttle: wait`, `safety.cooldown_seconds`,
//! `safety.namespace_budget`, `safety.dry_run`, `rollout_timeout_seconds` failing a plan, rollback
//! backing up what it replaces, deletePod evicting the oldest ready pod, and the failure reasons
//! `NonZeroExitCode`, `ExecFailed`, `NoReadyPods`, `ProgressDeadlineExceeded` and `BackupNotFound` reached
//! through real plans.

use antibody::names::RESTARTED_AT_ANNOTATION;
use antibody_test_support as support;

use std::time::Duration;

use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction, StepState};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use support::{ControllerProcess, TestNamespace};

const PLAN_TIMEOUT: Duration = Duration::from_secs(60);

/// Targets in the test namespace; `extra` (a `safety:` block, …) is appended. VAEL_UI's reload
/// is `true`, Failing's is `false`: no signal reaches any process. Ghost names a container the
/// pods do not have: the API server refuses the exec itself.
fn config(ns: &str, extra: &str) -> String {
    format!(
        r#"
actions:
  restart: [VAEL_Core, Sentinel, Stuck]
  edit_env: [VAEL_Core]
  reload_flask: [VAEL_UI, Failing, Ghost]
targets:
  VAEL_Core: {{namespace: {ns}, deployment: vael-core, container: app, config_map: vael-core-env, {probe}}}
  Stuck: {{namespace: {ns}, deployment: stuck, container: app}}
  Sentinel: {{namespace: {ns}, deployment: sentinel, container: app}}
  VAEL_UI: {{namespace: {ns}, deployment: vael-ui, container: app, reload_command: ["true"], {probe}}}
  Failing: {{namespace: {ns}, deployment: vael-ui, container: app, reload_command: ["false"]}}
  Ghost: {{namespace: {ns}, deployment: vael-ui, container: ghost, reload_command: ["true"]}}
defaults: {{rollout_timeout_seconds: 20}}
{extra}
"#,
        probe = support::STAND_IN_PROBE_YAML,
    )
}

fn plan(name: &str, actions: Vec<PlanAction>) -> PatchPlan {
    PatchPlan::new(name, PatchPlanSpec { actions, ..Default::default() })
}

/// vael-core, sentinel and vael-ui (`ui_replicas` pods), rolled out.
async fn setup(client: &Client, ns: &str, ui_replicas: i32) -> Api<Deployment> {
    support::install_crd(client).await;
    support::create_deployment(client, ns, &support::deployment("vael-core", 1, None)).await;
    support::create_deployment(client, ns, &support::deployment("sentinel", 1, None)).await;
    support::create_deployment(client, ns, &support::deployment("vael-ui", ui_replicas, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for name in ["vael-core", "sentinel", "vael-ui"] {
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
    deployments
}

async fn finished(plans: &Api<PatchPlan>, name: &str) -> PatchPlan {
    support::wait_for(plans.clone(), name, PLAN_TIMEOUT, support::plan_finished()).await
}

/// (status, reason) of a condition.
fn condition(plan: &PatchPlan, type_: &str) -> (String, String) {
    plan.condition(type_).map(|c| (c.status.clone(), c.reason.clone())).unwrap_or_default()
}

async fn was_restarted(deployments: &Api<Deployment>, name: &str) -> bool {
    let d = deployments.get(name).await.expect("get deployment");
    d.spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .is_some_and(|a| a.contains_key(RESTARTED_AT_ANNOTATION))
}

/// Wait until the plan's `Reconciling` condition has `reason` (the plan is held, not finished).
async fn held(plans: &Api<PatchPlan>, name: &str, reason: &'static str) -> PatchPlan {
    support::wait_for(plans.clone(), name, PLAN_TIMEOUT, move |p: Option<&PatchPlan>| {
        p.and_then(|p| p.condition("Reconciling")).is_some_and(|c| c.status == "True" && c.reason == reason)
    })
    .await
}

/// Rewrite the controller's config and wait until its hot reload applied it.
async fn reload(controller: &ControllerProcess, ns: &str, yaml: &str, applied_before: f64) {
    std::fs::write(ControllerProcess::config_path(ns), yaml).expect("rewrite config");
    let series = r#"antibody_config_reloads_total{result="applied"}"#;
    let now = support::wait_metric(controller.http_port, series, applied_before + 1.0, Duration::from_secs(15)).await;
    assert!(now > applied_before, "the controller applied the new config:\n{}", controller.logs());
}

#[tokio::test]
async fn safety_paused_holds_new_plans_and_lets_in_flight_ones_finish() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-paused").await;
    // vael-ui without pods: a reload waits for a ready pod, so the plan stays in flight until
    // the test scales it up.
    let deployments = setup(&client, &ns.name, 0).await;
    let controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &[]);
    controller.wait_ready().await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(
        &client,
        &ns.name,
        &plan("in-flight", vec![PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")]),
    )
    .await;
    support::wait_for(plans.clone(), "in-flight", PLAN_TIMEOUT, |p: Option<&PatchPlan>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.actions.first().is_some_and(|a| a.state == StepState::Running))
    })
    .await;

    let series = r#"antibody_config_reloads_total{result="applied"}"#;
    let applied = support::metric(controller.http_port, series).unwrap_or(0.0);
    reload(&controller, &ns.name, &config(&ns.name, "safety: {paused: true}"), applied).await;
    support::apply_plan(&client, &ns.name, &plan("new", vec![PlanAction::new(ActionType::Restart, "Sentinel")])).await;
    let waiting = held(&plans, "new", "Paused").await;
    assert!(waiting.condition("Reconciling").is_some_and(|c| c.message.contains("safety.paused")));

    // The in-flight plan finishes while paused.
    let scale = serde_json::json!({"spec": {"replicas": 1}});
    deployments.patch("vael-ui", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale vael-ui");
    let done = finished(&plans, "in-flight").await;
    assert_eq!(condition(&done, "PatchApplied").0, "True", "{:?}", done.status);
    // The new one is still held and nothing ran for it: a reconcile after the in-flight plan
    // finished saw the pause again (observable), then a bounded settle.
    let still = held(&plans, "new", "Paused").await;
    assert!(!still.phase().is_terminal());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = plans.get("new").await.expect("get");
    assert_eq!(condition(&still, "Reconciling").1, "Paused", "{:?}", still.status);
    assert!(!was_restarted(&deployments, "sentinel").await, "nothing ran while paused");

    reload(&controller, &ns.name, &config(&ns.name, ""), applied + 1.0).await;
    let done = finished(&plans, "new").await;
    assert_eq!(condition(&done, "PatchApplied").0, "True", "the held plan ran once unpaused");
    assert!(was_restarted(&deployments, "sentinel").await);
}

#[tokio::test]
async fn on_throttle_wait_holds_the_plan_until_the_budget_window_allows() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-wait").await;
    let deployments = setup(&client, &ns.name, 1).await;
    let window = 6;
    let safety = format!("safety: {{global_budget: {{max_actions: 1, window_seconds: {window}}}, on_throttle: wait}}");
    let _controller = ControllerProcess::start(&config(&ns.name, &safety), &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(&client, &ns.name, &plan("first", vec![PlanAction::new(ActionType::Restart, "VAEL_Core")]))
        .await;
    let first = finished(&plans, "first").await;
    assert_eq!(condition(&first, "PatchApplied").0, "True");
    support::apply_plan(&client, &ns.name, &plan("second", vec![PlanAction::new(ActionType::Restart, "Sentinel")]))
        .await;
    let waiting = held(&plans, "second", "Throttled").await;
    let message = waiting.condition("Reconciling").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("budget") && message.contains("on_throttle: wait"), "{message}");
    assert!(!was_restarted(&deployments, "sentinel").await, "the throttled plan has not acted");
    // It is not failed: once the first action leaves the window it runs.
    let done = finished(&plans, "second").await;
    assert_eq!(condition(&done, "PatchApplied").0, "True", "{:?}", done.status);
    let started =
        |p: &PatchPlan| p.status.as_ref().and_then(|s| s.actions.first()?.started_at.clone()).expect("started");
    let gap = started(&done).0.duration_since(started(&first).0);
    assert!(gap >= jiff::SignedDuration::from_secs(window - 1), "ran {gap:?} after the first: the window held it");
    assert!(was_restarted(&deployments, "sentinel").await);
}

#[tokio::test]
async fn cooldown_seconds_refuses_a_second_plan_on_the_same_target_only() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-cooldown").await;
    let deployments = setup(&client, &ns.name, 1).await;
    let safety = "safety: {cooldown_seconds: 300, on_throttle: fail}";
    let _controller = ControllerProcess::start(&config(&ns.name, safety), &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(&client, &ns.name, &plan("first", vec![PlanAction::new(ActionType::Restart, "Sentinel")]))
        .await;
    assert_eq!(condition(&finished(&plans, "first").await, "PatchApplied").0, "True");
    let rollouts = deployments.get("sentinel").await.expect("get").metadata.generation;

    support::apply_plan(&client, &ns.name, &plan("again", vec![PlanAction::new(ActionType::Restart, "Sentinel")]))
        .await;
    let again = finished(&plans, "again").await;
    assert_eq!(condition(&again, "Stalled"), ("True".into(), "Throttled".into()), "{:?}", again.status);
    let message = again.condition("Stalled").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("cool-down") && message.contains("Sentinel"), "{message}");
    assert_eq!(deployments.get("sentinel").await.expect("get").metadata.generation, rollouts, "not restarted again");

    // Another target is not cooled down.
    support::apply_plan(&client, &ns.name, &plan("other", vec![PlanAction::new(ActionType::Restart, "VAEL_Core")]))
        .await;
    assert_eq!(condition(&finished(&plans, "other").await, "PatchApplied").0, "True");
}

#[tokio::test]
async fn reload_failures_end_the_plan_with_their_reason() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-reasons").await;
    let deployments = setup(&client, &ns.name, 1).await;
    let _controller = ControllerProcess::start(
        &config(&ns.name, "").replace("rollout_timeout_seconds: 20", "rollout_timeout_seconds: 3"),
        &ns.name,
        &[],
    );
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);

    // The reload command's exit status is checked inside a plan.
    support::apply_plan(
        &client,
        &ns.name,
        &plan(
            "exit-1",
            vec![PlanAction::new(ActionType::ReloadFlask, "Failing"), PlanAction::new(ActionType::Restart, "Sentinel")],
        ),
    )
    .await;
    let failed = finished(&plans, "exit-1").await;
    assert_eq!(condition(&failed, "Stalled"), ("True".into(), "NonZeroExitCode".into()), "{:?}", failed.status);
    assert_eq!(condition(&failed, "PatchApplied").0, "False");
    assert!(!was_restarted(&deployments, "sentinel").await, "the step after the failed one never ran");

    // The exec cannot run at all (no such container): ExecFailed, and the next step never runs.
    support::apply_plan(
        &client,
        &ns.name,
        &plan(
            "no-exec",
            vec![PlanAction::new(ActionType::ReloadFlask, "Ghost"), PlanAction::new(ActionType::Restart, "Sentinel")],
        ),
    )
    .await;
    let failed = finished(&plans, "no-exec").await;
    assert_eq!(condition(&failed, "Stalled"), ("True".into(), "ExecFailed".into()), "{:?}", failed.status);
    let message = failed.condition("Stalled").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("ghost"), "the message names what could not run: {message}");
    assert!(!was_restarted(&deployments, "sentinel").await, "the step after the failed one never ran");

    // No ready pod within rollout_timeout_seconds: NoReadyPods.
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    deployments.patch("vael-ui", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale to 0");
    support::wait_for(deployments.clone(), "vael-ui", PLAN_TIMEOUT, |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.replicas.unwrap_or(0) == 0)
    })
    .await;
    support::apply_plan(&client, &ns.name, &plan("no-pods", vec![PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")]))
        .await;
    let failed = finished(&plans, "no-pods").await;
    assert_eq!(condition(&failed, "Stalled"), ("True".into(), "NoReadyPods".into()), "{:?}", failed.status);
}

#[tokio::test]
async fn rollout_timeout_fails_a_plan_whose_rollout_never_completes() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-timeout").await;
    setup(&client, &ns.name, 1).await;
    // Pods no node can take: the rollout of `stuck` never completes.
    let mut stuck = support::deployment("stuck", 1, None);
    if let Some(pod) = stuck.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.node_selector = Some([("antibody.vael.io/no-such-node".to_string(), "x".to_string())].into());
    }
    support::create_deployment(&client, &ns.name, &stuck).await;
    let config = config(&ns.name, "").replace("rollout_timeout_seconds: 20", "rollout_timeout_seconds: 3");
    let _controller = ControllerProcess::start(&config, &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(
        &client,
        &ns.name,
        &plan(
            "stuck",
            vec![PlanAction::new(ActionType::Restart, "Stuck"), PlanAction::new(ActionType::Restart, "Sentinel")],
        ),
    )
    .await;
    let failed = finished(&plans, "stuck").await;
    assert_eq!(
        condition(&failed, "Stalled"),
        ("True".into(), "ProgressDeadlineExceeded".into()),
        "{:?}",
        failed.status
    );
    let step = failed.status.as_ref().and_then(|s| s.actions.first().cloned()).expect("step");
    assert_eq!(step.state, StepState::Failed);
    let took = step.finished_at.expect("finished").0.duration_since(step.started_at.expect("started").0);
    assert!(took >= jiff::SignedDuration::from_secs(2), "failed only after the timeout: {took:?}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(!was_restarted(&deployments, "sentinel").await, "the next step never ran");
}

#[tokio::test]
async fn rollback_to_a_missing_backup_ends_backup_not_found() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-backup").await;
    setup(&client, &ns.name, 1).await;
    support::create_config_map(&client, &ns.name, "vael-core-env", &[("LOG_LEVEL", "info")]).await;
    let _controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let mut rollback = PlanAction::new(ActionType::Rollback, "VAEL_Core");
    rollback.backup = Some("vael-core-env-bk-missing".into());
    support::apply_plan(&client, &ns.name, &plan("no-backup", vec![rollback])).await;
    let failed = finished(&plans, "no-backup").await;
    assert_eq!(condition(&failed, "Stalled"), ("True".into(), "BackupNotFound".into()), "{:?}", failed.status);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = cms.get("vael-core-env").await.expect("configmap");
    assert_eq!(
        cm.data.and_then(|d| d.get("LOG_LEVEL").cloned()).as_deref(),
        Some("info"),
        "the ConfigMap is untouched"
    );
}

#[tokio::test]
async fn delete_pod_evicts_the_oldest_ready_pod() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-oldest").await;
    let deployments = setup(&client, &ns.name, 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let list = ListParams::default().labels("app=vael-core");
    let oldest = pods.list(&list).await.expect("pods").items.into_iter().next().expect("one pod");
    // creationTimestamp has whole seconds: the newer pods must be at least a second younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    deployments.patch("vael-core", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale");
    support::wait_for(deployments.clone(), "vael-core", PLAN_TIMEOUT, |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.ready_replicas == Some(3))
    })
    .await;
    let _controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(&client, &ns.name, &plan("evict", vec![PlanAction::new(ActionType::DeletePod, "VAEL_Core")]))
        .await;
    let done = finished(&plans, "evict").await;
    assert_eq!(condition(&done, "PatchApplied").0, "True", "{:?}", done.status);
    let evicted =
        done.status.as_ref().and_then(|s| s.actions.first()).map(|a| a.signalled_pods.clone()).unwrap_or_default();
    assert_eq!(evicted, [oldest.metadata.uid.clone().expect("uid")], "the oldest ready pod was chosen");
    let left: Vec<String> =
        pods.list(&list).await.expect("pods").items.into_iter().filter_map(|p| p.metadata.uid).collect();
    assert!(!left.contains(evicted.first().expect("uid")), "and it is gone: {left:?}");
}

#[tokio::test]
async fn namespace_budget_counts_actions_per_target_namespace() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-nsbudget").await;
    let other = TestNamespace::new(&client, "claim-nsbudget-other").await;
    let deployments = setup(&client, &ns.name, 1).await;
    support::create_deployment(&client, &other.name, &support::deployment("elsewhere", 1, None)).await;
    let safety = "safety: {namespace_budget: {max_actions: 1, window_seconds: 300}, on_throttle: fail}";
    let yaml = config(&ns.name, safety)
        .replace("restart: [VAEL_Core, Sentinel, Stuck]", "restart: [VAEL_Core, Sentinel, Stuck, Elsewhere]")
        .replace(
            "targets:\n",
            &format!("targets:\n  Elsewhere: {{namespace: {}, deployment: elsewhere}}\n", other.name),
        );
    let _controller = ControllerProcess::start(&yaml, &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(&client, &ns.name, &plan("first", vec![PlanAction::new(ActionType::Restart, "Sentinel")]))
        .await;
    assert_eq!(condition(&finished(&plans, "first").await, "PatchApplied").0, "True");
    support::apply_plan(&client, &ns.name, &plan("same-ns", vec![PlanAction::new(ActionType::Restart, "VAEL_Core")]))
        .await;
    let throttled = finished(&plans, "same-ns").await;
    assert_eq!(condition(&throttled, "Stalled"), ("True".into(), "Throttled".into()), "{:?}", throttled.status);
    assert!(!was_restarted(&deployments, "vael-core").await, "over the namespace's budget: not restarted");
    support::apply_plan(&client, &ns.name, &plan("other-ns", vec![PlanAction::new(ActionType::Restart, "Elsewhere")]))
        .await;
    let done = finished(&plans, "other-ns").await;
    assert_eq!(condition(&done, "PatchApplied").0, "True", "another namespace has its own budget: {:?}", done.status);
}

#[tokio::test]
async fn rollback_backs_up_what_it_replaces() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-rollback").await;
    setup(&client, &ns.name, 1).await;
    support::create_config_map(&client, &ns.name, "vael-core-env", &[("LOG_LEVEL", "info")]).await;
    let _controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let value = |cm: k8s_openapi::api::core::v1::ConfigMap| cm.data.and_then(|d| d.get("LOG_LEVEL").cloned());

    support::apply_plan(
        &client,
        &ns.name,
        &plan("edit", vec![PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug")]),
    )
    .await;
    let edited = finished(&plans, "edit").await;
    assert_eq!(condition(&edited, "PatchApplied").0, "True", "{:?}", edited.status);
    let first_backup = edited.status.as_ref().and_then(|s| s.actions[0].backup_name.clone()).expect("edit backup");
    assert_eq!(value(cms.get(&first_backup).await.expect("backup")).as_deref(), Some("info"));

    let mut rollback = PlanAction::new(ActionType::Rollback, "VAEL_Core");
    rollback.backup = Some(first_backup.clone());
    support::apply_plan(&client, &ns.name, &plan("undo", vec![rollback])).await;
    let undone = finished(&plans, "undo").await;
    assert_eq!(condition(&undone, "PatchApplied").0, "True", "{:?}", undone.status);
    assert_eq!(value(cms.get("vael-core-env").await.expect("cm")).as_deref(), Some("info"), "restored");
    let own_backup = undone.status.as_ref().and_then(|s| s.actions[0].backup_name.clone()).expect("rollback backup");
    assert_ne!(own_backup, first_backup);
    assert_eq!(
        value(cms.get(&own_backup).await.expect("rollback's backup")).as_deref(),
        Some("debug"),
        "the rollback kept what it replaced"
    );
}

#[tokio::test]
async fn safety_dry_run_key_puts_every_plan_in_shadow_mode() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "claim-dryrun").await;
    let deployments = setup(&client, &ns.name, 1).await;
    let _controller = ControllerProcess::start(&config(&ns.name, "safety: {dry_run: true}"), &ns.name, &[]);
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let before = deployments.get("sentinel").await.expect("get").metadata.resource_version;
    support::apply_plan(&client, &ns.name, &plan("shadow", vec![PlanAction::new(ActionType::Restart, "Sentinel")]))
        .await;
    let done = finished(&plans, "shadow").await;
    assert_eq!(condition(&done, "Ready"), ("True".into(), "DryRun".into()), "{:?}", done.status);
    assert_eq!(condition(&done, "PatchApplied").0, "False");
    let diff = done.status.as_ref().and_then(|s| s.actions[0].diff.clone());
    assert!(diff.is_some_and(|d| !d.is_empty()), "the would-be change is recorded");
    assert_eq!(deployments.get("sentinel").await.expect("get").metadata.resource_version, before, "nothing written");
}
