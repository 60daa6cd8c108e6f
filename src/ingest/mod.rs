//! Ingest: every way an alert reaches Antibody, and the one place that turns it into a PatchPlan.
//!
//! Feeds ([`grpc`] NEXUS subscriber and intake service, [`ws`] Socket.IO `nexus_alert`,
//! [`http`] REST and Alertmanager) only parse and validate; [`Intake::submit`] runs the policy
//! with the live config and ends each alert in exactly one recorded outcome: plan created,
//! deduplicated (same alert → same plan name), cooled down (see [`claim_table`]), ignored by a rule,
//! or refused (and, for rules with an escalation ladder, escalated or paged: [`ladder`]). Plans
//! are created with one POST (field manager `antibody`); an existing name is `deduplicated`.
//!
//! Hot path: a storm of alerts for one target is answered from memory after the first plan
//! (no API call per alert); the memory is a cache of the cool-down table kept in the cluster, so a
//! restarted or failed-over Antibody reads it back before creating anything (`claims.rs`).
//! Alertmanager `resolved` cancels a plan that has not started (`cancel.rs`); the flags and the
//! feeds and listeners of `antibody run` are wired in `start.rs`.

pub mod alertmanager;
mod cancel;
pub mod claim_table;
mod claims;
pub mod grpc;
pub mod http;
mod ladder;
mod start;
pub mod ws;

pub use cancel::{Cancel, has_started};
pub use start::{Ingest, IngestArgs, start};

use crate::reason::Reason;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tracing::{Instrument, debug, info, warn};

use crate::alert::ThreatAlert;
use crate::config::{Config, SharedConfig};
use crate::plan::PatchPlan;
use crate::policy::{self, Decision};
use crate::report::{AlertOutcome, AlertRecord, Metrics, Reporter};
use claims::Memory;

pub use crate::config::ingest::IngestConfig;

use crate::names::FEED_ANNOTATION;
/// Annotations naming who asked for a plan and through which feed.
use crate::names::REQUESTED_BY_ANNOTATION;

pub struct Intake {
    client: Client,
    config: Arc<SharedConfig>,
    reporter: Arc<Reporter>,
    /// Where plans go; `None`: `defaults.plan_namespace` of the live config.
    plan_namespace: Option<String>,
    memory: Mutex<HashMap<String, Memory>>,
    /// Serializes the (rare) paths that talk to the API, so a storm's first alerts do not race
    /// each other: whoever waits re-checks memory first.
    slow_path: tokio::sync::Mutex<()>,
}

