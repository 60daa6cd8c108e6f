//! The reconciler: the only thing in Antibody that acts.
//!
//! Staged per plan: admit (whitelist, input rules) → step the actions in order, each
//! idempotent and resumable from status → write conditions and report. Terminal plans are
//! never touched again; a reconcile that makes no progress writes nothing.

#[cfg(test)]
mod fake_api;
mod operator;
pub mod replay;
pub mod throttle;

use crate::names::PLAN_ANNOTATION;
use crate::reason::Reason;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, warn};

use crate::actions::{self, ActionContext, Checkpoint, Step};
use crate::admission;
use crate::conditions::{self, Outcome};
use crate::config::{Config, OnThrottle, ResolvedTarget, SharedConfig};
use crate::plan::{ActionStatus, ActionType, PatchPlan, PatchPlanStatus, Phase, StepState};
use crate::report::http::Health;
use crate::report::{PlanTransition, Reporter, TransitionKind};
use throttle::{Activity, Gate};
use tokio_util::sync::CancellationToken;

/// Process-wide settings for the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Shadow mode: every plan runs as if `spec.dryRun` were set.
    pub dry_run: bool,
    /// Only watch PatchPlans in this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Reconciles in flight at once.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self { dry_run: false, namespace: None, concurrency: 16 }
    }
}

/// Shared state of the reconciler.
pub struct Context {
    pub client: Client,
    pub config: Arc<SharedConfig>,
    pub settings: Settings,
    pub reporter: Arc<Reporter>,
    /// Consecutive failures per plan, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Every PatchPlan the controller sees: the history cool-downs and budgets count.
    store: OnceLock<Store<PatchPlan>>,
    /// Namespace metadata (the pause annotation), kept by a watch instead of a GET per plan.
    namespaces: OnceLock<Store<PartialObjectMeta<Namespace>>>,
    /// Actions of plans admitted a moment ago, not yet visible in the store.
    reservations: Mutex<Vec<Activity>>,
    /// The status this controller last wrote, per plan uid. The watch can hand a reconcile an
    /// object older than our own last write (the event of an intermediate write arriving after
    /// a later one); acting on it would repeat work. Bounded (see [`bound_written`]).
    written: WrittenStatus,
}

type WrittenStatus = Arc<Mutex<HashMap<String, (Written, Instant)>>>;

#[derive(Debug, Clone)]
enum Written {
    /// The status and the resourceVersion it was written at (the next write's precondition).
    InFlight(Box<PatchPlanStatus>, Option<String>),
    Terminal,
}

/// Past this many entries, records older than [`WRITTEN_TTL`] are dropped: the watch has long
/// delivered them by then, and a stale object is caught by the resourceVersion precondition.
const WRITTEN_CAP: usize = 4096;
const WRITTEN_TTL: Duration = Duration::from_secs(600);

/// Keep the `written` map bounded: when over `cap`, drop records older than `ttl`, then (if
/// still over) the oldest until it is at `cap`.
fn bound_written<T>(map: &mut HashMap<String, (T, Instant)>, now: Instant, cap: usize, ttl: Duration) {
    if map.len() <= cap {
        return;
    }
    map.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
    if map.len() > cap {
        let mut ages: Vec<(Instant, String)> = map.iter().map(|(k, (_, at))| (*at, k.clone())).collect();
        ages.sort();
        for (_, key) in ages.into_iter().take(map.len() - cap) {
            map.remove(&key);
        }
    }
}

impl Context {
    pub fn new(client: Client, config: Arc<SharedConfig>, settings: Settings, reporter: Arc<Reporter>) -> Self {
        Self {
            client,
            config,
            settings,
            reporter,
            failures: Mutex::default(),
            store: OnceLock::new(),
            namespaces: OnceLock::new(),
            reservations: Mutex::default(),
            written: WrittenStatus::default(),
        }
    }

    /// The freshest known status of a plan and its resourceVersion: ours if we wrote after the
    /// object we were handed.
    fn latest_status(&self, uid: &str, plan: &PatchPlan) -> (Option<PatchPlanStatus>, Option<String>) {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        match written.get(uid) {
            Some((Written::Terminal, _)) => {
                (Some(PatchPlanStatus { phase: Phase::Failed, ..Default::default() }), None)
            }
            Some((Written::InFlight(ours, version), _)) => (Some((**ours).clone()), version.clone()),
            None => (plan.status.clone(), plan.metadata.resource_version.clone()),
        }
    }

