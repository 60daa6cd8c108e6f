//! The claim store behind [`super::Intake`]: which plans exist and which remedies are claimed
//! (the cool-down table, [`super::claim_table`]), kept in memory as a cache of ConfigMap
//! `antibody-cooldown` in the plan namespace. The fast path answers from memory; the slow path
//! reads the table, claims with a compare-and-swap and creates the plan.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tracing::{debug, warn};

use super::Intake;
use super::claim_table::{self, ClaimTable, Coverage};
use crate::plan::PatchPlan;
use crate::report::AlertOutcome;

/// A claim younger than this is trusted without looking for its plan (another replica may be
/// creating it this instant); an older one whose plan does not exist is dropped.
const CLAIM_GRACE: Duration = Duration::from_secs(10);

/// Plan names remembered as existing; past this the memory starts over (it is only a cache).
const MAX_KNOWN_PLANS: usize = 100_000;

#[derive(Debug, Default)]
pub(super) struct Memory {
    cooldown: ClaimTable,
    pub(super) known_plans: HashSet<String>,
    /// The cool-down ConfigMap as this replica last wrote it (resourceVersion for the next CAS).
    stored_table: Option<ConfigMap>,
}

impl Intake {
    pub(super) fn with_memory<R>(&self, namespace: &str, f: impl FnOnce(&mut Memory) -> R) -> R {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        f(memory.entry(namespace.to_string()).or_default())
    }

    pub(super) fn remember_plan(&self, namespace: &str, name: &str) {
        self.with_memory(namespace, |m| {
            if m.known_plans.len() >= MAX_KNOWN_PLANS {
                m.known_plans.clear();
            }
            m.known_plans.insert(name.to_string());
        });
    }

    /// The fast path: answered from memory, no API call.
    pub(super) fn remembered(
        &self,
        namespace: &str,
        name: &str,
        remedies: &[String],
        window: Duration,
    ) -> Option<AlertOutcome> {
        self.with_memory(namespace, |m| {
            if m.known_plans.contains(name) {
                return Some(AlertOutcome::Deduplicated { plan: name.to_string() });
            }
            coverage_outcome(name, m.cooldown.check(name, remedies, Timestamp::now(), window))
        })
    }

    /// The slow path: read the cluster's view, claim the remedies (compare-and-swap), create.
    pub(super) async fn create_or_cool_down(
        &self,
        namespace: &str,
        plan: &PatchPlan,
        remedies: &[String],
        window: Duration,
    ) -> Result<AlertOutcome, kube::Error> {
        let _serial = self.slow_path.lock().await;
        let name = plan.name_any();
        if let Some(outcome) = self.remembered(namespace, &name, remedies, window) {
            return Ok(outcome);
        }
        let plans: Api<PatchPlan> = Api::namespaced(self.client.clone(), namespace);
        if window.is_zero() {
            return self.create_plan(namespace, &plans, plan).await;
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let mut conflicts = 0;
        loop {
            let now = Timestamp::now();
            // The table as this replica last wrote it, if any: the write below is a
            // compare-and-swap, so a stale copy costs a 409 and a re-read, never a double claim.
            let cached = if conflicts == 0 { self.with_memory(namespace, |m| m.stored_table.clone()) } else { None };
            let (stored, mut table) = match cached {
                Some(stored) => {
                    let table = stored.data.as_ref().map(ClaimTable::from_data).unwrap_or_default();
                    (Some(stored), table)
                }
                None => read_table(&config_maps).await?,
            };
            table.prune(now, window);
            // A settled claim whose plan is gone (deleted, or a crash between claim and create)
            // frees its remedies.
            for claimant in table.settled_claimants(remedies, now, window, CLAIM_GRACE) {
                if claimant != name && plans.get_opt(&claimant).await?.is_none() {
                    table.release(&claimant);
                }
            }
            self.with_memory(namespace, |m| m.cooldown = table.clone());
            if let Some(outcome @ AlertOutcome::CooledDown { .. }) =
                coverage_outcome(&name, table.check(&name, remedies, now, window))
            {
                return Ok(outcome);
            }
            table.claim(&name, remedies, now);
            match write_table(&config_maps, stored, &table).await {
                Ok(written) => self.with_memory(namespace, |m| m.stored_table = Some(written)),
                Err(kube::Error::Api(status))
                    if (status.is_conflict() || status.is_already_exists()) && conflicts < 8 =>
                {
                    conflicts += 1;
                    debug!(plan = %name, conflicts, "cool-down table changed underneath; re-reading");
                    continue;
                }
                Err(e) => {
                    self.with_memory(namespace, |m| m.stored_table = None);
                    return Err(e);
                }
            }
            self.with_memory(namespace, |m| m.cooldown = table);
            return match self.create_plan(namespace, &plans, plan).await {
                Ok(outcome) => Ok(outcome),
                Err(e) => {
                    // Free the claim so the next alert can act; if this fails too, the claim is
                    // dropped on the next read because its plan does not exist.
                    if let Err(release) = self.release_claims(namespace, &name).await {
                        warn!(plan = %name, error = %release, "releasing the cool-down claim failed");
                    }
                    Err(e)
                }
            };
        }
    }

    /// Create the plan; one that already exists (same alert, same name) is a duplicate. One
    /// round-trip: no GET first.
    pub(super) async fn create_plan(
        &self,
        namespace: &str,
        plans: &Api<PatchPlan>,
        plan: &PatchPlan,
    ) -> Result<AlertOutcome, kube::Error> {
        let name = plan.name_any();
        let params = PostParams { field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() };
        let outcome = match plans.create(&params, plan).await {
            Ok(_) => AlertOutcome::PlanCreated { plan: name.clone() },
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                AlertOutcome::Deduplicated { plan: name.clone() }
            }
            Err(e) => return Err(e),
        };
        self.remember_plan(namespace, &name);
        Ok(outcome)
    }