impl Intake {
    pub fn new(
        client: Client,
        config: Arc<SharedConfig>,
        reporter: Arc<Reporter>,
        plan_namespace: Option<String>,
    ) -> Self {
        Self { client, config, reporter, plan_namespace, memory: Mutex::default(), slow_path: Default::default() }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.reporter.metrics
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn plan_namespace(&self, config: &Config) -> String {
        self.plan_namespace.clone().unwrap_or_else(|| config.defaults.plan_namespace.clone())
    }

    /// Decide and act on a validated alert. The outcome is recorded (metrics, hooks) exactly once.
    pub async fn submit(&self, alert: &ThreatAlert, feed: &str, requester: &str) -> AlertOutcome {
        // Every line logged while deciding carries the alert, its feed and who sent it.
        let span = tracing::info_span!("alert", id = %alert.id, feed, requester);
        async {
            let outcome = self.outcome(alert, feed, requester).await;
            self.record_decision(&alert.id, Some(alert), feed, requester, outcome.clone());
            outcome
        }
        .instrument(span)
        .await
    }

    /// An alert that did not parse or validate: recorded as refused, nothing else happens.
    pub fn refuse_invalid(&self, alert_id: &str, feed: &str, requester: &str, message: impl ToString) -> AlertOutcome {
        let outcome = AlertOutcome::Refused { reason: Reason::InvalidAlert, message: message.to_string() };
        self.record(alert_id, feed, requester, outcome.clone());
        outcome
    }

    /// Record a decision taken outside [`Intake::submit`] (manual plans).
    pub fn record(&self, alert_id: &str, feed: &str, requester: &str, outcome: AlertOutcome) {
        self.record_decision(alert_id, None, feed, requester, outcome)
    }

    /// The alert itself goes with its decision when there is one, so `antibody replay` can
    /// re-decide it from the audit log alone.
    fn record_decision(
        &self,
        alert_id: &str,
        alert: Option<&ThreatAlert>,
        feed: &str,
        requester: &str,
        outcome: AlertOutcome,
    ) {
        match &outcome {
            AlertOutcome::PlanCreated { plan } => info!(alert = alert_id, feed, requester, plan, "plan created"),
            AlertOutcome::Refused { reason, message } => {
                warn!(alert = alert_id, feed, requester, %reason, message, "alert refused")
            }
            other => debug!(alert = alert_id, feed, requester, outcome = other.name(), "alert handled"),
        }
        let alert_id = if alert_id.is_empty() { "-" } else { alert_id };
        self.reporter.alert(&AlertRecord {
            alert_id: alert_id.to_string(),
            alert: alert.cloned(),
            feed: feed.to_string(),
            requester: requester.to_string(),
            outcome,
        });
    }

    async fn outcome(&self, alert: &ThreatAlert, feed: &str, requester: &str) -> AlertOutcome {
        let config = self.config.get();
        let namespace = self.plan_namespace(&config);
        let (rule, name, spec) = match policy::decide(&config, alert, &namespace) {
            Decision::Ignore { rule } => return AlertOutcome::Ignored { rule },
            Decision::Refuse(refusal) => {
                return AlertOutcome::Refused { reason: refusal.reason, message: refusal.message };
            }
            Decision::Plan { rule, name, spec } => (rule, name, spec),
        };
        // A rule with an escalation ladder: the ladder, not the cool-down, decides.
        if let Some(matched) = policy::matched_rule(&config, alert).filter(|r| r.name == rule)
            && let Some(ladder) = &matched.escalate
        {
            return self.escalate(&config, alert, feed, requester, &namespace, matched, ladder, spec).await;
        }
        let window = Duration::from_secs(config.ingest.cooldown_seconds);
        let remedies = claim_table::remedies(&spec);
        if let Some(outcome) = self.remembered(&namespace, &name, &remedies, window) {
            return outcome;
        }
        let mut plan = policy::plan_object(&name, &namespace, &rule, spec);
        annotate(&mut plan, feed, requester);
        if let Err(message) = sign_if_configured(&config, &mut plan) {
            return AlertOutcome::Refused { reason: Reason::SigningFailed, message };
        }
        let backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.create_or_cool_down(&namespace, &plan, &remedies, window).await {
                Ok(outcome) => return outcome,
                // Conflicts and an unavailable API are retried; anything else is final.
                Err(e) if crate::backoff::api_failure(&e) == crate::backoff::ApiFailure::Rejected => {
                    let why = match &e {
                        kube::Error::Api(status) => status.message.clone(),
                        other => other.to_string(),
                    };
                    return AlertOutcome::Refused {
                        reason: Reason::ApiRejected,
                        message: format!("the API server refused plan {name}: {why}"),
                    };
                }
                Err(e) if attempt >= 3 => {
                    return AlertOutcome::Refused {
                        reason: Reason::ApiUnavailable,
                        message: format!("could not create plan {name} after {attempt} attempts: {e}"),
                    };
                }
                Err(e) => {
                    warn!(plan = %name, error = %e, attempt, "creating plan failed; retrying");
                    tokio::time::sleep(backoff.ceiling(attempt - 1)).await;
                }
            }
        }
    }
}

/// Feed reconnects: 100 ms doubling up to `ingest.reconnect_max_ms`, jittered.
pub fn reconnect_backoff(config: &IngestConfig) -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_millis(config.reconnect_max_ms))
}

pub fn annotate(plan: &mut PatchPlan, feed: &str, requester: &str) {
    let annotations = plan.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(REQUESTED_BY_ANNOTATION.into(), requester.into());
    annotations.insert(FEED_ANNOTATION.into(), feed.into());
}

