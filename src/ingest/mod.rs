//! Ingest: every way an alert reaches Antibody, and the one place that turns it into a PatchPlan.
//!
//! Feeds ([`grpc`] NEXUS subscriber and intake service, [`ws`] Socket.IO `nexus_alert`,
//! [`http`] REST and Alertmanager) only parse and validate; [`Intake::submit`] runs the policy
//! with the live config and ends each alert in exactly one recorded outcome: plan created,
//! deduplicated (same alert → same plan name), cooled down (see [`cooldown`]), ignored by a rule,
//! or refused (and, for rules with an escalation ladder, escalated or paged: [`ladder`]). Plans
//! are created with one POST (field manager `antibody`); an existing name is `deduplicated`.
//!
//! Hot path: a storm of alerts for one target is answered from memory after the first plan
//! (no API call per alert); the memory is a cache of the cool-down table kept in the cluster, so a
//! restarted or failed-over Antibody reads it back before creating anything.

pub mod alertmanager;
pub mod cooldown;
pub mod grpc;
pub mod http;
mod ladder;
pub mod reload;
pub mod ws;

use crate::reason::Reason;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::alert::ThreatAlert;
use crate::config::{Config, SharedConfig};
use crate::plan::{PatchPlan, Phase, StepState};
use crate::policy::{self, Decision};
use crate::report::{AlertOutcome, AlertRecord, Metrics, Reporter};
use crate::tokens::{TokenStore, Tokens};
use cooldown::{CooldownTable, Coverage};

pub use crate::config::ingest::IngestConfig;

/// Annotations naming who asked for a plan and through which feed.
pub use crate::plan::REQUESTED_BY_ANNOTATION;
pub const FEED_ANNOTATION: &str = "antibody.vael.io/feed";

/// A claim younger than this is trusted without looking for its plan (another replica may be
/// creating it this instant); an older one whose plan does not exist is dropped.
const CLAIM_GRACE: Duration = Duration::from_secs(10);

/// Plan names remembered as existing; past this the memory starts over (it is only a cache).
const MAX_KNOWN_PLANS: usize = 100_000;

#[derive(Debug, Default)]
struct Memory {
    cooldown: CooldownTable,
    known_plans: HashSet<String>,
    /// The cool-down ConfigMap as this replica last wrote it (resourceVersion for the next CAS).
    stored_table: Option<ConfigMap>,
}

/// What became of an Alertmanager `resolved` notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The plan had not started and is deleted.
    Cancelled,
    /// An action already started: the plan runs to its end.
    AlreadyStarted,
    NotFound,
}

impl Cancel {
    pub fn name(&self) -> &'static str {
        match self {
            Cancel::Cancelled => "cancelled",
            Cancel::AlreadyStarted => "already_started",
            Cancel::NotFound => "not_found",
        }
    }
}

