//! One audit record: its model, the records of plan transitions and alert decisions, and the
//! chain's primitives (SHA-256, HMAC, the fields every record carries). Pure.

use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{GENESIS, MIN_KEY_BYTES};
use crate::plan::Phase;
use crate::report::summary::{PlanView, Requester};
use crate::report::{AlertOutcome, AlertRecord, PlanTransition, TransitionKind};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// HMAC-SHA256 (hex) of `bytes` under `key`.
pub fn mac_hex(key: &[u8], bytes: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(bytes);
    hex::encode(mac.finalize().into_bytes())
}

/// The `audit.key_file` key: its bytes without trailing whitespace, at least [`MIN_KEY_BYTES`].
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let mut key = std::fs::read(path).map_err(|e| format!("audit key {}: {e}", path.display()))?;
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "audit key {}: {} byte(s); at least {MIN_KEY_BYTES} are needed (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

pub fn genesis_hash() -> String {
    sha256_hex(GENESIS.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A PatchPlan transition.
    Plan,
    /// An alert decision (plan created, deduplicated, cooled down, ignored, refused).
    Alert,
    /// The chain could not continue cleanly (torn tail, failed write): says what and where.
    ChainBreak,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// An action in a plan record: the plan view's action (one shape for both).
pub use crate::report::summary::ActionView as ActionRecord;

/// One line of the audit log. `seq` and `prev` are filled in by the writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: String,
    pub kind: RecordKind,
    /// Transition (`started`, `action_succeeded`, `patch_applied`, `dry_run`, `patch_failed`),
    /// alert outcome (`plan_created`, `deduplicated`, …) or break (`torn_tail`, `write_failed`).
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_source: Option<String>,
    /// The alert a decision was about (`kind: alert`), for `antibody replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<crate::alert::ThreatAlert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Requester>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    pub prev: String,
    /// HMAC-SHA256 of the previous record's line (of [`GENESIS`] for the first) when keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_mac: Option<String>,
}

impl AuditRecord {
    pub(super) fn new(kind: RecordKind, event: &str) -> Self {
        Self {
            seq: 0,
            time: jiff::Timestamp::now().to_string(),
            kind,
            event: event.into(),
            plan: None,
            alert_id: None,
            alert_source: None,
            alert: None,
            feed: None,
            requester: None,
            actions: Vec::new(),
            phase: None,
            reason: None,
            message: None,
            detail: Value::Null,
            prev: String::new(),
            prev_mac: None,
        }
    }
}

/// A `chain_break` record (written by the log itself: damage, lost records, a lost log).
pub fn chain_break_record(event: &str, message: String, detail: Value) -> AuditRecord {
    let mut record = AuditRecord::new(RecordKind::ChainBreak, event);
    record.message = Some(message);
    record.detail = detail;
    record
}

/// The record for a plan transition (pure).
pub fn plan_record(transition: &PlanTransition<'_>) -> AuditRecord {
    let view = PlanView::of(transition.plan);
    let mut record = AuditRecord::new(RecordKind::Plan, transition.kind.name());
    record.plan = Some(PlanRef { namespace: view.namespace, name: view.name, uid: view.uid });
    record.alert_id = view.alert.as_ref().map(|a| a.id.clone());
    record.alert_source = view.alert.map(|a| a.source);
    record.requester = Some(view.requester);
    record.actions = view.actions;
    record.phase = Some(view.phase);
    record.reason = Some(transition.reason.to_string());
    record.message = Some(transition.message.to_string());
    if let TransitionKind::ActionSucceeded { index } = transition.kind {
        record.detail = json!({ "action_index": index });
    }
    record
}

/// The record for an alert decision (pure).
pub fn alert_record(decision: &AlertRecord) -> AuditRecord {
    let mut record = AuditRecord::new(RecordKind::Alert, decision.outcome.name());
    record.alert_id = Some(decision.alert_id.clone());
    record.alert = decision.alert.clone();
    record.feed = Some(decision.feed.clone());
    record.requester = Some(Requester { via: decision.feed.clone(), name: decision.requester.clone(), claimed: None });
    let plan = |name: &str| Some(PlanRef { namespace: None, name: name.to_string(), uid: None });
    match &decision.outcome {
        AlertOutcome::PlanCreated { plan: name } | AlertOutcome::Deduplicated { plan: name } => {
            record.plan = plan(name);
        }
        AlertOutcome::CooledDown { target, plan: name } => {
            record.plan = plan(name);
            record.detail = json!({ "target": target });
        }
        AlertOutcome::Ignored { rule } => record.detail = json!({ "rule": rule }),
        AlertOutcome::Refused { reason, message } => {
            record.reason = Some(reason.to_string());
            record.message = Some(message.clone());
        }
        AlertOutcome::Resolved { plan: name, result } => {
            record.plan = plan(name);
            record.detail = json!({ "result": result });
        }
        AlertOutcome::Escalated { plan: name, step, from } => {
            record.plan = plan(name);
            record.detail = json!({ "step": step, "escalated_from": from });
        }
        AlertOutcome::Paged { rule, target } => record.detail = json!({ "rule": rule, "target": target }),
    }
    record
}

/// The chain fields every record carries; all `verify` and recovery need.
#[derive(Debug, Deserialize)]
pub(super) struct ChainFields {
    pub(super) seq: u64,
    pub(super) prev: String,
    #[serde(default)]
    pub(super) prev_mac: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<RecordKind>,
    #[serde(default)]
    pub(super) detail: Value,
}

pub(super) fn chain_fields(line: &[u8]) -> Result<ChainFields, String> {
    serde_json::from_slice::<ChainFields>(line).map_err(|e| {
        if serde_json::from_slice::<Value>(line).is_ok() {
            format!("valid JSON but not an audit record: {e}")
        } else {
            format!("not valid JSON: {e}")
        }
    })
}
