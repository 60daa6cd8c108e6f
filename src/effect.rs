//! How an action's effect is produced in the application and how Antibody observes it. Pure:
//! the types of a target's `reload_mode`, `companion` and `verify` settings, the companion's
//! command lines and the meaning of its exit codes.
//!
//! `PatchApplied` is a claim about the application, not about the API server: an action only
//! counts as applied once its effect was observed — a rollout complete, the companion's
//! acknowledgement that every worker runs the new config generation, or the target's `verify`
//! probe passing. An effect that cannot be observed (a bare SIGHUP with no probe) is reported as
//! delivered but unverified, never as applied.

use crate::reason::Reason;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How `reloadFlask` reaches the application.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReloadMode {
    /// Run `reload_command` (default `kill -HUP 1`). gunicorn replaces its workers; connected
    /// WebSocket clients stay on the old worker until gunicorn's graceful timeout. The effect
    /// is observed only through `verify`.
    #[default]
    Signal,
    /// The `antibody_reload` companion applies the new env in place in every worker (no worker
    /// replaced, no client disconnected) and acknowledges the config generation.
    Companion,
    /// The companion sends SIGHUP to the gunicorn master and waits until every old worker is
    /// gone and a new one is ready; the retiring workers move their clients promptly.
    CompanionHup,
}

/// The `antibody_reload` companion inside the application's image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CompanionSpec {
    /// argv prefix that runs the companion's CLI in the container.
    #[serde(default = "default_companion_command")]
    pub command: Vec<String>,
    /// The directory the app's workers register in (`ANTIBODY_STATE_DIR` of the app).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// The mounted env file the app reads (`ANTIBODY_ENV_FILE`); needed to check that the
    /// kubelet synced an edit before the reload.
    #[serde(default)]
    pub env_file: Option<String>,
    /// How long one companion call waits for the workers to acknowledge.
    #[serde(default = "default_companion_timeout")]
    pub timeout_seconds: u64,
    /// How long the plan waits for the kubelet to sync an edited, mounted ConfigMap into the
    /// pod before it fails `EnvNotSynced` (the kubelet's sync period is about a minute).
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout_seconds: u64,
}

impl Default for CompanionSpec {
    fn default() -> Self {
        Self {
            command: default_companion_command(),
            state_dir: default_state_dir(),
            env_file: None,
            timeout_seconds: default_companion_timeout(),
            sync_timeout_seconds: default_sync_timeout(),
        }
    }
}

/// A probe run through `pods/exec` in every ready pod after an action on the target: the
/// action is applied only when it passes in all of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// argv, no shell. Passes when it exits 0 (and prints `expect_output`, when set).
    pub command: Vec<String>,
    /// A substring the probe's stdout must contain.
    #[serde(default)]
    pub expect_output: Option<String>,
    /// Give up (`VerificationFailed`) after this long.
    #[serde(default = "default_verify_timeout")]
    pub timeout_seconds: u64,
    /// Pause between two attempts.
    #[serde(default = "default_verify_interval")]
    pub interval_ms: u64,
}

fn default_companion_command() -> Vec<String> {
    ["python", "-m", "antibody_reload"].map(String::from).to_vec()
}
fn default_state_dir() -> String {
    "/tmp/antibody-reload".into()
}
fn default_companion_timeout() -> u64 {
    5
}
fn default_sync_timeout() -> u64 {
    120
}
fn default_verify_timeout() -> u64 {
    30
}
fn default_verify_interval() -> u64 {
    250
}

/// Check an argv from antibody.yml: a program, no NUL or newline (no shell is involved).
pub fn check_argv(argv: &[String]) -> Result<(), crate::validate::Invalid> {
    if argv.is_empty() {
        return Err("must hold at least the program to run".into());
    }
    if argv.iter().any(|a| a.is_empty() || a.contains(['\0', '\n'])) {
        return Err("arguments must be non-empty and hold no NUL or newline".into());
    }
    Ok(())
}

