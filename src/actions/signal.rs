//! reloadFlask: run the target's reload command (default `kill -HUP 1`: the gunicorn master
//! reloads its workers, open connections drain) in every ready pod of the Deployment's current
//! ReplicaSet, through the `pods/exec` subresource.
//!
//! At most once per pod: the pod UID is saved in status before the command is sent, and pods
//! already listed are skipped on a retry.

use std::time::Duration;

use futures::TryFutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, ListParams};
use tokio::io::AsyncReadExt;

use super::{ActionContext, Checkpoint, Step, elapsed};
use crate::plan::{ActionStatus, StepState};

pub const NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
pub const EXEC_FAILED: &str = "ExecFailed";
pub const NO_READY_PODS: &str = "NoReadyPods";
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
    let deployment = match ctx.target_deployment().await? {
        Ok(deployment) => deployment,
        Err(step) => return Ok(step),
    };
    status.state = StepState::Running;
    status.started_at.get_or_insert_with(|| ctx.now.clone());

    let pods = ready_pods_of_current_replicaset(ctx, &deployment).await?;
    if pods.is_empty() {
        let waited = elapsed(status.started_at.as_ref().unwrap_or(&ctx.now), &ctx.now);
        if waited >= ctx.rollout_timeout {
            return Ok(Step::failed(
                NO_READY_PODS,
                format!("no ready pod of Deployment {ns}/{name} after {}s", waited.as_secs()),
            ));
        }
        return Ok(Step::Wait {
            message: format!("waiting for a ready pod of Deployment {ns}/{name}"),
            requeue: Duration::from_secs(1),
        });
    }

    let command = &ctx.target.reload_command;
    if ctx.dry_run {
        let names: Vec<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        status.diff = Some(format!("would exec {command:?} in pods {names:?} of {ns}/{name}"));
        return Ok(Step::Done(format!("dry run: would reload {} pod(s) of {ns}/{name}", names.len())));
    }

    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    // Pods recorded by an earlier attempt that did not finish (the controller died between
    // recording and the result): at most once means they are not signalled again, and we
    // cannot confirm they were — say so rather than claim it.
    let in_doubt = status.signalled_pods.len();
    let mut sent = 0;
    for pod in &pods {
        let (Some(pod_name), Some(uid)) = (&pod.metadata.name, &pod.metadata.uid) else {
            continue;
        };
        if status.signalled_pods.contains(uid) {
            continue;
        }
        status.signalled_pods.push(uid.clone());
        saver.checkpoint(status).await?;
        let container = ctx
            .target
            .container
            .clone()
            .or_else(|| pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()));
        match exec(&api, pod_name, container.as_deref(), command).await {
            Ok(_) => sent += 1,
            Err(ExecError::NonZero { code, output }) => {
                return Ok(Step::failed(
                    NON_ZERO_EXIT_CODE,
                    format!(
                        "{command:?} in pod {ns}/{pod_name} exited with {}: {output}",
                        code.map_or("an error".into(), |c| format!("code {c}"))
                    ),
                ));
            }
            Err(ExecError::Transport(message)) => {
                return Ok(Step::failed(EXEC_FAILED, format!("exec in pod {ns}/{pod_name}: {message}")));
            }
        }
    }
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
