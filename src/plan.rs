//! The `PatchPlan` custom resource: one remediation, its ordered actions and their progress.
//!
//! The spec is immutable (CEL `self == oldSelf`): a retry is a new plan. Status carries
//! everything needed to resume after a crash (restartedAt written, backup name, pods signalled)
//! and kstatus-compatible conditions: `Ready`, `PatchApplied`, `Reconciling`, `Stalled`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One remediation decided from an alert, a GitOps commit or a human.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "antibody.vael.io",
    version = "v1alpha1",
    kind = "PatchPlan",
    namespaced,
    status = "PatchPlanStatus",
    shortname = "pp",
    category = "antibody",
    doc = "A remediation: ordered, whitelisted actions on logical targets, driven to PatchApplied.",
    printcolumn = r#"{"name":"Severity","type":"string","jsonPath":".spec.alert.severity"}"#,
    printcolumn = r#"{"name":"Actions","type":"string","jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Waits For","type":"string","jsonPath":".status.waitingFor"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: create a new PatchPlan to retry"))]
#[serde(rename_all = "camelCase")]
pub struct PatchPlanSpec {
    /// The alert this plan answers, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertSummary>,
    /// Actions run strictly in order; the next starts only when the previous succeeded.
    #[schemars(length(min = 1, max = 16))]
    pub actions: Vec<PlanAction>,
    /// Send every write with `dryRun=All`: the plan proves itself and changes nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// If a restart after an editEnv fails, restore the backup, restart again, end `RolledBack`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback_on_failure: bool,
}

/// Where a plan came from; copied from the alert so the plan is readable on its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertSummary {
    pub id: String,
    pub source: String,
    pub category: String,
    pub severity: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Stable identity of the alert (see `alert::ThreatAlert::fingerprint`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
}

/// The kind of a step. Only whitelisted kinds on whitelisted targets ever run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ActionType {
    /// `kubectl rollout restart` of the target's Deployment, waited until complete.
    Restart,
    /// Set one key of the target's ConfigMap, backing the old data up first.
    EditEnv,
    /// SIGHUP (or the target's reload command) to every ready pod via `pods/exec`.
    ReloadFlask,
    /// Restore the target's ConfigMap from a named backup (`backup`).
    Rollback,
    /// Evict one ready pod (respects PodDisruptionBudgets); done when the Deployment is whole again.
    DeletePod,
}

impl ActionType {
    /// The name antibody.yml and patch hints use (`restart`, `edit_env`, `reload_flask`).
    pub fn config_name(self) -> &'static str {
        match self {
            ActionType::Restart => "restart",
            ActionType::EditEnv => "edit_env",
            ActionType::ReloadFlask => "reload_flask",
            ActionType::Rollback => "rollback",
            ActionType::DeletePod => "delete_pod",
        }
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        match name {
            "restart" => Some(ActionType::Restart),
            "edit_env" | "editEnv" => Some(ActionType::EditEnv),
            "reload_flask" | "reloadFlask" => Some(ActionType::ReloadFlask),
            "rollback" => Some(ActionType::Rollback),
            "delete_pod" | "deletePod" => Some(ActionType::DeletePod),
            _ => None,
        }
    }
}

impl std::fmt::Display for ActionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActionType::Restart => "restart",
            ActionType::EditEnv => "editEnv",
            ActionType::ReloadFlask => "reloadFlask",
            ActionType::Rollback => "rollback",
            ActionType::DeletePod => "deletePod",
        })
    }
}

/// One step of a plan: an action on a logical target (editEnv also takes key and value).
// Flat rather than an enum so the CRD schema stays structural.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.type != 'editEnv' || (has(self.key) && has(self.value))").message("editEnv needs key and value"))]
#[serde(rename_all = "camelCase")]
pub struct PlanAction {
    #[serde(rename = "type")]
    pub action: ActionType,
    /// Logical target name from antibody.yml (e.g. `VAEL_Core`).
    #[schemars(length(min = 1, max = 63))]
    pub target: String,
    /// editEnv: the ConfigMap key to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// editEnv: the new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// rollback: the backup ConfigMap to restore (`antibody backups TARGET` lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

impl PlanAction {
    pub fn new(action: ActionType, target: impl Into<String>) -> Self {
        Self { action, target: target.into(), key: None, value: None, backup: None }
    }

    pub fn edit_env(target: impl Into<String>, key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            action: ActionType::EditEnv,
            target: target.into(),
            key: Some(key.into()),
            value: Some(value.into()),
            backup: None,
        }
    }

    /// `restart:VAEL_Core`, `editEnv:VAEL_Core:LOG_LEVEL` — for summaries and Events.
    pub fn describe(&self) -> String {
        match &self.key {
            Some(key) => format!("{}:{}:{}", self.action, self.target, key),
            None => format!("{}:{}", self.action, self.target),
        }
    }
}

/// Lifecycle of a plan. `Succeeded` and `Failed` are terminal and one-way.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Progress of one action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum StepState {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchPlanStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// `restart:VAEL_Core, reloadFlask:VAEL_UI` — for the printer column.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// One entry per spec action, same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// While the plan has not started: what it waits for, and until when (`approval until …`,
    /// `window opens …`, `freeze ends …`). For the printer column. Always serialised: the
    /// status is written as a merge patch, and `null` is what clears it once the plan starts.
    #[serde(default)]
    pub waiting_for: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// What one action did, and what a restarted controller needs to resume it without repeating it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    #[serde(rename = "type")]
    pub action: Option<ActionType>,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub state: StepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// restart: the `restartedAt` value, chosen and stored before the patch is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
    /// restart: `metadata.generation` the Deployment reported after our patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_generation: Option<i64>,
    /// editEnv: the ConfigMap holding the data as it was before the edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// editEnv/rollback: sha256 of the backed-up data, recorded before the backup is written;
    /// a restore refuses a backup whose data does not match (`BackupUntrusted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_digest: Option<String>,
    /// reloadFlask: UIDs of pods the command was sent to (recorded before sending: at most once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signalled_pods: Vec<String>,
    /// dryRun: what the action would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The action's own result, recorded once its side effect is done: while its effect is being
    /// verified the action is not run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// When verification of the effect started (the `verify` probe's timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_started_at: Option<Time>,
    /// What Antibody observed of the effect in the application (rollout complete, the
    /// companion's acknowledgement, the probe's output); absent when it could not be observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// restart: what the rollout will do to live connections (strategy, surge, probes, drain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preflight: Vec<String>,
    /// rollbackOnFailure: the `restartedAt` of the restart that followed restoring the backup,
    /// stored before that patch so the compensation is never repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_restarted_at: Option<String>,
}

impl PatchPlan {
    pub fn phase(&self) -> Phase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
    }

    /// `restart:VAEL_Core, editEnv:VAEL_Core:LOG_LEVEL`
    pub fn summary(&self) -> String {
        self.spec.actions.iter().map(PlanAction::describe).collect::<Vec<_>>().join(", ")
    }
}

/// The CRD as YAML, exactly what `crds/patchplan.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let yaml = serde_yaml::to_string(&PatchPlan::crd())?;
    Ok(format!("# Generated by `antibody crd` from src/plan.rs. Do not edit.\n{yaml}"))
}