/// A plan has started once the reconciler moved it past `Pending` or touched any action.
pub fn has_started(plan: &PatchPlan) -> bool {
    plan.status.as_ref().is_some_and(|s| {
        s.phase != Phase::Pending
            || s.actions.iter().any(|a| {
                a.state != StepState::Pending
                    || a.started_at.is_some()
                    || a.restarted_at.is_some()
                    || a.backup_name.is_some()
                    || !a.signalled_pods.is_empty()
            })
    })
}

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
    pub fn refuse_invalid(&self, alert_id: &str, feed: &str, requester: &str, message: String) -> AlertOutcome {
        let outcome = AlertOutcome::Refused { reason: Reason::InvalidAlert, message };
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
        let remedies = cooldown::remedies(&spec);
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

    fn with_memory<R>(&self, namespace: &str, f: impl FnOnce(&mut Memory) -> R) -> R {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        f(memory.entry(namespace.to_string()).or_default())
    }

    fn remember_plan(&self, namespace: &str, name: &str) {
        self.with_memory(namespace, |m| {
            if m.known_plans.len() >= MAX_KNOWN_PLANS {
                m.known_plans.clear();
            }
            m.known_plans.insert(name.to_string());
        });
    }

    /// The fast path: answered from memory, no API call.
    fn remembered(&self, namespace: &str, name: &str, remedies: &[String], window: Duration) -> Option<AlertOutcome> {
        self.with_memory(namespace, |m| {
            if m.known_plans.contains(name) {
                return Some(AlertOutcome::Deduplicated { plan: name.to_string() });
            }
            coverage_outcome(name, m.cooldown.check(name, remedies, Timestamp::now(), window))
        })
    }

    /// The slow path: read the cluster's view, claim the remedies (compare-and-swap), create.
    async fn create_or_cool_down(
        &self,
        namespace: &str,
        plan: &PatchPlan,
        remedies: &[String],
        window: Duration,
    ) -> Result<AlertOutcome, kube::Error> {
        let _serial = self.slow_path.lock().await;
        let name = plan.name_any();
        if let Some(outcome) = self.remembered(namespace, &name, remedies, window) {
            return Ok(outcome);
        }
        let plans: Api<PatchPlan> = Api::namespaced(self.client.clone(), namespace);
        if window.is_zero() {
            return self.create_plan(namespace, &plans, plan).await;
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let mut conflicts = 0;
        loop {
            let now = Timestamp::now();
            // The table as this replica last wrote it, if any: the write below is a
            // compare-and-swap, so a stale copy costs a 409 and a re-read, never a double claim.
            let cached = if conflicts == 0 { self.with_memory(namespace, |m| m.stored_table.clone()) } else { None };
            let (stored, mut table) = match cached {
                Some(stored) => {
                    let table = stored.data.as_ref().map(CooldownTable::from_data).unwrap_or_default();
                    (Some(stored), table)
                }
                None => read_table(&config_maps).await?,
            };
            table.prune(now, window);
            // A settled claim whose plan is gone (deleted, or a crash between claim and create)
            // frees its remedies.
            for claimant in table.settled_claimants(remedies, now, window, CLAIM_GRACE) {
                if claimant != name && plans.get_opt(&claimant).await?.is_none() {
                    table.release(&claimant);
                }
            }
            self.with_memory(namespace, |m| m.cooldown = table.clone());
            if let Some(outcome @ AlertOutcome::CooledDown { .. }) =
                coverage_outcome(&name, table.check(&name, remedies, now, window))
            {
                return Ok(outcome);
            }
            table.claim(&name, remedies, now);
            match write_table(&config_maps, stored, &table).await {
                Ok(written) => self.with_memory(namespace, |m| m.stored_table = Some(written)),
                Err(kube::Error::Api(status))
                    if (status.is_conflict() || status.is_already_exists()) && conflicts < 8 =>
                {
                    conflicts += 1;
                    debug!(plan = %name, conflicts, "cool-down table changed underneath; re-reading");
                    continue;
                }
                Err(e) => {
                    self.with_memory(namespace, |m| m.stored_table = None);
                    return Err(e);
                }
            }
            self.with_memory(namespace, |m| m.cooldown = table);
            return match self.create_plan(namespace, &plans, plan).await {
                Ok(outcome) => Ok(outcome),
                Err(e) => {
                    // Free the claim so the next alert can act; if this fails too, the claim is
                    // dropped on the next read because its plan does not exist.
                    if let Err(release) = self.release_claims(namespace, &name).await {
                        warn!(plan = %name, error = %release, "releasing the cool-down claim failed");
                    }
                    Err(e)
                }
            };
        }
    }

    /// Create the plan; one that already exists (same alert, same name) is a duplicate. One
    /// round-trip: no GET first.
    async fn create_plan(
        &self,
        namespace: &str,
        plans: &Api<PatchPlan>,
        plan: &PatchPlan,
    ) -> Result<AlertOutcome, kube::Error> {
        let name = plan.name_any();
        let params = PostParams { field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() };
        let outcome = match plans.create(&params, plan).await {
            Ok(_) => AlertOutcome::PlanCreated { plan: name.clone() },
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                AlertOutcome::Deduplicated { plan: name.clone() }
            }
            Err(e) => return Err(e),
        };
        self.remember_plan(namespace, &name);
        Ok(outcome)
    }

    /// Drop a plan's claims, in memory and in the cluster.
    async fn release_claims(&self, namespace: &str, plan: &str) -> Result<(), kube::Error> {
        self.with_memory(namespace, |m| m.cooldown.release(plan));
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..8 {
            let (stored, mut table) = read_table(&config_maps).await?;
            if !table.release(plan) {
                return Ok(());
            }
            match write_table(&config_maps, stored, &table).await {
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(e) => return Err(e),
                Ok(written) => {
                    self.with_memory(namespace, |m| m.stored_table = Some(written));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Alertmanager `resolved`: delete the alert's plan unless an action has started. What
    /// became of it is recorded like any alert decision (audit: `kind: alert, event: resolved`).
    pub async fn resolve(
        &self,
        alert: &ThreatAlert,
        feed: &str,
        requester: &str,
    ) -> Result<(String, Cancel), kube::Error> {
        let (plan, cancel) = self.cancel(alert).await?;
        let outcome = AlertOutcome::Resolved { plan: plan.clone(), result: cancel.name().to_string() };
        self.record_decision(&alert.id, Some(alert), feed, requester, outcome);
        Ok((plan, cancel))
    }

    async fn cancel(&self, alert: &ThreatAlert) -> Result<(String, Cancel), kube::Error> {
        let config = self.config.get();
        let namespace = self.plan_namespace(&config);
        let name = alert.plan_name();
        let plans: Api<PatchPlan> = Api::namespaced(self.client.clone(), &namespace);
        let _serial = self.slow_path.lock().await;
        for _ in 0..3 {
            let Some(plan) = plans.get_opt(&name).await? else {
                self.with_memory(&namespace, |m| m.known_plans.remove(&name));
                return Ok((name, Cancel::NotFound));
            };
            if has_started(&plan) {
                return Ok((name, Cancel::AlreadyStarted));
            }
            // Only the version we looked at: if the reconciler wrote status since, look again.
            let preconditions = Preconditions { resource_version: plan.resource_version(), uid: plan.uid() };
            let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::background() };
            match plans.delete(&name, &params).await {
                Ok(_) => {
                    self.with_memory(&namespace, |m| m.known_plans.remove(&name));
                    self.release_claims(&namespace, &name).await?;
                    info!(plan = %name, "plan cancelled: its alert resolved before it started");
                    return Ok((name, Cancel::Cancelled));
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(kube::Error::Api(status)) if status.is_not_found() => return Ok((name, Cancel::NotFound)),
                Err(e) => return Err(e),
            }
        }
        Ok((name, Cancel::AlreadyStarted))
    }
}

fn coverage_outcome(name: &str, coverage: Coverage) -> Option<AlertOutcome> {
    match coverage {
        Coverage::Open => None,
        Coverage::Same => Some(AlertOutcome::Deduplicated { plan: name.to_string() }),
        Coverage::Covered { plan, remedy } => {
            Some(AlertOutcome::CooledDown { target: cooldown::target_of(&remedy).to_string(), plan })
        }
    }
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

async fn read_table(config_maps: &Api<ConfigMap>) -> Result<(Option<ConfigMap>, CooldownTable), kube::Error> {
    let stored = config_maps.get_opt(cooldown::CONFIG_MAP).await?;
    let table = stored.as_ref().and_then(|c| c.data.as_ref()).map(CooldownTable::from_data).unwrap_or_default();
    Ok((stored, table))
}

/// Write the table only if nobody else did since we read it (resourceVersion / create).
/// Returns the ConfigMap as written (its new resourceVersion is the next compare-and-swap's).
async fn write_table(
    config_maps: &Api<ConfigMap>,
    stored: Option<ConfigMap>,
    table: &CooldownTable,
) -> Result<ConfigMap, kube::Error> {
    let written = match stored {
        Some(config_map) => {
            // A merge patch carrying the resourceVersion read is a compare-and-swap (409 if the
            // map changed since); keys no longer in the table are removed with null.
            let data = table.to_data();
            let mut patch_data: serde_json::Map<String, serde_json::Value> =
                data.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            for key in config_map.data.iter().flat_map(|d| d.keys()) {
                if !data.contains_key(key) {
                    patch_data.insert(key.clone(), serde_json::Value::Null);
                }
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": config_map.resource_version() },
                "data": patch_data,
            });
            config_maps.patch(cooldown::CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch)).await?
        }
        None => {
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(cooldown::CONFIG_MAP.into()),
                    labels: Some([("app.kubernetes.io/managed-by".to_string(), "antibody".to_string())].into()),
                    annotations: Some(
                        [(
                            "antibody.vael.io/purpose".to_string(),
                            "per-target alert cool-down claims (see ingest.cooldown_seconds)".to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some(table.to_data()),
                ..Default::default()
            };
            config_maps.create(&PostParams::default(), &config_map).await?
        }
    };
    Ok(written)
}

/// Parse one alert from a JSON value (a REST list item, a Socket.IO payload).
pub fn alert_from_value(value: serde_json::Value) -> Result<ThreatAlert, String> {
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

/// Command-line options of the ingest side of `antibody run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IngestArgs {
    /// NEXUS gRPC ThreatFeed to subscribe to, e.g. http://nexus:50051.
    #[arg(long, env = "ANTIBODY_NEXUS_GRPC")]
    pub nexus_grpc: Option<String>,
    /// NEXUS Socket.IO server to take `nexus_alert` events from, e.g. http://nexus:5000.
    #[arg(long, env = "ANTIBODY_NEXUS_WS")]
    pub nexus_ws: Option<String>,
    /// Serve the gRPC AlertIntake (with reflection) here, e.g. 127.0.0.1:50052.
    #[arg(long, env = "ANTIBODY_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Bearer tokens (lines `name:token [scopes=a,b]`; the name is the requester) for REST and
    /// gRPC intake, the plans API, Socket.IO and, with `--metrics-auth token`, /metrics.
    #[arg(long, env = "ANTIBODY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Namespace for PatchPlans made from alerts (default: --namespace, else
    /// `defaults.plan_namespace` from antibody.yml).
    #[arg(long, env = "ANTIBODY_PLAN_NAMESPACE")]
    pub plan_namespace: Option<String>,
    /// Serve the HTTP and gRPC intake listeners over TLS with this PEM certificate (chain);
    /// needs --tls-key. Re-read when the file changes.
    #[arg(long, env = "ANTIBODY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ANTIBODY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle to verify https:// NEXUS feeds with (default: the system trust store for
    /// --nexus-grpc, built-in Mozilla roots for --nexus-ws). Refused with a plaintext feed.
    #[arg(long, env = "ANTIBODY_NEXUS_CA")]
    pub nexus_ca: Option<PathBuf>,
    /// Authenticated gRPC intake calls in flight at once (beyond: RESOURCE_EXHAUSTED).
    #[arg(long, env = "ANTIBODY_GRPC_MAX_CALLS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub grpc_max_calls: u32,
    /// HTTP/2 streams one gRPC client connection may have open.
    #[arg(long, env = "ANTIBODY_GRPC_MAX_STREAMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub grpc_max_streams: u32,
    /// gRPC requests served at once per connection (the rest wait their turn).
    #[arg(long, env = "ANTIBODY_GRPC_CONNECTION_CALLS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub grpc_connection_calls: u32,
}

impl IngestArgs {
    pub fn grpc_limits(&self) -> grpc::GrpcLimits {
        grpc::GrpcLimits {
            max_concurrent_calls: self.grpc_max_calls as usize,
            max_concurrent_streams: self.grpc_max_streams,
            per_connection_calls: self.grpc_connection_calls as usize,
            ..Default::default()
        }
    }
}

/// The running ingest side: its HTTP routes (to merge into the main router) and its tasks.
pub struct Ingest {
    pub router: axum::Router,
    pub intake: Arc<Intake>,
    /// The intake listeners' TLS, for the HTTP listener too (`None`: plaintext).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// The live token set (swapped when the token file changes), for the read endpoints too.
    pub tokens: Arc<TokenStore>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Start everything ingest needs. Errors are startup errors (bad flags, unreadable token file).
pub fn start(
    args: IngestArgs,
    config_path: &Path,
    client: Client,
    config: Arc<SharedConfig>,
    reporter: Arc<Reporter>,
    watch_namespace: Option<String>,
    shutdown: CancellationToken,
) -> crate::Result<Ingest> {
    let startup = |message: String| crate::Error::Config { path: "antibody run".into(), message };
    let plan_namespace = args.plan_namespace.clone().or(watch_namespace);
    if let Some(ns) = &plan_namespace {
        crate::validate::dns1123_label(ns).map_err(|e| startup(format!("--plan-namespace: {e}")))?;
    }
    let tokens = match &args.token_file {
        // A Secret mounted as an optional volume: until it exists, refuse (401) and keep
        // looking; the reload watch swaps the tokens in when the file appears.
        Some(path) if !path.exists() => {
            warn!(path = %path.display(), "token file does not exist (yet): alert intake refuses every request until it appears");
            Tokens::default()
        }
        Some(path) => Tokens::load(path).map_err(startup)?,
        None => {
            warn!("no --token-file: REST and gRPC alert intake refuse every request (401)");
            Tokens::default()
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::ServerTls::load(cert, key).map_err(|e| startup(format!("--tls-cert/--tls-key: {e}")))?)
        }
        (None, None) => None,
        _ => return Err(startup("--tls-cert and --tls-key go together".into())),
    };
    let tokens = Arc::new(TokenStore::new(tokens));
    // Approve/deny shares the listener and the token file (scope `approve`).
    let approvals = crate::approval::router(client.clone(), tokens.clone(), config.clone());
    let intake = Arc::new(Intake::new(client, config.clone(), reporter.clone(), plan_namespace));
    let mut tasks = Vec::new();

    tasks.push(tokio::spawn(reload::watch(
        config_path.to_path_buf(),
        config,
        args.token_file.clone().map(|path| (path, tokens.clone())),
        reporter.metrics.clone(),
        reload::POLL_INTERVAL,
        shutdown.clone(),
    )));
    if let Some(url) = &args.nexus_grpc {
        let endpoint =
            grpc::endpoint(url, args.nexus_ca.as_deref()).map_err(|e| startup(format!("--nexus-grpc: {e}")))?;
        tasks.push(tokio::spawn(grpc::subscribe(endpoint, intake.clone(), shutdown.clone())));
    }
    if let Some(url) = &args.nexus_ws {
        let ws_url = ws::websocket_url(url).map_err(|e| startup(format!("--nexus-ws: {e}")))?;
        let tls = match (&args.nexus_ca, ws_url.starts_with("wss://")) {
            (None, _) => None,
            (Some(ca), true) => Some(crate::tls::client_config(ca).map_err(|e| startup(format!("--nexus-ca: {e}")))?),
            (Some(ca), false) => {
                return Err(startup(format!(
                    "--nexus-ca {} is set but --nexus-ws {url:?} is plaintext: use https:// or wss://",
                    ca.display()
                )));
            }
        };
        tasks.push(tokio::spawn(ws::subscribe(url.clone(), intake.clone(), tls, shutdown.clone())));
    }
    if let Some(addr) = args.grpc_addr {
        let (intake, tokens, shutdown) = (intake.clone(), tokens.clone(), shutdown.clone());
        let (limits, tls) = (args.grpc_limits(), tls.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = grpc::serve(addr, intake, tokens, limits, tls, shutdown).await {
                warn!(error = %e, %addr, "gRPC intake server stopped");
            }
        }));
    }
    let router = http::router(intake.clone(), tokens.clone()).merge(approvals);
    Ok(Ingest { router, intake, tls, tokens, tasks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionStatus, PatchPlanSpec, PatchPlanStatus};

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
    fn started_means_the_reconciler_moved() {
        let mut plan = PatchPlan::new("p", PatchPlanSpec::default());
        assert!(!has_started(&plan), "no status: not started");
        plan.status = Some(PatchPlanStatus {
            actions: vec![ActionStatus::default(), ActionStatus::default()],
            ..Default::default()
        });
        assert!(!has_started(&plan), "status with pending actions: not started");
        let mutations: [fn(&mut PatchPlanStatus); 6] = [
            |s| s.phase = Phase::Running,
            |s| s.phase = Phase::Failed,
            |s| s.actions[1].state = StepState::Running,
            |s| s.actions[0].restarted_at = Some("t".into()),
            |s| s.actions[0].backup_name = Some("b".into()),
            |s| s.actions[0].signalled_pods = vec!["uid".into()],
        ];
        for (i, mutate) in mutations.iter().enumerate() {
            let mut started = plan.clone();
            mutate(started.status.as_mut().expect("status"));
            assert!(has_started(&started), "mutation {i} means started");
        }
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
            assert!(error.contains(want), "{value}: {error}");
            assert_eq!(id_hint(value), *id, "{value}");
        }
    }

    #[test]
    fn coverage_maps_to_outcomes() {
        assert_eq!(coverage_outcome("p", Coverage::Open), None);
        assert_eq!(coverage_outcome("p", Coverage::Same), Some(AlertOutcome::Deduplicated { plan: "p".into() }));
        assert_eq!(
            coverage_outcome("p", Coverage::Covered { plan: "q".into(), remedy: "restart:VAEL_Core".into() }),
            Some(AlertOutcome::CooledDown { target: "VAEL_Core".into(), plan: "q".into() })
        );
    }
}
