//! Safety on the real control plane: shadow mode, transactional edits with automatic rollback,
//! signed plans, cool-downs/budgets/pause, granular restarts and versioned backups.

use antibody::names::RESTARTED_AT_ANNOTATION;
use antibody_test_support as support;

use std::time::Duration;

use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use support::{ControllerProcess, TestNamespace};

const PLAN_TIMEOUT: Duration = Duration::from_secs(60);

/// A config for the test namespace; `extra` is appended (e.g. a `safety:` block).
fn config(ns: &str, extra: &str) -> String {
    format!(
        r#"
actions:
  restart: [VAEL_Core, Sentinel]
  edit_env: [VAEL_Core]
  reload_flask: [VAEL_UI]
targets:
  VAEL_Core: {{namespace: {ns}, deployment: vael-core, config_map: vael-core-env, container: app, {probe}}}
  Sentinel: {{namespace: {ns}, deployment: sentinel, container: app}}
  VAEL_UI: {{namespace: {ns}, deployment: vael-ui, container: app, reload_command: ["true"], {probe}}}
{defaults}
{extra}
"#,
        defaults = if extra.contains("defaults:") { "" } else { "defaults: {rollout_timeout_seconds: 20}" },
        probe = support::STAND_IN_PROBE_YAML,
    )
}

fn plan(name: &str, actions: Vec<PlanAction>) -> PatchPlan {
    let mut plan = PatchPlan::new(name, PatchPlanSpec { actions, ..Default::default() });
    plan.metadata.namespace = None;
    plan
}

async fn setup(client: &Client, ns: &str) {
    support::install_crd(client).await;
    support::create_config_map(client, ns, "vael-core-env", &[("LOG_LEVEL", "info")]).await;
    support::create_deployment(client, ns, &support::deployment("vael-core", 2, Some("vael-core-env"))).await;
    support::create_deployment(client, ns, &support::deployment("sentinel", 1, None)).await;
    support::create_deployment(client, ns, &support::deployment("vael-ui", 1, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for name in ["vael-core", "sentinel", "vael-ui"] {
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
}

async fn finished(client: &Client, ns: &str, name: &str) -> PatchPlan {
    support::wait_for(Api::namespaced(client.clone(), ns), name, PLAN_TIMEOUT, support::plan_finished()).await
}

fn reason(plan: &PatchPlan, type_: &str) -> (String, String, String) {
    let c = plan.condition(type_).unwrap_or_else(|| panic!("{type_} missing on {}", plan.name_any()));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn cm_value(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data.as_ref().and_then(|d| d.get(key)).cloned()
}

/// resourceVersion of every target object: any write would change one.
async fn target_versions(client: &Client, ns: &str) -> Vec<(String, String)> {
    let mut versions = Vec::new();
    for d in Api::<Deployment>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list").items {
        versions.push((format!("deployment/{}", d.name_any()), d.resource_version().unwrap_or_default()));
    }
    for c in Api::<ConfigMap>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list").items {
        versions.push((format!("configmap/{}", c.name_any()), c.resource_version().unwrap_or_default()));
    }
    versions.sort();
    versions
}

#[tokio::test]
async fn shadow_mode_proves_the_matrix_and_changes_nothing() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "shadow").await;
    setup(&client, &ns.name).await;
    let before = target_versions(&client, &ns.name).await;
    let controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &["--dry-run"]);
    let plans = [
        ("hb", vec![PlanAction::new(ActionType::Restart, "VAEL_Core")]),
        ("policy", vec![PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")]),
        (
            "critical",
            vec![PlanAction::new(ActionType::Restart, "Sentinel"), PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")],
        ),
        (
            "edit",
            vec![
                PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug"),
                PlanAction::new(ActionType::Restart, "VAEL_Core"),
            ],
        ),
    ];
    for (name, actions) in &plans {
        support::apply_plan(&client, &ns.name, &plan(name, actions.clone())).await;
    }
    for (name, _) in &plans {
        let done = finished(&client, &ns.name, name).await;
        assert_eq!(reason(&done, "Ready").0, "True", "{name}");
        assert_eq!(reason(&done, "Ready").1, "DryRun", "{name}");
        assert_eq!(reason(&done, "PatchApplied").0, "False", "{name}: nothing was applied");
        for action in &done.status.as_ref().expect("status").actions {
            assert!(action.diff.as_deref().is_some_and(|d| !d.is_empty()), "{name}: every action records a diff");
        }
    }
    // Give a stray write time to land, then compare every target object.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target_versions(&client, &ns.name).await, before, "no target object changed");
    let metrics = support::http_get(controller.http_port, "/metrics").expect("metrics").1;
    assert!(metrics.contains("antibody_would_have_acted_total{rule=\"manual\"} 4"), "{metrics}");
}

#[tokio::test]
async fn failed_rollout_after_an_edit_rolls_back() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "txn").await;
    setup(&client, &ns.name).await;
    // Make any new rollout of vael-core unable to progress: new pods cannot be scheduled.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let stuck = serde_json::json!({"spec": {"progressDeadlineSeconds": 2, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"spec": {"nodeSelector": {"antibody.test/no-such-node": "true"}}}}});
    deployments.patch("vael-core", &PatchParams::default(), &Patch::Merge(&stuck)).await.expect("patch");
    let _controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &[]);

    let mut txn = plan(
        "txn",
        vec![
            PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug"),
            PlanAction::new(ActionType::Restart, "VAEL_Core"),
        ],
    );
    txn.spec.rollback_on_failure = true;
    support::apply_plan(&client, &ns.name, &txn).await;
    let done = finished(&client, &ns.name, "txn").await;
    let (stalled, why, message) = reason(&done, "Stalled");
    assert_eq!((stalled.as_str(), why.as_str()), ("True", "RolledBack"), "{message}");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name).get("vael-core-env").await.expect("cm");
    assert_eq!(cm_value(&cm, "LOG_LEVEL").as_deref(), Some("info"), "the old value is back");
    let status = done.status.expect("status");
    let restart = &status.actions[1];
    let compensation = restart.compensation_restarted_at.clone().expect("restarted again");
    assert_ne!(Some(&compensation), restart.restarted_at.as_ref());
    let d = deployments.get("vael-core").await.expect("get");
    let annotation = d
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(RESTARTED_AT_ANNOTATION).cloned());
    assert_eq!(annotation, Some(compensation), "the compensating restart was sent");
}

