//! Kubernetes Events on PatchPlan transitions (events.k8s.io/v1, regarding the plan with its
//! uid). The kube-runtime Recorder aggregates repeats into a series.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::debug;

use crate::plan::PatchPlan;

/// Publish one Event; a failure is logged, never fails the reconcile.
pub async fn publish(
    recorder: &Recorder,
    plan: &PatchPlan,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1024)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &plan.object_ref(&())).await {
        debug!(error = %e, reason, "could not publish event");
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
