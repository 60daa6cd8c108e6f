//! `rules[].escalate` (an escalation ladder) and `safety.breaker` (pure). What they do at run
//! time: `crate::escalation`.
//!
//! ```yaml
//! rules:
//!   - name: policy-flood
//!     category: policy
//!     min_severity: high
//!     actions: [reload_flask]            # step 1
//!     escalate:
//!       cure_seconds: 120                # the same alert again within this → next step
//!       then: [restart, rollback, page]  # steps 2.. ; `page` stops and calls a human
//! safety:
//!   breaker: {failures: 3}               # 3 failed plans in a row on a target → hold it
//! ```

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::plan::ActionType;

/// The terminal step: act no more, notify (`escalation_exhausted`), open the target's breaker.
pub const PAGE: &str = "page";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// A step counts as not cured when its plan fails, or when the alert comes again within
    /// this many seconds after the plan finished.
    pub cure_seconds: u64,
    /// The steps after the rule's own `actions`, in order: one action each (`restart`,
    /// `restart:Sentinel`, `reload_flask`, `delete_pod`, `rollback` = restore the target's newest
    /// backup), and `page` only last.
    pub then: Vec<String>,
}

impl Escalation {
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let err = |f: &str, message: String| ConfigError { field: format!("{field}.{f}"), message };
        if self.cure_seconds == 0 || self.cure_seconds > 7 * 24 * 3600 {
            return Err(err("cure_seconds", format!("{} is outside 1..604800", self.cure_seconds)));
        }
        if self.then.is_empty() {
            return Err(err("then", "names no step: leave `escalate` out instead".into()));
        }
        for (i, step) in self.then.iter().enumerate() {
            if step == PAGE {
                if i + 1 != self.then.len() {
                    return Err(err(
                        "then",
                        format!("`page` is step {} of {}: it can only be last", i + 2, self.then.len() + 1),
                    ));
                }
                continue;
            }
            let kind = step.split_once(':').map_or(step.as_str(), |(k, _)| k);
            match ActionType::from_config_name(kind) {
                Some(ActionType::EditEnv) => {
                    return Err(err(
                        "then",
                        "edit_env cannot be a step (its value comes only from an alert's hint)".into(),
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(err(
                        "then",
                        format!("unknown step {step:?} (restart, reload_flask, delete_pod, rollback, page)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Steps in all, the rule's own actions being the first.
    pub fn steps(&self) -> usize {
        self.then.len() + 1
    }
}

/// `safety.breaker`: consecutive failed plans on one target open its breaker; while open, plans
/// on the target wait (`BreakerOpen`) until `antibody breaker reset TARGET`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub failures: u32,
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.failures) {
            return Err(ConfigError {
                field: "safety.breaker.failures".into(),
                message: format!("{} is outside 1..100", self.failures),
            });
        }
        Ok(())
    }
}
