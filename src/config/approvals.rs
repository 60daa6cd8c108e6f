//! The `approvals:` section of antibody.yml and which rule decides for a plan (pure). The gate,
//! the annotation and the REST/CLI side are `crate::approval`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{ConfigError, ResolvedTarget};
use crate::alert::Severity;
use crate::plan::PatchPlanSpec;
use crate::window::{TimeRange, Window};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// How long a plan waits for a decision before it ends `ApprovalExpired`.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Longest validity an approval may claim (`ttl_seconds` of the CLI / REST call).
    #[serde(default = "default_timeout")]
    pub max_ttl_seconds: u64,
    /// Decision when no rule matches.
    #[serde(default)]
    pub default: RuleDecision,
    #[serde(default)]
    pub rules: Vec<ApprovalRule>,
}

fn default_timeout() -> u64 {
    3600
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: default_timeout(),
            max_ttl_seconds: default_timeout(),
            default: RuleDecision::AutoApprove,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleDecision {
    Require,
    #[default]
    AutoApprove,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    pub name: String,
    pub decision: RuleDecision,
    /// Action kinds (`restart`, `edit_env`, `reload_flask`, `rollback`, `delete_pod`).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Logical targets.
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub severities: Vec<Severity>,
    #[serde(default)]
    pub during: Option<During>,
}

/// Local time ranges with an explicit time zone (same form as a change window's `allow`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct During {
    pub time_zone: String,
    pub ranges: Vec<TimeRange>,
}

impl During {
    fn as_window(&self, name: &str) -> Window {
        Window {
            name: name.to_string(),
            targets: Vec::new(),
            namespaces: Vec::new(),
            time_zone: self.time_zone.clone(),
            allow: self.ranges.clone(),
            outside: Default::default(),
        }
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

impl ApprovalConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout_seconds == 0 {
            return Err(err("approvals.timeout_seconds", "must be > 0"));
        }
        if self.max_ttl_seconds == 0 {
            return Err(err("approvals.max_ttl_seconds", "must be > 0"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let field = format!("approvals.rules[{i}]");
            if rule.name.trim().is_empty() {
                return Err(err(format!("{field}.name"), "must not be empty"));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(err(format!("{field}.name"), format!("{:?} twice", rule.name)));
            }
            for action in &rule.actions {
                if crate::plan::ActionType::from_config_name(action).is_none() {
                    return Err(err(
                        format!("{field}.actions"),
                        format!("unknown action {action:?} (restart, edit_env, reload_flask, rollback, delete_pod)"),
                    ));
                }
            }
            if let Some(during) = &rule.during {
                // Reuse the window parser; report the rule's own field names.
                during
                    .as_window(&rule.name)
                    .parse(&format!("{field}.during"))
                    .map_err(|e| ConfigError { field: e.field.replace(".allow", ".ranges"), message: e.message })?;
            }
        }
        Ok(())
    }

    /// The rule that decides for this plan (`None`: the default), and its decision.
    pub fn decide(
        &self,
        spec: &PatchPlanSpec,
        namespace: &str,
        targets: &[ResolvedTarget],
        now: Timestamp,
    ) -> (Option<&str>, RuleDecision) {
        for rule in &self.rules {
            if rule.matches(spec, namespace, targets, now) {
                return (Some(&rule.name), rule.decision);
            }
        }
        (None, self.default)
    }
}

impl ApprovalRule {
    fn matches(&self, spec: &PatchPlanSpec, namespace: &str, targets: &[ResolvedTarget], now: Timestamp) -> bool {
        let action_matches = spec.actions.iter().any(|a| {
            (self.actions.is_empty()
                || self.actions.iter().any(|name| crate::plan::ActionType::from_config_name(name) == Some(a.action)))
                && (self.targets.is_empty() || self.targets.contains(&a.target))
        });
        let namespace_matches = self.namespaces.is_empty()
            || self.namespaces.iter().any(|n| n == namespace || targets.iter().any(|t| &t.namespace == n));
        let severity_matches = self.severities.is_empty()
            || spec
                .alert
                .as_ref()
                .and_then(|a| a.severity.parse::<Severity>().ok())
                .is_some_and(|s| self.severities.contains(&s));
        let time_matches =
            self.during.as_ref().is_none_or(|d| d.as_window(&self.name).parse("during").is_ok_and(|w| w.is_open(now)));
        action_matches && namespace_matches && severity_matches && time_matches
    }
}
