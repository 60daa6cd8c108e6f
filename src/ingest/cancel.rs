//! Alertmanager `resolved`: cancel the alert's plan if nothing has acted yet.

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use tracing::info;

use super::Intake;
use crate::alert::ThreatAlert;
use crate::plan::{PatchPlan, Phase, StepState};
use crate::report::AlertOutcome;

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

impl Intake {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionStatus, PatchPlanSpec, PatchPlanStatus};

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
}
