//! `antibody-bench`: Antibody against the physical limit and a kubectl loop, on the local control
//! plane (`tests/cluster/up.sh`). Prints a table and writes `bench/results.json`.
//!
//! Everything runs in namespaces of its own (`antibody-bench-*`, deleted at the end), against
//! loopback only, bounded in count and time. The controller is the real `antibody run` binary
//! (`target/release/antibody`, or `ANTIBODY_BIN`) started as a child process.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use antibody::ingest::grpc::proto::SubscribeRequest;
use antibody::ingest::grpc::proto::ThreatAlert as WireAlert;
use antibody::ingest::grpc::proto::alert_intake_client::AlertIntakeClient;
use antibody::ingest::grpc::proto::nexus_feed_server::{NexusFeed, NexusFeedServer};
use antibody::plan::{ActionType, PatchPlan, PatchPlanSpec, PatchPlanStatus, PlanAction};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const TOKEN: &str = "bench-token-0123456789abcdef";

/// The cluster's kubectl: `$KUBECTL`, else the one `tests/cluster/env.sh` says the control plane
/// was built with (the same cache path the cluster scripts use, for whoever runs the bench).
fn kubectl_path() -> Result<String> {
    if let Ok(path) = std::env::var("KUBECTL") {
        return Ok(path);
    }
    let env_sh = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/cluster/env.sh");
    let output = std::process::Command::new("bash")
        .args(["-c", &format!("source '{env_sh}' && printf %s \"$CLUSTER_BIN/kubectl\"")])
        .output()?;
    let path = String::from_utf8(output.stdout)?;
    if !output.status.success() || !std::path::Path::new(&path).is_file() {
        return Err(format!("no kubectl at {path:?} (build it with tests/cluster/build.sh or set KUBECTL)").into());
    }
    Ok(path)
}

mod stats {
    //! Pure: percentiles, ratios and the PASS/MISS table.
    use serde::Serialize;

    /// Nearest-rank percentile (p in 0..=100) of samples in milliseconds; `None` when empty.
    pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1])
    }

    #[derive(Debug, Clone, Serialize, PartialEq)]
    pub struct Summary {
        pub n: usize,
        pub p50_ms: f64,
        pub p90_ms: f64,
        pub p99_ms: f64,
        pub max_ms: f64,
    }

    impl Summary {
        pub fn of(samples: &[f64]) -> Option<Self> {
            Some(Self {
                n: samples.len(),
                p50_ms: percentile(samples, 50.0)?,
                p90_ms: percentile(samples, 90.0)?,
                p99_ms: percentile(samples, 99.0)?,
                max_ms: percentile(samples, 100.0)?,
            })
        }
    }

    /// One target line: what was measured against what was promised.
    #[derive(Debug, Clone, Serialize, PartialEq)]
    pub struct Verdict {
        pub target: String,
        pub measured: String,
        pub pass: bool,
    }

    /// `measured <= limit` → PASS; a missing measurement is a MISS, never a pass.
    pub fn at_most(target: &str, measured: Option<f64>, limit: f64, unit: &str) -> Verdict {
        Verdict {
            target: target.into(),
            measured: measured.map_or("not measured".into(), |m| format!("{m:.1} {unit}")),
            pass: measured.is_some_and(|m| m <= limit),
        }
    }

    pub fn at_least(target: &str, measured: Option<f64>, limit: f64, unit: &str) -> Verdict {
        Verdict {
            target: target.into(),
            measured: measured.map_or("not measured".into(), |m| format!("{m:.1} {unit}")),
            pass: measured.is_some_and(|m| m >= limit),
        }
    }

    /// Outcomes of an alert the controller took in and decided on; `refused` and transport
    /// errors (`error: …`) are not handled and never count towards a storm's rate.
    pub fn handled(outcome: &str) -> bool {
        matches!(outcome, "plan_created" | "deduplicated" | "cooled_down" | "ignored")
    }

    /// Alerts handled per second: only the handled outcomes count, so fast failures cannot pass.
    pub fn handled_per_second(outcomes: &std::collections::BTreeMap<String, usize>, seconds: f64) -> Option<f64> {
        let handled: usize = outcomes.iter().filter(|(o, _)| handled(o)).map(|(_, n)| n).sum();
        (seconds > 0.0).then(|| handled as f64 / seconds)
    }

    /// The bench fails (non-zero exit) when the run stopped early or any target missed.
    pub fn all_pass(verdicts: &[Verdict]) -> bool {
        !verdicts.is_empty() && verdicts.iter().all(|v| v.pass)
    }

    pub fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
        match (numerator, denominator) {
            (Some(n), Some(d)) if d > 0.0 => Some(n / d),
            _ => None,
        }
    }

    pub fn row(name: &str, s: &Option<Summary>) -> String {
        match s {
            Some(s) => {
                format!("{name:<34} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1}", s.n, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms)
            }
            None => format!("{name:<34} not measured"),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn percentiles_are_nearest_rank() {
            let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
            let cases = [(50.0, 50.0), (90.0, 90.0), (99.0, 99.0), (100.0, 100.0), (0.0, 1.0), (1.0, 1.0)];
            for (p, want) in cases {
                assert_eq!(percentile(&samples, p), Some(want), "p{p}");
            }
            assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
            assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
            assert_eq!(percentile(&[], 50.0), None);
        }

        #[test]
        fn summary_and_verdicts() {
            let s = Summary::of(&[10.0, 20.0, 30.0, 40.0]).expect("summary");
            assert_eq!((s.n, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms), (4, 20.0, 40.0, 40.0, 40.0));
            assert!(Summary::of(&[]).is_none());
            assert!(at_most("x", Some(100.0), 100.0, "ms").pass);
            assert!(!at_most("x", Some(100.1), 100.0, "ms").pass);
            assert!(!at_most("x", None, 100.0, "ms").pass, "not measured is a miss");
            assert!(at_least("x", Some(20_000.0), 20_000.0, "/s").pass);
            assert!(!at_least("x", None, 1.0, "/s").pass);
            assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
            assert_eq!(ratio(Some(3.0), Some(0.0)), None);
            assert!(row("a", &None).contains("not measured"));
        }

        #[test]
        fn only_handled_alerts_count_and_a_miss_fails_the_run() {
            let outcomes = |pairs: &[(&str, usize)]| pairs.iter().map(|(o, n)| (o.to_string(), *n)).collect();
            type Case = (&'static [(&'static str, usize)], Option<f64>);
            let cases: [Case; 5] = [
                (&[("plan_created", 1), ("cooled_down", 9)], Some(5.0)),
                (&[("error: connection refused", 10)], Some(0.0)),
                (&[("refused", 8), ("cooled_down", 2)], Some(1.0)),
                (&[("deduplicated", 4), ("ignored", 6)], Some(5.0)),
                (&[], Some(0.0)),
            ];
            for (pairs, want) in cases {
                assert_eq!(handled_per_second(&outcomes(pairs), 2.0), want, "{pairs:?}");
            }
            assert_eq!(handled_per_second(&outcomes(&[("cooled_down", 1)]), 0.0), None);
            let pass = Verdict { target: "a".into(), measured: "1".into(), pass: true };
            let miss = Verdict { pass: false, ..pass.clone() };
            assert!(all_pass(std::slice::from_ref(&pass)));
            assert!(!all_pass(&[pass, miss]));
            assert!(!all_pass(&[]), "nothing measured is no pass");
        }
    }
}

