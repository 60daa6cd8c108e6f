//! Prometheus metrics (prometheus-client, OpenMetrics text on `/metrics`).

use std::sync::{Arc, Mutex, RwLock};

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{PlanTransition, TransitionKind};
use crate::plan::{PatchPlan, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`crate::Error::metric_label`].
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub feed: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub transition: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    pub feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// `plans{phase}`: PatchPlans in the controller's cache by phase, counted at scrape time from
/// the watch's store (so it is right after a restart and when plans are deleted).
#[derive(Default)]
pub struct PlanPhases(RwLock<Option<Store<PatchPlan>>>);

impl std::fmt::Debug for PlanPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanPhases")
    }
}

impl PlanPhases {
    /// Counts per phase, every phase present (zeros included); `None` before the watch started.
    pub fn counts(&self) -> Option<[(Phase, i64); 4]> {
        let store = self.0.read().unwrap_or_else(|p| p.into_inner());
        let plans = store.as_ref()?.state();
        let mut counts = [(Phase::Pending, 0), (Phase::Running, 0), (Phase::Succeeded, 0), (Phase::Failed, 0)];
        for plan in plans {
            let phase = plan.phase();
            if let Some(entry) = counts.iter_mut().find(|(p, _)| *p == phase) {
                entry.1 += 1;
            }
        }
        Some(counts)
    }
}

impl Collector for PlanPhases {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counts) = self.counts() else {
            return Ok(());
        };
        let family = Family::<PhaseLabels, Gauge>::default();
        for (phase, count) in counts {
            family.get_or_create(&PhaseLabels { phase: format!("{phase:?}") }).set(count);
        }
        let metric = encoder.encode_descriptor("plans", "PatchPlans by phase.", None, family.metric_type())?;
        family.encode(metric)
    }
}

