//! One view of a plan ([`PlanView`]) for everything that tells about it: audit records, the
//! Socket.IO `patch_applied` / `patch_failed` broadcast, the `GET /api/antibody/plans` list,
//! the Redis and webhook notifiers. Pure, so they all say the same thing about a plan.
//!
//! The original `patch_applied` fields are kept: `id` (plan name), `source_alert` (alert id) and
//! `actions` (`{type, target, key, val}`); the rest says where the plan stands and who asked.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::FIELD_MANAGER;
use crate::conditions::{PATCH_APPLIED, READY};
use crate::plan::{ActionType, AlertSummary, PatchPlan, Phase, StepState};

use crate::names::REQUESTED_BY_ANNOTATION;

/// Who asked for a plan, and how we know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// `token` (REST token name), `alert` (the alert's source), `fieldManager` (the client that
    /// wrote the spec: `kubectl`, a GitOps tool…), `feed` (an alert decision), or `unknown`.
    pub via: String,
    pub name: String,
    /// With `unknown`: what the plan claims but Antibody cannot prove (`token ci-bot`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
}

impl Requester {
    fn new(via: &str, name: impl Into<String>) -> Self {
        Self { via: via.into(), name: name.into(), claimed: None }
    }

    fn unknown(claimed: Option<String>) -> Self {
        Self { via: "unknown".into(), name: String::new(), claimed }
    }
}

/// Antibody's own public key (from `safety.signing_key_file`): plans it signed are the only
/// ones whose token or alert attribution it can prove.
static OWN_KEY: std::sync::RwLock<Option<ed25519_dalek::VerifyingKey>> = std::sync::RwLock::new(None);

/// Set at start from the configured signing key (`None`: nothing can be proven).
pub fn trust_own_key(key: Option<ed25519_dalek::VerifyingKey>) {
    *OWN_KEY.write().unwrap_or_else(|p| p.into_inner()) = key;
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
/// A plan whose spec Antibody claims to have written is attributed to the token or alert it
/// names only when Antibody's own signature covers it; otherwise the requester is `unknown`,
/// with what it claims.
pub fn requester(plan: &PatchPlan) -> Requester {
    let own = *OWN_KEY.read().unwrap_or_else(|p| p.into_inner());
    requester_with(plan, own.as_ref())
}

pub fn requester_with(plan: &PatchPlan, own_key: Option<&ed25519_dalek::VerifyingKey>) -> Requester {
    let managed = plan.metadata.managed_fields.as_deref().unwrap_or_default();
    // Status writes are on the subresource; the spec's writer is on the main resource.
    let spec_writer = managed
        .iter()
        .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
        .find(|m| owns(m, &["f:spec"]))
        .and_then(|m| m.manager.clone());
    if let Some(writer) = spec_writer.as_ref().filter(|w| *w != FIELD_MANAGER) {
        return Requester::new("fieldManager", writer.clone());
    }
    let token = plan.metadata.annotations.as_ref().and_then(|a| a.get(REQUESTED_BY_ANNOTATION));
    let proven = own_key.is_some_and(|key| crate::signing::signed_by(plan, key));
    match (token, &plan.spec.alert) {
        (Some(token), _) if proven => Requester::new("token", token.clone()),
        (None, Some(alert)) if proven => Requester::new("alert", alert.source.clone()),
        (Some(token), _) => Requester::unknown(Some(format!("token {token} (not signed by Antibody)"))),
        (None, Some(alert)) => {
            Requester::unknown(Some(format!("alert from {} (not signed by Antibody)", alert.source)))
        }
        (None, None) if proven => Requester::new("fieldManager", FIELD_MANAGER),
        (None, None) => Requester::unknown(spec_writer.map(|w| format!("fieldManager {w} (anyone can claim it)"))),
    }
}

fn time_value(time: Option<&Time>) -> Value {
    time.and_then(|t| serde_json::to_value(t).ok()).unwrap_or(Value::Null)
}

fn seconds_between(start: Option<Timestamp>, end: Option<Timestamp>) -> Value {
    match (start, end) {
        (Some(start), Some(end)) => json!(crate::clock::elapsed(start, end).as_secs_f64()),
        _ => Value::Null,
    }
}

/// One action of a [`PlanView`]: the spec's action and how far it got. Its serde form is the
/// audit record's (`type` in the CRD's spelling); the summary renders it the original way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionView {
    #[serde(rename = "type")]
    pub action: ActionType,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StepState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The one view of a plan as it now stands: what audit records, Socket.IO broadcasts,
/// notifiers and `GET /api/antibody/plans` say about it (each renders it in its own wire
/// format). Pure.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanView {
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub alert: Option<AlertSummary>,
    pub actions: Vec<ActionView>,
    pub dry_run: bool,
    pub phase: Phase,
    /// `PatchApplied=True`: the effect was observed.
    pub patch_applied: bool,
    /// The `Ready` condition's reason and message.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub requester: Requester,
    pub created: Option<Time>,
    pub started: Option<Time>,
    pub finished: Option<Time>,
}

