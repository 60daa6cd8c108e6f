//! Authority gaps (issue 16) reproduced against the real control plane: each attack now meets
//! its refusal. Plans in a namespace antibody.yml does not list, a paused target namespace, a
//! signed plan deleted and re-applied, a planted backup, a forged requested-by.

use antibody_test_support as support;

use std::time::Duration;

use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use support::{ControllerProcess, TestNamespace};

const PLAN_TIMEOUT: Duration = Duration::from_secs(60);

/// Targets live in `targets_ns`; `extra` is appended (e.g. a `safety:` block).
fn config(targets_ns: &str, extra: &str) -> String {
    format!(
        r#"
actions:
  restart: [VAEL_Core, Sentinel]
  edit_env: [VAEL_Core]
targets:
  VAEL_Core: {{namespace: {targets_ns}, deployment: vael-core, config_map: vael-core-env, container: app, {probe}}}
  Sentinel: {{namespace: {targets_ns}, deployment: sentinel, container: app}}
defaults: {{rollout_timeout_seconds: 20}}
{extra}
"#,
        probe = support::STAND_IN_PROBE_YAML,
    )
}

fn plan(name: &str, actions: Vec<PlanAction>) -> PatchPlan {
    PatchPlan::new(name, PatchPlanSpec { actions, ..Default::default() })
}

fn restart_sentinel(name: &str) -> PatchPlan {
    plan(name, vec![PlanAction::new(ActionType::Restart, "Sentinel")])
}

async fn setup(client: &Client, ns: &str) {
    support::install_crd(client).await;
    support::create_config_map(client, ns, "vael-core-env", &[("LOG_LEVEL", "info")]).await;
    support::create_deployment(client, ns, &support::deployment("vael-core", 1, Some("vael-core-env"))).await;
    support::create_deployment(client, ns, &support::deployment("sentinel", 1, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for name in ["vael-core", "sentinel"] {
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
}

async fn finished(client: &Client, ns: &str, name: &str) -> PatchPlan {
    support::wait_for(Api::namespaced(client.clone(), ns), name, PLAN_TIMEOUT, support::plan_finished()).await
}

fn ready(plan: &PatchPlan) -> (String, String) {
    let c = plan.condition("Ready").unwrap_or_else(|| panic!("Ready missing on {}", plan.name_any()));
    (c.reason.clone(), c.message.clone())
}

async fn sentinel_replicasets(client: &Client, ns: &str) -> usize {
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    rs.list(&ListParams::default().labels("app=sentinel")).await.expect("rs").items.len()
}

async fn sentinel_restarted_at(client: &Client, ns: &str) -> Option<String> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns).get("sentinel").await.expect("sentinel");
    deployment
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(antibody::names::RESTARTED_AT_ANNOTATION).cloned())
}

/// Item 1: a namespace antibody.yml does not list cannot hold plans, even one the controller
/// watches; nothing acts.
#[tokio::test]
async fn plans_outside_the_plan_namespaces_are_refused() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "auth-nsx").await;
    setup(&client, &ns.name).await;
    let safety = "safety: {plan_namespaces: [antibody]}";
    let _controller = ControllerProcess::start(&config(&ns.name, safety), &ns.name, &[]);
    support::apply_plan(&client, &ns.name, &restart_sentinel("team-x-restart")).await;
    let done = finished(&client, &ns.name, "team-x-restart").await;
    let (why, message) = ready(&done);
    assert_eq!(why, "NamespaceNotAllowed", "{message}");
    assert!(message.contains("safety.plan_namespaces"), "{message}");
    assert_eq!(sentinel_replicasets(&client, &ns.name).await, 1, "nothing restarted");
}