pub struct Metrics {
    registry: Mutex<Registry>,
    plan_phases: Arc<PlanPhases>,
    pub alerts: Family<AlertLabels, Counter>,
    pub plan_transitions: Family<TransitionLabels, Counter>,
    pub action_seconds: Family<ActionLabels, Histogram>,
    pub plan_seconds: Histogram,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub duplicate_transitions: Counter,
    pub events_dropped: Counter,
    pub feed_reconnects: Family<FeedLabels, Counter>,
    pub would_have_acted: Family<RuleLabels, Counter>,
    pub config_reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("antibody");
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("alerts", "Alerts received, by feed and outcome", alerts.clone());
        let plan_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register("plan_transitions", "PatchPlan transitions, by kind and reason", plan_transitions.clone());
        let action_seconds = Family::<ActionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        registry.register(
            "action_duration_seconds",
            "Time from an action's start to its success",
            action_seconds.clone(),
        );
        let plan_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register("plan_duration_seconds", "Time from a plan's creation to PatchApplied", plan_seconds.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that returned an error (retried with backoff), by kind",
            reconcile_errors.clone(),
        );
        for error in crate::Error::METRIC_LABELS {
            let _ = reconcile_errors.get_or_create(&ErrorLabels { error: error.into() });
        }
        let duplicate_transitions = Counter::default();
        registry.register(
            "duplicate_transitions",
            "Plan transitions reached again by a reconcile on a stale cached plan, not reported twice",
            duplicate_transitions.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Kubernetes Events not published: the queue was full or the API refused them (the audit log has every transition)",
            events_dropped.clone(),
        );
        let feed_reconnects = Family::<FeedLabels, Counter>::default();
        registry.register(
            "feed_reconnects",
            "Alert feed disconnects followed by a reconnect attempt",
            feed_reconnects.clone(),
        );
        let would_have_acted = Family::<RuleLabels, Counter>::default();
        registry.register(
            "would_have_acted",
            "Dry-run plans that proved they would act, by rule",
            would_have_acted.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config / token file changes seen: applied, or rejected as invalid (old one kept)",
            config_reloads.clone(),
        );
        let plan_phases = Arc::new(PlanPhases::default());
        registry.register_collector(Box::new(plan_phases.clone()));
        Self {
            registry: Mutex::new(registry),
            plan_phases,
            alerts,
            plan_transitions,
            action_seconds,
            plan_seconds,
            reconcile_errors,
            duplicate_transitions,
            events_dropped,
            feed_reconnects,
            would_have_acted,
            config_reloads,
        }
    }

    pub fn config_reload(&self, result: &str) {
        self.config_reloads.get_or_create(&ReloadLabels { result: result.into() }).inc();
    }

    /// Count plans by phase from the controller's watch store from now on.
    pub fn watch_plans(&self, store: Store<PatchPlan>) {
        *self.plan_phases.0.write().unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    pub fn alert(&self, feed: &str, outcome: &str) {
        self.alerts.get_or_create(&AlertLabels { feed: feed.into(), outcome: outcome.into() }).inc();
    }

    pub fn feed_reconnect(&self, feed: &str) {
        self.feed_reconnects.get_or_create(&FeedLabels { feed: feed.into() }).inc();
    }

    pub fn plan_transition(&self, t: &PlanTransition<'_>) {
        self.plan_transitions
            .get_or_create(&TransitionLabels { transition: t.kind.name().into(), reason: t.reason.into() })
            .inc();
        let status = t.plan.status.as_ref();
        let seconds = |start: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
                       end: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            let (start, end) = (start?, end?);
            Some(crate::clock::elapsed(start.0, end.0).as_secs_f64())
        };
        match t.kind {
            TransitionKind::ActionSucceeded { index } => {
                let action = status.and_then(|s| s.actions.get(index));
                if let Some((action, s)) =
                    action.and_then(|a| Some((a, seconds(a.started_at.as_ref(), a.finished_at.as_ref())?)))
                {
                    let name = action.action.map(|a| a.to_string()).unwrap_or_default();
                    self.action_seconds.get_or_create(&ActionLabels { action: name }).observe(s);
                }
            }
            TransitionKind::Applied => {
                let created = t.plan.metadata.creation_timestamp.as_ref();
                if let Some(s) = seconds(created, status.and_then(|s| s.finished_at.as_ref())) {
                    self.plan_seconds.observe(s);
                }
            }
            TransitionKind::DryRun => {
                let rule =
                    t.plan.metadata.annotations.as_ref().and_then(|a| a.get(crate::names::RULE_ANNOTATION)).cloned();
                self.would_have_acted
                    .get_or_create(&RuleLabels { rule: rule.unwrap_or_else(|| "manual".into()) })
                    .inc();
            }
            TransitionKind::Started
            | TransitionKind::Failed
            | TransitionKind::Unverified
            | TransitionKind::AwaitingApproval
            | TransitionKind::Approved
            | TransitionKind::EscalationExhausted => {}
        }
    }

    /// Register a metric owned by another reporting module (notifiers, audit) under the
    /// `antibody_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).register(name, help, metric);
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionStatus, ActionType, PatchPlanSpec, PatchPlanStatus, PlanAction, StepState};
    use crate::reason::Reason;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    fn plan(name: &str, phase: Phase) -> PatchPlan {
        let mut plan = PatchPlan::new(
            name,
            PatchPlanSpec {
                alert: None,
                actions: vec![PlanAction::new(ActionType::Restart, "X")],
                ..Default::default()
            },
        );
        plan.metadata.namespace = Some("ns".into());
        plan.status = Some(PatchPlanStatus { phase, ..Default::default() });
        plan
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn plans_by_phase_count_the_watch_store() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("antibody_plans{"), "no store yet, no series");
        let mut writer = Writer::<PatchPlan>::default();
        for (name, phase) in
            [("a", Phase::Succeeded), ("b", Phase::Succeeded), ("c", Phase::Failed), ("d", Phase::Running)]
        {
            writer.apply_watcher_event(&watcher::Event::Apply(plan(name, phase)));
        }
        metrics.watch_plans(writer.as_reader());
        let text = metrics.encode();
        assert_eq!(line(&text, "antibody_plans{phase=\"Succeeded\"}"), Some("antibody_plans{phase=\"Succeeded\"} 2"));
        assert_eq!(line(&text, "antibody_plans{phase=\"Failed\"}"), Some("antibody_plans{phase=\"Failed\"} 1"));
        assert_eq!(line(&text, "antibody_plans{phase=\"Running\"}"), Some("antibody_plans{phase=\"Running\"} 1"));
        assert_eq!(line(&text, "antibody_plans{phase=\"Pending\"}"), Some("antibody_plans{phase=\"Pending\"} 0"));
        assert!(text.contains("# TYPE antibody_plans gauge"), "{text}");
        // A deleted plan leaves the count.
        writer.apply_watcher_event(&watcher::Event::Delete(plan("c", Phase::Failed)));
        let text = metrics.encode();
        assert_eq!(line(&text, "antibody_plans{phase=\"Failed\"}"), Some("antibody_plans{phase=\"Failed\"} 0"));
    }

    #[test]
    fn transitions_and_action_latency() {
        let metrics = Metrics::new();
        let mut p = plan("a", Phase::Running);
        let at = |s: i64| Some(Time(jiff::Timestamp::from_second(s).expect("time")));
        p.status.as_mut().expect("status").actions = vec![ActionStatus {
            action: Some(ActionType::Restart),
            state: StepState::Succeeded,
            started_at: at(10),
            finished_at: at(12),
            ..Default::default()
        }];
        let transition = |kind, reason| PlanTransition { plan: &p, kind, reason, message: "" };
        metrics.plan_transition(&transition(TransitionKind::ActionSucceeded { index: 0 }, Reason::ActionSucceeded));
        metrics.plan_transition(&transition(TransitionKind::Applied, Reason::Applied));
        metrics.plan_transition(&transition(TransitionKind::Failed, Reason::NotAllowed));
        metrics.plan_transition(&transition(TransitionKind::Failed, Reason::NotAllowed));
        metrics.alert("grpc", "plan_created");
        metrics.feed_reconnect("ws");
        let text = metrics.encode();
        for expected in [
            "antibody_plan_transitions_total{transition=\"patch_applied\",reason=\"Applied\"} 1",
            "antibody_plan_transitions_total{transition=\"patch_failed\",reason=\"NotAllowed\"} 2",
            "antibody_action_duration_seconds_count{action=\"restart\"} 1",
            "antibody_action_duration_seconds_sum{action=\"restart\"} 2.0",
            "antibody_alerts_total{feed=\"grpc\",outcome=\"plan_created\"} 1",
            "antibody_feed_reconnects_total{feed=\"ws\"} 1",
            "antibody_reconcile_errors_total{error=\"api_unavailable\"} 0",
            "antibody_reconcile_errors_total{error=\"api_rejected\"} 0",
        ] {
            assert!(text.lines().any(|l| l == expected), "missing {expected:?} in\n{text}");
        }
    }
}
