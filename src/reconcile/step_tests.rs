//! The step machine without a cluster: [`reconcile`] against [`FakeApi`], one case per branch
//! (gates, each action's outcomes, compensation, stale and conflicting status). Each case owns
//! its antibody.yml. The integration tests in `tests/` run the same paths against the real API
//! server; these pin every branch down cheaply and exactly (which requests were sent).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use super::fake_api::FakeApi;
use super::*;
use crate::config::Config;
use crate::plan::{PatchPlanSpec, PlanAction};
use crate::reason::Reason;
use crate::report::{Hook, Metrics};

const PLAN_NS: &str = "plans";
const DEPLOYMENT: &str = "apis/apps/v1/namespaces/vael/deployments/vael-core";
const CONFIG_MAP: &str = "api/v1/namespaces/vael/configmaps/vael-core-env";

fn config(extra: &str) -> Config {
    let yaml = format!(
        r#"
actions:
  restart: [Core]
  edit_env: [Core]
targets:
  Core:
    namespace: vael
    deployment: vael-core
    config_map: vael-core-env
    config_map_mode: env
    env_keys: [LOG_LEVEL]
defaults:
  plan_namespace: {PLAN_NS}
  rollout_timeout_seconds: 60
{extra}
"#
    );
    match Config::from_yaml(&yaml) {
        Ok(config) => config,
        Err(e) => panic!("test config: {e}"),
    }
}

/// Every transition reported, as (kind name, reason).
#[derive(Default)]
struct Transitions(Mutex<Vec<(String, String)>>);

