//! Prometheus metrics (prometheus-client, OpenMetrics text on `/metrics`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{PlanTransition, TransitionKind};

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

pub struct Metrics {
    registry: Mutex<Registry>,
    pub alerts: Family<AlertLabels, Counter>,
    pub plan_transitions: Family<TransitionLabels, Counter>,
    pub action_seconds: Family<ActionLabels, Histogram>,
    pub plan_seconds: Histogram,
    pub reconcile_errors: Counter,
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
        let reconcile_errors = Counter::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that returned an error (retried with backoff)",
            reconcile_errors.clone(),
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
        Self {
            registry: Mutex::new(registry),
            alerts,
            plan_transitions,
            action_seconds,
            plan_seconds,
            reconcile_errors,
            feed_reconnects,
            would_have_acted,
            config_reloads,
        }
    }

    pub fn config_reload(&self, result: &str) {
        self.config_reloads.get_or_create(&ReloadLabels { result: result.into() }).inc();
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
            Some((end.0.as_nanosecond() - start.0.as_nanosecond()).max(0) as f64 / 1e9)
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
                let rule = t.plan.metadata.annotations.as_ref().and_then(|a| a.get("antibody.vael.io/rule")).cloned();
                self.would_have_acted
                    .get_or_create(&RuleLabels { rule: rule.unwrap_or_else(|| "manual".into()) })
                    .inc();
            }
            TransitionKind::Started | TransitionKind::Failed => {}
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