use stats::{Summary, Verdict};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU seconds (user + system) process `pid` has used so far (clock ticks of 1/100 s).
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that closes the command name: utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds used so far by the local control plane's kube-apiserver and etcd (from the pid
/// files of `tests/cluster/up.sh`).
fn control_plane_cpu_seconds() -> Option<f64> {
    let dir = std::env::var("CLUSTER_DIR").unwrap_or_else(|_| "/tmp/antibody-cluster".into());
    let mut total = 0.0;
    for component in ["kube-apiserver", "etcd"] {
        let pid: u32 = std::fs::read_to_string(Path::new(&dir).join("pids").join(format!("{component}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        total += process_cpu_seconds(pid)?;
    }
    Some(total)
}

async fn client() -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(sa, "default", kube::runtime::wait::conditions::is_created()),
    )
    .await??;
    Ok(())
}

async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = PatchPlan::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(&name, &PatchParams::apply("antibody-bench").force(), &Patch::Apply(&crd)).await?;
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(crds, &name, kube::runtime::wait::conditions::is_crd_established()),
    )
    .await??;
    Ok(())
}

async fn create_config_map(client: &Client, ns: &str, name: &str) -> Result<()> {
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(BTreeMap::from([("K".to_string(), "v0".to_string())])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns).create(&PostParams::default(), &cm).await?;
    Ok(())
}

async fn create_deployment(client: &Client, ns: &str, name: &str) -> Result<()> {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "vael/app:bench"}]}
            }
        }
    }))?;
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &deployment).await?;
    // Ready pod: kwok marks it Running; reload needs a pod to exec into.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = api.get(name).await?;
        if d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("deployment {name} not ready in 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the controller child process -------------------------------------------------------------
// The cluster, ports and loopback HTTP come from the integration tests' support crate.
use antibody_test_support::{free_port, http_get, kubeconfig_path};

fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(code, _)| code)
}

struct Controller {
    child: Child,
    grpc_port: u16,
    http_port: u16,
    log: PathBuf,
}

fn bench_config(ns: &str, cooldown_seconds: u64, edit_targets: usize) -> String {
    let mut targets = format!(
        "  Bench: {{namespace: {ns}, deployment: bench-app, config_map: bench-env, config_map_mode: file, container: app, reload_command: [\"true\"]}}\n  BenchW: {{namespace: {ns}, deployment: bench-app, config_map: bench-watched, config_map_mode: watched}}\n  BenchR: {{namespace: {ns}, deployment: bench-restart, container: app}}\n"
    );
    let mut edit = vec!["Bench".to_string(), "BenchW".to_string()];
    for i in 0..edit_targets {
        targets.push_str(&format!(
            "  E{i}: {{namespace: {ns}, deployment: bench-app, config_map: bench-cm-{i}, config_map_mode: file, container: app, reload_command: [\"true\"]}}\n"
        ));
        edit.push(format!("E{i}"));
    }
    format!(
        "actions:\n  restart: [BenchR]\n  edit_env: [{}]\n  reload_flask: [Bench]\nseverity_map: {{}}\nlog_path: /tmp/antibody-bench/{ns}-audit\ntargets:\n{targets}rules:\n  - {{name: edit, category: edit, min_severity: info, actions: [edit_env]}}\n  - {{name: editw, category: editw, min_severity: info, actions: [edit_env]}}\n  - {{name: reload, category: reload, min_severity: info, actions: [reload_flask]}}\n  - {{name: restart, category: restart, min_severity: info, actions: [restart]}}\ndefaults: {{rollout_timeout_seconds: 120, plan_namespace: {ns}}}\ningest: {{cooldown_seconds: {cooldown_seconds}}}\n",
        edit.join(", ")
    )
}

