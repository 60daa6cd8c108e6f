//! Alert ingestion end to end, on the real local control plane with real peers: a Python grpcio
//! NEXUS feed, a Flask-SocketIO server, REST and Alertmanager webhooks, config hot reload.
//! Each test runs the real `antibody` binary against its own namespace.

use antibody_test_support as support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use antibody::alert::{Severity, ThreatAlert};
use antibody::config::Config;
use antibody::plan::PatchPlan;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{ControllerProcess, TestNamespace};

const TOKEN_NAME: &str = "ingest-tests";
const TOKEN: &str = "t0ken-for-the-ingest-tests-0123456789";

/// antibody.yml with every target in the test namespace and reloads that run `true`.
fn test_config(ns: &str, cooldown_seconds: u64) -> String {
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    for target in config.targets.values_mut() {
        target.namespace = Some(ns.to_string());
        target.container = Some("app".into());
        target.reload_command = vec!["true".into()];
    }
    config.defaults.rollout_timeout_seconds = 30;
    config.ingest.cooldown_seconds = cooldown_seconds;
    serde_yaml::to_string(&config).expect("config serialises")
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn token_file() -> PathBuf {
    let path = temp_dir().join(format!("{}.tokens", support::unique("tokens")));
    std::fs::write(&path, format!("# test tokens\n{TOKEN_NAME}:{TOKEN}\nother:another-token-9876543210\n"))
        .expect("token file");
    path
}

/// Where ControllerProcess writes the config of a namespace.
fn config_path(ns: &str) -> PathBuf {
    temp_dir().join(format!("{ns}.yml"))
}

fn start_controller(config: &str, ns: &str, extra: &[String]) -> ControllerProcess {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    ControllerProcess::start(config, ns, &extra)
}

fn alert(id: &str, category: &str, severity: Severity, hint: Option<&str>) -> ThreatAlert {
    ThreatAlert {
        id: id.into(),
        source: "NEXUS".into(),
        category: category.into(),
        severity,
        msg: format!("test alert {id}"),
        patch_hint: hint.map(Into::into),
        ts: Some("2025-05-30T12:34:56Z".into()),
    }
}

/// The original testing matrix: heartbeat/high → restart, policy/high → reload, critical →
/// restart + reload, info → nothing.
fn matrix() -> Vec<ThreatAlert> {
    vec![
        alert("m-hb", "heartbeat", Severity::High, Some("restart:VAEL_Core")),
        alert("m-pol", "policy", Severity::High, Some("reload_flask:VAEL_UI")),
        alert("m-crit", "kernel", Severity::Critical, Some("restart:VAEL_Core")),
        alert("m-info", "heartbeat", Severity::Info, Some("restart:VAEL_Core")),
    ]
}

// ---- tiny HTTP client (loopback, HTTP/1.1, Connection: close) ----------------------------------

fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    // The server may answer (413) before reading the whole body; what it said still counts.
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body));
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

fn post(port: u16, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    http(port, "POST", path, token, body.to_string().as_bytes())
}

