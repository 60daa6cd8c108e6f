//! `antibody rbac` (issue 17): the RBAC rendered from antibody.yml grants nothing outside the
//! namespaces its targets and plans live in — and is enough: a controller running with that
//! ServiceAccount's token drives a plan (edit, restart, probed reload) to PatchApplied.

use antibody_test_support as support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use antibody::plan::PatchPlan;
use kube::api::Api;
use serde::Deserialize;
use serde_json::json;
use support::{ControllerProcess, TestNamespace};

fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = support::kubectl()
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("kubectl stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_string())
}

/// `kubectl auth can-i VERB RESOURCE -n NS` as the ServiceAccount.
fn can_i(account: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    // `pods/exec` on the command line would be read as the pod named "exec".
    let (resource, subresource) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
    let subresource = subresource.map(|s| format!("--subresource={s}"));
    let mut args = vec!["auth", "can-i", verb, resource, "--as", account];
    args.extend(subresource.as_deref());
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let (_, answer) = kubectl(&args, None);
    answer.lines().next() == Some("yes")
}

#[tokio::test]
async fn rendered_rbac_is_least_privilege_and_enough_to_act() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let own = TestNamespace::new(&client, "rbac-own").await;
    let plans_ns = TestNamespace::new(&client, "rbac-plans").await;
    let core_ns = TestNamespace::new(&client, "rbac-core").await;
    let ui_ns = TestNamespace::new(&client, "rbac-ui").await;
    let account = support::unique("antibody");
    let config = format!(
        "actions: {{restart: [Core], edit_env: [Core], reload_flask: [Ui]}}\n\
         targets:\n  Core: {{namespace: {core}, deployment: core, config_map: core-env}}\n  \
         Ui: {{namespace: {ui}, deployment: ui, container: app, reload_command: [\"true\"], verify: {{command: [\"true\"]}}}}\n\
         defaults: {{plan_namespace: {plans}, rollout_timeout_seconds: 60}}\n",
        core = core_ns.name,
        ui = ui_ns.name,
        plans = plans_ns.name,
    );
    let config_file = std::env::temp_dir().join("antibody-tests").join(format!("{}.yml", own.name));
    std::fs::create_dir_all(config_file.parent().expect("dir")).expect("dir");
    std::fs::write(&config_file, &config).expect("config");
    let rendered = std::process::Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["rbac", "--namespace", &own.name, "--service-account", &account, "--config"])
        .arg(&config_file)
        .output()
        .expect("antibody rbac");
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let yaml = String::from_utf8_lossy(&rendered.stdout).into_owned();
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "apply the rendered RBAC: {out}");
    let cluster_role = format!("{account}-namespaces");
    let _cleanup = scopeguard(&cluster_role);

    let sa = format!("system:serviceaccount:{}:{account}", own.name);
    let (core, ui, plans) = (Some(core_ns.name.as_str()), Some(ui_ns.name.as_str()), Some(plans_ns.name.as_str()));
    // (verb, resource, namespace, allowed)
    let table = [
        ("create", "pods/exec", Some("kube-system"), false),
        ("create", "pods/exec", Some("default"), false),
        ("create", "pods/exec", core, false),
        ("create", "pods/exec", ui, true),
        ("patch", "configmaps", Some("kube-system"), false),
        ("patch", "configmaps", core, true),
        ("patch", "configmaps", ui, false),
        ("patch", "deployments.apps", core, true),
        ("patch", "deployments.apps", ui, false),
        ("create", "pods/eviction", core, true),
        ("list", "pods", None, false),
        ("list", "configmaps", None, false),
        ("list", "secrets", core, false),
        ("watch", "namespaces", None, true),
        ("patch", "patchplans.antibody.vael.io/status", plans, true),
        ("patch", "patchplans.antibody.vael.io/status", core, false),
        ("create", "leases.coordination.k8s.io", Some(own.name.as_str()), true),
        ("create", "leases.coordination.k8s.io", plans, false),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter(|(verb, resource, ns, allowed)| can_i(&sa, verb, resource, *ns) != *allowed)
        .map(|(verb, resource, ns, allowed)| format!("{verb} {resource} in {ns:?}: want {allowed}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\n{yaml}");

    // Enough to act: the controller runs with the ServiceAccount's token only.
    support::create_config_map(&client, &core_ns.name, "core-env", &[("LOG_LEVEL", "info")]).await;
    support::create_deployment(&client, &core_ns.name, &support::deployment("core", 2, Some("core-env"))).await;
    support::create_deployment(&client, &ui_ns.name, &support::deployment("ui", 1, None)).await;
    let (ok, token) = kubectl(&["create", "token", &account, "-n", &own.name, "--duration", "20m"], None);
    assert!(ok, "token: {token}");
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(support::kubeconfig_path()).expect("kubeconfig")).expect("yaml");
    kubeconfig["users"][0]["user"] = serde_yaml::to_value(json!({ "token": token })).expect("user");
    let sa_kubeconfig = config_file.with_extension("kubeconfig");
    std::fs::write(&sa_kubeconfig, serde_yaml::to_string(&kubeconfig).expect("yaml")).expect("write kubeconfig");
    let controller = ControllerProcess::start_on(&sa_kubeconfig, &config, &plans_ns.name, &[]);
    controller.wait_ready().await;
    let plan: PatchPlan = serde_json::from_value(json!({
        "apiVersion": "antibody.vael.io/v1alpha1", "kind": "PatchPlan", "metadata": {"name": "least-privilege"},
        "spec": {"actions": [
            {"type": "editEnv", "target": "Core", "key": "LOG_LEVEL", "value": "debug"},
            {"type": "restart", "target": "Core"},
            {"type": "reloadFlask", "target": "Ui"},
        ]},
    }))
    .expect("plan");
    support::apply_plan(&client, &plans_ns.name, &plan).await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &plans_ns.name);
    let done = support::wait_for(plans, "least-privilege", Duration::from_secs(90), support::plan_finished()).await;
    let applied = done.condition("PatchApplied").map(|c| (c.status.clone(), c.message.clone()));
    assert_eq!(applied.as_ref().map(|a| a.0.as_str()), Some("True"), "{applied:?}\n{}", controller.logs());
    assert!(!controller.logs().contains("forbidden"), "a request was forbidden:\n{}", controller.logs());
}

