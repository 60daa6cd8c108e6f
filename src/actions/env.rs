//! editEnv and rollback: change the target's ConfigMap, always backing up its previous data.
//!
//! The backup name is derived from the plan uid and action index, so a retry finds (and keeps)
//! the first backup, which holds the data from before the edit. The edit itself is a
//! server-side apply of one key with Antibody's field manager: repeating it changes nothing.
//! Backups are labelled with the ConfigMap they belong to; only the newest
//! `safety.backup_history` are kept (pruned in the background, after the edit).

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{ActionContext, Step, TARGET_NOT_FOUND, not_found};
use crate::FIELD_MANAGER;
use crate::config::ConfigMapMode;
use crate::plan::{ActionStatus, StepState};

pub const BACKUP_OF_LABEL: &str = "antibody.vael.io/backup-of";
pub const PLAN_LABEL: &str = "antibody.vael.io/plan";
pub const KEY_ANNOTATION: &str = "antibody.vael.io/key";
pub const BACKUP_NOT_FOUND: &str = "BackupNotFound";

/// Deterministic backup name: `<configmap>-bk-<10 hex of sha256(plan uid, action index)>`.
pub fn backup_name(config_map: &str, plan_uid: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{plan_uid}/{index}").as_bytes());
    let prefix: String = config_map.chars().take(253 - 14).collect();
    format!("{prefix}-bk-{}", &hex::encode(digest)[..10])
}

/// Keep the data of `current` under `backup` (a retry keeps the first copy), then prune.
async fn back_up(
    ctx: &ActionContext<'_>,
    api: &Api<ConfigMap>,
    current: &ConfigMap,
    backup: &str,
    key: &str,
) -> crate::Result<()> {
    let cm_name = current.metadata.name.clone().unwrap_or_default();
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(backup.to_string()),
            namespace: Some(ctx.target.namespace.clone()),
            labels: Some(BTreeMap::from([
                (BACKUP_OF_LABEL.to_string(), cm_name.clone()),
                (PLAN_LABEL.to_string(), ctx.plan.metadata.name.clone().unwrap_or_default()),
                ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                ("antibody.vael.io/plan".to_string(), ctx.plan_ref()),
                (KEY_ANNOTATION.to_string(), key.to_string()),
                (
                    "antibody.vael.io/resource-version".to_string(),
                    current.metadata.resource_version.clone().unwrap_or_default(),
                ),
            ])),
            ..Default::default()
        },
        data: current.data.clone(),
        binary_data: current.binary_data.clone(),
        ..Default::default()
    };
    let post = PostParams { field_manager: Some(FIELD_MANAGER.into()), dry_run: ctx.dry_run };
    match api.create(&post, &object).await {
        Ok(_) => {}
        // A retry: the first backup holds the data from before our edit; keep it.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    if !ctx.dry_run {
        schedule_prune(api.clone(), &ctx.target.namespace, &cm_name, ctx.history);
    }
    Ok(())
}

const PRUNE_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// ConfigMaps with a prune running → whether another edit asked for one meanwhile.
static PRUNING: LazyLock<Mutex<HashMap<String, bool>>> = LazyLock::new(Mutex::default);

/// Prune in the background, off the plan's critical path, 0.5 s after the edit that asked for
/// it, so that a burst of edits of one ConfigMap costs one list and its deletes instead of a
/// list per edit. Our own new backup is always among the newest, so it never waits on this;
/// a failed prune is logged and retried by the next edit.
fn schedule_prune(api: Api<ConfigMap>, namespace: &str, config_map: &str, keep: usize) {
    let key = format!("{namespace}/{config_map}");
    {
        let mut pruning = PRUNING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = pruning.get_mut(&key) {
            *again = true;
            return;
        }
        pruning.insert(key.clone(), false);
    }
    let config_map = config_map.to_string();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PRUNE_DELAY).await;
            if let Err(error) = prune(&api, &config_map, keep).await {
                warn!(config_map = %key, %error, "pruning old backups failed; the next edit retries");
            }
            let mut pruning = PRUNING.lock().unwrap_or_else(|p| p.into_inner());
            if pruning.get(&key) == Some(&true) {
                pruning.insert(key.clone(), false);
                continue;
            }
            pruning.remove(&key);
            break;
        }
    });
}

