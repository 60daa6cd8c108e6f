//! Shared support for integration tests against the local control plane (tests/cluster/up.sh).
//!
//! Every test gets its own namespace, deleted when the guard drops. Nothing is skipped: if the
//! cluster is not up, the test fails and says how to start it.
#![allow(dead_code)]

pub mod socketio;

/// The repository (this crate lives in `test-support/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The `antibody` binary cargo built for the running test: `ANTIBODY_TEST_BIN`, else next to the
/// test executable's `deps/` directory (`target/<profile>/antibody`).
pub fn antibody_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ANTIBODY_TEST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    profile_dir.join("antibody")
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, CustomResourceExt, Resource};

use antibody::plan::PatchPlan;

/// The kubeconfig `tests/cluster/up.sh` writes (override with ANTIBODY_KUBECONFIG).
pub fn kubeconfig_path() -> PathBuf {
    if let Ok(path) = std::env::var("ANTIBODY_KUBECONFIG") {
        return PathBuf::from(path);
    }
    let dir = std::env::var("CLUSTER_DIR")
        .unwrap_or_else(|_| format!("{}/antibody-cluster", std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into())));
    Path::new(&dir).join("kubeconfig")
}

const HOW_TO_START: &str =
    "start the local control plane first: `tests/cluster/up.sh` (or run everything with `tests/run.sh`)";

/// A client for the local cluster; fails the test with instructions when it is not up.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("no kubeconfig at {} ({e}): {HOW_TO_START}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("bad kubeconfig {}: {e}", path.display()));
    let client = Client::try_from(config).expect("client from kubeconfig");
    if let Err(e) = client.apiserver_version().await {
        panic!("the API server in {} does not answer ({e}): {HOW_TO_START}", path.display());
    }
    client
}

/// A unique name: `<prefix>-<pid>-<counter>-<nanos>` cut to a DNS label.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos);
    name.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

/// A namespace for one test; deleted (in the background of the API server) on drop.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = unique(prefix);
        let ns =
            Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create test namespace");
        // The controller-manager creates the default ServiceAccount; pods need it.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
        await_condition(sa, "default", conditions::is_created()).await.expect("default ServiceAccount");
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var("ANTIBODY_KEEP_NAMESPACES").is_ok() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be shutting down: use a fresh one.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(kubeconfig) = Kubeconfig::read_from(kubeconfig_path()) else {
                    return;
                };
                let Ok(config) = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await
                else {
                    return;
                };
                let Ok(client) = Client::try_from(config) else {
                    return;
                };
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
            });
        })
        .join();
    }
}

/// Install (or update) the PatchPlan CRD from the Rust types and wait until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = PatchPlan::crd();
    let name = crd.metadata.name.clone().expect("crd name");
    crds.patch(&name, &PatchParams::apply("antibody-tests").force(), &Patch::Apply(&crd)).await.expect("apply CRD");
    tokio::time::timeout(Duration::from_secs(30), await_condition(crds, &name, conditions::is_crd_established()))
        .await
        .expect("CRD established in 30s")
        .expect("watch CRD");
}

/// A Deployment of `replicas` pods labelled `app=<name>`, on the kwok node.
pub fn deployment(name: &str, replicas: i32, env_from_config_map: Option<&str>) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    let env_from = env_from_config_map.map(|cm| {
        vec![k8s_openapi::api::core::v1::EnvFromSource {
            config_map_ref: Some(k8s_openapi::api::core::v1::ConfigMapEnvSource {
                name: cm.to_string(),
                optional: None,
            }),
            ..Default::default()
        }]
    });
    Deployment {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("vael/app:test".into()),
                        env_from,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create_deployment(client: &Client, ns: &str, deployment: &Deployment) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), deployment)
        .await
        .expect("create deployment")
}

pub async fn create_config_map(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap")
}

