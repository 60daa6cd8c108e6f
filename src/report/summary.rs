//! The plan summary every broadcast carries: Socket.IO `patch_applied` / `patch_failed`, the
//! `GET /api/antibody/plans` list, the Redis and webhook notifiers. One pure function, so they
//! all say the same thing about a plan.
//!
//! The original `patch_applied` fields are kept: `id` (plan name), `source_alert` (alert id) and
//! `actions` (`{type, target, key, val}`); the rest says where the plan stands and who asked.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::FIELD_MANAGER;
use crate::conditions::{PATCH_APPLIED, READY};
use crate::plan::PatchPlan;

/// Set by Antibody on plans it creates for a REST caller: the name of the token that asked.
/// Trusted only when Antibody's own field manager owns it (anyone can write an annotation).
pub const REQUESTED_BY_ANNOTATION: &str = "antibody.vael.io/requested-by";

/// Who asked for a plan, and how we know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// `token` (REST token name), `alert` (the alert's source), `fieldManager` (the client that
    /// wrote the spec: `kubectl`, a GitOps tool…), `feed` (an alert decision), or `unknown`.
    pub via: String,
    pub name: String,
}

impl Requester {
    fn new(via: &str, name: impl Into<String>) -> Self {
        Self { via: via.into(), name: name.into() }
    }
}

/// Does this managedFields entry own the field at `path` (`["f:spec"]`, …)?
fn owns(entry: &ManagedFieldsEntry, path: &[&str]) -> bool {
    let Some(fields) = entry.fields_v1.as_ref() else {
        return false;
    };
    let mut node = &fields.0;
    for key in path {
        match node.get(key) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// Shrink `plan`'s managedFields to what [`requester`] reads (who owns `f:spec` and our
/// requested-by annotation). The controller's cache keeps thousands of plans; the full field
/// sets were most of each object's size.
pub fn trim_managed_fields(plan: &mut PatchPlan) {
    let requested_by = format!("f:{REQUESTED_BY_ANNOTATION}");
    let Some(entries) = plan.metadata.managed_fields.as_mut() else { return };
    for entry in entries.iter_mut() {
        let mut kept = serde_json::Map::new();
        if owns(entry, &["f:spec"]) {
            kept.insert("f:spec".into(), serde_json::json!({}));
        }
        if owns(entry, &["f:metadata", "f:annotations", &requested_by]) {
            kept.insert("f:metadata".into(), serde_json::json!({"f:annotations": {requested_by.as_str(): {}}}));
        }
        entry.fields_v1 = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(kept.into()));
    }
}

/// Who asked for `plan`. Kubernetes records the client (field manager) that wrote the spec,
/// not the user: for a kubectl-applied plan this is `kubectl` (or `kubectl-client-side-apply`).
pub fn requester(plan: &PatchPlan) -> Requester {
    let managed = plan.metadata.managed_fields.as_deref().unwrap_or_default();
    // Status writes are on the subresource; the spec's writer is on the main resource.
    let spec_writer = managed
        .iter()
        .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
        .find(|m| owns(m, &["f:spec"]))
        .and_then(|m| m.manager.clone());
    let token = plan.metadata.annotations.as_ref().and_then(|a| a.get(REQUESTED_BY_ANNOTATION)).filter(|_| {
        managed.iter().any(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER)
                && owns(m, &["f:metadata", "f:annotations", &format!("f:{REQUESTED_BY_ANNOTATION}")])
        })
    });
    match (spec_writer, token, &plan.spec.alert) {
        (Some(writer), _, _) if writer != FIELD_MANAGER => Requester::new("fieldManager", writer),
        (_, Some(token), _) => Requester::new("token", token.clone()),
        (_, None, Some(alert)) => Requester::new("alert", alert.source.clone()),
        (Some(writer), None, None) => Requester::new("fieldManager", writer),
        (None, None, None) => Requester::new("unknown", ""),
    }
}

fn time_value(time: Option<&Time>) -> Value {
    time.and_then(|t| serde_json::to_value(t).ok()).unwrap_or(Value::Null)
}

fn seconds_between(start: Option<Timestamp>, end: Option<Timestamp>) -> Value {
    match (start, end) {
        (Some(start), Some(end)) => {
            let nanos = (end.as_nanosecond() - start.as_nanosecond()).max(0);
            json!(nanos as f64 / 1e9)
        }
        _ => Value::Null,
    }
}

