//! `antibody`: the controller and its tools. Thin: parse, compose, shut down on one signal.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use antibody::alert::ThreatAlert;
use antibody::approval::Verdict;
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
        /// /metrics: `open` (for an in-cluster scraper the NetworkPolicy lets in) or `token` (a
        /// bearer token with scope `read`).
        #[arg(long, value_enum, env = "ANTIBODY_METRICS_AUTH", default_value = "open")]
        metrics_auth: antibody::report::http::MetricsAccess,
        #[arg(long, value_enum, env = "ANTIBODY_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        #[arg(long, env = "ANTIBODY_LOG_LEVEL", default_value = "info,kube=warn")]
        log_level: String,
        /// Audit log directory (default: `log_path` from antibody.yml).
        #[arg(long, env = "ANTIBODY_AUDIT_DIR")]
        audit_dir: Option<PathBuf>,
        /// This log's name in audit anchors (a StatefulSet's pod name is stable with its volume).
        /// Default: the `log-id` file beside the log, created once.
        #[arg(long, env = "ANTIBODY_AUDIT_LOG_ID")]
        audit_log_id: Option<String>,
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
    /// Print least-privilege RBAC for antibody.yml: a Role per namespace its targets and plans
    /// live in, cluster scope only for namespace metadata (the pause switch).
    Rbac {
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        /// Antibody's own namespace (ServiceAccount, Leases).
        #[arg(long, default_value = "antibody")]
        namespace: String,
        /// ServiceAccount name, also the name of every Role and binding.
        #[arg(long, default_value = "antibody")]
        service_account: String,
        /// Namespaces holding PatchPlans (repeatable; default: `safety.plan_namespaces`, else
        /// `defaults.plan_namespace`).
        #[arg(long)]
        plan_namespace: Vec<String>,
    },
    /// Replay past alerts under an antibody.yml, offline: what each would become now, against
    /// what happened (audit log records) or what `--baseline` decides. Exit 1 when an
    /// expectation fails (or, with --fail-on-change, when any outcome changed); 2 on bad input.
    Replay {
        /// The rules to replay under.
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        /// The rules the alerts were decided under, for input lines that are bare alerts.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// YAML `expectations:` list pinning outcomes (see README "Operator control").
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Namespace plans are named for (default: `defaults.plan_namespace`).
        #[arg(long)]
        namespace: Option<String>,
        /// Print JSON instead of the text report.
        #[arg(long)]
        json: bool,
        /// Exit 1 when any alert's outcome changed.
        #[arg(long)]
        fail_on_change: bool,
        /// JSON-lines files: alerts and/or audit log files, oldest first (`-` for stdin).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Read one alert (JSON) on stdin and print the PatchPlan it would create, with how each
    /// action's effect will be observed. Offline unless --preflight.
    Plan {
        #[arg(long, env = "ANTIBODY_CONFIG", default_value = "antibody.yml")]
        config: PathBuf,
        /// Namespace of the plan (default: `defaults.plan_namespace`).
        #[arg(long)]
        namespace: Option<String>,
        /// Also read each restart target's Deployment (KUBECONFIG) and say what the rollout
        /// will do to live connections.
        #[arg(long)]
        preflight: bool,
    },
    /// Approve a plan waiting with AwaitingApproval (bound to its spec digest; your kubeconfig's
    /// identity is recorded).
    Approve {
        name: String,
        #[arg(long, short = 'n', default_value = "antibody")]
        namespace: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// The spec digest you reviewed (from the plan's message); refused if the plan's differs.
        #[arg(long)]
        digest: Option<String>,
        /// The approval is void if the plan has not started by then.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
    },
    /// Deny a plan waiting for approval: it ends `Denied`.
    Deny {
        name: String,
        #[arg(long, short = 'n', default_value = "antibody")]
        namespace: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        digest: Option<String>,
    },
    /// Freeze a namespace: plans acting in it wait (`Frozen`) until the freeze expires.
    Freeze {
        namespace: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        for_seconds: u64,
    },
    /// Lift a namespace's freeze.
    Unfreeze { namespace: String },
    /// Per-target breakers (consecutive failures, exhausted escalation ladders).
    Breaker {
        #[command(subcommand)]
        command: BreakerCommand,
    },
}