#[tokio::test]
async fn signatures_are_required_and_checked() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "signed").await;
    setup(&client, &ns.name).await;
    let dir = std::env::temp_dir().join("antibody-tests").join(support::unique("keys"));
    std::fs::create_dir_all(&dir).expect("dir");
    let keygen = |name: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_antibody"))
            .args(["keygen", "--out"])
            .arg(dir.join(name))
            .output()
            .expect("keygen");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().find_map(|l| l.split("trusted_keys: ").nth(1)).expect("public key printed").trim().to_string()
    };
    let ci_public = keygen("ci.key");
    let _other_public = keygen("other.key");
    let safety = format!("safety:\n  require_signature: true\n  trusted_keys: {{ci: {ci_public}}}\n");
    let _controller = ControllerProcess::start(&config(&ns.name, &safety), &ns.name, &[]);

    let sign = |plan: &PatchPlan, key: &str| -> PatchPlan {
        let file = dir.join(format!("{}.yaml", plan.name_any()));
        std::fs::write(&file, serde_yaml::to_string(plan).expect("yaml")).expect("write plan");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_antibody"))
            .arg("sign")
            .arg(&file)
            .arg("--key")
            .arg(dir.join(key))
            .args(["--key-name", "ci", "--namespace", &ns.name])
            .output()
            .expect("sign");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_yaml::from_slice(&out.stdout).expect("signed yaml")
    };
    let restart = || vec![PlanAction::new(ActionType::Restart, "Sentinel")];
    let good = sign(&plan("good", restart()), "ci.key");
    let unsigned = plan("unsigned", restart());
    let mut tampered = sign(&plan("tampered", restart()), "ci.key");
    tampered.spec.actions[0].target = "VAEL_Core".into();
    let wrong_key = sign(&plan("wrong-key", restart()), "other.key");
    let mut replayed = plan("replayed", restart());
    replayed.metadata.annotations = good.metadata.annotations.clone();

    for p in [&good, &unsigned, &tampered, &wrong_key, &replayed] {
        support::apply_plan(&client, &ns.name, p).await;
    }
    let done = finished(&client, &ns.name, "good").await;
    assert_eq!(reason(&done, "PatchApplied").0, "True", "a plan signed with a trusted key runs");
    let mut messages = Vec::new();
    for (name, want) in [
        ("unsigned", "unsigned"),
        ("tampered", "does not match"),
        ("wrong-key", "does not match"),
        ("replayed", "does not match"),
    ] {
        let done = finished(&client, &ns.name, name).await;
        let (status, why, message) = reason(&done, "Stalled");
        assert_eq!((status.as_str(), why.as_str()), ("True", "SignatureInvalid"), "{name}: {message}");
        assert!(message.contains(want), "{name}: {message}");
        messages.push(message);
    }
    assert_ne!(messages[0], messages[1], "unsigned and tampered say different things");
    assert_eq!(
        Api::<ReplicaSet>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default().labels("app=vael-core"))
            .await
            .expect("rs")
            .items
            .len(),
        1,
        "the tampered plan's target was untouched"
    );
}