/// `antibody rbac` for `config`, written to a file next to the config; the YAML it printed.
fn render_rbac(own: &str, account: &str, config: &str) -> (std::path::PathBuf, String) {
    let config_file = std::env::temp_dir().join("antibody-tests").join(format!("{own}.yml"));
    std::fs::create_dir_all(config_file.parent().expect("dir")).expect("dir");
    std::fs::write(&config_file, config).expect("config");
    let rendered = std::process::Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["rbac", "--namespace", own, "--service-account", account, "--config"])
        .arg(&config_file)
        .output()
        .expect("antibody rbac");
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    (config_file, String::from_utf8_lossy(&rendered.stdout).into_owned())
}

/// A kubeconfig next to `config_file` whose only credential is the ServiceAccount's token.
fn service_account_kubeconfig(own: &str, account: &str, config_file: &std::path::Path) -> std::path::PathBuf {
    let (ok, token) = kubectl(&["create", "token", account, "-n", own, "--duration", "20m"], None);
    assert!(ok, "token: {token}");
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(support::kubeconfig_path()).expect("kubeconfig")).expect("yaml");
    kubeconfig["users"][0]["user"] = serde_yaml::to_value(json!({ "token": token })).expect("user");
    let path = config_file.with_extension("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).expect("yaml")).expect("write kubeconfig");
    path
}

