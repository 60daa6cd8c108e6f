//! The target's `verify` probe: an argv run through `pods/exec` in every ready pod of the
//! Deployment's current ReplicaSet after an action. The action is applied only when the probe
//! passes in all of them; it is retried every `interval_ms` until `timeout_seconds` have passed
//! since verification started, then the plan fails `VerificationFailed`.

use crate::reason::Reason;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::reload::{ExecError, exec, ready_pods_of_current_replicaset};
use super::{ActionContext, Step, elapsed};
use crate::effect::VerifySpec;
use crate::plan::ActionStatus;

/// One round of the probe over the ready pods: `Done` when all pass, `Wait` to try again,
/// `Failed` when the timeout has passed.
pub async fn probe(ctx: &ActionContext<'_>, spec: &VerifySpec, status: &mut ActionStatus) -> crate::Result<Step> {
    let since = status.verify_started_at.get_or_insert_with(|| ctx.now.clone()).clone();
    let waited = elapsed(&since, &ctx.now);
    let (ns, name) = (&ctx.target.namespace, &ctx.target.deployment);
    let failure = match ctx.target_deployment().await? {
        Err(step) => return Ok(step),
        Ok(deployment) => {
            let pods = ready_pods_of_current_replicaset(ctx, &deployment).await?;
            if pods.is_empty() {
                format!("no ready pod of Deployment {ns}/{name} to probe")
            } else {
                match probe_pods(ctx, spec, &pods).await {
                    Ok(observed) => return Ok(Step::Done(observed)),
                    Err(failure) => failure,
                }
            }
        }
    };
    if waited >= Duration::from_secs(spec.timeout_seconds) {
        return Ok(Step::failed(
            Reason::VerificationFailed,
            format!("verify probe {:?} did not pass within {}s: {failure}", spec.command, spec.timeout_seconds),
        ));
    }
    Ok(Step::Wait {
        message: format!("verifying with {:?}: {failure}", spec.command),
        requeue: Duration::from_millis(spec.interval_ms),
    })
}

/// Run the probe in each pod; the first failure is the answer.
async fn probe_pods(ctx: &ActionContext<'_>, spec: &VerifySpec, pods: &[Pod]) -> Result<String, String> {
    let ns = &ctx.target.namespace;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut outputs = Vec::new();
    for pod in pods {
        let Some(pod_name) = pod.metadata.name.as_deref() else { continue };
        let container = ctx
            .target
            .container
            .clone()
            .or_else(|| pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()));
        match exec(&api, pod_name, container.as_deref(), &spec.command).await {
            Ok(stdout) if spec.passes(&stdout) => outputs.push(format!("{pod_name}: {}", one_line(&stdout))),
            Ok(stdout) => {
                let want = spec.expect_output.as_deref().unwrap_or_default();
                return Err(format!(
                    "pod {ns}/{pod_name} answered {:?}, expected it to contain {want:?}",
                    one_line(&stdout)
                ));
            }
            Err(ExecError::NonZero { code, output }) => {
                let code = code.map_or("an error".into(), |c| format!("code {c}"));
                return Err(format!("pod {ns}/{pod_name} exited with {code}: {}", one_line(&output)));
            }
            Err(ExecError::Transport(message)) => return Err(format!("exec in pod {ns}/{pod_name}: {message}")),
        }
    }
    Ok(format!("probe passed in {} pod(s) ({})", outputs.len(), outputs.join("; ")))
}

/// Probe output for a status message: one line, bounded.
pub fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 { format!("{}…", line.chars().take(200).collect::<String>()) } else { line }
}
