//! restart: what `kubectl rollout restart` does, resumable.
//!
//! The `restartedAt` value is chosen and saved in the plan's status before the patch, so a
//! retry after a crash sends the very same patch: a no-op, never a second rollout. Done when
//! `kubectl rollout status` would say so.

use crate::names::PLAN_ANNOTATION;
use crate::names::RESTARTED_AT_ANNOTATION;
use crate::reason::Reason;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{ActionContext, Checkpoint, Step, elapsed, not_found};
use crate::actions::rollout::{RolloutState, rollout_state};
use crate::plan::{ActionStatus, StepState};
use crate::preflight::restart_risks;

use crate::names::RESTARTED_LABEL;

pub async fn run(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
) -> crate::Result<Step> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let name = &ctx.target.deployment;
    let Some(deployment) = not_found(deployments.get(name).await)? else {
        return Ok(Step::failed(
            Reason::TargetNotFound,
            format!("Deployment {}/{name} not found", ctx.target.namespace),
        ));
    };

    let restarted_at = match &status.restarted_at {
        Some(value) => value.clone(),
        None => {
            // What this rollout will do to live connections: said before it starts.
            let risks = restart_risks(&deployment);
            status.preflight = risks.iter().map(|r| r.message.clone()).collect();
            if ctx.refuse_disruptive_restarts && risks.iter().any(|r| r.drops_all) {
                let why: Vec<&str> = risks.iter().filter(|r| r.drops_all).map(|r| r.message.as_str()).collect();
                return Ok(Step::failed(
                    Reason::DisruptiveRestart,
                    format!(
                        "refusing to restart Deployment {}/{name} (safety.refuse_disruptive_restarts): {}",
                        ctx.target.namespace,
                        why.join("; ")
                    ),
                ));
            }
            if deployment.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
                return Ok(Step::failed(
                    Reason::DeploymentPaused,
                    format!("Deployment {}/{name} is paused: refusing to restart it", ctx.target.namespace),
                ));
            }
            let value = ctx.now.0.to_string();
            status.restarted_at = Some(value.clone());
            status.state = StepState::Running;
            status.started_at.get_or_insert_with(|| ctx.now.clone());
            if !ctx.dry_run {
                saver.checkpoint(status).await?;
            }
            value
        }
    };

    let patch = restart_patch(ctx, &restarted_at);
    let mut params = PatchParams::default();
    if ctx.dry_run {
        params = params.dry_run();
        let before = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTARTED_AT_ANNOTATION))
            .cloned();
        let patched = deployments.patch(name, &params, &Patch::Merge(&patch)).await?;
        let rollout = patched.metadata.generation != deployment.metadata.generation;
        status.diff = Some(format!(
            "Deployment {}/{name}: spec.template.metadata.annotations[{RESTARTED_AT_ANNOTATION}]: {} → {restarted_at:?}{}",
            ctx.target.namespace,
            before.map_or("(unset)".to_string(), |b| format!("{b:?}")),
            if rollout { " (starts a rollout)" } else { "" }
        ));
        return Ok(Step::Done(format!("dry run: would restart Deployment {}/{name}", ctx.target.namespace)));
    }

    // Same value on a retry → the API server sees no change and the generation stays put.
    let (generation, current) = match status.rollout_generation {
        Some(generation) => (generation, deployment),
        None => {
            let patched = deployments.patch(name, &params, &Patch::Merge(&patch)).await?;
            let generation = patched.metadata.generation.unwrap_or(0);
            status.rollout_generation = Some(generation);
            (generation, patched)
        }
    };

    match rollout_state(&current, generation) {
        RolloutState::Complete => Ok(Step::Done(format!(
            "Deployment {}/{name} restarted (restartedAt {restarted_at}) and rolled out{}",
            ctx.target.namespace,
            match status.preflight.len() {
                0 => String::new(),
                n => format!("; preflight: {n} finding(s) about live connections, see status.actions[].preflight"),
            }
        ))),
        RolloutState::Failed(message) => Ok(Step::failed(Reason::ProgressDeadlineExceeded, message)),
        RolloutState::InProgress(message) => {
            let started = status.started_at.clone().unwrap_or_else(|| ctx.now.clone());
            let waited = elapsed(&started, &ctx.now);
            if waited >= ctx.rollout_timeout {
                return Ok(Step::failed(
                    Reason::ProgressDeadlineExceeded,
                    format!(
                        "rollout of {}/{name} not complete after {}s: {message}",
                        ctx.target.namespace,
                        ctx.rollout_timeout.as_secs()
                    ),
                ));
            }
            // The Deployment watch wakes us on progress; the requeue only enforces the timeout.
            Ok(Step::Wait { message, requeue: ctx.rollout_timeout - waited })
        }
    }
}

/// The patch `kubectl rollout restart` sends, plus the plan annotation and watch label.
fn restart_patch(ctx: &ActionContext<'_>, restarted_at: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "labels": { RESTARTED_LABEL: "true" },
            "annotations": { PLAN_ANNOTATION: ctx.plan_ref() },
        },
        "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT_ANNOTATION: restarted_at } } } },
    })
}

/// Start a rollout with a given `restartedAt` and do not wait (a compensation after a failure).
pub async fn trigger(ctx: &ActionContext<'_>, restarted_at: &str) -> crate::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let mut params = PatchParams::default();
    if ctx.dry_run {
        params = params.dry_run();
    }
    deployments.patch(&ctx.target.deployment, &params, &Patch::Merge(&restart_patch(ctx, restarted_at))).await?;
    Ok(())
}

/// Label and annotate a Deployment so its watch events reach the plan (no template change).
pub async fn watch_for_plan(ctx: &ActionContext<'_>) -> crate::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let patch = json!({
        "metadata": { "labels": { RESTARTED_LABEL: "true" }, "annotations": { PLAN_ANNOTATION: ctx.plan_ref() } },
    });
    let mut params = PatchParams::default();
    if ctx.dry_run {
        params = params.dry_run();
    }
    deployments.patch(&ctx.target.deployment, &params, &Patch::Merge(&patch)).await?;
    Ok(())
}
