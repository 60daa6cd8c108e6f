//! The NEXUS `ThreatAlert` envelope: parsing, validation, patch hints and fingerprint.
//!
//! `{"id","source","category","severity","msg","patch_hint","ts"}` — every field is checked
//! before anything else sees it; the fingerprint is the alert's identity (same alert → same plan).
//!
//! As the original Antibody reads it: a missing `severity` is `info`; `"patch_hint": ""` is no
//! hint; `edit_env:KEY=VALUE` (no target) is a hint for `defaults.targets.edit_env`. A JSON
//! object with a key twice is refused (readers disagree on which value counts). A top-level
//! field this version does not know is ignored with a warning (a newer NEXUS may add one), unless
//! it is a misspelling of a known one (`patchHint`, `Severity`): that is refused.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::ActionType;
use crate::validate;

/// Alert severities, lowest first (the order rules compare with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    #[serde(alias = "warning")]
    Warn,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Warn => "warn",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
            .map_err(|_| format!("unknown severity {s:?} (info, low, warn, medium, high, critical)"))
    }
}

/// A validated alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatAlert {
    pub id: String,
    pub source: String,
    pub category: String,
    /// The original defaults a missing severity to `info` (no action under the shipped config).
    #[serde(default = "default_severity")]
    pub severity: Severity,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

fn default_severity() -> Severity {
    Severity::Info
}

pub const MAX_ALERT_BYTES: usize = 64 * 1024;
const MAX_MSG: usize = 4096;

/// The envelope's fields, as JSON spells them.
pub const FIELDS: &[&str] = &["id", "source", "category", "severity", "msg", "patch_hint", "ts"];

/// Top-level fields of an alert object this version does not know (ignored with a warning).
pub fn unknown_fields(value: &serde_json::Value) -> Vec<String> {
    value
        .as_object()
        .map_or_else(Vec::new, |object| object.keys().filter(|k| !FIELDS.contains(&k.as_str())).cloned().collect())
}

/// `patchHint`, `Severity`, `patch-hint` → the known field it misspells.
fn misspelling_of(key: &str) -> Option<&'static str> {
    let fold = |s: &str| s.chars().filter(|c| !matches!(c, '_' | '-')).collect::<String>().to_ascii_lowercase();
    let folded = fold(key);
    FIELDS.iter().find(|f| fold(f) == folded).copied()
}

/// Why an alert (or its `patch_hint`) was refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// Not a JSON object of the envelope's shape (size, syntax, duplicate or unknown keys, types).
    #[error("{0}")]
    Malformed(String),
    /// A field is missing, too long, or holds characters it may not.
    #[error("{0}")]
    Field(String),
    /// The `patch_hint` does not parse.
    #[error("{0}")]
    Hint(String),
}

impl AlertError {
    /// The refusal reason: a bad hint is `InvalidHint`, anything else `InvalidAlert`.
    pub fn reason(&self) -> crate::reason::Reason {
        match self {
            AlertError::Hint(_) => crate::reason::Reason::InvalidHint,
            AlertError::Malformed(_) | AlertError::Field(_) => crate::reason::Reason::InvalidAlert,
        }
    }
}

impl ThreatAlert {
    /// Parse a JSON envelope and validate every field (duplicate keys refused).
    pub fn from_json(text: &str) -> Result<Self, AlertError> {
        if text.len() > MAX_ALERT_BYTES {
            return Err(AlertError::Malformed(format!("alert is {} bytes (max {MAX_ALERT_BYTES})", text.len())));
        }
        let value = validate::json_strict(text.as_bytes()).map_err(|e| {
            AlertError::Malformed(
                e.0.strip_prefix("malformed JSON: ").map_or(e.0.clone(), |m| format!("malformed alert JSON: {m}")),
            )
        })?;
        if !value.is_object() {
            return Err(AlertError::Malformed(format!(
                "malformed alert JSON: invalid type: {}, expected an object",
                json_kind(&value)
            )));
        }
        Self::from_value(value)
    }

