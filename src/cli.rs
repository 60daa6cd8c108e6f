//! The offline and one-shot subcommands behind `antibody keygen | sign | backups | rollback`.
//! Errors are plain messages for the terminal.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use crate::config::Config;
use crate::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use crate::{signing, validate};

/// What `check-config` prints: the verdict, the effective configuration (shorthands expanded,
/// convention targets and defaults spelled out), then warnings.
pub fn check_config_report(path: &Path, config: &Config) -> String {
    let mut out = format!(
        "{}: ok — {} target(s), {} rule(s); whitelist: restart {:?}, edit_env {:?}, reload_flask {:?}\n",
        path.display(),
        config.targets.len(),
        config.rules.len(),
        config.actions.restart,
        config.actions.edit_env,
        config.actions.reload_flask
    );
    out.push_str("effective configuration:\n");
    for line in config.effective() {
        out.push_str(&format!("  {line}\n"));
    }
    for warning in config.warnings() {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

/// Write a new private key (mode 0600) and return the public key (base64).
pub fn keygen(out: &Path) -> Result<String, String> {
    if out.exists() {
        return Err(format!("{} exists: refusing to overwrite a key", out.display()));
    }
    let (private, public) = signing::generate().map_err(|e| e.to_string())?;
    write_secret(out, &format!("{private}\n")).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(public)
}

#[cfg(unix)]
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Sign the plan in `plan_file`; returns the signed YAML.
/// Valid for `ttl_seconds` (at most `safety.signature_max_ttl_seconds` where it is applied).
pub fn sign_file(
    plan_file: &Path,
    key_file: &Path,
    key_name: &str,
    namespace: Option<&str>,
    ttl_seconds: u64,
) -> Result<String, String> {
    let text = std::fs::read_to_string(plan_file).map_err(|e| format!("{}: {e}", plan_file.display()))?;
    let mut plan: PatchPlan =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: not a PatchPlan: {e}", plan_file.display()))?;
    if let Some(ns) = namespace {
        match plan.metadata.namespace.as_deref() {
            Some(existing) if existing != ns => {
                return Err(format!("the file says namespace {existing:?}, --namespace says {ns:?}"));
            }
            _ => plan.metadata.namespace = Some(ns.to_string()),
        }
    }
    let key = signing::read_private_key(key_file).map_err(|e| e.to_string())?;
    signing::sign(&mut plan, key_name, &key, ttl_seconds).map_err(|e| e.to_string())?;
    serde_yaml::to_string(&plan).map_err(|e| e.to_string())
}

/// A plan restoring `backup` into `target`'s ConfigMap, then the follow-up its mode needs.
pub fn rollback_plan(config_file: &Path, target: &str, backup: &str, namespace: &str) -> Result<String, String> {
    let config = Config::load(config_file).map_err(|e| e.to_string())?;
    let resolved = config.resolve(target, namespace).map_err(|e| e.to_string())?;
    validate::dns1123_subdomain(backup)?;
    let mut restore = PlanAction::new(ActionType::Rollback, target);
    restore.backup = Some(backup.to_string());
    let follow_up = resolved.config_map_mode.follow_up().map(|action| PlanAction::new(action, target));
    let spec = PatchPlanSpec { actions: std::iter::once(restore).chain(follow_up).collect(), ..Default::default() };
    crate::admission::admit(&config, &spec, namespace).map_err(|r| format!("{}: {}", r.reason, r.message))?;
    let suffix: String = backup.chars().rev().take(10).collect::<String>().chars().rev().collect();
    let name = format!("rollback-{}-{}", resolved.deployment, suffix.trim_start_matches('-'));
    let mut plan = PatchPlan::new(&name, spec);
    plan.metadata.namespace = Some(namespace.to_string());
    serde_yaml::to_string(&plan).map_err(|e| e.to_string())
}

/// A table of `target`'s backups, oldest first.
pub async fn list_backups(config_file: &Path, target: &str, namespace: &str) -> Result<String, String> {
    let config = Config::load(config_file).map_err(|e| e.to_string())?;
    let resolved = config.resolve(target, namespace).map_err(|e| e.to_string())?;
    let Some(config_map) = &resolved.config_map else {
        return Err(format!("target {target} has no config_map: nothing is backed up"));
    };
    let client = kube::Client::try_default().await.map_err(|e| format!("cannot reach the cluster: {e}"))?;
    let api: Api<ConfigMap> = Api::namespaced(client, &resolved.namespace);
    let backups = crate::actions::env::list_backups(&api, config_map).await.map_err(|e| e.to_string())?;
    let mut table = format!("{:<48} {:<22} {:<12} PLAN\n", "BACKUP", "CREATED", "KEY");
    for b in &backups {
        let annotation = |k: &str| b.metadata.annotations.as_ref().and_then(|a| a.get(k)).cloned().unwrap_or_default();
        table.push_str(&format!(
            "{:<48} {:<22} {:<12} {}\n",
            b.metadata.name.as_deref().unwrap_or_default(),
            b.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            annotation(crate::names::KEY_ANNOTATION),
            annotation(crate::names::PLAN_ANNOTATION),
        ));
    }
    if backups.is_empty() {
        table.push_str(&format!("(no backups of ConfigMap {}/{config_map})\n", resolved.namespace));
    }
    Ok(table)
}

/// `antibody audit verify`'s options.
pub struct AuditVerify {
    pub files: Vec<std::path::PathBuf>,
    pub require_genesis: bool,
    pub key_file: Option<std::path::PathBuf>,
    /// Namespace holding the anchor ConfigMap.
    pub anchor: Option<String>,
    pub anchor_file: Option<std::path::PathBuf>,
    pub log_id: Option<String>,
}

/// Verify the chain, the MACs with a key, and the head against its anchor. `Err`: nothing
/// could be checked (unreadable files, no such anchor).
pub async fn verify_audit(request: &AuditVerify) -> Result<crate::report::audit::Verification, String> {
    use crate::report::{audit, audit_anchor};
    let key = request.key_file.as_deref().map(audit::read_key).transpose()?;
    let anchors = match (&request.anchor, &request.anchor_file) {
        (Some(namespace), _) => {
            let client = kube::Client::try_default().await.map_err(|e| format!("cannot reach the cluster: {e}"))?;
            audit_anchor::load(&client, namespace).await?
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            vec![serde_json::from_str(&text).map_err(|e| format!("{}: not an anchor: {e}", path.display()))?]
        }
        (None, None) => Vec::new(),
    };
    let anchor = if request.anchor.is_none() && request.anchor_file.is_none() {
        None
    } else {
        // Which log: asked for, else the directory's own `log-id`, else the only anchor there is.
        let own_id = request
            .files
            .iter()
            .find(|p| p.is_dir())
            .and_then(|dir| std::fs::read_to_string(dir.join(audit::LOG_ID_FILE)).ok())
            .map(|id| id.trim().to_string());
        let wanted = request.log_id.clone().or(own_id);
        let ids: Vec<&str> = anchors.iter().map(|a| a.log_id.as_str()).collect();
        let found = match &wanted {
            Some(id) => anchors.iter().find(|a| a.log_id == audit::sanitize_log_id(id)),
            None if anchors.len() == 1 => anchors.first(),
            None => None,
        };
        match found {
            Some(anchor) => Some(anchor.clone()),
            None => {
                return Err(match wanted {
                    Some(id) => format!("no anchor for log {id} (anchors: {ids:?})"),
                    None => format!("which log? pass --log-id (anchors: {ids:?})"),
                });
            }
        }
    };
    let options = audit::VerifyOptions {
        require_genesis: request.require_genesis,
        key: key.clone(),
        remember: anchor.iter().map(|a| a.seq).collect(),
    };
    let mut verification =
        audit::verify_paths_with(&request.files, &options).map_err(|e| format!("cannot read the audit log: {e}"))?;
    if let Some(anchor) = &anchor {
        audit_anchor::check(anchor, key.as_deref(), &mut verification);
    }
    Ok(verification)
}

/// `antibody replay`'s options.
pub struct ReplayArgs<'a> {
    pub config: &'a Path,
    pub baseline: Option<&'a Path>,
    pub expect: Option<&'a Path>,
    pub namespace: Option<&'a str>,
    pub inputs: &'a [std::path::PathBuf],
    pub json: bool,
    pub fail_on_change: bool,
}

/// Read the files, replay, check expectations. `Ok((report, passed))`; `Err` for unreadable or
/// invalid input (exit 2: nothing was judged).
pub fn replay(args: &ReplayArgs<'_>) -> Result<(String, bool), String> {
    use crate::alert_replay;
    let config = Config::load(args.config).map_err(|e| e.to_string())?;
    let baseline = args.baseline.map(Config::load).transpose().map_err(|e| format!("--baseline: {e}"))?;
    let expectations = match args.expect {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            alert_replay::parse_expectations(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let mut files = Vec::with_capacity(args.inputs.len());
    for path in args.inputs {
        let text = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| format!("stdin: {e}"))?;
            text
        } else {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        };
        files.push((path.display().to_string(), text));
    }
    let inputs = alert_replay::read_inputs(&files)?;
    let namespace = args.namespace.map_or_else(|| config.defaults.plan_namespace.clone(), str::to_string);
    let replayed = alert_replay::replay(&config, baseline.as_ref(), &inputs, &namespace);
    let failures = alert_replay::check(&expectations, &replayed);
    let changed = replayed.iter().filter(|r| r.change == "changed").count();
    let passed = failures.is_empty() && !(args.fail_on_change && changed > 0);
    let report = if args.json {
        let value = serde_json::json!({
            "alerts": replayed,
            "changed": changed,
            "skipped_records": inputs.skipped_records,
            "expectation_failures": failures,
            "passed": passed,
        });
        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())? + "\n"
    } else {
        alert_replay::render(&replayed, inputs.skipped_records, &failures, expectations.len())
    };
    Ok((report, passed))
}
