//! editEnv and rollback: change the target's ConfigMap, always backing up its previous data.
//!
//! The backup name is derived from the plan uid and action index, so a retry finds (and keeps)
//! the first backup, which holds the data from before the edit. The edit itself is a
//! server-side apply of one key with Antibody's field manager: repeating it changes nothing.
//! Backups are labelled with the ConfigMap they belong to; only the newest
//! `safety.backup_history` are kept (pruned in the background, after the edit), and never one
//! a plan still in flight refers to.
//!
//! Trust: anyone who can create ConfigMaps can plant one with the backup label, or at the
//! deterministic backup name before the edit runs. So the sha256 of the data backed up is
//! recorded in the plan's status (written only by Antibody) *before* the backup is created; an
//! object at the backup name with other data is refused, and a restore verifies the backup
//! against the status of the plan that made it (`BackupUntrusted` otherwise).

use crate::reason::Reason;
use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{ActionContext, Checkpoint, Step, not_found};
use crate::FIELD_MANAGER;
use crate::config::ConfigMapMode;
use crate::plan::{ActionStatus, PatchPlan, StepState};

use crate::names::BACKUP_OF_LABEL;
use crate::names::KEY_ANNOTATION;
use crate::names::PLAN_LABEL;
use crate::names::PLAN_UID_ANNOTATION;

