//! The replay guard: every signature a plan acted under is remembered until it expires, so a
//! signed plan copied (`kubectl get -o yaml`), deleted and re-applied is refused
//! `SignatureReplayed` instead of running again.
//!
//! The memory is durable and shared by all replicas: 16 ConfigMaps `antibody-signatures-<0..f>`
//! in Antibody's namespace, sharded by the first hex digit of the signature's fingerprint, each
//! key a fingerprint, each value the plan (uid, name) that used it and the expiry. The claim is
//! written with a resourceVersion precondition before the plan acts; on a conflict it re-reads.
//! Expired entries are dropped on every write (a signature past its expiry is refused anyway).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::FIELD_MANAGER;

use crate::names::SIGNATURES_CONFIG_MAP_PREFIX;
const MAX_CONFLICTS: u32 = 16;

/// One executed signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub uid: String,
    pub plan: String,
    /// Unix seconds.
    pub expires: i64,
}

/// What the stored shard says about a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody used it: record it (the new data, expired entries dropped).
    New(BTreeMap<String, String>),
    /// This plan already holds it (a later reconcile of the same plan).
    Ours,
    /// Another plan (another uid: a deleted original or a concurrent copy) acted under it.
    Replayed(Entry),
}

/// Pure: may plan `uid` act under `fingerprint`, given the shard's data at `now`?
pub fn claim(data: &BTreeMap<String, String>, fingerprint: &str, entry: &Entry, now: i64) -> Claim {
    if let Some(held) = data.get(fingerprint).and_then(|v| serde_json::from_str::<Entry>(v).ok()) {
        if held.uid == entry.uid {
            return Claim::Ours;
        }
        // Kept until expiry; refused until then even if the shard was not pruned yet.
        return Claim::Replayed(held);
    }
    let mut next: BTreeMap<String, String> = data
        .iter()
        .filter(|(_, v)| serde_json::from_str::<Entry>(v).is_ok_and(|e| e.expires > now))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    next.insert(fingerprint.to_string(), serde_json::to_string(entry).unwrap_or_default());
    Claim::New(next)
}

pub fn shard_name(fingerprint: &str) -> String {
    format!("{SIGNATURES_CONFIG_MAP_PREFIX}{}", fingerprint.chars().next().unwrap_or('0'))
}

/// Record `fingerprint` for plan `entry.uid` durably; `Err(holder)` when another plan used it.
pub async fn record(
    client: &Client,
    namespace: &str,
    fingerprint: &str,
    entry: &Entry,
) -> crate::Result<Result<(), Entry>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = shard_name(fingerprint);
    let mut conflicts = 0;
    loop {
        let stored = api.get_opt(&name).await?;
        let data = stored.as_ref().and_then(|c| c.data.clone()).unwrap_or_default();
        let next = match claim(&data, fingerprint, entry, jiff::Timestamp::now().as_second()) {
            Claim::Ours => return Ok(Ok(())),
            Claim::Replayed(holder) => return Ok(Err(holder)),
            Claim::New(next) => next,
        };
        let written = match &stored {
            Some(current) => {
                // Merge patch with the resourceVersion read: 409 if another writer came first.
                let mut patch_data: Map<String, Value> =
                    next.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                for key in data.keys().filter(|k| !next.contains_key(*k)) {
                    patch_data.insert(key.clone(), Value::Null);
                }
                let patch =
                    json!({ "metadata": { "resourceVersion": current.resource_version() }, "data": patch_data });
                let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                api.patch(&name, &params, &Patch::Merge(&patch)).await.map(|_| ())
            }
            None => {
                let object = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(crate::names::managed_labels()),
                        ..Default::default()
                    },
                    data: Some(next),
                    ..Default::default()
                };
                let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                api.create(&params, &object).await.map(|_| ())
            }
        };
        match written {
            Ok(()) => return Ok(Ok(())),
            Err(kube::Error::Api(status)) if (status.code == 409) && conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(5..50))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str, expires: i64) -> Entry {
        Entry { uid: uid.into(), plan: "ns/p".into(), expires }
    }

    fn data(entries: &[(&str, Entry)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, e)| (k.to_string(), serde_json::to_string(e).expect("json"))).collect()
    }

    #[test]
    fn claims() {
        let stored = data(&[("aa", entry("u1", 200)), ("bb", entry("u2", 50))]);
        assert_eq!(claim(&stored, "aa", &entry("u1", 200), 100), Claim::Ours, "same plan again");
        assert_eq!(claim(&stored, "aa", &entry("u9", 200), 100), Claim::Replayed(entry("u1", 200)), "a copy");
        assert_eq!(
            claim(&stored, "aa", &entry("u9", 200), 300),
            Claim::Replayed(entry("u1", 200)),
            "still refused after expiry while stored (the signature itself has expired by then)"
        );
        let Claim::New(next) = claim(&stored, "cc", &entry("u3", 400), 100) else { panic!("new") };
        assert_eq!(next.keys().collect::<Vec<_>>(), ["aa", "cc"], "expired bb is dropped, cc added");
        let garbage = BTreeMap::from([("zz".to_string(), "not json".to_string())]);
        let Claim::New(next) = claim(&garbage, "cc", &entry("u3", 400), 100) else { panic!("new") };
        assert_eq!(next.len(), 1, "unparseable entries are dropped");
    }

    #[test]
    fn shards_by_first_digit() {
        assert_eq!(shard_name("a1b2"), "antibody-signatures-a");
        assert_eq!(shard_name(""), "antibody-signatures-0");
    }
}
