//! `antibody.yml`: whitelisted actions, logical targets, rules. Pure: no Kubernetes here.
//!
//! The seed format keeps working unchanged, with these explicit meanings (all printed by
//! `antibody check-config`):
//!
//! - `actions.<action>`: a list of logical names, or `true` = every target that can do it (every
//!   `targets:` entry; for `edit_env` those with a `config_map`; without a `targets:` section,
//!   every logical name the file mentions plus `defaults.targets`), `false` = none.
//! - `severity_map.<severity>`: a list of actions, one action as a scalar, or `noop` (= `[]`).
//! - `log_path`: a directory holds the JSONL audit log (`audit.jsonl`); a path ending in `.log`
//!   is the original's plain-text plan log (one line per plan transition) and the audit log goes
//!   to `antibody_patches/` beside it (`logs/antibody.log` → `logs/antibody_patches/`).
//! - No `targets:` section: a logical name maps by convention to the Deployment named after it
//!   (`VAEL_Core` → `vael-core`) in the plan's namespace, its env ConfigMap `vael-core-env`
//!   (consumed as env), first container, reload command `kill -HUP 1`.
//! - `defaults.targets`: the target of an action when neither the alert's hint nor the rule
//!   names one (built in: restart → `VAEL_Core`, reload_flask → `VAEL_UI`, edit_env →
//!   `VAEL_Core`, as the original); used only when that target exists in the file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub mod approvals;
pub mod escalation;
pub mod ingest;
pub mod notify;

use crate::alert::Severity;
use crate::plan::ActionType;
use crate::validate;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The whitelist: for each action, the logical targets it may touch.
    #[serde(default)]
    pub actions: Whitelist,
    /// Fallback when no rule matches: severity → actions (a list, one action, or `noop`).
    #[serde(default, deserialize_with = "severity_actions")]
    pub severity_map: BTreeMap<Severity, Vec<String>>,
    /// Audit log directory; a path ending in `.log` is the plan log instead (see module doc).
    #[serde(default = "default_log_path")]
    pub log_path: String,
    /// Plain-text plan log, one line per plan transition (the original's `logs/antibody.log`).
    #[serde(default)]
    pub plan_log: Option<String>,
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
    pub notify: notify::NotifyConfig,
    /// Alert intake: cool-down, REST limits, feed reconnects (see `ingest::IngestConfig`).
    #[serde(default)]
    pub ingest: ingest::IngestConfig,
    /// Which plans need a human's approval before they act (see `approval`).
    #[serde(default)]
    pub approvals: approvals::ApprovalConfig,
    /// When plans may act: change windows and a freeze (see `window`).
    #[serde(default)]
    pub change_windows: crate::window::ChangeWindows,
    /// Audit log integrity: keyed MACs, anchors of the head, fail-closed (see `report::audit`).
    #[serde(default)]
    pub audit: AuditConfig,
    /// How the seed-format shorthands were read (for `check-config`); not part of the file.
    #[serde(skip)]
    pub seed: SeedReading,
}

/// `audit:` — how far the audit log is trusted. Read at start (a change needs a restart).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A file (a mounted Secret) holding an HMAC key of at least 16 bytes: every record then
    /// carries `prev_mac`, so rewriting the log needs the key, not just the volume.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Every this many seconds the newest durable record (seq, hash) is written to the
    /// ConfigMap `antibody-audit-anchor` of the plan namespace; `antibody audit verify --anchor`
    /// then catches a truncated or replaced log. 0: no anchors.
    #[serde(default = "default_anchor_seconds")]
    pub anchor_seconds: u64,
    /// Refuse to act while a record cannot be written: a plan starts only after its `started`
    /// record is on disk, and waits (`AuditUnavailable`) otherwise.
    #[serde(default)]
    pub fail_closed: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { key_file: None, anchor_seconds: default_anchor_seconds(), fail_closed: false }
    }
}

fn default_anchor_seconds() -> u64 {
    30
}

