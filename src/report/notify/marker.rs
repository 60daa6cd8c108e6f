//! Delivery markers: the annotation `antibody.vael.io/notified-<event>` on a PatchPlan lists
//! the sinks that took the event. A controller that starts re-delivers what has no marker.

use crate::names::API_GROUP;
use std::collections::BTreeSet;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::NotifyEvent;
use crate::plan::PatchPlan;

/// `antibody.vael.io/notified-patch_applied`: the sinks that took this event, comma-separated.
pub fn marker_annotation(event: &str) -> String {
    format!("{API_GROUP}/notified-{event}")
}

/// Sinks named in a plan's delivery marker for `event`.
pub fn marker_sinks(plan: &PatchPlan, event: &str) -> BTreeSet<String> {
    plan.annotations()
        .get(&marker_annotation(event))
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

/// Add `sink` to the plan's marker for the event; optimistic (resourceVersion) so two writers
/// never drop each other's sinks.
pub(super) async fn record_marker(client: &Client, event: &NotifyEvent, sink: &str) -> Result<(), kube::Error> {
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), &event.namespace);
    let key = marker_annotation(event.event);
    for _ in 0..5 {
        let Some(meta) = api.get_metadata_opt(&event.name).await? else {
            return Ok(());
        };
        if meta.metadata.uid.as_deref() != Some(event.uid.as_str()) {
            return Ok(()); // deleted and re-created: not our plan any more
        }
        let mut sinks: BTreeSet<String> = meta
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&key))
            .map(|v| v.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        if !sinks.insert(sink.to_string()) {
            return Ok(());
        }
        let value = sinks.into_iter().collect::<Vec<_>>().join(",");
        let patch = json!({
            "metadata": { "resourceVersion": meta.metadata.resource_version, "annotations": { &key: value } }
        });
        match api.patch_metadata(&event.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_lists_sinks() {
        let mut plan = PatchPlan::new("p", Default::default());
        assert!(marker_sinks(&plan, "patch_applied").is_empty());
        plan.metadata.annotations =
            Some([(marker_annotation("patch_applied"), "ci, socketio,".to_string())].into_iter().collect());
        assert_eq!(marker_sinks(&plan, "patch_applied"), BTreeSet::from(["ci".to_string(), "socketio".to_string()]));
        assert!(marker_sinks(&plan, "patch_failed").is_empty());
        assert_eq!(marker_annotation("patch_applied"), "antibody.vael.io/notified-patch_applied");
    }
}