/// Wait (by watch) until `condition` holds for the named object, at most `timeout`.
pub async fn wait_for<K>(api: Api<K>, name: &str, timeout: Duration, condition: impl Condition<K> + Clone) -> K
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, await_condition(api.clone(), name, condition.clone())).await {
            Ok(Ok(Some(object))) => return object,
            Ok(Ok(None)) => panic!("{name} was deleted while waiting"),
            // A watch can expire ("too old resource version"); start a new one.
            Ok(Err(_)) if remaining > Duration::ZERO => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => {
                let last = api.get(name).await.ok().and_then(|o| serde_json::to_value(o).ok());
                let generation = last.as_ref().map(|o| o["metadata"]["generation"].clone());
                let status = last.as_ref().map(|o| o["status"].clone());
                panic!("{name}: condition not met within {timeout:?}; generation {generation:?}, status {status:?}")
            }
        }
    }
}

/// A Deployment rollout is complete exactly as `kubectl rollout status` decides.
pub fn rollout_complete(min_generation: i64) -> impl Condition<Deployment> + Clone {
    move |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            antibody::actions::rollout::rollout_state(d, min_generation)
                == antibody::actions::rollout::RolloutState::Complete
        })
    }
}

/// A plan has condition `type_` with `status`.
pub fn plan_condition(type_: &'static str, status: &'static str) -> impl Condition<PatchPlan> + Clone {
    move |p: Option<&PatchPlan>| p.and_then(|p| p.condition(type_)).is_some_and(|c| c.status == status)
}

/// Wait (at most 60 s) until the plan's Ready condition has `reason`.
pub async fn wait_reason(plans: &Api<PatchPlan>, name: &str, reason: &'static str) -> PatchPlan {
    wait_for(plans.clone(), name, Duration::from_secs(60), move |p: Option<&PatchPlan>| {
        p.and_then(|p| p.condition("Ready")).is_some_and(|c| c.reason == reason)
    })
    .await
}

/// The `antibody` CLI with the test cluster's kubeconfig: (success, stdout + stderr).
pub fn antibody_cli(args: &[&str]) -> (bool, String) {
    let out =
        Command::new(antibody_bin()).args(args).env("KUBECONFIG", kubeconfig_path()).output().expect("run antibody");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The pod template's `kubectl.kubernetes.io/restartedAt` (changes with every restart).
pub fn restarted_at(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned())
}

/// A plan reached a terminal phase.
pub fn plan_finished() -> impl Condition<PatchPlan> + Clone {
    |p: Option<&PatchPlan>| p.is_some_and(|p| p.phase().is_terminal())
}

/// The `antibody` controller binary, run as a child process of this test (we own its pid).
pub struct ControllerProcess {
    child: Child,
    pub log: PathBuf,
    /// Where its HTTP listener (REST, /metrics, /readyz) answers.
    pub http_port: u16,
    /// Its own audit log directory (`ANTIBODY_AUDIT_DIR`; `--audit-dir` in `extra` wins).
    pub audit_dir: PathBuf,
}

impl ControllerProcess {
    pub fn start(config_yaml: &str, namespace: &str, extra: &[&str]) -> Self {
        Self::start_as(&unique("antibody"), config_yaml, namespace, extra)
    }

    /// Start with a known identity (`POD_NAME`: the Lease holder name under leader election).
    pub fn start_as(identity: &str, config_yaml: &str, namespace: &str, extra: &[&str]) -> Self {
        Self::spawn(&kubeconfig_path(), identity, config_yaml, namespace, extra)
    }

    /// Start against another cluster (a private control plane a chaos test may break).
    pub fn start_on(kubeconfig: &Path, config_yaml: &str, namespace: &str, extra: &[&str]) -> Self {
        Self::spawn(kubeconfig, &unique("antibody"), config_yaml, namespace, extra)
    }

