//! Policy: a validated alert + antibody.yml → a plan, or a recorded decision not to act. Pure.
//!
//! Rules are checked in order (category, minimum severity); the first match decides. With no
//! match, the seed's `severity_map` is the fallback. The alert's `patch_hint` names the target
//! (and for `edit_env` carries the key and value); it never adds power: an env edit happens only
//! when the matched rule lists `edit_env`, a loader/interpreter variable (`LD_PRELOAD`,
//! `PYTHONPATH`, …) only when the target's `env_keys` names it, and the result still passes
//! [`admission::admit`], the same check the reconciler runs.
//!
//! An action's target: the rule's fixed one (`restart:Sentinel`), else the hint's, else the
//! rule's `target`, else `defaults.targets.<action>` (the original: restart → `VAEL_Core`,
//! reload_flask → the Flask UI).

use crate::admission::{self, Refusal};
use crate::alert::{PatchHint, ThreatAlert};
use crate::config::{Config, ConfigMapMode, RestartMode};
use crate::plan::{ActionType, AlertSummary, PatchPlan, PatchPlanSpec, PlanAction};
use crate::reason::Reason;

/// What to do about one alert. Every alert ends in exactly one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Create this plan (name derived from the alert fingerprint, so re-sends dedupe).
    Plan { rule: String, name: String, spec: PatchPlanSpec },
    /// A rule (or the severity map) says: no action.
    Ignore { rule: String },
    /// The alert asked for something not allowed or impossible.
    Refuse(Refusal),
}

pub fn decide(config: &Config, alert: &ThreatAlert, plan_namespace: &str) -> Decision {
    decide_with(config, alert, plan_namespace, None)
}

/// The rule an alert matches, if any (not the severity_map fallback).
pub fn matched_rule<'a>(config: &'a Config, alert: &ThreatAlert) -> Option<&'a crate::config::Rule> {
    config.rules.iter().find(|rule| {
        rule.category.as_ref().is_none_or(|c| c.eq_ignore_ascii_case(&alert.category))
            && rule.min_severity.is_none_or(|min| alert.severity >= min)
    })
}

/// A later step of the matched rule's escalation ladder: `step_action` (e.g. `restart`) instead
/// of the rule's actions; the hint still names the target, its env edit is not repeated.
pub fn decide_step(config: &Config, alert: &ThreatAlert, plan_namespace: &str, step_action: &str) -> Decision {
    decide_with(config, alert, plan_namespace, Some(step_action))
}

