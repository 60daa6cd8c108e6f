//! editEnv: set one key of the target's ConfigMap, after backing up its previous data.
//!
//! The backup name is derived from the plan uid and action index, so a retry finds (and keeps)
//! the first backup, which holds the data from before the edit. The edit itself is a
//! server-side apply of one key with Antibody's field manager: repeating it changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ActionContext, Step, TARGET_NOT_FOUND, not_found};
use crate::FIELD_MANAGER;
use crate::config::ConfigMapMode;
use crate::plan::{ActionStatus, StepState};

pub const BACKUP_OF_LABEL: &str = "antibody.vael.io/backup-of";
pub const PLAN_LABEL: &str = "antibody.vael.io/plan";

/// Deterministic backup name: `<configmap>-bk-<10 hex of sha256(plan uid, action index)>`.
pub fn backup_name(config_map: &str, plan_uid: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{plan_uid}/{index}").as_bytes());
    let prefix: String = config_map.chars().take(253 - 14).collect();
    format!("{prefix}-bk-{}", &hex::encode(digest)[..10])
}

pub async fn run(ctx: &ActionContext<'_>, status: &mut ActionStatus) -> crate::Result<Step> {
    let (Some(key), Some(value)) = (&ctx.plan.spec.actions[ctx.index].key, &ctx.plan.spec.actions[ctx.index].value)
    else {
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

    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    let mut post = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    if ctx.dry_run {
        params = params.dry_run();
        post.dry_run = true;
    }

    let backup_object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(backup.clone()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([
                (BACKUP_OF_LABEL.to_string(), cm_name.clone()),
                (PLAN_LABEL.to_string(), ctx.plan.metadata.name.clone().unwrap_or_default()),
                ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                ("antibody.vael.io/plan".to_string(), ctx.plan_ref()),
                ("antibody.vael.io/key".to_string(), key.clone()),
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
    match config_maps.create(&post, &backup_object).await {
        Ok(_) => {}
        // A retry: the first backup holds the data from before our edit; keep it.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    status.backup_name = Some(backup.clone());

    let apply = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": cm_name, "namespace": ns },
        "data": { key: value },
    });
    config_maps.patch(cm_name, &params, &Patch::Apply(&apply)).await?;

    let was = old.as_ref().map_or("unset".to_string(), |o| format!("{o:?}"));
    let follow = match ctx.target.config_map_mode {
        ConfigMapMode::Env => "consumed as env: takes effect after a restart",
        ConfigMapMode::File => "mounted as a file: takes effect after a reload",
    };
    if ctx.dry_run {
        status.diff = Some(format!("ConfigMap {ns}/{cm_name}: data[{key}]: {was} → {value:?}"));
        return Ok(Step::Done(format!("dry run: would set {key} in ConfigMap {ns}/{cm_name} (backup {backup})")));
    }
    Ok(Step::Done(format!("set {key} in ConfigMap {ns}/{cm_name} (was {was}); backup {backup}; {follow}")))
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
}