impl Hook for Transitions {
    fn on_plan(&self, t: &crate::report::PlanTransition<'_>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((t.kind.name().into(), t.reason.as_str().into()));
    }
}

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
    transitions: Arc<Transitions>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let api = FakeApi::default();
        let client = api.client();
        let reporter = Arc::new(crate::report::Reporter::new(client.clone(), "test".into(), Arc::new(Metrics::new())));
        let transitions = Arc::new(Transitions::default());
        reporter.add_hook(transitions.clone());
        let shared = Arc::new(SharedConfig::new(config));
        let ctx = Arc::new(Context::new(client, shared, Settings::default(), reporter));
        let harness = Self { api, ctx, transitions };
        harness.api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vael"}}));
        harness.api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PLAN_NS}}));
        harness
    }

    /// A settled two-replica Deployment (and its ConfigMap).
    fn with_app(self) -> Self {
        self.api.put(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "vael-core", "namespace": "vael", "generation": 1},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "core"}},
                     "template": {"metadata": {"labels": {"app": "core"}}, "spec": {"containers": [{"name": "core", "image": "x"}]}}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2}
        }));
        self.api.put(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "vael-core-env", "namespace": "vael"},
            "data": {"LOG_LEVEL": "info"}
        }));
        self
    }

    fn create_plan(&self, name: &str, spec: PatchPlanSpec) {
        let mut plan = PatchPlan::new(name, spec);
        plan.metadata.namespace = Some(PLAN_NS.into());
        let mut value = serde_json::to_value(&plan).unwrap_or_default();
        value["metadata"]["uid"] = json!(format!("uid-{name}"));
        self.api.put(value);
    }

    fn plan(&self, name: &str) -> PatchPlan {
        let value = self.api.get(&format!("apis/antibody.vael.io/v1alpha1/namespaces/{PLAN_NS}/patchplans/{name}"));
        serde_json::from_value(value.unwrap_or_default()).unwrap_or_else(|e| panic!("plan {name}: {e}"))
    }

    async fn reconcile(&self, name: &str) -> crate::Result<Action> {
        reconcile(Arc::new(self.plan(name)), self.ctx.clone()).await
    }

    /// Reconcile until the plan waits on something outside it or ends (at most `rounds`).
    async fn reconcile_rounds(&self, name: &str, rounds: usize) -> crate::Result<Action> {
        let mut last = self.reconcile(name).await;
        for _ in 1..rounds {
            last = self.reconcile(name).await;
        }
        last
    }

    fn ready(&self, name: &str) -> (String, String, String) {
        let plan = self.plan(name);
        let phase = format!("{:?}", plan.phase());
        let ready = plan.condition(crate::conditions::READY);
        let applied = plan.condition(crate::conditions::PATCH_APPLIED);
        (
            phase,
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
            applied.map(|c| c.status.clone()).unwrap_or_default(),
        )
    }

    /// What the Deployment controller would do once the pods of `generation` are up.
    fn complete_rollout(&self) {
        self.api.edit(DEPLOYMENT, |d| {
            let generation = d["metadata"]["generation"].clone();
            d["status"] =
                json!({"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        });
    }

    fn fail_rollout(&self) {
        self.api.edit(DEPLOYMENT, |d| {
            let generation = d["metadata"]["generation"].clone();
            d["status"] = json!({"observedGeneration": generation, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]});
        });
    }

    fn restarted_at(&self) -> Option<String> {
        self.api.get(DEPLOYMENT)?["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .map(str::to_string)
    }

    fn deployment_patches(&self) -> usize {
        self.api
            .writes()
            .iter()
            .filter(|w| w.starts_with("PATCH /apis/apps/v1/namespaces/vael/deployments/vael-core"))
            .count()
    }

    fn transitions(&self) -> Vec<(String, String)> {
        self.transitions.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn restart() -> PatchPlanSpec {
    PatchPlanSpec { actions: vec![PlanAction::new(ActionType::Restart, "Core")], ..Default::default() }
}

fn edit_then_restart(rollback_on_failure: bool) -> PatchPlanSpec {
    PatchPlanSpec {
        actions: vec![PlanAction::edit_env("Core", "LOG_LEVEL", "debug"), PlanAction::new(ActionType::Restart, "Core")],
        rollback_on_failure,
        ..Default::default()
    }
}

fn requeue_of(action: &Action) -> String {
    format!("{action:?}")
}

fn s(value: &str) -> String {
    value.to_string()
}

#[tokio::test]
async fn restart_waits_for_the_rollout_then_applies() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", restart());
    let action = h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p"), (s("Running"), s("RolloutInProgress"), s("False")), "waits for the rollout");
    assert!(requeue_of(&action).contains("requeue_after: Some"), "{action:?}");
    let first = h.restarted_at().expect("restartedAt set");
    // Seen again before the rollout moved: nothing is sent twice.
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.deployment_patches(), 1, "{:?}", h.api.writes());
    h.complete_rollout();
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p"), (s("Succeeded"), s("Applied"), s("True")));
    assert_eq!(h.restarted_at(), Some(first), "one restart");
    let kinds: Vec<String> = h.transitions().into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(kinds, ["started", "action_succeeded", "patch_applied"]);
}

#[tokio::test]
async fn gates_hold_or_refuse_before_anything_acts() {
    struct Case {
        name: &'static str,
        config: &'static str,
        spec: PatchPlanSpec,
        /// Set up the cluster beyond the app.
        setup: fn(&Harness),
        want: (&'static str, &'static str),
    }
    let cases = [
        Case {
            name: "whitelist refuses",
            config: "",
            spec: PatchPlanSpec {
                actions: vec![PlanAction::new(ActionType::ReloadFlask, "Core")],
                ..Default::default()
            },
            setup: |_| {},
            want: ("Failed", "NotAllowed"),
        },
        Case {
            name: "unknown target",
            config: "",
            spec: PatchPlanSpec { actions: vec![PlanAction::new(ActionType::Restart, "Ghost")], ..Default::default() },
            setup: |_| {},
            want: ("Failed", "NotAllowed"),
        },
        Case {
            name: "global pause",
            config: "safety: {paused: true}",
            spec: restart(),
            setup: |_| {},
            want: ("Pending", "Paused"),
        },
        Case {
            name: "target namespace paused",
            config: "",
            spec: restart(),
            setup: |h| {
                h.api.edit("api/v1/namespaces/vael", |ns| {
                    ns["metadata"]["annotations"] = json!({PAUSE_ANNOTATION: "true"});
                })
            },
            want: ("Pending", "Paused"),
        },
        Case {
            name: "plan namespace paused",
            config: "",
            spec: restart(),
            setup: |h| {
                h.api.edit(&format!("api/v1/namespaces/{PLAN_NS}"), |ns| {
                    ns["metadata"]["annotations"] = json!({PAUSE_ANNOTATION: "true"});
                })
            },
            want: ("Pending", "Paused"),
        },
        Case {
            name: "approval required",
            config: "approvals: {default: require}",
            spec: restart(),
            setup: |_| {},
            want: ("Pending", "AwaitingApproval"),
        },
        Case {
            name: "freeze",
            config: "change_windows: {freeze: {reason: release, until: \"2999-01-01T00:00:00Z\"}}",
            spec: restart(),
            setup: |_| {},
            want: ("Pending", "Frozen"),
        },
        Case {
            name: "missing Deployment",
            config: "",
            spec: restart(),
            setup: |h| h.api.remove(DEPLOYMENT),
            want: ("Failed", "TargetNotFound"),
        },
        Case {
            name: "paused Deployment",
            config: "",
            spec: restart(),
            setup: |h| h.api.edit(DEPLOYMENT, |d| d["spec"]["paused"] = json!(true)),
            want: ("Failed", "DeploymentPaused"),
        },
    ];
    for case in cases {
        let h = Harness::new(config(case.config)).with_app();
        (case.setup)(&h);
        h.create_plan("p", case.spec);
        h.reconcile("p").await.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let (phase, reason, _) = h.ready("p");
        assert_eq!((phase.as_str(), reason.as_str()), case.want, "{}", case.name);
        assert_eq!(h.deployment_patches(), 0, "{}: nothing acts: {:?}", case.name, h.api.writes());
        assert!(
            !h.api.writes().iter().any(|w| w.contains("configmaps")),
            "{}: no ConfigMap touched: {:?}",
            case.name,
            h.api.writes()
        );
    }
}

#[tokio::test]
async fn throttle_waits_or_fails_as_configured() {
    for (on_throttle, want_phase) in [("wait", "Pending"), ("fail", "Failed")] {
        let h =
            Harness::new(config(&format!("safety: {{cooldown_seconds: 300, on_throttle: {on_throttle}}}"))).with_app();
        h.create_plan("first", restart());
        h.reconcile("first").await.expect("reconciles");
        h.complete_rollout();
        h.reconcile("first").await.expect("reconciles");
        assert_eq!(h.ready("first").1, "Applied");
        h.create_plan("second", restart());
        let action = h.reconcile("second").await.expect("reconciles");
        assert_eq!(h.ready("second").0, want_phase, "on_throttle {on_throttle}");
        assert_eq!(h.ready("second").1, "Throttled", "on_throttle {on_throttle}");
        assert_eq!(h.deployment_patches(), 1, "on_throttle {on_throttle}: only the first restarted");
        if on_throttle == "wait" {
            assert!(requeue_of(&action).contains("requeue_after: Some"), "{action:?}");
        }
    }
}

#[tokio::test]
async fn an_open_breaker_holds_plans_on_its_target_until_reset() {
    let h = Harness::new(config("safety: {breaker: {failures: 2}}")).with_app();
    crate::escalation::open(&h.ctx.client, PLAN_NS, "Core", "two failures".into()).await.expect("breaker opened");
    h.create_plan("p", restart());
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p"), (s("Pending"), s("BreakerOpen"), s("False")));
    assert_eq!(h.deployment_patches(), 0);
    assert!(crate::escalation::reset(&h.ctx.client, PLAN_NS, "Core").await.expect("reset"));
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "RolloutInProgress");
    assert_eq!(h.deployment_patches(), 1);
}

#[tokio::test]
async fn a_failed_rollout_fails_the_plan() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", restart());
    h.reconcile("p").await.expect("reconciles");
    h.fail_rollout();
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p"), (s("Failed"), s("ProgressDeadlineExceeded"), s("False")));
    assert_eq!(h.transitions().last().map(|t| t.0.clone()), Some(s("patch_failed")));
}

#[tokio::test]
async fn compensation_restores_the_backup_and_restarts_again() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", edit_then_restart(true));
    h.reconcile("p").await.expect("reconciles");
    let edited = h.api.get(CONFIG_MAP).expect("ConfigMap");
    assert_eq!(edited["data"]["LOG_LEVEL"], "debug", "edited");
    let backups = h.api.log().iter().filter(|r| r.starts_with("POST /api/v1/namespaces/vael/configmaps")).count();
    assert_eq!(backups, 1, "one backup: {:?}", h.api.log());
    let first_restart = h.restarted_at().expect("restarted after the edit");
    h.fail_rollout();
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "RolledBack");
    let restored = h.api.get(CONFIG_MAP).expect("ConfigMap");
    assert_eq!(restored["data"]["LOG_LEVEL"], "info", "the backup is restored");
    let second_restart = h.restarted_at().expect("restarted again");
    assert_ne!(first_restart, second_restart, "the restored data is rolled out");
    let message = h.plan("p").condition(crate::conditions::READY).map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("restarted again"), "{message}");
}

