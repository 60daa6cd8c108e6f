//! Wiring of the ingest side of `antibody run`: its flags, the feeds and listeners it starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Intake, grpc, http, ws};
use crate::config::SharedConfig;
use crate::report::Reporter;
use crate::tokens::{TokenStore, Tokens};

/// Command-line options of the ingest side of `antibody run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IngestArgs {
    /// NEXUS gRPC ThreatFeed to subscribe to, e.g. http://nexus:50051.
    #[arg(long, env = "ANTIBODY_NEXUS_GRPC")]
    pub nexus_grpc: Option<String>,
    /// NEXUS Socket.IO server to take `nexus_alert` events from, e.g. http://nexus:5000.
    #[arg(long, env = "ANTIBODY_NEXUS_WS")]
    pub nexus_ws: Option<String>,
    /// Serve the gRPC AlertIntake (with reflection) here, e.g. 127.0.0.1:50052.
    #[arg(long, env = "ANTIBODY_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Bearer tokens (lines `name:token [scopes=a,b]`; the name is the requester) for REST and
    /// gRPC intake, the plans API, Socket.IO and, with `--metrics-auth token`, /metrics.
    #[arg(long, env = "ANTIBODY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Namespace for PatchPlans made from alerts (default: --namespace, else
    /// `defaults.plan_namespace` from antibody.yml).
    #[arg(long, env = "ANTIBODY_PLAN_NAMESPACE")]
    pub plan_namespace: Option<String>,
    /// Serve the HTTP and gRPC intake listeners over TLS with this PEM certificate (chain);
    /// needs --tls-key. Re-read when the file changes.
    #[arg(long, env = "ANTIBODY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ANTIBODY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle to verify https:// NEXUS feeds with (default: the system trust store for
    /// --nexus-grpc, built-in Mozilla roots for --nexus-ws). Refused with a plaintext feed.
    #[arg(long, env = "ANTIBODY_NEXUS_CA")]
    pub nexus_ca: Option<PathBuf>,
    /// Authenticated gRPC intake calls in flight at once (beyond: RESOURCE_EXHAUSTED).
    #[arg(long, env = "ANTIBODY_GRPC_MAX_CALLS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub grpc_max_calls: u32,
    /// HTTP/2 streams one gRPC client connection may have open.
    #[arg(long, env = "ANTIBODY_GRPC_MAX_STREAMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub grpc_max_streams: u32,
    /// gRPC requests served at once per connection (the rest wait their turn).
    #[arg(long, env = "ANTIBODY_GRPC_CONNECTION_CALLS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub grpc_connection_calls: u32,
}

impl IngestArgs {
    pub fn grpc_limits(&self) -> grpc::GrpcLimits {
        grpc::GrpcLimits {
            max_concurrent_calls: self.grpc_max_calls as usize,
            max_concurrent_streams: self.grpc_max_streams,
            per_connection_calls: self.grpc_connection_calls as usize,
            ..Default::default()
        }
    }
}

/// The running ingest side: its HTTP routes (to merge into the main router) and its tasks.
pub struct Ingest {
    pub router: axum::Router,
    pub intake: Arc<Intake>,
    /// The intake listeners' TLS, for the HTTP listener too (`None`: plaintext).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// The live token set (swapped when the token file changes), for the read endpoints too.
    pub tokens: Arc<TokenStore>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Start everything ingest needs. Errors are startup errors (bad flags, unreadable token file).
pub fn start(
    args: IngestArgs,
    client: Client,
    config: Arc<SharedConfig>,
    reporter: Arc<Reporter>,
    watch_namespace: Option<String>,
    shutdown: CancellationToken,
) -> crate::Result<Ingest> {
    let startup = |message: String| crate::Error::Config { path: "antibody run".into(), message };
    let plan_namespace = args.plan_namespace.clone().or(watch_namespace);
    if let Some(ns) = &plan_namespace {
        crate::validate::dns1123_label(ns).map_err(|e| startup(format!("--plan-namespace: {e}")))?;
    }
    let tokens = match &args.token_file {
        // A Secret mounted as an optional volume: until it exists, refuse (401) and keep
        // looking; the reload watch swaps the tokens in when the file appears.
        Some(path) if !path.exists() => {
            warn!(path = %path.display(), "token file does not exist (yet): alert intake refuses every request until it appears");
            Tokens::default()
        }
        Some(path) => Tokens::load(path).map_err(|e| startup(e.to_string()))?,
        None => {
            warn!("no --token-file: REST and gRPC alert intake refuse every request (401)");
            Tokens::default()
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::ServerTls::load(cert, key).map_err(|e| startup(format!("--tls-cert/--tls-key: {e}")))?)
        }
        (None, None) => None,
        _ => return Err(startup("--tls-cert and --tls-key go together".into())),
    };
    let tokens = Arc::new(TokenStore::new(tokens));
    // Approve/deny shares the listener and the token file (scope `approve`).
    let approvals = crate::approval::router(client.clone(), tokens.clone(), config.clone());
    let intake = Arc::new(Intake::new(client, config.clone(), reporter.clone(), plan_namespace));
    let mut tasks = Vec::new();

    if let Some(url) = &args.nexus_grpc {
        let endpoint =
            grpc::endpoint(url, args.nexus_ca.as_deref()).map_err(|e| startup(format!("--nexus-grpc: {e}")))?;
        tasks.push(tokio::spawn(grpc::subscribe(endpoint, intake.clone(), shutdown.clone())));
    }
    if let Some(url) = &args.nexus_ws {
        let ws_url = ws::websocket_url(url).map_err(|e| startup(format!("--nexus-ws: {e}")))?;
        let tls = match (&args.nexus_ca, ws_url.starts_with("wss://")) {
            (None, _) => None,
            (Some(ca), true) => Some(crate::tls::client_config(ca).map_err(|e| startup(format!("--nexus-ca: {e}")))?),
            (Some(ca), false) => {
                return Err(startup(format!(
                    "--nexus-ca {} is set but --nexus-ws {url:?} is plaintext: use https:// or wss://",
                    ca.display()
                )));
            }
        };
        tasks.push(tokio::spawn(ws::subscribe(url.clone(), intake.clone(), tls, shutdown.clone())));
    }
    if let Some(addr) = args.grpc_addr {
        let (intake, tokens, shutdown) = (intake.clone(), tokens.clone(), shutdown.clone());
        let (limits, tls) = (args.grpc_limits(), tls.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = grpc::serve(addr, intake, tokens, limits, tls, shutdown).await {
                warn!(error = %e, %addr, "gRPC intake server stopped");
            }
        }));
    }
    let router = http::router(intake.clone(), tokens.clone()).merge(approvals);
    Ok(Ingest { router, intake, tls, tokens, tasks })
}
