//! Webhooks for CI and chat: one CloudEvents 1.0 structured-mode JSON POST per plan outcome,
//! optionally signed with HMAC-SHA256 over the exact body (`X-Antibody-Signature: sha256=<hex>`).
//!
//! The CloudEvent `id` is `<plan uid>/<event>`: the same on every redelivery, so receivers
//! de-duplicate on it (delivery is at-least-once).

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::WebhookConfig;
use super::{NotifyEvent, SendError};

pub const SIGNATURE_HEADER: &str = "X-Antibody-Signature";
pub const CONTENT_TYPE_CLOUDEVENTS: &str = "application/cloudevents+json; charset=utf-8";
pub const EVENT_TYPE_PREFIX: &str = "io.vael.antibody.";

/// The CloudEvent for one plan outcome.
pub fn cloud_event(event: &NotifyEvent) -> Value {
    json!({
        "specversion": "1.0",
        "type": format!("{EVENT_TYPE_PREFIX}{}", event.event),
        "source": format!("/apis/antibody.vael.io/v1alpha1/namespaces/{}/patchplans/{}", event.namespace, event.name),
        "id": event.dedup_id(),
        "time": event.time,
        "subject": event.name,
        "datacontenttype": "application/json",
        "data": event.data,
    })
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Worth another attempt? Server trouble and throttling are; a refusal (4xx) is not.
pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(status, StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS)
}

pub struct WebhookSink {
    url: reqwest::Url,
    shown_url: String,
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
}

/// The HMAC key from `secret` or `secret_file` (trailing newline dropped, as `kubectl create
/// secret --from-file` and editors leave one).
pub fn read_secret(hook: &WebhookConfig) -> Result<Option<Vec<u8>>, String> {
    if let Some(secret) = &hook.secret {
        return Ok(Some(secret.as_bytes().to_vec()));
    }
    let Some(path) = &hook.secret_file else {
        return Ok(None);
    };
    let mut bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(Some(bytes))
}

impl WebhookSink {
    pub fn new(
        hook: &WebhookConfig,
        secret: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, crate::validate::Invalid> {
        // The text is not shown: an unparsable URL may still hold its secret.
        let url = reqwest::Url::parse(&hook.url).map_err(|e| format!("webhook URL does not parse: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A signed POST is not replayed at another address.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { shown_url: shown_url(&url), url, client, secret })
    }

    pub async fn send(&self, event: &NotifyEvent) -> Result<(), SendError> {
        let body = serde_json::to_vec(&cloud_event(event)).map_err(|e| SendError::permanent(e.to_string()))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_CLOUDEVENTS))
            .header(USER_AGENT, concat!("antibody/", env!("CARGO_PKG_VERSION")))
            .header("X-Antibody-Event", event.event)
            .header("X-Antibody-Delivery", event.dedup_id());
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::retry(format!("POST {}: {}", self.shown_url, error_chain(&e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!("POST {} answered {status}", self.shown_url);
        Err(if retryable(status) { SendError::retry(message) } else { SendError::permanent(message) })
    }
}

/// The URL as logs show it: scheme, host and port only. Webhook URLs often carry a secret in
/// the path (Slack `/services/T…/B…/xyz`) or query (`?token=`); neither is shown, nor a user.
pub fn shown_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = url.path() != "/" || url.query().is_some() || url.fragment().is_some();
    format!("{}://{host}{port}/{}", url.scheme(), if hidden { "…" } else { "" })
}

/// reqwest's top-level message hides the cause ("error sending request"); show the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_hide_paths_queries_and_users() {
        let cases = [
            ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/…"),
            ("http://127.0.0.1:8080/hook?token=s3cret", "http://127.0.0.1:8080/…"),
            ("https://user:pass@example.com/", "https://example.com/"),
            ("https://example.com", "https://example.com/"),
            ("https://example.com/#frag", "https://example.com/…"),
        ];
        for (url, shown) in cases {
            let parsed = reqwest::Url::parse(url).expect("url");
            assert_eq!(shown_url(&parsed), shown, "{url}");
        }
    }

    #[test]
    fn signature_matches_rfc4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn cloud_event_is_structured_json_with_a_stable_id() {
        let event = NotifyEvent {
            event: "patch_failed",
            namespace: "vael".into(),
            name: "alert-abc".into(),
            uid: "u-1".into(),
            time: "2026-01-02T03:04:05Z".into(),
            data: json!({"id": "alert-abc"}),
        };
        assert_eq!(
            cloud_event(&event),
            json!({
                "specversion": "1.0",
                "type": "io.vael.antibody.patch_failed",
                "source": "/apis/antibody.vael.io/v1alpha1/namespaces/vael/patchplans/alert-abc",
                "id": "u-1/patch_failed",
                "time": "2026-01-02T03:04:05Z",
                "subject": "alert-abc",
                "datacontenttype": "application/json",
                "data": {"id": "alert-abc"},
            })
        );
    }

    #[test]
    fn which_answers_are_retried() {
        let cases = [
            (200, false),
            (400, false),
            (401, false),
            (404, false),
            (408, true),
            (429, true),
            (500, true),
            (503, true),
        ];
        for (code, want) in cases {
            let status = StatusCode::from_u16(code).expect("valid code");
            assert_eq!(retryable(status), want, "{code}");
        }
    }

    #[test]
    fn secret_file_drops_the_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").expect("write");
        let hook = WebhookConfig { secret_file: Some(path.display().to_string()), ..Default::default() };
        assert_eq!(read_secret(&hook).expect("readable"), Some(b"s3cret".to_vec()));
        std::fs::write(&path, "\n").expect("write");
        assert!(read_secret(&hook).expect_err("empty").contains("empty"));
        let missing = WebhookConfig { secret_file: Some("/nonexistent/antibody".into()), ..Default::default() };
        assert!(read_secret(&missing).expect_err("missing").contains("cannot read /nonexistent/antibody"));
    }
}