    /// Cool-down and budget check for a plan about to start; reserves its actions when open.
    /// One lock around check-and-reserve: concurrent reconciles cannot both pass a full budget.
    fn gate(&self, config: &Config, plan: &PatchPlan, targets: &[ResolvedTarget], now: &Time) -> Gate {
        let safety = &config.safety;
        if !safety.throttles() {
            return Gate::Open;
        }
        let uid = plan.metadata.uid.clone().unwrap_or_default();
        let mut reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let horizon = safety
            .cooldown_seconds
            .max(safety.global_budget.as_ref().map_or(0, |b| b.window_seconds))
            .max(safety.namespace_budget.as_ref().map_or(0, |b| b.window_seconds));
        let horizon = i64::try_from(horizon).unwrap_or(i64::MAX);
        reservations.retain(|a| now.0.as_second() - a.at.as_second() <= horizon);
        let mut history: Vec<Activity> = reservations.clone();
        if let Some(store) = self.store.get() {
            for other in store.state() {
                history.extend(activities(config, &other, self.settings.dry_run));
            }
        }
        let history = throttle::dedup(history);
        let wanted: Vec<(String, String)> = targets.iter().map(|t| (t.name.clone(), t.namespace.clone())).collect();
        // Reservations made by reconciles that started after ours count too: no `at <= now` cut.
        let gate = throttle::check(safety, &uid, &wanted, &history, now.0);
        if gate == Gate::Open {
            reservations.extend(wanted.into_iter().enumerate().map(|(index, (target, namespace))| Activity {
                plan_uid: uid.clone(),
                index,
                target,
                namespace,
                at: now.0,
            }));
        }
        gate
    }

    fn failure_count(&self, key: &str, failed: bool) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            let n = failures.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            failures.remove(key);
            0
        }
    }
}

/// The plan's status as last saved, and as being built; saves only when they differ.
/// Status writes are compare-and-swap: the merge patch carries the resourceVersion this writer
/// last saw (409 if the plan changed since). On a conflict the plan is re-read: if its status is
/// still what we last saved (someone changed metadata, e.g. a notify marker), the write is
/// retried at the new version; if another writer (a second leader during a hand-off) changed
/// the status, we stop — the write fails, the freshly read status becomes the base of the next
/// reconcile, and nothing acts on the stale one (no pod signalled twice, no terminal reverted).
struct StatusWriter {
    api: Api<PatchPlan>,
    uid: String,
    written: WrittenStatus,
    name: String,
    saved: PatchPlanStatus,
    status: PatchPlanStatus,
    resource_version: Option<String>,
    generation: Option<i64>,
    index: usize,
}

pub const STATUS_CONFLICT: &str = "another writer changed the plan's status since this controller read it";