#[tokio::test]
async fn budget_throttles_a_storm_only_the_budget_acts() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "budget").await;
    support::install_crd(&client).await;
    let targets: Vec<String> = (0..50).map(|i| format!("T{i}")).collect();
    let mut yaml = format!("actions:\n  restart: [{}]\ntargets:\n", targets.join(", "));
    for (i, t) in targets.iter().enumerate() {
        yaml.push_str(&format!("  {t}: {{namespace: {}, deployment: d{i}}}\n", ns.name));
    }
    yaml.push_str("safety:\n  global_budget: {max_actions: 5, window_seconds: 60}\n  on_throttle: fail\n");
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..50 {
        api.create(&PostParams::default(), &support::deployment(&format!("d{i}"), 1, None)).await.expect("create");
    }
    let _controller = ControllerProcess::start(&yaml, &ns.name, &[]);
    for (i, t) in targets.iter().enumerate() {
        support::apply_plan(
            &client,
            &ns.name,
            &plan(&format!("storm-{i}"), vec![PlanAction::new(ActionType::Restart, t.as_str())]),
        )
        .await;
    }
    let (mut acted, mut throttled) = (0, 0);
    for i in 0..50 {
        let done = finished(&client, &ns.name, &format!("storm-{i}")).await;
        match reason(&done, "Ready") {
            (s, _, _) if s == "True" => acted += 1,
            (_, r, m) => {
                assert_eq!(r, "Throttled", "storm-{i}: {m}");
                assert!(m.contains("budget"), "{m}");
                throttled += 1;
            }
        }
    }
    assert_eq!((acted, throttled), (5, 45), "exactly the budget acted");
    let mut restarted = 0;
    for i in 0..50 {
        let d = api.get(&format!("d{i}")).await.expect("get");
        restarted += usize::from(
            d.spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .is_some_and(|a| a.contains_key(RESTARTED_AT_ANNOTATION)),
        );
    }
    assert_eq!(restarted, 5, "and only 5 Deployments were touched");
}

#[tokio::test]
async fn pause_switch_holds_new_plans_until_lifted() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "pause").await;
    setup(&client, &ns.name).await;
    let _controller = ControllerProcess::start(&config(&ns.name, ""), &ns.name, &[]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pause = |on: bool| serde_json::json!({"metadata": {"annotations": {"antibody.vael.io/paused": if on { "true" } else { "false" }}}});
    namespaces.patch(&ns.name, &PatchParams::default(), &Patch::Merge(pause(true))).await.expect("pause");
    support::apply_plan(&client, &ns.name, &plan("held", vec![PlanAction::new(ActionType::Restart, "Sentinel")])).await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let held = support::wait_for(plans.clone(), "held", PLAN_TIMEOUT, |p: Option<&PatchPlan>| {
        p.and_then(|p| p.condition("Reconciling")).is_some_and(|c| c.reason == "Paused")
    })
    .await;
    assert!(!held.phase().is_terminal());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns.name);
    assert_eq!(
        rs.list(&ListParams::default().labels("app=sentinel")).await.expect("rs").items.len(),
        1,
        "nothing ran while paused"
    );
    namespaces.patch(&ns.name, &PatchParams::default(), &Patch::Merge(pause(false))).await.expect("unpause");
    let done = finished(&client, &ns.name, "held").await;
    assert_eq!(reason(&done, "PatchApplied").0, "True", "the plan ran once the pause was lifted");
}