/// Sign a plan Antibody creates with `safety.signing_key_file`, when set (after every other
/// change to it: the signature covers namespace, name and spec). The key is read each time, so
/// a rotated key (a Secret update) applies to the next plan.
pub fn sign_if_configured(config: &Config, plan: &mut PatchPlan) -> Result<(), String> {
    let Some(path) = &config.safety.signing_key_file else {
        return Ok(());
    };
    let key = crate::signing::read_private_key(Path::new(path)).map_err(|e| format!("signing key: {e}"))?;
    let ttl = crate::signing::DEFAULT_TTL_SECONDS.min(config.safety.signature_max_ttl_seconds);
    crate::signing::sign(plan, &config.safety.signing_key_name, &key, ttl).map_err(|e| format!("signing: {e}"))
}

/// Server-side apply with Antibody's field manager: creating a plan twice is one plan.
pub async fn apply_plan(plans: &Api<PatchPlan>, plan: &PatchPlan) -> Result<PatchPlan, kube::Error> {
    plans.patch(&plan.name_any(), &PatchParams::apply(crate::FIELD_MANAGER), &Patch::Apply(plan)).await
}

/// Parse one alert from a JSON value (a REST list item, a Socket.IO payload).
pub fn alert_from_value(value: serde_json::Value) -> Result<ThreatAlert, crate::alert::AlertError> {
    // NEXUS sometimes sends the envelope as a JSON string; both forms are read the same way.
    ThreatAlert::from_value(value)
}

/// Best-effort id of an alert that did not validate, for the refusal record.
pub fn id_hint(value: &serde_json::Value) -> String {
    let value = match value {
        serde_json::Value::String(text) => serde_json::from_str(text).unwrap_or_default(),
        other => other.clone(),
    };
    value
        .get("id")
        .and_then(|id| id.as_str())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("-")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_config_defaults_and_limits() {
        let config = Config::from_yaml("{}").expect("empty config is valid");
        assert_eq!(config.ingest, IngestConfig::default());
        assert_eq!(config.ingest.cooldown_seconds, 60);
        assert_eq!(config.ingest.max_body_bytes, 256 * 1024);
        let cases: &[(&str, &str)] = &[
            ("ingest: {cooldown_seconds: 90000}", "ingest.cooldown_seconds"),
            ("ingest: {max_body_bytes: 10}", "ingest.max_body_bytes"),
            ("ingest: {max_batch: 0}", "ingest.max_batch"),
            ("ingest: {reconnect_max_ms: 1}", "ingest.reconnect_max_ms"),
            ("ingest: {colour: red}", "ingest"),
        ];
        for (yaml, field) in cases {
            let error = Config::from_yaml(yaml).expect_err(yaml);
            assert!(error.field.starts_with(field), "{yaml}: {error}");
        }
        let tuned = Config::from_yaml("ingest: {cooldown_seconds: 0, max_batch: 5}").expect("valid");
        assert_eq!((tuned.ingest.cooldown_seconds, tuned.ingest.max_batch), (0, 5));
    }

    #[test]
    fn alert_values_and_id_hints() {
        let good = serde_json::json!({"id":"a1","source":"NEXUS","category":"heartbeat","severity":"high"});
        assert_eq!(alert_from_value(good.clone()).expect("valid").id, "a1");
        assert_eq!(alert_from_value(serde_json::Value::String(good.to_string())).expect("string form").id, "a1");
        let cases: &[(serde_json::Value, &str, &str)] = &[
            (serde_json::json!({"source":"N","category":"c","severity":"high"}), "missing field `id`", "-"),
            (serde_json::json!({"id":"x","source":"N","category":"c","severity":"urgent"}), "unknown variant", "x"),
            (
                serde_json::json!({"id":"x","source":"N","category":"c","severity":"high","patch_hint":"restart:../x"}),
                "invalid target",
                "x",
            ),
            (serde_json::json!([1, 2]), "malformed alert JSON", "-"),
            (serde_json::Value::String("{not json".into()), "malformed", "-"),
            (serde_json::json!({"id":"has space","source":"N","category":"c","severity":"high"}), "printable", "-"),
        ];
        for (value, want, id) in cases {
            let error = alert_from_value(value.clone()).expect_err(want);
            assert!(error.to_string().contains(want), "{value}: {error}");
            assert_eq!(id_hint(value), *id, "{value}");
        }
    }
}
