//! Two replicas with leader election on the real control plane: both ingest alerts, only the
//! Lease holder acts; when it dies mid-plan the standby takes over within the lease time and
//! finishes the plan without repeating anything.

use antibody_test_support as support;

use std::time::{Duration, Instant};

use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use support::{ControllerProcess, Gunicorn, TestNamespace};

const LEASE_SECONDS: u64 = 4;
const TOKEN: &str = "leader-test-token-0123456789abcdef";

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("antibody-leader").await.ok().flatten()?.spec?.holder_identity
}

/// Does the controller's own audit log mention `plan`?
fn audited(controller: &ControllerProcess, plan: &str) -> bool {
    let Ok(files) = std::fs::read_dir(&controller.audit_dir) else {
        return false;
    };
    files.flatten().any(|f| std::fs::read_to_string(f.path()).is_ok_and(|text| text.contains(&format!("\"{plan}\""))))
}

#[tokio::test]
async fn standby_takes_over_a_plan_when_the_leader_dies() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "leader").await;
    support::install_crd(&client).await;
    support::create_deployment(&client, &ns.name, &support::deployment("vael-core", 6, None)).await;
    support::create_deployment(&client, &ns.name, &support::deployment("vael-ui", 1, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let slow = serde_json::json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}});
    deployments.patch("vael-core", &PatchParams::default(), &Patch::Merge(&slow)).await.expect("strategy");
    for name in ["vael-core", "vael-ui"] {
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
    let gunicorn = Gunicorn::start();
    let config = format!(
        "actions: {{restart: [VAEL_Core], reload_flask: [VAEL_UI]}}\n\
         severity_map: {{high: [reload_flask]}}\n\
         defaults: {{plan_namespace: {ns}}}\n\
         targets:\n  VAEL_Core: {{namespace: {ns}, deployment: vael-core}}\n  \
         VAEL_UI: {{namespace: {ns}, deployment: vael-ui, container: app, reload_command: [kill, -HUP, \"{pid}\"], {probe}}}\n",
        ns = ns.name,
        pid = gunicorn.pid,
        probe = support::STAND_IN_PROBE_YAML,
    );
    let tokens = support::token_file(TOKEN);
    let tokens = tokens.to_str().expect("utf-8 path");
    let lease_args =
        ["--leader-elect", "--lease-duration-seconds", "4", "--lease-grace-seconds", "1", "--token-file", tokens];
    let mut a = ControllerProcess::start_as("replica-a", &config, &ns.name, &lease_args);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    while holder(&leases).await.as_deref() != Some("replica-a") {
        assert!(Instant::now() < deadline, "replica-a never led:\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = ControllerProcess::start_as("replica-b", &config, &ns.name, &lease_args);
    b.wait_ready().await; // a standby is ready: it serves and ingests

    // Both replicas ingest: the leader creates the plan for an alert, the standby records the
    // same remedy asked again as cooled down into that plan (the claims are shared through the
    // cluster). The leader runs the plan: one HUP.
    let alert = |id: &str| {
        format!(
            r#"{{"id":"{id}","source":"NEXUS","category":"policy","severity":"high","msg":"x","patch_hint":"reload_flask:VAEL_UI"}}"#
        )
    };
    let post = |port: u16, id: &str| {
        let (code, body) = support::http_request(port, "POST", "/api/nexus/alert", Some(TOKEN), &alert(id));
        (code, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default())
    };
    let (code, on_a) = post(a.http_port, "to-leader");
    assert_eq!((code, on_a["outcome"].as_str()), (202, Some("plan_created")), "{on_a}");
    let (code, on_b) = post(b.http_port, "to-standby");
    assert_eq!((code, on_b["outcome"].as_str()), (202, Some("cooled_down")), "{on_b}");
    assert_eq!(on_b["plan"], on_a["plan"], "the standby names the leader's plan");
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let alerted = on_a["plan"].as_str().expect("plan name").to_string();
    let done = support::wait_for(plans.clone(), &alerted, Duration::from_secs(30), support::plan_finished()).await;
    assert_eq!(done.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"), "{:?}", done.status);
    let hups_before = {
        let deadline = Instant::now() + Duration::from_secs(5);
        while gunicorn.hup_count() < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gunicorn.hup_count()
    };
    assert_eq!(hups_before, 1, "the alert's plan sent one HUP: {}", gunicorn.log());

    let plan = PatchPlan::new(
        "failover",
        PatchPlanSpec {
            actions: vec![
                PlanAction::new(ActionType::Restart, "VAEL_Core"),
                PlanAction::new(ActionType::ReloadFlask, "VAEL_UI"),
            ],
            ..Default::default()
        },
    );
    support::apply_plan(&client, &ns.name, &plan).await;
    support::wait_for(plans.clone(), "failover", Duration::from_secs(30), |p: Option<&PatchPlan>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.actions.first().is_some_and(|a| a.restarted_at.is_some()))
    })
    .await;
    // b stayed standby: a stays the Lease holder and b has recorded nothing about the plan
    // (only a replica that reconciles writes plan transitions to its audit log).
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));
    assert!(!audited(&b, "failover"), "the standby acted on the plan:\n{}", b.logs());
    a.kill();
    let killed = Instant::now();
    assert!(!plans.get("failover").await.expect("plan").phase().is_terminal(), "the leader died mid-plan");

    let done = support::wait_for(plans, "failover", Duration::from_secs(60), support::plan_finished()).await;
    let took_over = killed.elapsed();
    eprintln!("leader killed → plan finished by the standby in {took_over:?} (lease {LEASE_SECONDS}s)");
    assert_eq!(done.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"), "{:?}", done.status);
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-b"));
    assert!(audited(&b, "failover"), "the new leader recorded the plan it finished");
    assert!(took_over < Duration::from_secs(LEASE_SECONDS + 10), "finished {took_over:?} after the leader died");
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels("app=vael-core"))
        .await
        .expect("rs");
    assert_eq!(sets.items.len(), 2, "one rollout, not two");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gunicorn.hup_count(), hups_before + 1, "one SIGHUP for the failover plan: {}", gunicorn.log());
    assert!(b.alive());
}
