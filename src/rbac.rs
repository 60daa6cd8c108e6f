//! Least-privilege RBAC derived from antibody.yml (`antibody rbac`): a Role per namespace for
//! exactly the verbs the whitelisted actions need there, and cluster scope only for the
//! namespace metadata the pause switch reads. Pure.
//!
//! - Antibody's own namespace: Leases (leader election).
//! - Each plan namespace: PatchPlans (watch, create from alerts, status, notify markers, delete
//!   on an Alertmanager "resolved"), their Events, and the ingest cool-down ConfigMap.
//! - Each target namespace: read Deployments, ReplicaSets and Pods; patch Deployments only for
//!   targets that may be restarted; Evictions for deletePod; `pods/exec` only for targets that
//!   may be reloaded or have a `verify` probe; ConfigMaps (edit, backups, pruning) only for
//!   targets that may be edited.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::ObjectMeta;

use crate::config::Config;
use crate::plan::ActionType;

/// Who the RBAC is for, and where plans live.
#[derive(Debug, Clone)]
pub struct RbacSettings {
    /// Antibody's namespace (ServiceAccount, Leases).
    pub namespace: String,
    /// The ServiceAccount's name; also the prefix of every Role and binding.
    pub name: String,
    /// Namespaces whose PatchPlans Antibody watches and writes (`--namespace` of `antibody run`).
    pub plan_namespaces: Vec<String>,
}

/// Verbs per resource in one namespace: (apiGroup, resource) → verbs.
type Grants = BTreeMap<(&'static str, &'static str), BTreeSet<&'static str>>;

fn grant(grants: &mut Grants, group: &'static str, resource: &'static str, verbs: &[&'static str]) {
    grants.entry((group, resource)).or_default().extend(verbs.iter().copied());
}

/// Namespace → grants, for the whitelist and targets of `config`.
pub fn namespace_grants(config: &Config, settings: &RbacSettings) -> Result<BTreeMap<String, Grants>, String> {
    let mut all: BTreeMap<String, Grants> = BTreeMap::new();
    let own = all.entry(settings.namespace.clone()).or_default();
    grant(own, "coordination.k8s.io", "leases", &["get", "list", "watch", "create", "update", "patch"]);
    for ns in &settings.plan_namespaces {
        let grants = all.entry(ns.clone()).or_default();
        grant(grants, "antibody.vael.io", "patchplans", &["get", "list", "watch", "create", "patch", "delete"]);
        grant(grants, "antibody.vael.io", "patchplans/status", &["get", "patch"]);
        grant(grants, "events.k8s.io", "events", &["create", "patch"]);
        // The ingest cool-down claims live in a ConfigMap of the plan namespace.
        grant(grants, "", "configmaps", &["get", "list", "watch", "create", "patch", "update"]);
    }
    let actions = [
        (ActionType::Restart, &config.actions.restart),
        (ActionType::EditEnv, &config.actions.edit_env),
        (ActionType::ReloadFlask, &config.actions.reload_flask),
    ];
    for (action, names) in actions {
        for name in names {
            // A target without a namespace acts in the plan's namespace: each of them.
            let namespaces: Vec<String> = match config.targets.get(name).and_then(|t| t.namespace.clone()) {
                Some(ns) => vec![ns],
                None => settings.plan_namespaces.clone(),
            };
            for ns in namespaces {
                let target = config.resolve(name, &ns).map_err(|e| e.to_string())?;
                let grants = all.entry(ns).or_default();
                // Every action reads the Deployment, its ReplicaSets and ready pods.
                grant(grants, "apps", "deployments", &["get", "list", "watch"]);
                grant(grants, "apps", "replicasets", &["get", "list", "watch"]);
                grant(grants, "", "pods", &["get", "list", "watch"]);
                // Exec: websocket upgrade is a GET, SPDY a POST.
                let exec = || ("", "pods/exec", ["get", "create"]);
                match action {
                    ActionType::Restart => {
                        grant(grants, "apps", "deployments", &["patch"]);
                        grant(grants, "", "pods/eviction", &["create"]);
                    }
                    ActionType::EditEnv => {
                        grant(grants, "", "configmaps", &["get", "list", "watch", "create", "patch", "delete"]);
                    }
                    ActionType::ReloadFlask => {
                        let (group, resource, verbs) = exec();
                        grant(grants, group, resource, &verbs);
                    }
                    ActionType::Rollback | ActionType::DeletePod => {}
                }
                if target.verify.is_some() {
                    let (group, resource, verbs) = exec();
                    grant(grants, group, resource, &verbs);
                }
            }
        }
    }
    Ok(all)
}

/// The namespaces Antibody's actions touch, for namespaced watches: every whitelisted target's
/// namespace, and for targets without one the plan namespace. `None` when that is "any
/// namespace" (a target without a namespace and a controller watching plans everywhere).
pub fn target_namespaces(config: &Config, plan_namespace: Option<&str>) -> Option<BTreeSet<String>> {
    let mut namespaces = BTreeSet::new();
    let names = config.actions.restart.iter().chain(&config.actions.edit_env).chain(&config.actions.reload_flask);
    for name in names {
        match (config.targets.get(name).and_then(|t| t.namespace.clone()), plan_namespace) {
            (Some(ns), _) => namespaces.insert(ns),
            (None, Some(ns)) => namespaces.insert(ns.to_string()),
            (None, None) => return None,
        };
    }
    Some(namespaces)
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([("app.kubernetes.io/name".to_string(), "antibody".to_string())])),
        ..Default::default()
    }
}

