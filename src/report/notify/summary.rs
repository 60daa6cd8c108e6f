//! The plan summary every notifier sends: the original `patch_applied` payload (`id`,
//! `source_alert`, `actions` with `type`/`target`/`key`/`val`) plus outcome and timings. Pure.

use serde_json::Value;

use crate::report::{PlanTransition, TransitionKind};

/// Event name for a terminal transition, as the VAEL UI and webhooks know it.
/// Non-terminal transitions are not notified, except a plan awaiting approval.
pub fn event_name(kind: TransitionKind) -> Option<&'static str> {
    kind.notified().then(|| kind.name())
}

/// The shared plan summary (`report::summary::plan_summary`, the same one the Socket.IO
/// broadcast sends) plus the event name, with the transition's own reason and message.
pub fn with_transition(transition: &PlanTransition<'_>) -> Value {
    let mut data = crate::report::summary::plan_summary(transition.plan);
    if let Value::Object(map) = &mut data {
        let event = event_name(transition.kind).unwrap_or(transition.kind.name());
        map.insert("transition".into(), Value::String(event.into()));
        map.insert("reason".into(), Value::String(transition.reason.into()));
        map.insert("message".into(), Value::String(transition.message.into()));
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ActionType;
    use crate::plan::PatchPlan;
    use crate::plan::{ActionStatus, AlertSummary, PatchPlanSpec, PatchPlanStatus, Phase, PlanAction, StepState};
    use crate::reason::Reason;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn plan(phase: Phase, states: [StepState; 2]) -> PatchPlan {
        let actions =
            vec![PlanAction::new(ActionType::Restart, "VAEL_Core"), PlanAction::edit_env("VAEL_Core", "MODE", "safe")];
        let mut plan = PatchPlan::new(
            "alert-abc",
            PatchPlanSpec {
                alert: Some(AlertSummary { id: "nexus-42".into(), ..Default::default() }),
                actions,
                ..Default::default()
            },
        );
        plan.metadata.namespace = Some("vael".into());
        plan.metadata.uid = Some("u-1".into());
        plan.metadata.creation_timestamp = Some(at(1_700_000_000));
        plan.status = Some(PatchPlanStatus {
            phase,
            finished_at: Some(at(1_700_000_002)),
            actions: states.iter().map(|s| ActionStatus { state: *s, ..Default::default() }).collect(),
            ..Default::default()
        });
        plan
    }

    #[test]
    fn summary_keeps_the_original_patch_applied_fields() {
        let plan = plan(Phase::Succeeded, [StepState::Succeeded, StepState::Succeeded]);
        let t = PlanTransition {
            plan: &plan,
            kind: TransitionKind::Applied,
            reason: Reason::Applied,
            message: "applied 2",
        };
        let json = with_transition(&t);
        let keep = [
            "id",
            "namespace",
            "uid",
            "source_alert",
            "status",
            "reason",
            "message",
            "createdAt",
            "finishedAt",
            "seconds",
            "transition",
        ];
        let picked: serde_json::Map<String, Value> = keep.iter().map(|k| (k.to_string(), json[*k].clone())).collect();
        assert_eq!(
            Value::Object(picked),
            serde_json::json!({
                "id": "alert-abc", "namespace": "vael", "uid": "u-1", "source_alert": "nexus-42",
                "status": "Succeeded", "reason": "Applied", "message": "applied 2",
                "createdAt": "2023-11-14T22:13:20Z", "finishedAt": "2023-11-14T22:13:22Z", "seconds": 2.0,
                "transition": "patch_applied",
            })
        );
        let actions: Vec<Value> = json["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| serde_json::json!({"type": a["type"], "target": a["target"], "key": a["key"], "val": a["val"], "state": a["state"]}))
            .collect();
        assert_eq!(
            actions,
            [
                serde_json::json!({"type": "restart", "target": "VAEL_Core", "key": null, "val": null, "state": "Succeeded"}),
                serde_json::json!({"type": "edit_env", "target": "VAEL_Core", "key": "MODE", "val": "safe", "state": "Succeeded"}),
            ]
        );
    }

    #[test]
    fn events_exist_for_terminal_transitions_only() {
        let cases = [
            (TransitionKind::Applied, Some("patch_applied")),
            (TransitionKind::Failed, Some("patch_failed")),
            (TransitionKind::DryRun, Some("patch_dry_run")),
            (TransitionKind::Unverified, Some("patch_unverified")),
            (TransitionKind::Started, None),
            (TransitionKind::ActionSucceeded { index: 0 }, None),
        ];
        for (kind, want) in cases {
            assert_eq!(event_name(kind), want, "{kind:?}");
        }
    }

    #[test]
    fn failed_summary_shows_where_it_stopped() {
        let plan = plan(Phase::Failed, [StepState::Failed, StepState::Pending]);
        let t = PlanTransition { plan: &plan, kind: TransitionKind::Failed, reason: Reason::NotAllowed, message: "no" };
        let s = with_transition(&t);
        assert_eq!(
            (&s["status"], &s["reason"], &s["transition"]),
            (&Value::from("Failed"), &Value::from("NotAllowed"), &Value::from("patch_failed"))
        );
        let states: Vec<&Value> = s["actions"].as_array().expect("actions").iter().map(|a| &a["state"]).collect();
        assert_eq!(states, [&Value::from("Failed"), &Value::from("Pending")]);
    }
}