    fn spawn(kubeconfig: &Path, identity: &str, config_yaml: &str, namespace: &str, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join("antibody-tests");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join(format!("{namespace}.yml"));
        std::fs::write(&config, config_yaml).expect("write test config");
        let log = dir.join(format!("{namespace}-{}.log", unique("controller")));
        let log_file = std::fs::File::create(&log).expect("controller log");
        let http_port = free_port();
        let audit_dir = dir.join(unique(&format!("{namespace}-audit")));
        let child = Command::new(antibody_bin())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--namespace", namespace, "--log-level", "info,antibody=debug,kube=warn"])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("ANTIBODY_AUDIT_DIR", &audit_dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("start the antibody controller");
        Self { child, log, http_port, audit_dir }
    }

    /// Wait until `/readyz` answers 200 (config loaded, watches synced).
    pub async fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while http_get(self.http_port, "/readyz").map(|(code, _)| code) != Some(200) {
            assert!(std::time::Instant::now() < deadline, "controller not ready in 30s:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM our own child and wait (at most 20 s) for its graceful exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        terminate_child(&mut self.child, Duration::from_secs(20))
    }

    /// SIGKILL our own child: a crash, not a shutdown.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Our child's pid (for /proc/PID/status: memory checks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- controller log {} ---\n{}", self.log.display(), self.logs());
        }
    }
}

/// A `verify` probe that always passes. For tests about something other than verification
/// (tests/reload_effect.rs covers that): plans whose effect nothing observes — a bare SIGHUP, a
/// lone env edit — end `PatchApplied` instead of `Unverified`, as a real health probe would
/// make them.
pub fn stand_in_probe() -> antibody::effect::VerifySpec {
    antibody::effect::VerifySpec {
        command: vec!["true".into()],
        expect_output: None,
        timeout_seconds: 10,
        interval_ms: 200,
    }
}

/// [`stand_in_probe`] as antibody.yml flow-mapping entries.
pub const STAND_IN_PROBE_YAML: &str = r#"verify: {command: ["true"], timeout_seconds: 10, interval_ms: 200}"#;

/// A free loopback port (bound then released; tests run few enough processes for this to hold).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A tiny HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// A Flask app under gunicorn, started by this test as uid 65534 (the uid kwok's exec runs as),
/// so a `kill -HUP <its pid>` sent through `pods/exec` reaches it and nothing else.
pub struct Gunicorn {
    child: Child,
    pub pid: u32,
    pub port: u16,
    pub dir: PathBuf,
}

pub fn python_env() -> PathBuf {
    PathBuf::from(std::env::var("ANTIBODY_PYENV").unwrap_or_else(|_| "/opt/antibody-py".into()))
}