    /// An already parsed JSON value (objects come from [`validate::json_strict`], so a duplicate
    /// key was refused before). A string is taken as the JSON text of an envelope, as some NEXUS
    /// versions send it. Unknown top-level fields are dropped with a warning; see the module doc.
    pub fn from_value(value: serde_json::Value) -> Result<Self, AlertError> {
        let mut object = match value {
            serde_json::Value::String(text) => return Self::from_json(&text),
            serde_json::Value::Object(object) => object,
            other => {
                return Err(AlertError::Malformed(format!(
                    "malformed alert JSON: invalid type: {}, expected an object",
                    json_kind(&other)
                )));
            }
        };
        let unknown: Vec<String> = object.keys().filter(|k| !FIELDS.contains(&k.as_str())).cloned().collect();
        for key in &unknown {
            if let Some(known) = misspelling_of(key) {
                return Err(AlertError::Malformed(format!("unknown field {key:?}: did you mean {known:?}?")));
            }
            // A field a newer NEXUS adds is a plain identifier; anything else is not ignored.
            if validate::env_key(key).is_err() || key.len() > 64 {
                return Err(AlertError::Malformed(format!("unknown field {key:?}: not a plain identifier")));
            }
            object.remove(key);
        }
        if !unknown.is_empty() {
            tracing::warn!(fields = ?unknown, "alert: ignoring top-level fields this version does not know");
        }
        // The original always sends patch_hint, "" when there is none.
        if object.get("patch_hint").and_then(|h| h.as_str()).is_some_and(|h| h.trim().is_empty()) {
            object.remove("patch_hint");
        }
        let alert: ThreatAlert = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| AlertError::Malformed(format!("malformed alert JSON: {e}")))?;
        alert.validate()?;
        Ok(alert)
    }

    pub fn validate(&self) -> Result<(), AlertError> {
        token("id", &self.id, 128)?;
        token("source", &self.source, 64)?;
        token("category", &self.category, 64)?;
        if self.msg.len() > MAX_MSG {
            return Err(AlertError::Field(format!("msg is {} bytes (max {MAX_MSG})", self.msg.len())));
        }
        if let Some(ts) = &self.ts {
            ts.parse::<jiff::Timestamp>()
                .map_err(|e| AlertError::Field(format!("ts {ts:?} is not an RFC 3339 timestamp: {e}")))?;
        }
        if let Some(hint) = &self.patch_hint {
            PatchHint::parse(hint)?;
        }
        Ok(())
    }

    pub fn hint(&self) -> Result<Option<PatchHint>, AlertError> {
        self.patch_hint.as_deref().map(PatchHint::parse).transpose()
    }

    /// Identity of the alert: NEXUS re-sending the same alert gives the same fingerprint.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [self.source.as_str(), self.category.as_str(), self.id.as_str()] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }

    /// PatchPlan name for this alert: `<category>-<fingerprint prefix>`, a DNS-1123 subdomain.
    pub fn plan_name(&self) -> String {
        let category: String = self
            .category
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let category = category.trim_matches('-');
        let prefix = if category.is_empty() { "alert" } else { category };
        format!("{prefix}-{}", &self.fingerprint()[..16])
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_f64() => "floating point",
        serde_json::Value::Number(_) => "integer",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "sequence",
        serde_json::Value::Object(_) => "map",
    }
}

/// Identifier-like fields (ids, sources) as every intake checks them.
pub fn token_field(field: &str, value: &str, max: usize) -> Result<(), AlertError> {
    token(field, value, max)
}

/// Identifier-like fields: printable ASCII, no whitespace, bounded.
fn token(field: &str, value: &str, max: usize) -> Result<(), AlertError> {
    if value.is_empty() {
        return Err(AlertError::Field(format!("{field} is missing or empty")));
    }
    if value.len() > max {
        return Err(AlertError::Field(format!("{field} is {} bytes (max {max})", value.len())));
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(AlertError::Field(format!("{field} {value:?} must be printable ASCII without spaces")));
    }
    Ok(())
}

/// A parsed `patch_hint`: `restart:T`, `reload_flask:T`, `edit_env:T:KEY=VALUE`, or the
/// original's `edit_env:KEY=VALUE` (no target: `defaults.targets.edit_env` is meant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchHint {
    pub action: ActionType,
    /// `None` only for `edit_env:KEY=VALUE`.
    pub target: Option<String>,
    pub env: Option<(String, String)>,
}

impl PatchHint {
    /// Strict: unknown actions, bad target names, bad keys and multi-line values are errors.
    pub fn parse(hint: &str) -> Result<Self, AlertError> {
        Self::parse_text(hint).map_err(AlertError::Hint)
    }

