//! Antibody: NEXUS `ThreatAlert`s → `PatchPlan` custom resources → safe, audited actions.
//!
//! Data flow, one module per stage:
//! [`alert`] (envelope, validation, fingerprint) → [`policy`] (antibody.yml rules → plan spec,
//! pure) → [`plan`] (the `PatchPlan` CRD) → [`admission`] (whitelist, namespaces, signatures;
//! pure) → [`reconcile`] (gates, step machine) → [`actions`] (restart, editEnv, reloadFlask,
//! deletePod) → [`report`] (conditions, Events, audit, notifiers).
#![forbid(unsafe_code)]

pub mod actions;
pub mod admission;
pub mod alert;
pub mod alert_replay;
pub mod approval;
pub mod backoff;
pub mod bounded;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod config;
pub mod config_watch;
pub mod effect;
pub mod escalation;
pub mod ingest;
pub mod leader;
pub mod names;
pub mod observation;
pub mod operator_cli;
pub mod plan;
pub mod policy;
pub mod preflight;
pub mod rbac;
pub mod reason;
pub mod reconcile;
pub mod report;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod validate;
pub mod window;

pub use crate::names::FIELD_MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// antibody.yml or a command-line flag is invalid.
    #[error("config {path}: {message}")]
    Config { path: String, message: String },

    /// The cluster cannot be used: no credentials, or the PatchPlan CRD is not installed.
    #[error("cluster: {0}")]
    Cluster(String),

    /// The leader-election Lease could not be set up.
    #[error("leader lease: {0}")]
    Lease(String),

    /// The audit log cannot be opened (directory, lock, key).
    #[error("audit log {dir}: {message}")]
    Audit { dir: String, message: String },

    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),

    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Every [`Self::metric_label`], so each series exists (at 0) before the first error.
    pub const METRIC_LABELS: [&'static str; 8] =
        ["api_unavailable", "api_conflict", "api_rejected", "config", "cluster", "lease", "audit", "local"];

    /// The `error` label of `antibody_reconcile_errors_total`: what kind of failure a retried
    /// reconcile hit (an unreachable API server is not a rejected request).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(e) => match backoff::api_failure(e) {
                backoff::ApiFailure::Unavailable => "api_unavailable",
                backoff::ApiFailure::Conflict => "api_conflict",
                backoff::ApiFailure::Rejected => "api_rejected",
            },
            Error::Config { .. } => "config",
            Error::Cluster(_) => "cluster",
            Error::Lease(_) => "lease",
            Error::Audit { .. } => "audit",
            Error::Serde(_) | Error::Yaml(_) | Error::Io(_) => "local",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