/// Item 1: pausing the namespace of a target holds a plan that lives elsewhere.
#[tokio::test]
async fn a_paused_target_namespace_holds_plans_from_other_namespaces() {
    let client = support::client().await;
    let plans_ns = TestNamespace::new(&client, "auth-plans").await;
    let targets = TestNamespace::new(&client, "auth-core").await;
    setup(&client, &targets.name).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pause = |on: bool| serde_json::json!({"metadata": {"annotations": {"antibody.vael.io/paused": if on { "true" } else { "false" }}}});
    namespaces.patch(&targets.name, &PatchParams::default(), &Patch::Merge(pause(true))).await.expect("pause");
    let _controller = ControllerProcess::start(&config(&targets.name, ""), &plans_ns.name, &[]);
    support::apply_plan(&client, &plans_ns.name, &restart_sentinel("from-elsewhere")).await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &plans_ns.name);
    let held = support::wait_for(plans.clone(), "from-elsewhere", PLAN_TIMEOUT, |p: Option<&PatchPlan>| {
        p.and_then(|p| p.condition("Reconciling")).is_some_and(|c| c.reason == "Paused")
    })
    .await;
    let message = held.condition("Reconciling").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains(&targets.name), "names the paused target namespace: {message}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sentinel_replicasets(&client, &targets.name).await, 1, "nothing ran while paused");
    namespaces.patch(&targets.name, &PatchParams::default(), &Patch::Merge(pause(false))).await.expect("unpause");
    let done = finished(&client, &plans_ns.name, "from-elsewhere").await;
    assert_eq!(ready(&done).0, "Applied", "runs once the pause is lifted");
}

/// Item 2: `kubectl get -o yaml`, delete, re-apply: the copy is refused `SignatureReplayed`.
#[tokio::test]
async fn a_deleted_and_reapplied_signed_plan_is_refused() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "auth-replay").await;
    setup(&client, &ns.name).await;
    let (private, public) = antibody::signing::generate().expect("keygen");
    let key = antibody::signing::parse_private_key(&private).expect("key");
    let safety = format!("safety: {{require_signature: true, trusted_keys: {{ci: {public}}}}}");
    let _controller = ControllerProcess::start(&config(&ns.name, &safety), &ns.name, &[]);

    let mut signed = restart_sentinel("signed-restart");
    signed.metadata.namespace = Some(ns.name.clone());
    antibody::signing::sign(&mut signed, "ci", &key, 600).expect("sign");
    support::apply_plan(&client, &ns.name, &signed).await;
    let done = finished(&client, &ns.name, "signed-restart").await;
    assert_eq!(ready(&done).0, "Applied", "{:?}", ready(&done));
    let restarted = sentinel_restarted_at(&client, &ns.name).await;
    assert!(restarted.is_some());

    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    plans.delete("signed-restart", &DeleteParams::default()).await.expect("delete");
    for _ in 0..100 {
        if plans.get_opt("signed-restart").await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    support::apply_plan(&client, &ns.name, &signed).await;
    let replayed = finished(&client, &ns.name, "signed-restart").await;
    assert_ne!(replayed.uid(), done.uid(), "a new object");
    let (why, message) = ready(&replayed);
    assert_eq!(why, "SignatureReplayed", "{message}");
    assert_eq!(sentinel_restarted_at(&client, &ns.name).await, restarted, "no second restart");

    // Signing again (a new nonce) is how an operator runs it again.
    let mut fresh = restart_sentinel("signed-again");
    fresh.metadata.namespace = Some(ns.name.clone());
    antibody::signing::sign(&mut fresh, "ci", &key, 600).expect("sign");
    support::apply_plan(&client, &ns.name, &fresh).await;
    assert_eq!(ready(&finished(&client, &ns.name, "signed-again").await).0, "Applied");
}

