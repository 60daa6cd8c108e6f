//! Seed compatibility (issue 15) and "hints never escalate" (issue 16 item 4), end to end on the
//! real local control plane: the original antibody.yml verbatim (check-config and a running
//! controller), the original testing matrix without hints, the doc's cURL example (Python
//! `requests`), the original plan shape on `POST /api/antibody/patch`, duplicate JSON keys, an
//! oversize body read by a plain client, and a NEXUS generated from the original's plain proto.

use antibody_test_support as support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use antibody::config::Config;
use antibody::plan::PatchPlan;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{ControllerProcess, TestNamespace};

const TOKEN: &str = "t0ken-for-the-seed-tests-0123456789";

/// ANTIBODY_IMPLEMENTATION.md section 4, verbatim.
const ORIGINAL_YML: &str = include_str!("fixtures/original-antibody.yml");

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn token_file() -> PathBuf {
    let path = temp_dir().join(format!("{}.tokens", support::unique("tokens")));
    // One token for intake and for the UI's Socket.IO connection (which needs `read`).
    std::fs::write(&path, format!("seed-tests:{TOKEN} scopes=ingest,reveal\n")).expect("token file");
    path
}

/// The shipped antibody.yml, targets in the test namespace, reloads that run `true` and a
/// stand-in health probe (a bare reload alone ends `Unverified`; tests/reload_effect.rs).
fn shipped_config(ns: &str) -> String {
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    for target in config.targets.values_mut() {
        target.namespace = Some(ns.to_string());
        target.container = Some("app".into());
        target.reload_command = vec!["true".into()];
        target.verify = Some(support::stand_in_probe());
    }
    config.defaults.rollout_timeout_seconds = 30;
    config.ingest.cooldown_seconds = 0;
    config.ingest.max_body_bytes = 4096;
    serde_yaml::to_string(&config).expect("config serialises")
}

/// A raw HTTP/1.1 POST on loopback: (status, JSON body). The body is sent as given.
fn post_raw(port: u16, path: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

fn post(port: u16, path: &str, body: &Value) -> (u16, Value) {
    post_raw(port, path, body.to_string().as_bytes())
}

/// Run a Python snippet with the test peers' env (requests, grpcio); its stdout.
fn python(code: &str, args: &[&str]) -> String {
    let python = support::python_env().join("bin/python");
    assert!(python.exists(), "{} missing: run tests/peers/setup.sh", python.display());
    let output = Command::new(python).arg("-c").arg(code).args(args).output().expect("run python");
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).to_string()
}

async fn plans(client: &Client, ns: &str) -> Vec<PatchPlan> {
    Api::<PatchPlan>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list plans").items
}

fn described(plan: &PatchPlan) -> Vec<String> {
    plan.spec.actions.iter().map(antibody::plan::PlanAction::describe).collect()
}

async fn plan_named(client: &Client, ns: &str, name: &str) -> PatchPlan {
    Api::<PatchPlan>::namespaced(client.clone(), ns).get(name).await.unwrap_or_else(|e| panic!("plan {name}: {e}"))
}

async fn setup_workloads(client: &Client, ns: &str) {
    support::install_crd(client).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for name in ["vael-core", "vael-ui"] {
        support::create_deployment(client, ns, &support::deployment(name, 1, None)).await;
    }
    for name in ["vael-core", "vael-ui"] {
        support::wait_for(deployments.clone(), name, Duration::from_secs(60), support::rollout_complete(1)).await;
    }
}