impl Controller {
    fn start(bin: &Path, ns: &str, config_yaml: &str, extra: &[String]) -> Result<Self> {
        let dir = PathBuf::from("/tmp/antibody-bench");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join(format!("{ns}.yml"));
        std::fs::write(&config, config_yaml)?;
        let tokens = dir.join(format!("{ns}.tokens"));
        std::fs::write(&tokens, format!("bench:{TOKEN}\n"))?;
        let log = dir.join(format!("{ns}.log"));
        let (http_port, grpc_port) = (free_port(), free_port());
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .args(["--namespace", ns, "--log-level", "warn"])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .arg("--token-file")
            .arg(&tokens)
            .arg("--audit-dir")
            .arg(dir.join(format!("{ns}-audit")))
            .args(extra)
            .env("KUBECONFIG", kubeconfig_path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut controller = Self { child, grpc_port, http_port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_status(http_port, "/readyz") != Some(200) {
            if let Ok(Some(status)) = controller.child.try_wait() {
                return Err(format!("antibody exited ({status}); log {}", controller.log.display()).into());
            }
            if Instant::now() > deadline {
                return Err(format!("antibody not ready in 60 s; log {}", controller.log.display()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(controller)
    }

    /// (VmRSS, VmHWM) in MiB from /proc.
    /// CPU seconds (user + system) the controller process has used so far.
    fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.child.id())
    }

    fn rss_mib(&self) -> Option<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    async fn intake(&self) -> Result<AlertIntakeClient<tonic::transport::Channel>> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.grpc_port))?.connect().await?;
        Ok(AlertIntakeClient::new(channel))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Our own child, by pid: SIGTERM, then reap.
        antibody_test_support::stop_child(&mut self.child, Duration::from_secs(10));
    }
}

async fn submit(
    intake: &mut AlertIntakeClient<tonic::transport::Channel>,
    id: &str,
    category: &str,
    hint: &str,
) -> Result<(String, String)> {
    let mut request = tonic::Request::new(WireAlert {
        id: id.into(),
        source: "bench".into(),
        category: category.into(),
        severity: "high".into(),
        msg: format!("bench alert {id}"),
        patch_hint: Some(hint.into()),
        ts: None,
        json: String::new(),
    });
    request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let reply = intake.submit(request).await?.into_inner();
    Ok((reply.outcome, reply.plan))
}

// ---- watching plans and deployments -----------------------------------------------------------

/// When each plan was first seen with PatchApplied=True (by a watch), and with any terminal phase.
#[derive(Default)]
struct Seen {
    applied: Mutex<HashMap<String, Instant>>,
    finished: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

impl Seen {
    async fn wait_applied(&self, name: &str, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(t) = self.applied.lock().ok()?.get(name) {
                return Some(*t);
            }
            if self.finished.lock().ok()?.contains_key(name) {
                return None;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    async fn wait_count(&self, finished: bool, count: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let map = if finished { &self.finished } else { &self.applied };
            let n = map.lock().map(|m| m.len()).unwrap_or(0);
            if n >= count || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return n;
            }
        }
    }
}

fn watch_plans(client: &Client, ns: &str) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), ns);
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(event) = stream.next().await {
            let Ok(plan) = event else { continue };
            let now = Instant::now();
            let name = plan.name_any();
            if plan.condition(antibody::conditions::PATCH_APPLIED).is_some_and(|c| c.status == "True")
                && let Ok(mut m) = out.applied.lock()
            {
                m.entry(name.clone()).or_insert(now);
            }
            if plan.status.as_ref().is_some_and(|s| s.phase.is_terminal())
                && let Ok(mut m) = out.finished.lock()
            {
                m.entry(name).or_insert(now);
            }
            out.changed.notify_waiters();
        }
    });
    seen
}

/// When each generation of a Deployment was first seen.
fn watch_generations(client: &Client, ns: &str, name: &str) -> Arc<Mutex<HashMap<i64, Instant>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().applied_objects().boxed();
        while let Some(Ok(d)) = stream.next().await {
            let now = Instant::now();
            if let (Some(g), Ok(mut m)) = (d.metadata.generation, out.lock()) {
                m.entry(g).or_insert(now);
            }
        }
    });
    seen
}

// ---- the measurements -------------------------------------------------------------------------

/// The bare round-trips of one editEnv plan: create the plan, patch the ConfigMap, patch status.
/// Bare round-trips issued one after another by a minimal client. `same_work` adds what an
/// editEnv plan also needs: read the ConfigMap and write its backup before the edit.
async fn physical_limit(client: &Client, ns: &str, n: usize, same_work: bool) -> Result<Vec<f64>> {
    let prefix = if same_work { "same" } else { "limit" };
    let target = format!("{prefix}-env");
    create_config_map(client, ns, &target).await?;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        bare_plan(&plans, &cms, &format!("{prefix}-{i}"), &target, same_work).await?;
        samples.push(ms(started.elapsed()));
    }
    Ok(samples)
}

/// One plan's work as bare API calls: create the plan, [read the ConfigMap, create its
/// backup,] patch the ConfigMap, patch the plan's status.
async fn bare_plan(
    plans: &Api<PatchPlan>,
    cms: &Api<ConfigMap>,
    name: &str,
    target: &str,
    same_work: bool,
) -> Result<()> {
    let plan = PatchPlan::new(
        name,
        PatchPlanSpec {
            alert: None,
            actions: vec![PlanAction::edit_env("Bench", "K", name)],
            dry_run: false,
            rollback_on_failure: false,
        },
    );
    plans.create(&PostParams::default(), &plan).await?;
    if same_work {
        let current = cms.get(target).await?;
        let backup = ConfigMap {
            metadata: ObjectMeta { name: Some(format!("{name}-bk")), ..Default::default() },
            data: current.data,
            ..Default::default()
        };
        cms.create(&PostParams::default(), &backup).await?;
    }
    cms.patch(target, &PatchParams::default(), &Patch::Merge(json!({"data": {"K": name}}))).await?;
    let status = PatchPlanStatus { phase: antibody::plan::Phase::Succeeded, ..Default::default() };
    plans.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}

