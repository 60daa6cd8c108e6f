//! Admission: may this plan run at all? Pure, and the same check whether the plan came from an
//! alert, `kubectl apply`, GitOps or REST — a hand-written plan gets no more power than an alert.

use crate::config::{Config, ResolvedTarget};
use crate::plan::{ActionType, PatchPlan, PatchPlanSpec};
use crate::reason::Reason;
use crate::validate;

/// Why a plan was refused; `reason` becomes the condition reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

pub const MAX_ACTIONS: usize = 16;

fn refuse(reason: Reason, message: String) -> Refusal {
    Refusal { reason, message }
}

/// Check every action against the whitelist and input rules; on success, the resolved targets
/// in action order.
pub fn admit(config: &Config, spec: &PatchPlanSpec, plan_namespace: &str) -> Result<Vec<ResolvedTarget>, Refusal> {
    if spec.actions.is_empty() || spec.actions.len() > MAX_ACTIONS {
        return Err(refuse(
            Reason::InvalidSpec,
            format!("a plan holds 1 to {MAX_ACTIONS} actions, not {}", spec.actions.len()),
        ));
    }
    spec.actions
        .iter()
        .enumerate()
        .map(|(i, action)| {
            let at = format!("actions[{i}] {}", action.describe());
            let target = config
                .resolve(&action.target, plan_namespace)
                .map_err(|e| refuse(Reason::NotAllowed, format!("{at}: {e}")))?;
            if !config.actions.allows(action.action, &action.target) {
                return Err(refuse(
                    Reason::NotAllowed,
                    format!(
                        "{at}: antibody.yml does not whitelist {} for target {}",
                        action.action.config_name(),
                        action.target
                    ),
                ));
            }
            match action.action {
                ActionType::EditEnv => {
                    if action.backup.is_some() {
                        return Err(refuse(Reason::InvalidSpec, format!("{at}: editEnv takes no backup")));
                    }
                    let (Some(key), Some(value)) = (&action.key, &action.value) else {
                        return Err(refuse(Reason::InvalidSpec, format!("{at}: editEnv needs key and value")));
                    };
                    validate::env_key(key).map_err(|e| refuse(Reason::InvalidSpec, format!("{at}: {e}")))?;
                    validate::env_value(value).map_err(|e| refuse(Reason::InvalidSpec, format!("{at}: {e}")))?;
                    if target.config_map.is_none() {
                        return Err(refuse(
                            Reason::NotAllowed,
                            format!("{at}: target {} has no config_map", action.target),
                        ));
                    }
                    if target.env_keys.as_ref().is_some_and(|keys| !keys.contains(key)) {
                        return Err(refuse(
                            Reason::NotAllowed,
                            format!("{at}: key {key} is not in targets.{}.env_keys", action.target),
                        ));
                    }
                    // Loader/interpreter variables only when env_keys names them (every path).
                    if validate::dangerous_env_key(key) && !target.env_keys.as_ref().is_some_and(|k| k.contains(key)) {
                        return Err(refuse(
                            Reason::NotAllowed,
                            format!(
                                "{at}: key {key} changes how programs load or run: list it in targets.{}.env_keys",
                                action.target
                            ),
                        ));
                    }
                }
                ActionType::Rollback => {
                    let Some(backup) = &action.backup else {
                        return Err(refuse(Reason::InvalidSpec, format!("{at}: rollback needs the backup to restore")));
                    };
                    validate::dns1123_subdomain(backup)
                        .map_err(|e| refuse(Reason::InvalidSpec, format!("{at}: {e}")))?;
                    if action.key.is_some() || action.value.is_some() {
                        return Err(refuse(Reason::InvalidSpec, format!("{at}: only editEnv takes key and value")));
                    }
                    if target.config_map.is_none() {
                        return Err(refuse(
                            Reason::NotAllowed,
                            format!("{at}: target {} has no config_map", action.target),
                        ));
                    }
                }
                ActionType::Restart | ActionType::ReloadFlask | ActionType::DeletePod => {
                    if action.key.is_some() || action.value.is_some() || action.backup.is_some() {
                        return Err(refuse(Reason::InvalidSpec, format!("{at}: only editEnv takes key and value")));
                    }
                }
            }
            Ok(target)
        })
        .collect()
}

