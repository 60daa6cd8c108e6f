//! `antibody`: the controller and its tools. Thin: parse, compose, shut down on one signal.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use antibody::alert::ThreatAlert;
use antibody::config::{Config, SharedConfig};
use antibody::policy::{self, Decision};
use antibody::reconcile::{self, Context, Settings};
use antibody::report::http::Health;
use antibody::report::{Metrics, Reporter};
use antibody::server;
use antibody::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "antibody",
    version,
    about = "Kubernetes remediation controller: NEXUS ThreatAlerts → PatchPlans → safe, audited actions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: drive every PatchPlan to PatchApplied (or a clear refusal).
    Run {
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        /// Watch PatchPlans in this namespace only (default: all namespaces).
        #[arg(long, env = "ANTIBODY_NAMESPACE")]
        namespace: Option<String>,
        /// Shadow mode: every write is sent with dryRun=All; plans end with reason DryRun.
        #[arg(long, env = "ANTIBODY_DRY_RUN")]
        dry_run: bool,
        /// Reconciles in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: u16,
        /// HTTP listener: REST ingest, /metrics, /livez, /readyz, Socket.IO.
        #[arg(long, env = "ANTIBODY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: std::net::SocketAddr,
        #[arg(long, value_enum, env = "ANTIBODY_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        #[arg(long, env = "ANTIBODY_LOG_LEVEL", default_value = "info,kube=warn")]
        log_level: String,
        /// Alert intake: NEXUS feeds, gRPC intake, REST tokens.
        #[command(flatten)]
        ingest: antibody::ingest::IngestArgs,
    },
    /// Print the PatchPlan CustomResourceDefinition (YAML).
    Crd,
    /// Validate antibody.yml and print a summary; exit 1 with the offending field on error.
    CheckConfig {
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
    },
    /// Read one alert (JSON) on stdin and print the PatchPlan it would create. Offline.
    Plan {
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        /// Namespace of the plan (default: `defaults.plan_namespace`).
        #[arg(long)]
        namespace: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match antibody::plan::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok — {} target(s), {} rule(s); whitelist: restart {:?}, edit_env {:?}, reload_flask {:?}",
                    config.display(),
                    c.targets.len(),
                    c.rules.len(),
                    c.actions.restart,
                    c.actions.edit_env,
                    c.actions.reload_flask
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::Plan { config, namespace } => plan_offline(&config, namespace),
        Command::Run {
            config: config_path,
            namespace,
            dry_run,
            concurrency,
            http_addr,
            log_format,
            log_level,
            ingest,
        } => {
            telemetry::init(log_format, &log_level);
            let config = match Config::load(&config_path) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            let settings = Settings { dry_run, namespace, concurrency };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(run(config, settings, http_addr, ingest, config_path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

async fn run(
    config: Config,
    settings: Settings,
    http_addr: std::net::SocketAddr,
    ingest: antibody::ingest::IngestArgs,
    config_path: PathBuf,
) -> antibody::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested");
            shutdown.cancel();
        }
    });
    let client = kube::Client::try_default().await?;
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| format!("antibody-{}", std::process::id()));
    let metrics = Arc::new(Metrics::new());
    let reporter = Arc::new(Reporter::new(client.clone(), instance, metrics.clone()));
    let config = Arc::new(SharedConfig::new(config));
    let health = Arc::new(Health::default());
    health.config_loaded.store(true, std::sync::atomic::Ordering::Relaxed);

    // Ingest: feeds, gRPC intake, config hot reload; its REST routes share the HTTP listener.
    let ingest = antibody::ingest::start(
        ingest,
        &config_path,
        client.clone(),
        config.clone(),
        reporter.clone(),
        settings.namespace.clone(),
        shutdown.clone(),
    )?;
    let router = antibody::report::http::router(health.clone(), metrics.clone()).merge(ingest.router);
    let http = tokio::spawn(server::serve(http_addr, router, shutdown.clone()));

    let ctx = Arc::new(Context::new(client, config, settings, reporter));
    let result = reconcile::run(ctx, health, shutdown.clone()).await;
    shutdown.cancel();
    match http.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "http server"),
        Err(e) => tracing::warn!(error = %e, "http task"),
        Ok(Ok(())) => {}
    }
    for task in ingest.tasks {
        let _ = task.await;
    }
    result
}

/// SIGTERM or Ctrl-C: stop taking new work, let reconciles in flight finish.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                ctrl_c.await.ok();
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}

fn plan_offline(config: &std::path::Path, namespace: Option<String>) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().take(antibody::alert::MAX_ALERT_BYTES as u64 + 1).read_to_string(&mut input) {
        return fail(&format!("cannot read stdin: {e}"));
    }
    let alert = match ThreatAlert::from_json(input.trim()) {
        Ok(a) => a,
        Err(e) => return fail(&format!("refused: {e}")),
    };
    let namespace = namespace.unwrap_or_else(|| config.defaults.plan_namespace.clone());
    match policy::decide(&config, &alert, &namespace) {
        Decision::Plan { rule, name, spec } => {
            match serde_yaml::to_string(&policy::plan_object(&name, &namespace, &rule, spec)) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Decision::Ignore { rule } => {
            println!("# alert {}: no action ({rule})", alert.id);
            ExitCode::SUCCESS
        }
        Decision::Refuse(refusal) => fail(&format!("refused ({}): {}", refusal.reason, refusal.message)),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("antibody: {message}");
    ExitCode::FAILURE
}