/// Item 5: a ConfigMap planted with the backup label is not restored; a real backup is.
#[tokio::test]
async fn planted_backups_are_refused_and_real_ones_restore() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "auth-backup").await;
    setup(&client, &ns.name).await;
    let _controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &[]);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let planted = ConfigMap {
        metadata: ObjectMeta {
            name: Some("vael-core-env-bk-planted".into()),
            labels: Some([(antibody::names::BACKUP_OF_LABEL.to_string(), "vael-core-env".to_string())].into()),
            annotations: Some([("antibody.vael.io/plan".to_string(), format!("{}/nope", ns.name))].into()),
            ..Default::default()
        },
        data: Some([("LOG_LEVEL".to_string(), "evil".to_string())].into()),
        ..Default::default()
    };
    config_maps.create(&PostParams::default(), &planted).await.expect("plant");
    let rollback = |name: &str, backup: &str| {
        let mut action = PlanAction::new(ActionType::Rollback, "VAEL_Core");
        action.backup = Some(backup.into());
        plan(name, vec![action])
    };
    support::apply_plan(&client, &ns.name, &rollback("restore-planted", "vael-core-env-bk-planted")).await;
    let done = finished(&client, &ns.name, "restore-planted").await;
    let (why, message) = ready(&done);
    assert_eq!(why, "BackupUntrusted", "{message}");
    let value = |cm: ConfigMap| cm.data.and_then(|d| d.get("LOG_LEVEL").cloned());
    assert_eq!(value(config_maps.get("vael-core-env").await.expect("cm")).as_deref(), Some("info"));

    support::apply_plan(
        &client,
        &ns.name,
        &plan("edit", vec![PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug")]),
    )
    .await;
    let edited = finished(&client, &ns.name, "edit").await;
    assert_eq!(ready(&edited).0, "Applied", "{:?}", ready(&edited));
    let status = edited.status.clone().expect("status");
    let backup = status.actions[0].backup_name.clone().expect("backup recorded");
    assert!(status.actions[0].backup_digest.is_some(), "digest recorded");

    // Altering the real backup's data makes it untrusted too.
    let mut copy = config_maps.get(&backup).await.expect("backup");
    copy.metadata = ObjectMeta { name: Some("vael-core-env-bk-copy".into()), ..copy.metadata.clone() };
    copy.metadata.resource_version = None;
    copy.metadata.uid = None;
    copy.metadata.creation_timestamp = None;
    copy.metadata.managed_fields = None;
    copy.data.get_or_insert_with(Default::default).insert("LOG_LEVEL".into(), "evil".into());
    config_maps.create(&PostParams::default(), &copy).await.expect("altered copy");
    support::apply_plan(&client, &ns.name, &rollback("restore-altered", "vael-core-env-bk-copy")).await;
    assert_eq!(ready(&finished(&client, &ns.name, "restore-altered").await).0, "BackupUntrusted");

    support::apply_plan(&client, &ns.name, &rollback("restore-real", &backup)).await;
    let restored = finished(&client, &ns.name, "restore-real").await;
    assert_eq!(ready(&restored).0, "Applied", "{:?}", ready(&restored));
    assert_eq!(value(config_maps.get("vael-core-env").await.expect("cm")).as_deref(), Some("info"));
}

/// Item 6: `--field-manager=antibody` plus a requested-by annotation is not attribution.
#[tokio::test]
async fn a_forged_requested_by_is_reported_unknown() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "auth-attr").await;
    support::install_crd(&client).await;
    let mut forged = restart_sentinel("forged");
    forged.metadata.namespace = Some(ns.name.clone());
    forged.metadata.annotations =
        Some([(antibody::names::REQUESTED_BY_ANNOTATION.to_string(), "ops-admin".to_string())].into());
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let stored = plans
        .patch("forged", &PatchParams::apply(antibody::FIELD_MANAGER).force(), &Patch::Apply(&forged))
        .await
        .expect("apply as 'antibody'");
    let requester = antibody::report::summary::requester(&stored);
    assert_eq!(requester.via, "unknown", "{requester:?}");
    assert!(requester.claimed.as_deref().is_some_and(|c| c.contains("ops-admin")), "{requester:?}");

    // Antibody's own signature over the same annotation is proof.
    let (private, public) = antibody::signing::generate().expect("keygen");
    let key = antibody::signing::parse_private_key(&private).expect("key");
    let own = antibody::signing::parse_public_key(&public).expect("key");
    let mut signed = forged.clone();
    signed.metadata.name = Some("signed".into());
    antibody::signing::sign(&mut signed, "antibody", &key, 600).expect("sign");
    let stored = plans
        .patch("signed", &PatchParams::apply(antibody::FIELD_MANAGER).force(), &Patch::Apply(&signed))
        .await
        .expect("apply");
    let requester = antibody::report::summary::requester_with(&stored, Some(&own));
    assert_eq!((requester.via.as_str(), requester.name.as_str()), ("token", "ops-admin"));
}

