//! Every replica serves the UI (issue 17): the standby, which never reconciles, hears each
//! plan's outcome from its own watch of plan status and lists the plan as it stands.

use antibody_test_support as support;

use std::time::{Duration, Instant};

use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::Value;
use support::socketio::{SocketAuth, SocketIoClient};
use support::{ControllerProcess, TestNamespace};

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("antibody-leader").await.ok().flatten()?.spec?.holder_identity
}

fn restart_plan(name: &str) -> PatchPlan {
    PatchPlan::new(
        name,
        PatchPlanSpec { actions: vec![PlanAction::new(ActionType::Restart, "VAEL_Core")], ..Default::default() },
    )
}

#[tokio::test]
async fn a_ui_connected_to_the_standby_hears_every_outcome_once() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "replicas").await;
    support::install_crd(&client).await;
    support::create_deployment(&client, &ns.name, &support::deployment("vael-core", 2, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    support::wait_for(deployments, "vael-core", Duration::from_secs(60), support::rollout_complete(1)).await;
    let config = format!(
        "actions: {{restart: [VAEL_Core]}}\ntargets:\n  VAEL_Core: {{namespace: {ns}, deployment: vael-core}}\n",
        ns = ns.name
    );
    let tokens = support::scoped_token_file();
    let tokens = tokens.to_str().expect("utf-8 path");
    let lease_args =
        ["--leader-elect", "--lease-duration-seconds", "4", "--lease-grace-seconds", "1", "--token-file", tokens];
    let leader = ControllerProcess::start_as("replica-a", &config, &ns.name, &lease_args);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    while holder(&leases).await.as_deref() != Some("replica-a") {
        assert!(Instant::now() < deadline, "replica-a never led:\n{}", leader.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let standby = ControllerProcess::start_as("replica-b", &config, &ns.name, &lease_args);
    standby.wait_ready().await;
    let events = ["patch_applied", "patch_failed", "patch_unverified"];
    let ui = SocketAuth::Payload(support::READ_TOKEN);
    let on_standby = SocketIoClient::start("standby-ui", standby.http_port, "websocket", ui, &events, 2);
    let on_leader = SocketIoClient::start("leader-ui", leader.http_port, "websocket", ui, &events, 2);
    on_standby.next("connect", Duration::from_secs(20));
    on_leader.next("connect", Duration::from_secs(20));

    for name in ["first", "second"] {
        support::apply_plan(&client, &ns.name, &restart_plan(name)).await;
        let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
        support::wait_for(plans, name, Duration::from_secs(60), support::plan_finished()).await;
        // The next outcome each UI hears is this plan's: the previous one was not sent twice.
        for ui in [&on_standby, &on_leader] {
            let heard = ui.next_of(&events, Duration::from_secs(15));
            assert_eq!((heard["event"].as_str(), heard["data"]["id"].as_str()), (Some("patch_applied"), Some(name)));
        }
    }
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"), "the standby never led");
    assert!(!standby.logs().contains("action done"), "the standby acted:\n{}", standby.logs());

    // Its plan list is live too.
    let (code, body) = support::http_get_with_token(standby.http_port, "/api/antibody/plans", support::READ_TOKEN);
    assert_eq!(code, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("json");
    let second = listed["plans"].as_array().and_then(|p| p.iter().find(|p| p["id"] == "second")).cloned();
    assert_eq!(second.as_ref().map(|p| p["status"].clone()), Some(Value::from("Succeeded")), "{listed}");
}
