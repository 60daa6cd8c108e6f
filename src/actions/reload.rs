//! reloadFlask: reach every ready pod of the Deployment's current ReplicaSet through the
//! `pods/exec` subresource, in the target's `reload_mode`:
//! - `signal`: the reload command (default `kill -HUP 1`: the gunicorn master replaces its
//!   workers). Delivery only: the effect is observed by the target's `verify` probe, if any.
//! - `companion`: `antibody_reload reload` — every worker applies the env in place and
//!   acknowledges the plan's generation; no worker replaced, no client dropped.
//! - `companion_hup`: `antibody_reload hup` — SIGHUP, then wait until the old workers are gone.
//!
//! Signals are at most once per pod: the pod UID is saved in status before the command is
//! sent, and pods already listed are skipped on a retry.

use crate::reason::Reason;
use std::time::Duration;

use futures::TryFutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, ListParams};
use tokio::io::AsyncReadExt;

use super::{ActionContext, Checkpoint, Step, elapsed};
use crate::config::ConfigMapMode;
use crate::effect::{CompanionFailure, ExpectedEnv, ReloadMode};
use crate::plan::{ActionStatus, ActionType};

const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
const OUTPUT_LIMIT: u64 = 16 * 1024;

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

    let pods = ready_pods_of_current_replicaset(ctx, &deployment).await?;
    if pods.is_empty() {
        let waited = elapsed(status.started_at.as_ref().unwrap_or(&ctx.now), &ctx.now);
        if waited >= ctx.rollout_timeout {
            return Ok(Step::failed(
                Reason::NoReadyPods,
                format!("no ready pod of Deployment {ns}/{name} after {}s", waited.as_secs()),
            ));
        }
        return Ok(Step::Wait {
            message: format!("waiting for a ready pod of Deployment {ns}/{name}"),
            requeue: Duration::from_secs(1),
        });
    }

    if ctx.dry_run {
        let command = match ctx.target.reload_mode {
            ReloadMode::Signal => ctx.target.reload_command.clone(),
            ReloadMode::Companion => ctx.target.companion.reload_argv("GENERATION", &expected_env(ctx)),
            ReloadMode::CompanionHup => ctx.target.companion.hup_argv(&expected_env(ctx)),
        };
        let names: Vec<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        status.diff = Some(format!("would exec {command:?} in pods {names:?} of {ns}/{name}"));
        return Ok(Step::Done(format!("dry run: would reload {} pod(s) of {ns}/{name}", names.len())));
    }

    match ctx.target.reload_mode {
        ReloadMode::Signal => send_reload_command(ctx, status, saver, &pods).await,
        ReloadMode::Companion => companion_in_place(ctx, status, &pods).await,
        ReloadMode::CompanionHup => companion_hup(ctx, status, saver, &pods).await,
    }
}

/// `reload_mode: signal`: the target's reload command in each pod, at most once per pod.
async fn send_reload_command(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
    pods: &[Pod],
) -> crate::Result<Step> {
    let (ns, name) = (&ctx.target.namespace, &ctx.target.deployment);
    let command = &ctx.target.reload_command;
    // Pods recorded by an earlier attempt that did not finish (the controller died between
    // recording and the result): at most once means they are not signalled again, and we
    // cannot confirm they were — say so rather than claim it.
    let in_doubt = status.signalled_pods.len();
    let sent = match exec_at_most_once(ctx, status, saver, pods, command).await? {
        Ok(outputs) => outputs.len(),
        Err(failure) => return Ok(exec_failure(command, ns, &failure.pod, failure.error)),
    };
    let doubt = if in_doubt > 0 {
        format!(
            "; {in_doubt} pod(s) recorded before a controller restart were not signalled again \
             (at most once) and their delivery is unconfirmed"
        )
    } else {
        String::new()
    };
    Ok(Step::Done(format!("sent {command:?} to {sent} pod(s) of {ns}/{name}{doubt}")))
}