    /// Drop a plan's claims, in memory and in the cluster.
    pub(super) async fn release_claims(&self, namespace: &str, plan: &str) -> Result<(), kube::Error> {
        self.with_memory(namespace, |m| m.cooldown.release(plan));
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..8 {
            let (stored, mut table) = read_table(&config_maps).await?;
            if !table.release(plan) {
                return Ok(());
            }
            match write_table(&config_maps, stored, &table).await {
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(e) => return Err(e),
                Ok(written) => {
                    self.with_memory(namespace, |m| m.stored_table = Some(written));
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn coverage_outcome(name: &str, coverage: Coverage) -> Option<AlertOutcome> {
    match coverage {
        Coverage::Open => None,
        Coverage::Same => Some(AlertOutcome::Deduplicated { plan: name.to_string() }),
        Coverage::Covered { plan, remedy } => {
            Some(AlertOutcome::CooledDown { target: claim_table::target_of(&remedy).to_string(), plan })
        }
    }
}

async fn read_table(config_maps: &Api<ConfigMap>) -> Result<(Option<ConfigMap>, ClaimTable), kube::Error> {
    let stored = config_maps.get_opt(crate::names::COOLDOWN_CONFIG_MAP).await?;
    let table = stored.as_ref().and_then(|c| c.data.as_ref()).map(ClaimTable::from_data).unwrap_or_default();
    Ok((stored, table))
}

/// Write the table only if nobody else did since we read it (resourceVersion / create).
/// Returns the ConfigMap as written (its new resourceVersion is the next compare-and-swap's).
async fn write_table(
    config_maps: &Api<ConfigMap>,
    stored: Option<ConfigMap>,
    table: &ClaimTable,
) -> Result<ConfigMap, kube::Error> {
    let written = match stored {
        Some(config_map) => {
            // A merge patch carrying the resourceVersion read is a compare-and-swap (409 if the
            // map changed since); keys no longer in the table are removed with null.
            let data = table.to_data();
            let mut patch_data: serde_json::Map<String, serde_json::Value> =
                data.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            for key in config_map.data.iter().flat_map(|d| d.keys()) {
                if !data.contains_key(key) {
                    patch_data.insert(key.clone(), serde_json::Value::Null);
                }
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": config_map.resource_version() },
                "data": patch_data,
            });
            config_maps.patch(crate::names::COOLDOWN_CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch)).await?
        }
        None => {
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(crate::names::COOLDOWN_CONFIG_MAP.into()),
                    labels: Some(crate::names::managed_labels()),
                    annotations: Some(
                        [(
                            crate::names::PURPOSE_ANNOTATION.to_string(),
                            "per-target alert cool-down claims (see ingest.cooldown_seconds)".to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some(table.to_data()),
                ..Default::default()
            };
            config_maps.create(&PostParams::default(), &config_map).await?
        }
    };
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_maps_to_outcomes() {
        assert_eq!(coverage_outcome("p", Coverage::Open), None);
        assert_eq!(coverage_outcome("p", Coverage::Same), Some(AlertOutcome::Deduplicated { plan: "p".into() }));
        assert_eq!(
            coverage_outcome("p", Coverage::Covered { plan: "q".into(), remedy: "restart:VAEL_Core".into() }),
            Some(AlertOutcome::CooledDown { target: "VAEL_Core".into(), plan: "q".into() })
        );
    }
}