#[tokio::test]
async fn without_rollback_on_failure_the_edit_stands() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", edit_then_restart(false));
    h.reconcile("p").await.expect("reconciles");
    h.fail_rollout();
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "ProgressDeadlineExceeded");
    assert_eq!(h.api.get(CONFIG_MAP).expect("ConfigMap")["data"]["LOG_LEVEL"], "debug");
    assert_eq!(h.deployment_patches(), 1);
}

#[tokio::test]
async fn a_stale_copy_of_the_plan_does_not_act_twice() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", restart());
    let stale = h.plan("p");
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.deployment_patches(), 1);
    // The watch hands over the object as it was before our status write.
    reconcile(Arc::new(stale.clone()), h.ctx.clone()).await.expect("reconciles");
    assert_eq!(h.deployment_patches(), 1, "{:?}", h.api.writes());
    h.complete_rollout();
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "Applied");
    // Ended: an old copy changes nothing and reports nothing again.
    let reported = h.transitions().len();
    reconcile(Arc::new(stale), h.ctx.clone()).await.expect("reconciles");
    assert_eq!(h.deployment_patches(), 1);
    assert_eq!(h.transitions().len(), reported);
}

#[tokio::test]
async fn another_writers_status_is_never_overwritten_with_ours() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", restart());
    h.reconcile("p").await.expect("reconciles");
    // A second leader (during a hand-off) writes the status after ours.
    let path = format!("apis/antibody.vael.io/v1alpha1/namespaces/{PLAN_NS}/patchplans/p");
    h.api.edit(&path, |p| p["status"]["actions"][0]["message"] = json!("another leader was here"));
    h.complete_rollout();
    // Handed an old copy (the watch is behind), the writer uses its own record of the status
    // and its resourceVersion: the write is refused (409), the re-read shows the status
    // changed underneath, and it stops instead of overwriting it.
    let result = h.reconcile("p").await;
    assert!(matches!(&result, Err(crate::Error::Kube(kube::Error::Api(status))) if status.code == 409), "{result:?}");
    let kept = h.plan("p").status.map(|s| s.actions[0].message.clone()).unwrap_or_default();
    assert_eq!(kept, "another leader was here");
    assert_eq!(h.deployment_patches(), 1, "no second restart");
    assert!(!h.transitions().iter().any(|(kind, _)| kind == "patch_applied"), "nothing announced from a stale copy");
    // The next reconcile builds on the other writer's status and ends the plan.
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "Applied");
    assert_eq!(h.deployment_patches(), 1);
}

