//! Hot reload of antibody.yml (and the token file) when the mounted file changes, for the whole
//! process (started by `antibody run` in `main.rs`).
//!
//! A ConfigMap or Secret volume swaps a `..data` symlink rather than writing the file, so events
//! on the file itself are unreliable; reading the content through the path every second catches
//! every kind of change (edit, rename, symlink swap) for the price of reading a small file. A new
//! config is validated first: an invalid one is logged with the offending field and counted, and
//! the old one stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, SharedConfig};
use crate::report::Metrics;
use crate::tokens::{TokenStore, Tokens};

pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Settings used once at startup (the audit log is opened then, and `--audit-dir` overrides
/// `log_path`): a reload keeps the values in force. Returns the fields the file wanted changed.
pub fn keep_startup_only(new: &mut Config, current: &Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if new.log_path != current.log_path {
        new.log_path.clone_from(&current.log_path);
        kept.push("log_path");
    }
    if new.audit_max_bytes != current.audit_max_bytes {
        new.audit_max_bytes = current.audit_max_bytes;
        kept.push("audit_max_bytes");
    }
    if new.audit_keep != current.audit_keep {
        new.audit_keep = current.audit_keep;
        kept.push("audit_keep");
    }
    kept
}

/// What a poll found.
#[derive(Debug, PartialEq)]
pub enum Change<T> {
    Unchanged,
    /// Valid and different: swap it in.
    Valid(T),
    /// Changed but invalid (or unreadable): keep the old one.
    Invalid(String),
}

/// One watched file: remembers the bytes last seen, so each change is judged once.
#[derive(Debug)]
pub struct Watched {
    path: PathBuf,
    last: Option<Vec<u8>>,
    last_error: Option<String>,
}

impl Watched {
    /// The first poll reports the file as it is; the caller compares it with what is in force
    /// (so a change between the initial load and the first poll is not missed).
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), last: None, last_error: None }
    }

    pub async fn poll<T, E: std::fmt::Display>(&mut self, parse: impl Fn(&str) -> Result<T, E>) -> Change<T> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                // Mid-swap the path can vanish for an instant: report once, keep the old config.
                let message = format!("cannot read {}: {e}", self.path.display());
                if self.last_error.as_deref() == Some(message.as_str()) {
                    return Change::Unchanged;
                }
                self.last_error = Some(message.clone());
                return Change::Invalid(message);
            }
        };
        if self.last.as_deref() == Some(bytes.as_slice()) {
            return Change::Unchanged;
        }
        self.last = Some(bytes.clone());
        self.last_error = None;
        let result = std::str::from_utf8(&bytes)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|text| parse(text).map_err(|e| e.to_string()));
        match result {
            Ok(value) => Change::Valid(value),
            Err(message) => Change::Invalid(message),
        }
    }
}

