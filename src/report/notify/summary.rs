//! The plan summary every notifier sends: the original `patch_applied` payload (`id`,
//! `source_alert`, `actions` with `type`/`target`/`key`/`val`) plus outcome and timings. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::plan::PatchPlan;
use crate::report::{PlanTransition, TransitionKind};

/// Event name for a terminal transition, as the VAEL UI and webhooks know it.
/// Non-terminal transitions are not notified.
pub fn event_name(kind: TransitionKind) -> Option<&'static str> {
    match kind {
        TransitionKind::Applied => Some("patch_applied"),
        TransitionKind::Failed => Some("patch_failed"),
        TransitionKind::DryRun => Some("patch_dry_run"),
        TransitionKind::Started | TransitionKind::ActionSucceeded { .. } => None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// The PatchPlan's name.
    pub id: String,
    pub namespace: String,
    pub uid: String,
    /// The alert id this plan answers; null for plans applied by hand.
    #[serde(rename = "source_alert")]
    pub source_alert: Option<String>,
    pub actions: Vec<ActionSummary>,
    /// The plan's phase: `Succeeded` or `Failed`.
    pub status: String,
    /// Condition reason (`Applied`, `DryRun`, `NotAllowed`, `ProgressDeadlineExceeded`, …).
    pub reason: String,
    pub message: String,
    pub created_at: Option<String>,
    pub finished_at: Option<String>,
    /// From creation to finish.
    pub seconds: Option<f64>,
    /// `patch_applied`, `patch_failed`, `patch_dry_run`.
    pub transition: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSummary {
    /// antibody.yml spelling: `restart`, `edit_env`, `reload_flask`.
    #[serde(rename = "type")]
    pub type_: String,
    pub target: String,
    /// edit_env: the key set; null otherwise.
    pub key: Option<String>,
    /// edit_env: the value set; null otherwise.
    pub val: Option<String>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`: which step a failure stopped at.
    pub state: String,
}

fn rfc3339(time: Option<&Time>) -> Option<String> {
    time.map(|t| t.0.to_string())
}

/// The summary of `transition.plan` as just saved.
pub fn plan_summary(transition: &PlanTransition<'_>) -> PlanSummary {
    let plan: &PatchPlan = transition.plan;
    let status = plan.status.as_ref();
    let actions = plan
        .spec
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| ActionSummary {
            type_: a.action.config_name().to_string(),
            target: a.target.clone(),
            key: a.key.clone(),
            val: a.value.clone(),
            state: format!("{:?}", status.and_then(|s| s.actions.get(i)).map(|s| s.state).unwrap_or_default()),
        })
        .collect();
    let created = plan.metadata.creation_timestamp.as_ref();
    let finished = status.and_then(|s| s.finished_at.as_ref());
    let seconds = created.zip(finished).map(|(c, f)| (f.0.as_nanosecond() - c.0.as_nanosecond()).max(0) as f64 / 1e9);
    PlanSummary {
        id: plan.metadata.name.clone().unwrap_or_default(),
        namespace: plan.metadata.namespace.clone().unwrap_or_default(),
        uid: plan.metadata.uid.clone().unwrap_or_default(),
        source_alert: plan.spec.alert.as_ref().map(|a| a.id.clone()),
        actions,
        status: format!("{:?}", plan.phase()),
        reason: transition.reason.to_string(),
        message: transition.message.to_string(),
        created_at: rfc3339(created),
        finished_at: rfc3339(finished),
        seconds,
        transition: event_name(transition.kind).unwrap_or(transition.kind.name()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ActionType;
    use crate::plan::{ActionStatus, AlertSummary, PatchPlanSpec, PatchPlanStatus, Phase, PlanAction, StepState};

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
        let t = PlanTransition { plan: &plan, kind: TransitionKind::Applied, reason: "Applied", message: "applied 2" };
        let json = serde_json::to_value(plan_summary(&t)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "id": "alert-abc", "namespace": "vael", "uid": "u-1", "source_alert": "nexus-42",
                "actions": [
                    {"type": "restart", "target": "VAEL_Core", "key": null, "val": null, "state": "Succeeded"},
                    {"type": "edit_env", "target": "VAEL_Core", "key": "MODE", "val": "safe", "state": "Succeeded"},
                ],
                "status": "Succeeded", "reason": "Applied", "message": "applied 2",
                "createdAt": "2023-11-14T22:13:20Z", "finishedAt": "2023-11-14T22:13:22Z", "seconds": 2.0,
                "transition": "patch_applied",
            })
        );
    }

    #[test]
    fn events_exist_for_terminal_transitions_only() {
        let cases = [
            (TransitionKind::Applied, Some("patch_applied")),
            (TransitionKind::Failed, Some("patch_failed")),
            (TransitionKind::DryRun, Some("patch_dry_run")),
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
        let t = PlanTransition { plan: &plan, kind: TransitionKind::Failed, reason: "NotAllowed", message: "no" };
        let s = plan_summary(&t);
        assert_eq!(
            (s.status.as_str(), s.reason.as_str(), s.transition.as_str()),
            ("Failed", "NotAllowed", "patch_failed")
        );
        assert_eq!(s.actions.iter().map(|a| a.state.as_str()).collect::<Vec<_>>(), ["Failed", "Pending"]);
    }
}