/// What [`Config::from_yaml`] expanded: `actions.*: true`, a `log_path` naming a file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedReading {
    /// Actions written as `true` (expanded in place to target lists).
    pub whitelist_all: Vec<&'static str>,
    /// `log_path` as written when it named the plan log file.
    pub log_path_file: Option<String>,
}

/// Marks `true` in a whitelist until [`Config::from_yaml`] expands it (not a valid target name).
const ALL_TARGETS: &str = "*";

/// `actions.<action>`: a list of names, `true` (all that can, expanded later) or `false`.
fn all_or_names<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        All(bool),
        Names(Vec<String>),
    }
    match Entry::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("invalid type: expected a list of target names, true (every target that can) or false")
    })? {
        Entry::All(true) => Ok(vec![ALL_TARGETS.into()]),
        Entry::All(false) => Ok(Vec::new()),
        Entry::Names(names) => Ok(names),
    }
}

/// `severity_map`: each value a list of actions, one action, `noop` or empty.
fn severity_actions<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<Severity, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Actions {
        One(String),
        List(Vec<String>),
        None(()),
    }
    let map = BTreeMap::<Severity, Actions>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(severity, actions)| {
            let list = match actions {
                Actions::One(one) => vec![one],
                Actions::List(list) => list,
                Actions::None(()) => Vec::new(),
            };
            (severity, list.into_iter().filter(|a| a != NOOP).collect())
        })
        .collect())
}

/// The original's "do nothing" in `severity_map`.
pub const NOOP: &str = "noop";

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
    /// Refuse (`DisruptiveRestart`) restarts whose Deployment settings drop every live
    /// connection at once (Recreate, all pods unavailable, one replica). See `preflight`.
    #[serde(default)]
    pub refuse_disruptive_restarts: bool,
    /// Consecutive failed plans on one target that hold further plans on it (`BreakerOpen`)
    /// until a human resets it. Off when absent (an exhausted escalation ladder still opens it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<escalation::BreakerConfig>,
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
            refuse_disruptive_restarts: false,
            breaker: None,
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
    #[serde(default, deserialize_with = "all_or_names")]
    pub restart: Vec<String>,
    #[serde(default, deserialize_with = "all_or_names")]
    pub edit_env: Vec<String>,
    #[serde(default, deserialize_with = "all_or_names")]
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

    pub fn all(&self) -> impl Iterator<Item = (&'static str, &String)> {
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
    /// How reloadFlask reaches the app: `signal` (reload_command), `companion` (in place) or
    /// `companion_hup` (workers replaced and verified gone). See `effect`.
    #[serde(default)]
    pub reload_mode: crate::effect::ReloadMode,
    /// The `antibody_reload` companion in the app's image (for the companion reload modes).
    #[serde(default)]
    pub companion: Option<crate::effect::CompanionSpec>,
    /// A probe run in every ready pod after each action on this target; the action counts as
    /// applied only when it passes.
    #[serde(default)]
    pub verify: Option<crate::effect::VerifySpec>,
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
    /// An escalation ladder: further steps when these actions do not cure the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate: Option<escalation::Escalation>,
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
    /// Target of an action when neither the alert's hint nor the rule names one.
    #[serde(default)]
    pub targets: DefaultTargets,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            rollout_timeout_seconds: default_rollout_timeout(),
            plan_namespace: default_plan_namespace(),
            targets: DefaultTargets::default(),
        }
    }
}

/// Per action, the target meant when nobody names one. The built-ins are the original's:
/// restart → `VAEL_Core`, reload_flask → the Flask UI `VAEL_UI`, edit_env → `VAEL_Core` (the
/// owner of the `.env`). `null` turns one off; one naming no target of the file is not used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DefaultTargets {
    #[serde(default = "default_core")]
    pub restart: Option<String>,
    #[serde(default = "default_ui")]
    pub reload_flask: Option<String>,
    #[serde(default = "default_core")]
    pub edit_env: Option<String>,
}

impl Default for DefaultTargets {
    fn default() -> Self {
        Self { restart: default_core(), reload_flask: default_ui(), edit_env: default_core() }
    }
}