/// `reload_mode: companion`: every worker applies the new env in place and acknowledges the
/// plan's config generation. Idempotent (same generation), so a retry after a crash is safe
/// and needs no at-most-once bookkeeping.
async fn companion_in_place(ctx: &ActionContext<'_>, status: &mut ActionStatus, pods: &[Pod]) -> crate::Result<Step> {
    let (ns, name) = (&ctx.target.namespace, &ctx.target.deployment);
    let generation = format!("{}/{}", ctx.plan_uid(), ctx.index);
    let argv = ctx.target.companion.reload_argv(&generation, &expected_env(ctx));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut acknowledged = Vec::new();
    for pod in pods {
        let (Some(pod_name), Some(uid)) = (&pod.metadata.name, &pod.metadata.uid) else {
            continue;
        };
        match exec(&api, pod_name, container_of(ctx, pod).as_deref(), &argv).await {
            Ok(output) => {
                if !status.signalled_pods.contains(uid) {
                    status.signalled_pods.push(uid.clone());
                }
                acknowledged.push(format!("{pod_name}: {}", super::verify::one_line(&output)));
            }
            Err(error) => return Ok(companion_failure(ctx, status, &argv, pod_name, error)),
        }
    }
    Ok(Step::Done(format!(
        "companion applied generation {generation} in place in {} pod(s) of {ns}/{name}, every worker acknowledged ({})",
        acknowledged.len(),
        acknowledged.join("; ")
    )))
}

/// `reload_mode: companion_hup`: the companion sends SIGHUP to the gunicorn master and waits
/// until the old workers are gone and a new one is ready. At most once per pod, like a signal;
/// the one exception is an env file not yet synced, which the companion reports before it
/// signals anything.
async fn companion_hup(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
    pods: &[Pod],
) -> crate::Result<Step> {
    let (ns, name) = (&ctx.target.namespace, &ctx.target.deployment);
    let argv = ctx.target.companion.hup_argv(&expected_env(ctx));
    let in_doubt = status.signalled_pods.len();
    let replaced: Vec<String> = match exec_at_most_once(ctx, status, saver, pods, &argv).await? {
        Ok(outputs) => {
            outputs.iter().map(|(pod, output)| format!("{pod}: {}", super::verify::one_line(output))).collect()
        }
        Err(failure) => {
            if matches!(&failure.error, ExecError::NonZero { code: Some(3), .. }) {
                // Nothing was signalled: the pod may be tried again once the file synced.
                status.signalled_pods.retain(|u| *u != failure.uid);
            }
            return Ok(companion_failure(ctx, status, &argv, &failure.pod, failure.error));
        }
    };
    if in_doubt > 0 {
        return Ok(Step::failed(
            Reason::VerificationFailed,
            format!(
                "{in_doubt} pod(s) of {ns}/{name} were handed to the companion before a controller restart; \
                 at most once: not signalled again, and their reload was not observed"
            ),
        ));
    }
    Ok(Step::Done(format!(
        "companion replaced the workers of {} pod(s) of {ns}/{name}: old workers gone, new ones ready ({})",
        replaced.len(),
        replaced.join("; ")
    )))
}

/// The first exec that failed in [`exec_at_most_once`].
struct ExecFailure {
    pod: String,
    uid: String,
    error: ExecError,
}

/// Run `argv` once in each pod not yet recorded in `signalled_pods`, recording (and saving)
/// each pod's UID before its exec: a crash never repeats a signal. Stops at the first failure.
/// Returns (pod name, output) of the pods run now.
async fn exec_at_most_once(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
    pods: &[Pod],
    argv: &[String],
) -> crate::Result<Result<Vec<(String, String)>, ExecFailure>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
    let mut outputs = Vec::new();
    for pod in pods {
        let (Some(pod_name), Some(uid)) = (&pod.metadata.name, &pod.metadata.uid) else {
            continue;
        };
        if status.signalled_pods.contains(uid) {
            continue;
        }
        status.signalled_pods.push(uid.clone());
        saver.checkpoint(status).await?;
        match exec(&api, pod_name, container_of(ctx, pod).as_deref(), argv).await {
            Ok(output) => outputs.push((pod_name.clone(), output)),
            Err(error) => return Ok(Err(ExecFailure { pod: pod_name.clone(), uid: uid.clone(), error })),
        }
    }
    Ok(Ok(outputs))
}