    fn parse_text(hint: &str) -> Result<Self, String> {
        let (action, rest) =
            hint.split_once(':').ok_or_else(|| format!("patch_hint {hint:?}: expected ACTION:TARGET"))?;
        let action = match action {
            "restart" => ActionType::Restart,
            "reload_flask" => ActionType::ReloadFlask,
            "edit_env" => ActionType::EditEnv,
            other => {
                return Err(format!("patch_hint: unknown action {other:?} (restart, edit_env, reload_flask)"));
            }
        };
        let (target, env) = if action == ActionType::EditEnv {
            // TARGET:KEY=VALUE when a ':' comes before the first '=' (target names hold neither;
            // a value may hold both), else the original's KEY=VALUE.
            let (target, assignment) = match (rest.find(':'), rest.find('=')) {
                (Some(colon), equals) if equals.is_none_or(|e| colon < e) => (Some(&rest[..colon]), &rest[colon + 1..]),
                _ => (None, rest),
            };
            let (key, value) = assignment.split_once('=').ok_or_else(|| match target {
                Some(_) => format!("patch_hint {hint:?}: expected KEY=VALUE after the target"),
                None => format!("patch_hint {hint:?}: expected edit_env:TARGET:KEY=VALUE or edit_env:KEY=VALUE"),
            })?;
            validate::env_key(key).map_err(|e| format!("patch_hint: {e}"))?;
            validate::env_value(value).map_err(|e| format!("patch_hint: {e}"))?;
            (target, Some((key.to_string(), value.to_string())))
        } else {
            (Some(rest), None)
        };
        if let Some(target) = target {
            validate::logical_name(target).map_err(|e| format!("patch_hint: {e}"))?;
        }
        Ok(PatchHint { action, target: target.map(str::to_string), env })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"id":"a1","source":"NEXUS","category":"heartbeat","severity":"high","msg":"Pulse missed: VAEL_Core","patch_hint":"restart:VAEL_Core","ts":"2025-05-30T12:34:56Z"}"#;

    #[test]
    fn the_design_example_parses() {
        let alert = ThreatAlert::from_json(EXAMPLE).expect("valid");
        assert_eq!(alert.severity, Severity::High);
        let hint = alert.hint().expect("valid hint").expect("has hint");
        assert_eq!((hint.action, hint.target.as_deref()), (ActionType::Restart, Some("VAEL_Core")));
    }