/// sha256 of a ConfigMap's data and binaryData (canonical JSON of the sorted maps), hex.
pub fn data_digest(config_map: &ConfigMap) -> String {
    let value = json!({ "data": config_map.data, "binaryData": config_map.binary_data });
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

/// For restores that must not checkpoint (the compensation of a failed transactional plan).
pub struct NoCheckpoint;

impl Checkpoint for NoCheckpoint {
    async fn checkpoint(&mut self, _action: &ActionStatus) -> crate::Result<()> {
        Ok(())
    }
}

/// Deterministic backup name: `<configmap>-bk-<10 hex of sha256(plan uid, action index)>`.
pub fn backup_name(config_map: &str, plan_uid: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{plan_uid}/{index}").as_bytes());
    let prefix: String = config_map.chars().take(253 - 14).collect();
    format!("{prefix}-bk-{}", &hex::encode(digest)[..10])
}

/// Keep the data of `current` under `backup` (a retry keeps the first copy), then prune.
/// The digest is checkpointed in `status` before the backup is written; an object already at
/// the name with other data is refused (`Err(step)`).
async fn back_up(
    ctx: &ActionContext<'_>,
    api: &Api<ConfigMap>,
    current: &ConfigMap,
    backup: &str,
    key: &str,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
) -> crate::Result<Result<(), Step>> {
    let cm_name = current.metadata.name.clone().unwrap_or_default();
    let ns = &ctx.target.namespace;
    let current_digest = data_digest(current);
    let digest = match (&status.backup_name, &status.backup_digest) {
        (Some(name), Some(digest)) if name == backup => digest.clone(),
        _ => {
            status.backup_name = Some(backup.to_string());
            status.backup_digest = Some(current_digest.clone());
            saver.checkpoint(status).await?;
            current_digest.clone()
        }
    };
    let untrusted = || {
        Err(Step::failed(
            Reason::BackupUntrusted,
            format!(
                "ConfigMap {ns}/{backup} already exists with data this plan did not back up \
                 (planted at the backup name?): refusing to edit ConfigMap {ns}/{cm_name}"
            ),
        ))
    };
    if let Some(existing) = not_found(api.get(backup).await)? {
        return Ok(if data_digest(&existing) == digest { Ok(()) } else { untrusted() });
    }
    if current_digest != digest {
        return Ok(Err(Step::failed(
            Reason::BackupNotFound,
            format!("backup {ns}/{backup} recorded in status is gone and ConfigMap {cm_name} changed since"),
        )));
    }
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(backup.to_string()),
            namespace: Some(ctx.target.namespace.clone()),
            labels: Some(BTreeMap::from([
                (BACKUP_OF_LABEL.to_string(), cm_name.clone()),
                (PLAN_LABEL.to_string(), ctx.plan.metadata.name.clone().unwrap_or_default()),
                (crate::names::MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (crate::names::PLAN_ANNOTATION.to_string(), ctx.plan_ref()),
                (PLAN_UID_ANNOTATION.to_string(), ctx.plan_uid().to_string()),
                (KEY_ANNOTATION.to_string(), key.to_string()),
                (
                    crate::names::BACKUP_RESOURCE_VERSION_ANNOTATION.to_string(),
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
        // Created between our look and our create: only the same data is accepted.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = not_found(api.get(backup).await)?;
            if existing.is_none_or(|e| data_digest(&e) != digest) {
                return Ok(untrusted());
            }
        }
        Err(e) => return Err(e.into()),
    }
    if !ctx.dry_run {
        let plans: Api<PatchPlan> =
            Api::namespaced(ctx.client.clone(), ctx.plan.metadata.namespace.as_deref().unwrap_or_default());
        schedule_prune(api.clone(), plans, &ctx.target.namespace, &cm_name, ctx.history);
    }
    Ok(Ok(()))
}

const PRUNE_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// ConfigMaps with a prune running → whether another edit asked for one meanwhile.
static PRUNING: LazyLock<Mutex<HashMap<String, bool>>> = LazyLock::new(Mutex::default);

/// Prune in the background, off the plan's critical path, 0.5 s after the edit that asked for
/// it, so that a burst of edits of one ConfigMap costs one list and its deletes instead of a
/// list per edit. Our own new backup is always among the newest, so it never waits on this;
/// a failed prune is logged and retried by the next edit.
fn schedule_prune(api: Api<ConfigMap>, plans: Api<PatchPlan>, namespace: &str, config_map: &str, keep: usize) {
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
            if let Err(error) = prune(&api, &plans, &config_map, keep).await {
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

/// Delete all but the newest `keep` backups of `config_map`, never one that a plan still in
/// flight names (its edit's backup, or the backup its rollback restores): an old backup of a
/// slow transactional plan is exactly the one it needs. `plans`: the editing plan's namespace
/// (the least-privilege RBAC grants no cluster-wide list of plans).
async fn prune(api: &Api<ConfigMap>, plans: &Api<PatchPlan>, config_map: &str, keep: usize) -> crate::Result<()> {
    let mut backups = list_backups(api, config_map).await?;
    if backups.len() <= keep {
        return Ok(());
    }
    let protected = protected_backups(&plans.list(&ListParams::default()).await?.items);
    backups.truncate(backups.len() - keep);
    for old in backups {
        let Some(name) = old.metadata.name else { continue };
        if protected.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Backup names that plans not yet finished refer to.
pub fn protected_backups(plans: &[PatchPlan]) -> std::collections::HashSet<String> {
    plans
        .iter()
        .filter(|p| !p.phase().is_terminal())
        .flat_map(|p| {
            let recorded = p.status.iter().flat_map(|s| s.actions.iter().filter_map(|a| a.backup_name.clone()));
            let named = p.spec.actions.iter().filter_map(|a| a.backup.clone());
            recorded.chain(named).collect::<Vec<_>>()
        })
        .collect()
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

pub async fn run(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
) -> crate::Result<Step> {
    let action = &ctx.plan.spec.actions[ctx.index];
    let (Some(key), Some(value)) = (&action.key, &action.value) else {
        return Ok(Step::failed(Reason::InvalidSpec, "editEnv needs key and value"));
    };
    let Some(cm_name) = &ctx.target.config_map else {
        return Ok(Step::failed(Reason::NotAllowed, format!("target {} has no config_map", ctx.target.name)));
    };
    let ns = &ctx.target.namespace;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let Some(current) = not_found(config_maps.get(cm_name).await)? else {
        return Ok(Step::failed(Reason::TargetNotFound, format!("ConfigMap {ns}/{cm_name} not found")));
    };
    status.state = StepState::Running;
    status.started_at.get_or_insert_with(|| ctx.now.clone());
    let old = current.data.as_ref().and_then(|d| d.get(key)).cloned();
    let backup = backup_name(cm_name, ctx.plan_uid(), ctx.index);
    if let Err(step) = back_up(ctx, &config_maps, &current, &backup, key, status, saver).await? {
        return Ok(step);
    }

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
pub async fn rollback(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    saver: &mut impl Checkpoint,
) -> crate::Result<Step> {
    let Some(backup) = ctx.plan.spec.actions[ctx.index].backup.clone() else {
        return Ok(Step::failed(Reason::InvalidSpec, "rollback needs the backup to restore"));
    };
    status.state = StepState::Running;
    status.started_at.get_or_insert_with(|| ctx.now.clone());
    restore(ctx, status, &backup, None, Some(saver)).await
}

/// Is `saved` a backup Antibody made? With `expected` (the compensation of our own edit) its
/// digest must match; otherwise the plan named in its annotations must exist with the uid it
/// names and have recorded this backup and digest in its status.
async fn verify_backup(
    ctx: &ActionContext<'_>,
    saved: &ConfigMap,
    expected: Option<&str>,
) -> crate::Result<Result<(), String>> {
    let name = saved.metadata.name.as_deref().unwrap_or_default();
    let digest = data_digest(saved);
    if let Some(expected) = expected {
        return Ok(if expected == digest {
            Ok(())
        } else {
            Err("its data no longer matches the digest recorded when it was made".to_string())
        });
    }
    let annotations = saved.metadata.annotations.clone().unwrap_or_default();
    let (Some(plan_ref), Some(uid)) =
        (annotations.get(crate::names::PLAN_ANNOTATION), annotations.get(PLAN_UID_ANNOTATION))
    else {
        return Ok(Err("it names no plan that made it".into()));
    };
    let Some((plan_ns, plan_name)) = plan_ref.split_once('/') else {
        return Ok(Err(format!("malformed plan reference {plan_ref:?}")));
    };
    let plans: Api<PatchPlan> = Api::namespaced(ctx.client.clone(), plan_ns);
    let Some(source) = not_found(plans.get(plan_name).await)? else {
        return Ok(Err(format!("the plan {plan_ref} that made it is gone: its digest cannot be checked")));
    };
    if source.metadata.uid.as_deref() != Some(uid.as_str()) {
        return Ok(Err(format!("plan {plan_ref} is not the plan (uid {uid}) that it claims made it")));
    }
    let recorded = source
        .status
        .iter()
        .flat_map(|s| s.actions.iter())
        .any(|a| a.backup_name.as_deref() == Some(name) && a.backup_digest.as_deref() == Some(digest.as_str()));
    Ok(if recorded { Ok(()) } else { Err(format!("plan {plan_ref} recorded no backup {name} with this data")) })
}

/// Restore `backup` into the target's ConfigMap. Used by rollback and by the automatic
/// compensation of a failed transactional edit (`expected` digest from its own status, no
/// checkpoint: what it replaces is the plan's own edit and is not backed up again).
/// Only keys in the target's `env_keys` are changed, when it has that list.
pub async fn restore<C: Checkpoint>(
    ctx: &ActionContext<'_>,
    status: &mut ActionStatus,
    backup: &str,
    expected: Option<&str>,
    saver: Option<&mut C>,
) -> crate::Result<Step> {
    let Some(cm_name) = &ctx.target.config_map else {
        return Ok(Step::failed(Reason::NotAllowed, format!("target {} has no config_map", ctx.target.name)));
    };
    let ns = &ctx.target.namespace;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let Some(saved) = not_found(config_maps.get(backup).await)? else {
        return Ok(Step::failed(Reason::BackupNotFound, format!("backup ConfigMap {ns}/{backup} not found")));
    };
    let of = saved.metadata.labels.as_ref().and_then(|l| l.get(BACKUP_OF_LABEL));
    if of != Some(cm_name) {
        return Ok(Step::failed(Reason::NotAllowed, format!("{ns}/{backup} is not a backup of ConfigMap {cm_name}")));
    }
    if let Err(why) = verify_backup(ctx, &saved, expected).await? {
        return Ok(Step::failed(Reason::BackupUntrusted, format!("refusing to restore {ns}/{backup}: {why}")));
    }
    let Some(current) = not_found(config_maps.get(cm_name).await)? else {
        return Ok(Step::failed(Reason::TargetNotFound, format!("ConfigMap {ns}/{cm_name} not found")));
    };
    let empty = BTreeMap::new();
    let mut patch = restore_patch(current.data.as_ref().unwrap_or(&empty), saved.data.as_ref().unwrap_or(&empty));
    let mut skipped = Vec::new();
    if let (Some(allowed), Some(data)) = (&ctx.target.env_keys, patch["data"].as_object_mut()) {
        skipped = data.keys().filter(|k| !allowed.contains(*k)).cloned().collect();
        data.retain(|k, _| allowed.contains(k));
    }
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!("; left alone (not in targets.{}.env_keys): {skipped:?}", ctx.target.name)
    };
    let changed: Vec<String> = patch["data"].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default();
    if ctx.dry_run {
        status.diff = Some(format!("ConfigMap {ns}/{cm_name}: restore from {backup}; keys changed: {changed:?}"));
        return Ok(Step::Done(format!("dry run: would restore ConfigMap {ns}/{cm_name} from {backup}")));
    }
    if !changed.is_empty() {
        // What the rollback replaces is kept too: a rollback can itself be rolled back.
        if let Some(saver) = saver {
            let own_backup = backup_name(cm_name, ctx.plan_uid(), ctx.index);
            if let Err(step) = back_up(ctx, &config_maps, &current, &own_backup, "*", status, saver).await? {
                return Ok(step);
            }
        }
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        config_maps.patch(cm_name, &params, &Patch::Merge(&patch)).await?;
    }
    Ok(Step::Done(format!(
        "restored ConfigMap {ns}/{cm_name} from {backup} (keys changed: {changed:?}{skipped}); {}",
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
    fn digests_cover_data_and_binary_data() {
        let cm = |pairs: &[(&str, &str)]| ConfigMap {
            data: Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        };
        assert_eq!(data_digest(&cm(&[("A", "1"), ("B", "2")])), data_digest(&cm(&[("B", "2"), ("A", "1")])));
        assert_ne!(data_digest(&cm(&[("A", "1")])), data_digest(&cm(&[("A", "2")])));
        let mut binary = cm(&[("A", "1")]);
        binary.binary_data = Some([("X".to_string(), k8s_openapi::ByteString(vec![1]))].into());
        assert_ne!(data_digest(&binary), data_digest(&cm(&[("A", "1")])));
        let mut labelled = cm(&[("A", "1")]);
        labelled.metadata.labels = Some([(BACKUP_OF_LABEL.to_string(), "x".to_string())].into());
        assert_eq!(data_digest(&labelled), data_digest(&cm(&[("A", "1")])), "only the data counts");
    }

    #[test]
    fn backups_of_plans_in_flight_are_protected() {
        use crate::plan::{ActionType, PatchPlanSpec, PatchPlanStatus, Phase, PlanAction};
        let plan = |phase: Phase, recorded: Option<&str>, named: Option<&str>| {
            let mut rollback = PlanAction::new(ActionType::Rollback, "T");
            rollback.backup = named.map(Into::into);
            let mut plan = PatchPlan::new("p", PatchPlanSpec { actions: vec![rollback], ..Default::default() });
            plan.status = Some(PatchPlanStatus {
                phase,
                actions: vec![ActionStatus { backup_name: recorded.map(Into::into), ..Default::default() }],
                ..Default::default()
            });
            plan
        };
        let plans = [
            plan(Phase::Running, Some("running-edit"), None),
            plan(Phase::Pending, None, Some("pending-restore")),
            plan(Phase::Succeeded, Some("done-edit"), Some("done-restore")),
            plan(Phase::Failed, Some("failed-edit"), None),
        ];
        let mut protected: Vec<String> = protected_backups(&plans).into_iter().collect();
        protected.sort();
        assert_eq!(protected, ["pending-restore", "running-edit"]);
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
