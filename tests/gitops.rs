//! GitOps integration: the Argo CD health check (run in a real Lua 5.4) reads PatchPlan
//! conditions the way the controller writes them; the example plans are valid; the signed
//! example verifies against the published key and fails once edited.

use antibody::conditions::{Outcome, compute};
use antibody::plan::{PatchPlan, PatchPlanStatus, Phase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlua::{Lua, LuaSerdeExt};

fn health(plan: &PatchPlan) -> (String, String) {
    let lua = Lua::new();
    let obj = lua.to_value(&serde_json::to_value(plan).expect("json")).expect("lua value");
    lua.globals().set("obj", obj).expect("set obj");
    let script = include_str!("../deploy/gitops/argocd-health-patchplan.lua");
    let hs: mlua::Table = lua.load(script).eval().expect("health script runs");
    (hs.get("status").expect("status"), hs.get("message").expect("message"))
}

fn plan_with(outcome: Option<Outcome>) -> PatchPlan {
    let mut plan: PatchPlan =
        serde_yaml::from_str(include_str!("../examples/restart-vael-core.yaml")).expect("example");
    plan.metadata.generation = Some(1);
    if let Some(outcome) = outcome {
        let now = Time(jiff::Timestamp::now());
        plan.status = Some(PatchPlanStatus {
            phase: Phase::Running,
            observed_generation: Some(1),
            conditions: compute(&outcome, Some(1), &now, &[]),
            ..Default::default()
        });
    }
    plan
}

#[test]
fn argo_cd_health_follows_the_conditions() {
    let cases = [
        (None, "Progressing"),
        (Some(Outcome::in_progress(antibody::reason::Reason::RolloutInProgress, "1 of 2")), "Progressing"),
        (Some(Outcome::Applied { message: "ok".into() }), "Healthy"),
        (Some(Outcome::DryRun { message: "proved".into() }), "Healthy"),
        (Some(Outcome::failed(antibody::reason::Reason::NotAllowed, "no")), "Degraded"),
    ];
    for (outcome, want) in cases {
        let (status, message) = health(&plan_with(outcome.clone()));
        assert_eq!(status, want, "{outcome:?}: {message}");
    }
    let mut stale = plan_with(Some(Outcome::Applied { message: "ok".into() }));
    stale.metadata.generation = Some(2);
    assert_eq!(health(&stale).0, "Progressing", "an unobserved generation is not healthy yet");
}

#[test]
fn examples_are_valid_plans_and_the_signed_one_verifies() {
    let config = antibody::config::Config::from_yaml(include_str!("../antibody.yml")).expect("config");
    for text in [
        include_str!("../examples/restart-vael-core.yaml"),
        include_str!("../examples/edit-env.yaml"),
        include_str!("../examples/signed-plan.yaml"),
    ] {
        let plan: PatchPlan = serde_yaml::from_str(text).expect("example parses as a PatchPlan");
        let namespace = plan.metadata.namespace.clone().unwrap_or_else(|| "antibody".into());
        antibody::admission::admit(&config, &plan.spec, &namespace).expect("example is allowed by antibody.yml");
    }
    let public = include_str!("../examples/keys/ci.pub");
    let trusted = [("ci".to_string(), antibody::signing::parse_public_key(public).expect("key"))].into();
    let signed: PatchPlan = serde_yaml::from_str(include_str!("../examples/signed-plan.yaml")).expect("signed example");
    // The example's signature expired an hour after it was made (signatures carry an expiry):
    // check the rest, and that it is refused once expired.
    let verified = antibody::signing::verify_ignoring_expiry(&signed, &trusted).map(|v| v.key_name);
    assert_eq!(verified, Ok("ci".to_string()));
    let later = jiff::Timestamp::now().as_second() + 7200;
    assert!(antibody::signing::verify(&signed, &trusted, later, 3600).is_err(), "an expired signature is refused");
    let mut edited = signed.clone();
    edited.spec.actions[0].target = "Sentinel".into();
    assert!(antibody::signing::verify_ignoring_expiry(&edited, &trusted).is_err(), "an edit after signing is caught");
}