impl CompanionSpec {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_argv(&self.command).map_err(|m| ("command", m.to_string()))?;
        for (field, path) in [("state_dir", Some(&self.state_dir)), ("env_file", self.env_file.as_ref())] {
            if let Some(path) = path
                && (!path.starts_with('/') || path.contains(['\0', '\n']))
            {
                return Err((field, format!("{path:?} must be an absolute path")));
            }
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > 60 {
            return Err(("timeout_seconds", "must be between 1 and 60".into()));
        }
        if self.sync_timeout_seconds == 0 {
            return Err(("sync_timeout_seconds", "must be at least 1".into()));
        }
        Ok(())
    }

    /// `… reload`: apply generation `generation` in place in every worker, after the env file
    /// holds the expected values.
    pub fn reload_argv(&self, generation: &str, expect: &[ExpectedEnv]) -> Vec<String> {
        let mut argv = self.base_argv("reload");
        argv.extend(["--generation".into(), generation.into()]);
        self.push_expectations(&mut argv, expect);
        argv
    }

    /// `… hup`: SIGHUP to the gunicorn master, wait until the old workers are gone.
    pub fn hup_argv(&self, expect: &[ExpectedEnv]) -> Vec<String> {
        let mut argv = self.base_argv("hup");
        self.push_expectations(&mut argv, expect);
        argv
    }

    fn base_argv(&self, subcommand: &str) -> Vec<String> {
        let mut argv = self.command.clone();
        argv.push(subcommand.into());
        argv.extend(["--state-dir".into(), self.state_dir.clone()]);
        argv.extend(["--timeout".into(), self.timeout_seconds.to_string()]);
        argv
    }

    fn push_expectations(&self, argv: &mut Vec<String>, expect: &[ExpectedEnv]) {
        if expect.is_empty() {
            return;
        }
        if let Some(file) = &self.env_file {
            argv.extend(["--env-file".into(), file.clone()]);
        }
        for e in expect {
            argv.extend(["--expect-env".into(), format!("{}={}", e.key, e.sha256)]);
        }
    }
}

impl VerifySpec {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_argv(&self.command).map_err(|m| ("command", m.to_string()))?;
        if self.timeout_seconds == 0 {
            return Err(("timeout_seconds", "must be at least 1".into()));
        }
        if !(50..=60_000).contains(&self.interval_ms) {
            return Err(("interval_ms", "must be between 50 and 60000".into()));
        }
        Ok(())
    }

    /// Did one run of the probe pass?
    pub fn passes(&self, stdout: &str) -> bool {
        self.expect_output.as_deref().is_none_or(|want| stdout.contains(want))
    }
}

/// An env value the application must run with: the key and the SHA-256 of the value (values
/// are not put on command lines, where `ps` shows them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEnv {
    pub key: String,
    pub sha256: String,
}

impl ExpectedEnv {
    pub fn new(key: &str, value: &str) -> Self {
        Self { key: key.to_string(), sha256: hex::encode(Sha256::digest(value.as_bytes())) }
    }
}

