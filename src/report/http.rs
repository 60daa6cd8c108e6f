//! Health and metrics endpoints: `/livez`, `/readyz` (config loaded and watches synced),
//! `/metrics` (OpenMetrics).
//!
//! `/livez` and `/readyz` are always open (kubelet probes carry no token). `/metrics` is open by
//! default, for an in-cluster Prometheus that reaches it through the NetworkPolicy, or needs a
//! `read` token ([`MetricsAccess::Token`], `--metrics-auth token`): a command-line choice of the
//! deployment, like the listen address, not part of the hot-reloaded remediation policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Metrics;
use crate::tokens::denied_response;
use crate::tokens::{Scope, TokenStore};

/// Who may scrape `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MetricsAccess {
    /// Anyone who can reach the port (the NetworkPolicy decides who can).
    #[default]
    Open,
    /// A bearer token with scope `read` (Prometheus `authorization: {credentials_file: …}`).
    Token,
}

/// Readiness inputs, flipped by the parts that know.
#[derive(Debug, Default)]
pub struct Health {
    pub config_loaded: AtomicBool,
    pub watches_synced: AtomicBool,
    /// A replica waiting for the leader Lease: it ingests and serves, it does not reconcile.
    pub standby: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.config_loaded.load(Ordering::Relaxed)
            && (self.watches_synced.load(Ordering::Relaxed) || self.standby.load(Ordering::Relaxed))
    }
}

#[derive(Clone)]
struct HealthState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    metrics_access: MetricsAccess,
    tokens: Arc<TokenStore>,
}

pub fn router(
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    metrics_access: MetricsAccess,
    tokens: Arc<TokenStore>,
) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState { health, metrics, metrics_access, tokens })
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let h = &state.health;
    if h.ready() {
        (StatusCode::OK, "ok".to_string())
    } else {
        let why = format!(
            "not ready: config_loaded={} watches_synced={} standby={}",
            h.config_loaded.load(Ordering::Relaxed),
            h.watches_synced.load(Ordering::Relaxed),
            h.standby.load(Ordering::Relaxed)
        );
        (StatusCode::SERVICE_UNAVAILABLE, why)
    }
}

async fn metrics_text(State(state): State<HealthState>, headers: HeaderMap) -> axum::response::Response {
    if state.metrics_access == MetricsAccess::Token {
        let authorization = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or_default());
        if let Err(denied) = state.tokens.get().authorize(authorization, Scope::Read) {
            return denied_response(&denied);
        }
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        get_with(router, path, None).await
    }

    async fn get_with(router: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn ready_only_once_config_loaded_and_watches_synced() {
        let health = Arc::new(Health::default());
        let router = router(health.clone(), Arc::new(Metrics::new()), MetricsAccess::Open, Default::default());
        assert_eq!(get(&router, "/livez").await, (StatusCode::OK, "ok".into()));
        let cases = [
            (
                false,
                false,
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: config_loaded=false watches_synced=false standby=false",
            ),
            (
                true,
                false,
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: config_loaded=true watches_synced=false standby=false",
            ),
            (
                false,
                true,
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: config_loaded=false watches_synced=true standby=false",
            ),
            (true, true, false, StatusCode::OK, "ok"),
            // A standby (not the leader) serves and ingests: ready without a synced watch.
            (true, false, true, StatusCode::OK, "ok"),
            (
                false,
                false,
                true,
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: config_loaded=false watches_synced=false standby=true",
            ),
        ];
        for (config, watches, standby, status, body) in cases {
            health.config_loaded.store(config, Ordering::Relaxed);
            health.watches_synced.store(watches, Ordering::Relaxed);
            health.standby.store(standby, Ordering::Relaxed);
            assert_eq!(get(&router, "/readyz").await, (status, body.to_string()), "config={config} watches={watches}");
        }
        let (status, metrics) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text: {metrics}");
    }

    #[tokio::test]
    async fn metrics_open_or_behind_a_read_token_probes_always_open() {
        use crate::tokens::Tokens;
        let file = "bridge: bridge-token-0123456789\nui: ui-token-0123456789abcd scopes=read\n";
        let tokens = Arc::new(TokenStore::new(Tokens::parse(file).expect("valid")));
        let health = Arc::new(Health::default());
        health.config_loaded.store(true, Ordering::Relaxed);
        health.watches_synced.store(true, Ordering::Relaxed);
        let cases: &[(MetricsAccess, Option<&str>, StatusCode)] = &[
            (MetricsAccess::Open, None, StatusCode::OK),
            (MetricsAccess::Token, None, StatusCode::UNAUTHORIZED),
            (MetricsAccess::Token, Some("Bearer wrong-token-0123456789"), StatusCode::UNAUTHORIZED),
            (MetricsAccess::Token, Some("Bearer bridge-token-0123456789"), StatusCode::FORBIDDEN),
            (MetricsAccess::Token, Some("Bearer ui-token-0123456789abcd"), StatusCode::OK),
        ];
        for (access, authorization, want) in cases {
            let router = router(health.clone(), Arc::new(Metrics::new()), *access, tokens.clone());
            let (status, body) = get_with(&router, "/metrics", *authorization).await;
            assert_eq!(status, *want, "{access:?} {authorization:?}: {body}");
            assert_eq!(body.ends_with("# EOF\n"), status == StatusCode::OK, "metrics only when allowed: {body}");
            for probe in ["/livez", "/readyz"] {
                assert_eq!(get(&router, probe).await, (StatusCode::OK, "ok".into()), "{probe} stays open");
            }
        }
    }
}