impl PlanView {
    pub fn of(plan: &PatchPlan) -> Self {
        let status = plan.status.as_ref();
        let ready = plan.condition(READY);
        let actions = plan
            .spec
            .actions
            .iter()
            .enumerate()
            .map(|(index, action)| {
                let progress = status.and_then(|s| s.actions.get(index));
                ActionView {
                    action: action.action,
                    target: action.target.clone(),
                    key: action.key.clone(),
                    value: action.value.clone(),
                    state: progress.map(|p| p.state),
                    message: progress.map(|p| p.message.clone()).filter(|m| !m.is_empty()),
                }
            })
            .collect();
        Self {
            namespace: plan.metadata.namespace.clone(),
            name: plan.metadata.name.clone().unwrap_or_default(),
            uid: plan.metadata.uid.clone(),
            alert: plan.spec.alert.clone(),
            actions,
            dry_run: plan.spec.dry_run,
            phase: plan.phase(),
            patch_applied: plan.condition(PATCH_APPLIED).is_some_and(|c| c.status == "True"),
            reason: ready.map(|c| c.reason.clone()),
            message: ready.map(|c| c.message.clone()),
            requester: requester(plan),
            created: plan.metadata.creation_timestamp.clone(),
            started: status.and_then(|s| s.started_at.clone()),
            finished: status.and_then(|s| s.finished_at.clone()),
        }
    }

    /// The summary JSON (the original `patch_applied` fields first). `seconds` runs from
    /// `createdAt` to `finishedAt`; the API server keeps `creationTimestamp` to the second.
    pub fn summary(&self) -> Value {
        let actions: Vec<Value> = self
            .actions
            .iter()
            .map(|action| {
                json!({
                    // antibody.yml spelling (`edit_env`), as the original patch_applied carried it.
                    "type": action.action.config_name(),
                    "target": action.target,
                    "key": action.key,
                    "val": action.value,
                    "state": action.state,
                    "message": action.message,
                })
            })
            .collect();
        json!({
            "id": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "source_alert": self.alert.as_ref().map(|a| a.id.as_str()),
            "alert": self.alert,
            "actions": actions,
            "dry_run": self.dry_run,
            "status": self.phase,
            "patch_applied": self.patch_applied,
            "reason": self.reason,
            "message": self.message,
            "requester": self.requester,
            "createdAt": time_value(self.created.as_ref()),
            "startedAt": time_value(self.started.as_ref()),
            "finishedAt": time_value(self.finished.as_ref()),
            "seconds": seconds_between(self.created.as_ref().map(|t| t.0), self.finished.as_ref().map(|t| t.0)),
        })
    }
}

/// The summary of a plan as it now stands (pure: the plan in, JSON out): [`PlanView::summary`].
pub fn plan_summary(plan: &PatchPlan) -> Value {
    PlanView::of(plan).summary()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{self, Outcome};
    use crate::plan::{
        ActionStatus, ActionType, AlertSummary, PatchPlanSpec, PatchPlanStatus, Phase, PlanAction, StepState,
    };
    use crate::reason::Reason;
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
        let failed = finished(plan(None, vec![]), Outcome::failed(Reason::NotAllowed, "restart:X is not whitelisted"));
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
        let (private, public) = crate::signing::generate().expect("keygen");
        let key = crate::signing::parse_private_key(&private).expect("key");
        let own = crate::signing::parse_public_key(&public).expect("key");
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
        let signed = |mut p: PatchPlan| {
            crate::signing::sign(&mut p, "antibody", &key, 60).expect("sign");
            p
        };
        let unknown = |claimed: &str| Requester::unknown(Some(claimed.to_string()));
        let cases: Vec<(&str, PatchPlan, Requester)> = vec![
            (
                "kubectl wrote the spec",
                plan(Some(alert()), vec![manager("kubectl", None, spec.clone())]),
                Requester::new("fieldManager", "kubectl"),
            ),
            (
                "status writers are not requesters",
                plan(None, vec![manager("antibody", Some("status"), status), manager("argocd", None, spec.clone())]),
                Requester::new("fieldManager", "argocd"),
            ),
            (
                "Antibody from an alert, signed",
                signed(plan(Some(alert()), vec![manager("antibody", None, spec.clone())])),
                Requester::new("alert", "NEXUS"),
            ),
            (
                "Antibody for a REST token, signed",
                signed(with_token(plan(None, vec![manager("antibody", None, antibody_spec_and_token.clone())]))),
                Requester::new("token", "ci-bot"),
            ),
            (
                "--field-manager=antibody claiming a token, unsigned",
                with_token(plan(None, vec![manager("antibody", None, antibody_spec_and_token)])),
                unknown("token ci-bot (not signed by Antibody)"),
            ),
            (
                "a token annotation added after Antibody signed breaks the proof",
                with_token(signed(plan(
                    Some(alert()),
                    vec![manager("antibody", None, spec.clone()), manager("mallory", None, token_annotation)],
                ))),
                unknown("token ci-bot (not signed by Antibody)"),
            ),
            (
                "an unsigned plan claiming an alert",
                plan(Some(alert()), vec![manager("antibody", None, spec.clone())]),
                unknown("alert from NEXUS (not signed by Antibody)"),
            ),
            (
                "a kubectl user cannot claim a token",
                with_token(plan(None, vec![manager("kubectl", None, spec.clone())])),
                Requester::new("fieldManager", "kubectl"),
            ),
            (
                "Antibody, no alert, unsigned",
                plan(None, vec![manager("antibody", None, spec)]),
                unknown("fieldManager antibody (anyone can claim it)"),
            ),
            ("no managedFields", plan(None, vec![]), Requester::unknown(None)),
        ];
        for (name, mut plan, want) in cases {
            assert_eq!(requester_with(&plan, Some(&own)), want, "{name}");
            trim_managed_fields(&mut plan);
            assert_eq!(requester_with(&plan, Some(&own)), want, "{name}, after trimming for the cache");
        }
        let proven = signed(plan(Some(alert()), vec![]));
        assert_eq!(requester_with(&proven, None), unknown("alert from NEXUS (not signed by Antibody)"), "no key");
    }
}
