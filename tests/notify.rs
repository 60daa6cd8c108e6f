//! Notify, end to end with real peers: a Debian `redis-server`, the VAEL UI stand-in (a
//! Flask-SocketIO app under gunicorn on that Redis queue) with a python-socketio client
//! connected to it, and a Python webhook receiver that checks HMAC signatures. Plans go
//! through the real cluster and the real `antibody` binary.

use antibody_test_support as support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use antibody::config::Config;
use antibody::plan::{ActionType, AlertSummary, PatchPlan, PatchPlanSpec, PlanAction};
use antibody::report::notify::{DeliveryConfig, NotifyConfig, WebhookConfig, marker_annotation};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{ControllerProcess, TestNamespace};

const PLAN_TIMEOUT: Duration = Duration::from_secs(60);
const EVENT_TIMEOUT: Duration = Duration::from_secs(45);

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

fn python() -> PathBuf {
    let python = support::python_env().join("bin/python");
    assert!(python.exists(), "{} missing: run tests/peers/setup.sh", python.display());
    python
}

/// A `redis-server` of our own on a loopback port; stoppable and restartable on that port.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> Self {
        let dir = std::env::temp_dir().join("antibody-tests").join(support::unique("redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self { child: None, port: support::free_port(), dir };
        server.resume();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn resume(&mut self) {
        assert!(self.child.is_none(), "redis already running");
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start redis-server (apt-get install redis-server, or run tests/peers/setup.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_pong(self.port) {
            assert!(Instant::now() < deadline, "redis-server did not answer PING on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it hard (our own child), like a crashed or restarted Redis.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_pong(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A child process of ours that prints one JSON object per line on stdout.
struct JsonLines {
    child: Child,
    lines: mpsc::Receiver<Value>,
    stderr: PathBuf,
}

impl JsonLines {
    fn spawn(mut command: Command, name: &str) -> Self {
        let stderr = std::env::temp_dir().join("antibody-tests").join(format!("{}.log", support::unique(name)));
        std::fs::create_dir_all(stderr.parent().expect("parent")).expect("log dir");
        let log = std::fs::File::create(&stderr).expect("stderr log");
        let mut child = command
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "raw": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, stderr }
    }

    fn next(&self, timeout: Duration) -> Option<Value> {
        self.lines.recv_timeout(timeout).ok()
    }

    fn wait_ready(&self, timeout: Duration) -> Value {
        let line = self.next(timeout).unwrap_or_else(|| panic!("peer not ready: {}", self.stderr_text()));
        assert_eq!(line["ready"], true, "peer said {line} instead of ready: {}", self.stderr_text());
        line
    }

    /// Everything printed within `window`.
    fn drain(&self, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The VAEL UI stand-in under gunicorn's threaded worker, on `message_queue`.
struct VaelUi {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl VaelUi {
    fn start(message_queue: &str) -> Self {
        let gunicorn = support::python_env().join("bin/gunicorn");
        assert!(gunicorn.exists(), "{} missing: run tests/peers/setup.sh", gunicorn.display());
        let port = support::free_port();
        let log = std::env::temp_dir().join("antibody-tests").join(format!("{}.log", support::unique("vael-ui")));
        let child = Command::new(gunicorn)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--workers", "1", "--threads", "16", "--chdir"])
            .arg(peers_dir())
            .arg("--error-logfile")
            .arg(&log)
            .arg("vael_ui:app")
            .env("VAEL_UI_MESSAGE_QUEUE", message_queue)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the VAEL UI under gunicorn");
        let ui = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while support::http_get(port, "/healthz").map(|(code, _)| code) != Some(200) {
            assert!(Instant::now() < deadline, "VAEL UI did not answer: {}", ui.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        ui
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A python-socketio client connected to this UI, ready once the UI subscribed to Redis.
    fn listener(&self, redis_url: &str) -> JsonLines {
        let mut command = Command::new(python());
        command
            .arg(peers_dir().join("socketio_listener.py"))
            .args(["--url", &format!("http://127.0.0.1:{}", self.port), "--redis", redis_url])
            .args(["--event", "patch_applied", "--event", "patch_failed", "--event", "patch_dry_run"]);
        let listener = JsonLines::spawn(command, "socketio-listener");
        let ready = listener.wait_ready(Duration::from_secs(30));
        eprintln!("socketio listener ready: {ready}");
        listener
    }
}

impl Drop for VaelUi {
    fn drop(&mut self) {
        // SIGTERM to the gunicorn master we started, so it stops its worker too.
        support::stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// The webhook receiver; `fail_first` 500s per CloudEvent id before it answers 200.
fn webhook_receiver(secret: &str, fail_first: u32) -> (JsonLines, u16) {
    let mut command = Command::new(python());
    command.arg(peers_dir().join("webhook_receiver.py")).args([
        "--secret",
        secret,
        "--fail-first",
        &fail_first.to_string(),
    ]);
    let receiver = JsonLines::spawn(command, "webhook-receiver");
    let ready = receiver.wait_ready(Duration::from_secs(15));
    let port = ready["port"].as_u64().expect("receiver port") as u16;
    (receiver, port)
}

/// antibody.yml moved into the test namespace, with `notify`.
fn test_config(ns: &str, notify: NotifyConfig) -> String {
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    for target in config.targets.values_mut() {
        target.namespace = Some(ns.to_string());
        target.container = Some("app".into());
        target.reload_command = vec!["true".into()];
        target.verify = Some(support::stand_in_probe());
    }
    config.defaults.rollout_timeout_seconds = 30;
    config.notify = notify;
    config.validate().expect("test config is valid");
    serde_yaml::to_string(&config).expect("config serialises")
}

fn fast_delivery(retries: u32) -> DeliveryConfig {
    DeliveryConfig { retries, backoff_ms: 100, max_backoff_ms: 1000, timeout_ms: 2000, ..Default::default() }
}

fn plan(name: &str, alert_id: &str, actions: Vec<PlanAction>) -> PatchPlan {
    let alert = AlertSummary {
        id: alert_id.into(),
        source: "NEXUS".into(),
        category: "config".into(),
        severity: "high".into(),
        ..Default::default()
    };
    PatchPlan::new(name, PatchPlanSpec { alert: Some(alert), actions, ..Default::default() })
}

/// A plan Antibody applies (one ConfigMap edit), and one it refuses (restart is not
/// whitelisted for VAEL_UI).
fn applied_and_refused(suffix: &str) -> (PatchPlan, PatchPlan) {
    let applied = plan(
        &format!("notify-applied-{suffix}"),
        &format!("nexus-applied-{suffix}"),
        vec![PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug")],
    );
    let refused = plan(
        &format!("notify-refused-{suffix}"),
        &format!("nexus-refused-{suffix}"),
        vec![PlanAction::new(ActionType::Restart, "VAEL_UI")],
    );
    (applied, refused)
}

/// The CRD, VAEL_Core's ConfigMap and its Deployment (the verify probe runs in its pods).
async fn setup(client: &Client, ns: &str) {
    support::install_crd(client).await;
    support::create_config_map(client, ns, "vael-core-env", &[("LOG_LEVEL", "info")]).await;
    support::create_deployment(client, ns, &support::deployment("vael-core", 1, Some("vael-core-env"))).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    support::wait_for(deployments, "vael-core", PLAN_TIMEOUT, support::rollout_complete(1)).await;
}

async fn finished(client: &Client, ns: &str, name: &str) -> PatchPlan {
    support::wait_for(Api::<PatchPlan>::namespaced(client.clone(), ns), name, PLAN_TIMEOUT, support::plan_finished())
        .await
}

/// Sum of the samples of `name` whose labels include every pair in `labels`.
fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (code, body) = support::http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    body.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_metric(port: u16, name: &str, labels: &[(&str, &str)], at_least: f64, logs: impl Fn() -> String) -> f64 {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let value = metric(port, name, labels);
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{name}{labels:?} = {value}, wanted ≥ {at_least}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the plan's delivery marker for `event` lists exactly `sinks`.
async fn wait_marker(client: &Client, ns: &str, name: &str, event: &str, sinks: &str) {
    let key = marker_annotation(event);
    let want = sinks.to_string();
    support::wait_for(
        Api::<PatchPlan>::namespaced(client.clone(), ns),
        name,
        Duration::from_secs(20),
        move |p: Option<&PatchPlan>| p.and_then(|p| p.annotations().get(&key)) == Some(&want),
    )
    .await;
}

/// Events the listener printed, until `done` says enough or the timeout passes.
fn events_until(listener: &JsonLines, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut events = Vec::new();
    while !done(&events) {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
        match listener.next(left) {
            Some(v) => events.push(v),
            None => panic!("events so far: {events:?}\nlistener stderr: {}", listener.stderr_text()),
        }
    }
    events
}

fn has_event(events: &[Value], event: &str, plan: &str) -> bool {
    events.iter().any(|e| e["event"] == event && e["data"]["id"] == plan)
}

#[tokio::test]
async fn vael_ui_clients_hear_patch_applied_and_patch_failed_through_the_redis_queue() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "notify-sio").await;
    setup(&client, &ns.name).await;
    let redis = RedisServer::start();
    let ui = VaelUi::start(&redis.url());
    let listener = ui.listener(&redis.url());
    let notify =
        NotifyConfig { socketio_message_queue: Some(redis.url()), delivery: fast_delivery(5), ..Default::default() };
    let controller = ControllerProcess::start(&test_config(&ns.name, notify), &ns.name, &[]);
    controller.wait_ready().await;

    let applied = plan(
        "notify-applied",
        "nexus-77",
        vec![
            PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug"),
            PlanAction::new(ActionType::Restart, "VAEL_Core"),
        ],
    );
    let (_, refused) = applied_and_refused("sio");
    let applied = support::apply_plan(&client, &ns.name, &applied).await;
    let refused = support::apply_plan(&client, &ns.name, &refused).await;
    let events = events_until(&listener, |events| {
        has_event(events, "patch_applied", "notify-applied") && has_event(events, "patch_failed", "notify-refused-sio")
    });
    let done = finished(&client, &ns.name, "notify-applied").await;
    assert_eq!(done.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"));

    let got = events.iter().find(|e| e["event"] == "patch_applied").expect("patch_applied");
    let data = &got["data"];
    eprintln!("patch_applied as the Socket.IO client received it: {data}");
    assert_eq!(data["id"], "notify-applied");
    assert_eq!(data["uid"], applied.uid().expect("uid").as_str());
    assert_eq!(data["namespace"], ns.name.as_str());
    assert_eq!(data["source_alert"], "nexus-77");
    let actions: Vec<Value> = data["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| json!({"type": a["type"], "target": a["target"], "key": a["key"], "val": a["val"], "state": a["state"]}))
        .collect();
    assert_eq!(
        Value::Array(actions),
        json!([
            {"type": "edit_env", "target": "VAEL_Core", "key": "LOG_LEVEL", "val": null, "state": "Succeeded"},
            {"type": "restart", "target": "VAEL_Core", "key": null, "val": null, "state": "Succeeded"},
        ])
    );
    // Values are redacted unless `notify.reveal_values` (the webhook test turns it on).
    assert_eq!(data["actions"][0]["redacted"], json!(["val", "message"]), "{data}");
    assert!(data["message"].is_null() && data["redacted"] == json!(["message"]), "{data}");
    assert_eq!((data["status"].as_str(), data["reason"].as_str()), (Some("Succeeded"), Some("Applied")));
    assert_eq!(data["transition"], "patch_applied");
    assert!(data["seconds"].as_f64().is_some_and(|s| s >= 0.0), "seconds: {}", data["seconds"]);
    assert!(data["finishedAt"].is_string() && data["createdAt"].is_string());

    let failed = events.iter().find(|e| e["event"] == "patch_failed").expect("patch_failed");
    assert_eq!(failed["data"]["uid"], refused.uid().expect("uid").as_str());
    assert_eq!(
        (failed["data"]["status"].as_str(), failed["data"]["reason"].as_str()),
        (Some("Failed"), Some("NotAllowed"))
    );
    assert_eq!(failed["data"]["actions"][0]["type"], "restart");

    // Exactly once each: nothing more arrives (replays after the marker writes are suppressed).
    wait_marker(&client, &ns.name, "notify-applied", "patch_applied", "socketio").await;
    wait_marker(&client, &ns.name, "notify-refused-sio", "patch_failed", "socketio").await;
    let late = listener.drain(Duration::from_secs(1));
    assert_eq!(events.len() + late.len(), 2, "duplicates: {events:?} {late:?}");
    let port = controller.http_port;
    let sio = |event| [("sink", "socketio"), ("event", event)];
    assert_eq!(metric(port, "antibody_notify_delivered_total", &sio("patch_applied")), 1.0);
    assert_eq!(metric(port, "antibody_notify_delivered_total", &sio("patch_failed")), 1.0);
    assert_eq!(metric(port, "antibody_notify_undeliverable_total", &[]), 0.0);
}

#[tokio::test]
async fn redis_outage_during_a_plan_is_retried_until_the_ui_hears_it() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "notify-outage").await;
    setup(&client, &ns.name).await;
    let mut redis = RedisServer::start();
    let ui = VaelUi::start(&redis.url());
    let listener = ui.listener(&redis.url());
    let notify =
        NotifyConfig { socketio_message_queue: Some(redis.url()), delivery: fast_delivery(40), ..Default::default() };
    let controller = ControllerProcess::start(&test_config(&ns.name, notify), &ns.name, &[]);
    controller.wait_ready().await;

    redis.stop();
    let (applied, _) = applied_and_refused("outage");
    support::apply_plan(&client, &ns.name, &applied).await;
    // Reconciling does not wait for the notifier.
    let done = finished(&client, &ns.name, &applied.name_any()).await;
    assert_eq!(done.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"));
    let labels = [("sink", "socketio"), ("event", "patch_applied")];
    let port = controller.http_port;
    let failures = wait_metric(port, "antibody_notify_failures_total", &labels, 2.0, || controller.logs()).await;
    eprintln!("attempts failed while Redis was down: {failures}");
    assert_eq!(metric(port, "antibody_notify_delivered_total", &labels), 0.0);

    let stopped_at = Instant::now();
    redis.resume();
    let events = events_until(&listener, |events| has_event(events, "patch_applied", &applied.name_any()));
    eprintln!("patch_applied reached the UI's client {:?} after Redis came back", stopped_at.elapsed());
    assert_eq!(events.iter().filter(|e| e["event"] == "patch_applied").count(), 1, "{events:?}");
    wait_marker(&client, &ns.name, &applied.name_any(), "patch_applied", "socketio").await;
    assert_eq!(metric(port, "antibody_notify_delivered_total", &labels), 1.0);
    assert_eq!(metric(port, "antibody_notify_undeliverable_total", &labels), 0.0);
    let failures = metric(port, "antibody_notify_failures_total", &labels);
    assert!(failures >= 2.0, "failures {failures}");
    eprintln!("failed attempts in total (Redis down, then UI not yet re-subscribed): {failures}");
    assert!(controller.logs().contains("notification attempt failed"), "failures are logged");
}

fn check_config(yaml: &str, extra: &[&str]) -> (bool, String) {
    let path = std::env::temp_dir().join("antibody-tests").join(format!("{}.yml", support::unique("check")));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["check-config", "--config"])
        .arg(&path)
        .args(extra)
        .output()
        .expect("run antibody check-config");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn unreachable_redis_fails_check_config_and_at_run_time_is_counted_while_plans_apply() {
    let dead = format!("redis://127.0.0.1:{}/0", support::free_port());
    let notify =
        NotifyConfig { socketio_message_queue: Some(dead.clone()), delivery: fast_delivery(2), ..Default::default() };
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "notify-dead").await;
    let config = test_config(&ns.name, notify);

    let (ok, text) = check_config(&config, &[]);
    assert!(!ok, "check-config passed with unreachable Redis: {text}");
    assert!(text.contains("notify.socketio_message_queue: cannot reach Redis at"), "{text}");
    let (ok, text) = check_config(&config, &["--offline"]);
    assert!(ok, "--offline validates without connecting: {text}");
    assert!(text.contains("notify: socketio"), "{text}");
    let bad: &[(&str, &str)] = &[
        (
            "notify: {socketio_message_queue: 'http://127.0.0.1:6379/0'}",
            "notify.socketio_message_queue: scheme \"http\"",
        ),
        ("notify: {socketio_message_queue: 'redis//nohost'}", "notify.socketio_message_queue:"),
        ("notify: {webhooks: [{url: 'ftp://ci.example/hook'}]}", "notify.webhooks[0].url: scheme \"ftp\""),
        ("notify: {webhooks: [{url: '::not a url'}]}", "notify.webhooks[0].url:"),
        (
            "notify: {webhooks: [{url: 'http://ci.example/', secret_file: /nonexistent/key}]}",
            "notify.webhooks[0].secret_file",
        ),
    ];
    for (yaml, words) in bad {
        let (ok, text) = check_config(yaml, &["--offline"]);
        assert!(!ok && text.contains(words), "{yaml}: {text}");
    }

    setup(&client, &ns.name).await;
    let controller = ControllerProcess::start(&config, &ns.name, &[]);
    controller.wait_ready().await;
    let first = plan("notify-dead-1", "nexus-d1", vec![PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug")]);
    let second = plan("notify-dead-2", "nexus-d2", vec![PlanAction::edit_env("VAEL_Core", "MODE", "safe")]);
    support::apply_plan(&client, &ns.name, &first).await;
    support::apply_plan(&client, &ns.name, &second).await;
    for name in ["notify-dead-1", "notify-dead-2"] {
        let done = finished(&client, &ns.name, name).await;
        assert_eq!(done.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"), "{name}");
    }
    let labels = [("sink", "socketio"), ("event", "patch_applied")];
    let port = controller.http_port;
    wait_metric(port, "antibody_notify_undeliverable_total", &labels, 2.0, || controller.logs()).await;
    // 1 attempt + 2 retries each.
    assert_eq!(metric(port, "antibody_notify_failures_total", &labels), 6.0);
    assert_eq!(metric(port, "antibody_notify_delivered_total", &labels), 0.0);
    let logs = controller.logs();
    assert_eq!(logs.matches("notification undeliverable").count(), 2, "{logs}");
    assert!(logs.contains("Connection refused"), "the cause is logged: {logs}");
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let plan = plans.get("notify-dead-1").await.expect("plan");
    assert!(!plan.annotations().contains_key(&marker_annotation("patch_applied")), "no marker without delivery");
}

#[tokio::test]
async fn webhook_gets_one_signed_cloudevent_per_transition_and_retries_500s() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "notify-hook").await;
    setup(&client, &ns.name).await;
    let (receiver, port) = webhook_receiver("s3cret", 2);
    let secret_file = std::env::temp_dir().join("antibody-tests").join(support::unique("secret"));
    std::fs::write(&secret_file, "s3cret\n").expect("secret file");
    let notify = NotifyConfig {
        webhooks: vec![
            WebhookConfig {
                name: Some("ci".into()),
                url: format!("http://127.0.0.1:{port}/ci"),
                secret_file: Some(secret_file.display().to_string()),
                ..Default::default()
            },
            WebhookConfig {
                name: Some("wrong-key".into()),
                url: format!("http://127.0.0.1:{port}/wrong"),
                secret: Some("not-the-key".into()),
                ..Default::default()
            },
        ],
        delivery: fast_delivery(4),
        reveal_values: true,
        ..Default::default()
    };
    let controller = ControllerProcess::start(&test_config(&ns.name, notify), &ns.name, &[]);
    controller.wait_ready().await;
    let (applied, refused) = applied_and_refused("hook");
    let applied = support::apply_plan(&client, &ns.name, &applied).await;
    let refused = support::apply_plan(&client, &ns.name, &refused).await;
    let ids = [
        (format!("{}/patch_applied", applied.uid().expect("uid")), applied.name_any(), "patch_applied"),
        (format!("{}/patch_failed", refused.uid().expect("uid")), refused.name_any(), "patch_failed"),
    ];

    let answered = |records: &[Value], path: &str, id: &str, status: u64| {
        records.iter().any(|r| r["path"] == path && r["event"]["id"] == id && r["status"] == status)
    };
    let mut records = events_until(&receiver, |records| {
        ids.iter().all(|(id, _, _)| answered(records, "/ci", id, 200) && answered(records, "/wrong", id, 401))
    });
    wait_marker(&client, &ns.name, &applied.name_any(), "patch_applied", "ci").await;
    wait_marker(&client, &ns.name, &refused.name_any(), "patch_failed", "ci").await;
    records.extend(receiver.drain(Duration::from_secs(1)));

    for (id, plan_name, event) in &ids {
        let ci: Vec<&Value> = records.iter().filter(|r| r["path"] == "/ci" && r["event"]["id"] == *id).collect();
        let statuses: Vec<u64> = ci.iter().filter_map(|r| r["status"].as_u64()).collect();
        assert_eq!(statuses, [500, 500, 200], "{id}: two 500s, then delivered once: {ci:?}");
        assert!(ci.iter().all(|r| r["signature_ok"] == true), "HMAC verifies on every attempt: {ci:?}");
        assert!(ci.windows(2).all(|w| w[0]["event"] == w[1]["event"]), "retries resend the same CloudEvent");
        let first = ci[0];
        assert!(first["content_type"].as_str().is_some_and(|c| c.starts_with("application/cloudevents+json")));
        assert_eq!(first["delivery"], id.as_str());
        let cloud_event = &first["event"];
        eprintln!("CloudEvent received: {cloud_event}");
        assert_eq!(cloud_event["specversion"], "1.0");
        assert_eq!(cloud_event["type"], format!("io.vael.antibody.{event}"));
        assert_eq!(cloud_event["datacontenttype"], "application/json");
        assert_eq!(
            cloud_event["source"],
            format!("/apis/antibody.vael.io/v1alpha1/namespaces/{}/patchplans/{plan_name}", ns.name)
        );
        assert!(cloud_event["time"].as_str().is_some_and(|t| t.ends_with('Z')), "time: {}", cloud_event["time"]);
        assert_eq!(cloud_event["data"]["id"], plan_name.as_str());
        assert_eq!(cloud_event["data"]["transition"], *event);
        if *event == "patch_applied" {
            // `reveal_values: true`: the edit's value goes out as it is.
            assert_eq!(cloud_event["data"]["actions"][0]["val"], "debug", "{cloud_event}");
        }

        let wrong: Vec<&Value> = records.iter().filter(|r| r["path"] == "/wrong" && r["event"]["id"] == *id).collect();
        assert_eq!(wrong.len(), 1, "a 401 is not retried: {wrong:?}");
        assert_eq!(wrong[0]["signature_ok"], false);
    }
    let other: Vec<&Value> =
        records.iter().filter(|r| !ids.iter().any(|(id, _, _)| r["event"]["id"] == id.as_str())).collect();
    assert!(other.is_empty(), "only the two terminal transitions are sent: {other:?}");

    let port = controller.http_port;
    for (_, _, event) in &ids {
        let ci = [("sink", "ci"), ("event", *event)];
        let wrong = [("sink", "wrong-key"), ("event", *event)];
        assert_eq!(metric(port, "antibody_notify_delivered_total", &ci), 1.0, "{event}");
        assert_eq!(metric(port, "antibody_notify_failures_total", &ci), 2.0, "{event}");
        assert_eq!(metric(port, "antibody_notify_undeliverable_total", &ci), 0.0, "{event}");
        assert_eq!(metric(port, "antibody_notify_failures_total", &wrong), 1.0, "{event}");
        assert_eq!(metric(port, "antibody_notify_undeliverable_total", &wrong), 1.0, "{event}");
    }
}

#[tokio::test]
async fn a_restarted_controller_redelivers_unmarked_outcomes_and_nothing_else() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "notify-restart").await;
    setup(&client, &ns.name).await;
    let hook = |url: String| NotifyConfig {
        webhooks: vec![WebhookConfig {
            name: Some("ci".into()),
            url,
            secret: Some("k".into()),
            retries: Some(0),
            ..Default::default()
        }],
        delivery: fast_delivery(0),
        ..Default::default()
    };

    // The first controller cannot reach CI: the outcome is undeliverable and unmarked.
    let dead = format!("http://127.0.0.1:{}/ci", support::free_port());
    let mut first = ControllerProcess::start(&test_config(&ns.name, hook(dead)), &ns.name, &[]);
    first.wait_ready().await;
    let (applied, _) = applied_and_refused("restart");
    let applied = support::apply_plan(&client, &ns.name, &applied).await;
    finished(&client, &ns.name, &applied.name_any()).await;
    let labels = [("sink", "ci"), ("event", "patch_applied")];
    wait_metric(first.http_port, "antibody_notify_undeliverable_total", &labels, 1.0, || first.logs()).await;
    first.kill();

    // A new controller (restart or new leader) re-delivers it on start, once.
    let (receiver, port) = webhook_receiver("k", 0);
    let config = test_config(&ns.name, hook(format!("http://127.0.0.1:{port}/ci")));
    let mut second = ControllerProcess::start(&config, &ns.name, &[]);
    second.wait_ready().await;
    let id = format!("{}/patch_applied", applied.uid().expect("uid"));
    let mut records = events_until(&receiver, |r| r.iter().any(|r| r["event"]["id"] == id.as_str()));
    wait_marker(&client, &ns.name, &applied.name_any(), "patch_applied", "ci").await;
    records.extend(receiver.drain(Duration::from_secs(1)));
    assert_eq!(records.len(), 1, "delivered exactly once by the new controller: {records:?}");
    assert_eq!((records[0]["status"].as_u64(), &records[0]["signature_ok"]), (Some(200), &json!(true)));
    assert_eq!(metric(second.http_port, "antibody_notify_delivered_total", &labels), 1.0);
    assert!(second.logs().contains("re-delivering: no delivery marker"), "{}", second.logs());
    second.kill();

    // With the marker in place, the next start sends nothing.
    let third = ControllerProcess::start(&config, &ns.name, &[]);
    third.wait_ready().await;
    let extra = receiver.drain(Duration::from_secs(2));
    assert!(extra.is_empty(), "marked outcomes are not re-sent: {extra:?}");
    assert_eq!(metric(third.http_port, "antibody_notify_delivered_total", &[]), 0.0);
    let plan = Api::<PatchPlan>::namespaced(client.clone(), &ns.name).get(&applied.name_any()).await.expect("plan");
    let markers: BTreeMap<_, _> = plan
        .annotations()
        .iter()
        .filter(|(k, _)| k.contains("notified-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(markers, BTreeMap::from([(marker_annotation("patch_applied"), "ci".to_string())]));
}