/// The edits earlier in this plan that this reload must see in the app: editEnv of the same
/// target whose ConfigMap is mounted as a file (env-var ConfigMaps need a restart instead).
fn expected_env(ctx: &ActionContext<'_>) -> Vec<ExpectedEnv> {
    if ctx.target.config_map_mode == ConfigMapMode::Env {
        return Vec::new();
    }
    ctx.plan.spec.actions[..ctx.index]
        .iter()
        .filter(|a| a.action == ActionType::EditEnv && a.target == ctx.target.name)
        .filter_map(|a| Some(ExpectedEnv::new(a.key.as_deref()?, a.value.as_deref()?)))
        .collect()
}

/// A failed companion call as the plan's next step: an env file not yet synced waits (until
/// `companion.sync_timeout_seconds`), everything else ends the plan with a reason.
fn companion_failure(
    ctx: &ActionContext<'_>,
    status: &ActionStatus,
    argv: &[String],
    pod: &str,
    error: ExecError,
) -> Step {
    let ns = &ctx.target.namespace;
    let (code, output) = match error {
        ExecError::Transport(message) => {
            return Step::failed(Reason::ExecFailed, format!("exec of the companion in pod {ns}/{pod}: {message}"));
        }
        ExecError::NonZero { code, output } => (code, output),
    };
    let (kind, reason) = crate::effect::companion_failure(code, &output);
    let output = super::verify::one_line(&output);
    if kind == CompanionFailure::EnvNotSynced {
        let waited = elapsed(status.started_at.as_ref().unwrap_or(&ctx.now), &ctx.now);
        let limit = Duration::from_secs(ctx.target.companion.sync_timeout_seconds);
        if waited < limit {
            return Step::Wait {
                message: format!("waiting for the kubelet to sync the edited env file into pod {ns}/{pod}: {output}"),
                requeue: Duration::from_millis(500),
            };
        }
        return Step::failed(
            reason,
            format!(
                "the env file in pod {ns}/{pod} did not hold the edited value within {}s: {output}",
                limit.as_secs()
            ),
        );
    }
    let what = match kind {
        CompanionFailure::Missing => "the antibody_reload companion is not installed in the container",
        CompanionFailure::NotAcknowledged => "the workers did not acknowledge the reload in time",
        CompanionFailure::NoWorkers => "no live worker is registered with the companion",
        CompanionFailure::NoMaster => "the gunicorn master could not be found from the workers",
        CompanionFailure::EnvNotSynced | CompanionFailure::Other => "the companion failed",
    };
    let code = code.map_or("an error".into(), |c| format!("code {c}"));
    Step::failed(reason, format!("{what}: {argv:?} in pod {ns}/{pod} exited with {code}: {output}"))
}

fn container_of(ctx: &ActionContext<'_>, pod: &Pod) -> Option<String> {
    ctx.target
        .container
        .clone()
        .or_else(|| pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()))
}

/// A failed reload command as the step that ends the plan.
fn exec_failure(command: &[String], ns: &str, pod: &str, error: ExecError) -> Step {
    match error {
        ExecError::NonZero { code, output } => Step::failed(
            Reason::NonZeroExitCode,
            format!(
                "{command:?} in pod {ns}/{pod} exited with {}: {output}",
                code.map_or("an error".into(), |c| format!("code {c}"))
            ),
        ),
        ExecError::Transport(message) => Step::failed(Reason::ExecFailed, format!("exec in pod {ns}/{pod}: {message}")),
    }
}

/// Ready, not terminating pods owned by the ReplicaSet of the Deployment's current revision.
pub(crate) async fn ready_pods_of_current_replicaset(
    ctx: &ActionContext<'_>,
    deployment: &Deployment,
) -> crate::Result<Vec<Pod>> {
    let ns = &ctx.target.namespace;
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let list = ListParams::default().labels(&selector);
    let revision = deployment.metadata.annotations.as_ref().and_then(|a| a.get(REVISION_ANNOTATION));
    let deployment_uid = deployment.metadata.uid.as_deref();
    let replicasets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    // Both lists only need the selector: one round-trip instead of two.
    let (replicasets, pods) = futures::try_join!(replicasets.list(&list), pods.list(&list))?;
    let current = replicasets.items.into_iter().find(|rs| {
        let owned = rs.metadata.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == deployment_uid);
        owned && rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION_ANNOTATION)) == revision
    });
    let Some(current) = current else {
        return Ok(Vec::new());
    };
    let rs_uid = current.metadata.uid.as_deref();
    let mut ready: Vec<Pod> = pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == rs_uid))
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect();
    ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(ready)
}