#[tokio::test]
async fn dry_run_proves_every_write_and_changes_nothing() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", PatchPlanSpec { dry_run: true, ..edit_then_restart(false) });
    h.reconcile_rounds("p", 2).await.expect("reconciles");
    assert_eq!(h.ready("p"), (s("Succeeded"), s("DryRun"), s("False")));
    let writes: Vec<String> = h.api.writes().into_iter().filter(|w| !w.contains("/patchplans/")).collect();
    assert!(!writes.is_empty(), "the writes were sent");
    assert!(writes.iter().all(|w| w.contains("dryRun=All")), "all as dry runs: {writes:?}");
    assert_eq!(h.api.get(CONFIG_MAP).expect("ConfigMap")["data"]["LOG_LEVEL"], "info");
    assert_eq!(h.restarted_at(), None);
}

#[tokio::test]
async fn an_unavailable_api_is_an_error_to_retry_not_a_failed_plan() {
    let h = Harness::new(config("")).with_app();
    h.create_plan("p", restart());
    h.api.fail(Method::PATCH, "deployments/vael-core", 503, 1);
    let result = h.reconcile("p").await;
    let error = result.expect_err("the 503 surfaces");
    assert!(api_unavailable(&error), "{error}");
    // What the controller does with it: a short requeue, counted by kind.
    let requeue = error_policy(Arc::new(h.plan("p")), &error, h.ctx.clone());
    assert_eq!(requeue, Action::requeue(Duration::from_millis(500)));
    let counted = |kind: &str| {
        let labels = crate::report::metrics::ErrorLabels { error: kind.into() };
        h.ctx.reporter.metrics.reconcile_errors.get_or_create(&labels).get()
    };
    assert_eq!((counted("api_unavailable"), counted("api_rejected")), (1, 0));
    assert_ne!(h.ready("p").0, "Failed", "the plan itself is fine");
    assert_eq!(backoff(1, true), Duration::from_millis(500));
    h.reconcile("p").await.expect("retried");
    h.complete_rollout();
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "Applied");
    assert_eq!(h.deployment_patches(), 2, "the failed PATCH and its retry: {:?}", h.api.writes());
}

