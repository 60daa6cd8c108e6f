//! Kubernetes Events on PatchPlan transitions (events.k8s.io/v1, regarding the plan with its
//! uid). The kube-runtime Recorder aggregates repeats into a series.
//!
//! Published by one background task, in order, from a bounded queue: an Event is a report,
//! not part of the plan's work, so it never adds an API round-trip to a plan's path to
//! `PatchApplied`. A full queue drops (counted in `antibody_events_dropped_total`); the audit
//! log remains the complete record.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::plan::PatchPlan;
use crate::report::metrics::Metrics;

const QUEUE: usize = 4096;

enum Message {
    Publish(Box<(Event, ObjectReference)>),
    Flush(oneshot::Sender<()>),
}

/// The sending side of the Event queue.
pub struct EventQueue {
    sender: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl EventQueue {
    /// Start the publishing task (needs a Tokio runtime).
    pub fn start(recorder: Recorder, metrics: Arc<Metrics>) -> Self {
        let (sender, mut receiver) = mpsc::channel::<Message>(QUEUE);
        let task_metrics = metrics.clone();
        tokio::spawn(async move {
            while let Some(message) = receiver.recv().await {
                match message {
                    Message::Publish(event) => {
                        let (event, regarding) = *event;
                        if let Err(e) = recorder.publish(&event, &regarding).await {
                            task_metrics.events_dropped.inc();
                            debug!(error = %e, reason = %event.reason, "could not publish event");
                        }
                    }
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { sender, metrics }
    }

    /// Queue one Event about `plan`; never waits.
    pub fn publish(&self, plan: &PatchPlan, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1024)),
            action: action.into(),
            secondary: None,
        };
        let message = Message::Publish(Box::new((event, plan.object_ref(&()))));
        if self.sender.try_send(message).is_err() {
            self.metrics.events_dropped.inc();
            debug!(reason, "event queue full; event dropped");
        }
    }

    /// Wait (at most `limit`) until every Event queued before this call was sent: on shutdown.
    pub async fn flush(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
