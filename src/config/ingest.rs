//! The `ingest:` section of antibody.yml (pure; the intake itself is `crate::ingest`).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The `ingest:` section of antibody.yml. Every field has a default; the section may be absent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A plan claims its remedies (action + target) this long; alerts asking for no more than
    /// claimed remedies are `cooled_down` into it. 0 turns the cool-down off.
    #[serde(default = "default_cooldown_seconds")]
    pub cooldown_seconds: u64,
    /// Largest REST request body; bigger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most alerts in one `POST /api/nexus/alert` list.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest wait between feed reconnects (exponential backoff with jitter up to this).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

fn default_cooldown_seconds() -> u64 {
    60
}
fn default_max_body_bytes() -> usize {
    256 * 1024
}
fn default_max_batch() -> usize {
    1000
}
fn default_reconnect_max_ms() -> u64 {
    5000
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            cooldown_seconds: default_cooldown_seconds(),
            max_body_bytes: default_max_body_bytes(),
            max_batch: default_max_batch(),
            reconnect_max_ms: default_reconnect_max_ms(),
        }
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &str, message: String| ConfigError { field: format!("ingest.{field}"), message };
        if self.cooldown_seconds > 24 * 3600 {
            return Err(err("cooldown_seconds", format!("{} is more than a day", self.cooldown_seconds)));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(err("max_body_bytes", format!("{} is outside 1 KiB..16 MiB", self.max_body_bytes)));
        }
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(err("max_batch", format!("{} is outside 1..10000", self.max_batch)));
        }
        if !(100..=600_000).contains(&self.reconnect_max_ms) {
            return Err(err("reconnect_max_ms", format!("{} is outside 100..600000", self.reconnect_max_ms)));
        }
        Ok(())
    }
}
