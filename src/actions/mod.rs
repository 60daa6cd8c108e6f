//! One file per action. Each is idempotent and resumable from the plan's status: whatever it
//! must remember to avoid repeating a side effect it records (and saves) before acting.

pub mod delete_pod;
pub mod env;
pub mod reload;
pub mod restart;
pub mod rollout;
pub mod verify;

use crate::reason::Reason;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;

use crate::config::ResolvedTarget;
use crate::plan::{ActionStatus, PatchPlan};

/// What one call of an action achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The action is complete; the message says what it did.
    Done(String),
    /// Not yet: wait for a watch event, or at most `requeue`.
    Wait { message: String, requeue: Duration },
    /// Gave up; terminal for the plan.
    Failed { reason: Reason, message: String },
}

impl Step {
    pub fn failed(reason: Reason, message: impl Into<String>) -> Self {
        Step::Failed { reason, message: message.into() }
    }
}

/// Saves the action's status before a side effect, so a crash after it is never repeated.
#[allow(async_fn_in_trait)]
pub trait Checkpoint {
    async fn checkpoint(&mut self, action: &ActionStatus) -> crate::Result<()>;
}

/// Everything an action needs; built by the reconciler for one action of one plan.
pub struct ActionContext<'a> {
    pub client: &'a Client,
    pub plan: &'a PatchPlan,
    pub index: usize,
    pub target: &'a ResolvedTarget,
    pub dry_run: bool,
    pub rollout_timeout: Duration,
    pub now: Time,
    /// ConfigMap backups kept per ConfigMap.
    pub history: usize,
    /// `safety.refuse_disruptive_restarts`: refuse restarts that drop every connection at once.
    pub refuse_disruptive_restarts: bool,
}

impl ActionContext<'_> {
    /// `<namespace>/<name>` of the plan, written on what it touches.
    pub fn plan_ref(&self) -> String {
        format!(
            "{}/{}",
            self.plan.metadata.namespace.as_deref().unwrap_or_default(),
            self.plan.metadata.name.as_deref().unwrap_or_default()
        )
    }

    /// The target's Deployment, or the `TargetNotFound` step that ends the plan.
    pub async fn target_deployment(&self) -> crate::Result<Result<k8s_openapi::api::apps::v1::Deployment, Step>> {
        let (ns, name) = (&self.target.namespace, &self.target.deployment);
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(self.client.clone(), ns);
        Ok(not_found(api.get(name).await)?
            .ok_or_else(|| Step::failed(Reason::TargetNotFound, format!("Deployment {ns}/{name} not found"))))
    }

    /// [`Self::target_deployment`], and the action marked running (its start kept from the
    /// first attempt) when there is one: the common start of actions that work on its pods.
    pub async fn start_on_deployment(
        &self,
        status: &mut ActionStatus,
    ) -> crate::Result<Result<k8s_openapi::api::apps::v1::Deployment, Step>> {
        let deployment = self.target_deployment().await?;
        if deployment.is_ok() {
            status.state = crate::plan::StepState::Running;
            status.started_at.get_or_insert_with(|| self.now.clone());
        }
        Ok(deployment)
    }

    pub fn plan_uid(&self) -> &str {
        self.plan.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// `Some(x)` for a 404, to turn "not there" into a clear plan failure rather than a retry.
pub fn not_found<T>(result: kube::Result<T>) -> kube::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Seconds since `since`, saturating at zero.
pub fn elapsed(since: &Time, now: &Time) -> Duration {
    crate::clock::elapsed(since.0, now.0)
}
