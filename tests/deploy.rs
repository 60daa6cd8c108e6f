//! deploy/ renders, installs, and grants exactly the verbs Antibody uses — nothing more.

use antibody_test_support as support;

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

/// The rendered StatefulSet, checked field by field (a substring could match any object).
fn check_hardening(rendered: &str) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use serde::Deserialize;
    let sets: Vec<StatefulSet> = serde_yaml::Deserializer::from_str(rendered)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|doc| doc["kind"].as_str() == Some("StatefulSet"))
        .map(|doc| serde_yaml::from_value(doc).expect("a valid StatefulSet"))
        .collect();
    assert_eq!(sets.len(), 1, "deploy/ renders one StatefulSet");
    let spec = sets[0].spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2), "two replicas");
    // The audit log survives rollouts: a volume per replica, mounted where log_path points,
    // named in anchors by the stable pod name.
    let claims: Vec<&str> =
        spec.volume_claim_templates.iter().flatten().filter_map(|c| c.metadata.name.as_deref()).collect();
    assert_eq!(claims, ["audit"], "one audit volume per replica");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().expect("container securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true), "read-only root filesystem");
    assert_eq!(security.allow_privilege_escalation, Some(false), "no privilege escalation");
    let non_root = security.run_as_non_root.or_else(|| pod.security_context.as_ref().and_then(|s| s.run_as_non_root));
    assert_eq!(non_root, Some(true), "runs as non-root");
    let probe_path = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        probe.and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(container.liveness_probe.as_ref()).as_deref(), Some("/livez"));
    assert_eq!(probe_path(container.readiness_probe.as_ref()).as_deref(), Some("/readyz"));
    let args: Vec<&str> =
        container.args.iter().flatten().chain(container.command.iter().flatten()).map(String::as_str).collect();
    assert!(args.contains(&"--leader-elect"), "leader election on: {args:?}");
    assert!(args.contains(&"--audit-log-id=$(POD_NAME)"), "the log is named by the stable pod name: {args:?}");
    let mounts = container.volume_mounts.iter().flatten();
    let audit_dir = args.iter().find_map(|a| a.strip_prefix("--audit-dir=")).expect("--audit-dir");
    assert!(
        mounts.clone().any(|m| m.name == "audit" && m.mount_path == audit_dir),
        "the audit volume is mounted at --audit-dir"
    );
    let volumes = pod.volumes.iter().flatten();
    assert!(!volumes.clone().any(|v| v.name == "audit"), "not an emptyDir (or any pod-lived volume)");
    let config = antibody::config::Config::from_yaml(include_str!("../deploy/antibody.yml")).expect("config");
    let key_file = config.audit.key_file.as_deref().expect("deploy keys its audit log");
    let key_volume = mounts.clone().find(|m| key_file.starts_with(&m.mount_path)).expect("the key file is mounted");
    let secret = volumes.clone().find(|v| v.name == key_volume.name).and_then(|v| v.secret.as_ref());
    assert!(secret.is_some_and(|s| s.optional != Some(true)), "the key comes from a required Secret");
    assert!(config.audit.fail_closed && config.audit.anchor_seconds > 0, "fail-closed and anchored");
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref()).expect("resource limits");
    assert!(limits.contains_key("cpu") && limits.contains_key("memory"), "cpu and memory limits: {limits:?}");
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
        "StatefulSet",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
    ] {
        assert!(rendered.contains(&format!("kind: {kind}\n")), "deploy/ renders a {kind}");
    }
    check_hardening(&rendered);
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

