//! Notifiers: plan outcomes (`patch_applied`, `patch_failed`, `patch_dry_run`) to the VAEL
//! UI's Flask-SocketIO Redis queue and to webhooks.
//!
//! Delivery is at-least-once per plan transition, keyed by plan uid + event:
//! - [`Notifier::on_plan`] (synchronous) only enqueues on a bounded queue per sink; a worker
//!   per sink delivers with a timeout and exponential backoff, so a dead endpoint never slows
//!   reconciling. A full queue or exhausted retries is counted and logged as undeliverable
//!   (`queue.rs`; the sinks: `redis.rs` for the VAEL UI's queue and [`webhook`]).
//! - After a sink took an event, the annotation `antibody.vael.io/notified-<event>` on the
//!   PatchPlan lists it ([`marker`]). A controller that starts (or takes over) sees every terminal plan once
//!   ([`crate::report::Hook::on_terminal_replay`]) and re-delivers what has no marker, so a
//!   crash between finishing a plan and notifying loses nothing. Receivers de-duplicate on
//!   the CloudEvent id / summary `uid` + `transition`.

pub use crate::config::notify as config;
pub mod marker;
mod queue;
mod redis;
pub mod summary;
pub mod webhook;

pub use marker::{marker_annotation, marker_sinks};
use queue::{Job, RetryPolicy, Shared, Sink, SinkWorker, run_worker};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::{Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use self::redis::RedisSink;
use self::summary::event_name;
use self::webhook::WebhookSink;
pub use crate::config::notify::{DeliveryConfig, NotifyConfig, SOCKETIO_SINK, WebhookConfig};
use crate::report::{Hook, Metrics, PlanTransition};

/// One plan outcome, ready for any sink.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyEvent {
    pub event: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// When the plan finished (RFC 3339): stable across redeliveries.
    pub time: String,
    /// The plan summary.
    pub data: Value,
}

impl NotifyEvent {
    /// The de-duplication key receivers see: `<plan uid>/<event>`.
    pub fn dedup_id(&self) -> String {
        format!("{}/{}", self.uid, self.event)
    }
}

/// Why one attempt failed, and whether another could succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    pub retryable: bool,
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
    pub event: String,
}

/// `antibody_notify_delivered_total`, `antibody_notify_failures_total` (failed attempts),
/// `antibody_notify_undeliverable_total` (given up: retries exhausted, refused, queue full).
#[derive(Clone, Default)]
pub struct NotifyMetrics {
    pub delivered: Family<SinkLabels, Counter>,
    pub failures: Family<SinkLabels, Counter>,
    pub undeliverable: Family<SinkLabels, Counter>,
}

impl NotifyMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register("notify_delivered", "Plan events a notify sink took", this.delivered.clone());
        metrics.register(
            "notify_failures",
            "Failed notify attempts (each is retried until the sink's retries run out)",
            this.failures.clone(),
        );
        metrics.register(
            "notify_undeliverable",
            "Plan events given up on: retries exhausted, refused by the sink, or queue full",
            this.undeliverable.clone(),
        );
        this
    }

    fn count(family: &Family<SinkLabels, Counter>, sink: &str, event: &str) {
        family.get_or_create(&SinkLabels { sink: sink.into(), event: event.into() }).inc();
    }
}

/// The notify [`Hook`]: enqueues plan outcomes for every configured sink.
pub struct Notifier {
    queues: Vec<(String, mpsc::Sender<Job>)>,
    shared: Arc<Shared>,
    redeliver_within: Duration,
}