#[derive(Debug)]
pub enum ExecError {
    NonZero { code: Option<i32>, output: String },
    Transport(String),
}

/// Run `command` in the pod, drain its output, and read its exit status.
pub async fn exec(api: &Api<Pod>, pod: &str, container: Option<&str>, command: &[String]) -> Result<String, ExecError> {
    let mut params = AttachParams::default().stdin(false).stdout(true).stderr(true);
    if let Some(container) = container {
        params = params.container(container);
    }
    let run = async {
        let mut process =
            api.exec(pod, command.to_vec(), &params).await.map_err(|e| ExecError::Transport(e.to_string()))?;
        let status = process.take_status().ok_or_else(|| ExecError::Transport("no status channel".into()))?;
        let read = |stream: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
            let mut text = Vec::new();
            if let Some(stream) = stream {
                let mut limited = stream.take(OUTPUT_LIMIT);
                limited.read_to_end(&mut text).await.ok();
                // Keep draining past the limit so the remote side never blocks on a full pipe.
                tokio::io::copy(&mut limited.into_inner(), &mut tokio::io::sink()).await.ok();
            }
            String::from_utf8_lossy(&text).into_owned()
        };
        let (stdout, stderr, status) = tokio::join!(read(process.stdout()), read(process.stderr()), status);
        process.join().map_err(|e| ExecError::Transport(e.to_string())).await?;
        let output = format!(
            "{}{}",
            stdout.trim_end(),
            if stderr.trim().is_empty() { String::new() } else { format!(" (stderr: {})", stderr.trim_end()) }
        );
        match status.as_ref().map(exit_of) {
            Some(Ok(())) => Ok(output),
            Some(Err(code)) => Err(ExecError::NonZero {
                code,
                output: format!("{output} {}", status.and_then(|s| s.message).unwrap_or_default()).trim().to_string(),
            }),
            None => Err(ExecError::Transport("connection closed without an exit status".into())),
        }
    };
    tokio::time::timeout(EXEC_TIMEOUT, run)
        .await
        .map_err(|_| ExecError::Transport(format!("no exit status within {}s", EXEC_TIMEOUT.as_secs())))?
}

/// The exit code in an exec `Status`: `Ok` for `Success`; otherwise the code when known —
/// a real kubelet sends `NonZeroExitCode` with an `ExitCode` cause, kwok a message ending in
/// `exit status N`.
pub fn exit_of(status: &Status) -> Result<(), Option<i32>> {
    if status.status.as_deref() == Some("Success") {
        return Ok(());
    }
    let from_cause = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| causes.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse().ok());
    let from_message = || {
        let message = status.message.as_deref()?;
        let at = message.rfind("exit status ")?;
        message[at + "exit status ".len()..].trim().parse().ok()
    };
    Err(from_cause.or_else(from_message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    #[test]
    fn exit_codes_from_either_form() {
        let kubelet = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some(
                "command terminated with non-zero exit code: error executing command [kill -HUP 1], exit code 1".into(),
            ),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("1".into()),
                    field: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let kwok = Status {
            status: Some("Failure".into()),
            reason: Some("InternalError".into()),
            message: Some("error executing command in container: exit status 3".into()),
            ..Default::default()
        };
        let success = Status { status: Some("Success".into()), ..Default::default() };
        let unknown = Status { status: Some("Failure".into()), message: Some("boom".into()), ..Default::default() };
        let cases = [(success, Ok(())), (kubelet, Err(Some(1))), (kwok, Err(Some(3))), (unknown, Err(None))];
        for (status, want) in cases {
            assert_eq!(exit_of(&status), want, "{status:?}");
        }
    }
}