#[test]
fn check_config_takes_the_original_antibody_yml_and_prints_what_it_means() {
    let path = temp_dir().join(format!("{}.yml", support::unique("original")));
    std::fs::write(&path, ORIGINAL_YML).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["check-config", "--offline", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "refused: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    for want in [
        ": ok",
        "actions.edit_env: [Sentinel, VAEL_Core, VAEL_UI] (from `true`: every target that can)",
        "actions.reload_flask: [Sentinel, VAEL_Core, VAEL_UI] (from `true`",
        "severity_map.warn: noop",
        "severity_map.high: restart",
        "target VAEL_Core (convention): deployment <plan namespace>/vael-core, config_map vael-core-env",
        "defaults.targets.restart: VAEL_Core",
        "defaults.targets.reload_flask: VAEL_UI",
        "audit log (JSONL): logs/antibody_patches/audit.jsonl",
        "plan log: logs/antibody.log",
        "warning: actions.edit_env: VAEL_Core has no targets.VAEL_Core.env_keys",
    ] {
        assert!(stdout.contains(want), "check-config output lacks {want:?}:\n{stdout}");
    }
    // A wrong type names its field once.
    std::fs::write(&path, "actions: {edit_env: maybe}\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["check-config", "--offline", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.matches("actions.edit_env").count(), 1, "{stderr}");
}

/// Shipped antibody.yml: the four matrix rows with no hints, the cURL example, the original plan
/// shape, hint forms, duplicate keys, hint escalation, and a 413 a plain client can read.
#[tokio::test]
async fn shipped_config_serves_the_original_matrix_curl_and_plans() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "seed-rest").await;
    setup_workloads(&client, &ns.name).await;
    let tokens = token_file();
    let controller = ControllerProcess::start(
        &shipped_config(&ns.name),
        &ns.name,
        &["--token-file", &tokens.display().to_string(), "--plan-namespace", &ns.name],
    );
    controller.wait_ready().await;
    let port = controller.http_port;

    // The original testing matrix, no patch_hint at all (and "" = none).
    let rows = [
        ("m-hb", "heartbeat", Some("high"), vec!["restart:VAEL_Core"]),
        ("m-pol", "policy", Some("high"), vec!["reloadFlask:VAEL_UI"]),
        ("m-crit", "kernel", Some("critical"), vec!["restart:VAEL_Core", "reloadFlask:VAEL_UI"]),
        ("m-info", "heartbeat", Some("info"), vec![]),
        ("m-nosev", "heartbeat", None, vec![]),
    ];
    for (id, category, severity, want) in &rows {
        let mut alert = json!({"id": id, "source": "NEXUS", "category": category, "msg": "matrix", "patch_hint": ""});
        if let Some(severity) = severity {
            alert["severity"] = json!(severity);
        }
        let (code, body) = post(port, "/api/nexus/alert", &alert);
        assert_eq!(code, 202, "{id}: {body}");
        if want.is_empty() {
            assert_eq!(body["outcome"], "ignored", "{id}: {body}");
            continue;
        }
        assert_eq!(body["outcome"], "plan_created", "{id}: {body}");
        let plan = plan_named(&client, &ns.name, body["plan"].as_str().expect("plan name")).await;
        assert_eq!(described(&plan), *want, "{id}");
    }

    // The VAEL UI (python-socketio) listening for patch_applied, as the original emits it.
    let ui = Peer::start_until(
        "socketio_client.py",
        &[
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--event",
            "patch_applied",
            "--count",
            "20",
            "--timeout",
            "90",
            "--token",
            TOKEN,
        ],
        "\"connect\"",
    );

    // The doc's cURL example, sent by a plain Python client (requests).
    let curl = python(
        "import sys, requests\n\
         r = requests.post(f'http://127.0.0.1:{sys.argv[1]}/api/nexus/alert', headers={'Authorization': 'Bearer ' + sys.argv[2]},\n\
             json={'id':'a1','source':'Sentinel','category':'policy','severity':'high','msg':'profanity'})\n\
         print(r.status_code, r.text)",
        &[&port.to_string(), TOKEN],
    );
    let (status, text) = curl.trim().split_once(' ').expect("status and body");
    assert_eq!(status, "202", "{curl}");
    let body: Value = serde_json::from_str(text).expect("json");
    let plan = plan_named(&client, &ns.name, body["plan"].as_str().expect("plan")).await;
    assert_eq!(described(&plan), ["reloadFlask:VAEL_UI"]);
    // The plan runs (reload command `true`) to PatchApplied.
    support::wait_for(
        Api::<PatchPlan>::namespaced(client.clone(), &ns.name),
        &plan.name_any(),
        Duration::from_secs(60),
        support::plan_condition("PatchApplied", "True"),
    )
    .await;
    // The UI reads the original patch_applied keys: id, source_alert, actions[].type/target.
    let deadline = Instant::now() + Duration::from_secs(30);
    let applied = loop {
        let found = ui
            .text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"] == "patch_applied" && e["data"]["id"].as_str() == Some(plan.name_any().as_str()));
        if let Some(event) = found {
            break event["data"].clone();
        }
        assert!(Instant::now() < deadline, "no patch_applied for {} at the UI:\n{}", plan.name_any(), ui.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(applied["source_alert"], "a1", "{applied}");
    assert_eq!(
        (applied["actions"][0]["type"].as_str(), applied["actions"][0]["target"].as_str()),
        (Some("reload_flask"), Some("VAEL_UI")),
        "{applied}"
    );

    // The original's hint form edit_env:KEY=VALUE (target: defaults.targets.edit_env).
    let (code, body) = post(
        port,
        "/api/nexus/alert",
        &json!({"id":"h1","source":"NEXUS","category":"config","severity":"high","patch_hint":"edit_env:FLASK_DEBUG=False"}),
    );
    assert_eq!(code, 202, "{body}");
    let plan = plan_named(&client, &ns.name, body["plan"].as_str().expect("plan")).await;
    assert_eq!(described(&plan), ["editEnv:VAEL_Core:FLASK_DEBUG", "restart:VAEL_Core"]);

    // The original plan shape on the manual route.
    let original_plan = json!({"id":"patch-1","source_alert":"a1","actions":[
        {"type":"restart","target":"VAEL_Core"},{"type":"reload_flask"},
        {"type":"edit_env","key":"FLASK_DEBUG","val":"False"}],"dryRun":true});
    let (code, body) = post(port, "/api/antibody/patch", &original_plan);
    assert_eq!(code, 202, "{body}");
    assert_eq!((body["status"].as_str(), body["id"].as_str()), (Some("accepted"), Some("patch-1")), "{body}");
    let plan = plan_named(&client, &ns.name, "patch-1").await;
    assert_eq!(described(&plan), ["restart:VAEL_Core", "reloadFlask:VAEL_UI", "editEnv:VAEL_Core:FLASK_DEBUG"]);
    assert_eq!(plan.spec.alert.as_ref().map(|a| a.id.as_str()), Some("a1"));
    let (code, body) = post(
        port,
        "/api/antibody/patch",
        &json!({"name":"tx-1","spec":{"actions":[{"type":"restart","target":"VAEL_Core"}],"rollbackOnFailure":true,"dryRun":true}}),
    );
    assert_eq!(code, 202, "rollbackOnFailure is a PatchPlanSpec field: {body}");
    let (code, body) = post(port, "/api/antibody/patch", &json!({"actions":[{"type":"reboot"}]}));
    assert_eq!((code, body["reason"].as_str().map(|r| r.starts_with("actions[0].type"))), (400, Some(true)), "{body}");

    let before = plans(&client, &ns.name).await.len();
    // Duplicate keys: 400 naming the key, on alerts and on manual plans; nothing created.
    let dup =
        br#"{"id":"d1","source":"NEXUS","category":"heartbeat","severity":"info","msg":"x","severity":"critical"}"#;
    let (code, body) = post_raw(port, "/api/nexus/alert", dup);
    assert_eq!(code, 400, "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("duplicate key \"severity\"")), "{body}");
    let dup_plan = br#"{"actions":[{"type":"restart","target":"VAEL_Core","target":"Sentinel"}]}"#;
    let (code, body) = post_raw(port, "/api/antibody/patch", dup_plan);
    assert_eq!(code, 400, "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| r.contains("duplicate key \"target\"")), "{body}");

    // Issue 16 item 4: a hint cannot add an env edit to a rule that does not list edit_env.
    let (code, body) = post(
        port,
        "/api/nexus/alert",
        &json!({"id":"esc1","source":"NEXUS","category":"heartbeat","severity":"high","patch_hint":"edit_env:VAEL_Core:LOG_LEVEL=debug"}),
    );
    assert_eq!((code, body["error"].as_str()), (403, Some("NotAllowed")), "{body}");
    let (code, body) = post(
        port,
        "/api/nexus/alert",
        &json!({"id":"esc2","source":"NEXUS","category":"config","severity":"high","patch_hint":"edit_env:VAEL_Core:LD_PRELOAD=/tmp/x.so"}),
    );
    assert_eq!((code, body["error"].as_str()), (403, Some("NotAllowed")), "{body}");

    // A new top-level field: accepted with a warning field.
    let (code, body) = post(
        port,
        "/api/nexus/alert",
        &json!({"id":"f1","source":"NEXUS","category":"heartbeat","severity":"info","trace_id":"t-1"}),
    );
    assert_eq!((code, body["ignored_fields"].clone()), (202, json!(["trace_id"])), "{body}");
    assert_eq!(plans(&client, &ns.name).await.len(), before, "refused and ignored alerts created nothing");

    // 413 read by a plain client that sends the whole body first (max_body_bytes 4096 here).
    let oversize = python(
        "import sys, requests\n\
         r = requests.post(f'http://127.0.0.1:{sys.argv[1]}/api/nexus/alert', headers={'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json'},\n\
             data=b'[' + b' ' * 2_000_000 + b']')\n\
         print(r.status_code, r.json()['error'])",
        &[&port.to_string(), TOKEN],
    );
    assert_eq!(oversize.trim(), "413 PayloadTooLarge");
}