impl Notifier {
    /// Build the sinks and start one worker per sink; `None` when nothing is configured.
    /// Fails only on configuration the sinks cannot use (an unreadable secret file); an
    /// unreachable endpoint is a delivery failure later, never a startup error.
    pub fn start(
        config: &NotifyConfig,
        client: Client,
        instance: &str,
        metrics: &Metrics,
    ) -> crate::Result<Option<Self>> {
        if !config.enabled() {
            return Ok(None);
        }
        let bad = |field: String, message: String| crate::Error::Config { path: field, message };
        let delivery = &config.delivery;
        let policy = |retries: Option<u32>| RetryPolicy {
            retries: retries.unwrap_or(delivery.retries),
            base: Duration::from_millis(delivery.backoff_ms),
            max: Duration::from_millis(delivery.max_backoff_ms),
        };
        let mut workers = Vec::new();
        if let Some(url) = &config.socketio_message_queue {
            let host_id = config.host_id.clone().unwrap_or_else(|| instance.to_string());
            let sink = RedisSink::new(config, url, host_id)
                .map_err(|m| bad("notify.socketio_message_queue".into(), m.to_string()))?;
            workers.push(SinkWorker {
                name: SOCKETIO_SINK.into(),
                sink: Sink::Redis(Box::new(sink)),
                policy: policy(None),
            });
        }
        for (i, hook) in config.webhooks.iter().enumerate() {
            let field = format!("notify.webhooks[{i}]");
            let secret = webhook::read_secret(hook).map_err(|m| bad(format!("{field}.secret_file"), m))?;
            let timeout = Duration::from_millis(hook.timeout_ms.unwrap_or(delivery.timeout_ms));
            let sink =
                WebhookSink::new(hook, secret, timeout).map_err(|m| bad(format!("{field}.url"), m.to_string()))?;
            workers.push(SinkWorker {
                name: hook.sink_name(i),
                sink: Sink::Webhook(sink),
                policy: policy(hook.retries),
            });
        }
        let shared = Arc::new(Shared {
            client,
            reveal_values: config.reveal_values,
            metrics: NotifyMetrics::register(metrics),
            tracker: Mutex::default(),
        });
        let mut queues = Vec::new();
        for worker in workers {
            let (tx, rx) = mpsc::channel(delivery.queue_capacity);
            queues.push((worker.name.clone(), tx));
            tokio::spawn(run_worker(Arc::new(worker), rx, shared.clone(), delivery.concurrency));
        }
        info!(sinks = ?queues.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), "notify sinks ready");
        Ok(Some(Self { queues, shared, redeliver_within: Duration::from_secs(delivery.redeliver_within_seconds) }))
    }

    fn enqueue(&self, transition: &PlanTransition<'_>, replay: bool) {
        let Some(event) = event_name(transition.kind) else {
            return;
        };
        let plan = transition.plan;
        let Some(uid) = plan.metadata.uid.clone() else {
            return;
        };
        let delivered = marker_sinks(plan, event);
        let mut pending = Vec::new();
        {
            let mut tracker = self.shared.tracker.lock().unwrap_or_else(|p| p.into_inner());
            for (sink, queue) in &self.queues {
                if !delivered.contains(sink) && tracker.claim((uid.clone(), event, sink.clone())) {
                    pending.push((sink, queue));
                }
            }
        }
        if pending.is_empty() {
            return;
        }
        let finished = plan.status.as_ref().and_then(|s| s.finished_at.as_ref()).map(|t| t.0);
        let event = Arc::new(NotifyEvent {
            event,
            namespace: plan.namespace().unwrap_or_default(),
            name: plan.name_any(),
            uid: uid.clone(),
            time: finished.unwrap_or_else(jiff::Timestamp::now).to_string(),
            data: if self.shared.reveal_values {
                summary::with_transition(transition)
            } else {
                crate::report::access::redact(&summary::with_transition(transition))
            },
        });
        for (sink, queue) in pending {
            if replay {
                info!(plan = %event.name, event = event.event, sink, "re-delivering: no delivery marker");
            }
            if let Err(e) = queue.try_send(Job { event: event.clone() }) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "sink worker stopped",
                };
                NotifyMetrics::count(&self.shared.metrics.undeliverable, sink, event.event);
                error!(plan = %event.name, event = event.event, sink, why, "notification undeliverable");
                self.shared.tracker.lock().unwrap_or_else(|p| p.into_inner()).release(&(
                    uid.clone(),
                    event.event,
                    sink.clone(),
                ));
            }
        }
    }
}

impl Hook for Notifier {
    fn on_plan(&self, transition: &PlanTransition<'_>) {
        self.enqueue(transition, false);
    }

    fn on_terminal_replay(&self, transition: &PlanTransition<'_>) {
        let finished = transition.plan.status.as_ref().and_then(|s| s.finished_at.as_ref());
        let age = finished.map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs());
        if age.is_some_and(|age| age > self.redeliver_within) {
            debug!(plan = %transition.plan.name_any(), "finished outside the redelivery window: not re-sent");
            return;
        }
        self.enqueue(transition, true);
    }
}

