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