fn metrics(port: u16) -> String {
    support::http_get(port, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

fn counter(metrics: &str, line_prefix: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn alerts(metrics: &str, feed: &str, outcome: &str) -> u64 {
    counter(metrics, &format!("antibody_alerts_total{{feed=\"{feed}\",outcome=\"{outcome}\"}}"))
}

fn feed_total(metrics: &str, feed: &str) -> u64 {
    ["plan_created", "deduplicated", "cooled_down", "ignored", "refused"].iter().map(|o| alerts(metrics, feed, o)).sum()
}

fn reconnects(metrics: &str, feed: &str) -> u64 {
    counter(metrics, &format!("antibody_feed_reconnects_total{{feed=\"{feed}\"}}"))
}

async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn plans(client: &Client, ns: &str) -> Vec<PatchPlan> {
    Api::<PatchPlan>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list plans").items
}

// ---- Python peers ------------------------------------------------------------------------------

/// A Python peer started by this test (we own its pid); killed on drop.
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    fn start(script: &str, args: &[String]) -> Self {
        let python = support::python_env().join("bin/python");
        assert!(python.exists(), "{} missing: run tests/peers/setup.sh", python.display());
        let log = temp_dir().join(format!("{}.log", support::unique(script.trim_end_matches(".py"))));
        let file = std::fs::File::create(&log).expect("peer log");
        let child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let peer = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while peer.events("ready").is_empty() {
            assert!(Instant::now() < deadline, "{script} not ready in 30s:\n{}", peer.text());
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// SIGKILL: a crash, not a shutdown.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- peer log {} ---\n{}", self.log.display(), self.text());
        }
    }
}

fn write_alerts(lines: &[Value]) -> PathBuf {
    let path = temp_dir().join(format!("{}.jsonl", support::unique("alerts")));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).expect("alerts file");
    path
}

fn start_feed(port: u16, alerts: &Path, interval: &str) -> Peer {
    let args =
        ["--port", &port.to_string(), "--alerts", &alerts.display().to_string(), "--interval", interval, "--hold"];
    Peer::start("nexus_feed.py", &args.map(String::from))
}

async fn setup_workloads(client: &Client, ns: &str) {
    support::install_crd(client).await;
    support::create_deployment(client, ns, &support::deployment("vael-core", 2, None)).await;
    support::create_deployment(client, ns, &support::deployment("vael-ui", 1, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for name in ["vael-core", "vael-ui"] {
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
}

// ---- tests -------------------------------------------------------------------------------------

#[tokio::test]
async fn grpc_feed_matrix_end_to_end_survives_a_feed_restart() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-grpc").await;
    setup_workloads(&client, &ns.name).await;

    // The matrix, plus a bad alert the stream must survive; mixed typed / JSON-envelope wire forms.
    let mut lines: Vec<Value> = matrix().iter().map(|a| serde_json::to_value(a).expect("json")).collect();
    lines.push(
        json!({"id":"m-bad","source":"NEXUS","category":"heartbeat","severity":"high","patch_hint":"restart:../x"}),
    );
    let ids: Vec<String> = lines.iter().map(|l| l["id"].as_str().expect("id").to_string()).collect();
    let alerts_file = write_alerts(&lines);
    let port = support::free_port();
    let mut feed_a = start_feed(port, &alerts_file, "0.5");

    let controller = start_controller(
        &test_config(&ns.name, 60),
        &ns.name,
        &["--nexus-grpc".into(), format!("http://127.0.0.1:{port}")],
    );
    controller.wait_ready().await;
    let http_port = controller.http_port;

    // Kill NEXUS mid-stream, once two alerts were handled.
    eventually("2 alerts handled", Duration::from_secs(30), || feed_total(&metrics(http_port), "grpc") >= 2).await;
    feed_a.kill();
    eventually("the subscriber noticed", Duration::from_secs(10), || reconnects(&metrics(http_port), "grpc") >= 1)
        .await;
    let handled = feed_total(&metrics(http_port), "grpc") as usize;
    assert!((2..ids.len()).contains(&handled), "killed mid-stream, after {handled} alerts");

    // The same NEXUS comes back on the same address: the subscriber reconnects and resumes.
    let feed_b = start_feed(port, &alerts_file, "0.1");
    eventually("every alert handled", Duration::from_secs(30), || {
        feed_total(&metrics(http_port), "grpc") >= ids.len() as u64
    })
    .await;
    // The feed logs each send after writing it; the controller may count it first.
    eventually("the feed logged its sends", Duration::from_secs(5), || {
        feed_b.events("sent").len() >= ids.len() - handled
    })
    .await;
    let subscriptions = feed_b.events("subscribe");
    assert_eq!(
        subscriptions[0]["resume_after_id"],
        ids[handled - 1],
        "resumed after the last alert handled: {subscriptions:?}"
    );
    let resent: Vec<String> =
        feed_b.events("sent").iter().map(|e| e["id"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(resent, ids[handled..], "only what was not handled was sent again");

    // Four matrix outcomes + the refusal; nothing lost, nothing handled twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = metrics(http_port);
    let counts: Vec<u64> = ["plan_created", "ignored", "refused", "deduplicated", "cooled_down"]
        .iter()
        .map(|o| alerts(&m, "grpc", o))
        .collect();
    assert_eq!(counts, [3, 1, 1, 0, 0], "plan_created, ignored, refused, deduplicated, cooled_down:\n{m}");
    assert!(reconnects(&m, "grpc") >= 1);

    let plans_now = plans(&client, &ns.name).await;
    let mut summaries: Vec<(String, String)> = plans_now.iter().map(|p| (p.name_any(), p.summary())).collect();
    summaries.sort();
    let matrix = matrix();
    let mut want = vec![
        (matrix[0].plan_name(), "restart:VAEL_Core".to_string()),
        (matrix[1].plan_name(), "reloadFlask:VAEL_UI".to_string()),
        (matrix[2].plan_name(), "restart:VAEL_Core, reloadFlask:VAEL_Core".to_string()),
    ];
    want.sort();
    assert_eq!(summaries, want, "three plans, named by the alerts' fingerprints");
    for plan in &plans_now {
        let annotations = plan.annotations();
        assert_eq!(annotations.get("antibody.vael.io/feed").map(String::as_str), Some("grpc"));
        assert_eq!(annotations.get("antibody.vael.io/requested-by").map(String::as_str), Some("NEXUS"));
        assert!(plan.managed_fields().iter().any(|f| f.manager.as_deref() == Some("antibody")), "SSA by antibody");
    }
    // And they run: alert → PatchApplied.
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    for (name, _) in &want {
        let done = support::wait_for(api.clone(), name, Duration::from_secs(90), support::plan_finished()).await;
        let ready = done.condition("Ready").expect("Ready");
        assert_eq!(ready.status, "True", "{name}: {} — {}", ready.reason, ready.message);
    }
}

#[tokio::test]
async fn socketio_feed_creates_plans_and_reconnects() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-ws").await;
    support::install_crd(&client).await;
    let port = support::free_port();
    let args = ["--port".to_string(), port.to_string()];
    let mut nexus = Peer::start("nexus_ws.py", &args);
    let controller = start_controller(
        &test_config(&ns.name, 60),
        &ns.name,
        &["--nexus-ws".into(), format!("http://127.0.0.1:{port}")],
    );
    controller.wait_ready().await;
    let connected = || {
        support::http_get(port, "/clients")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["connected"].as_u64())
            .unwrap_or(0)
    };
    eventually("antibody connected to NEXUS Socket.IO", Duration::from_secs(20), || connected() >= 1).await;

    let first = alert("ws-1", "heartbeat", Severity::High, Some("restart:VAEL_Core"));
    let (code, _) = post(port, "/emit", None, &serde_json::to_value(&first).expect("json"));
    assert_eq!(code, 200);
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let plan = support::wait_for(api.clone(), &first.plan_name(), Duration::from_secs(20), |p: Option<&PatchPlan>| {
        p.is_some()
    })
    .await;
    assert_eq!(plan.summary(), "restart:VAEL_Core");
    assert_eq!(plan.annotations().get("antibody.vael.io/feed").map(String::as_str), Some("ws"));
    assert_eq!(plan.spec.alert.as_ref().map(|a| a.id.as_str()), Some("ws-1"));

    // A bad alert on the stream is a recorded refusal; the feed carries on.
    post(port, "/emit", None, &json!({"id":"ws-bad","source":"NEXUS","category":"x","severity":"urgent"}));
    eventually("refusal recorded", Duration::from_secs(10), || {
        alerts(&metrics(controller.http_port), "ws", "refused") == 1
    })
    .await;

    // NEXUS crashes and comes back on the same address: the client reconnects by itself.
    nexus.kill();
    let nexus = Peer::start("nexus_ws.py", &args);
    eventually("antibody reconnected", Duration::from_secs(30), || connected() >= 1).await;
    let second = alert("ws-2", "policy", Severity::High, Some("reload_flask:VAEL_UI"));
    post(port, "/emit", None, &serde_json::to_value(&second).expect("json"));
    let plan =
        support::wait_for(api, &second.plan_name(), Duration::from_secs(20), |p: Option<&PatchPlan>| p.is_some()).await;
    assert_eq!(plan.summary(), "reloadFlask:VAEL_UI");
    // The feed records the outcome once the create call has returned: the plan can be seen first.
    eventually("second plan_created counted", Duration::from_secs(10), || {
        alerts(&metrics(controller.http_port), "ws", "plan_created") == 2
    })
    .await;
    let m = metrics(controller.http_port);
    assert_eq!(alerts(&m, "ws", "plan_created"), 2, "{m}");
    assert!(reconnects(&m, "ws") >= 1, "the disconnect was counted:\n{m}");
    assert_eq!(nexus.events("connect").len(), 1);
}

#[tokio::test]
async fn storm_of_10000_alerts_for_one_target_is_one_plan_even_across_a_restart() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-storm").await;
    support::install_crd(&client).await;
    let tokens = token_file();
    let config = test_config(&ns.name, 60);
    let extra = ["--token-file".to_string(), tokens.display().to_string()];
    let mut controller = start_controller(&config, &ns.name, &extra);
    controller.wait_ready().await;
    let port = controller.http_port;

    const TOTAL: usize = 10_000;
    const BATCH: usize = 500;
    let bodies: Vec<Vec<u8>> = (0..TOTAL)
        .map(|i| alert(&format!("storm-{i}"), "heartbeat", Severity::High, Some("restart:VAEL_Core")))
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| serde_json::to_vec(chunk).expect("json"))
        .collect();
    let started = Instant::now();
    let results: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let workers: Vec<_> = bodies
            .chunks(bodies.len() / 4)
            .map(|share| {
                scope.spawn(move || {
                    share.iter().map(|b| http(port, "POST", "/api/nexus/alert", Some(TOKEN), b)).collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    let elapsed = started.elapsed();
    eprintln!("storm: {TOTAL} alerts in {elapsed:?} ({:.0} alerts/s over REST)", TOTAL as f64 / elapsed.as_secs_f64());
    assert!(elapsed < Duration::from_secs(30), "the storm took {elapsed:?}");
    let mut plan_names = std::collections::BTreeSet::new();
    for (code, body) in &results {
        assert_eq!(*code, 202, "{body}");
        for result in body["results"].as_array().expect("results") {
            assert!(["plan_created", "cooled_down"].contains(&result["outcome"].as_str().unwrap_or("")), "{result}");
            plan_names.insert(result["plan"].as_str().expect("plan").to_string());
        }
    }
    assert_eq!(plan_names.len(), 1, "every alert names the same plan: {plan_names:?}");
    let m = metrics(port);
    assert_eq!(alerts(&m, "rest", "plan_created"), 1, "{m}");
    assert_eq!(alerts(&m, "rest", "cooled_down"), TOTAL as u64 - 1, "{m}");
    assert_eq!(feed_total(&m, "rest"), TOTAL as u64, "the counters add up to {TOTAL}");
    let all = plans(&client, &ns.name).await;
    assert_eq!(all.len(), 1, "exactly one PatchPlan");
    let plan = all[0].name_any();
    assert!(plan_names.contains(&plan));

    // The claim is in the cluster, so a restarted Antibody still cools the storm down.
    let claims = Api::<ConfigMap>::namespaced(client.clone(), &ns.name).get("antibody-cooldown").await.expect("claims");
    let claim = claims.data.as_ref().and_then(|d| d.get("restart.VAEL_Core")).expect("restart.VAEL_Core claimed");
    assert!(claim.contains(&plan), "{claim}");
    controller.kill();
    let controller = start_controller(&config, &ns.name, &extra);
    controller.wait_ready().await;
    let late = alert("storm-after-restart", "heartbeat", Severity::High, Some("restart:VAEL_Core"));
    let (code, body) =
        post(controller.http_port, "/api/nexus/alert", Some(TOKEN), &serde_json::to_value(&late).expect("json"));
    assert_eq!(
        (code, body["outcome"].as_str(), body["plan"].as_str()),
        (202, Some("cooled_down"), Some(plan.as_str())),
        "{body}"
    );
    // The alert that made the plan, sent again, is that plan, also after the restart.
    let first_id = all[0].spec.alert.as_ref().map(|a| a.id.clone()).expect("the plan names its alert");
    let first = alert(&first_id, "heartbeat", Severity::High, Some("restart:VAEL_Core"));
    let (_, body) =
        post(controller.http_port, "/api/nexus/alert", Some(TOKEN), &serde_json::to_value(&first).expect("json"));
    assert_eq!(body["outcome"], "deduplicated", "{body}");
    assert_eq!(plans(&client, &ns.name).await.len(), 1, "still exactly one PatchPlan");
}

#[tokio::test]
async fn bad_rest_input_gets_a_clear_4xx_and_changes_nothing() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-bad").await;
    support::install_crd(&client).await;
    let tokens = token_file();
    let controller =
        start_controller(&test_config(&ns.name, 60), &ns.name, &["--token-file".into(), tokens.display().to_string()]);
    controller.wait_ready().await;
    let port = controller.http_port;
    let valid =
        serde_json::to_value(alert("ok-1", "heartbeat", Severity::High, Some("restart:VAEL_Core"))).expect("json");
    let with = |field: &str, value: Value| {
        let mut a = valid.clone();
        a[field] = value;
        a.to_string().into_bytes()
    };
    let without_id = {
        let mut a = valid.clone();
        a.as_object_mut().expect("object").remove("id");
        a.to_string().into_bytes()
    };
    let oversize = {
        let mut a = valid.clone();
        a["msg"] = Value::String("x".repeat(300 * 1024));
        a.to_string().into_bytes()
    };
    let alert_path = "/api/nexus/alert";
    // (what, path, token, body, status, error code, reason contains, recorded as a refused alert)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str, &'a str, bool);
    let cases: Vec<Case> = vec![
        ("no token", alert_path, None, valid.to_string().into_bytes(), 401, "Unauthorized", "missing bearer token", false),
        ("invalid token", alert_path, Some("not-the-token-0123456789"), valid.to_string().into_bytes(), 401, "Unauthorized", "invalid token", false),
        ("malformed JSON", alert_path, Some(TOKEN), b"{\"id\": \"x\",".to_vec(), 400, "MalformedJson", "malformed JSON", true),
        ("unknown severity", alert_path, Some(TOKEN), with("severity", json!("urgent")), 400, "InvalidAlert", "unknown variant `urgent`", true),
        ("missing id", alert_path, Some(TOKEN), without_id, 400, "InvalidAlert", "missing field `id`", true),
        ("oversize body", alert_path, Some(TOKEN), oversize, 413, "PayloadTooLarge", "max 262144 bytes", true),
        ("path in target", alert_path, Some(TOKEN), with("patch_hint", json!("restart:../x")), 400, "InvalidAlert", "invalid target", true),
        ("newline in env value", alert_path, Some(TOKEN), with("patch_hint", json!("edit_env:VAEL_Core:K=V\nX=Y")), 400, "InvalidAlert", "control character", true),
        ("unknown target", alert_path, Some(TOKEN), with("patch_hint", json!("restart:Intruder")), 403, "NotAllowed", "unknown target \"Intruder\"", true),
        (
            "action not whitelisted for target",
            alert_path,
            Some(TOKEN),
            json!({"id":"p-1","source":"NEXUS","category":"policy","severity":"high","patch_hint":"reload_flask:Sentinel"}).to_string().into_bytes(),
            403,
            "NotAllowed",
            "does not whitelist reload_flask for target Sentinel",
            true,
        ),
        (
            "a list with one bad alert",
            alert_path,
            Some(TOKEN),
            json!([valid, {"id":"l-2","source":"NEXUS","category":"c","severity":"high","patch_hint":"restart:../x"}]).to_string().into_bytes(),
            400,
            "InvalidAlert",
            "alerts[1] (id l-2)",
            true,
        ),
        (
            "manual plan not whitelisted",
            "/api/antibody/patch",
            Some(TOKEN),
            json!({"actions":[{"type":"reloadFlask","target":"Sentinel"}]}).to_string().into_bytes(),
            403,
            "NotAllowed",
            "does not whitelist reload_flask",
            false,
        ),
        (
            "manual plan with a typo",
            "/api/antibody/patch",
            Some(TOKEN),
            json!({"actions":[{"type":"restart","target":"Sentinel"}],"dry_run":true}).to_string().into_bytes(),
            400,
            "InvalidSpec",
            "unknown field \"dry_run\"",
            false,
        ),
        ("alertmanager v3", "/api/alertmanager", Some(TOKEN), json!({"version":"3","alerts":[]}).to_string().into_bytes(), 400, "InvalidWebhook", "version \"3\"", false),
        ("manual plan, no token", "/api/antibody/patch", None, b"{}".to_vec(), 401, "Unauthorized", "missing bearer token", false),
    ];
    let mut refusals = 0;
    for (what, path, token, body, status, code, reason, counted) in &cases {
        let (got_status, got) = http(port, "POST", path, *token, body);
        assert_eq!(got_status, *status, "{what}: {got}");
        assert_eq!(got["error"].as_str(), Some(*code), "{what}: {got}");
        let got_reason = got["reason"].as_str().unwrap_or("");
        assert!(got_reason.contains(reason), "{what}: reason {got_reason:?} lacks {reason:?}");
        refusals += usize::from(*counted);
    }
    assert_eq!(support::http_get(port, "/livez").map(|(c, _)| c), Some(200), "the process keeps running");
    assert!(plans(&client, &ns.name).await.is_empty(), "no PatchPlan was created");
    let m = metrics(port);
    assert_eq!(alerts(&m, "rest", "refused"), refusals as u64, "each refusal recorded:\n{m}");
    assert_eq!(alerts(&m, "rest", "plan_created"), 0);
    // And a good alert still goes through afterwards.
    let (code, body) = post(port, alert_path, Some(TOKEN), &valid);
    assert_eq!((code, body["outcome"].as_str()), (202, Some("plan_created")), "{body}");
}

fn am_alert(status: &str, fingerprint: &str, labels: Value, hint: &str) -> Value {
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": format!("alert {fingerprint}"), "patch_hint": hint},
        "startsAt": "2025-05-30T12:34:56.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph",
        "fingerprint": fingerprint,
    })
}

fn am_webhook(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=~\".*\"}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "antibody", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.local", "alerts": alerts,
    })
}