/// `antibody check-config`: read webhook secret files and, when `connect`, PING the Redis
/// queue within `timeout`. Returns one line describing the sinks.
pub async fn preflight(
    config: &NotifyConfig,
    connect: bool,
    timeout: Duration,
) -> Result<String, crate::validate::ConfigError> {
    let bad = |field: String, message: String| crate::validate::ConfigError { field, message };
    for (i, hook) in config.webhooks.iter().enumerate() {
        webhook::read_secret(hook).map_err(|m| bad(format!("notify.webhooks[{i}].secret_file"), m))?;
    }
    if let (Some(url), true) = (&config.socketio_message_queue, connect) {
        redis::probe(url, timeout).await.map_err(|m| bad("notify.socketio_message_queue".into(), m))?;
    }
    let sinks = config.sink_names();
    Ok(if sinks.is_empty() {
        "notify: off".to_string()
    } else {
        let reached = if connect && config.socketio_message_queue.is_some() { " (Redis answered PING)" } else { "" };
        format!("notify: {}{reached}", sinks.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PatchPlan;
    use crate::reason::Reason;

    #[test]
    fn terminal_transitions_are_recovered_from_saved_status() {
        use crate::conditions::{Outcome, compute};
        use crate::plan::{PatchPlanStatus, Phase};
        use crate::report::{TransitionKind, terminal_transition};
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        let cases = [
            (
                Phase::Succeeded,
                Outcome::Applied { message: "ok".into() },
                Some((TransitionKind::Applied, Reason::Applied)),
            ),
            (
                Phase::Succeeded,
                Outcome::DryRun { message: "ok".into() },
                Some((TransitionKind::DryRun, Reason::DryRun)),
            ),
            (
                Phase::Succeeded,
                Outcome::Unverified { message: "sent".into() },
                Some((TransitionKind::Unverified, Reason::Unverified)),
            ),
            (
                Phase::Failed,
                Outcome::failed(Reason::NotAllowed, "no"),
                Some((TransitionKind::Failed, Reason::NotAllowed)),
            ),
            (Phase::Running, Outcome::in_progress(Reason::Started, "go"), None),
        ];
        for (phase, outcome, want) in cases {
            let mut plan = PatchPlan::new("p", Default::default());
            let conditions = compute(&outcome, Some(1), &now, &[]);
            plan.status = Some(PatchPlanStatus { phase, conditions, ..Default::default() });
            let got = terminal_transition(&plan).map(|(kind, reason, _)| (kind, reason));
            assert_eq!(got, want, "{phase:?} {outcome:?}");
        }
    }

    /// A dead endpoint fills the bounded queue; `on_plan` still returns at once, and what
    /// does not fit is counted undeliverable (and may be enqueued again later).
    #[tokio::test]
    async fn full_queue_never_blocks_and_is_counted() {
        use crate::plan::{PatchPlanStatus, Phase};
        use crate::report::TransitionKind;
        let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let config = NotifyConfig {
            webhooks: vec![WebhookConfig { url: format!("http://127.0.0.1:{dead}/"), ..Default::default() }],
            delivery: DeliveryConfig {
                retries: 100,
                backoff_ms: 60_000,
                queue_capacity: 1,
                concurrency: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        // Never contacted: nothing is delivered, so no marker is written.
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().expect("uri"))).expect("client");
        let metrics = Metrics::new();
        let notifier = Notifier::start(&config, client, "test", &metrics).expect("starts").expect("enabled");
        let plans: Vec<PatchPlan> = (0..4)
            .map(|i| {
                let mut plan = PatchPlan::new(&format!("p{i}"), Default::default());
                plan.metadata.uid = Some(format!("u-{i}"));
                plan.status = Some(PatchPlanStatus { phase: Phase::Succeeded, ..Default::default() });
                plan
            })
            .collect();
        let started = std::time::Instant::now();
        for plan in &plans {
            notifier.on_plan(&PlanTransition {
                plan,
                kind: TransitionKind::Applied,
                reason: Reason::Applied,
                message: "",
            });
        }
        assert!(started.elapsed() < Duration::from_millis(50), "on_plan only enqueues: {:?}", started.elapsed());
        let labels = SinkLabels { sink: "webhook-0".into(), event: "patch_applied".into() };
        assert_eq!(notifier.shared.metrics.undeliverable.get_or_create(&labels).get(), 3, "queue holds 1 of 4");
        let mut tracker = notifier.shared.tracker.lock().expect("lock");
        assert!(tracker.claim(("u-3".to_string(), "patch_applied", "webhook-0".to_string())), "released");
        assert!(
            metrics
                .encode()
                .contains("antibody_notify_undeliverable_total{sink=\"webhook-0\",event=\"patch_applied\"} 3")
        );
    }
}
