//! Every name Antibody writes into the cluster, in one place: the field manager, labels,
//! annotations and the ConfigMaps it keeps its state in. Changing one of these changes what
//! existing clusters hold; each is read back by a later Antibody (or a human), so they stay.

/// Field manager of every write Antibody sends (plan creates, patches, server-side applies).
pub const FIELD_MANAGER: &str = "antibody";
pub const API_GROUP: &str = "antibody.vael.io";

// --- Labels -----------------------------------------------------------------------------------
/// `app.kubernetes.io/managed-by: antibody` on every object Antibody creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// On Deployments Antibody restarted: lets the controller watch only those.
pub const RESTARTED_LABEL: &str = "antibody.vael.io/restarted";
/// On a ConfigMap backup: the ConfigMap it is a backup of.
pub const BACKUP_OF_LABEL: &str = "antibody.vael.io/backup-of";
/// On a ConfigMap backup: the plan that made it.
pub const PLAN_LABEL: &str = "antibody.vael.io/plan";

// --- Annotations on plans -----------------------------------------------------------------------
/// The antibody.yml rule that made the plan.
pub const RULE_ANNOTATION: &str = "antibody.vael.io/rule";
/// Who asked for the plan (the REST token name or the alert's source); signed with it.
/// Trusted only when Antibody's own signature covers it: anyone can write an annotation, and
/// any client can call itself `--field-manager=antibody`.
pub const REQUESTED_BY_ANNOTATION: &str = "antibody.vael.io/requested-by";
/// The feed the alert came in on (`grpc`, `ws`, `rest`, `alertmanager`, `manual`).
pub const FEED_ANNOTATION: &str = "antibody.vael.io/feed";
/// A manual plan's `source_alert` (the original plan JSON's field).
pub const SOURCE_ALERT_ANNOTATION: &str = "antibody.vael.io/source-alert";
/// Ed25519 signature of the plan (`antibody sign`).
pub const SIGNATURE_ANNOTATION: &str = "antibody.vael.io/signature";
/// A human's approval decision (JSON).
pub const APPROVAL_ANNOTATION: &str = "antibody.vael.io/approval";
/// On a plan created by an escalation ladder: `<rule>/<target> step <n>`.
pub const ESCALATION_ANNOTATION: &str = "antibody.vael.io/escalation";
/// On a plan created by an escalation ladder: the plan of the step before it.
pub const ESCALATED_FROM_ANNOTATION: &str = "antibody.vael.io/escalated-from";

// --- Annotations on what plans touch ------------------------------------------------------------
/// On a Deployment a plan restarted, and on a ConfigMap backup: `<namespace>/<plan name>`.
/// The controller maps Deployment watch events back to the plan through it.
pub const PLAN_ANNOTATION: &str = "antibody.vael.io/plan";
/// On a ConfigMap backup: the uid of the plan that made it.
pub const PLAN_UID_ANNOTATION: &str = "antibody.vael.io/plan-uid";
/// On a ConfigMap backup: the key the plan edited.
pub const KEY_ANNOTATION: &str = "antibody.vael.io/key";
/// On a ConfigMap backup: the resourceVersion of the ConfigMap it copied.
pub const BACKUP_RESOURCE_VERSION_ANNOTATION: &str = "antibody.vael.io/resource-version";
/// The annotation `kubectl rollout restart` writes on the pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

// --- Annotations on namespaces ----------------------------------------------------------------
/// `true` pauses new plans in (or acting on) the namespace.
pub const PAUSE_ANNOTATION: &str = "antibody.vael.io/paused";
/// A freeze of plans acting in the namespace (JSON).
pub const FREEZE_ANNOTATION: &str = "antibody.vael.io/freeze";

// --- State ConfigMaps (in the plan namespace) -------------------------------------------------
/// Why a state ConfigMap exists, for whoever finds it.
pub const PURPOSE_ANNOTATION: &str = "antibody.vael.io/purpose";
/// Alert claims (`ingest.cooldown_seconds`).
pub const COOLDOWN_CONFIG_MAP: &str = "antibody-cooldown";
pub const LADDER_CONFIG_MAP: &str = "antibody-escalation";
pub const BREAKER_CONFIG_MAP: &str = "antibody-breakers";
pub const AUDIT_ANCHOR_CONFIG_MAP: &str = "antibody-audit-anchor";
/// Executed signatures, sharded: `antibody-signatures-<hex digit>`.
pub const SIGNATURES_CONFIG_MAP_PREFIX: &str = "antibody-signatures-";

/// The labels of every object Antibody creates.
pub fn managed_labels() -> std::collections::BTreeMap<String, String> {
    [(MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string())].into()
}
