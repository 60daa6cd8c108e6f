//! deletePod: the smallest restart — evict one ready pod through the Eviction API, which
//! respects PodDisruptionBudgets, and wait until the Deployment is whole again.
//!
//! The pod UID is saved before the eviction, so a retry never evicts a second pod.

use crate::reason::Reason;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams};

use super::{ActionContext, Checkpoint, Step, elapsed};
use crate::actions::rollout::{RolloutState, rollout_state};
use crate::plan::ActionStatus;

pub async fn run(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
) -> crate::Result<Step> {
    let ns = &ctx.target.namespace;
    let name = &ctx.target.deployment;
    let deployment = match ctx.start_on_deployment(status).await? {
        Ok(deployment) => deployment,
        Err(step) => return Ok(step),
    };
    let waited = elapsed(status.started_at.as_ref().unwrap_or(&ctx.now), &ctx.now);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);

    if status.signalled_pods.is_empty() {
        let ready = super::reload::ready_pods_of_current_replicaset(ctx, &deployment).await?;
        // The oldest pod goes first: it has run longest with whatever state is suspect.
        let Some(victim) = ready.iter().min_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0)) else {
            return Ok(wait_or_fail(ctx, waited, format!("no ready pod of Deployment {ns}/{name} to evict")));
        };
        let (Some(pod_name), Some(uid)) = (victim.metadata.name.clone(), victim.metadata.uid.clone()) else {
            return Ok(Step::Wait { message: "pod without name".into(), requeue: Duration::from_secs(1) });
        };
        if ctx.dry_run {
            status.diff = Some(format!("would evict pod {ns}/{pod_name} of Deployment {ns}/{name}"));
            return Ok(Step::Done(format!("dry run: would evict pod {ns}/{pod_name}")));
        }
        super::restart::watch_for_plan(ctx).await?;
        status.signalled_pods.push(uid.clone());
        saver.checkpoint(status).await?;
        let params = EvictParams { delete_options: Some(DeleteParams::default()), ..Default::default() };
        match pods.evict(&pod_name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // 429: a PodDisruptionBudget forbids it right now. Forget the pod and retry later.
            Err(kube::Error::Api(s)) if s.code == 429 => {
                status.signalled_pods.clear();
                saver.checkpoint(status).await?;
                return Ok(wait_or_fail(
                    ctx,
                    waited,
                    format!("PodDisruptionBudget blocks evicting {ns}/{pod_name}: {}", s.message),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }

    let evicted = &status.signalled_pods[0];
    let still_there =
        pods.list(&Default::default()).await?.items.iter().any(|p| p.metadata.uid.as_ref() == Some(evicted));
    let generation = deployment.metadata.generation.unwrap_or(0);
    match (still_there, rollout_state(&deployment, generation)) {
        (false, RolloutState::Complete) => {
            Ok(Step::Done(format!("evicted pod {evicted} of Deployment {ns}/{name}; replacement ready")))
        }
        (_, RolloutState::Failed(message)) => Ok(Step::failed(Reason::ProgressDeadlineExceeded, message)),
        (true, _) => Ok(wait_or_fail(ctx, waited, format!("waiting for evicted pod {evicted} to go"))),
        (false, RolloutState::InProgress(message)) => Ok(wait_or_fail(ctx, waited, message)),
    }
}

fn wait_or_fail(ctx: &ActionContext<'_>, waited: Duration, message: String) -> Step {
    if waited >= ctx.rollout_timeout {
        let reason = if message.contains("PodDisruptionBudget") {
            Reason::DisruptionBudget
        } else {
            Reason::ProgressDeadlineExceeded
        };
        return Step::failed(reason, format!("{message} (gave up after {}s)", ctx.rollout_timeout.as_secs()));
    }
    Step::Wait { message, requeue: Duration::from_secs(1) }
}
