//! deploy/ renders, installs, and grants exactly the verbs Antibody uses — nothing more.

mod support;

use std::collections::BTreeMap;

fn kubectl(args: &[&str]) -> String {
    let out = support::kubectl().args(args).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the ServiceAccount may do in each namespace (from deploy/antibody.yml: plans in
/// `antibody`, every target in `vael`); cluster-wide only namespace metadata.
fn expected(namespace: &str) -> BTreeMap<&'static str, &'static str> {
    let mut grants = BTreeMap::from([("namespaces", "get list watch")]);
    match namespace {
        "antibody" => grants.extend([
            ("patchplans.antibody.vael.io", "create delete get list patch watch"),
            ("patchplans.antibody.vael.io/status", "get patch"),
            ("events.events.k8s.io", "create patch"),
            ("configmaps", "create get list patch update watch"),
            ("leases.coordination.k8s.io", "create get list patch update watch"),
        ]),
        "vael" => grants.extend([
            ("deployments.apps", "get list patch watch"),
            ("replicasets.apps", "get list watch"),
            ("pods", "get list watch"),
            ("pods/exec", "create get"),
            ("pods/eviction", "create"),
            ("configmaps", "create delete get list patch watch"),
        ]),
        _ => {}
    }
    grants
}

/// `kubectl auth can-i --list` as the ServiceAccount: resource → verbs, minus what every
/// authenticated identity may do (self-reviews, discovery URLs).
fn granted(namespace: &str) -> BTreeMap<String, String> {
    let table = kubectl(&["auth", "can-i", "--list", "--as=system:serviceaccount:antibody:antibody", "-n", namespace]);
    table
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| {
            let resource = line.split_whitespace().next()?.to_string();
            let verbs = line.rsplit_once('[')?.1.trim_end_matches(']').to_string();
            Some((resource, verbs))
        })
        .filter(|(resource, _)| !resource.starts_with("selfsubject"))
        .collect()
}

#[tokio::test]
async fn deploy_installs_with_least_privilege() {
    let _client = support::client().await; // fails with instructions when the cluster is down
    let root = env!("CARGO_MANIFEST_DIR");
    let rendered = kubectl(&["kustomize", &format!("{root}/deploy")]);
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "ConfigMap",
    ] {
        assert!(rendered.contains(&format!("kind: {kind}\n")), "deploy/ renders a {kind}");
    }
    for hardening in [
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "path: /livez",
        "path: /readyz",
        "--leader-elect",
        "replicas: 2",
    ] {
        assert!(rendered.contains(hardening), "deployment has {hardening}");
    }
    // An install from before the RBAC was per namespace left a cluster-wide role behind
    // (`kubectl apply` does not prune): remove it, as the README's upgrade note says.
    kubectl(&["delete", "clusterrolebinding,clusterrole", "antibody", "--ignore-not-found"]);
    kubectl(&["delete", "rolebinding,role", "antibody-leader-election", "-n", "antibody", "--ignore-not-found"]);
    // The targets' namespace must exist: the generated Roles live there.
    let namespace = kubectl(&["create", "namespace", "vael", "--dry-run=client", "-o", "yaml"]);
    let mut apply =
        support::kubectl().args(["apply", "-f", "-"]).stdin(std::process::Stdio::piped()).spawn().expect("kubectl");
    std::io::Write::write_all(&mut apply.stdin.take().expect("stdin"), namespace.as_bytes()).expect("namespace yaml");
    assert!(apply.wait().expect("kubectl apply").success());
    kubectl(&["apply", "-k", &format!("{root}/deploy")]);

    for namespace in ["default", "kube-system", "antibody", "vael"] {
        let want: BTreeMap<String, String> =
            expected(namespace).into_iter().map(|(r, v)| (r.into(), v.into())).collect();
        assert_eq!(granted(namespace), want, "grants in namespace {namespace}");
    }
}

#[test]
fn deploy_config_is_valid() {
    let text = include_str!("../deploy/antibody.yml");
    antibody::config::Config::from_yaml(text).expect("deploy/antibody.yml is a valid antibody.yml");
}
