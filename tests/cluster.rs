//! The local control plane does what the rest of the suite relies on: Deployments get Running
//! pods, a template patch rolls out to completion, and `pods/exec` returns output and exit status.
//! Under kwok, exec runs on this host as an unprivileged user (uid 65534).

use antibody_test_support as support;

use std::time::Duration;

use antibody::actions::reload::{ExecError, exec};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn deployment_rollout_and_exec_on_the_local_control_plane() {
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "cluster").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let selector = ListParams::default().labels("app=web");

    // 1. Two replicas → two Running pods.
    support::create_deployment(&client, &ns.name, &support::deployment("web", 2, None)).await;
    support::wait_for(deployments.clone(), "web", Duration::from_secs(60), support::rollout_complete(1)).await;
    let running = pods.list(&selector).await.expect("list pods").items;
    let running: Vec<_> =
        running.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).collect();
    assert_eq!(running.len(), 2, "two pods Running");

    // 2. Patch the template as `kubectl rollout restart` does → a new ReplicaSet, rolled out.
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-25T00:00:00Z"}}}}});
    let patched =
        deployments.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch template");
    let generation = patched.metadata.generation.expect("generation");
    assert_eq!(generation, 2, "the template change bumped the generation");
    let done =
        support::wait_for(deployments.clone(), "web", Duration::from_secs(60), support::rollout_complete(generation))
            .await;
    let status = done.status.expect("status");
    assert_eq!((status.updated_replicas, status.available_replicas), (Some(2), Some(2)));
    let sets = replicasets.list(&selector).await.expect("list replicasets").items;
    assert_eq!(sets.len(), 2, "old and new ReplicaSet");
    let current: Vec<_> = sets.iter().filter(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(2)).collect();
    assert_eq!(current.len(), 1, "exactly one ReplicaSet holds the two replicas");

    // 3. pods/exec through kube-rs (ws): output and exit status come back.
    let pod = pods
        .list(&selector)
        .await
        .expect("list pods")
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.metadata.name)
        .expect("a live pod");
    let argv = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let output = exec(&pods, &pod, None, &argv(&["id", "-u"])).await.expect("exec id -u");
    assert_eq!(output.trim(), "65534", "exec runs as the unprivileged user");
    let output = exec(&pods, &pod, None, &argv(&["echo", "hello from", "exec"])).await.expect("exec echo");
    assert_eq!(output.trim(), "hello from exec", "argv passes through without a shell");
    match exec(&pods, &pod, None, &argv(&["sh", "-c", "exit 3"])).await {
        Err(ExecError::NonZero { code, .. }) => assert_eq!(code, Some(3)),
        other => panic!("expected exit code 3, got {other:?}"),
    }
    // Safety by construction: PID 1 of this host is out of reach.
    match exec(&pods, &pod, None, &argv(&["kill", "-0", "1"])).await {
        Err(ExecError::NonZero { code, .. }) => assert_ne!(code, Some(0)),
        other => panic!("kill -0 1 must be refused, got {other:?}"),
    }
}
