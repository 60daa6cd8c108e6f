//! Restart preflight: what a rolling restart of this Deployment will do to live WebSocket
//! connections, decided from its spec before anything is patched. Pure.
//!
//! kwok runs no containers, so connection behaviour during a rollout cannot be measured on the
//! test cluster; instead the plan says up front what the Deployment's settings imply, and
//! `safety.refuse_disruptive_restarts` refuses restarts that drop every connection at once.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One finding about a Deployment's restart behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    /// Every connection drops at the same moment (refused under `refuse_disruptive_restarts`).
    pub drops_all: bool,
    pub message: String,
}

fn risk(drops_all: bool, message: impl Into<String>) -> Risk {
    Risk { drops_all, message: message.into() }
}

/// What restarting `deployment` will do to live connections; empty when it rolls gently.
pub fn restart_risks(deployment: &Deployment) -> Vec<Risk> {
    let Some(spec) = deployment.spec.as_ref() else { return vec![risk(true, "Deployment has no spec")] };
    let replicas = spec.replicas.unwrap_or(1);
    let mut risks = Vec::new();
    let strategy = spec.strategy.as_ref();
    let kind = strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate");
    if kind == "Recreate" {
        risks.push(risk(
            true,
            "strategy Recreate stops every pod before new ones start: all connections drop at once and the app is down until a new pod is ready",
        ));
    } else {
        let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
        // Kubernetes defaults: 25 % each; maxUnavailable rounds down, maxSurge up.
        let unavailable =
            scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), replicas, false).unwrap_or(replicas / 4);
        let surge =
            scaled(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true).unwrap_or_else(|| (replicas + 3) / 4);
        if replicas > 1 && unavailable >= replicas {
            risks.push(risk(
                true,
                format!("maxUnavailable {unavailable} of {replicas} replicas: every ready pod may stop at once"),
            ));
        }
        if unavailable == 0 && surge == 0 {
            risks.push(risk(true, "maxUnavailable and maxSurge are both 0: the rollout cannot progress"));
        }
    }
    if replicas <= 1 {
        risks.push(risk(
            true,
            format!("{replicas} replica(s): every connection is on one pod and drops when it is replaced"),
        ));
    }
    let pod = spec.template.spec.as_ref();
    let containers = pod.map(|p| p.containers.as_slice()).unwrap_or_default();
    if containers.iter().all(|c| c.readiness_probe.is_none()) {
        risks.push(risk(
            false,
            "no readiness probe: new pods count as ready before the app answers, so old pods stop too early",
        ));
    }
    let drains = containers.iter().any(|c| c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).is_some());
    let grace = pod.and_then(|p| p.termination_grace_period_seconds).unwrap_or(30);
    if !drains {
        risks.push(risk(
            false,
            "no preStop hook: a pod gets SIGTERM while still in the Service's endpoints; its WebSocket clients are cut without a drain",
        ));
    }
    if grace < 10 {
        risks.push(risk(false, format!("terminationGracePeriodSeconds {grace}: too short to drain connections")));
    }
    risks
}

/// An `IntOrString` (count or percentage) of `replicas`.
fn scaled(value: Option<&IntOrString>, replicas: i32, round_up: bool) -> Option<i32> {
    match value? {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let percent: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            let total = i64::from(replicas) * percent;
            let n = if round_up { (total + 99) / 100 } else { total / 100 };
            i32::try_from(n).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{
        Container, ExecAction, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe,
    };

    fn deployment(replicas: i32, strategy: Option<DeploymentStrategy>, gentle_pods: bool) -> Deployment {
        let container = Container {
            name: "app".into(),
            readiness_probe: gentle_pods.then(Probe::default),
            lifecycle: gentle_pods.then(|| Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction { command: Some(vec!["sleep".into(), "5".into()]) }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy,
                template: PodTemplateSpec {
                    spec: Some(PodSpec { containers: vec![container], ..Default::default() }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rolling(unavailable: IntOrString, surge: IntOrString) -> Option<DeploymentStrategy> {
        Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_unavailable: Some(unavailable),
                max_surge: Some(surge),
            }),
        })
    }

    #[test]
    fn table() {
        use IntOrString::{Int, String as Pct};
        let recreate = Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
        // (deployment, number of findings, any drops everything at once)
        let cases = [
            (deployment(3, rolling(Int(0), Int(1)), true), 0, false),
            (deployment(3, None, true), 0, false),
            (deployment(3, recreate, true), 1, true),
            (deployment(1, rolling(Int(0), Int(1)), true), 1, true),
            (deployment(4, rolling(Pct("100%".into()), Int(1)), true), 1, true),
            (deployment(4, rolling(Pct("50%".into()), Int(0)), true), 0, false),
            (deployment(2, rolling(Int(0), Int(0)), true), 1, true),
            (deployment(3, rolling(Int(0), Int(1)), false), 2, false),
        ];
        for (d, findings, drops_all) in cases {
            let risks = restart_risks(&d);
            assert_eq!(risks.len(), findings, "{risks:?}");
            assert_eq!(risks.iter().any(|r| r.drops_all), drops_all, "{risks:?}");
        }
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(Some(&pct("25%")), 3, false), Some(0));
        assert_eq!(scaled(Some(&pct("25%")), 3, true), Some(1));
        assert_eq!(scaled(Some(&pct("bogus")), 3, true), None);
        assert_eq!(scaled(None, 3, true), None);
    }
}
