//! The `notify:` block of antibody.yml: where plan outcomes go besides Kubernetes Events.
//! Pure: parsing and validation only; connections happen in [`super::preflight`] and the sinks.
//!
//! ```yaml
//! notify:
//!   socketio_message_queue: redis://127.0.0.1:6379/0   # the VAEL UI's Flask-SocketIO queue
//!   channel: flask-socketio
//!   namespace: /
//!   room: null                                       # broadcast to the namespace
//!   webhooks:
//!     - name: ci
//!       url: https://ci.example/hooks/antibody
//!       secret_file: /var/run/secrets/antibody/webhook-ci
//!   delivery: { retries: 5, backoff_ms: 500, timeout_ms: 5000 }
//! ```

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Sink name of the Socket.IO message queue (metrics label, delivery marker).
pub const SOCKETIO_SINK: &str = "socketio";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Redis URL of the VAEL UI's Flask-SocketIO `message_queue` (`redis://host:port/db`).
    #[serde(default)]
    pub socketio_message_queue: Option<String>,
    /// Pub/sub channel; Flask-SocketIO's default is `flask-socketio`.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// Socket.IO namespace the UI broadcasts to.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Only clients in this room get the event; everyone in the namespace when unset.
    #[serde(default)]
    pub room: Option<String>,
    /// `host_id` in the queue message; defaults to the controller's instance name.
    #[serde(default)]
    pub host_id: Option<String>,
    /// A PUBLISH that no Socket.IO server received counts as not delivered (and is retried).
    #[serde(default = "default_true")]
    pub require_subscriber: bool,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Send env values and messages as they are. Default: redacted as for a `read` token
    /// (`val` and messages null, named in `redacted`) — a queue or webhook is not a place for
    /// the values of an env edit unless you say so.
    #[serde(default)]
    pub reveal_values: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            socketio_message_queue: None,
            channel: default_channel(),
            namespace: default_namespace(),
            room: None,
            host_id: None,
            require_subscriber: true,
            webhooks: Vec::new(),
            reveal_values: false,
            delivery: DeliveryConfig::default(),
        }
    }
}

/// One HTTP(S) endpoint that receives CloudEvents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Sink name in metrics and delivery markers; `webhook-<index>` when unset.
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    /// HMAC-SHA256 key for `X-Antibody-Signature`; prefer `secret_file`.
    #[serde(default)]
    pub secret: Option<String>,
    /// File holding the HMAC key (trailing newline ignored), e.g. a mounted Secret.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Overrides `delivery.timeout_ms` for this endpoint.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Overrides `delivery.retries` for this endpoint.
    #[serde(default)]
    pub retries: Option<u32>,
}

impl WebhookConfig {
    pub fn sink_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("webhook-{index}"))
    }
}

/// How hard to try. Attempts = 1 + `retries`; the wait doubles from `backoff_ms` up to
/// `max_backoff_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Per attempt: connect + send + answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Events waiting per sink; when full, new events are reported undeliverable.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Deliveries in flight at once per sink.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// On start, terminal plans that finished within this window and lack a delivery marker
    /// are delivered again (at-least-once across restarts); older ones are left alone.
    #[serde(default = "default_redeliver_within")]
    pub redeliver_within_seconds: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            timeout_ms: default_timeout_ms(),
            queue_capacity: default_queue_capacity(),
            concurrency: default_concurrency(),
            redeliver_within_seconds: default_redeliver_within(),
        }
    }
}

