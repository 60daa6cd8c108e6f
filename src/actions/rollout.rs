//! "Is this rollout complete?", decided exactly as `kubectl rollout status` does
//! (kubectl `rollout_status.go`, DeploymentStatusViewer). Pure.

use k8s_openapi::api::apps::v1::Deployment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    Complete,
    InProgress(String),
    /// The Deployment reported `ProgressDeadlineExceeded`.
    Failed(String),
}

/// `min_generation`: the generation our restart patch produced; older observations don't count.
pub fn rollout_state(deployment: &Deployment, min_generation: i64) -> RolloutState {
    let name = deployment.metadata.name.as_deref().unwrap_or("deployment");
    let Some(status) = &deployment.status else {
        return RolloutState::InProgress(format!("waiting for deployment {name:?} to report status"));
    };
    if status.observed_generation.unwrap_or(0) < min_generation {
        return RolloutState::InProgress(format!("waiting for deployment {name:?} spec update to be observed"));
    }
    let deadline_exceeded = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    if deadline_exceeded {
        return RolloutState::Failed(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        return RolloutState::InProgress(format!("{updated} out of {wanted} new replicas have been updated"));
    }
    if replicas > updated {
        return RolloutState::InProgress(format!("{} old replicas are pending termination", replicas - updated));
    }
    if available < updated {
        return RolloutState::InProgress(format!("{available} of {updated} updated replicas are available"));
    }
    RolloutState::Complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};

    fn deployment(
        wanted: i32,
        observed: i64,
        updated: i32,
        replicas: i32,
        available: i32,
        deadline: bool,
    ) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                name: Some("vael-core".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec { replicas: Some(wanted), ..Default::default() }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                replicas: Some(replicas),
                available_replicas: Some(available),
                conditions: deadline.then(|| {
                    vec![DeploymentCondition {
                        type_: "Progressing".into(),
                        status: "False".into(),
                        reason: Some("ProgressDeadlineExceeded".into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn table() {
        let cases = [
            ("complete", deployment(2, 2, 2, 2, 2, false), RolloutState::Complete),
            (
                "stale observation",
                deployment(2, 1, 2, 2, 2, false),
                RolloutState::InProgress("waiting for deployment \"vael-core\" spec update to be observed".into()),
            ),
            (
                "updating",
                deployment(2, 2, 1, 3, 2, false),
                RolloutState::InProgress("1 out of 2 new replicas have been updated".into()),
            ),
            (
                "old pods terminating",
                deployment(2, 2, 2, 3, 2, false),
                RolloutState::InProgress("1 old replicas are pending termination".into()),
            ),
            (
                "not yet available",
                deployment(2, 2, 2, 2, 1, false),
                RolloutState::InProgress("1 of 2 updated replicas are available".into()),
            ),
            (
                "deadline",
                deployment(2, 2, 1, 3, 2, true),
                RolloutState::Failed("deployment \"vael-core\" exceeded its progress deadline".into()),
            ),
            ("scaled to zero", deployment(0, 2, 0, 0, 0, false), RolloutState::Complete),
        ];
        for (name, d, want) in cases {
            assert_eq!(rollout_state(&d, 2), want, "{name}");
        }
        let mut no_status = deployment(1, 1, 1, 1, 1, false);
        no_status.status = None;
        assert!(matches!(rollout_state(&no_status, 1), RolloutState::InProgress(_)));
    }
}