impl StatusWriter {
    async fn save(&mut self) -> crate::Result<()> {
        if self.status == self.saved {
            return Ok(());
        }
        let mut conflicts = 0;
        let written = loop {
            let patch = json!({
                "metadata": { "resourceVersion": self.resource_version },
                "status": self.status,
            });
            match self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(written) => break written,
                Err(kube::Error::Api(status)) if status.code == 409 && conflicts < 8 => {
                    conflicts += 1;
                    let fresh = self.api.get_status(&self.name).await?;
                    let server = fresh.status.clone().unwrap_or_default();
                    if fresh.metadata.uid.as_deref() != Some(self.uid.as_str()) || !same_status(&server, &self.saved) {
                        warn!(plan = %self.name, "status changed underneath (another leader?): not acting on a stale copy");
                        self.record(&server, fresh.metadata.resource_version.clone());
                        return Err(crate::Error::Kube(kube::Error::Api(status)));
                    }
                    self.resource_version = fresh.metadata.resource_version.clone();
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.saved = self.status.clone();
        self.resource_version = written.metadata.resource_version.clone();
        let status = self.status.clone();
        self.record(&status, self.resource_version.clone());
        Ok(())
    }

    /// Remember `status` at `version` as the freshest copy of this plan.
    fn record(&self, status: &PatchPlanStatus, version: Option<String>) {
        let record = if status.phase.is_terminal() {
            Written::Terminal
        } else {
            Written::InFlight(Box::new(status.clone()), version)
        };
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written.insert(self.uid.clone(), (record, Instant::now()));
        bound_written(&mut written, Instant::now(), WRITTEN_CAP, WRITTEN_TTL);
    }

    fn set_outcome(&mut self, outcome: &Outcome, now: &Time) {
        self.status.observed_generation = self.generation;
        self.status.conditions = conditions::compute(outcome, self.generation, now, &self.status.conditions);
    }
}

/// Compared as JSON: what the API server returns is what we sent, modulo representation.
fn same_status(a: &PatchPlanStatus, b: &PatchPlanStatus) -> bool {
    a == b || serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

impl Checkpoint for StatusWriter {
    async fn checkpoint(&mut self, action: &ActionStatus) -> crate::Result<()> {
        self.status.actions[self.index] = action.clone();
        self.save().await
    }
}

/// The actions a plan has started, as throttle history. Dry runs change nothing: not counted.
fn activities(config: &Config, plan: &PatchPlan, global_dry_run: bool) -> Vec<Activity> {
    let (Some(status), Some(uid)) = (&plan.status, &plan.metadata.uid) else { return Vec::new() };
    if plan.spec.dry_run || global_dry_run || config.safety.dry_run {
        return Vec::new();
    }
    let plan_namespace = plan.metadata.namespace.as_deref().unwrap_or_default();
    status
        .actions
        .iter()
        .enumerate()
        .filter(|(_, a)| a.state != StepState::Pending)
        .filter_map(|(index, a)| {
            let at = a.started_at.as_ref()?.0;
            let namespace = config
                .resolve(&a.target, plan_namespace)
                .map(|t| t.namespace)
                .unwrap_or_else(|_| plan_namespace.into());
            Some(Activity { plan_uid: uid.clone(), index, target: a.target.clone(), namespace, at })
        })
        .collect()
}

const AUDIT_RETRY: Duration = Duration::from_secs(5);
use crate::names::PAUSE_ANNOTATION;

/// Paused globally (config), for the plan's namespace or for a target's namespace (annotation)?
/// A plan in one namespace must not act on a namespace its operators paused.
async fn paused(
    ctx: &Context,
    config: &Config,
    namespace: &str,
    targets: &[ResolvedTarget],
) -> crate::Result<Option<String>> {
    if config.safety.paused {
        return Ok(Some("safety.paused is true in antibody.yml: new plans wait".into()));
    }
    let mut namespaces: Vec<&str> =
        std::iter::once(namespace).chain(targets.iter().map(|t| t.namespace.as_str())).collect();
    namespaces.dedup();
    for candidate in namespaces {
        if let Some(message) = namespace_paused(ctx, candidate).await? {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

/// `audit.fail_closed`: why the plan may not act now (a record reported so far is not on disk).
async fn audit_held(ctx: &Context, config: &Config, dry_run: bool) -> Option<String> {
    if !config.audit.fail_closed || dry_run {
        return None;
    }
    ctx.reporter.audit_durable().await.err().map(|e| {
        format!(
            "{e}; audit.fail_closed holds the plan until its records can be written (retry every {}s)",
            AUDIT_RETRY.as_secs()
        )
    })
}

async fn namespace_paused(ctx: &Context, namespace: &str) -> crate::Result<Option<String>> {
    // From the namespace watch; a namespace it has not seen yet (still listing) is read directly.
    let cached = ctx.namespaces.get().and_then(|store| store.get(&ObjectRef::new(namespace)));
    let annotations = match cached {
        Some(ns) => ns.metadata.annotations.clone(),
        None => {
            let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
            actions::not_found(namespaces.get_metadata(namespace).await)?.and_then(|n| n.metadata.annotations)
        }
    };
    let flagged = annotations.is_some_and(|a| a.get(PAUSE_ANNOTATION).map(String::as_str) == Some("true"));
    Ok(flagged.then(|| format!("namespace {namespace} is annotated {PAUSE_ANNOTATION}=true: new plans wait")))
}

/// Reason while an action of this kind is in flight.
fn in_progress_reason(action: ActionType) -> Reason {
    match action {
        ActionType::Restart => Reason::RolloutInProgress,
        ActionType::EditEnv => Reason::EditingEnv,
        ActionType::ReloadFlask => Reason::Reloading,
        ActionType::Rollback => Reason::RollingBack,
        ActionType::DeletePod => Reason::EvictingPod,
    }
}

pub async fn reconcile(plan: Arc<PatchPlan>, ctx: Arc<Context>) -> crate::Result<Action> {
    let (Some(namespace), Some(uid)) = (plan.namespace(), plan.meta().uid.clone()) else {
        return Ok(Action::await_change());
    };
    let (current, resource_version) = ctx.latest_status(&uid, &plan);
    let current = current.unwrap_or_default();
    // Terminal states are one-way.
    if current.phase.is_terminal() {
        // Seen again (e.g. on start): notifiers re-send outcomes they have no marker for.
        ctx.reporter.replay_terminal(&plan);
        return Ok(Action::await_change());
    }
    let config = ctx.config.get();
    let now = Time(jiff::Timestamp::now());
    let mut writer = StatusWriter {
        api: Api::namespaced(ctx.client.clone(), &namespace),
        uid,
        written: ctx.written.clone(),
        name: plan.name_any(),
        saved: current.clone(),
        status: current,
        resource_version,
        generation: plan.metadata.generation,
        index: 0,
    };
    let total = plan.spec.actions.len();
    let first_sight = writer.status.actions.len() != total;
    if first_sight {
        writer.status = PatchPlanStatus {
            phase: Phase::Pending,
            summary: plan.summary(),
            started_at: Some(now.clone()),
            actions: plan
                .spec
                .actions
                .iter()
                .map(|a| ActionStatus { action: Some(a.action), target: a.target.clone(), ..Default::default() })
                .collect(),
            ..Default::default()
        };
    }

    // Admission runs on every reconcile: a config change revokes what it no longer allows.
    // A signature's expiry counts until the plan starts (a long rollout may outlive it).
    let starting = writer.status.phase == Phase::Pending;
    let admitted = admission::check_namespace(&config, &namespace, ctx.settings.namespace.as_deref())
        .and_then(|()| admission::admit(&config, &plan.spec, &namespace))
        .and_then(|targets| admission::check_signature(&config, &plan, starting).map(|signed| (targets, signed)));
    let (targets, signed) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let outcome = Outcome::failed(refusal.reason, refusal.message);
            return finish(&ctx, &plan, &mut writer, outcome, &now).await;
        }
    };
    let dry_run = plan.spec.dry_run || ctx.settings.dry_run || config.safety.dry_run;

    // Set once the started record is known to be on disk (`audit.fail_closed`).
    let mut audit_confirmed = false;
    // Not yet acting: the pause switch, cool-downs and budgets decide whether it may start.
    if writer.status.phase == Phase::Pending {
        if !dry_run {
            if let Some(message) = paused(&ctx, &config, &namespace, &targets).await? {
                writer.set_outcome(&Outcome::in_progress(Reason::Paused, message), &now);
                writer.save().await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            // Approval, freeze, change windows (`operator.rs`): before anything is reserved.
            if let Some(action) = operator::gate(&ctx, &config, &plan, &namespace, &targets, &mut writer, &now).await? {
                return Ok(action);
            }
            // A signed plan acts once per signature: remembered durably before it acts.
            if let Some(signed) = &signed {
                let entry = replay::Entry {
                    uid: writer.uid.clone(),
                    plan: format!("{namespace}/{}", writer.name),
                    expires: signed.expires,
                };
                let home = ctx.settings.namespace.as_deref().unwrap_or(&config.defaults.plan_namespace);
                if let Err(holder) = replay::record(&ctx.client, home, &signed.fingerprint, &entry).await? {
                    let message = format!(
                        "this signature (key {}) was already executed by plan {} (uid {}); a signature acts once \
                         until it expires — sign the plan again to run it again",
                        signed.key_name, holder.plan, holder.uid
                    );
                    let outcome = Outcome::failed(Reason::SignatureReplayed, message);
                    return finish(&ctx, &plan, &mut writer, outcome, &now).await;
                }
            }
            if let Gate::Throttled { message, retry_after } = ctx.gate(&config, &plan, &targets, &now) {
                return match config.safety.on_throttle {
                    OnThrottle::Fail => {
                        let outcome =
                            Outcome::failed(Reason::Throttled, format!("{message} (safety.on_throttle: fail)"));
                        finish(&ctx, &plan, &mut writer, outcome, &now).await
                    }
                    OnThrottle::Wait => {
                        let message =
                            format!("{message}; waiting {}s (safety.on_throttle: wait)", retry_after.as_secs());
                        writer.set_outcome(&Outcome::in_progress(Reason::Throttled, message), &now);
                        writer.save().await?;
                        Ok(Action::requeue(retry_after.max(Duration::from_millis(200))))
                    }
                };
            }
        }
        // Fail closed: the log must be writable before the plan is even marked started.
        if let Some(message) = audit_held(&ctx, &config, dry_run).await {
            warn!(plan = %writer.name, %message, "plan held: audit log unavailable");
            writer.set_outcome(&Outcome::in_progress(Reason::AuditUnavailable, message), &now);
            writer.save().await?;
            return Ok(Action::requeue(AUDIT_RETRY));
        }
        writer.status.phase = Phase::Running;
        writer.set_outcome(
            &Outcome::in_progress(Reason::Started, format!("running {total} action(s): {}", plan.summary())),
            &now,
        );
        // With cool-downs or budgets the start is history other plans are gated on, and a re-run
        // after a crash must not be throttled after it acted: save it before acting. Otherwise
        // the first checkpoint (restart, reload, evict save before they act) or the final status
        // carries it: one write less per plan, and a crash re-runs idempotent actions.
        if config.safety.throttles() {
            writer.save().await?;
        }
        let message = format!("running {}", plan.summary());
        report(&ctx, &plan, &writer, TransitionKind::Started, Reason::Started, &message);
        // ... and its `started` record must be on disk before the first action.
        if let Some(message) = audit_held(&ctx, &config, dry_run).await {
            warn!(plan = %writer.name, %message, "plan held: its started record was not written");
            ctx.reporter.forget(&writer.uid, TransitionKind::Started);
            writer.status.phase = Phase::Pending;
            writer.set_outcome(&Outcome::in_progress(Reason::AuditUnavailable, message), &now);
            writer.save().await?;
            return Ok(Action::requeue(AUDIT_RETRY));
        }
        audit_confirmed = true;
    }

    let rollout_timeout = Duration::from_secs(config.defaults.rollout_timeout_seconds);
    for (index, (action, target)) in plan.spec.actions.iter().zip(&targets).enumerate() {
        if writer.status.actions[index].state == StepState::Succeeded {
            continue;
        }
        writer.index = index;
        // Fail closed before each action that has not begun: what happened so far is on disk.
        let begins = writer.status.actions[index].state == StepState::Pending;
        if begins
            && !std::mem::take(&mut audit_confirmed)
            && let Some(message) = audit_held(&ctx, &config, dry_run).await
        {
            warn!(plan = %writer.name, %message, "action held: audit log unavailable");
            writer.set_outcome(&Outcome::in_progress(Reason::AuditUnavailable, message), &now);
            writer.save().await?;
            return Ok(Action::requeue(AUDIT_RETRY));
        }
        // Each action's own clock: an action that follows another in the same reconcile starts
        // after it finished, and its timestamps say so.
        let now = Time(jiff::Timestamp::now());
        let action_ctx = ActionContext {
            client: &ctx.client,
            plan: &plan,
            index,
            target,
            dry_run,
            rollout_timeout,
            now: now.clone(),
            history: config.safety.backup_history,
            refuse_disruptive_restarts: config.safety.refuse_disruptive_restarts,
        };
        let mut action_status = writer.status.actions[index].clone();
        let step = match (&action_status.effect, action.action) {
            // The side effect is done; only its verification is still open.
            (Some(effect), _) => Step::Done(effect.clone()),
            (None, ActionType::Restart) => actions::restart::run(&action_ctx, &mut action_status, &mut writer).await?,
            (None, ActionType::EditEnv) => actions::env::run(&action_ctx, &mut action_status, &mut writer).await?,
            (None, ActionType::ReloadFlask) => {
                actions::reload::run(&action_ctx, &mut action_status, &mut writer).await?
            }
            (None, ActionType::Rollback) => {
                actions::env::rollback(&action_ctx, &mut action_status, &mut writer).await?
            }
            (None, ActionType::DeletePod) => {
                actions::delete_pod::run(&action_ctx, &mut action_status, &mut writer).await?
            }
        };
        action_status.started_at.get_or_insert_with(|| now.clone());
        // Done means the request went through; the action is applied once its effect is seen.
        let step = match step {
            Step::Done(message) if !dry_run => {
                observe(&action_ctx, &plan, &targets, &mut action_status, message).await?
            }
            other => other,
        };
        match step {
            Step::Done(message) => {
                info!(plan = %writer.name, action = %action.describe(), %message, "action done");
                action_status.state = StepState::Succeeded;
                action_status.finished_at = Some(Time(jiff::Timestamp::now()));
                action_status.message = message.clone();
                // Not saved yet: the next action's checkpoint, wait or the final status saves it
                // (one write less per action). A crash before then re-runs this action, and
                // every action is idempotent from the status it saved before acting.
                writer.status.actions[index] = action_status;
                let message = format!("{}: {message}", action.describe());
                report(
                    &ctx,
                    &plan,
                    &writer,
                    TransitionKind::ActionSucceeded { index },
                    Reason::ActionSucceeded,
                    &message,
                );
            }
            Step::Wait { message, requeue } => {
                action_status.state = StepState::Running;
                action_status.message = message.clone();
                writer.status.actions[index] = action_status;
                writer.set_outcome(
                    &Outcome::in_progress(
                        in_progress_reason(action.action),
                        format!("{}: {message}", action.describe()),
                    ),
                    &now,
                );
                writer.save().await?;
                // Watches wake us on progress; the requeue is the safety net if a watch is
                // broken (e.g. an API server outage expired it): look again at least every 10 s.
                return Ok(Action::requeue(requeue.clamp(Duration::from_millis(200), Duration::from_secs(10))));
            }
            Step::Failed { reason, message } => {
                let failure = format!("{}: {message}", action.describe());
                // A transactional plan undoes its edit; otherwise the failure stands as is.
                let undo = action.action == ActionType::Restart || reason == Reason::VerificationFailed;
                let compensated = if plan.spec.rollback_on_failure && undo {
                    compensate(&plan, &targets, index, &action_ctx, &mut action_status, &mut writer, &failure).await?
                } else {
                    None
                };
                action_status.state = StepState::Failed;
                action_status.finished_at = Some(Time(jiff::Timestamp::now()));
                action_status.message = message;
                writer.status.actions[index] = action_status;
                let outcome = compensated.unwrap_or_else(|| Outcome::failed(reason, failure));
                return finish(&ctx, &plan, &mut writer, outcome, &now).await;
            }
        }
    }
    let unobserved = crate::observation::unobserved(&plan.spec.actions, &targets);
    let outcome = if dry_run {
        Outcome::DryRun { message: format!("proved {total} action(s) with dryRun=All; nothing changed") }
    } else if unobserved.is_empty() {
        Outcome::Applied { message: format!("applied {total} action(s), effect observed: {}", plan.summary()) }
    } else {
        Outcome::Unverified {
            message: format!("carried out {total} action(s), effect not observed: {}", unobserved.join("; ")),
        }
    };
    finish(&ctx, &plan, &mut writer, outcome, &now).await
}

/// An action's request went through (`message`): observe its effect in the application before
/// it counts as done. The target's `verify` probe runs after the action unless a later action
/// of the plan carries this one's effect (an edit followed by its restart or reload); what the
/// probe or the action itself observed is kept in `verified`.
async fn observe(
    ctx: &ActionContext<'_>,
    plan: &PatchPlan,
    targets: &[ResolvedTarget],
    status: &mut ActionStatus,
    message: String,
) -> crate::Result<Step> {
    let index = ctx.index;
    match crate::observation::observation(&plan.spec.actions, targets, index) {
        crate::observation::Observation::Probe => {}
        crate::observation::Observation::Itself => {
            status.verified = Some(message.clone());
            return Ok(Step::Done(message));
        }
        crate::observation::Observation::CarriedBy(_) | crate::observation::Observation::Unobservable => {
            return Ok(Step::Done(message));
        }
    }
    let Some(spec) = &ctx.target.verify else { return Ok(Step::Done(message)) };
    // Recorded (and saved with the first Wait) so that the action is not repeated.
    status.effect.get_or_insert_with(|| message.clone());
    match actions::verify::probe(ctx, spec, status).await? {
        Step::Done(observed) => {
            status.verified = Some(observed.clone());
            Ok(Step::Done(format!("{message}; verified: {observed}")))
        }
        other => Ok(other),
    }
}

/// A transactional plan's restart failed, or an action's effect failed verification: restore the
/// backup of the edit on that target (the failed action itself, or the last one before it) and,
/// after a restart, restart again. `None` when there is nothing to undo. The compensating
/// `restartedAt` is saved before the patch, so a crash here never starts a third rollout.
async fn compensate(
    plan: &PatchPlan,
    targets: &[ResolvedTarget],
    failed_index: usize,
    restart_ctx: &ActionContext<'_>,
    restart_status: &mut ActionStatus,
    writer: &mut StatusWriter,
    failure: &str,
) -> crate::Result<Option<Outcome>> {
    let edit = (0..=failed_index).rev().find(|&i| {
        let a = &plan.spec.actions[i];
        a.action == ActionType::EditEnv && a.target == plan.spec.actions[failed_index].target
    });
    let Some(edit) = edit else { return Ok(None) };
    let backup =
        if edit == failed_index { &restart_status.backup_name } else { &writer.status.actions[edit].backup_name };
    let Some(backup) = backup.clone() else { return Ok(None) };
    let edit_ctx = ActionContext { index: edit, target: &targets[edit], now: restart_ctx.now.clone(), ..*restart_ctx };
    let mut edit_status =
        if edit == failed_index { restart_status.clone() } else { writer.status.actions[edit].clone() };
    let expected = edit_status.backup_digest.clone().unwrap_or_default();
    let restored = actions::env::restore(
        &edit_ctx,
        &mut edit_status,
        &backup,
        Some(&expected),
        None::<&mut actions::env::NoCheckpoint>,
    )
    .await?;
    let Step::Done(restored) = restored else {
        let why = match restored {
            Step::Failed { message, .. } | Step::Wait { message, .. } => message,
            Step::Done(_) => String::new(),
        };
        return Ok(Some(Outcome::failed(Reason::RolledBack, format!("{failure}; rollback FAILED: {why}"))));
    };
    writer.status.actions[edit].message = format!("{}; rolled back: {restored}", writer.status.actions[edit].message);
    if plan.spec.actions[failed_index].action != ActionType::Restart {
        // A reload or probe failed: the restored ConfigMap reaches the app with its next
        // restart or reload; nothing here claims that it already has.
        return Ok(Some(Outcome::failed(
            Reason::RolledBack,
            format!("{failure}; {restored}; the app picks the restored data up at its next restart or reload"),
        )));
    }
    let restarted_at = match &restart_status.compensation_restarted_at {
        Some(value) => value.clone(),
        None => {
            let value = jiff::Timestamp::now().to_string();
            restart_status.compensation_restarted_at = Some(value.clone());
            writer.checkpoint(restart_status).await?;
            value
        }
    };
    actions::restart::trigger(restart_ctx, &restarted_at).await?;
    Ok(Some(Outcome::failed(
        Reason::RolledBack,
        format!("{failure}; {restored}; restarted again (restartedAt {restarted_at})"),
    )))
}

/// Write a terminal status and report it.
async fn finish(
    ctx: &Context,
    plan: &PatchPlan,
    writer: &mut StatusWriter,
    outcome: Outcome,
    now: &Time,
) -> crate::Result<Action> {
    let (phase, kind, reason, message) = match &outcome {
        Outcome::Applied { message } => (Phase::Succeeded, TransitionKind::Applied, Reason::Applied, message.clone()),
        Outcome::DryRun { message } => (Phase::Succeeded, TransitionKind::DryRun, Reason::DryRun, message.clone()),
        Outcome::Unverified { message } => {
            (Phase::Succeeded, TransitionKind::Unverified, Reason::Unverified, message.clone())
        }
        Outcome::Failed { reason, message } => (Phase::Failed, TransitionKind::Failed, *reason, message.clone()),
        Outcome::InProgress { .. } => return Ok(Action::await_change()),
    };
    writer.status.phase = phase;
    writer.status.summary = plan.summary();
    writer.status.finished_at.get_or_insert_with(|| Time(jiff::Timestamp::now()));
    writer.status.started_at.get_or_insert_with(|| now.clone());
    writer.set_outcome(&outcome, now);
    writer.save().await?;
    match kind {
        TransitionKind::Failed => warn!(plan = %writer.name, %reason, %message, "plan failed"),
        _ => info!(plan = %writer.name, %reason, %message, "plan finished"),
    }
    report(ctx, plan, writer, kind, reason, &message);
    count_for_breakers(ctx, plan, kind).await;
    Ok(Action::await_change())
}

/// `safety.breaker`: a finished plan counts for (failed) or against (succeeded) each of its
/// targets' consecutive failures. Best effort: an API error is logged, the plan's end stands.
async fn count_for_breakers(ctx: &Context, plan: &PatchPlan, kind: TransitionKind) {
    let config = ctx.config.get();
    let Some(breaker) = &config.safety.breaker else { return };
    let failed = match kind {
        TransitionKind::Failed => true,
        TransitionKind::Applied | TransitionKind::Unverified => false,
        _ => return,
    };
    let Some(namespace) = plan.namespace() else { return };
    let targets = crate::escalation::targets_of(plan);
    let name = plan.name_any();
    match crate::escalation::record(&ctx.client, &namespace, &targets, failed, Some(breaker.failures), &name).await {
        Ok(opened) if !opened.is_empty() => {
            warn!(plan = %name, targets = ?opened, "breaker open: plans on these targets wait for `antibody breaker reset`");
        }
        Ok(_) => {}
        Err(e) => warn!(plan = %name, error = %e, "breaker count not recorded"),
    }
}

/// Tell the reporter, with the plan as it now stands (never waits on the API).
fn report(ctx: &Context, plan: &PatchPlan, writer: &StatusWriter, kind: TransitionKind, reason: Reason, message: &str) {
    let mut snapshot = plan.clone();
    snapshot.status = Some(writer.status.clone());
    ctx.reporter.plan(PlanTransition { plan: &snapshot, kind, reason, message });
}

/// Back off per plan: 0.5 s, 1 s, 2 s … Never a hot loop.
pub fn error_policy(plan: Arc<PatchPlan>, error: &crate::Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", plan.namespace().unwrap_or_default(), plan.name_any());
    let failures = ctx.failure_count(&key, true);
    let labels = crate::report::metrics::ErrorLabels { error: error.metric_label().into() };
    ctx.reporter.metrics.reconcile_errors.get_or_create(&labels).inc();
    let delay = backoff(failures, api_unavailable(error));
    warn!(plan = %key, %error, failures, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

/// The API server is unreachable or shedding load (connect/transport error, 429, 5xx): the
/// plan itself is fine and should resume soon after the API is back.
pub fn api_unavailable(error: &crate::Error) -> bool {
    matches!(error, crate::Error::Kube(e) if crate::backoff::api_failure(e) == crate::backoff::ApiFailure::Unavailable)
}

/// Capped at 60 s for errors of the plan, at 5 s while the API is unavailable: a failed connect
/// costs nothing, and a 30 s outage must not leave a plan asleep for a minute after it.
pub fn backoff(failures: u32, api_unavailable: bool) -> Duration {
    let cap = if api_unavailable { Duration::from_secs(5) } else { Duration::from_secs(60) };
    crate::backoff::Backoff::new(Duration::from_millis(500), cap).ceiling(failures.saturating_sub(1))
}

/// What the controller keeps of a PatchPlan in its cache: the field sets of managedFields
/// (only who owns the spec is read) and kubectl's last-applied copy of the spec were most of
/// an object's size.
fn trim_for_cache(plan: &mut PatchPlan) {
    crate::report::summary::trim_managed_fields(plan);
    if let Some(annotations) = plan.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Deployment events → the plan that restarted it (annotation `antibody.vael.io/plan`).
fn plan_of_deployment(deployment: Deployment) -> Option<ObjectRef<PatchPlan>> {
    let value = deployment.metadata.annotations.as_ref()?.get(PLAN_ANNOTATION)?;
    let (namespace, name) = value.split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Run the controller until `shutdown` is cancelled; flips `health.watches_synced` once listed.
pub async fn run(ctx: Arc<Context>, health: Arc<Health>, shutdown: CancellationToken) -> crate::Result<()> {
    let client = ctx.client.clone();
    let plans: Api<PatchPlan> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Err(e) = plans.list(&ListParams::default().limit(1)).await {
        return Err(crate::Error::Cluster(format!(
            "cannot list PatchPlans ({e}); is the CRD installed? `antibody crd | kubectl apply -f -`"
        )));
    }
    // Deployments Antibody restarted, watched only in the namespaces its targets live in (the
    // RBAC `antibody rbac` renders grants nothing else); everywhere only when a target acts in
    // any plan's namespace. A namespace added by a config reload is covered by the 10 s requeue.
    let deployment_namespaces: Vec<Option<String>> =
        match crate::rbac::target_namespaces(&ctx.config.get(), ctx.settings.namespace.as_deref()) {
            Some(namespaces) => namespaces.into_iter().map(Some).collect(),
            None => vec![None],
        };
    // The pause switch's namespaces, watched (metadata only) for the life of the controller.
    let namespace_watch = match &ctx.settings.namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let (namespaces, namespace_writer) = reflector::store();
    let _ = ctx.namespaces.set(namespaces);
    let namespace_watch = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), namespace_watch)
        .backoff(crate::backoff::WatchBackoff::new())
        .reflect(namespace_writer)
        .for_each(|event| async move {
            if let Err(error) = event {
                warn!(%error, "namespace watch");
            }
        });
    let namespace_watch = tokio::spawn(namespace_watch);
    let scope = ctx.settings.namespace.clone();
    let restarted = watcher::Config::default().labels(&format!("{}=true", crate::names::RESTARTED_LABEL));
    info!(
        namespace = ctx.settings.namespace.as_deref().unwrap_or("*"),
        dry_run = ctx.settings.dry_run,
        "controller starting"
    );
    let (store, writer) = reflector::store();
    let plan_events = watcher(plans, watcher::Config::default())
        .backoff(crate::backoff::WatchBackoff::new())
        .modify(trim_for_cache)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(plan_events, store.clone());
    let _ = ctx.store.set(store.clone());
    ctx.reporter.metrics.watch_plans(store.clone());
    // Polled in the controller's own task: the store's readiness signal wakes only its last
    // poller, so a separate task waiting on it is never woken (or steals the controller's wake).
    let synced = async move {
        if store.wait_until_ready().await.is_ok() {
            health.watches_synced.store(true, std::sync::atomic::Ordering::Relaxed);
            info!("PatchPlan watch synced");
        }
    };
    let mut controller = controller;
    for namespace in deployment_namespaces {
        let deployments: Api<Deployment> = match &namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let scope = scope.clone();
        controller = controller.watches(deployments, restarted.clone(), move |deployment| {
            // A namespaced controller ignores plans of other instances.
            plan_of_deployment(deployment).filter(|plan| scope.is_none() || plan.namespace == scope)
        });
    }
    let controller = controller
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .trigger_backoff(crate::backoff::WatchBackoff::new())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            |plan, ctx: Arc<Context>| {
                let key = format!("{}/{}", plan.namespace().unwrap_or_default(), plan.name_any());
                // Every line logged while reconciling carries the plan (and its uid).
                let span =
                    tracing::info_span!("reconcile", plan = %key, uid = plan.meta().uid.as_deref().unwrap_or(""));
                async move {
                    let result = reconcile(plan, ctx.clone()).await;
                    if result.is_ok() {
                        ctx.failure_count(&key, false);
                    }
                    result
                }
                .instrument(span)
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "controller stream");
            }
        });
    if let futures::future::Either::Right(((), controller)) =
        futures::future::select(std::pin::pin!(controller), std::pin::pin!(synced)).await
    {
        controller.await;
    }
    namespace_watch.abort();
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod step_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let delays = |unavailable| -> Vec<u64> {
            [1, 2, 3, 4, 8, 50].iter().map(|&n| backoff(n, unavailable).as_millis() as u64).collect()
        };
        assert_eq!(delays(false), [500, 1000, 2000, 4000, 60_000, 60_000]);
        assert_eq!(delays(true), [500, 1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn only_an_unavailable_api_gets_the_short_backoff() {
        let api =
            |code| crate::Error::Kube(kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed()));
        let cases = [(api(429), true), (api(503), true), (api(500), true), (api(409), false), (api(422), false)];
        for (error, expected) in cases {
            assert_eq!(api_unavailable(&error), expected, "{error}");
            assert_eq!(error.metric_label() == "api_unavailable", expected, "{error}");
        }
        assert_eq!(api(409).metric_label(), "api_conflict");
        assert_eq!(api(422).metric_label(), "api_rejected");
        assert_eq!(crate::Error::Lease("x".into()).metric_label(), "lease");
        assert!(crate::Error::METRIC_LABELS.contains(&crate::Error::Cluster("x".into()).metric_label()));
        assert!(!api_unavailable(&crate::Error::Config { path: "x".into(), message: "y".into() }));
    }

    #[test]
    fn the_written_map_stays_bounded() {
        let start = Instant::now();
        let later = start + Duration::from_secs(700);
        let mut map: HashMap<String, ((), Instant)> = HashMap::new();
        for i in 0..10 {
            map.insert(format!("old{i}"), ((), start));
        }
        bound_written(&mut map, later, 20, Duration::from_secs(600));
        assert_eq!(map.len(), 10, "under the cap: nothing dropped");
        for i in 0..15 {
            map.insert(format!("new{i}"), ((), later));
        }
        bound_written(&mut map, later, 20, Duration::from_secs(600));
        assert_eq!(map.len(), 15, "over the cap: the old ones go");
        assert!(map.keys().all(|k| k.starts_with("new")));
        for i in 0..10 {
            map.insert(format!("newer{i}"), ((), later + Duration::from_secs(i)));
        }
        bound_written(&mut map, later, 20, Duration::from_secs(600));
        assert_eq!(map.len(), 20, "all young: the oldest go down to the cap");
    }

    #[test]
    fn deployments_map_back_to_their_plan() {
        let mut d = Deployment::default();
        assert_eq!(plan_of_deployment(d.clone()), None);
        d.metadata.annotations = Some([(PLAN_ANNOTATION.to_string(), "ns1/plan-a".to_string())].into());
        assert_eq!(plan_of_deployment(d), Some(ObjectRef::new("plan-a").within("ns1")));
    }
}