fn default_channel() -> String {
    "flask-socketio".into()
}
fn default_namespace() -> String {
    "/".into()
}
fn default_true() -> bool {
    true
}
fn default_retries() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_queue_capacity() -> usize {
    1024
}
fn default_concurrency() -> usize {
    4
}
fn default_redeliver_within() -> u64 {
    24 * 3600
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

/// Schemes the Redis sink can connect to in this build (no TLS client is compiled in).
const REDIS_SCHEMES: [&str; 3] = ["redis", "unix", "redis+unix"];

impl NotifyConfig {
    /// Is there anything to notify?
    pub fn enabled(&self) -> bool {
        self.socketio_message_queue.is_some() || !self.webhooks.is_empty()
    }

    /// Names of every configured sink, in delivery-marker spelling.
    pub fn sink_names(&self) -> Vec<String> {
        let redis = self.socketio_message_queue.as_ref().map(|_| SOCKETIO_SINK.to_string());
        redis.into_iter().chain(self.webhooks.iter().enumerate().map(|(i, w)| w.sink_name(i))).collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.socketio_message_queue {
            validate_redis_url(url).map_err(|m| err("notify.socketio_message_queue", m))?;
        }
        if self.channel.is_empty() || self.channel.chars().any(char::is_whitespace) {
            return Err(err("notify.channel", "must be a non-empty name without whitespace"));
        }
        if !self.namespace.starts_with('/') {
            return Err(err(
                "notify.namespace",
                format!("Socket.IO namespaces start with '/' (got {:?})", self.namespace),
            ));
        }
        if self.room.as_deref().is_some_and(str::is_empty) {
            return Err(err("notify.room", "must not be empty (leave it out to broadcast)"));
        }
        if self.host_id.as_deref().is_some_and(str::is_empty) {
            return Err(err("notify.host_id", "must not be empty"));
        }
        let mut names = std::collections::BTreeSet::new();
        if self.socketio_message_queue.is_some() {
            names.insert(SOCKETIO_SINK.to_string());
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            let field = |f: &str| format!("notify.webhooks[{i}].{f}");
            let name = hook.sink_name(i);
            validate_sink_name(&name).map_err(|m| err(field("name"), m))?;
            if !names.insert(name.clone()) {
                return Err(err(field("name"), format!("sink name {name:?} is used twice")));
            }
            validate_webhook_url(&hook.url).map_err(|m| err(field("url"), m))?;
            match (&hook.secret, &hook.secret_file) {
                (Some(_), Some(_)) => return Err(err(field("secret"), "set secret or secret_file, not both")),
                (Some(s), None) if s.is_empty() => return Err(err(field("secret"), "must not be empty")),
                (None, Some(f)) if f.is_empty() => return Err(err(field("secret_file"), "must not be empty")),
                _ => {}
            }
            if hook.timeout_ms.is_some_and(|t| !(1..=300_000).contains(&t)) {
                return Err(err(field("timeout_ms"), "must be between 1 and 300000"));
            }
            if hook.retries.is_some_and(|r| r > 100) {
                return Err(err(field("retries"), "must be at most 100"));
            }
        }
        let d = &self.delivery;
        let checks: [(&str, bool, &str); 6] = [
            ("retries", d.retries <= 100, "must be at most 100"),
            ("backoff_ms", (1..=600_000).contains(&d.backoff_ms), "must be between 1 and 600000"),
            ("max_backoff_ms", d.max_backoff_ms >= d.backoff_ms, "must be at least backoff_ms"),
            ("timeout_ms", (1..=300_000).contains(&d.timeout_ms), "must be between 1 and 300000"),
            ("queue_capacity", (1..=100_000).contains(&d.queue_capacity), "must be between 1 and 100000"),
            ("concurrency", (1..=64).contains(&d.concurrency), "must be between 1 and 64"),
        ];
        for (name, ok, message) in checks {
            if !ok {
                return Err(err(format!("notify.delivery.{name}"), message));
            }
        }
        Ok(())
    }
}

/// Lower-case letters, digits and `-`, at most 40: it ends up in annotation values and labels.
fn validate_sink_name(name: &str) -> Result<(), crate::validate::Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(format!("{name:?}: use 1–40 lower-case letters, digits and '-'").into());
    }
    if name == SOCKETIO_SINK {
        return Err(format!("{name:?} is reserved for the Socket.IO message queue").into());
    }
    Ok(())
}

fn validate_redis_url(text: &str) -> Result<(), crate::validate::Invalid> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{:?} is not a URL: {e}", redact(text)))?;
    match url.scheme() {
        "rediss" => {
            return Err("rediss:// (TLS) is not built into Antibody; use redis:// on a private network".into());
        }
        scheme if !REDIS_SCHEMES.contains(&scheme) => {
            return Err(format!("scheme {scheme:?} is not a Redis URL (redis://host:port/db)").into());
        }
        _ => {}
    }
    if url.scheme() == "redis" && url.host_str().is_none_or(str::is_empty) {
        return Err("redis:// URL needs a host (redis://127.0.0.1:6379/0)".into());
    }
    // The parser that will connect has the last word (db number, query options).
    redis::Client::open(text).map(|_| ()).map_err(|e| format!("{}: {e}", redact(text)).into())
}