    #[test]
    fn bad_alerts_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("{", "malformed"),
            (r#"{"source":"N","category":"c","severity":"high"}"#, "missing field `id`"),
            (r#"{"id":"","source":"N","category":"c","severity":"high"}"#, "id is missing"),
            (r#"{"id":"a","source":"N","category":"c","severity":"urgent"}"#, "unknown variant"),
            (r#"{"id":"a b","source":"N","category":"c","severity":"high"}"#, "printable ASCII"),
            (r#"{"id":"a","source":"N","category":"c","severity":"high","ts":"yesterday"}"#, "RFC 3339"),
            (
                r#"{"id":"a","source":"N","category":"c","severity":"high","patchHint":"restart:X"}"#,
                "did you mean \"patch_hint\"",
            ),
            (r#"{"id":"a","source":"N","category":"c","Severity":"high"}"#, "did you mean \"severity\""),
            (
                r#"{"id":"a","source":"N","category":"c","severity":"info","severity":"critical"}"#,
                "duplicate key \"severity\"",
            ),
            ("[1]", "invalid type: sequence, expected an object"),
            (r#"{"id":1,"source":"N","category":"c","severity":"high"}"#, "invalid type"),
            (
                r#"{"id":"a","source":"N","category":"c","severity":"high","patch_hint":"restart:../x"}"#,
                "invalid target",
            ),
        ];
        for (json, want) in cases {
            let error = ThreatAlert::from_json(json).expect_err(json);
            assert!(error.to_string().contains(want), "{json}: {error}");
        }
        let nested = serde_json::Value::String(r#"{"id":"a","id":"b","source":"N","category":"c"}"#.into());
        assert!(
            ThreatAlert::from_value(nested)
                .expect_err("dup in string form")
                .to_string()
                .contains("duplicate key \"id\"")
        );
        let huge = format!(
            r#"{{"id":"a","source":"N","category":"c","severity":"high","msg":"{}"}}"#,
            "x".repeat(MAX_ALERT_BYTES)
        );
        assert!(ThreatAlert::from_json(&huge).expect_err("oversize").to_string().contains("max"));
    }

    #[test]
    fn hints_are_strict() {
        type Case<'a> = (&'a str, ActionType, Option<&'a str>, Option<(&'a str, &'a str)>);
        let ok: &[Case] = &[
            ("restart:VAEL_Core", ActionType::Restart, Some("VAEL_Core"), None),
            ("reload_flask:VAEL_UI", ActionType::ReloadFlask, Some("VAEL_UI"), None),
            (
                "edit_env:VAEL_Core:LOG_LEVEL=debug",
                ActionType::EditEnv,
                Some("VAEL_Core"),
                Some(("LOG_LEVEL", "debug")),
            ),
            (
                "edit_env:VAEL_Core:URL=http://x/?a=b",
                ActionType::EditEnv,
                Some("VAEL_Core"),
                Some(("URL", "http://x/?a=b")),
            ),
            // The original's form: the target is defaults.targets.edit_env.
            ("edit_env:FLASK_DEBUG=False", ActionType::EditEnv, None, Some(("FLASK_DEBUG", "False"))),
            ("edit_env:URL=http://x:80/", ActionType::EditEnv, None, Some(("URL", "http://x:80/"))),
            ("edit_env:EMPTY=", ActionType::EditEnv, None, Some(("EMPTY", ""))),
        ];
        for (hint, action, target, env) in ok {
            let parsed = PatchHint::parse(hint).expect(hint);
            assert_eq!(parsed.action, *action);
            assert_eq!(parsed.target.as_deref(), *target);
            assert_eq!(parsed.env.as_ref().map(|(k, v)| (k.as_str(), v.as_str())), *env);
        }
        let bad = [
            "restart",
            "restart:",
            "restart:../x",
            "restart:VAEL_Core;rm -rf /",
            "reboot:VAEL_Core",
            "edit_env:T:K=V\nX=Y",
            "edit_env:T:1K=V",
            "edit_env:T:KV",
            "edit_env:T",
            "edit_env:",
            "edit_env:=v",
            "edit_env:../T:K=V",
            "restart:VAEL Core",
        ];
        for hint in bad {
            assert!(PatchHint::parse(hint).is_err(), "{hint:?} should be refused");
        }
    }

    /// The original's envelope: severity defaults to info, "" is no hint, new fields are ignored.
    #[test]
    fn the_original_envelope_reads_as_the_original_does() {
        let no_severity = ThreatAlert::from_json(r#"{"id":"a","source":"N","category":"c"}"#).expect("valid");
        assert_eq!(no_severity.severity, Severity::Info);
        let empty =
            ThreatAlert::from_json(r#"{"id":"a","source":"N","category":"c","severity":"high","patch_hint":""}"#)
                .expect("empty hint");
        assert_eq!(empty.patch_hint, None);
        let future = r#"{"id":"a","source":"N","category":"c","severity":"high","trace_id":"t-1","labels":{"x":1}}"#;
        assert_eq!(ThreatAlert::from_json(future).expect("new top-level fields are ignored").id, "a");
        let value: serde_json::Value = serde_json::from_str(future).expect("json");
        assert_eq!(unknown_fields(&value), ["labels", "trace_id"]);
    }

    #[test]
    fn fingerprint_is_the_alert_identity() {
        let a = ThreatAlert::from_json(EXAMPLE).expect("valid");
        let mut resent = a.clone();
        resent.msg = "different text, same alert".into();
        assert_eq!(a.fingerprint(), resent.fingerprint());
        let mut other = a.clone();
        other.id = "a2".into();
        assert_ne!(a.fingerprint(), other.fingerprint());
        let name = a.plan_name();
        assert!(name.starts_with("heartbeat-") && name.len() == "heartbeat-".len() + 16, "{name}");
        crate::validate::dns1123_subdomain(&name).expect("plan name is a valid Kubernetes name");
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Info < Severity::Warn && Severity::High < Severity::Critical);
        assert_eq!("WARNING".parse::<Severity>(), Ok(Severity::Warn));
        assert!("urgent".parse::<Severity>().is_err());
    }
}