/// The summary of a plan as it now stands (pure: the plan in, JSON out). `seconds` runs from
/// `createdAt` to `finishedAt`; the API server keeps `creationTimestamp` to the second.
pub fn plan_summary(plan: &PatchPlan) -> Value {
    let status = plan.status.as_ref();
    let ready = plan.condition(READY);
    let applied = plan.condition(PATCH_APPLIED).is_some_and(|c| c.status == "True");
    let actions: Vec<Value> = plan
        .spec
        .actions
        .iter()
        .enumerate()
        .map(|(index, action)| {
            let progress = status.and_then(|s| s.actions.get(index));
            json!({
                // antibody.yml spelling (`edit_env`), as the original patch_applied carried it.
                "type": action.action.config_name(),
                "target": action.target,
                "key": action.key,
                "val": action.value,
                "state": progress.map(|p| p.state),
                "message": progress.map(|p| p.message.as_str()).filter(|m| !m.is_empty()),
            })
        })
        .collect();
    let created = plan.metadata.creation_timestamp.as_ref();
    let finished = status.and_then(|s| s.finished_at.as_ref());
    json!({
        "id": plan.metadata.name,
        "namespace": plan.metadata.namespace,
        "uid": plan.metadata.uid,
        "source_alert": plan.spec.alert.as_ref().map(|a| a.id.as_str()),
        "alert": plan.spec.alert,
        "actions": actions,
        "dry_run": plan.spec.dry_run,
        "status": plan.phase(),
        "patch_applied": applied,
        "reason": ready.map(|c| c.reason.as_str()),
        "message": ready.map(|c| c.message.as_str()),
        "requester": requester(plan),
        "createdAt": time_value(created),
        "startedAt": time_value(status.and_then(|s| s.started_at.as_ref())),
        "finishedAt": time_value(finished),
        "seconds": seconds_between(created.map(|t| t.0), finished.map(|t| t.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{self, Outcome};
    use crate::plan::{
        ActionStatus, ActionType, AlertSummary, PatchPlanSpec, PatchPlanStatus, Phase, PlanAction, StepState,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn alert() -> AlertSummary {
        AlertSummary {
            id: "hb1".into(),
            source: "NEXUS".into(),
            category: "heartbeat".into(),
            severity: "high".into(),
            ..Default::default()
        }
    }

    fn manager(name: &str, subresource: Option<&str>, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(name.into()),
            operation: Some("Apply".into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn plan(alert: Option<AlertSummary>, managers: Vec<ManagedFieldsEntry>) -> PatchPlan {
        let mut plan = PatchPlan::new(
            "heartbeat-ab12",
            PatchPlanSpec {
                alert,
                actions: vec![
                    PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug"),
                    PlanAction::new(ActionType::Restart, "VAEL_Core"),
                ],
                ..Default::default()
            },
        );
        plan.metadata.namespace = Some("vael".into());
        plan.metadata.uid = Some("uid-1".into());
        plan.metadata.creation_timestamp = Some(at(100));
        plan.metadata.managed_fields = Some(managers);
        plan
    }

    fn finished(mut plan: PatchPlan, outcome: Outcome) -> PatchPlan {
        let phase = if matches!(outcome, Outcome::Failed { .. }) { Phase::Failed } else { Phase::Succeeded };
        let state = if phase == Phase::Failed { StepState::Failed } else { StepState::Succeeded };
        plan.status = Some(PatchPlanStatus {
            phase,
            started_at: Some(at(101)),
            finished_at: Some(at(103)),
            actions: plan
                .spec
                .actions
                .iter()
                .map(|a| ActionStatus {
                    action: Some(a.action),
                    target: a.target.clone(),
                    state,
                    message: "done".into(),
                    ..Default::default()
                })
                .collect(),
            conditions: conditions::compute(&outcome, Some(1), &at(103), &[]),
            ..Default::default()
        });
        plan
    }

    #[test]
    fn applied_plan_keeps_the_original_fields() {
        let kubectl = manager("kubectl", None, json!({"f:spec": {"f:actions": {}}}));
        let plan = finished(plan(Some(alert()), vec![kubectl]), Outcome::Applied { message: "applied 2".into() });
        let summary = plan_summary(&plan);
        assert_eq!(summary["id"], "heartbeat-ab12");
        assert_eq!(summary["source_alert"], "hb1");
        assert_eq!(summary["alert"]["source"], "NEXUS");
        assert_eq!(
            summary["actions"],
            json!([
                {"type": "edit_env", "target": "VAEL_Core", "key": "LOG_LEVEL", "val": "debug",
                 "state": "Succeeded", "message": "done"},
                {"type": "restart", "target": "VAEL_Core", "key": null, "val": null,
                 "state": "Succeeded", "message": "done"},
            ])
        );
        assert_eq!(summary["status"], "Succeeded");
        assert_eq!(summary["patch_applied"], true);
        assert_eq!(summary["reason"], "Applied");
        assert_eq!(summary["message"], "applied 2");
        assert_eq!(summary["namespace"], "vael");
        assert_eq!(summary["uid"], "uid-1");
        assert_eq!(summary["createdAt"], "1970-01-01T00:01:40Z");
        assert_eq!(summary["startedAt"], "1970-01-01T00:01:41Z");
        assert_eq!(summary["finishedAt"], "1970-01-01T00:01:43Z");
        assert_eq!(summary["seconds"], 3.0);
        assert_eq!(summary["requester"], json!({"via": "fieldManager", "name": "kubectl"}));
    }

    #[test]
    fn failed_and_unfinished_plans() {
        let failed = finished(plan(None, vec![]), Outcome::failed("NotAllowed", "restart:X is not whitelisted"));
        let summary = plan_summary(&failed);
        assert_eq!(summary["status"], "Failed");
        assert_eq!(summary["patch_applied"], false);
        assert_eq!(summary["reason"], "NotAllowed");
        assert_eq!(summary["source_alert"], Value::Null);
        assert_eq!(summary["actions"][0]["state"], "Failed");

        let fresh = plan(None, vec![]);
        let summary = plan_summary(&fresh);
        assert_eq!(summary["status"], "Pending");
        assert_eq!(summary["reason"], Value::Null);
        assert_eq!(summary["finishedAt"], Value::Null);
        assert_eq!(summary["seconds"], Value::Null);
        assert_eq!(summary["actions"][0]["state"], Value::Null);
    }

    #[test]
    fn requester_table() {
        let spec = json!({"f:spec": {}});
        let status = json!({"f:status": {}});
        let token_annotation = json!({"f:metadata": {"f:annotations": {"f:antibody.vael.io/requested-by": {}}}});
        let antibody_spec_and_token = json!({
            "f:spec": {},
            "f:metadata": {"f:annotations": {"f:antibody.vael.io/requested-by": {}}}
        });
        let with_token = |mut p: PatchPlan| {
            p.metadata.annotations = Some([(REQUESTED_BY_ANNOTATION.to_string(), "ci-bot".to_string())].into());
            p
        };
        let cases: Vec<(&str, PatchPlan, (&str, &str))> = vec![
            (
                "kubectl wrote the spec",
                plan(Some(alert()), vec![manager("kubectl", None, spec.clone())]),
                ("fieldManager", "kubectl"),
            ),
            (
                "status writers are not requesters",
                plan(None, vec![manager("antibody", Some("status"), status), manager("argocd", None, spec.clone())]),
                ("fieldManager", "argocd"),
            ),
            (
                "Antibody from an alert",
                plan(Some(alert()), vec![manager("antibody", None, spec.clone())]),
                ("alert", "NEXUS"),
            ),
            (
                "Antibody for a REST token",
                with_token(plan(None, vec![manager("antibody", None, antibody_spec_and_token)])),
                ("token", "ci-bot"),
            ),
            (
                "a token annotation written by someone else is not trusted",
                with_token(plan(
                    Some(alert()),
                    vec![manager("antibody", None, spec.clone()), manager("mallory", None, token_annotation)],
                )),
                ("alert", "NEXUS"),
            ),
            (
                "a kubectl user cannot claim a token",
                with_token(plan(None, vec![manager("kubectl", None, spec.clone())])),
                ("fieldManager", "kubectl"),
            ),
            ("Antibody, no alert", plan(None, vec![manager("antibody", None, spec)]), ("fieldManager", "antibody")),
            ("no managedFields", plan(None, vec![]), ("unknown", "")),
        ];
        for (name, mut plan, (via, who)) in cases {
            assert_eq!(requester(&plan), Requester::new(via, who), "{name}");
            trim_managed_fields(&mut plan);
            assert_eq!(requester(&plan), Requester::new(via, who), "{name}, after trimming for the cache");
        }
    }
}