/// README: Events are best effort, counted in `antibody_events_dropped_total` when they cannot be
/// published. A ServiceAccount without the events.k8s.io grant: plans still apply, no Event is
/// written, and each Event the plans would have written is counted — by value (a one-restart
/// plan announces `Started` and `Applied`; its last action's success rides on `Applied`).
#[tokio::test]
async fn events_that_cannot_be_published_are_counted_dropped_and_plans_still_apply() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let own = TestNamespace::new(&client, "events-own").await;
    let ns = TestNamespace::new(&client, "events-dropped").await;
    let account = support::unique("antibody");
    let config = format!(
        "actions: {{restart: [Core]}}\n\
         targets:\n  Core: {{namespace: {ns}, deployment: core}}\n\
         defaults: {{plan_namespace: {ns}, rollout_timeout_seconds: 60}}\n",
        ns = ns.name,
    );
    let (config_file, yaml) = render_rbac(&own.name, &account, &config);
    // The rendered RBAC without its events.k8s.io rule.
    let mut documents = Vec::new();
    let mut removed = 0;
    for document in serde_yaml::Deserializer::from_str(&yaml) {
        let mut object = serde_yaml::Value::deserialize(document).expect("rbac document");
        if let Some(rules) = object.get_mut("rules").and_then(|r| r.as_sequence_mut()) {
            let before = rules.len();
            rules.retain(|rule| !serde_yaml::to_string(&rule["apiGroups"]).is_ok_and(|g| g.contains("events.k8s.io")));
            removed += before - rules.len();
        }
        documents.push(serde_yaml::to_string(&object).expect("yaml"));
    }
    assert_eq!(removed, 1, "the rendered RBAC grants Events in one rule:\n{yaml}");
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&documents.join("---\n")));
    assert!(ok, "apply the RBAC without Events: {out}");
    let cluster_role = format!("{account}-namespaces");
    let _cleanup = scopeguard(&cluster_role);
    assert!(!can_i(
        &format!("system:serviceaccount:{}:{account}", own.name),
        "create",
        "events.events.k8s.io",
        Some(&ns.name)
    ));

    support::create_deployment(&client, &ns.name, &support::deployment("core", 1, None)).await;
    let kubeconfig = service_account_kubeconfig(&own.name, &account, &config_file);
    let controller = ControllerProcess::start_on(&kubeconfig, &config, &ns.name, &[]);
    controller.wait_ready().await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let names = ["first", "second"];
    for name in names {
        let plan: PatchPlan = serde_json::from_value(json!({
            "apiVersion": "antibody.vael.io/v1alpha1", "kind": "PatchPlan", "metadata": {"name": name},
            "spec": {"actions": [{"type": "restart", "target": "Core"}]},
        }))
        .expect("plan");
        support::apply_plan(&client, &ns.name, &plan).await;
        let done = support::wait_for(plans.clone(), name, Duration::from_secs(90), support::plan_finished()).await;
        let applied = done.condition("PatchApplied").map(|c| c.status.clone());
        assert_eq!(applied.as_deref(), Some("True"), "{:?}\n{}", done.status, controller.logs());
    }
    // Both plans' Events were queued before their `patch_applied` transition was counted; the
    // queue is published in order, so once the count reaches 4 nothing more is on its way.
    let series = "antibody_events_dropped_total";
    let expected = 2.0 * names.len() as f64;
    let dropped = support::wait_metric(controller.http_port, series, expected, Duration::from_secs(15)).await;
    assert_eq!(dropped, expected, "dropped Events:\n{}", controller.logs());
    let settled = support::wait_metric(controller.http_port, series, expected + 1.0, Duration::from_secs(1)).await;
    assert_eq!(settled, expected, "no further Event was counted");
    let (ok, events) = kubectl(&["get", "events.events.k8s.io", "-n", &ns.name, "-o", "name"], None);
    assert!(ok, "{events}");
    assert!(!events.contains("first") && !events.contains("second"), "an Event was written after all: {events}");
}

/// deploy/rbac.yaml is what `antibody rbac` renders for deploy/antibody.yml.
#[test]
fn deploy_rbac_is_generated_from_deploy_antibody_yml() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["rbac", "--config", &format!("{root}/deploy/antibody.yml")])
        .output()
        .expect("antibody rbac");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let on_disk = std::fs::read_to_string(format!("{root}/deploy/rbac.yaml")).expect("deploy/rbac.yaml");
    assert!(
        on_disk == String::from_utf8_lossy(&out.stdout),
        "deploy/rbac.yaml is stale: run `antibody rbac --config deploy/antibody.yml > deploy/rbac.yaml`"
    );
}

/// Deletes the cluster-scoped objects of this test when it ends (namespaced ones go with their
/// namespaces).
fn scopeguard(cluster_role: &str) -> impl Drop {
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            for kind in ["clusterrolebinding", "clusterrole"] {
                let _ = support::kubectl().args(["delete", kind, &self.0, "--ignore-not-found"]).output();
            }
        }
    }
    Guard(cluster_role.to_string())
}