#[tokio::test]
async fn delete_pod_evicts_the_oldest_ready_pod_and_waits_for_its_replacement() {
    let h = Harness::new(config("")).with_app();
    h.api.edit(DEPLOYMENT, |d| {
        d["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "3"});
    });
    h.api.put(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "vael-core-abc", "namespace": "vael", "labels": {"app": "core"},
                     "annotations": {"deployment.kubernetes.io/revision": "3"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "vael-core", "uid": "uid-vael-core", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "core"}}}
    }));
    for (name, created) in [("core-young", "2026-01-02T00:00:00Z"), ("core-old", "2026-01-01T00:00:00Z")] {
        h.api.put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "vael", "labels": {"app": "core"}, "creationTimestamp": created,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "vael-core-abc", "uid": "uid-vael-core-abc", "controller": true}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
    }
    h.create_plan(
        "p",
        PatchPlanSpec { actions: vec![PlanAction::new(ActionType::DeletePod, "Core")], ..Default::default() },
    );
    h.reconcile("p").await.expect("reconciles");
    let evictions: Vec<String> = h.api.writes().into_iter().filter(|w| w.contains("/eviction")).collect();
    assert_eq!(evictions, ["POST /api/v1/namespaces/vael/pods/core-old/eviction"], "{:?}", h.api.log());
    assert_eq!(h.ready("p").1, "EvictingPod", "the evicted pod is still terminating");
    // The kubelet is done; the Deployment controller's replacement is not ready yet.
    h.api.remove("api/v1/namespaces/vael/pods/core-old");
    h.api.edit(DEPLOYMENT, |d| d["status"]["availableReplicas"] = json!(1));
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "EvictingPod", "waits for the replacement");
    h.complete_rollout();
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "Applied", "the pod is gone and the Deployment is whole");
    assert_eq!(h.api.writes().iter().filter(|w| w.contains("/eviction")).count(), 1);
}

#[tokio::test]
async fn delete_pod_blocked_by_a_disruption_budget_waits_then_fails() {
    // rollout_timeout_seconds 1: the budget's 429 waits, and after a second the plan gives up.
    let h = Harness::new({
        let mut c = config("");
        c.defaults.rollout_timeout_seconds = 1;
        c
    })
    .with_app();
    h.api.edit(DEPLOYMENT, |d| d["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"}));
    h.api.put(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "rs", "namespace": "vael", "labels": {"app": "core"},
                     "annotations": {"deployment.kubernetes.io/revision": "1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "vael-core", "uid": "uid-vael-core", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "core"}}}
    }));
    h.api.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "only", "namespace": "vael", "labels": {"app": "core"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "uid-rs", "controller": true}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    }));
    h.api.fail(Method::POST, "/eviction", 429, 100);
    h.create_plan(
        "p",
        PatchPlanSpec { actions: vec![PlanAction::new(ActionType::DeletePod, "Core")], ..Default::default() },
    );
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p").1, "EvictingPod", "waits while the budget says no");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.reconcile("p").await.expect("reconciles");
    assert_eq!(h.ready("p"), (s("Failed"), s("DisruptionBudget"), s("False")));
    assert!(h.api.get("api/v1/namespaces/vael/pods/only").is_some(), "the pod was never evicted");
}

#[test]
fn reasons_in_flight_are_waiting_reasons() {
    for action in
        [ActionType::Restart, ActionType::EditEnv, ActionType::ReloadFlask, ActionType::Rollback, ActionType::DeletePod]
    {
        assert_eq!(in_progress_reason(action).is_terminal(), Some(false), "{action:?}");
    }
    assert_eq!(Reason::parse("Started"), Some(Reason::Started));
}