/// Poll until `shutdown`; swap `config` (and the tokens) when a valid new version appears.
pub async fn watch(
    config_path: PathBuf,
    config: Arc<SharedConfig>,
    tokens: Option<(PathBuf, Arc<TokenStore>)>,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut config_file = Watched::new(&config_path);
    let mut token_file = tokens.as_ref().map(|(path, store)| (Watched::new(path), store.clone()));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match config_file.poll(|text| Config::from_yaml(text).map_err(|e| e.to_string())).await {
            Change::Unchanged => {}
            Change::Valid(mut new) => {
                let old = config.get();
                let kept = keep_startup_only(&mut new, &old);
                if !kept.is_empty() {
                    debug!(fields = ?kept, "read at startup only (or set on the command line): kept as in force");
                }
                if *old != new {
                    config.set(new);
                    metrics.config_reload("applied");
                    info!(path = %config_path.display(), "config reloaded");
                }
            }
            Change::Invalid(error) => {
                metrics.config_reload("rejected");
                warn!(path = %config_path.display(), %error, "new config is invalid; keeping the one in force");
            }
        }
        if let Some((file, store)) = token_file.as_mut() {
            match file.poll(Tokens::parse).await {
                Change::Unchanged => {}
                Change::Valid(new) => {
                    if *store.get() != new {
                        info!(names = ?new.names(), "token file reloaded");
                        store.set(new);
                        metrics.config_reload("tokens_applied");
                    }
                }
                Change::Invalid(error) => {
                    metrics.config_reload("tokens_rejected");
                    warn!(%error, "new token file is invalid; keeping the tokens in force");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("antibody-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_yaml(text).map_err(|e| e.to_string())
    }

    /// The way kubelet updates a ConfigMap volume: new dir, `..data` symlink swapped by rename.
    fn swap(dir: &Path, version: u32, content: &str) {
        let data = dir.join(format!("..v{version}"));
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join("antibody.yml"), content).expect("write");
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..v{version}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, dir.join("..data")).expect("atomic swap");
    }

    #[tokio::test]
    async fn symlink_swaps_are_seen_and_invalid_configs_rejected() {
        let dir = temp_dir("swap");
        swap(&dir, 1, "ingest: {cooldown_seconds: 10}\n");
        std::os::unix::fs::symlink("..data/antibody.yml", dir.join("antibody.yml")).expect("file link");
        let path = dir.join("antibody.yml");
        let mut watched = Watched::new(&path);
        assert!(matches!(watched.poll(parse).await, Change::Valid(c) if c.ingest.cooldown_seconds == 10), "first poll");
        assert_eq!(watched.poll(parse).await, Change::Unchanged);

        swap(&dir, 2, "ingest: {cooldown_seconds: 20}\n");
        match watched.poll(parse).await {
            Change::Valid(config) => assert_eq!(config.ingest.cooldown_seconds, 20),
            other => panic!("expected the new config, got {other:?}"),
        }
        assert_eq!(watched.poll(parse).await, Change::Unchanged);

        swap(&dir, 3, "ingest: {cooldown_seconds: 20, bogus: 1}\n");
        match watched.poll(parse).await {
            Change::Invalid(error) => assert!(error.contains("ingest"), "{error}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(watched.poll(parse).await, Change::Unchanged, "a rejected version is reported once");

        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(watched.poll(parse).await, Change::Invalid(e) if e.contains("cannot read")));
        assert_eq!(watched.poll(parse).await, Change::Unchanged, "a missing file is reported once");
    }

    #[test]
    fn startup_only_settings_survive_a_reload() {
        let current = parse("log_path: /var/log/antibody-from-cli\naudit_keep: 3\n").expect("valid");
        let mut new = parse("log_path: logs/\naudit_keep: 3\ningest: {cooldown_seconds: 5}\n").expect("valid");
        assert_eq!(keep_startup_only(&mut new, &current), ["log_path"]);
        assert_eq!(new.log_path, "/var/log/antibody-from-cli");
        assert_eq!(new.ingest.cooldown_seconds, 5, "live settings still change");
        let mut same = current.clone();
        assert!(keep_startup_only(&mut same, &current).is_empty());
    }

    #[tokio::test]
    async fn watch_swaps_shared_config_and_keeps_it_on_error() {
        let dir = temp_dir("watch");
        let path = dir.join("antibody.yml");
        std::fs::write(&path, "ingest: {cooldown_seconds: 10}\n").expect("write");
        let shared = Arc::new(SharedConfig::new(parse("ingest: {cooldown_seconds: 10}\n").expect("valid")));
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watch(
            path.clone(),
            shared.clone(),
            None,
            metrics.clone(),
            Duration::from_millis(20),
            shutdown.clone(),
        ));
        let wait_for = |want: u64| {
            let shared = shared.clone();
            async move {
                for _ in 0..200 {
                    if shared.get().ingest.cooldown_seconds == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        std::fs::write(&path, "ingest: {cooldown_seconds: 30}\n").expect("write");
        assert!(wait_for(30).await, "valid change applied");
        std::fs::write(&path, "ingest: {cooldown_seconds: -1}\n").expect("write");
        for _ in 0..200 {
            if metrics.encode().contains(r#"antibody_config_reloads_total{result="rejected"} 1"#) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            metrics.encode().contains(r#"antibody_config_reloads_total{result="rejected"} 1"#),
            "{}",
            metrics.encode()
        );
        assert_eq!(shared.get().ingest.cooldown_seconds, 30, "the invalid version did not replace the valid one");
        shutdown.cancel();
        task.await.expect("watch task ends on shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