/// Only the configured namespaces may hold plans: a namespace admin elsewhere cannot create
/// one that acts on targets in Antibody's namespace (`safety.plan_namespaces`).
pub fn check_namespace(config: &Config, plan_namespace: &str, watched: Option<&str>) -> Result<(), Refusal> {
    let allowed = config.safety.allowed_plan_namespaces(watched, &config.defaults.plan_namespace);
    if allowed.iter().any(|ns| ns == plan_namespace) {
        return Ok(());
    }
    Err(refuse(
        Reason::NamespaceNotAllowed,
        format!("plans in namespace {plan_namespace} are not honoured; allowed: {allowed:?} (safety.plan_namespaces)"),
    ))
}

/// When antibody.yml requires signatures: a valid one from a trusted key, or a refusal that
/// says which way it failed (unsigned, old format, unknown key, mismatch, malformed, expired).
/// The expiry is checked while the plan is `starting`; once acting, it may run past it.
pub fn check_signature(
    config: &Config,
    plan: &PatchPlan,
    starting: bool,
) -> Result<Option<crate::signing::Verified>, Refusal> {
    if !config.safety.require_signature {
        return Ok(None);
    }
    let keys = config.safety.verifying_keys();
    let verified = if starting {
        let now = jiff::Timestamp::now().as_second();
        crate::signing::verify(plan, &keys, now, config.safety.signature_max_ttl_seconds)
    } else {
        crate::signing::verify_ignoring_expiry(plan, &keys)
    };
    verified.map(Some).map_err(|e| refuse(Reason::SignatureInvalid, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanAction;

    const CONFIG: &str = r#"
actions:
  restart: [VAEL_Core]
  edit_env: [VAEL_Core, Locked]
  reload_flask: [VAEL_UI]
targets:
  VAEL_Core: {deployment: vael-core, config_map: vael-core-env}
  VAEL_UI: {deployment: vael-ui, namespace: ui}
  Locked: {deployment: locked, config_map: locked-env, env_keys: [LOG_LEVEL]}
  Sentinel: {deployment: sentinel}
"#;

    fn spec(actions: Vec<PlanAction>) -> PatchPlanSpec {
        PatchPlanSpec { actions, ..Default::default() }
    }

    #[test]
    fn table() {
        let config = Config::from_yaml(CONFIG).expect("valid config");
        let with_backup = |mut a: PlanAction, backup: &str| {
            a.backup = Some(backup.into());
            a
        };
        let with = |mut a: PlanAction, key: Option<&str>, value: Option<&str>| {
            a.key = key.map(Into::into);
            a.value = value.map(Into::into);
            a
        };
        let cases: Vec<(&str, Vec<PlanAction>, Result<(), Reason>)> = vec![
            ("restart whitelisted", vec![PlanAction::new(ActionType::Restart, "VAEL_Core")], Ok(())),
            ("reload whitelisted", vec![PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")], Ok(())),
            (
                "edit then restart",
                vec![
                    PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug"),
                    PlanAction::new(ActionType::Restart, "VAEL_Core"),
                ],
                Ok(()),
            ),
            (
                "restart not whitelisted for target",
                vec![PlanAction::new(ActionType::Restart, "Sentinel")],
                Err(Reason::NotAllowed),
            ),
            (
                "reload not whitelisted",
                vec![PlanAction::new(ActionType::ReloadFlask, "VAEL_Core")],
                Err(Reason::NotAllowed),
            ),
            ("unknown target", vec![PlanAction::new(ActionType::Restart, "Nope")], Err(Reason::NotAllowed)),
            ("hostile target", vec![PlanAction::new(ActionType::Restart, "../etc")], Err(Reason::NotAllowed)),
            (
                "second action refused refuses all",
                vec![
                    PlanAction::new(ActionType::Restart, "VAEL_Core"),
                    PlanAction::new(ActionType::Restart, "Sentinel"),
                ],
                Err(Reason::NotAllowed),
            ),
            ("key outside env_keys", vec![PlanAction::edit_env("Locked", "SECRET", "x")], Err(Reason::NotAllowed)),
            ("key inside env_keys", vec![PlanAction::edit_env("Locked", "LOG_LEVEL", "x")], Ok(())),
            (
                "loader variable, no env_keys",
                vec![PlanAction::edit_env("VAEL_Core", "LD_PRELOAD", "/x.so")],
                Err(Reason::NotAllowed),
            ),
            (
                "interpreter variable",
                vec![PlanAction::edit_env("VAEL_Core", "PYTHONPATH", "/tmp")],
                Err(Reason::NotAllowed),
            ),
            ("newline in value", vec![PlanAction::edit_env("VAEL_Core", "K", "V\nX=Y")], Err(Reason::InvalidSpec)),
            ("bad key", vec![PlanAction::edit_env("VAEL_Core", "A-B", "v")], Err(Reason::InvalidSpec)),
            (
                "editEnv without value",
                vec![with(PlanAction::new(ActionType::EditEnv, "VAEL_Core"), Some("K"), None)],
                Err(Reason::InvalidSpec),
            ),
            (
                "restart with key",
                vec![with(PlanAction::new(ActionType::Restart, "VAEL_Core"), Some("K"), Some("v"))],
                Err(Reason::InvalidSpec),
            ),
            ("no actions", vec![], Err(Reason::InvalidSpec)),
            (
                "rollback needs a backup",
                vec![PlanAction::new(ActionType::Rollback, "VAEL_Core")],
                Err(Reason::InvalidSpec),
            ),
            (
                "rollback",
                vec![with_backup(PlanAction::new(ActionType::Rollback, "VAEL_Core"), "vael-core-env-bk-1")],
                Ok(()),
            ),
            (
                "rollback bad name",
                vec![with_backup(PlanAction::new(ActionType::Rollback, "VAEL_Core"), "../x")],
                Err(Reason::InvalidSpec),
            ),
            (
                "rollback needs edit right",
                vec![with_backup(PlanAction::new(ActionType::Rollback, "VAEL_UI"), "b")],
                Err(Reason::NotAllowed),
            ),
            ("deletePod rides on restart", vec![PlanAction::new(ActionType::DeletePod, "VAEL_Core")], Ok(())),
            (
                "deletePod not whitelisted",
                vec![PlanAction::new(ActionType::DeletePod, "VAEL_UI")],
                Err(Reason::NotAllowed),
            ),
            (
                "too many actions",
                vec![PlanAction::new(ActionType::Restart, "VAEL_Core"); MAX_ACTIONS + 1],
                Err(Reason::InvalidSpec),
            ),
        ];
        for (name, actions, want) in cases {
            let got = admit(&config, &spec(actions), "plans").map(|_| ()).map_err(|r| r.reason);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn only_configured_namespaces_hold_plans() {
        let config = Config::from_yaml(CONFIG).expect("valid config");
        let cases = [
            ("antibody", None, true),
            ("team-x", None, false),
            ("team-x", Some("team-x"), true),
            ("antibody", Some("team-x"), false),
        ];
        for (namespace, watched, ok) in cases {
            let got = check_namespace(&config, namespace, watched);
            assert_eq!(got.is_ok(), ok, "{namespace} watched {watched:?}");
            if let Err(refusal) = got {
                assert_eq!(refusal.reason, Reason::NamespaceNotAllowed);
            }
        }
        let listed = Config::from_yaml(&format!("{CONFIG}\nsafety: {{plan_namespaces: [a, b]}}")).expect("valid");
        assert!(check_namespace(&listed, "b", Some("c")).is_ok());
        assert!(check_namespace(&listed, "c", Some("c")).is_err(), "the list wins over --namespace");
    }

    #[test]
    fn targets_resolve_with_plan_namespace_default() {
        let config = Config::from_yaml(CONFIG).expect("valid config");
        let plan = spec(vec![
            PlanAction::new(ActionType::Restart, "VAEL_Core"),
            PlanAction::new(ActionType::ReloadFlask, "VAEL_UI"),
        ]);
        let targets = admit(&config, &plan, "plans").expect("admitted");
        assert_eq!(targets[0].namespace, "plans");
        assert_eq!(targets[1].namespace, "ui");
    }
}