/// The throughput floor for "1,000 plans": the same work as bare calls, `parallel` plans in
/// flight over `targets` ConfigMaps (as the Antibody measurement).
async fn bare_thousand(client: &Client, ns: &str, n: usize, parallel: usize, targets: usize) -> Result<f64> {
    for t in 0..targets {
        create_config_map(client, ns, &format!("bare-cm-{t}")).await?;
    }
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let failures = futures::stream::iter(0..n)
        .map(|i| {
            let (plans, cms) = (plans.clone(), cms.clone());
            async move { bare_plan(&plans, &cms, &format!("bare-{i}"), &format!("bare-cm-{}", i % targets), true).await }
        })
        .buffer_unordered(parallel)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    if failures > 0 {
        return Err(format!("bare 1,000 plans: {failures} failed").into());
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Alerts one at a time; alert sent → PatchApplied=True seen by the watch.
async fn alert_latency(
    controller: &Controller,
    seen: &Seen,
    n: usize,
    category: &str,
    hint: impl Fn(usize) -> String,
    timeout: Duration,
    mut per_sample: impl FnMut(Instant, Instant),
) -> Result<Vec<f64>> {
    let mut intake = controller.intake().await?;
    let mut samples = Vec::with_capacity(n);
    // Distinct alert ids across calls, so no alert is deduplicated into an earlier plan.
    static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = format!("{}-{}", category, std::process::id());
    for i in 0..n {
        let serial = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = Instant::now();
        let (outcome, plan) = submit(&mut intake, &format!("{run}-{serial}"), category, &hint(i)).await?;
        if outcome != "plan_created" {
            return Err(format!("{category} alert {i}: outcome {outcome}, expected plan_created").into());
        }
        match seen.wait_applied(&plan, timeout).await {
            Some(applied) => {
                samples.push(ms(applied.duration_since(sent)));
                per_sample(sent, applied);
            }
            None => return Err(format!("{category} plan {plan} not PatchApplied within {timeout:?}").into()),
        }
    }
    Ok(samples)
}

/// The naive baseline: a bash loop with one `kubectl patch` and one `kubectl exec` per alert.
fn kubectl_loop(ns: &str, n: usize) -> Result<Vec<f64>> {
    let kubectl = kubectl_path()?;
    let script = format!(
        r#"set -e
for i in $(seq 1 {n}); do
  start=$(date +%s%N)
  "$KUBECTL" -n {ns} patch configmap bench-env --type merge -p "{{\"data\":{{\"K\":\"kubectl-$i\"}}}}" >/dev/null
  "$KUBECTL" -n {ns} exec deploy/bench-app -c app -- true
  end=$(date +%s%N)
  echo $(( (end - start) / 1000 ))
done"#
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .env("KUBECTL", kubectl)
        .env("KUBECONFIG", kubeconfig_path())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("kubectl loop failed: {}", output.status).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect())
}

#[derive(Serialize, Default)]
struct Storm {
    alerts: usize,
    concurrency: usize,
    connections: usize,
    seconds: f64,
    /// Handled alerts (not refused, not failed) per second.
    alerts_per_second: f64,
    plans: usize,
    outcomes: BTreeMap<String, usize>,
    /// CPU seconds the controller spent during the storm (the bench's client shares the machine).
    controller_cpu_seconds: Option<f64>,
    /// CPU seconds of this bench process (the gRPC client) during the storm.
    client_cpu_seconds: Option<f64>,
}

/// 10,000 distinct alerts asking for the same remedy, `concurrency` in flight over HTTP/2.
/// `connections` HTTP/2 connections (several producers), `concurrency` calls in flight in all.
async fn storm(
    client: &Client,
    controller: &Controller,
    ns: &str,
    alerts: usize,
    concurrency: usize,
    connections: usize,
) -> Result<Storm> {
    let mut intakes = Vec::new();
    for _ in 0..connections.max(1) {
        intakes.push(controller.intake().await?);
    }
    let run = std::process::id();
    let cpu_before = controller.cpu_seconds();
    let client_cpu_before = process_cpu_seconds(std::process::id());
    let started = Instant::now();
    let outcomes: Vec<String> = futures::stream::iter(0..alerts)
        .map(|i| {
            let mut intake = intakes[i % intakes.len()].clone();
            async move {
                submit(&mut intake, &format!("storm-{run}-{i}"), "reload", "reload_flask:Bench")
                    .await
                    .map(|(o, _)| o)
                    .unwrap_or_else(|e| format!("error: {e}"))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let controller_cpu_seconds = controller.cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
    let client_cpu_seconds =
        process_cpu_seconds(std::process::id()).zip(client_cpu_before).map(|(after, before)| after - before);
    let mut counts = BTreeMap::new();
    for o in outcomes {
        *counts.entry(o).or_insert(0) += 1;
    }
    let plans = Api::<PatchPlan>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items.len();
    Ok(Storm {
        alerts,
        concurrency,
        connections: intakes.len(),
        seconds,
        alerts_per_second: stats::handled_per_second(&counts, seconds).unwrap_or(0.0),
        plans,
        outcomes: counts,
        controller_cpu_seconds,
        client_cpu_seconds,
    })
}

/// A NEXUS stand-in for the feed storm: the first subscriber gets every alert, as fast as the
/// stream takes them.
struct StormFeed {
    alerts: Mutex<Option<Vec<WireAlert>>>,
    subscribed: Mutex<Option<Instant>>,
}

struct StormFeedService(Arc<StormFeed>);

#[tonic::async_trait]
impl NexusFeed for StormFeedService {
    type SubscribeStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = std::result::Result<WireAlert, tonic::Status>> + Send>>;

    async fn subscribe(
        &self,
        _request: tonic::Request<SubscribeRequest>,
    ) -> std::result::Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let alerts = self.0.alerts.lock().ok().and_then(|mut a| a.take()).unwrap_or_default();
        if let Ok(mut at) = self.0.subscribed.lock() {
            at.get_or_insert_with(Instant::now);
        }
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(alerts.into_iter().map(Ok)))))
    }
}

/// `antibody_alerts_total{feed="grpc",outcome=…}` on the controller's /metrics, by outcome.
fn grpc_alert_outcomes(port: u16) -> Option<BTreeMap<String, usize>> {
    let mut outcomes = BTreeMap::new();
    for line in http_get(port, "/metrics")?.1.lines() {
        let Some(labels) = line.strip_prefix("antibody_alerts_total{").filter(|l| l.contains("feed=\"grpc\"")) else {
            continue;
        };
        let outcome = labels.split("outcome=\"").nth(1).and_then(|o| o.split('"').next()).unwrap_or_default();
        let count = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0);
        *outcomes.entry(outcome.to_string()).or_insert(0) += count as usize;
    }
    Some(outcomes)
}