fn outcomes(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .map(|r| r.iter().map(|x| x["outcome"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn alertmanager_fires_plans_resolved_cancels_unstarted_and_manual_plans() {
    let client = support::client().await;
    // Plans go to a namespace no controller reconciles, so "not started yet" is stable.
    let watched = TestNamespace::new(&client, "ingest-am-ctl").await;
    let plan_ns = TestNamespace::new(&client, "ingest-am-plans").await;
    support::install_crd(&client).await;
    let tokens = token_file();
    let extra = ["--token-file".into(), tokens.display().to_string(), "--plan-namespace".into(), plan_ns.name.clone()];
    let controller = start_controller(&test_config(&plan_ns.name, 60), &watched.name, &extra);
    controller.wait_ready().await;
    let port = controller.http_port;

    let heartbeat = json!({"alertname":"VaelCoreHeartbeat","category":"heartbeat","severity":"high"});
    let warn = json!({"alertname":"PolicyFlood","category":"policy","severity":"warning"});
    let policy = json!({"alertname":"PolicyFlood","category":"policy","severity":"high"});
    let firing = am_webhook(vec![
        am_alert("firing", "fp-heartbeat", heartbeat.clone(), "restart:VAEL_Core"),
        am_alert("firing", "fp-warn", warn.clone(), "reload_flask:VAEL_UI"),
        am_alert("firing", "fp-policy", policy.clone(), "reload_flask:VAEL_UI"),
    ]);
    let (code, body) = post(port, "/api/alertmanager", Some(TOKEN), &firing);
    assert_eq!(code, 202, "{body}");
    assert_eq!(outcomes(&body), ["plan_created", "ignored", "plan_created"], "{body}");
    let (_, again) = post(port, "/api/alertmanager", Some(TOKEN), &firing);
    assert_eq!(outcomes(&again), ["deduplicated", "ignored", "deduplicated"], "repeat notifications: {again}");

    let api: Api<PatchPlan> = Api::namespaced(client.clone(), &plan_ns.name);
    let heartbeat_plan = body["results"][0]["plan"].as_str().expect("plan").to_string();
    let policy_plan = body["results"][2]["plan"].as_str().expect("plan").to_string();
    let plan = api.get(&heartbeat_plan).await.expect("heartbeat plan");
    let summary = plan.spec.alert.as_ref().expect("alert summary");
    assert_eq!(
        (summary.id.as_str(), summary.source.as_str(), summary.category.as_str()),
        ("fp-heartbeat", "alertmanager", "heartbeat")
    );
    assert_eq!(plan.summary(), "restart:VAEL_Core");
    assert_eq!(plan.annotations().get("antibody.vael.io/requested-by").map(String::as_str), Some(TOKEN_NAME));
    assert_eq!(api.get(&policy_plan).await.expect("policy plan").summary(), "reloadFlask:VAEL_UI");

    // The policy plan "starts" (as the reconciler would mark it); then both alerts resolve.
    api.patch_status(&policy_plan, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running"}})))
        .await
        .expect("mark started");
    let resolved = am_webhook(vec![
        am_alert("resolved", "fp-heartbeat", heartbeat.clone(), "restart:VAEL_Core"),
        am_alert("resolved", "fp-warn", warn, "reload_flask:VAEL_UI"),
        am_alert("resolved", "fp-policy", policy, "reload_flask:VAEL_UI"),
    ]);
    let (code, body) = post(port, "/api/alertmanager", Some(TOKEN), &resolved);
    assert_eq!(code, 202, "{body}");
    assert_eq!(outcomes(&body), ["cancelled", "not_found", "already_started"], "{body}");
    assert!(api.get_opt(&heartbeat_plan).await.expect("get").is_none(), "the unstarted plan is gone");
    assert!(api.get_opt(&policy_plan).await.expect("get").is_some(), "the started plan stays");
    // Each resolution is in the audit log, with what became of its plan.
    let audit = controller.audit_dir.join("audit.jsonl");
    let mut resolutions = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        resolutions = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r["kind"] == "alert" && r["event"] == "resolved")
            .map(|r| {
                (
                    r["alert_id"].as_str().unwrap_or("").to_string(),
                    r["detail"]["result"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if resolutions.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let expected: Vec<(String, String)> =
        [("fp-heartbeat", "cancelled"), ("fp-warn", "not_found"), ("fp-policy", "already_started")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(resolutions, expected, "resolved alerts are audited");

    // Cancelling freed the cool-down: the alert firing again gets a plan again.
    let refire = am_webhook(vec![am_alert("firing", "fp-heartbeat", heartbeat, "restart:VAEL_Core")]);
    let (_, body) = post(port, "/api/alertmanager", Some(TOKEN), &refire);
    assert_eq!(outcomes(&body), ["plan_created"], "{body}");

    // Manual plans: admitted, created (POST, field manager antibody), idempotent by name, immutable.
    let manual = json!({"name": "manual-fix-1", "spec": {"actions": [{"type": "restart", "target": "Sentinel"}]}});
    let (code, body) = post(port, "/api/antibody/patch", Some(TOKEN), &manual);
    assert_eq!(
        (code, body["outcome"].as_str(), body["plan"].as_str()),
        (202, Some("plan_created"), Some("manual-fix-1")),
        "{body}"
    );
    let (code, body) = post(port, "/api/antibody/patch", Some(TOKEN), &manual);
    assert_eq!((code, body["outcome"].as_str()), (202, Some("deduplicated")), "{body}");
    let changed = json!({"name": "manual-fix-1", "spec": {"actions": [{"type": "restart", "target": "VAEL_Core"}]}});
    let (code, body) = post(port, "/api/antibody/patch", Some(TOKEN), &changed);
    assert_eq!((code, body["error"].as_str()), (409, Some("Conflict")), "{body}");
    let stored = api.get("manual-fix-1").await.expect("manual plan");
    assert_eq!(stored.summary(), "restart:Sentinel");
    assert_eq!(stored.annotations().get("antibody.vael.io/requested-by").map(String::as_str), Some(TOKEN_NAME));
    let (code, body) = post(
        port,
        "/api/antibody/patch",
        Some(TOKEN),
        &json!({"actions": [{"type": "restart", "target": "VAEL_Core"}], "dryRun": true}),
    );
    assert_eq!(code, 202, "{body}");
    assert!(body["plan"].as_str().is_some_and(|p| p.starts_with("manual-")), "{body}");
    assert!(plans(&client, &watched.name).await.is_empty(), "plans went to --plan-namespace only");
}

#[tokio::test]
async fn config_hot_reload_applies_valid_changes_and_keeps_the_old_config_on_invalid_ones() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-reload").await;
    support::install_crd(&client).await;
    let tokens = token_file();
    let controller =
        start_controller(&test_config(&ns.name, 0), &ns.name, &["--token-file".into(), tokens.display().to_string()]);
    controller.wait_ready().await;
    let port = controller.http_port;
    let send = |id: &str, hint: &str| {
        let a = alert(id, "heartbeat", Severity::High, Some(hint));
        post(port, "/api/nexus/alert", Some(TOKEN), &serde_json::to_value(a).expect("json"))
    };
    assert_eq!(send("r-1", "restart:VAEL_Core").0, 202);
    // The file as loaded (and --audit-dir overriding log_path) is not a change.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(counter(&metrics(port), r#"antibody_config_reloads_total{result="applied"}"#), 0, "no spurious reload");

    // Like a ConfigMap update: new content appears atomically.
    let path = config_path(&ns.name);
    let replace = |content: &str| {
        let tmp = path.with_extension("yml.tmp");
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, &path).expect("swap");
    };
    let mut config = Config::from_yaml(&test_config(&ns.name, 0)).expect("valid");
    config.actions.restart.retain(|t| t != "VAEL_Core");
    replace(&serde_yaml::to_string(&config).expect("yaml"));
    let applied = r#"antibody_config_reloads_total{result="applied"}"#;
    eventually("config reloaded", Duration::from_secs(10), || counter(&metrics(port), applied) == 1).await;
    let (code, body) = send("r-2", "restart:VAEL_Core");
    assert_eq!((code, body["error"].as_str()), (403, Some("NotAllowed")), "the new whitelist is in force: {body}");

    replace("actions: {restart: [VAEL_Core]}\nbogus_section: true\n");
    let rejected = r#"antibody_config_reloads_total{result="rejected"}"#;
    eventually("invalid config rejected", Duration::from_secs(10), || counter(&metrics(port), rejected) == 1).await;
    let (code, body) = send("r-3", "restart:VAEL_Core");
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("NotAllowed")),
        "the invalid file did not replace it: {body}"
    );
    assert_eq!(send("r-4", "restart:Sentinel").0, 202, "the valid reloaded config still answers");
    assert!(controller.logs().contains("bogus_section"), "the log says why:\n{}", controller.logs());
    assert_eq!(plans(&client, &ns.name).await.len(), 2);

    // The token file (a Secret) rotates: the new token works, the old one no longer does.
    let rotated = "rotated-token-for-ingest-0123456789";
    let tmp = tokens.with_extension("tmp");
    std::fs::write(&tmp, format!("{TOKEN_NAME}:{rotated}\n")).expect("write tokens");
    std::fs::rename(&tmp, &tokens).expect("swap tokens");
    let tokens_applied = r#"antibody_config_reloads_total{result="tokens_applied"}"#;
    eventually("tokens reloaded", Duration::from_secs(10), || counter(&metrics(port), tokens_applied) == 1).await;
    let a = serde_json::to_value(alert("r-5", "heartbeat", Severity::High, Some("restart:Sentinel"))).expect("json");
    assert_eq!(post(port, "/api/nexus/alert", Some(TOKEN), &a).0, 401, "the old token is gone");
    assert_eq!(post(port, "/api/nexus/alert", Some(rotated), &a).0, 202, "the new token works");
    // A broken token file keeps the tokens in force.
    std::fs::write(&tmp, "no colon here\n").expect("write tokens");
    std::fs::rename(&tmp, &tokens).expect("swap tokens");
    let tokens_rejected = r#"antibody_config_reloads_total{result="tokens_rejected"}"#;
    eventually("bad token file rejected", Duration::from_secs(10), || counter(&metrics(port), tokens_rejected) == 1)
        .await;
    let b = serde_json::to_value(alert("r-6", "heartbeat", Severity::High, Some("restart:Sentinel"))).expect("json");
    assert_eq!(post(port, "/api/nexus/alert", Some(rotated), &b).0, 202, "still the rotated token");
}

#[tokio::test]
async fn grpc_intake_serves_reflection_and_submit() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-intake").await;
    support::install_crd(&client).await;
    let tokens = token_file();
    let grpc_port = support::free_port();
    let extra =
        ["--token-file".into(), tokens.display().to_string(), "--grpc-addr".into(), format!("127.0.0.1:{grpc_port}")];
    let controller = start_controller(&test_config(&ns.name, 60), &ns.name, &extra);
    controller.wait_ready().await;
    let target = format!("127.0.0.1:{grpc_port}");
    let python = support::python_env().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/intake_client.py");
    let run = |args: &[&str]| -> Value {
        let out =
            Command::new(&python).arg(&script).args(["--target", &target]).args(args).output().expect("run client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|_| panic!("client said: {stdout}{}", String::from_utf8_lossy(&out.stderr)))
    };
    let listed = run(&["list"]);
    let services: Vec<&str> =
        listed["services"].as_array().expect("services").iter().filter_map(Value::as_str).collect();
    assert!(services.contains(&"nexus.v1.AlertIntake"), "{listed}");
    assert!(services.iter().any(|s| s.starts_with("grpc.reflection.")), "{listed}");
    assert!(!services.contains(&"nexus.v1.NexusFeed"), "only what is served is advertised: {listed}");

    let good =
        serde_json::to_string(&alert("g-1", "policy", Severity::High, Some("reload_flask:VAEL_UI"))).expect("json");
    let reply = run(&["submit", "--token", TOKEN, &good]);
    assert_eq!(reply["code"], "OK", "{reply}");
    assert_eq!(reply["reply"]["outcome"], "plan_created", "{reply}");
    let plan = reply["reply"]["plan"].as_str().expect("plan").to_string();
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(api.get(&plan).await.expect("plan").summary(), "reloadFlask:VAEL_UI");
    assert_eq!(run(&["submit", "--token", TOKEN, &good])["reply"]["outcome"], "deduplicated");

    let typed =
        json!({"id":"g-2","source":"NEXUS","category":"heartbeat","severity":"high","patch_hint":"restart:VAEL_Core"});
    assert_eq!(run(&["submit", "--typed", "--token", TOKEN, &typed.to_string()])["reply"]["outcome"], "plan_created");
    let unauthenticated = run(&["submit", &good]);
    assert_eq!(unauthenticated["code"], "UNAUTHENTICATED", "{unauthenticated}");
    let wrong = run(&["submit", "--token", "wrong-token-0123456789", &good]);
    assert_eq!(wrong["code"], "UNAUTHENTICATED", "{wrong}");
    let bad = run(&["submit", "--token", TOKEN, r#"{"id":"g-3","source":"NEXUS","category":"c","severity":"urgent"}"#]);
    assert_eq!(bad["code"], "INVALID_ARGUMENT", "{bad}");
    assert!(bad["details"].as_str().unwrap_or("").contains("unknown variant"), "{bad}");
    let refused = run(&[
        "submit",
        "--token",
        TOKEN,
        r#"{"id":"g-4","source":"NEXUS","category":"heartbeat","severity":"high","patch_hint":"restart:Intruder"}"#,
    ]);
    assert_eq!(
        (refused["reply"]["outcome"].as_str(), refused["reply"]["reason"].as_str()),
        (Some("refused"), Some("NotAllowed")),
        "{refused}"
    );
    let m = metrics(controller.http_port);
    assert_eq!(alerts(&m, "grpc_intake", "plan_created"), 2, "{m}");
    assert_eq!(alerts(&m, "grpc_intake", "refused"), 2, "{m}");
    assert_eq!(plans(&client, &ns.name).await.len(), 2);
}

#[tokio::test]
async fn plans_from_alerts_and_rest_are_signed_and_the_reconciler_accepts_them() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-signed").await;
    support::install_crd(&client).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for name in ["vael-core", "sentinel"] {
        support::create_deployment(&client, &ns.name, &support::deployment(name, 1, None)).await;
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
    let (private, public) = antibody::signing::generate().expect("keygen");
    let key_file = temp_dir().join(format!("{}.key", support::unique("signing")));
    std::fs::write(&key_file, private).expect("key file");
    let mut config = Config::from_yaml(&test_config(&ns.name, 60)).expect("valid");
    config.safety.require_signature = true;
    config.safety.trusted_keys.insert("antibody-ingest".into(), public.clone());
    config.safety.signing_key_file = Some(key_file.display().to_string());
    config.safety.signing_key_name = "antibody-ingest".into();
    let tokens = token_file();
    let yaml = serde_yaml::to_string(&config).expect("yaml");
    let controller = start_controller(&yaml, &ns.name, &["--token-file".into(), tokens.display().to_string()]);
    controller.wait_ready().await;
    let port = controller.http_port;

    let alert = alert("s-1", "heartbeat", Severity::High, Some("restart:VAEL_Core"));
    let (code, body) = post(port, "/api/nexus/alert", Some(TOKEN), &serde_json::to_value(&alert).expect("json"));
    assert_eq!((code, body["outcome"].as_str()), (202, Some("plan_created")), "{body}");
    let manual = json!({"name": "manual-signed", "spec": {"actions": [{"type": "restart", "target": "Sentinel"}]}});
    let (code, body) = post(port, "/api/antibody/patch", Some(TOKEN), &manual);
    assert_eq!(code, 202, "{body}");

    let trusted = [("antibody-ingest".to_string(), antibody::signing::parse_public_key(&public).expect("key"))].into();
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    for name in [alert.plan_name(), "manual-signed".to_string()] {
        let plan = api.get(&name).await.expect("plan");
        let verified = antibody::signing::verify(&plan, &trusted, jiff::Timestamp::now().as_second(), 3600);
        assert_eq!(verified.map(|v| v.key_name), Ok("antibody-ingest".to_string()), "{name}");
        let done = support::wait_for(api.clone(), &name, Duration::from_secs(60), support::plan_finished()).await;
        let ready = done.condition("Ready").expect("Ready");
        assert_eq!(ready.status, "True", "{name} ran with require_signature: {} — {}", ready.reason, ready.message);
    }

    // The key vanishes (a broken Secret mount): nothing unsigned is created, and the caller hears why.
    std::fs::remove_file(&key_file).expect("remove key");
    let other = self::alert("s-2", "heartbeat", Severity::High, Some("restart:Sentinel"));
    let (code, body) = post(port, "/api/nexus/alert", Some(TOKEN), &serde_json::to_value(&other).expect("json"));
    assert_eq!((code, body["error"].as_str()), (500, Some("SigningFailed")), "{body}");
    assert!(api.get_opt(&other.plan_name()).await.expect("get").is_none());
}

#[tokio::test]
async fn two_replicas_share_the_cool_down_through_the_cluster() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-replicas").await;
    support::install_crd(&client).await;
    let tokens = token_file();
    let config = test_config(&ns.name, 60);
    let extra = ["--token-file".to_string(), tokens.display().to_string()];
    let (a, b) = (start_controller(&config, &ns.name, &extra), start_controller(&config, &ns.name, &extra));
    a.wait_ready().await;
    b.wait_ready().await;

    // 2 × 1,000 different alerts for one remedy, sent to both replicas at once, in small batches
    // so both hit their slow path while the other is claiming.
    let batches = |replica: &str| -> Vec<Vec<u8>> {
        (0..1000)
            .map(|i| alert(&format!("{replica}-{i}"), "heartbeat", Severity::High, Some("restart:VAEL_Core")))
            .collect::<Vec<_>>()
            .chunks(50)
            .map(|chunk| serde_json::to_vec(chunk).expect("json"))
            .collect()
    };
    let (to_a, to_b) = (batches("a"), batches("b"));
    let (port_a, port_b) = (a.http_port, b.http_port);
    let send = |port: u16, bodies: &[Vec<u8>]| -> Vec<u16> {
        bodies.iter().map(|body| http(port, "POST", "/api/nexus/alert", Some(TOKEN), body).0).collect()
    };
    let codes: Vec<u16> = std::thread::scope(|scope| {
        let workers = [scope.spawn(|| send(port_a, &to_a)), scope.spawn(|| send(port_b, &to_b))];
        workers.into_iter().flat_map(|w| w.join().expect("sender")).collect()
    });
    assert!(codes.iter().all(|c| *c == 202), "{codes:?}");
    let all = plans(&client, &ns.name).await;
    assert_eq!(
        all.len(),
        1,
        "one plan across both replicas: {:?}",
        all.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    let (ma, mb) = (metrics(port_a), metrics(port_b));
    let created = alerts(&ma, "rest", "plan_created") + alerts(&mb, "rest", "plan_created");
    let cooled = alerts(&ma, "rest", "cooled_down") + alerts(&mb, "rest", "cooled_down");
    assert_eq!((created, cooled), (1, 1999), "replica a:\n{ma}\nreplica b:\n{mb}");
}

#[tokio::test]
async fn socketio_feed_notices_a_server_that_stops_answering() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ingest-ws-silent").await;
    support::install_crd(&client).await;
    let port = support::free_port();
    let args = ["--port", &port.to_string(), "--ping-interval", "1", "--ping-timeout", "1"].map(String::from);
    let nexus = Peer::start("nexus_ws.py", &args);
    let controller = start_controller(
        &test_config(&ns.name, 60),
        &ns.name,
        &["--nexus-ws".into(), format!("http://127.0.0.1:{port}")],
    );
    controller.wait_ready().await;
    let connects = || nexus.events("connect").len();
    eventually("connected", Duration::from_secs(20), || connects() == 1).await;

    // The server freezes with its sockets open: no FIN, no RST, just no more pings.
    nexus.signal("-STOP");
    let frozen = Instant::now();
    eventually("the silent connection declared dead", Duration::from_secs(10), || {
        reconnects(&metrics(controller.http_port), "ws") == 1
    })
    .await;
    let noticed = frozen.elapsed();
    nexus.signal("-CONT");
    // Dead once no packet came for pingInterval + pingTimeout (2 s) after the last one.
    assert!(noticed <= Duration::from_secs(3), "noticed after {noticed:?}");
    assert!(controller.logs().contains("no packet for 2s"), "the liveness check fired:\n{}", controller.logs());
    eventually("reconnected", Duration::from_secs(30), || connects() >= 2).await;
    let alert = alert("ws-after-freeze", "heartbeat", Severity::High, Some("restart:VAEL_Core"));
    post(port, "/emit", None, &serde_json::to_value(&alert).expect("json"));
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    support::wait_for(api, &alert.plan_name(), Duration::from_secs(20), |p: Option<&PatchPlan>| p.is_some()).await;
}