/// Delete all but the newest `keep` backups of `config_map`.
async fn prune(api: &Api<ConfigMap>, config_map: &str, keep: usize) -> crate::Result<()> {
    let mut backups = list_backups(api, config_map).await?;
    if backups.len() <= keep {
        return Ok(());
    }
    backups.truncate(backups.len() - keep);
    for old in backups {
        if let Some(name) = old.metadata.name {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Backups of `config_map`, oldest first.
pub async fn list_backups(api: &Api<ConfigMap>, config_map: &str) -> crate::Result<Vec<ConfigMap>> {
    let selector = format!("{BACKUP_OF_LABEL}={config_map}");
    let mut backups = api.list(&ListParams::default().labels(&selector)).await?.items;
    backups.sort_by(|a, b| {
        let key = |c: &ConfigMap| (c.metadata.creation_timestamp.as_ref().map(|t| t.0), c.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    Ok(backups)
}

pub async fn run(ctx: &ActionContext<'_>, status: &mut ActionStatus) -> crate::Result<Step> {
    let action = &ctx.plan.spec.actions[ctx.index];
    let (Some(key), Some(value)) = (&action.key, &action.value) else {
        return Ok(Step::failed("InvalidSpec", "editEnv needs key and value"));
    };
    let Some(cm_name) = &ctx.target.config_map else {
        return Ok(Step::failed("NotAllowed", format!("target {} has no config_map", ctx.target.name)));
    };
    let ns = &ctx.target.namespace;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let Some(current) = not_found(config_maps.get(cm_name).await)? else {
        return Ok(Step::failed(TARGET_NOT_FOUND, format!("ConfigMap {ns}/{cm_name} not found")));
    };
    status.state = StepState::Running;
    status.started_at.get_or_insert_with(|| ctx.now.clone());
    let old = current.data.as_ref().and_then(|d| d.get(key)).cloned();
    let backup = backup_name(cm_name, ctx.plan_uid(), ctx.index);
    back_up(ctx, &config_maps, &current, &backup, key).await?;
    status.backup_name = Some(backup.clone());

    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if ctx.dry_run {
        params = params.dry_run();
    }
    let apply = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": cm_name, "namespace": ns },
        "data": { key: value },
    });
    config_maps.patch(cm_name, &params, &Patch::Apply(&apply)).await?;

    let was = old.as_ref().map_or("unset".to_string(), |o| format!("{o:?}"));
    if ctx.dry_run {
        status.diff = Some(format!("ConfigMap {ns}/{cm_name}: data[{key}]: {was} → {value:?}"));
        return Ok(Step::Done(format!("dry run: would set {key} in ConfigMap {ns}/{cm_name} (backup {backup})")));
    }
    Ok(Step::Done(format!(
        "set {key} in ConfigMap {ns}/{cm_name} (was {was}); backup {backup}; {}",
        takes_effect(ctx.target.config_map_mode)
    )))
}

fn takes_effect(mode: ConfigMapMode) -> &'static str {
    match mode {
        ConfigMapMode::Env => "consumed as env: takes effect after a restart",
        ConfigMapMode::File => "mounted as a file: takes effect after a reload",
        ConfigMapMode::Watched => "mounted as a file the app watches: takes effect when it re-reads it",
    }
}

/// The merge patch that makes `current` hold exactly `wanted` (absent keys are removed).
pub fn restore_patch(current: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> Value {
    let mut data = Map::new();
    for key in current.keys().filter(|k| !wanted.contains_key(*k)) {
        data.insert(key.clone(), Value::Null);
    }
    for (key, value) in wanted {
        if current.get(key) != Some(value) {
            data.insert(key.clone(), Value::String(value.clone()));
        }
    }
    json!({ "data": data })
}

/// rollback: restore the target's ConfigMap from the named backup (backing up what it replaces).
pub async fn rollback(ctx: &ActionContext<'_>, status: &mut ActionStatus) -> crate::Result<Step> {
    let Some(backup) = ctx.plan.spec.actions[ctx.index].backup.clone() else {
        return Ok(Step::failed("InvalidSpec", "rollback needs the backup to restore"));
    };
    status.state = StepState::Running;
    status.started_at.get_or_insert_with(|| ctx.now.clone());
    restore(ctx, status, &backup).await
}

/// Restore `backup` into the target's ConfigMap. Used by rollback and by the automatic
/// compensation of a failed transactional edit.
pub async fn restore(ctx: &ActionContext<'_>, status: &mut ActionStatus, backup: &str) -> crate::Result<Step> {
    let Some(cm_name) = &ctx.target.config_map else {
        return Ok(Step::failed("NotAllowed", format!("target {} has no config_map", ctx.target.name)));
    };
    let ns = &ctx.target.namespace;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let Some(saved) = not_found(config_maps.get(backup).await)? else {
        return Ok(Step::failed(BACKUP_NOT_FOUND, format!("backup ConfigMap {ns}/{backup} not found")));
    };
    let of = saved.metadata.labels.as_ref().and_then(|l| l.get(BACKUP_OF_LABEL));
    if of != Some(cm_name) {
        return Ok(Step::failed("NotAllowed", format!("{ns}/{backup} is not a backup of ConfigMap {cm_name}")));
    }
    let Some(current) = not_found(config_maps.get(cm_name).await)? else {
        return Ok(Step::failed(TARGET_NOT_FOUND, format!("ConfigMap {ns}/{cm_name} not found")));
    };
    let empty = BTreeMap::new();
    let patch = restore_patch(current.data.as_ref().unwrap_or(&empty), saved.data.as_ref().unwrap_or(&empty));
    let changed: Vec<String> = patch["data"].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default();
    if ctx.dry_run {
        status.diff = Some(format!("ConfigMap {ns}/{cm_name}: restore from {backup}; keys changed: {changed:?}"));
        return Ok(Step::Done(format!("dry run: would restore ConfigMap {ns}/{cm_name} from {backup}")));
    }
    if !changed.is_empty() {
        // What the rollback replaces is kept too: a rollback can itself be rolled back.
        let own_backup = backup_name(cm_name, ctx.plan_uid(), ctx.index);
        back_up(ctx, &config_maps, &current, &own_backup, "*").await?;
        status.backup_name = Some(own_backup);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        config_maps.patch(cm_name, &params, &Patch::Merge(&patch)).await?;
    }
    Ok(Step::Done(format!(
        "restored ConfigMap {ns}/{cm_name} from {backup} (keys changed: {changed:?}); {}",
        takes_effect(ctx.target.config_map_mode)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_deterministic_and_valid() {
        let a = backup_name("vael-core-env", "uid-1", 0);
        assert_eq!(a, backup_name("vael-core-env", "uid-1", 0));
        assert_ne!(a, backup_name("vael-core-env", "uid-1", 1));
        assert_ne!(a, backup_name("vael-core-env", "uid-2", 0));
        crate::validate::dns1123_subdomain(&a).expect("valid name");
        let long = backup_name(&"a".repeat(253), "u", 0);
        assert!(long.len() <= 253, "{}", long.len());
    }

    #[test]
    fn restore_patch_sets_changed_and_removes_extra_keys() {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        type Data = BTreeMap<String, String>;
        let cases: Vec<(Data, Data, Value)> = vec![
            (map(&[("A", "1")]), map(&[("A", "1")]), json!({"data": {}})),
            (map(&[("A", "2")]), map(&[("A", "1")]), json!({"data": {"A": "1"}})),
            (map(&[("A", "1"), ("NEW", "x")]), map(&[("A", "1")]), json!({"data": {"NEW": null}})),
            (map(&[]), map(&[("A", "1")]), json!({"data": {"A": "1"}})),
        ];
        for (current, wanted, want) in cases {
            assert_eq!(restore_patch(&current, &wanted), want, "{current:?} → {wanted:?}");
        }
    }
}