fn default_core() -> Option<String> {
    Some("VAEL_Core".into())
}
fn default_ui() -> Option<String> {
    Some("VAEL_UI".into())
}

impl DefaultTargets {
    /// The configured default for an action kind (restart-like kinds share restart's).
    pub fn for_action(&self, action: ActionType) -> Option<&str> {
        match action {
            ActionType::Restart | ActionType::DeletePod => self.restart.as_deref(),
            ActionType::ReloadFlask => self.reload_flask.as_deref(),
            ActionType::EditEnv | ActionType::Rollback => self.edit_env.as_deref(),
        }
    }

    fn all(&self) -> [(&'static str, Option<&String>); 3] {
        [
            ("restart", self.restart.as_ref()),
            ("reload_flask", self.reload_flask.as_ref()),
            ("edit_env", self.edit_env.as_ref()),
        ]
    }
}

/// A `log_path` naming the plain-text plan log rather than the audit directory.
pub fn log_path_is_file(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".log")
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
    pub reload_mode: crate::effect::ReloadMode,
    pub companion: crate::effect::CompanionSpec,
    pub verify: Option<crate::effect::VerifySpec>,
}

pub use crate::validate::ConfigError;

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
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "antibody.yml".to_string() } else { path };
            // serde_yaml repeats the path in its message ("actions.edit_env: invalid type…").
            let message = e.into_inner().to_string();
            let message = message.strip_prefix(&format!("{field}: ")).map(str::to_string).unwrap_or(message);
            err(field, message)
        })?;
        config.read_seed_shorthands()?;
        config.validate()?;
        Ok(config)
    }

    /// Expand `actions.*: true` and a `log_path` naming a file (see the module doc).
    fn read_seed_shorthands(&mut self) -> Result<(), ConfigError> {
        if log_path_is_file(&self.log_path) {
            if self.plan_log.is_some() {
                return Err(err("log_path", "names a .log file and plan_log is set too: keep one"));
            }
            let file = std::mem::take(&mut self.log_path);
            let parent = Path::new(&file).parent().map(|p| p.display().to_string()).unwrap_or_default();
            self.log_path =
                if parent.is_empty() { "antibody_patches/".into() } else { format!("{parent}/antibody_patches/") };
            self.plan_log = Some(file.clone());
            self.seed.log_path_file = Some(file);
        }
        let everything = self.all_target_names();
        let with_config_map: Vec<String> = if self.targets.is_empty() {
            everything.clone()
        } else {
            self.targets.iter().filter(|(_, t)| t.config_map.is_some()).map(|(n, _)| n.clone()).collect()
        };
        for (action, list, all) in [
            ("restart", &mut self.actions.restart, &everything),
            ("edit_env", &mut self.actions.edit_env, &with_config_map),
            ("reload_flask", &mut self.actions.reload_flask, &everything),
        ] {
            if list.iter().any(|t| t == ALL_TARGETS) {
                list.clone_from(all);
                self.seed.whitelist_all.push(action);
            }
        }
        Ok(())
    }

    /// Every logical name the file defines: `targets:` keys, or without that section, every
    /// name the whitelist, rules and `defaults.targets` mention.
    fn all_target_names(&self) -> Vec<String> {
        if !self.targets.is_empty() {
            return self.targets.keys().cloned().collect();
        }
        let mut names = std::collections::BTreeSet::new();
        names.extend(self.actions.all().map(|(_, t)| t.clone()).filter(|t| t != ALL_TARGETS));
        names.extend(self.defaults.targets.all().into_iter().filter_map(|(_, t)| t.cloned()));
        for rule in &self.rules {
            names.extend(rule.target.clone());
            names.extend(rule.actions.iter().filter_map(|a| a.split_once(':').map(|(_, t)| t.to_string())));
        }
        names.into_iter().collect()
    }

    /// The default target for an action, if it names a target of this file.
    pub fn default_target(&self, action: ActionType) -> Option<&str> {
        self.defaults.targets.for_action(action).filter(|t| self.resolve(t, "default").is_ok())
    }

    /// Things that are valid but probably not meant; `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for target in &self.actions.edit_env {
            let keys = self.targets.get(target).and_then(|t| t.env_keys.as_ref());
            if keys.is_none() {
                warnings.push(format!(
                    "actions.edit_env: {target} has no targets.{target}.env_keys: a hint may set any key \
                     (loader/interpreter variables such as LD_PRELOAD, PYTHONPATH, NODE_OPTIONS are still refused)"
                ));
            }
        }
        for (action, target) in self.defaults.targets.all() {
            if let Some(target) = target
                && self.resolve(target, "default").is_err()
            {
                warnings.push(format!(
                    "defaults.targets.{action}: {target} is not a target of this file: alerts without a hint \
                     and rules without a target get NoTarget for {action}"
                ));
            }
        }
        warnings
    }

    /// What the file means once defaults and shorthands are applied, for `check-config`.
    pub fn effective(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (action, list) in [
            ("restart", &self.actions.restart),
            ("edit_env", &self.actions.edit_env),
            ("reload_flask", &self.actions.reload_flask),
        ] {
            let how =
                if self.seed.whitelist_all.contains(&action) { " (from `true`: every target that can)" } else { "" };
            lines.push(format!("actions.{action}: [{}]{how}", list.join(", ")));
        }
        for (severity, actions) in &self.severity_map {
            let shown = if actions.is_empty() { "noop".to_string() } else { actions.join(", ") };
            lines.push(format!("severity_map.{severity}: {shown}"));
        }
        let mut names = self.all_target_names();
        names.retain(|n| n != ALL_TARGETS);
        for name in names {
            match self.resolve(&name, "<plan namespace>") {
                Ok(t) => {
                    let source = if self.targets.contains_key(&name) { "targets" } else { "convention" };
                    lines.push(format!(
                        "target {name} ({source}): deployment {}/{}, config_map {}, container {}, reload {}, env_keys {}, verify {}",
                        t.namespace,
                        t.deployment,
                        t.config_map.as_deref().unwrap_or("-"),
                        t.container.as_deref().unwrap_or("(first)"),
                        match t.reload_mode {
                            crate::effect::ReloadMode::Signal => format!("{:?}", t.reload_command),
                            crate::effect::ReloadMode::Companion => "companion (in place, acknowledged)".to_string(),
                            crate::effect::ReloadMode::CompanionHup => "companion_hup (workers replaced, verified)".to_string(),
                        },
                        t.env_keys.map_or("(any but loader/interpreter variables)".to_string(), |k| format!("{k:?}")),
                        match (&t.verify, t.reload_mode) {
                            (Some(v), _) => format!("{:?}", v.command),
                            (None, crate::effect::ReloadMode::Signal) => {
                                "(none: its reloads and lone env edits end Unverified)".to_string()
                            }
                            (None, _) => "(none)".to_string(),
                        },
                    ));
                }
                Err(e) => lines.push(format!("target {name}: not usable: {e}")),
            }
        }
        for (action, target) in self.defaults.targets.all() {
            let shown = target.map_or("(none)".to_string(), |t| {
                if self.resolve(t, "default").is_ok() { t.clone() } else { format!("{t} (not a target here: unused)") }
            });
            lines.push(format!("defaults.targets.{action}: {shown}"));
        }
        lines.push(format!("defaults.plan_namespace: {}", self.defaults.plan_namespace));
        for rule in &self.rules {
            if let Some(ladder) = &rule.escalate {
                lines.push(format!(
                    "rule {} escalates: [{}] → {} (not cured: it failed, or the alert came back within {}s)",
                    rule.name,
                    rule.actions.join(", "),
                    ladder.then.join(" → "),
                    ladder.cure_seconds
                ));
            }
        }
        match &self.safety.breaker {
            Some(breaker) => lines.push(format!(
                "safety.breaker: {} failed plans in a row hold a target until `antibody breaker reset`",
                breaker.failures
            )),
            None => lines.push("safety.breaker: (off; an exhausted escalation ladder still opens one)".into()),
        }
        let from = self.seed.log_path_file.as_ref().map_or(String::new(), |f| format!(" (log_path {f} names a file)"));
        lines.push(format!("audit log (JSONL): {}/audit.jsonl{from}", self.log_path.trim_end_matches('/')));
        lines.push(format!(
            "audit: key {}, anchor every {}, fail_closed {}",
            self.audit.key_file.as_deref().unwrap_or("(none: SHA-256 chain only)"),
            if self.audit.anchor_seconds == 0 {
                "(never)".to_string()
            } else {
                format!("{}s", self.audit.anchor_seconds)
            },
            self.audit.fail_closed
        ));
        lines.push(format!("plan log: {}", self.plan_log.as_deref().unwrap_or("(off)")));
        let approvals = &self.approvals;
        let rules: Vec<String> = approvals.rules.iter().map(|r| format!("{} ({:?})", r.name, r.decision)).collect();
        lines.push(format!(
            "approvals: rules [{}], default {:?}, timeout {}s",
            rules.join(", "),
            approvals.default,
            approvals.timeout_seconds
        ));
        for window in &self.change_windows.windows {
            lines.push(format!(
                "change window {} ({}, outside: {:?}): targets {:?}, namespaces {:?}",
                window.name, window.time_zone, window.outside, window.targets, window.namespaces
            ));
        }
        if let Some(freeze) = &self.change_windows.freeze {
            lines.push(format!("change_windows.freeze until {}: {}", freeze.until, freeze.reason));
        }
        lines
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.notify.validate()?;
        self.approvals.validate()?;
        self.change_windows.validate()?;
        if self.audit_max_bytes != 0 && self.audit_max_bytes < 1024 {
            return Err(err("audit_max_bytes", "must be 0 (never rotate) or at least 1024"));
        }
        if self.audit.key_file.as_deref().is_some_and(str::is_empty) {
            return Err(err("audit.key_file", "must name a file (or be left out)"));
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
            if let Some(companion) = &target.companion {
                companion.validate().map_err(|(f, m)| err(field(&format!("companion.{f}")), m))?;
            }
            if target.reload_mode != crate::effect::ReloadMode::Signal && target.companion.is_none() {
                return Err(err(field("reload_mode"), "the companion reload modes need a `companion:` section"));
            }
            if let Some(verify) = &target.verify {
                verify.validate().map_err(|(f, m)| err(field(&format!("verify.{f}")), m))?;
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
            // Without a targets section, the convention ConfigMap `<deployment>-env` is used.
            if self.targets.get(target).is_some_and(|t| t.config_map.is_none()) {
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
        for (action, target) in self.defaults.targets.all() {
            if let Some(target) = target {
                validate::logical_name(target).map_err(|m| err(format!("defaults.targets.{action}"), m))?;
            }
        }
        if let Some(plan_log) = &self.plan_log
            && (plan_log.is_empty() || plan_log.ends_with('/'))
        {
            return Err(err("plan_log", "must name a file"));
        }
        for (name, key) in &self.safety.trusted_keys {
            crate::signing::parse_public_key(key)
                .map_err(|m| err(format!("safety.trusted_keys.{name}"), m.to_string()))?;
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
        if let Some(breaker) = &self.safety.breaker {
            breaker.validate()?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = |f: &str| format!("rules[{i}].{f}");
            if rule.name.trim().is_empty() {
                return Err(err(field("name"), "must not be empty"));
            }
            if let Some(escalate) = &rule.escalate {
                escalate.validate(&field("escalate"))?;
                if rule.actions.is_empty() {
                    return Err(err(field("escalate"), "the rule's actions are the first step: it has none"));
                }
                for step in escalate.then.iter().filter(|s| *s != escalation::PAGE) {
                    let fixed = step.split_once(':').map(|(_, target)| target);
                    if let Some(target) = fixed.or(rule.target.as_deref()) {
                        self.resolve(target, "default").map_err(|m| err(field("escalate.then"), m.to_string()))?;
                    }
                }
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
                    self.resolve(target, "default").map_err(|m| err(field("actions"), m.to_string()))?;
                }
            }
        }
        self.ingest.validate()?;
        Ok(())
    }

    /// Resolve a logical target; `plan_namespace` fills an unset namespace.
    pub fn resolve(&self, name: &str, plan_namespace: &str) -> Result<ResolvedTarget, ResolveError> {
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
                reload_mode: t.reload_mode,
                companion: t.companion.clone().unwrap_or_default(),
                verify: t.verify.clone(),
            });
        }
        let known = self.actions.all().any(|(_, t)| t == name);
        if !self.targets.is_empty() || !known {
            return Err(ResolveError::Unknown(name.to_string()));
        }
        // Seed format: the logical name is the Deployment, Kubernetes-spelled; its env lives in
        // the ConfigMap `<deployment>-env` (the original's `.env`).
        let deployment = name.to_ascii_lowercase().replace('_', "-");
        validate::dns1123_subdomain(&deployment)?;
        Ok(ResolvedTarget {
            name: name.to_string(),
            namespace: plan_namespace.to_string(),
            config_map: Some(format!("{deployment}-env")),
            deployment,
            config_map_mode: ConfigMapMode::Env,
            container: None,
            reload_command: default_reload_command(),
            env_keys: None,
            reload_mode: crate::effect::ReloadMode::Signal,
            companion: crate::effect::CompanionSpec::default(),
            verify: None,
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

    /// ANTIBODY_IMPLEMENTATION.md section 4, verbatim.
    pub const ORIGINAL: &str = include_str!("../../tests/fixtures/original-antibody.yml");

    #[test]
    fn the_original_antibody_yml_loads_with_explicit_meanings() {
        let config = Config::from_yaml(ORIGINAL).expect("the original antibody.yml is valid");
        let names = ["Sentinel", "VAEL_Core", "VAEL_UI"];
        assert_eq!(config.actions.restart, ["VAEL_Core", "Sentinel"]);
        assert_eq!(config.actions.edit_env, names, "true: every target the file mentions");
        assert_eq!(config.actions.reload_flask, names);
        assert_eq!(config.seed.whitelist_all, ["edit_env", "reload_flask"]);
        assert_eq!(config.severity_map[&Severity::Warn], Vec::<String>::new());
        assert_eq!(config.severity_map[&Severity::High], ["restart"]);
        assert_eq!(config.severity_map[&Severity::Critical], ["restart", "reload_flask"]);
        assert_eq!(config.plan_log.as_deref(), Some("logs/antibody.log"));
        assert_eq!(config.log_path, "logs/antibody_patches/");
        let ui = config.resolve("VAEL_UI", "vael").expect("convention target");
        assert_eq!((ui.deployment.as_str(), ui.config_map.as_deref()), ("vael-ui", Some("vael-ui-env")));
        assert_eq!(config.default_target(ActionType::ReloadFlask), Some("VAEL_UI"));
        let effective = config.effective().join("\n");
        for want in [
            "actions.edit_env: [Sentinel, VAEL_Core, VAEL_UI] (from `true`",
            "severity_map.warn: noop",
            "target VAEL_UI (convention): deployment <plan namespace>/vael-ui, config_map vael-ui-env",
            "defaults.targets.reload_flask: VAEL_UI",
            "audit log (JSONL): logs/antibody_patches/audit.jsonl (log_path logs/antibody.log names a file)",
            "plan log: logs/antibody.log",
        ] {
            assert!(effective.contains(want), "missing {want:?} in\n{effective}");
        }
        assert!(config.warnings().iter().any(|w| w.contains("VAEL_Core has no targets.VAEL_Core.env_keys")));
    }

    #[test]
    fn seed_shorthands_with_a_targets_section() {
        let yaml = "actions: {restart: true, edit_env: true, reload_flask: false}\n\
                    targets: {A: {deployment: a, config_map: a-env, env_keys: [K]}, B: {deployment: b}}\n\
                    severity_map: {high: restart, low: noop, info: ~}\n\
                    log_path: /var/log/antibody/";
        let config = Config::from_yaml(yaml).expect("valid");
        assert_eq!(config.actions.restart, ["A", "B"]);
        assert_eq!(config.actions.edit_env, ["A"], "only targets with a config_map can edit env");
        assert!(config.actions.reload_flask.is_empty());
        assert_eq!((config.log_path.as_str(), config.plan_log.as_deref()), ("/var/log/antibody/", None));
        assert!(config.severity_map[&Severity::Info].is_empty());
        assert_eq!(config.default_target(ActionType::Restart), None, "VAEL_Core is not a target here");
        assert!(config.warnings().iter().any(|w| w.starts_with("defaults.targets.restart")));
        let error = Config::from_yaml("actions: {edit_env: yes please}").expect_err("not a bool");
        assert_eq!(error.field, "actions.edit_env");
        assert!(!error.message.starts_with("actions.edit_env"), "the path is printed once: {error}");
    }

    #[test]
    fn the_shipped_antibody_yml_is_valid() {
        let text = include_str!("../../antibody.yml");
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
            ("targets: {X: {deployment: x, reload_mode: companion}}", "targets.X.reload_mode"),
            ("targets: {X: {deployment: x, companion: {state_dir: rel}}}", "targets.X.companion.state_dir"),
            ("targets: {X: {deployment: x, verify: {command: []}}}", "targets.X.verify.command"),
            ("targets: {X: {deployment: x, verify: {command: [p], interval_ms: 1}}}", "targets.X.verify.interval_ms"),
            ("targets: {X: {deployment: x}}\nactions: {edit_env: [X]}", "actions.edit_env"),
            ("severity_map: {high: [reboot]}", "severity_map.high"),
            ("severity_map: {urgent: [restart]}", "severity_map"),
            ("rules: [{name: r, actions: [explode]}]", "rules[0].actions"),
            ("rules: [{name: r, actions: ['restart:Nope']}]\ntargets: {X: {deployment: x}}", "rules[0].actions"),
            ("rules: [{name: '', actions: []}]", "rules[0].name"),
            ("unknown_top: 1", "unknown_top"),
            ("audit_max_bytes: 100", "audit_max_bytes"),
            ("audit: {key_file: ''}", "audit.key_file"),
            ("safety: {breaker: {failures: 0}}", "safety.breaker.failures"),
            (
                "rules: [{name: r, actions: [restart], escalate: {cure_seconds: 0, then: [page]}}]",
                "rules[0].escalate.cure_seconds",
            ),
            (
                "rules: [{name: r, actions: [restart], escalate: {cure_seconds: 60, then: []}}]",
                "rules[0].escalate.then",
            ),
            (
                "rules: [{name: r, actions: [restart], escalate: {cure_seconds: 60, then: [page, restart]}}]",
                "rules[0].escalate.then",
            ),
            (
                "rules: [{name: r, actions: [restart], escalate: {cure_seconds: 60, then: [reboot]}}]",
                "rules[0].escalate.then",
            ),
            (
                "rules: [{name: r, actions: [restart], escalate: {cure_seconds: 60, then: [edit_env]}}]",
                "rules[0].escalate.then",
            ),
            ("rules: [{name: r, actions: [], escalate: {cure_seconds: 60, then: [page]}}]", "rules[0].escalate"),
            (
                "rules: [{name: r, actions: [restart], escalate: {cure_seconds: 60, then: ['restart:Nope']}}]\ntargets: {X: {deployment: x}}",
                "rules[0].escalate.then",
            ),
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

/// Why a logical target name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Not a valid logical name (or its seed-format Deployment name is not a DNS name).
    #[error("{0}")]
    BadName(#[from] validate::Invalid),
    #[error("unknown target {0:?}: not in antibody.yml")]
    Unknown(String),
}

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
