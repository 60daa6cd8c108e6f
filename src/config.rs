//! `antibody.yml`: whitelisted actions, logical targets, rules. Pure: no Kubernetes here.
//!
//! The seed format keeps working unchanged (`actions.restart` / `edit_env` / `reload_flask`
//! lists of logical names, `severity_map`, `log_path`). A logical name without a `targets`
//! entry maps to a Deployment named after it (`VAEL_Core` → `vael-core`) in the plan's namespace.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::alert::Severity;
use crate::plan::ActionType;
use crate::validate;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The whitelist: for each action, the logical targets it may touch.
    #[serde(default)]
    pub actions: Whitelist,
    /// Fallback when no rule matches: severity → actions.
    #[serde(default)]
    pub severity_map: BTreeMap<Severity, Vec<String>>,
    /// Audit log directory.
    #[serde(default = "default_log_path")]
    pub log_path: String,
    /// Audit log: rotate `audit.jsonl` before it would pass this many bytes (0: never).
    #[serde(default = "default_audit_max_bytes")]
    pub audit_max_bytes: u64,
    /// Audit log: rotated files kept (0 is taken as 1: damaged files are moved aside there);
    /// the hash chain continues across them.
    #[serde(default = "default_audit_keep")]
    pub audit_keep: usize,
    /// Logical target name → Kubernetes objects.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
    /// Checked in order; the first match decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub defaults: Defaults,
    /// Shadow mode, signatures, cool-downs, budgets, pause, backups.
    #[serde(default)]
    pub safety: Safety,
    /// Where plan outcomes are sent: the VAEL UI's Socket.IO queue, webhooks.
    #[serde(default)]
    pub notify: crate::report::notify::NotifyConfig,
    /// Alert intake: cool-down, REST limits, feed reconnects (see `ingest::IngestConfig`).
    #[serde(default)]
    pub ingest: crate::ingest::IngestConfig,
}

/// What Antibody does when a plan hits a cool-down or budget.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnThrottle {
    /// End the plan `Stalled` with reason `Throttled` (a retry is a new plan).
    #[default]
    Fail,
    /// Keep the plan pending (`Reconciling`, reason `Throttled`) until the window allows it.
    Wait,
}

/// At most `max_actions` actions per `window_seconds`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max_actions: u32,
    #[serde(default = "default_window")]
    pub window_seconds: u64,
}

fn default_window() -> u64 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Safety {
    /// Shadow mode for every plan: writes go out with dryRun=All, plans end `DryRun`.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop starting new plans; plans already acting finish. (Also: annotate the plan's
    /// namespace `antibody.vael.io/paused=true`.)
    #[serde(default)]
    pub paused: bool,
    /// Refuse plans without a valid signature from `trusted_keys` (`SignatureInvalid`).
    #[serde(default)]
    pub require_signature: bool,
    /// Key name → base64 ed25519 public key (`antibody keygen`).
    #[serde(default)]
    pub trusted_keys: BTreeMap<String, String>,
    /// Antibody's own private key file: plans it creates from alerts are signed with it.
    #[serde(default)]
    pub signing_key_file: Option<String>,
    #[serde(default = "default_signing_key_name")]
    pub signing_key_name: String,
    /// Minimum seconds between two plans acting on the same target (0: off).
    #[serde(default)]
    pub cooldown_seconds: u64,
    /// Across all namespaces.
    #[serde(default)]
    pub global_budget: Option<Budget>,
    /// Per target namespace.
    #[serde(default)]
    pub namespace_budget: Option<Budget>,
    #[serde(default)]
    pub on_throttle: OnThrottle,
    /// ConfigMap backups kept per ConfigMap; older ones are deleted.
    #[serde(default = "default_backup_history")]
    pub backup_history: usize,
    /// Namespaces whose PatchPlans Antibody acts on; a plan elsewhere ends `NamespaceNotAllowed`.
    /// Empty: the namespace given by `--namespace`, else `defaults.plan_namespace`.
    #[serde(default)]
    pub plan_namespaces: Vec<String>,
    /// Longest validity a signature may claim (`antibody sign --ttl-seconds`); executed
    /// signatures are remembered this long to refuse replays (`SignatureReplayed`).
    #[serde(default = "default_signature_max_ttl")]
    pub signature_max_ttl_seconds: u64,
}

