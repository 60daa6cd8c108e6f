//! Health and metrics endpoints: `/livez`, `/readyz` (config loaded and watches synced),
//! `/metrics` (OpenMetrics).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Metrics;

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
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState { health, metrics })
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

async fn metrics_text(State(state): State<HealthState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::builder().uri(path).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn ready_only_once_config_loaded_and_watches_synced() {
        let health = Arc::new(Health::default());
        let router = router(health.clone(), Arc::new(Metrics::new()));
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
}
