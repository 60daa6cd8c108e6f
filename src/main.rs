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
use antibody::report::audit::{AuditLog, AuditSettings};
use antibody::report::broadcast::Broadcast;
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
        /// Run as one of several replicas: only the holder of the Lease reconciles.
        #[arg(long, env = "ANTIBODY_LEADER_ELECT")]
        leader_elect: bool,
        #[arg(long, env = "ANTIBODY_LEASE_NAME", default_value = "antibody-leader")]
        lease_name: String,
        /// Namespace of the Lease (default: POD_NAMESPACE, then --namespace, then `default`).
        #[arg(long, env = "ANTIBODY_LEASE_NAMESPACE")]
        lease_namespace: Option<String>,
        #[arg(long, default_value_t = 15)]
        lease_duration_seconds: u64,
        #[arg(long, default_value_t = 5)]
        lease_grace_seconds: u64,
        /// HTTP listener: REST ingest, /metrics, /livez, /readyz, Socket.IO.
        #[arg(long, env = "ANTIBODY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: std::net::SocketAddr,
        #[arg(long, value_enum, env = "ANTIBODY_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        #[arg(long, env = "ANTIBODY_LOG_LEVEL", default_value = "info,kube=warn")]
        log_level: String,
        /// Audit log directory (default: `log_path` from antibody.yml).
        #[arg(long, env = "ANTIBODY_AUDIT_DIR")]
        audit_dir: Option<PathBuf>,
        /// Alert intake: NEXUS feeds, gRPC intake, REST tokens.
        #[command(flatten)]
        ingest: Box<antibody::ingest::IngestArgs>,
    },
    /// The hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the PatchPlan CustomResourceDefinition (YAML).
    Crd,
    /// Validate antibody.yml and print a summary; exit 1 with the offending field on error.
    /// With `notify.socketio_message_queue` set, also connects to that Redis and sends PING
    /// (2 s timeout) unless --offline; webhook secret files must be readable.
    CheckConfig {
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        /// Validate only: do not connect to the notify Redis.
        #[arg(long)]
        offline: bool,
    },
    /// Create an ed25519 key pair: writes KEY_FILE (private, mode 0600), prints the public key.
    Keygen {
        /// Where to write the private key.
        #[arg(long, default_value = "antibody-signing.key")]
        out: PathBuf,
    },
    /// Sign a PatchPlan YAML file; prints the signed plan (annotation antibody.vael.io/signature).
    Sign {
        plan: PathBuf,
        /// Private key file from `antibody keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The name antibody.yml knows the public key by (safety.trusted_keys).
        #[arg(long, default_value = "ci")]
        key_name: String,
        /// Namespace the plan will live in, if the file does not say (signatures bind it).
        #[arg(long)]
        namespace: Option<String>,
        /// Seconds the signature stays valid (a plan applied later is refused; at most
        /// `safety.signature_max_ttl_seconds`).
        #[arg(long, default_value_t = antibody::signing::DEFAULT_TTL_SECONDS)]
        ttl_seconds: u64,
    },
    /// List the ConfigMap backups of a logical target (newest last). Needs the cluster.
    Backups {
        target: String,
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        /// Namespace for targets without one in antibody.yml.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Print a plan that restores BACKUP into TARGET's ConfigMap and restarts (or reloads) it.
    Rollback {
        target: String,
        backup: String,
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        #[arg(long, default_value = "default")]
        namespace: String,
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain: print OK and the record count, or the first broken record and exit 1.
    Verify {
        /// Audit files or a log directory; `audit.jsonl[.N]` files are put in rotation order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Fail unless the chain starts at the genesis record (no earlier file was rotated away).
        #[arg(long)]
        require_genesis: bool,
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
        Command::CheckConfig { config, offline } => match Config::load(&config) {
            Ok(c) => {
                let notify = match check_notify(&c, !offline) {
                    Ok(line) => line,
                    Err(e) => return fail(&format!("config {}: {e}", config.display())),
                };
                println!(
                    "{}: ok — {} target(s), {} rule(s); whitelist: restart {:?}, edit_env {:?}, reload_flask {:?}",
                    config.display(),
                    c.targets.len(),
                    c.rules.len(),
                    c.actions.restart,
                    c.actions.edit_env,
                    c.actions.reload_flask
                );
                println!("{notify}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::Plan { config, namespace } => plan_offline(&config, namespace),
        Command::Keygen { out } => match antibody::cli::keygen(&out) {
            Ok(public) => {
                println!("wrote private key {} (keep it secret)", out.display());
                println!("public key for antibody.yml safety.trusted_keys: {public}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Sign { plan, key, key_name, namespace, ttl_seconds } => {
            match antibody::cli::sign_file(&plan, &key, &key_name, namespace.as_deref(), ttl_seconds) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Rollback { target, backup, config, namespace } => {
            match antibody::cli::rollback_plan(&config, &target, &backup, &namespace) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Backups { target, config, namespace } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(antibody::cli::list_backups(&config, &target, &namespace)) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Audit { command: AuditCommand::Verify { files, require_genesis } } => {
            match antibody::report::audit::verify_paths(&files, require_genesis) {
                Ok(verification) => {
                    print!("{}", verification.report());
                    if verification.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => fail(&format!("cannot read the audit log: {e}")),
            }
        }
        Command::Run {
            config: config_path,
            namespace,
            dry_run,
            concurrency,
            http_addr,
            log_format,
            log_level,
            ingest,
            leader_elect,
            lease_name,
            lease_namespace,
            lease_duration_seconds,
            lease_grace_seconds,
            audit_dir,
        } => {
            telemetry::init(log_format, &log_level);
            let mut config = match Config::load(&config_path) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            if let Some(dir) = audit_dir {
                config.log_path = dir.display().to_string();
            }
            let instance = std::env::var("POD_NAME").unwrap_or_else(|_| format!("antibody-{}", std::process::id()));
            let lease = leader_elect.then(|| antibody::leader::LeaseSettings {
                name: lease_name,
                namespace: lease_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .or_else(|| namespace.clone())
                    .unwrap_or_else(|| "default".into()),
                identity: instance.clone(),
                duration_seconds: lease_duration_seconds,
                grace_seconds: lease_grace_seconds,
            });
            if let Some(Err(e)) = lease.as_ref().map(|l| l.validate()) {
                return fail(&e);
            }
            let settings = Settings { dry_run, namespace, concurrency };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(run(config, settings, http_addr, instance, lease, ingest, config_path)) {
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
    instance: String,
    lease: Option<antibody::leader::LeaseSettings>,
    ingest: Box<antibody::ingest::IngestArgs>,
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
    let mut kube_config = kube::Config::infer().await.map_err(|e| antibody::Error::Config {
        path: "kubeconfig".into(),
        message: format!("cannot find cluster credentials: {e}"),
    })?;
    // The reconciler has its own per-plan backoff; a 429 from an eviction means a
    // PodDisruptionBudget said no, which must reach the plan instead of being retried for minutes.
    kube_config.default_retry = false;
    let client = kube::Client::try_from(kube_config)?;
    let metrics = Arc::new(Metrics::new());
    // Attribution to a token or alert is proven by Antibody's own signature only.
    let own_key =
        config.safety.signing_key_file.as_ref().map(|path| antibody::signing::read_private_key(path.as_ref()));
    match own_key {
        Some(Ok(key)) => antibody::report::summary::trust_own_key(Some(key.verifying_key())),
        Some(Err(e)) => tracing::warn!(error = %e, "safety.signing_key_file: plan attribution will say unknown"),
        None => {}
    }
    let notifier = antibody::report::notify::Notifier::start(&config.notify, client.clone(), &instance, &metrics)?;
    let reporter = Arc::new(Reporter::new(client.clone(), instance, metrics.clone()));
    if let Some(notifier) = notifier {
        reporter.add_hook(Arc::new(notifier));
    }
    // Reporting hooks: the audit log (hash-chained JSONL) and the Socket.IO broadcast.
    let audit = Arc::new(AuditLog::open(&AuditSettings::from_config(&config))?);
    reporter.add_hook(audit.clone());
    let (broadcast, socket_io) = Broadcast::new();
    reporter.add_hook(broadcast.clone());
    tokio::spawn({
        let broadcast = broadcast.clone();
        let plans = match &settings.namespace {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        };
        async move { broadcast.seed(plans).await }
    });
    let config = Arc::new(SharedConfig::new(config));
    let health = Arc::new(Health::default());
    health.config_loaded.store(true, std::sync::atomic::Ordering::Relaxed);

    // Ingest: feeds, gRPC intake, config hot reload; its REST routes share the HTTP listener.
    let ingest = antibody::ingest::start(
        *ingest,
        &config_path,
        client.clone(),
        config.clone(),
        reporter.clone(),
        settings.namespace.clone(),
        shutdown.clone(),
    )?;
    let router = antibody::report::http::router(health.clone(), metrics.clone())
        .merge(broadcast.router())
        .merge(ingest.router)
        .layer(socket_io);
    let http = tokio::spawn(server::serve(http_addr, router, shutdown.clone()));

    let ctx = Arc::new(Context::new(client.clone(), config, settings, reporter.clone()));
    let result = match &lease {
        Some(lease) => {
            health.standby.store(true, std::sync::atomic::Ordering::Relaxed);
            let acquired = antibody::leader::acquire(client, lease, shutdown.clone()).await;
            health.standby.store(false, std::sync::atomic::Ordering::Relaxed);
            match acquired {
                // The lease is given up only once the controller stopped acting.
                Ok(Some(leadership)) => {
                    let result = reconcile::run(ctx, health, shutdown.clone()).await;
                    leadership.release().await;
                    result
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        }
        None => reconcile::run(ctx, health, shutdown.clone()).await,
    };
    shutdown.cancel();
    // Every transition reported so far is on disk before we exit.
    audit.close();
    reporter.flush_events(std::time::Duration::from_secs(5)).await;
    broadcast.close().await;
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

/// check-config's notify part: secret files readable, Redis answers PING when `connect`.
fn check_notify(config: &Config, connect: bool) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let timeout = std::time::Duration::from_secs(2);
    runtime.block_on(antibody::report::notify::preflight(&config.notify, connect, timeout)).map_err(|e| e.to_string())
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