fn default_signing_key_name() -> String {
    "antibody".into()
}
fn default_backup_history() -> usize {
    5
}
fn default_signature_max_ttl() -> u64 {
    7 * 24 * 3600
}

impl Default for Safety {
    fn default() -> Self {
        Self {
            dry_run: false,
            paused: false,
            require_signature: false,
            trusted_keys: BTreeMap::new(),
            signing_key_file: None,
            signing_key_name: default_signing_key_name(),
            cooldown_seconds: 0,
            global_budget: None,
            namespace_budget: None,
            on_throttle: OnThrottle::Fail,
            backup_history: default_backup_history(),
            plan_namespaces: Vec::new(),
            signature_max_ttl_seconds: default_signature_max_ttl(),
        }
    }
}

impl Safety {
    /// Cool-downs or budgets are configured: a plan's start is gated on the history of others.
    pub fn throttles(&self) -> bool {
        self.cooldown_seconds > 0 || self.global_budget.is_some() || self.namespace_budget.is_some()
    }

    /// The namespaces that may hold plans: `plan_namespaces`, else the watched namespace,
    /// else `defaults.plan_namespace`.
    pub fn allowed_plan_namespaces(&self, watched: Option<&str>, plan_namespace: &str) -> Vec<String> {
        if !self.plan_namespaces.is_empty() {
            return self.plan_namespaces.clone();
        }
        vec![watched.unwrap_or(plan_namespace).to_string()]
    }

