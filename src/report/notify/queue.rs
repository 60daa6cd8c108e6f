//! The delivery queue: one bounded queue and worker per sink, a timeout and backoff per
//! attempt, a marker after each delivery, and a [`Tracker`] so replays do not duplicate
//! deliveries in flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, info, warn};

use super::marker::record_marker;
use super::redis::RedisSink;
use super::webhook::WebhookSink;
use super::{NotifyEvent, NotifyMetrics, SendError};
use crate::bounded::BoundedSet;

/// What this process did with a (plan uid, event, sink); stops replays from duplicating
/// deliveries in flight or re-trying ones already given up, until the next start. The oldest
/// claims are forgotten past [`TRACKER_CAPACITY`] (a forgotten one may be delivered twice).
pub(super) struct Tracker(BoundedSet<(String, &'static str, String)>);

const TRACKER_CAPACITY: usize = 100_000;

impl Default for Tracker {
    fn default() -> Self {
        Self(BoundedSet::new(TRACKER_CAPACITY))
    }
}

impl Tracker {
    /// False when this process already has (or had) this delivery.
    pub(super) fn claim(&mut self, key: (String, &'static str, String)) -> bool {
        self.0.insert(key)
    }

    /// Let a later replay try again (the event never left the process).
    pub(super) fn release(&mut self, key: &(String, &'static str, String)) {
        self.0.remove(key);
    }
}

pub(super) enum Sink {
    Redis(Box<RedisSink>),
    Webhook(WebhookSink),
}

impl Sink {
    pub(super) async fn send(&self, event: &NotifyEvent) -> Result<(), SendError> {
        match self {
            Sink::Redis(s) => s.send(event).await,
            Sink::Webhook(s) => s.send(event).await,
        }
    }
}

pub(super) struct RetryPolicy {
    pub(super) retries: u32,
    pub(super) base: Duration,
    pub(super) max: Duration,
}

pub(super) struct SinkWorker {
    pub(super) name: String,
    pub(super) sink: Sink,
    pub(super) policy: RetryPolicy,
}

pub(super) struct Job {
    pub(super) event: Arc<NotifyEvent>,
}

pub(super) struct Shared {
    pub(super) client: Client,
    /// `notify.reveal_values`: otherwise summaries are redacted (`report::access::redact`).
    pub(super) reveal_values: bool,
    pub(super) metrics: NotifyMetrics,
    pub(super) tracker: Mutex<Tracker>,
}

pub(super) async fn run_worker(
    worker: Arc<SinkWorker>,
    mut jobs: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (worker, shared) = (worker.clone(), shared.clone());
        tokio::spawn(async move {
            deliver(&worker, &job.event, &shared).await;
            drop(slot);
        });
    }
}

pub(super) async fn deliver(worker: &SinkWorker, event: &NotifyEvent, shared: &Shared) {
    let sink = worker.name.as_str();
    let attempts = worker.policy.retries.saturating_add(1);
    for attempt in 1..=attempts {
        match worker.sink.send(event).await {
            Ok(()) => {
                NotifyMetrics::count(&shared.metrics.delivered, sink, event.event);
                info!(plan = %event.name, event = event.event, sink, attempt, "notification delivered");
                if let Err(e) = record_marker(&shared.client, event, sink).await {
                    // Delivered but unmarked: a restart may deliver it again (receivers de-duplicate).
                    warn!(plan = %event.name, event = event.event, sink, error = %e, "cannot record delivery marker");
                }
                return;
            }
            Err(e) => {
                NotifyMetrics::count(&shared.metrics.failures, sink, event.event);
                let last = attempt == attempts || !e.retryable;
                warn!(
                    plan = %event.name, event = event.event, sink, attempt, attempts,
                    retryable = e.retryable, error = %e.message, "notification attempt failed"
                );
                if last {
                    break;
                }
                tokio::time::sleep(
                    crate::backoff::Backoff::new(worker.policy.base, worker.policy.max).ceiling(attempt - 1),
                )
                .await;
            }
        }
    }
    NotifyMetrics::count(&shared.metrics.undeliverable, sink, event.event);
    error!(
        plan = %event.name, event = event.event, sink, id = %event.dedup_id(),
        "notification undeliverable: giving up until the next controller start"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_claims_once_and_releases() {
        let mut tracker = Tracker::default();
        let key = ("u-1".to_string(), "patch_applied", "socketio".to_string());
        assert!(tracker.claim(key.clone()));
        assert!(!tracker.claim(key.clone()), "second claim in this process is refused");
        assert!(tracker.claim(("u-1".into(), "patch_applied", "ci".into())), "other sinks are separate");
        tracker.release(&key);
        assert!(tracker.claim(key), "released claims can be taken again");
    }
}