/// The NetworkPolicy (issue 17), parsed: it selects Antibody's pods, admits traffic only to the
/// StatefulSet's two listeners and only from named namespaces, and lets out only DNS, the API
/// server, NEXUS and Redis — never everything.
#[test]
fn network_policy_admits_only_the_listeners_and_lets_out_only_what_antibody_calls() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde::Deserialize;
    use std::collections::BTreeSet;

    let root = env!("CARGO_MANIFEST_DIR");
    let rendered = kubectl(&["kustomize", &format!("{root}/deploy")]);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .collect();
    let of_kind = |kind: &str| -> Vec<serde_yaml::Value> {
        docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).cloned().collect()
    };
    let policies: Vec<NetworkPolicy> = of_kind("NetworkPolicy")
        .into_iter()
        .map(|d| serde_yaml::from_value(d).expect("a valid NetworkPolicy"))
        .collect();
    let deployments: Vec<StatefulSet> =
        of_kind("StatefulSet").into_iter().map(|d| serde_yaml::from_value(d).expect("a valid StatefulSet")).collect();
    assert_eq!((policies.len(), deployments.len()), (1, 1), "one NetworkPolicy for the one StatefulSet");
    let (policy, deployment) = (&policies[0], &deployments[0]);
    assert_eq!(policy.metadata.namespace, deployment.metadata.namespace);
    let spec = policy.spec.as_ref().expect("spec");
    let template = &deployment.spec.as_ref().expect("deployment spec").template;
    let pod_labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let selector = spec.pod_selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
    assert!(!selector.is_empty(), "selects by label, not every pod of the namespace");
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "selects Antibody's pods: {selector:?}");
    let types: BTreeSet<&str> = spec.policy_types.iter().flatten().map(String::as_str).collect();
    assert_eq!(types, BTreeSet::from(["Egress", "Ingress"]), "both directions are restricted");

    // Ingress: every rule names ports, each a listener of the container; every rule names its peers.
    let container = &template.spec.as_ref().expect("pod spec").containers[0];
    let listeners: Vec<(String, i32)> =
        container.ports.iter().flatten().map(|p| (p.name.clone().unwrap_or_default(), p.container_port)).collect();
    let listener_of = |port: &NetworkPolicyPort| -> Option<String> {
        listeners
            .iter()
            .find(|(name, number)| match &port.port {
                Some(IntOrString::String(s)) => s == name,
                Some(IntOrString::Int(n)) => n == number,
                None => false,
            })
            .map(|(name, _)| name.clone())
    };
    let ingress = spec.ingress.as_deref().expect("ingress rules");
    let mut admitted = BTreeSet::new();
    for rule in ingress {
        let ports = rule.ports.as_deref().unwrap_or_default();
        assert!(!ports.is_empty(), "an ingress rule without ports opens every port: {rule:?}");
        let peers = rule.from.as_deref().unwrap_or_default();
        assert!(!peers.is_empty(), "an ingress rule without `from` admits everyone: {rule:?}");
        for peer in peers {
            let named = peer.namespace_selector.as_ref().and_then(|s| s.match_labels.as_ref());
            assert!(
                named.is_some_and(|l| l.contains_key("kubernetes.io/metadata.name")) || peer.pod_selector.is_some(),
                "peers are named namespaces or pods, not ipBlocks or all namespaces: {peer:?}"
            );
        }
        for port in ports {
            let listener = listener_of(port).unwrap_or_else(|| panic!("{port:?} is not a listener of the container"));
            admitted.insert(listener);
        }
    }
    assert_eq!(admitted, BTreeSet::from(["grpc".to_string(), "http".to_string()]), "both listeners reachable");

    // Egress: only rules with ports; DNS to kube-dns, the API server's ports, NEXUS and Redis.
    let egress = spec.egress.as_deref().expect("egress rules");
    let mut allowed: BTreeSet<(String, i32)> = BTreeSet::new();
    for rule in egress {
        let ports = rule.ports.as_deref().unwrap_or_default();
        assert!(!ports.is_empty(), "an egress rule without ports lets everything out: {rule:?}");
        for port in ports {
            let number = match &port.port {
                Some(IntOrString::Int(n)) => *n,
                other => panic!("egress ports are numbers: {other:?}"),
            };
            allowed.insert((port.protocol.clone().unwrap_or_else(|| "TCP".into()), number));
        }
        let dns = ports.iter().any(|p| p.port == Some(IntOrString::Int(53)));
        if dns {
            let to: &[NetworkPolicyPeer] = rule.to.as_deref().unwrap_or_default();
            assert!(
                !to.is_empty() && to.iter().all(|peer| peer.pod_selector.is_some()),
                "DNS only to the DNS pods: {rule:?}"
            );
        }
    }
    let want: BTreeSet<(String, i32)> =
        [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443), ("TCP", 7007), ("TCP", 5000), ("TCP", 6379)]
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
    assert_eq!(allowed, want, "DNS, API server, NEXUS gRPC and Socket.IO, Redis; nothing else");
    // NEXUS's gRPC port is the one deploy/settings.env points at.
    let settings = include_str!("../deploy/settings.env");
    let grpc = settings.lines().find_map(|l| l.strip_prefix("ANTIBODY_NEXUS_GRPC=")).expect("NEXUS gRPC setting");
    let port: i32 = grpc.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the NEXUS URL");
    assert!(allowed.contains(&("TCP".to_string(), port)), "egress to NEXUS gRPC port {port}");
}