fn validate_webhook_url(text: &str) -> Result<(), crate::validate::Invalid> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{:?} is not a URL: {e}", redact(text)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not allowed: webhooks are http:// or https://", url.scheme()).into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL needs a host".into());
    }
    Ok(())
}

/// The URL without its password, for logs and errors.
pub fn redact(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<NotifyConfig, ConfigError> {
        let config: NotifyConfig = serde_yaml::from_str(yaml).map_err(|e| err("yaml", e.to_string()))?;
        config.validate().map(|()| config)
    }

    #[test]
    fn defaults_match_flask_socketio() {
        let c = parse("socketio_message_queue: redis://127.0.0.1:6379/0").expect("valid");
        assert_eq!((c.channel.as_str(), c.namespace.as_str(), c.room.as_deref()), ("flask-socketio", "/", None));
        assert!(c.require_subscriber);
        assert_eq!(c.sink_names(), ["socketio"]);
        assert!(!NotifyConfig::default().enabled());
    }

    #[test]
    fn sink_names_default_by_index() {
        let c =
            parse("webhooks: [{url: 'http://127.0.0.1:1/a'}, {name: ci, url: 'https://ci.example/h'}]").expect("valid");
        assert_eq!(c.sink_names(), ["webhook-0", "ci"]);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("socketio_message_queue: 'not a url'", "notify.socketio_message_queue", "not a URL"),
            ("socketio_message_queue: 'http://127.0.0.1:6379'", "notify.socketio_message_queue", "not a Redis URL"),
            ("socketio_message_queue: 'rediss://127.0.0.1:6379'", "notify.socketio_message_queue", "TLS"),
            ("socketio_message_queue: 'redis://127.0.0.1:6379/x'", "notify.socketio_message_queue", ""),
            ("channel: ''", "notify.channel", "non-empty"),
            ("namespace: ui", "notify.namespace", "start with '/'"),
            ("room: ''", "notify.room", "empty"),
            ("webhooks: [{url: 'ftp://ci.example/x'}]", "notify.webhooks[0].url", "http:// or https://"),
            ("webhooks: [{url: 'ci.example/hook'}]", "notify.webhooks[0].url", "not a URL"),
            ("webhooks: [{url: 'http://a/', secret: s, secret_file: f}]", "notify.webhooks[0].secret", "not both"),
            ("webhooks: [{url: 'http://a/', secret: ''}]", "notify.webhooks[0].secret", "empty"),
            ("webhooks: [{name: Bad_Name, url: 'http://a/'}]", "notify.webhooks[0].name", "lower-case"),
            ("webhooks: [{name: socketio, url: 'http://a/'}]", "notify.webhooks[0].name", "reserved"),
            (
                "webhooks: [{name: a, url: 'http://a/'}, {name: a, url: 'http://b/'}]",
                "notify.webhooks[1].name",
                "twice",
            ),
            ("webhooks: [{url: 'http://a/', timeout_ms: 0}]", "notify.webhooks[0].timeout_ms", "between"),
            ("delivery: {queue_capacity: 0}", "notify.delivery.queue_capacity", "between"),
            ("delivery: {backoff_ms: 100, max_backoff_ms: 10}", "notify.delivery.max_backoff_ms", "at least"),
            ("delivery: {concurrency: 0}", "notify.delivery.concurrency", "between"),
        ];
        for (yaml, field, words) in cases {
            let error = parse(yaml).expect_err(yaml);
            assert_eq!(error.field, *field, "{yaml}: {}", error.message);
            assert!(error.message.contains(words), "{yaml}: {:?} lacks {words:?}", error.message);
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:hunter2@redis.vael:6379/0"), "redis://:***@redis.vael:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        let error = parse("socketio_message_queue: 'redis://:hunter2@h:6379/x'").expect_err("bad db");
        assert!(!error.message.contains("hunter2"), "{}", error.message);
    }
}