impl Gunicorn {
    pub fn start() -> Self {
        let gunicorn = python_env().join("bin/gunicorn");
        assert!(gunicorn.exists(), "{} missing: run tests/peers/setup.sh", gunicorn.display());
        let dir = std::env::temp_dir().join("antibody-tests").join(unique("gunicorn"));
        std::fs::create_dir_all(&dir).expect("gunicorn dir");
        std::fs::write(dir.join("flask_app.py"), include_str!("../../tests/peers/flask_app.py")).expect("app");
        // The unprivileged user must write its pid and log here.
        let _ = Command::new("chmod").args(["0777"]).arg(&dir).status();
        let _ = Command::new("chmod").args(["0755"]).arg(dir.parent().expect("parent")).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&gunicorn)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--workers", "1", "--chdir"])
            .arg(&dir)
            .arg("--pid")
            .arg(dir.join("gunicorn.pid"))
            .arg("--error-logfile")
            .arg(dir.join("gunicorn.log"))
            .arg("flask_app:app")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gunicorn under setpriv");
        let pid = child.id();
        let server = Self { child, pid, port, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while server.worker_pid().is_none() {
            assert!(std::time::Instant::now() < deadline, "gunicorn did not answer: {}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let from_file = std::fs::read_to_string(server.dir.join("gunicorn.pid")).unwrap_or_default();
        assert_eq!(from_file.trim(), pid.to_string(), "the pidfile names the master we started");
        server
    }

    /// The pid of the worker answering HTTP (changes when the master reloads its workers).
    pub fn worker_pid(&self) -> Option<u32> {
        let (_, body) = http_get(self.port, "/pid")?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json.get("pid")?.as_u64().map(|p| p as u32)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gunicorn.log")).unwrap_or_default()
    }

    /// How many SIGHUPs the master handled, from its own log.
    pub fn hup_count(&self) -> usize {
        self.log().matches("Handling signal: hup").count()
    }

    /// Wait until the worker pid differs from `old` (the reload finished).
    pub fn wait_new_worker(&self, old: u32) -> u32 {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = self.worker_pid().filter(|p| *p != old) {
                return pid;
            }
            assert!(std::time::Instant::now() < deadline, "worker {old} was not replaced: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        // SIGTERM to the master we started (our own child), so it stops its workers too.
        stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// SIGTERM a process this test started (by its own pid, never a pattern) and wait at most
/// `grace` for it to exit: its exit status, or `None` if it is still running.
pub fn terminate_child(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// [`terminate_child`], then SIGKILL and reap it if it did not exit within `grace`.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if terminate_child(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The kubectl built with the control plane (matches the server version).
pub fn kubectl() -> Command {
    let root = repo_root();
    let out = Command::new("bash")
        .args(["-c", &format!("source {}/tests/cluster/env.sh && echo \"$CLUSTER_BIN/kubectl\"", root.display())])
        .output()
        .expect("read tests/cluster/env.sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut cmd = Command::new(if Path::new(&path).exists() { path } else { "kubectl".into() });
    cmd.env("KUBECONFIG", kubeconfig_path());
    cmd
}

/// Apply a plan as `kubectl apply --server-side` would.
pub async fn apply_plan(client: &Client, ns: &str, plan: &PatchPlan) -> PatchPlan {
    let mut plan = plan.clone();
    plan.metadata.namespace = Some(ns.to_string());
    let name = plan.metadata.name.clone().expect("plan name");
    Api::<PatchPlan>::namespaced(client.clone(), ns)
        .patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&plan))
        .await
        .expect("apply PatchPlan")
}

/// An HTTP/1.1 request on loopback (`Connection: close`): (status code, body).
pub fn http_request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the controller");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n{auth}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes()));
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// A token file for `--token-file` holding one token named `tests`.
pub fn token_file(token: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.tokens", unique("tokens")));
    std::fs::write(&path, format!("tests:{token}\n")).expect("token file");
    path
}

/// Tokens of each read scope, for [`scoped_token_file`].
pub const INGEST_TOKEN: &str = "ingest-token-0123456789";
pub const READ_TOKEN: &str = "read-token-0123456789ab";
pub const REVEAL_TOKEN: &str = "reveal-token-0123456789";

/// A token file with one token per scope that matters to readers: `bridge` (ingest only),
/// `ui` (read: values redacted) and `oncall` (reveal).
pub fn scoped_token_file() -> PathBuf {
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.tokens", unique("scoped-tokens")));
    let text = format!("bridge:{INGEST_TOKEN}\nui:{READ_TOKEN} scopes=read\noncall:{REVEAL_TOKEN} scopes=reveal\n");
    std::fs::write(&path, text).expect("token file");
    path
}

/// `GET path` with `Authorization: Bearer token`: (status code, body).
pub fn http_get_with_token(port: u16, path: &str, token: &str) -> (u16, String) {
    http_request(port, "GET", path, Some(token), "")
}

/// The value of the metric line starting with `line_prefix` (e.g. `name{labels}`) on /metrics.
pub fn metric(port: u16, line_prefix: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines().find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Wait until the metric reaches at least `min` (at most `timeout`); its value then.
pub async fn wait_metric(port: u16, line_prefix: &str, min: f64, timeout: Duration) -> f64 {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let value = metric(port, line_prefix).unwrap_or(0.0);
        if value >= min || std::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl ControllerProcess {
    /// The config file this controller reads (and re-reads every second: hot reload).
    pub fn config_path(namespace: &str) -> PathBuf {
        std::env::temp_dir().join("antibody-tests").join(format!("{namespace}.yml"))
    }
}