#[derive(Subcommand)]
enum BreakerCommand {
    /// Every target's breaker in the plan namespace: failures in a row, open since, why.
    Status {
        #[arg(long, short = 'n', default_value = "antibody")]
        namespace: String,
    },
    /// Close a target's breaker: its waiting plans go on (your kubeconfig identity is printed).
    Reset {
        target: String,
        #[arg(long, short = 'n', default_value = "antibody")]
        namespace: String,
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
        /// The audit key (`audit.key_file`): every record's `prev_mac` must match it.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Check against the anchor in this namespace's ConfigMap `antibody-audit-anchor` (the
        /// plan namespace): fails when the log was truncated or its anchored record changed.
        #[arg(long, conflicts_with = "anchor_file")]
        anchor: Option<String>,
        /// Check against an anchor saved as JSON (one entry of that ConfigMap), offline.
        #[arg(long)]
        anchor_file: Option<PathBuf>,
        /// Which log's anchor (default: the `log-id` file in the log directory, else the only one).
        #[arg(long)]
        log_id: Option<String>,
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
                print!("{}", antibody::cli::check_config_report(&config, &c));
                println!("{notify}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::Plan { config, namespace, preflight } => plan_offline(&config, namespace, preflight),
        Command::Replay { config, baseline, expect, namespace, json, fail_on_change, inputs } => {
            let args = antibody::cli::ReplayArgs {
                config: &config,
                baseline: baseline.as_deref(),
                expect: expect.as_deref(),
                namespace: namespace.as_deref(),
                inputs: &inputs,
                json,
                fail_on_change,
            };
            match antibody::cli::replay(&args) {
                Ok((report, passed)) => {
                    print!("{report}");
                    if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("antibody: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Rbac { config, namespace, service_account, plan_namespace } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            let plan_namespaces = match (plan_namespace.is_empty(), config.safety.plan_namespaces.is_empty()) {
                (false, _) => plan_namespace,
                (true, false) => config.safety.plan_namespaces.clone(),
                (true, true) => vec![config.defaults.plan_namespace.clone()],
            };
            let settings = antibody::rbac::RbacSettings { namespace, name: service_account, plan_namespaces };
            match antibody::rbac::render(&config, &settings) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
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
        Command::Approve { name, namespace, reason, digest, ttl_seconds } => {
            operator(antibody::operator_cli::decide(&namespace, &name, Verdict::Approved, reason, digest, ttl_seconds))
        }
        Command::Deny { name, namespace, reason, digest } => {
            operator(antibody::operator_cli::decide(&namespace, &name, Verdict::Denied, reason, digest, 1))
        }
        Command::Freeze { namespace, reason, for_seconds } => {
            operator(antibody::operator_cli::freeze(&namespace, &reason, for_seconds))
        }
        Command::Unfreeze { namespace } => operator(antibody::operator_cli::unfreeze(&namespace)),
        Command::Breaker { command: BreakerCommand::Status { namespace } } => {
            operator(antibody::operator_cli::breaker_status(&namespace))
        }
        Command::Breaker { command: BreakerCommand::Reset { target, namespace } } => {
            operator(antibody::operator_cli::breaker_reset(&namespace, &target))
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
        Command::Audit {
            command: AuditCommand::Verify { files, require_genesis, key_file, anchor, anchor_file, log_id },
        } => {
            let request = antibody::cli::AuditVerify { files, require_genesis, key_file, anchor, anchor_file, log_id };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(antibody::cli::verify_audit(&request)) {
                Ok(verification) => {
                    print!("{}", verification.report());
                    if verification.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run {
            config: config_path,
            namespace,
            dry_run,
            concurrency,
            http_addr,
            metrics_auth,
            log_format,
            log_level,
            ingest,
            leader_elect,
            lease_name,
            lease_namespace,
            lease_duration_seconds,
            lease_grace_seconds,
            audit_dir,
            audit_log_id,
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
                return fail(&e.to_string());
            }
            let settings = Settings { dry_run, namespace, concurrency };
            let mut audit = match AuditSettings::from_config(&config) {
                Ok(audit) => audit,
                Err(e) => return fail(&format!("audit.key_file: {e}")),
            };
            audit.log_id = audit_log_id;
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(run(
                config,
                settings,
                audit,
                (http_addr, metrics_auth),
                instance,
                lease,
                ingest,
                config_path,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    config: Config,
    settings: Settings,
    audit_settings: AuditSettings,
    (http_addr, metrics_auth): (std::net::SocketAddr, antibody::report::http::MetricsAccess),
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
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|e| antibody::Error::Cluster(format!("cannot find cluster credentials (kubeconfig): {e}")))?;
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
    let audit = Arc::new(AuditLog::open(&audit_settings)?);
    reporter.set_audit(audit.clone());
    // Its head is pinned in the plan namespace, outside the log's volume.
    // The plan namespace, as the intake chooses it: --plan-namespace, --namespace, antibody.yml.
    let anchor_namespace = ingest
        .plan_namespace
        .clone()
        .or_else(|| settings.namespace.clone())
        .unwrap_or_else(|| config.defaults.plan_namespace.clone());
    let anchors = (config.audit.anchor_seconds > 0).then(|| {
        tokio::spawn(antibody::report::audit_anchor::run(
            audit.clone(),
            client.clone(),
            anchor_namespace.clone(),
            std::time::Duration::from_secs(config.audit.anchor_seconds),
            audit_settings.key.clone(),
            shutdown.clone(),
        ))
    });
    // The original's plain-text plan log (`log_path: logs/antibody.log` or `plan_log`).
    if let Some(path) = &config.plan_log {
        reporter.add_hook(Arc::new(antibody::report::plan_log::PlanLog::open(std::path::Path::new(path))?));
    }
    let config = Arc::new(SharedConfig::new(config));
    let health = Arc::new(Health::default());
    health.config_loaded.store(true, std::sync::atomic::Ordering::Relaxed);

    // Ingest: feeds and the gRPC intake; its REST routes share the HTTP listener.
    let token_file = ingest.token_file.clone();
    let ingest = antibody::ingest::start(
        *ingest,
        client.clone(),
        config.clone(),
        reporter.clone(),
        settings.namespace.clone(),
        shutdown.clone(),
    )?;
    // Hot reload of antibody.yml and the token file, for the whole process.
    tokio::spawn(antibody::config_watch::watch(
        config_path.clone(),
        config.clone(),
        token_file.map(|path| (path, ingest.tokens.clone())),
        metrics.clone(),
        antibody::config_watch::POLL_INTERVAL,
        shutdown.clone(),
    ));
    // The UI broadcast follows plan status with its own watch, on every replica (leader or not);
    // its readers are checked against the live token set ingest keeps.
    let (broadcast, socket_io) = Broadcast::new(ingest.tokens.clone());
    let plans = match &settings.namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    tokio::spawn(broadcast.clone().follow(plans, shutdown.clone()));
    let router = antibody::report::http::router(health.clone(), metrics.clone(), metrics_auth, ingest.tokens.clone())
        .merge(broadcast.router())
        .merge(ingest.router)
        .layer(socket_io);
    let http = tokio::spawn(server::serve(http_addr, router, ingest.tls.clone(), shutdown.clone()));

    let ctx = Arc::new(Context::new(client.clone(), config, settings, reporter.clone()));
    let result = match &lease {
        Some(lease) => {
            health.standby.store(true, std::sync::atomic::Ordering::Relaxed);
            let acquired = antibody::leader::acquire(client.clone(), lease, shutdown.clone()).await;
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
    // Every transition reported so far is on disk before we exit; then its head is anchored.
    audit.close();
    if let Some(anchors) = anchors
        && let Ok(last) = anchors.await
    {
        let key = audit_settings.key.as_deref();
        let anchoring =
            antibody::report::audit_anchor::anchor_once(&audit, &client, &anchor_namespace, key, last.as_ref());
        match tokio::time::timeout(std::time::Duration::from_secs(3), anchoring).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "final audit anchor not written"),
            Err(_) => tracing::warn!("final audit anchor: the API did not answer within 3 s"),
            Ok(Ok(_)) => {}
        }
    }
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

fn plan_offline(config: &std::path::Path, namespace: Option<String>, preflight: bool) -> ExitCode {
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
            // YAML comments: the output stays something `kubectl apply -f -` takes.
            for line in plan_notes(&config, &spec, &namespace, preflight) {
                println!("# {line}");
            }
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

/// How each action's effect will be observed, and (with `preflight`) what each restart will do
/// to live connections, read from the cluster.
fn plan_notes(config: &Config, spec: &antibody::plan::PatchPlanSpec, namespace: &str, preflight: bool) -> Vec<String> {
    use antibody::observation::{Observation, observation};
    let targets: Vec<_> = spec.actions.iter().filter_map(|a| config.resolve(&a.target, namespace).ok()).collect();
    if targets.len() != spec.actions.len() {
        return vec!["a target does not resolve: the controller will refuse this plan".into()];
    }
    let mut notes: Vec<String> = spec
        .actions
        .iter()
        .enumerate()
        .map(|(i, action)| {
            let how = match observation(&spec.actions, &targets, i) {
                Observation::Itself => "observed by the action itself".to_string(),
                Observation::Probe => {
                    format!("observed by the verify probe {:?}", targets[i].verify.as_ref().map(|v| &v.command))
                }
                Observation::CarriedBy(j) => format!("put into effect and observed by {}", spec.actions[j].describe()),
                Observation::Unobservable => "NOT observed: the plan can end Unverified, not PatchApplied".to_string(),
            };
            format!("{}: {how}", action.describe())
        })
        .collect();
    if preflight {
        notes.extend(restart_preflight(spec, &targets).unwrap_or_else(|e| vec![format!("preflight failed: {e}")]));
    }
    notes
}

fn restart_preflight(
    spec: &antibody::plan::PatchPlanSpec,
    targets: &[antibody::config::ResolvedTarget],
) -> Result<Vec<String>, String> {
    use k8s_openapi::api::apps::v1::Deployment;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| format!("no cluster: {e}"))?;
        let mut notes = Vec::new();
        for (action, target) in spec.actions.iter().zip(targets) {
            if action.action != antibody::plan::ActionType::Restart {
                continue;
            }
            let api: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), &target.namespace);
            let deployment = api
                .get(&target.deployment)
                .await
                .map_err(|e| format!("Deployment {}/{}: {e}", target.namespace, target.deployment))?;
            let risks = antibody::preflight::restart_risks(&deployment);
            if risks.is_empty() {
                notes.push(format!("preflight {}: rolls without dropping connections at once", action.describe()));
            }
            for risk in risks {
                let all = if risk.drops_all { " [drops every connection at once]" } else { "" };
                notes.push(format!("preflight {}: {}{all}", action.describe(), risk.message));
            }
        }
        Ok(notes)
    })
}

/// Run one operator command on a fresh runtime; print its result or fail with its error.
fn operator(command: impl std::future::Future<Output = Result<String, String>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(command) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("antibody: {message}");
    ExitCode::FAILURE
}