/// The same storm arriving the way NEXUS sends it: one `Subscribe` stream. Timed from the
/// subscription until the controller's metrics count every alert handled.
async fn feed_storm(bin: &Path, client: &Client, ns: &str, alerts: usize) -> Result<Storm> {
    let run = std::process::id();
    let wire: Vec<WireAlert> = (0..alerts)
        .map(|i| WireAlert {
            id: format!("feed-{run}-{i}"),
            source: "bench".into(),
            category: "reload".into(),
            severity: "high".into(),
            msg: format!("bench alert {i}"),
            patch_hint: Some("reload_flask:Bench".into()),
            ts: None,
            json: String::new(),
        })
        .collect();
    let feed = Arc::new(StormFeed { alerts: Mutex::new(Some(wire)), subscribed: Mutex::new(None) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NexusFeedServer::new(StormFeedService(feed.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let extra = ["--nexus-grpc".to_string(), format!("http://127.0.0.1:{port}")];
    let controller = Controller::start(bin, ns, &bench_config(ns, 60, 0), &extra)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every alert decided (handled or refused); only the handled ones count for the rate.
    let outcomes = loop {
        let outcomes = grpc_alert_outcomes(controller.http_port).unwrap_or_default();
        if outcomes.values().sum::<usize>() >= alerts || Instant::now() > deadline {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let handled = outcomes.iter().filter(|(o, _)| stats::handled(o)).map(|(_, n)| n).sum::<usize>();
    let done = Instant::now();
    server.abort();
    let subscribed = feed.subscribed.lock().ok().and_then(|a| *a).ok_or("the controller never subscribed")?;
    if handled < alerts {
        return Err(format!("feed storm: {handled} of {alerts} alerts handled within 60 s: {outcomes:?}").into());
    }
    let seconds = done.duration_since(subscribed).as_secs_f64();
    let plans = Api::<PatchPlan>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items.len();
    Ok(Storm {
        alerts,
        concurrency: 1,
        connections: 1,
        seconds,
        alerts_per_second: stats::handled_per_second(&outcomes, seconds).unwrap_or(0.0),
        plans,
        outcomes,
        controller_cpu_seconds: None,
        client_cpu_seconds: None,
    })
}

fn edit_plan(name: &str, target: &str, value: &str) -> PatchPlan {
    PatchPlan::new(
        name,
        PatchPlanSpec {
            alert: None,
            actions: vec![PlanAction::edit_env(target, "K", value)],
            dry_run: false,
            rollback_on_failure: false,
        },
    )
}

/// Server-side apply of `plans`, `parallel` at a time, until done or `budget` is spent.
async fn apply_plans(client: &Client, ns: &str, plans: Vec<PatchPlan>, parallel: usize, budget: Duration) -> usize {
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + budget;
    futures::stream::iter(plans)
        .map(|plan| {
            let api = api.clone();
            async move {
                if Instant::now() > deadline {
                    return false;
                }
                let name = plan.name_any();
                api.patch(&name, &PatchParams::apply("antibody-bench").force(), &Patch::Apply(&plan)).await.is_ok()
            }
        })
        .buffer_unordered(parallel)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

#[derive(Serialize, Default)]
struct Rss {
    idle_mib: Option<f64>,
    idle_peak_mib: Option<f64>,
    at_1000_mib: Option<f64>,
    at_1000_peak_mib: Option<f64>,
    at_max_plans: usize,
    at_max_mib: Option<f64>,
    at_max_peak_mib: Option<f64>,
}

/// Where the two cores went while 1,000 plans ran.
#[derive(Serialize, Default)]
struct ThousandCpu {
    wall_seconds: f64,
    controller_seconds: Option<f64>,
    apiserver_etcd_seconds: Option<f64>,
}

#[derive(Serialize, Default)]
struct Results {
    date: String,
    machine: BTreeMap<String, String>,
    limit: Option<Summary>,
    limit_same_work: Option<Summary>,
    /// editEnv alone (a `watched` target: no follow-up action).
    edit_env: Option<Summary>,
    /// editEnv + its reloadFlask follow-up (a `file` target).
    edit_env_reload: Option<Summary>,
    reload_flask: Option<Summary>,
    restart_triggered: Option<Summary>,
    restart_complete: Option<Summary>,
    kubectl_edit_env: Option<Summary>,
    ratio_edit_env_p50_over_limit: Option<f64>,
    ratio_edit_env_p99_over_limit: Option<f64>,
    ratio_edit_env_p99_over_same_work: Option<f64>,
    ratio_kubectl_p50_over_edit_env_reload: Option<f64>,
    /// 10,000 alerts as unary AlertIntake calls, 64 in flight over 4 connections.
    storm: Option<Storm>,
    /// The same storm over one NEXUS `Subscribe` stream (how NEXUS delivers alerts).
    feed_storm: Option<Storm>,
    thousand_plans_seconds: Option<f64>,
    /// The same work for 1,000 plans as bare API calls (32 in flight): the throughput floor.
    thousand_plans_bare_seconds: Option<f64>,
    /// When the bench's own 1,000 server-side applies had all returned.
    thousand_plans_created_seconds: Option<f64>,
    thousand_plans_applied: usize,
    thousand_plans_cpu: ThousandCpu,
    rss: Rss,
    verdicts: Vec<Verdict>,
    notes: Vec<String>,
}

fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("cpus".into(), std::thread::available_parallelism().map(|n| n.to_string()).unwrap_or_default());
    if let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo")
        && let Some(model) = cpuinfo.lines().find_map(|l| l.strip_prefix("model name"))
    {
        m.insert("cpu".into(), model.trim_start_matches([' ', '\t', ':']).to_string());
    }
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo")
        && let Some(total) = meminfo.lines().next()
    {
        m.insert("memory".into(), total.split_whitespace().skip(1).collect::<Vec<_>>().join(" "));
    }
    m
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn run(results: &mut Results, namespaces: &mut Vec<String>) -> Result<()> {
    let bin =
        std::env::var("ANTIBODY_BIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("target/release/antibody"));
    if !bin.exists() {
        return Err(format!("{} missing: cargo build --release --bin antibody", bin.display()).into());
    }
    let client = client().await?;
    install_crd(&client).await?;
    let pid = std::process::id();
    let (ns_limit, ns, ns_storm) =
        (format!("antibody-bench-limit-{pid}"), format!("antibody-bench-{pid}"), format!("antibody-bench-storm-{pid}"));
    let ns_feed = format!("antibody-bench-feed-{pid}");
    for name in [&ns_limit, &ns, &ns_storm, &ns_feed] {
        create_namespace(&client, name).await?;
        namespaces.push(name.clone());
    }

    eprintln!("[bench] 1. physical limit (create plan, patch ConfigMap, patch status)");
    let n = env_usize("BENCH_LIMIT_N", 100);
    results.limit = Summary::of(&physical_limit(&client, &ns_limit, n, false).await?);
    eprintln!("[bench]    same work bare (+ get ConfigMap, create backup)");
    results.limit_same_work = Summary::of(&physical_limit(&client, &ns_limit, n, true).await?);
    eprintln!("[bench]    same work bare for 1,000 plans, 32 in flight");
    results.thousand_plans_bare_seconds = Some(bare_thousand(&client, &ns_limit, 1000, 32, 10).await?);

    eprintln!("[bench] setup: deployments, ConfigMaps, controller");
    const EDIT_TARGETS: usize = 10;
    create_config_map(&client, &ns, "bench-env").await?;
    create_config_map(&client, &ns, "bench-watched").await?;
    for i in 0..EDIT_TARGETS {
        create_config_map(&client, &ns, &format!("bench-cm-{i}")).await?;
    }
    create_deployment(&client, &ns, "bench-app").await?;
    create_deployment(&client, &ns, "bench-restart").await?;
    let seen = watch_plans(&client, &ns);
    let generations = watch_generations(&client, &ns, "bench-restart");
    // Extra `antibody run` flags for the main controller (e.g. BENCH_CONTROLLER_ARGS="--concurrency 32").
    let controller_args: Vec<String> =
        std::env::var("BENCH_CONTROLLER_ARGS").unwrap_or_default().split_whitespace().map(String::from).collect();
    let controller = Controller::start(&bin, &ns, &bench_config(&ns, 0, EDIT_TARGETS), &controller_args)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some((rss, hwm)) = controller.rss_mib() {
        results.rss.idle_mib = Some(rss);
        results.rss.idle_peak_mib = Some(hwm);
    }

    eprintln!("[bench] 2. Antibody: editEnv, reloadFlask, restart over gRPC");
    let timeout = Duration::from_secs(30);
    let edit = alert_latency(
        &controller,
        &seen,
        env_usize("BENCH_EDIT_N", 100),
        "editw",
        |i| format!("edit_env:BenchW:K=alert-{i}"),
        timeout,
        |_, _| {},
    )
    .await?;
    results.edit_env = Summary::of(&edit);
    let edit_reload = alert_latency(
        &controller,
        &seen,
        env_usize("BENCH_EDIT_N", 100),
        "edit",
        |i| format!("edit_env:Bench:K=alert-{i}"),
        timeout,
        |_, _| {},
    )
    .await?;
    results.edit_env_reload = Summary::of(&edit_reload);
    let reload = alert_latency(
        &controller,
        &seen,
        env_usize("BENCH_RELOAD_N", 20),
        "reload",
        |_| "reload_flask:Bench".into(),
        timeout,
        |_, _| {},
    )
    .await?;
    results.reload_flask = Summary::of(&reload);
    let mut triggered = Vec::new();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut restart_samples = Vec::new();
    for _ in 0..env_usize("BENCH_RESTART_N", 5) {
        let generation = deployments.get("bench-restart").await?.metadata.generation.unwrap_or(0);
        let mut sent_at = None;
        let one = alert_latency(
            &controller,
            &seen,
            1,
            "restart",
            |_| "restart:BenchR".into(),
            Duration::from_secs(120),
            |s, _| sent_at = Some(s),
        )
        .await?;
        restart_samples.extend(one);
        let bumped = generations.lock().ok().and_then(|m| m.get(&(generation + 1)).copied());
        if let (Some(sent), Some(bumped)) = (sent_at, bumped) {
            triggered.push(ms(bumped.saturating_duration_since(sent)));
        }
    }
    results.restart_triggered = Summary::of(&triggered);
    results.restart_complete = Summary::of(&restart_samples);

    eprintln!("[bench] 3. kubectl loop");
    results.kubectl_edit_env = Summary::of(&kubectl_loop(&ns, env_usize("BENCH_KUBECTL_N", 20))?);

    eprintln!("[bench] storm: 10,000 alerts for one target (second controller, cool-down 60 s)");
    {
        create_deployment(&client, &ns_storm, "bench-app").await?;
        let storm_controller = Controller::start(&bin, &ns_storm, &bench_config(&ns_storm, 60, 0), &[])?;
        results.storm = Some(
            storm(
                &client,
                &storm_controller,
                &ns_storm,
                env_usize("BENCH_STORM_N", 10_000),
                env_usize("BENCH_STORM_C", 64),
                env_usize("BENCH_STORM_CONNECTIONS", 4),
            )
            .await?,
        );
    }
    eprintln!("[bench] storm over the NEXUS feed stream (third controller subscribed to a bench feed)");
    create_deployment(&client, &ns_feed, "bench-app").await?;
    results.feed_storm = Some(feed_storm(&bin, &client, &ns_feed, env_usize("BENCH_STORM_N", 10_000)).await?);

    eprintln!("[bench] 1,000 editEnv PatchPlans (server-side apply, 32 in parallel) → PatchApplied");
    let before = seen.applied.lock().map(|m| m.len()).unwrap_or(0);
    let thousand: Vec<PatchPlan> = (0..1000)
        .map(|i| edit_plan(&format!("thousand-{i}"), &format!("E{}", i % EDIT_TARGETS), &format!("t{i}")))
        .collect();
    let cpu_before = (controller.cpu_seconds(), control_plane_cpu_seconds());
    let started = Instant::now();
    let created = apply_plans(&client, &ns, thousand, 32, Duration::from_secs(60)).await;
    results.thousand_plans_created_seconds = Some(started.elapsed().as_secs_f64());
    let applied = seen.wait_count(false, before + created, Duration::from_secs(90)).await - before;
    results.thousand_plans_applied = applied;
    results.thousand_plans_cpu = ThousandCpu {
        wall_seconds: started.elapsed().as_secs_f64(),
        controller_seconds: controller.cpu_seconds().zip(cpu_before.0).map(|(a, b)| a - b),
        apiserver_etcd_seconds: control_plane_cpu_seconds().zip(cpu_before.1).map(|(a, b)| a - b),
    };
    if applied >= 1000 {
        results.thousand_plans_seconds = Some(started.elapsed().as_secs_f64());
    } else {
        results
            .notes
            .push(format!("only {applied} of 1,000 plans ({created} created) reached PatchApplied in the budget"));
    }
    if let Some((rss, hwm)) = controller.rss_mib() {
        results.rss.at_1000_mib = Some(rss);
        results.rss.at_1000_peak_mib = Some(hwm);
    }

    let target_total = env_usize("BENCH_MAX_PLANS", 10_000);
    let budget = Duration::from_secs(env_usize("BENCH_FILL_SECONDS", 90) as u64);
    eprintln!("[bench] filling up to {target_total} PatchPlans (budget {budget:?})");
    // Plans the controller answers with one status write: restart is not allowed on Bench.
    let existing = Api::<PatchPlan>::namespaced(client.clone(), &ns).list(&ListParams::default()).await?.items.len();
    let fill: Vec<PatchPlan> = (existing..target_total)
        .map(|i| {
            let mut plan = edit_plan(&format!("fill-{i}"), "Bench", "x");
            plan.spec.actions = vec![PlanAction::new(ActionType::Restart, "Bench")];
            plan
        })
        .collect();
    let filled = apply_plans(&client, &ns, fill, 32, budget).await;
    let total = existing + filled;
    let finished_before = seen.finished.lock().map(|m| m.len()).unwrap_or(0);
    let finished = seen.wait_count(true, total, Duration::from_secs(60)).await;
    results.rss.at_max_plans = total;
    if let Some((rss, hwm)) = controller.rss_mib() {
        results.rss.at_max_mib = Some(rss);
        results.rss.at_max_peak_mib = Some(hwm);
    }
    if total < target_total {
        results.notes.push(format!(
            "created {total} of {target_total} PatchPlans within the {budget:?} budget; RSS is measured at {total}"
        ));
    }
    results.notes.push(format!(
        "{finished} of {total} plans terminal at the last RSS reading ({} before the fill)",
        finished_before
    ));
    drop(controller);
    Ok(())
}

fn verdicts(r: &Results) -> Vec<Verdict> {
    let edit_p99 = r.edit_env.as_ref().map(|s| s.p99_ms);
    let limit_p99 = r.limit.as_ref().map(|s| s.p99_ms);
    vec![
        stats::at_most("p99 alert→PatchApplied (editEnv) ≤ 100 ms", edit_p99, 100.0, "ms"),
        stats::at_most("p99 editEnv ≤ 1.5× 3 bare round-trips (p99)", stats::ratio(edit_p99, limit_p99), 1.5, "×"),
        stats::at_least(
            "storm ≥ 20,000 alerts/s (NEXUS feed stream)",
            r.feed_storm.as_ref().map(|s| s.alerts_per_second),
            20_000.0,
            "/s",
        ),
        stats::at_least(
            "storm ≥ 20,000 alerts/s (unary AlertIntake)",
            r.storm.as_ref().map(|s| s.alerts_per_second),
            20_000.0,
            "/s",
        ),
        Verdict {
            target: "storm → exactly 1 plan (both storms)".into(),
            measured: format!(
                "{} / {} plan(s)",
                r.feed_storm.as_ref().map_or("-".into(), |s| s.plans.to_string()),
                r.storm.as_ref().map_or("-".into(), |s| s.plans.to_string())
            ),
            pass: [&r.storm, &r.feed_storm].iter().all(|s| s.as_ref().is_some_and(|s| s.plans == 1)),
        },
        stats::at_most("1,000 plans → PatchApplied ≤ 10 s", r.thousand_plans_seconds, 10.0, "s"),
        stats::at_most("RSS idle ≤ 64 MiB", r.rss.idle_peak_mib, 64.0, "MiB"),
        stats::at_most(
            &format!("RSS peak ≤ 128 MiB at 10,000 plans (measured at {})", r.rss.at_max_plans),
            if r.rss.at_max_plans >= 10_000 { r.rss.at_max_peak_mib } else { None },
            128.0,
            "MiB",
        ),
    ]
}

fn print_table(r: &Results) {
    println!("\n{:<34} {:>5} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "n", "p50", "p90", "p99", "max");
    println!("{}", stats::row("limit: 3 bare API round-trips", &r.limit));
    println!("{}", stats::row("same work bare: 5 round-trips", &r.limit_same_work));
    println!("{}", stats::row("antibody editEnv (watched)", &r.edit_env));
    println!("{}", stats::row("antibody editEnv + reloadFlask", &r.edit_env_reload));
    println!("{}", stats::row("antibody reloadFlask", &r.reload_flask));
    println!("{}", stats::row("antibody restart: triggered", &r.restart_triggered));
    println!("{}", stats::row("antibody restart: PatchApplied", &r.restart_complete));
    println!("{}", stats::row("kubectl loop (patch + exec)", &r.kubectl_edit_env));
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    println!(
        "\nratios: editEnv/limit p50 {} p99 {}; editEnv/same-work bare p99 {}; kubectl/antibody editEnv+reload p50 {}",
        f(r.ratio_edit_env_p50_over_limit),
        f(r.ratio_edit_env_p99_over_limit),
        f(r.ratio_edit_env_p99_over_same_work),
        f(r.ratio_kubectl_p50_over_edit_env_reload)
    );
    if let Some(s) = &r.feed_storm {
        println!(
            "feed storm: {} alerts over one NEXUS Subscribe stream handled in {:.3} s = {:.0} alerts/s, {} plan(s)",
            s.alerts, s.seconds, s.alerts_per_second, s.plans
        );
    }
    if let Some(s) = &r.storm {
        println!(
            "storm: {} unary calls in {:.2} s = {:.0} alerts/s ({} in flight over {} connection(s)), {} plan(s), outcomes {:?}",
            s.alerts, s.seconds, s.alerts_per_second, s.concurrency, s.connections, s.plans, s.outcomes
        );
        if let Some(cpu) = s.controller_cpu_seconds {
            println!(
                "       controller CPU during it: {cpu:.2} s = {:.0} µs per alert ({:.0} alerts per controller CPU-second); bench client CPU {}",
                cpu * 1e6 / s.alerts as f64,
                s.alerts as f64 / cpu.max(1e-9),
                s.client_cpu_seconds.map_or("-".into(), |c| format!("{c:.2} s"))
            );
        }
    }
    println!(
        "1,000 editEnv plans → PatchApplied: {} ({} applied; the bench's applies alone took {})",
        r.thousand_plans_seconds.map_or("-".into(), |s| format!("{s:.2} s")),
        r.thousand_plans_applied,
        r.thousand_plans_created_seconds.map_or("-".into(), |s| format!("{s:.2} s"))
    );
    let c = &r.thousand_plans_cpu;
    let cpu = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} s"));
    println!(
        "       CPU during it ({:.1} s wall): controller {}, kube-apiserver + etcd {}",
        c.wall_seconds,
        cpu(c.controller_seconds),
        cpu(c.apiserver_etcd_seconds)
    );
    println!(
        "1,000 plans' work as bare calls (create, get, backup, patch, status; 32 in flight): {}",
        r.thousand_plans_bare_seconds.map_or("-".into(), |s| format!("{s:.2} s"))
    );
    let m = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    println!(
        "RSS MiB (VmRSS / VmHWM): idle {} / {}; at 1,000 plans {} / {}; at {} plans {} / {}",
        m(r.rss.idle_mib),
        m(r.rss.idle_peak_mib),
        m(r.rss.at_1000_mib),
        m(r.rss.at_1000_peak_mib),
        r.rss.at_max_plans,
        m(r.rss.at_max_mib),
        m(r.rss.at_max_peak_mib)
    );
    println!("\ntargets:");
    for v in &r.verdicts {
        println!("  {} {:<58} {}", if v.pass { "PASS" } else { "MISS" }, v.target, v.measured);
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("antibody-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut results = Results { date: jiff::Timestamp::now().to_string(), machine: machine(), ..Default::default() };
    let mut namespaces = Vec::new();
    let outcome = runtime.block_on(async {
        let outcome = tokio::time::timeout(Duration::from_secs(480), run(&mut results, &mut namespaces)).await;
        if let Ok(client) = client().await {
            for ns in &namespaces {
                let _ = Api::<Namespace>::all(client.clone()).delete(ns, &DeleteParams::background()).await;
            }
        }
        outcome
    });
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the run exceeded its 8 minute bound".into()),
    };
    if let Some(e) = &error {
        results.notes.push(format!("run stopped early: {e}"));
    }
    results.ratio_edit_env_p50_over_limit =
        stats::ratio(results.edit_env.as_ref().map(|s| s.p50_ms), results.limit.as_ref().map(|s| s.p50_ms));
    results.ratio_edit_env_p99_over_limit =
        stats::ratio(results.edit_env.as_ref().map(|s| s.p99_ms), results.limit.as_ref().map(|s| s.p99_ms));
    results.ratio_edit_env_p99_over_same_work =
        stats::ratio(results.edit_env.as_ref().map(|s| s.p99_ms), results.limit_same_work.as_ref().map(|s| s.p99_ms));
    results.ratio_kubectl_p50_over_edit_env_reload = stats::ratio(
        results.kubectl_edit_env.as_ref().map(|s| s.p50_ms),
        results.edit_env_reload.as_ref().map(|s| s.p50_ms),
    );
    results.verdicts = verdicts(&results);
    print_table(&results);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "bench/results.json".into());
    let written = Path::new(&out)
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap_or_default()));
    match written {
        Ok(()) => println!("\nwrote {out}"),
        Err(e) => eprintln!("cannot write {out}: {e}"),
    }
    // A target that missed fails the run as surely as an error: CI and scripts see the status.
    if error.is_none() && stats::all_pass(&results.verdicts) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