/// A NEXUS generated from the original's plain proto, streaming the original envelope, into a
/// controller running the original antibody.yml verbatim (plan log in logs/antibody.log).
#[tokio::test]
async fn original_config_and_plain_proto_nexus_end_to_end() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "seed-plain").await;
    setup_workloads(&client, &ns.name).await;
    let feed_port = support::free_port();
    let alerts = temp_dir().join(format!("{}.jsonl", support::unique("plain-alerts")));
    let lines = [
        r#"{"id":"p-hb","source":"NEXUS","category":"heartbeat","severity":"high","msg":"Pulse missed: VAEL_Core","patch_hint":"","ts":"2025-05-30T12:34:56Z"}"#,
        r#"{"id":"p-info","source":"NEXUS","category":"heartbeat","severity":"info","msg":"fine","patch_hint":""}"#,
        r#"{"id":"p-dup","source":"NEXUS","category":"heartbeat","severity":"info","severity":"high"}"#,
    ];
    std::fs::write(&alerts, lines.join("\n") + "\n").expect("alerts");
    let feed =
        Peer::start("nexus_plain.py", &["--port", &feed_port.to_string(), "--alerts", &alerts.display().to_string()]);

    // Relative log_path: the controller's working directory is a fresh temp dir.
    let workdir = temp_dir().join(support::unique("seed-cwd"));
    std::fs::create_dir_all(&workdir).expect("workdir");
    let config_path = workdir.join("antibody.yml");
    std::fs::write(&config_path, ORIGINAL_YML).expect("config");
    let log = workdir.join("controller.log");
    let mut controller = Command::new(env!("CARGO_BIN_EXE_antibody"))
        .current_dir(&workdir)
        .args(["run", "--config", "antibody.yml", "--namespace", &ns.name, "--log-level", "info,antibody=debug"])
        .args(["--http-addr", &format!("127.0.0.1:{}", support::free_port())])
        .args(["--nexus-grpc", &format!("http://127.0.0.1:{feed_port}")])
        .env("KUBECONFIG", support::kubeconfig_path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(workdir.join("controller.err")).expect("log"))
        .spawn()
        .expect("start antibody");
    let guard = KillOnDrop(&mut controller);

    let deadline = Instant::now() + Duration::from_secs(60);
    let plan = loop {
        let found = plans(&client, &ns.name).await;
        if let Some(plan) = found.into_iter().find(|p| p.spec.alert.as_ref().is_some_and(|a| a.id == "p-hb")) {
            break plan;
        }
        assert!(Instant::now() < deadline, "no plan for p-hb; feed: {}\nlog: {}", feed.text(), logs(&workdir));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(described(&plan), ["restart:VAEL_Core"], "severity_map high: restart, defaults.targets.restart");
    support::wait_for(
        Api::<PatchPlan>::namespaced(client.clone(), &ns.name),
        &plan.name_any(),
        Duration::from_secs(60),
        support::plan_condition("PatchApplied", "True"),
    )
    .await;
    let text = logs(&workdir);
    assert!(text.contains("/NexusFeed/Subscribe"), "fell back to the package-less service:\n{text}");
    assert!(text.contains("duplicate key \\\"severity\\\"") || text.contains("duplicate key \"severity\""), "{text}");
    assert_eq!(plans(&client, &ns.name).await.len(), 1, "info is ignored, the duplicate-key alert refused");
    // The plain-text plan log and the JSONL history, as the original lays them out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let plan_log = std::fs::read_to_string(workdir.join("logs/antibody.log")).unwrap_or_default();
        if plan_log.contains(&format!("patch_applied plan {}/{} [restart:VAEL_Core]", ns.name, plan.name_any())) {
            assert!(plan_log.contains("started plan"), "{plan_log}");
            break;
        }
        assert!(Instant::now() < deadline, "plan log: {plan_log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(workdir.join("logs/antibody_patches/audit.jsonl").exists(), "JSONL history in logs/antibody_patches/");
    drop(guard);
}

fn logs(workdir: &Path) -> String {
    std::fs::read_to_string(workdir.join("controller.log")).unwrap_or_default()
        + &std::fs::read_to_string(workdir.join("controller.err")).unwrap_or_default()
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python peer this test started (we own its pid); killed on drop.
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn start(script: &str, args: &[&str]) -> Self {
        Self::start_until(script, args, "\"ready\"")
    }

    /// Start and wait until its output holds `ready` (a JSON event name, quoted).
    fn start_until(script: &str, args: &[&str], ready: &str) -> Self {
        let python = support::python_env().join("bin/python");
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
        while !peer.text().contains(ready) {
            assert!(Instant::now() < deadline, "{script} not ready in 30s:\n{}", peer.text());
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- peer log {} ---\n{}", self.log.display(), self.text());
        }
    }
}