fn decide_with(config: &Config, alert: &ThreatAlert, plan_namespace: &str, step_action: Option<&str>) -> Decision {
    let hint = match alert.hint() {
        Ok(hint) => hint,
        Err(message) => {
            return Decision::Refuse(Refusal { reason: message.reason(), message: message.to_string() });
        }
    };
    let matched = matched_rule(config, alert);
    let (rule_name, action_names, rule_target, restart_mode, transactional) = match matched {
        Some(rule) => {
            (rule.name.clone(), rule.actions.clone(), rule.target.clone(), rule.restart_mode, rule.transactional)
        }
        None => match config.severity_map.get(&alert.severity) {
            Some(actions) => {
                (format!("severity_map.{}", alert.severity), actions.clone(), None, RestartMode::Rolling, false)
            }
            None => {
                return Decision::Ignore { rule: "no rule matched".into() };
            }
        },
    };
    if action_names.is_empty() {
        return Decision::Ignore { rule: rule_name };
    }
    let action_names = match step_action {
        Some(step) => vec![step.to_string()],
        None => action_names,
    };
    // A later step repeats no env edit: the hint only names the target.
    let hint = match (step_action, hint) {
        (Some(_), Some(hint)) => Some(PatchHint { env: None, ..hint }),
        (_, hint) => hint,
    };
    let named_target = hint.as_ref().and_then(|h| h.target.clone()).or(rule_target);
    let target_for = |kind: ActionType| named_target.clone().or_else(|| config.default_target(kind).map(String::from));
    let rule_edits = action_names.iter().any(|n| n.split(':').next() == Some(ActionType::EditEnv.config_name()));

    let mut actions: Vec<PlanAction> = Vec::new();
    if let Some(PatchHint { env: Some((key, value)), .. }) = &hint {
        // A hint comes over a feed; it may fill in the edit a rule allows, never add one.
        if !rule_edits {
            return Decision::Refuse(Refusal {
                reason: Reason::NotAllowed,
                message: format!(
                    "rule {rule_name} does not list edit_env: the patch_hint's env edit ({key}) is refused"
                ),
            });
        }
        let Some(target) = target_for(ActionType::EditEnv) else {
            return Decision::Refuse(Refusal {
                reason: Reason::NoTarget,
                message: format!("patch_hint edit_env:{key}=… names no target and defaults.targets.edit_env is unset"),
            });
        };
        let resolved = config.resolve(&target, plan_namespace).ok();
        let listed = resolved.as_ref().and_then(|t| t.env_keys.as_ref()).is_some_and(|keys| keys.contains(key));
        if crate::validate::dangerous_env_key(key) && !listed {
            return Decision::Refuse(Refusal {
                reason: Reason::NotAllowed,
                message: format!(
                    "env key {key} changes how programs load or run: allowed only when targets.{target}.env_keys lists it"
                ),
            });
        }
        actions.push(PlanAction::edit_env(target.clone(), key.clone(), value.clone()));
        // Env is read at container start: an env-consumed ConfigMap needs a restart, a mounted
        // file a reload. The follow-up is part of the plan so it is ordered and audited.
        // A target that does not resolve is refused by admission; Env's restart is the default.
        let mode = resolved.map_or(ConfigMapMode::Env, |t| t.config_map_mode);
        if let Some(follow_up) = mode.follow_up() {
            actions.push(PlanAction::new(follow_up, target));
        }
    }
    for name in &action_names {
        let (kind, fixed_target) =
            name.split_once(':').map_or((name.as_str(), None), |(k, t)| (k, Some(t.to_string())));
        let Some(kind) = ActionType::from_config_name(kind) else {
            return Decision::Refuse(Refusal {
                reason: Reason::InvalidSpec,
                message: format!("rule {rule_name}: unknown action {kind:?}"),
            });
        };
        let Some(target) = fixed_target.or_else(|| target_for(kind)) else {
            return Decision::Refuse(Refusal {
                reason: Reason::NoTarget,
                message: format!(
                    "rule {rule_name} wants {name} but the alert has no patch_hint, the rule no target and \
                     defaults.targets.{kind_name} names no target of antibody.yml",
                    kind_name = kind.config_name()
                ),
            });
        };
        // The rule picks how granular a restart is.
        let kind = match (kind, restart_mode) {
            (ActionType::Restart, RestartMode::DeletePod) => ActionType::DeletePod,
            (ActionType::Restart, RestartMode::Hup) => ActionType::ReloadFlask,
            (kind, _) => kind,
        };
        // A rule's `edit_env` is what the hint's KEY=VALUE does; a rule cannot invent the value.
        if kind == ActionType::EditEnv {
            if actions.iter().any(|a| a.action == ActionType::EditEnv) {
                continue;
            }
            return Decision::Refuse(Refusal {
                reason: Reason::InvalidSpec,
                message: format!(
                    "rule {rule_name} wants edit_env on {target} but the alert's patch_hint has no KEY=VALUE for it"
                ),
            });
        }
        let action = PlanAction::new(kind, target);
        if !actions.contains(&action) {
            actions.push(action);
        }
    }

    let spec = PatchPlanSpec {
        alert: Some(AlertSummary {
            id: alert.id.clone(),
            source: alert.source.clone(),
            category: alert.category.clone(),
            severity: alert.severity.to_string(),
            message: alert.msg.clone(),
            fingerprint: alert.fingerprint(),
        }),
        actions,
        dry_run: false,
        rollback_on_failure: transactional,
    };
    match admission::admit(config, &spec, plan_namespace) {
        Ok(_) => Decision::Plan { rule: rule_name, name: alert.plan_name(), spec },
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// The PatchPlan object for a decision, as it would be applied.
pub fn plan_object(name: &str, namespace: &str, rule: &str, spec: PatchPlanSpec) -> PatchPlan {
    let mut plan = PatchPlan::new(name, spec);
    plan.metadata.namespace = Some(namespace.to_string());
    plan.metadata.labels = Some(crate::names::managed_labels());
    plan.metadata.annotations = Some([(crate::names::RULE_ANNOTATION.to_string(), rule.to_string())].into());
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    const CONFIG: &str = include_str!("../antibody.yml");

    fn alert(category: &str, severity: Severity, hint: Option<&str>) -> ThreatAlert {
        ThreatAlert {
            id: format!("{category}-{severity}"),
            source: "NEXUS".into(),
            category: category.into(),
            severity,
            msg: String::new(),
            patch_hint: hint.map(Into::into),
            ts: None,
        }
    }

    fn actions(decision: &Decision) -> Vec<String> {
        match decision {
            Decision::Plan { spec, .. } => spec.actions.iter().map(PlanAction::describe).collect(),
            Decision::Ignore { .. } => vec!["ignore".into()],
            Decision::Refuse(r) => vec![format!("refuse:{}", r.reason)],
        }
    }

    /// The original testing matrix, plus the edges around it.
    #[test]
    fn matrix() {
        let config = Config::from_yaml(CONFIG).expect("antibody.yml is valid");
        let cases: &[(&str, Severity, Option<&str>, &[&str])] = &[
            ("heartbeat", Severity::High, Some("restart:VAEL_Core"), &["restart:VAEL_Core"]),
            ("policy", Severity::High, Some("reload_flask:VAEL_UI"), &["reloadFlask:VAEL_UI"]),
            ("kernel", Severity::Critical, Some("restart:VAEL_Core"), &["restart:VAEL_Core", "reloadFlask:VAEL_Core"]),
            ("heartbeat", Severity::Info, Some("restart:VAEL_Core"), &["ignore"]),
            ("policy", Severity::Warn, Some("reload_flask:VAEL_UI"), &["ignore"]),
            (
                "heartbeat",
                Severity::Critical,
                Some("restart:VAEL_Core"),
                &["restart:VAEL_Core", "reloadFlask:VAEL_Core"],
            ),
            // Edit hints bring their follow-up: env-consumed → restart.
            (
                "config",
                Severity::High,
                Some("edit_env:VAEL_Core:LOG_LEVEL=debug"),
                &["editEnv:VAEL_Core:LOG_LEVEL", "restart:VAEL_Core"],
            ),
            // Hints never add power.
            ("heartbeat", Severity::High, Some("restart:Intruder"), &["refuse:NotAllowed"]),
            // The original's matrix without hints: defaults.targets fill in.
            ("heartbeat", Severity::High, None, &["restart:VAEL_Core"]),
            ("policy", Severity::High, None, &["reloadFlask:VAEL_UI"]),
            ("kernel", Severity::Critical, None, &["restart:VAEL_Core", "reloadFlask:VAEL_UI"]),
            ("heartbeat", Severity::Info, None, &["ignore"]),
            (
                "config",
                Severity::High,
                Some("edit_env:LOG_LEVEL=debug"),
                &["editEnv:VAEL_Core:LOG_LEVEL", "restart:VAEL_Core"],
            ),
            // Hints never add an action (issue 16 item 4): only a rule listing edit_env edits.
            ("heartbeat", Severity::High, Some("edit_env:VAEL_Core:LD_PRELOAD=/tmp/x.so"), &["refuse:NotAllowed"]),
            ("kernel", Severity::Critical, Some("edit_env:VAEL_Core:LOG_LEVEL=debug"), &["refuse:NotAllowed"]),
            ("config", Severity::High, Some("edit_env:VAEL_Core:LD_PRELOAD=/tmp/x.so"), &["refuse:NotAllowed"]),
            ("config", Severity::High, Some("edit_env:VAEL_Core:PATH=/tmp"), &["refuse:NotAllowed"]),
            ("heartbeat", Severity::High, Some("restart:../x"), &["refuse:InvalidHint"]),
        ];
        for (category, severity, hint, want) in cases {
            let decision = decide(&config, &alert(category, *severity, *hint), "vael");
            assert_eq!(actions(&decision), *want, "{category}/{severity} {hint:?}");
        }
    }

    #[test]
    fn severity_map_is_the_fallback() {
        let config = Config::from_yaml("actions: {restart: [VAEL_Core]}\nseverity_map: {high: [restart], low: []}")
            .expect("valid");
        let high = decide(&config, &alert("anything", Severity::High, Some("restart:VAEL_Core")), "ns");
        assert!(matches!(&high, Decision::Plan { rule, .. } if rule == "severity_map.high"), "{high:?}");
        assert_eq!(
            decide(&config, &alert("x", Severity::Low, None), "ns"),
            Decision::Ignore { rule: "severity_map.low".into() }
        );
        assert_eq!(
            decide(&config, &alert("x", Severity::Info, None), "ns"),
            Decision::Ignore { rule: "no rule matched".into() }
        );
    }

    #[test]
    fn rules_choose_restart_granularity_and_transactions() {
        let yaml = "actions: {restart: [A], edit_env: [A], reload_flask: [A]}\n\
                    targets: {A: {deployment: a, config_map: a-env}}\n\
                    rules:\n\
                    - {name: evict, category: pod, actions: [restart], restart_mode: delete_pod}\n\
                    - {name: hup, category: worker, actions: [restart], restart_mode: hup}\n\
                    - {name: tx, category: config, actions: [edit_env], transactional: true}";
        let config = Config::from_yaml(yaml).expect("valid");
        let decide_for =
            |category: &str, hint: &str| decide(&config, &alert(category, Severity::High, Some(hint)), "ns");
        assert_eq!(actions(&decide_for("pod", "restart:A")), ["deletePod:A"]);
        assert_eq!(actions(&decide_for("worker", "restart:A")), ["reloadFlask:A"]);
        let tx = decide_for("config", "edit_env:A:K=v");
        assert_eq!(actions(&tx), ["editEnv:A:K", "restart:A"]);
        assert!(matches!(tx, Decision::Plan { spec, .. } if spec.rollback_on_failure));
    }

    #[test]
    fn an_edit_brings_the_follow_up_its_config_map_mode_needs() {
        let cases = [
            ("env", &["editEnv:A:K", "restart:A"][..]),
            ("file", &["editEnv:A:K", "reloadFlask:A"]),
            ("watched", &["editEnv:A:K"]),
        ];
        for (mode, want) in cases {
            let yaml = format!(
                "actions: {{edit_env: [A], restart: [A], reload_flask: [A]}}\n\
                 targets: {{A: {{deployment: a, config_map: a-env, config_map_mode: {mode}}}}}\n\
                 rules: [{{name: cfg, category: config, actions: [edit_env]}}]"
            );
            let config = Config::from_yaml(&yaml).expect("valid");
            let decision = decide(&config, &alert("config", Severity::High, Some("edit_env:A:K=v")), "ns");
            assert_eq!(actions(&decision), want, "config_map_mode {mode}");
            let no_value = decide(&config, &alert("config", Severity::High, Some("restart:A")), "ns");
            assert_eq!(actions(&no_value), ["refuse:InvalidSpec"], "a rule cannot invent the edit");
        }
    }

    /// The original antibody.yml (no rules, no targets): severity_map with defaults.targets.
    #[test]
    fn the_original_config_acts_as_the_original() {
        let original = "actions: {restart: [VAEL_Core, Sentinel], edit_env: true, reload_flask: true}\n\
                        severity_map: {warn: noop, high: restart, critical: [restart, reload_flask]}\n\
                        log_path: logs/antibody.log";
        let config = Config::from_yaml(original).expect("valid");
        let cases: &[(&str, Severity, Option<&str>, &[&str])] = &[
            ("heartbeat", Severity::High, None, &["restart:VAEL_Core"]),
            ("heartbeat", Severity::High, Some("restart:Sentinel"), &["restart:Sentinel"]),
            ("kernel", Severity::Critical, None, &["restart:VAEL_Core", "reloadFlask:VAEL_UI"]),
            ("policy", Severity::Warn, None, &["ignore"]),
            ("policy", Severity::Info, None, &["ignore"]),
            // severity_map high is [restart]: no edit_env, so the hint's edit is refused.
            ("config", Severity::High, Some("edit_env:FLASK_DEBUG=False"), &["refuse:NotAllowed"]),
        ];
        for (category, severity, hint, want) in cases {
            let decision = decide(&config, &alert(category, *severity, *hint), "vael");
            assert_eq!(actions(&decision), *want, "{category}/{severity} {hint:?}");
        }
        let with_edit = Config::from_yaml(&original.replace("high: restart", "high: edit_env")).expect("valid");
        let edit = decide(&with_edit, &alert("config", Severity::High, Some("edit_env:FLASK_DEBUG=False")), "vael");
        assert_eq!(actions(&edit), ["editEnv:VAEL_Core:FLASK_DEBUG", "restart:VAEL_Core"]);
        let loader = decide(&with_edit, &alert("config", Severity::High, Some("edit_env:LD_PRELOAD=/x.so")), "vael");
        assert_eq!(actions(&loader), ["refuse:NotAllowed"], "loader variables need env_keys");
    }

    #[test]
    fn same_alert_same_plan_name() {
        let config = Config::from_yaml(CONFIG).expect("valid");
        let a = alert("heartbeat", Severity::High, Some("restart:VAEL_Core"));
        let name = |d: Decision| match d {
            Decision::Plan { name, .. } => name,
            other => panic!("expected a plan, got {other:?}"),
        };
        assert_eq!(name(decide(&config, &a, "vael")), name(decide(&config, &a, "vael")));
    }
}