    /// Trusted keys, parsed (validated at load, so errors here are not expected).
    pub fn verifying_keys(&self) -> BTreeMap<String, ed25519_dalek::VerifyingKey> {
        self.trusted_keys
            .iter()
            .filter_map(|(name, key)| crate::signing::parse_public_key(key).ok().map(|k| (name.clone(), k)))
            .collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Whitelist {
    #[serde(default)]
    pub restart: Vec<String>,
    #[serde(default)]
    pub edit_env: Vec<String>,
    #[serde(default)]
    pub reload_flask: Vec<String>,
}

impl Whitelist {
    pub fn allows(&self, action: ActionType, target: &str) -> bool {
        // Undoing an edit needs the right to edit; evicting one pod is a (smaller) restart.
        let list = match action {
            ActionType::Restart | ActionType::DeletePod => &self.restart,
            ActionType::EditEnv | ActionType::Rollback => &self.edit_env,
            ActionType::ReloadFlask => &self.reload_flask,
        };
        list.iter().any(|t| t == target)
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &String)> {
        self.restart
            .iter()
            .map(|t| ("restart", t))
            .chain(self.edit_env.iter().map(|t| ("edit_env", t)))
            .chain(self.reload_flask.iter().map(|t| ("reload_flask", t)))
    }
}

/// How the workload consumes its ConfigMap, which decides what must follow an edit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConfigMapMode {
    /// `envFrom`/`valueFrom`: values are fixed at container start, so a restart must follow.
    #[default]
    Env,
    /// Mounted as a file (`.env`): a reload picks it up once the kubelet synced the file.
    File,
    /// Mounted as a file the application watches and re-reads itself: nothing must follow.
    Watched,
}

impl ConfigMapMode {
    /// The action an edit of the ConfigMap needs before it takes effect, if any.
    pub fn follow_up(self) -> Option<crate::plan::ActionType> {
        match self {
            ConfigMapMode::Env => Some(crate::plan::ActionType::Restart),
            ConfigMapMode::File => Some(crate::plan::ActionType::ReloadFlask),
            ConfigMapMode::Watched => None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Namespace of the objects; defaults to the PatchPlan's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    pub deployment: String,
    #[serde(default)]
    pub config_map: Option<String>,
    #[serde(default)]
    pub config_map_mode: ConfigMapMode,
    /// Container to exec into; defaults to the pod's first container.
    #[serde(default)]
    pub container: Option<String>,
    /// argv sent through `pods/exec` by reload_flask. No shell is involved.
    #[serde(default = "default_reload_command")]
    pub reload_command: Vec<String>,
    /// When set, editEnv may only set these keys.
    #[serde(default)]
    pub env_keys: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Alert category to match; any when absent.
    #[serde(default)]
    pub category: Option<String>,
    /// Lowest severity that matches.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// `restart`, `reload_flask`, or `restart:Sentinel` for a fixed target. Empty: ignore.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Target for actions without one when the alert has no patch hint.
    #[serde(default)]
    pub target: Option<String>,
    /// What `restart` means for this rule: a rolling restart, evicting one pod (respects
    /// PodDisruptionBudgets), or a SIGHUP of the gunicorn master (reload_flask).
    #[serde(default)]
    pub restart_mode: RestartMode,
    /// If a rollout after an edit fails, restore the backup, restart again, end `RolledBack`.
    #[serde(default)]
    pub transactional: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    #[default]
    Rolling,
    DeletePod,
    Hup,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// A rollout not complete after this long fails the plan (`ProgressDeadlineExceeded`).
    #[serde(default = "default_rollout_timeout")]
    pub rollout_timeout_seconds: u64,
    /// Namespace for PatchPlans created from alerts.
    #[serde(default = "default_plan_namespace")]
    pub plan_namespace: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self { rollout_timeout_seconds: default_rollout_timeout(), plan_namespace: default_plan_namespace() }
    }
}

fn default_log_path() -> String {
    "logs/antibody_patches/".into()
}
fn default_audit_max_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_audit_keep() -> usize {
    8
}
fn default_reload_command() -> Vec<String> {
    vec!["kill".into(), "-HUP".into(), "1".into()]
}
fn default_rollout_timeout() -> u64 {
    300
}
fn default_plan_namespace() -> String {
    "antibody".into()
}

/// A logical target resolved to Kubernetes names, ready for an action.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTarget {
    pub name: String,
    pub namespace: String,
    pub deployment: String,
    pub config_map: Option<String>,
    pub config_map_mode: ConfigMapMode,
    pub container: Option<String>,
    pub reload_command: Vec<String>,
    pub env_keys: Option<Vec<String>>,
}

/// A configuration problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

/// Far above any real antibody.yml; bounds the work a hostile file can cause.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
const MAX_FLOW_DEPTH: usize = 64;

/// Refuse oversize files and deep `[`/`{` nesting before the YAML parser sees them: its time
/// grows faster than linearly with depth (100,000 levels took 90 s before the recursion limit
/// answered). Quotes and comments are skipped; a stray bracket in a plain scalar only counts up.
fn check_shape(text: &str) -> Result<(), ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(err("antibody.yml", format!("{} bytes (max {MAX_CONFIG_BYTES})", text.len())));
    }
    let (mut depth, mut quote, mut comment, mut previous) = (0usize, None, false, ' ');
    for c in text.chars() {
        match (quote, c) {
            _ if comment => comment = c != '\n',
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(err("antibody.yml", format!("nesting deeper than {MAX_FLOW_DEPTH} levels")));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
}

impl Config {
    pub fn load(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::Config {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_yaml(&text)
            .map_err(|e| crate::Error::Config { path: path.display().to_string(), message: e.to_string() })
    }

    /// Parse and validate. Errors name the offending field (`targets.VAEL_Core.deployment`).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        check_shape(text)?;
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "antibody.yml".to_string() } else { path };
            err(field, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.notify.validate()?;
        if self.audit_max_bytes != 0 && self.audit_max_bytes < 1024 {
            return Err(err("audit_max_bytes", "must be 0 (never rotate) or at least 1024"));
        }
        for (name, target) in &self.targets {
            let field = |f: &str| format!("targets.{name}.{f}");
            validate::logical_name(name).map_err(|m| err(format!("targets.{name}"), m))?;
            validate::dns1123_subdomain(&target.deployment).map_err(|m| err(field("deployment"), m))?;
            if let Some(ns) = &target.namespace {
                validate::dns1123_label(ns).map_err(|m| err(field("namespace"), m))?;
            }
            if let Some(cm) = &target.config_map {
                validate::dns1123_subdomain(cm).map_err(|m| err(field("config_map"), m))?;
            }
            if let Some(c) = &target.container {
                validate::dns1123_label(c).map_err(|m| err(field("container"), m))?;
            }
            if target.reload_command.is_empty() {
                return Err(err(field("reload_command"), "must hold at least the program to run"));
            }
            if target.reload_command.iter().any(|a| a.is_empty() || a.contains(['\0', '\n'])) {
                return Err(err(field("reload_command"), "arguments must be non-empty and hold no NUL or newline"));
            }
            for key in target.env_keys.iter().flatten() {
                validate::env_key(key).map_err(|m| err(field("env_keys"), m))?;
            }
        }
        for (action, target) in self.actions.all() {
            validate::logical_name(target).map_err(|m| err(format!("actions.{action}"), m))?;
            if !self.targets.is_empty() && !self.targets.contains_key(target) {
                return Err(err(
                    format!("actions.{action}"),
                    format!("target {target:?} is not defined under targets"),
                ));
            }
        }
        for target in &self.actions.edit_env {
            if self.targets.get(target).is_some_and(|t| t.config_map.is_none()) || self.targets.is_empty() {
                return Err(err("actions.edit_env", format!("target {target:?} has no targets.{target}.config_map")));
            }
        }
        for (severity, actions) in &self.severity_map {
            for action in actions {
                ActionType::from_config_name(action).ok_or_else(|| {
                    err(
                        format!("severity_map.{severity}"),
                        format!("unknown action {action:?} (restart, edit_env, reload_flask)"),
                    )
                })?;
            }
        }
        for (name, key) in &self.safety.trusted_keys {
            crate::signing::parse_public_key(key).map_err(|m| err(format!("safety.trusted_keys.{name}"), m))?;
        }
        if self.safety.require_signature && self.safety.trusted_keys.is_empty() {
            return Err(err("safety.require_signature", "needs at least one key in safety.trusted_keys"));
        }
        for (field, budget) in
            [("global_budget", &self.safety.global_budget), ("namespace_budget", &self.safety.namespace_budget)]
        {
            if let Some(b) = budget
                && b.window_seconds == 0
            {
                return Err(err(format!("safety.{field}.window_seconds"), "must be at least 1"));
            }
        }
        for ns in &self.safety.plan_namespaces {
            validate::dns1123_label(ns).map_err(|m| err("safety.plan_namespaces", m))?;
        }
        if self.safety.signature_max_ttl_seconds == 0 {
            return Err(err("safety.signature_max_ttl_seconds", "must be at least 1"));
        }
        if self.safety.backup_history == 0 {
            return Err(err("safety.backup_history", "must keep at least 1 backup"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = |f: &str| format!("rules[{i}].{f}");
            if rule.name.trim().is_empty() {
                return Err(err(field("name"), "must not be empty"));
            }
            for action in &rule.actions {
                let (kind, target) = action.split_once(':').map_or((action.as_str(), None), |(k, t)| (k, Some(t)));
                let kind = ActionType::from_config_name(kind).ok_or_else(|| {
                    err(field("actions"), format!("unknown action {kind:?} (restart, reload_flask, edit_env)"))
                })?;
                // `edit_env` in a rule means "the edit the alert's patch hint carries": the key,
                // value and target only ever come from the hint.
                if kind == ActionType::EditEnv && target.is_some() {
                    return Err(err(
                        field("actions"),
                        "edit_env takes its target, key and value from the patch hint: write `edit_env`",
                    ));
                }
                if let Some(target) = target.or(rule.target.as_deref()) {
                    self.resolve(target, "default").map_err(|m| err(field("actions"), m))?;
                }
            }
        }
        self.ingest.validate()?;
        Ok(())
    }

    /// Resolve a logical target; `plan_namespace` fills an unset namespace.
    pub fn resolve(&self, name: &str, plan_namespace: &str) -> Result<ResolvedTarget, String> {
        validate::logical_name(name)?;
        if let Some(t) = self.targets.get(name) {
            return Ok(ResolvedTarget {
                name: name.to_string(),
                namespace: t.namespace.clone().unwrap_or_else(|| plan_namespace.to_string()),
                deployment: t.deployment.clone(),
                config_map: t.config_map.clone(),
                config_map_mode: t.config_map_mode,
                container: t.container.clone(),
                reload_command: t.reload_command.clone(),
                env_keys: t.env_keys.clone(),
            });
        }
        let known = self.actions.all().any(|(_, t)| t == name);
        if !self.targets.is_empty() || !known {
            return Err(format!("unknown target {name:?}: not in antibody.yml"));
        }
        // Seed format: the logical name is the Deployment, Kubernetes-spelled.
        let deployment = name.to_ascii_lowercase().replace('_', "-");
        validate::dns1123_subdomain(&deployment)?;
        Ok(ResolvedTarget {
            name: name.to_string(),
            namespace: plan_namespace.to_string(),
            deployment,
            config_map: None,
            config_map_mode: ConfigMapMode::Env,
            container: None,
            reload_command: default_reload_command(),
            env_keys: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_parsing_but_quoted_brackets_are_text() {
        let deep = format!("log_path: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        assert!(Config::from_yaml(&deep).expect_err("deep").to_string().contains("nesting deeper than 64"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let quoted = format!("log_path: \"{}\" # {}\n", "[".repeat(100), "{".repeat(100));
        assert_eq!(Config::from_yaml(&quoted).expect("quoted brackets").log_path, "[".repeat(100));
        let big = "#".repeat(MAX_CONFIG_BYTES + 1);
        assert!(Config::from_yaml(&big).expect_err("big").to_string().contains("max 1048576"));
    }

    const SEED: &str = r#"
actions:
  restart: [VAEL_Core, Sentinel]
  edit_env: []
  reload_flask: [VAEL_UI]
severity_map:
  critical: [restart, reload_flask]
  high: [restart]
  low: []
log_path: logs/antibody_patches/
"#;

    #[test]
    fn seed_format_loads_and_resolves_by_name() {
        let config = Config::from_yaml(SEED).expect("seed format is valid");
        assert!(config.actions.allows(ActionType::Restart, "VAEL_Core"));
        assert!(!config.actions.allows(ActionType::ReloadFlask, "VAEL_Core"));
        let target = config.resolve("VAEL_Core", "vael").expect("seed target resolves");
        assert_eq!((target.deployment.as_str(), target.namespace.as_str()), ("vael-core", "vael"));
        assert_eq!(target.reload_command, ["kill", "-HUP", "1"]);
        assert!(config.resolve("Unknown", "vael").is_err());
    }

    #[test]
    fn the_shipped_antibody_yml_is_valid() {
        let text = include_str!("../antibody.yml");
        let config = Config::from_yaml(text).expect("antibody.yml is valid");
        assert!(config.targets.contains_key("VAEL_Core"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("actions: {restart: [X]}\ntargets: {Y: {deployment: y}}", "actions.restart"),
            ("targets: {X: {deployment: Bad_Name}}", "targets.X.deployment"),
            ("targets: {X: {deployment: x, namespace: 'a b'}}", "targets.X.namespace"),
            ("targets: {X: {deployment: x, reload_command: []}}", "targets.X.reload_command"),
            ("targets: {X: {deployment: x, reload_command: ['kill', \"-HUP\\n\"]}}", "targets.X.reload_command"),
            ("targets: {X: {deployment: x, env_keys: ['1BAD']}}", "targets.X.env_keys"),
            ("targets: {X: {deployment: x, colour: red}}", "targets.X"),
            ("targets: {X: {deployment: x}}\nactions: {edit_env: [X]}", "actions.edit_env"),
            ("severity_map: {high: [reboot]}", "severity_map.high"),
            ("severity_map: {urgent: [restart]}", "severity_map"),
            ("rules: [{name: r, actions: [explode]}]", "rules[0].actions"),
            ("rules: [{name: r, actions: ['restart:Nope']}]\ntargets: {X: {deployment: x}}", "rules[0].actions"),
            ("rules: [{name: '', actions: []}]", "rules[0].name"),
            ("unknown_top: 1", "unknown_top"),
            ("audit_max_bytes: 100", "audit_max_bytes"),
        ];
        for (yaml, field) in cases {
            let error = Config::from_yaml(yaml).expect_err(yaml);
            assert!(error.field.starts_with(field), "{yaml:?}: got field {:?} ({})", error.field, error.message);
        }
    }
}

/// The live configuration, swapped whole on reload; readers take a cheap `Arc` snapshot.
#[derive(Debug, Default)]
pub struct SharedConfig(std::sync::RwLock<std::sync::Arc<Config>>);

impl SharedConfig {
    pub fn new(config: Config) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(config)))
    }

    pub fn get(&self) -> std::sync::Arc<Config> {
        self.0.read().map(|c| c.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub fn set(&self, config: Config) {
        match self.0.write() {
            Ok(mut slot) => *slot = std::sync::Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = std::sync::Arc::new(config),
        }
    }
}