/// What a failed companion call means, from its exit code (the CLI's documented contract).
pub fn companion_failure(code: Option<i32>, output: &str) -> (CompanionFailure, Reason) {
    use CompanionFailure::*;
    let kind = match code {
        Some(3) => EnvNotSynced,
        Some(4) => NotAcknowledged,
        Some(5) => NoWorkers,
        Some(6) => NoMaster,
        // `python -m` of a module that is not installed; a missing interpreter (127).
        Some(1) if output.contains("No module named") => Missing,
        Some(126 | 127) => Missing,
        _ => Other,
    };
    (kind, kind.reason())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompanionFailure {
    /// The mounted env file does not hold the edited value yet: retry until the sync timeout.
    EnvNotSynced,
    /// Workers did not acknowledge the generation (or the old ones did not exit) in time.
    NotAcknowledged,
    /// No live worker registered with the companion.
    NoWorkers,
    /// The gunicorn master could not be found from the workers' registrations.
    NoMaster,
    /// The companion is not installed in the image.
    Missing,
    Other,
}

impl CompanionFailure {
    pub fn reason(self) -> Reason {
        match self {
            CompanionFailure::EnvNotSynced => Reason::EnvNotSynced,
            CompanionFailure::NotAcknowledged | CompanionFailure::NoWorkers | CompanionFailure::NoMaster => {
                Reason::VerificationFailed
            }
            CompanionFailure::Missing => Reason::CompanionMissing,
            CompanionFailure::Other => Reason::NonZeroExitCode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_exit_codes_map_to_reasons() {
        let cases = [
            (Some(3), "", CompanionFailure::EnvNotSynced, Reason::EnvNotSynced),
            (Some(4), "", CompanionFailure::NotAcknowledged, Reason::VerificationFailed),
            (Some(5), "", CompanionFailure::NoWorkers, Reason::VerificationFailed),
            (Some(6), "", CompanionFailure::NoMaster, Reason::VerificationFailed),
            (Some(1), "No module named antibody_reload", CompanionFailure::Missing, Reason::CompanionMissing),
            (Some(127), "", CompanionFailure::Missing, Reason::CompanionMissing),
            (Some(1), "Traceback", CompanionFailure::Other, Reason::NonZeroExitCode),
            (None, "", CompanionFailure::Other, Reason::NonZeroExitCode),
        ];
        for (code, output, kind, reason) in cases {
            assert_eq!(companion_failure(code, output), (kind, reason), "{code:?} {output:?}");
        }
    }

    #[test]
    fn companion_argv_carries_generation_and_digests_never_values() {
        let spec = CompanionSpec { env_file: Some("/config/.env".into()), ..Default::default() };
        let expect = [ExpectedEnv::new("VAEL_MODE", "secret-value")];
        let argv = spec.reload_argv("uid-1/1", &expect);
        assert_eq!(argv[..4], ["python", "-m", "antibody_reload", "reload"]);
        assert!(argv.windows(2).any(|w| w == ["--generation", "uid-1/1"]));
        assert!(argv.windows(2).any(|w| w == ["--env-file", "/config/.env"]));
        let digest = hex::encode(Sha256::digest(b"secret-value"));
        assert!(argv.windows(2).any(|w| w[0] == "--expect-env" && w[1] == format!("VAEL_MODE={digest}")));
        assert!(!argv.iter().any(|a| a.contains("secret-value")), "{argv:?}");
        // No expectation: no env file either (nothing to wait for).
        let hup = spec.hup_argv(&[]);
        assert_eq!(hup[3], "hup");
        assert!(!hup.iter().any(|a| a == "--env-file"));
    }

    #[test]
    fn specs_validate_with_field_names() {
        let bad_companions = [
            (CompanionSpec { command: vec![], ..Default::default() }, "command"),
            (CompanionSpec { state_dir: "relative".into(), ..Default::default() }, "state_dir"),
            (CompanionSpec { env_file: Some("x/.env".into()), ..Default::default() }, "env_file"),
            (CompanionSpec { timeout_seconds: 0, ..Default::default() }, "timeout_seconds"),
            (CompanionSpec { timeout_seconds: 600, ..Default::default() }, "timeout_seconds"),
        ];
        for (spec, field) in bad_companions {
            assert_eq!(spec.validate().map_err(|(f, _)| f), Err(field), "{spec:?}");
        }
        assert!(CompanionSpec::default().validate().is_ok());
        let probe = VerifySpec {
            command: vec!["probe".into()],
            expect_output: Some("ok".into()),
            timeout_seconds: 5,
            interval_ms: 250,
        };
        assert!(probe.validate().is_ok());
        assert!(probe.passes("all ok\n") && !probe.passes("fail"));
        assert_eq!(VerifySpec { interval_ms: 10, ..probe.clone() }.validate().map_err(|(f, _)| f), Err("interval_ms"));
        assert_eq!(VerifySpec { command: vec!["a\nb".into()], ..probe }.validate().map_err(|(f, _)| f), Err("command"));
    }
}
