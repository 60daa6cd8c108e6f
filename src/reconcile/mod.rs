//! The reconciler: the only thing in Antibody that acts.
//!
//! Staged per plan: admit (whitelist, input rules) → step the actions in order, each
//! idempotent and resumable from status → write conditions and report. Terminal plans are
//! never touched again; a reconcile that makes no progress writes nothing.

pub mod admission;
pub mod rollout;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::actions::{self, ActionContext, Checkpoint, Step};
use crate::conditions::{self, Outcome};
use crate::config::SharedConfig;
use crate::plan::{ActionStatus, ActionType, PLAN_ANNOTATION, PatchPlan, PatchPlanStatus, Phase, StepState};
use crate::report::http::Health;
use crate::report::{PlanTransition, Reporter, TransitionKind};
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
}

impl Context {
    pub fn new(client: Client, config: Arc<SharedConfig>, settings: Settings, reporter: Arc<Reporter>) -> Self {
        Self { client, config, settings, reporter, failures: Mutex::default() }
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
struct StatusWriter {
    api: Api<PatchPlan>,
    name: String,
    saved: PatchPlanStatus,
    status: PatchPlanStatus,
    generation: Option<i64>,
    index: usize,
}

impl StatusWriter {
    async fn save(&mut self) -> crate::Result<()> {
        if self.status == self.saved {
            return Ok(());
        }
        let patch = json!({ "status": self.status });
        self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.saved = self.status.clone();
        Ok(())
    }

    fn set_outcome(&mut self, outcome: &Outcome, now: &Time) {
        self.status.observed_generation = self.generation;
        self.status.conditions = conditions::compute(outcome, self.generation, now, &self.status.conditions);
    }
}

impl Checkpoint for StatusWriter {
    async fn checkpoint(&mut self, action: &ActionStatus) -> crate::Result<()> {
        self.status.actions[self.index] = action.clone();
        self.save().await
    }
}

/// Reason while an action of this kind is in flight.
fn in_progress_reason(action: ActionType) -> &'static str {
    match action {
        ActionType::Restart => "RolloutInProgress",
        ActionType::EditEnv => "EditingEnv",
        ActionType::ReloadFlask => "Reloading",
    }
}

pub async fn reconcile(plan: Arc<PatchPlan>, ctx: Arc<Context>) -> crate::Result<Action> {
    let (Some(namespace), Some(_)) = (plan.namespace(), plan.meta().uid.as_ref()) else {
        return Ok(Action::await_change());
    };
    let current = plan.status.clone().unwrap_or_default();
    // Terminal states are one-way.
    if current.phase.is_terminal() {
        return Ok(Action::await_change());
    }
    let config = ctx.config.get();
    let now = Time(jiff::Timestamp::now());
    let mut writer = StatusWriter {
        api: Api::namespaced(ctx.client.clone(), &namespace),
        name: plan.name_any(),
        saved: current.clone(),
        status: current,
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
    let targets = match admission::admit(&config, &plan.spec, &namespace) {
        Ok(targets) => targets,
        Err(refusal) => {
            let outcome = Outcome::failed(refusal.reason, refusal.message);
            return finish(&ctx, &plan, &mut writer, outcome, &now).await;
        }
    };
    if first_sight {
        writer.status.phase = Phase::Running;
        writer.set_outcome(
            &Outcome::in_progress("Started", format!("running {total} action(s): {}", plan.summary())),
            &now,
        );
        writer.save().await?;
        let message = format!("running {}", plan.summary());
        report(&ctx, &plan, &writer, TransitionKind::Started, "Started", &message).await;
    }

    let dry_run = plan.spec.dry_run || ctx.settings.dry_run;
    let rollout_timeout = Duration::from_secs(config.defaults.rollout_timeout_seconds);
    for (index, (action, target)) in plan.spec.actions.iter().zip(&targets).enumerate() {
        if writer.status.actions[index].state == StepState::Succeeded {
            continue;
        }
        writer.index = index;
        let action_ctx = ActionContext {
            client: &ctx.client,
            plan: &plan,
            index,
            target,
            dry_run,
            rollout_timeout,
            now: now.clone(),
        };
        let mut action_status = writer.status.actions[index].clone();
        let step = match action.action {
            ActionType::Restart => actions::restart::run(&action_ctx, &mut action_status, &mut writer).await?,
            ActionType::EditEnv => actions::env::run(&action_ctx, &mut action_status).await?,
            ActionType::ReloadFlask => actions::signal::run(&action_ctx, &mut action_status, &mut writer).await?,
        };
        action_status.started_at.get_or_insert_with(|| now.clone());
        match step {
            Step::Done(message) => {
                info!(plan = %writer.name, action = %action.describe(), %message, "action done");
                action_status.state = StepState::Succeeded;
                action_status.finished_at = Some(Time(jiff::Timestamp::now()));
                action_status.message = message.clone();
                writer.status.actions[index] = action_status;
                if index + 1 < total {
                    writer.save().await?;
                }
                let message = format!("{}: {message}", action.describe());
                report(&ctx, &plan, &writer, TransitionKind::ActionSucceeded { index }, "ActionSucceeded", &message)
                    .await;
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
                return Ok(Action::requeue(requeue.max(Duration::from_millis(200))));
            }
            Step::Failed { reason, message } => {
                action_status.state = StepState::Failed;
                action_status.finished_at = Some(Time(jiff::Timestamp::now()));
                action_status.message = message.clone();
                writer.status.actions[index] = action_status;
                let outcome = Outcome::failed(reason, format!("{}: {message}", action.describe()));
                return finish(&ctx, &plan, &mut writer, outcome, &now).await;
            }
        }
    }
    let outcome = if dry_run {
        Outcome::DryRun { message: format!("proved {total} action(s) with dryRun=All; nothing changed") }
    } else {
        Outcome::Applied { message: format!("applied {total} action(s): {}", plan.summary()) }
    };
    finish(&ctx, &plan, &mut writer, outcome, &now).await
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
        Outcome::Applied { message } => (Phase::Succeeded, TransitionKind::Applied, "Applied", message.clone()),
        Outcome::DryRun { message } => (Phase::Succeeded, TransitionKind::DryRun, "DryRun", message.clone()),
        Outcome::Failed { reason, message } => {
            (Phase::Failed, TransitionKind::Failed, reason.as_str(), message.clone())
        }
        Outcome::InProgress { .. } => return Ok(Action::await_change()),
    };
    writer.status.phase = phase;
    writer.status.summary = plan.summary();
    writer.status.finished_at.get_or_insert_with(|| Time(jiff::Timestamp::now()));
    writer.status.started_at.get_or_insert_with(|| now.clone());
    writer.set_outcome(&outcome, now);
    writer.save().await?;
    match kind {
        TransitionKind::Failed => warn!(plan = %writer.name, reason, %message, "plan failed"),
        _ => info!(plan = %writer.name, reason, %message, "plan finished"),
    }
    report(ctx, plan, writer, kind, reason, &message).await;
    Ok(Action::await_change())
}

/// Tell the reporter, with the plan as it now stands.
async fn report(
    ctx: &Context,
    plan: &PatchPlan,
    writer: &StatusWriter,
    kind: TransitionKind,
    reason: &str,
    message: &str,
) {
    let mut snapshot = plan.clone();
    snapshot.status = Some(writer.status.clone());
    ctx.reporter.plan(PlanTransition { plan: &snapshot, kind, reason, message }).await;
}

/// Back off per plan: 0.5 s, 1 s, 2 s … capped at 60 s. Never a hot loop.
pub fn error_policy(plan: Arc<PatchPlan>, error: &crate::Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", plan.namespace().unwrap_or_default(), plan.name_any());
    let failures = ctx.failure_count(&key, true);
    ctx.reporter.metrics.reconcile_errors.inc();
    let delay = backoff(failures);
    warn!(plan = %key, %error, failures, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(7);
    Duration::from_millis(500u64 << exponent).min(Duration::from_secs(60))
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
        return Err(crate::Error::Config {
            path: "cluster".into(),
            message: format!("cannot list PatchPlans ({e}); is the CRD installed? `antibody crd | kubectl apply -f -`"),
        });
    }
    let deployments: Api<Deployment> = Api::all(client);
    let scope = ctx.settings.namespace.clone();
    let restarted = watcher::Config::default().labels(&format!("{}=true", actions::restart::RESTARTED_LABEL));
    info!(
        namespace = ctx.settings.namespace.as_deref().unwrap_or("*"),
        dry_run = ctx.settings.dry_run,
        "controller starting"
    );
    let controller = Controller::new(plans, watcher::Config::default());
    let store = controller.store();
    tokio::spawn(async move {
        // The store's readiness (kube DelayedInit) wakes only its latest waiter, and the
        // controller waits on it too: poll again on a timer instead of waiting once.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    health.watches_synced.store(true, std::sync::atomic::Ordering::Relaxed);
                    info!("PatchPlan watch synced");
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => continue,
            }
        }
    });
    controller
        .watches(deployments, restarted, move |deployment| {
            // A namespaced controller ignores plans of other instances.
            plan_of_deployment(deployment).filter(|plan| scope.is_none() || plan.namespace == scope)
        })
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            |plan, ctx: Arc<Context>| async move {
                let key = format!("{}/{}", plan.namespace().unwrap_or_default(), plan.name_any());
                let result = reconcile(plan, ctx.clone()).await;
                if result.is_ok() {
                    ctx.failure_count(&key, false);
                }
                result
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "controller stream");
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let delays: Vec<u64> = [1, 2, 3, 8, 50].iter().map(|&n| backoff(n).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 60_000, 60_000]);
    }

    #[test]
    fn deployments_map_back_to_their_plan() {
        let mut d = Deployment::default();
        assert_eq!(plan_of_deployment(d.clone()), None);
        d.metadata.annotations = Some([(PLAN_ANNOTATION.to_string(), "ns1/plan-a".to_string())].into());
        assert_eq!(plan_of_deployment(d), Some(ObjectRef::new("plan-a").within("ns1")));
    }
}