/// Item 3: SIGTERM the leader in the middle of a reload over many pods. The lease is released
/// only after the in-flight reconcile finished, and status writes are compare-and-swap: every
/// pod is signalled exactly once, and the terminal status is never reverted.
#[tokio::test]
async fn sigterm_mid_reload_signals_each_pod_once() {
    use k8s_openapi::api::coordination::v1::Lease;
    const PODS: usize = 8;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "auth-handoff").await;
    support::install_crd(&client).await;
    support::create_deployment(&client, &ns.name, &support::deployment("vael-ui", PODS as i32, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    support::wait_for(deployments, "vael-ui", Duration::from_secs(60), support::rollout_complete(1)).await;

    // The reload command runs on this host as an unprivileged user: a file it may append to.
    let dir = std::env::temp_dir().join(support::unique("antibody-handoff"));
    std::fs::create_dir_all(&dir).expect("dir");
    let marks = dir.join("reloads");
    std::fs::write(&marks, "").expect("file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o666)).expect("chmod file");
    }
    let config = format!(
        "actions: {{reload_flask: [VAEL_UI]}}\n\
         targets:\n  VAEL_UI: {{namespace: {ns}, deployment: vael-ui, container: app, \
         reload_command: [sh, -c, \"sleep 1; date +%s%N >> {file}\"], {probe}}}\n",
        ns = ns.name,
        file = marks.display(),
        probe = support::STAND_IN_PROBE_YAML,
    );
    let lease_args = ["--leader-elect", "--lease-duration-seconds", "4", "--lease-grace-seconds", "1"];
    let mut a = ControllerProcess::start_as("handoff-a", &config, &ns.name, &lease_args);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let holder = || async {
        leases.get_opt("antibody-leader").await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while holder().await.as_deref() != Some("handoff-a") {
        assert!(std::time::Instant::now() < deadline, "a never led:\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = ControllerProcess::start_as("handoff-b", &config, &ns.name, &lease_args);
    b.wait_ready().await;

    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::apply_plan(
        &client,
        &ns.name,
        &plan("reload-all", vec![PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")]),
    )
    .await;
    support::wait_for(plans.clone(), "reload-all", Duration::from_secs(30), |p: Option<&PatchPlan>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.actions.first().is_some_and(|a| a.signalled_pods.len() >= 2))
    })
    .await;
    assert!(a.terminate().is_some(), "a exits after SIGTERM:\n{}", a.logs());

    let done = support::wait_for(plans.clone(), "reload-all", Duration::from_secs(60), support::plan_finished()).await;
    assert_eq!(ready(&done).0, "Applied", "{:?}", done.status);
    // B leads now and has seen the plan; give it time to (not) act again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while holder().await.as_deref() != Some("handoff-b") {
        assert!(std::time::Instant::now() < deadline, "b never led:\n{}", b.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = plans.get("reload-all").await.expect("plan");
    assert!(after.phase().is_terminal(), "terminal status kept: {:?}", after.status);
    let signalled = after.status.as_ref().map(|s| s.actions[0].signalled_pods.clone()).unwrap_or_default();
    let mut unique = signalled.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((signalled.len(), unique.len()), (PODS, PODS), "{signalled:?}");
    let lines = std::fs::read_to_string(&marks).expect("marks").lines().count();
    assert_eq!(lines, PODS, "each pod reloaded exactly once\nA:\n{}\nB:\n{}", a.logs(), b.logs());
    let _ = std::fs::remove_dir_all(&dir);
}