#[tokio::test]
async fn delete_pod_respects_disruption_budgets() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "evict").await;
    setup(&client, &ns.name).await;
    let _controller =
        ControllerProcess::start(&config(&ns.name, "defaults: {rollout_timeout_seconds: 4}"), &ns.name, &[]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let before: Vec<String> = pods
        .list(&ListParams::default().labels("app=vael-core"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    assert_eq!(before.len(), 2);

    // Without a budget in the way: one pod evicted, a replacement ready, the other pod untouched.
    support::apply_plan(
        &client,
        &ns.name,
        &plan("evict-one", vec![PlanAction::new(ActionType::DeletePod, "VAEL_Core")]),
    )
    .await;
    let done = finished(&client, &ns.name, "evict-one").await;
    assert_eq!(reason(&done, "PatchApplied").0, "True", "{:?}", reason(&done, "Ready"));
    let evicted = done.status.as_ref().expect("status").actions[0].signalled_pods.clone();
    assert_eq!(evicted.len(), 1);
    let after: Vec<String> = pods
        .list(&ListParams::default().labels("app=vael-core"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.uid())
        .collect();
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&evicted[0]), "the evicted pod is gone");
    assert_eq!(after.iter().filter(|u| before.contains(u)).count(), 1, "exactly one pod replaced");
    assert_eq!(
        Api::<ReplicaSet>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default().labels("app=vael-core"))
            .await
            .expect("rs")
            .items
            .len(),
        1,
        "no rollout"
    );

    // A PodDisruptionBudget that allows no disruption: refused, nothing deleted.
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "core"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "vael-core"}}}
    }))
    .expect("pdb");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);
    pdbs.create(&PostParams::default(), &pdb).await.expect("create pdb");
    support::wait_for(pdbs, "core", Duration::from_secs(30), |p: Option<&PodDisruptionBudget>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.current_healthy == 2 && s.observed_generation.is_some())
    })
    .await;
    support::apply_plan(
        &client,
        &ns.name,
        &plan("evict-blocked", vec![PlanAction::new(ActionType::DeletePod, "VAEL_Core")]),
    )
    .await;
    let blocked = finished(&client, &ns.name, "evict-blocked").await;
    let (_, why, message) = reason(&blocked, "Stalled");
    assert_eq!(why, "DisruptionBudget", "{message}");
    let still: Vec<String> = pods
        .list(&ListParams::default().labels("app=vael-core"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.uid())
        .collect();
    assert_eq!(still.len(), 2);
    assert!(after.iter().all(|u| still.contains(u)), "no pod evicted past the budget");
}

#[tokio::test]
async fn backups_are_bounded_listed_and_restorable() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "backups").await;
    setup(&client, &ns.name).await;
    let config_yaml = config(&ns.name, "safety:\n  backup_history: 2\n");
    let _controller = ControllerProcess::start(&config_yaml, &ns.name, &[]);
    for (i, value) in ["one", "two", "three"].iter().enumerate() {
        let name = format!("edit-{i}");
        support::apply_plan(
            &client,
            &ns.name,
            &plan(&name, vec![PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", *value)]),
        )
        .await;
        let done = finished(&client, &ns.name, &name).await;
        assert_eq!(reason(&done, "PatchApplied").0, "True");
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation seconds
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let backups =
        cms.list(&ListParams::default().labels("antibody.vael.io/backup-of=vael-core-env")).await.expect("list").items;
    let mut values: Vec<String> = backups.iter().filter_map(|b| cm_value(b, "LOG_LEVEL")).collect();
    values.sort();
    assert_eq!(values, ["one", "two"], "history bounded to 2: the oldest backup (info) was pruned");

    // `antibody backups` lists them; `antibody rollback` prints a plan that restores one.
    let config_file = std::env::temp_dir().join("antibody-tests").join(format!("{}-cli.yml", ns.name));
    std::fs::write(&config_file, &config_yaml).expect("config");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_antibody"))
        .arg("backups")
        .arg("VAEL_Core")
        .arg("--config")
        .arg(&config_file)
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("backups");
    let table = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let oldest = backups
        .iter()
        .find(|b| cm_value(b, "LOG_LEVEL").as_deref() == Some("one"))
        .expect("backup of 'one'")
        .name_any();
    assert!(table.contains(&oldest), "{table}");
    assert_eq!(table.lines().count(), 3, "header + 2 backups:\n{table}");
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["rollback", "VAEL_Core", &oldest, "--namespace", &ns.name, "--config"])
        .arg(&config_file)
        .output()
        .expect("rollback");
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let rollback: PatchPlan = serde_yaml::from_slice(&printed.stdout).expect("plan yaml");
    assert_eq!(rollback.summary(), "rollback:VAEL_Core, restart:VAEL_Core");
    support::apply_plan(&client, &ns.name, &rollback).await;
    let done = finished(&client, &ns.name, &rollback.name_any()).await;
    assert_eq!(reason(&done, "PatchApplied").0, "True", "{:?}", reason(&done, "Ready"));
    let cm = cms.get("vael-core-env").await.expect("cm");
    assert_eq!(cm_value(&cm, "LOG_LEVEL").as_deref(), Some("one"), "restored from the named backup");
}
