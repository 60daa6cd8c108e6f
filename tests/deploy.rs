//! deploy/ renders, installs, and grants exactly the verbs Antibody uses — nothing more.

mod support;

use std::collections::BTreeMap;

fn kubectl(args: &[&str]) -> String {
    let out = support::kubectl().args(args).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn expected() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("patchplans.antibody.vael.io", "get list watch create patch delete"),
        ("patchplans.antibody.vael.io/status", "get patch"),
        ("deployments.apps", "get list watch patch"),
        ("replicasets.apps", "get list watch"),
        ("pods", "get list watch"),
        ("pods/exec", "get create"),
        ("pods/eviction", "create"),
        ("configmaps", "get list watch create patch delete"),
        ("namespaces", "get list watch"),
        ("events.events.k8s.io", "create patch"),
    ])
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
    kubectl(&["apply", "-k", &format!("{root}/deploy")]);

    let mut want: BTreeMap<String, String> = expected().into_iter().map(|(r, v)| (r.into(), v.into())).collect();
    let in_other_namespace = granted("default");
    assert_eq!(in_other_namespace, want, "cluster-wide grants are exactly the verbs Antibody uses");
    want.insert("leases.coordination.k8s.io".into(), "get list watch create update patch".into());
    assert_eq!(granted("antibody"), want, "plus leases in its own namespace only");
}

#[test]
fn deploy_config_is_valid() {
    let text = include_str!("../deploy/antibody.yml");
    antibody::config::Config::from_yaml(text).expect("deploy/antibody.yml is a valid antibody.yml");
}