fn rules(grants: &Grants) -> Vec<PolicyRule> {
    grants
        .iter()
        .map(|((group, resource), verbs)| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(vec![resource.to_string()]),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

/// The manifests, as one YAML stream (`---` separated), ready for `kubectl apply -f -`.
pub fn render(config: &Config, settings: &RbacSettings) -> Result<String, String> {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: settings.name.clone(),
        namespace: Some(settings.namespace.clone()),
        ..Default::default()
    };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    };
    let mut docs: Vec<String> = Vec::new();
    let mut push = |value: serde_yaml::Result<String>| -> Result<(), String> {
        docs.push(value.map_err(|e| e.to_string())?);
        Ok(())
    };
    push(serde_yaml::to_string(&ServiceAccount {
        metadata: meta(&settings.name, Some(&settings.namespace)),
        ..Default::default()
    }))?;
    // Cluster scope: only namespace metadata, for the pause annotation.
    let cluster_name = format!("{}-namespaces", settings.name);
    push(serde_yaml::to_string(&ClusterRole {
        metadata: meta(&cluster_name, None),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["namespaces".into()]),
            verbs: ["get", "list", "watch"].map(String::from).to_vec(),
            ..Default::default()
        }]),
        ..Default::default()
    }))?;
    push(serde_yaml::to_string(&ClusterRoleBinding {
        metadata: meta(&cluster_name, None),
        role_ref: role_ref("ClusterRole", &cluster_name),
        subjects: Some(vec![subject.clone()]),
    }))?;
    for (namespace, grants) in namespace_grants(config, settings)? {
        push(serde_yaml::to_string(&Role {
            metadata: meta(&settings.name, Some(&namespace)),
            rules: Some(rules(&grants)),
        }))?;
        push(serde_yaml::to_string(&RoleBinding {
            metadata: meta(&settings.name, Some(&namespace)),
            role_ref: role_ref("Role", &settings.name),
            subjects: Some(vec![subject.clone()]),
        }))?;
    }
    Ok(format!(
        "# Generated by `antibody rbac` from antibody.yml. Least privilege: a Role per namespace.\n{}",
        docs.join("---\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RbacSettings {
        RbacSettings { namespace: "antibody".into(), name: "antibody".into(), plan_namespaces: vec!["plans".into()] }
    }

    fn verbs(
        all: &BTreeMap<String, Grants>,
        ns: &str,
        group: &'static str,
        resource: &'static str,
    ) -> Vec<&'static str> {
        all.get(ns).and_then(|g| g.get(&(group, resource))).map(|v| v.iter().copied().collect()).unwrap_or_default()
    }

    #[test]
    fn each_namespace_gets_only_what_its_targets_need() {
        let config = Config::from_yaml(
            "actions: {restart: [Core], edit_env: [Core], reload_flask: [Ui]}\n\
             targets:\n  Core: {namespace: core, deployment: core, config_map: core-env}\n  \
             Ui: {namespace: ui, deployment: ui}\n  Quiet: {namespace: quiet, deployment: q, verify: {command: [probe]}}\n",
        )
        .expect("config");
        let all = namespace_grants(&config, &settings()).expect("grants");
        assert_eq!(all.keys().collect::<Vec<_>>(), ["antibody", "core", "plans", "ui"], "no grants where nothing acts");
        assert_eq!(verbs(&all, "core", "apps", "deployments"), ["get", "list", "patch", "watch"]);
        assert_eq!(verbs(&all, "core", "", "configmaps"), ["create", "delete", "get", "list", "patch", "watch"]);
        assert!(verbs(&all, "core", "", "pods/exec").is_empty(), "Core is never reloaded");
        assert_eq!(verbs(&all, "ui", "", "pods/exec"), ["create", "get"]);
        assert!(verbs(&all, "ui", "", "configmaps").is_empty(), "Ui is never edited");
        assert!(verbs(&all, "ui", "apps", "deployments").iter().all(|v| *v != "patch"), "Ui is never restarted");
        assert_eq!(verbs(&all, "antibody", "coordination.k8s.io", "leases").len(), 6);
        assert!(verbs(&all, "antibody", "", "pods/exec").is_empty());
        assert_eq!(verbs(&all, "plans", "antibody.vael.io", "patchplans/status"), ["get", "patch"]);
    }

    #[test]
    fn seed_targets_act_in_the_plan_namespaces_and_probes_need_exec() {
        let config = Config::from_yaml("actions: {restart: [VAEL_Core]}\n").expect("seed config");
        let all = namespace_grants(&config, &settings()).expect("grants");
        assert_eq!(verbs(&all, "plans", "apps", "deployments"), ["get", "list", "patch", "watch"]);
        let probed = Config::from_yaml(
            "actions: {restart: [Core]}\ntargets: {Core: {namespace: core, deployment: c, verify: {command: [p]}}}\n",
        )
        .expect("config");
        let all = namespace_grants(&probed, &settings()).expect("grants");
        assert_eq!(verbs(&all, "core", "", "pods/exec"), ["create", "get"]);
    }

    #[test]
    fn watched_namespaces_follow_the_targets() {
        let config = Config::from_yaml(
            "actions: {restart: [A], reload_flask: [B]}\ntargets: {A: {namespace: a, deployment: a}, B: {deployment: b}}\n",
        )
        .expect("config");
        assert_eq!(target_namespaces(&config, Some("plans")), Some(["a".to_string(), "plans".to_string()].into()));
        assert_eq!(target_namespaces(&config, None), None, "B acts wherever its plan is");
    }

    #[test]
    fn renders_applyable_yaml() {
        let config = Config::from_yaml("actions: {restart: [VAEL_Core]}\n").expect("config");
        let yaml = render(&config, &settings()).expect("render");
        let kinds: Vec<&str> = yaml.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Role", "RoleBinding"]
        );
        assert!(!yaml.contains(
            "kind: ClusterRole\nmetadata:\n  labels:\n    app.kubernetes.io/name: antibody\n  name: antibody\n"
        ));
    }
}
