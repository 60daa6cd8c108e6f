//! PatchApplied is the truth about the application (issue 14), end to end with real peers:
//! a Flask-SocketIO app under gunicorn with the `antibody_reload` companion, 50 python-socketio
//! clients on WebSocket, a broadcaster emitting 20 sequence-numbered events a second through
//! Redis (tests/peers/ws_harness.py), and an alert sent to Antibody's REST intake.
//!
//! kwok runs no kubelet, so the test plays the kubelet's part for the mounted ConfigMap: it
//! watches the ConfigMap and writes the env file the app reads, after a sync delay (as late as
//! the real kubelet can be, scaled down).

use antibody_test_support as support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use antibody::plan::PatchPlan;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{ControllerProcess, TestNamespace};

const TOKEN: &str = "t0ken-for-the-reload-effect-tests-0123456789";
const KEY: &str = "VAEL_MODE";

fn epoch_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

fn python() -> PathBuf {
    support::python_env().join("bin/python")
}

/// tests/peers/ws_harness.py: the app, its clients and the broadcaster; ours to stop.
struct Harness {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    ready: Value,
}

impl Harness {
    fn start(clients: usize, window_s: u32) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ws_harness.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(["--clients", &clients.to_string(), "--window", &window_s.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ws_harness.py");
        let stdin = child.stdin.take().expect("harness stdin");
        let stdout = child.stdout.take().expect("harness stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut harness = Self { child, stdin, lines, ready: Value::Null };
        harness.ready = harness.next_json(Duration::from_secs(90), "the harness ready line");
        assert_eq!(harness.ready["ready"], true, "{}", harness.ready);
        harness
    }

    fn next_json(&self, timeout: Duration, what: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| panic!("no {what} within {timeout:?}: {e}"));
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return value;
            }
        }
    }

    fn state_dir(&self) -> String {
        self.ready["state_dir"].as_str().expect("state_dir").to_string()
    }

    fn env_file(&self) -> PathBuf {
        PathBuf::from(self.ready["env_file"].as_str().expect("env_file"))
    }

    /// t0 (the alert's time) and the value the fix brings; the result follows after the window.
    fn go(&mut self, t0_ms: f64, expected: &str) {
        writeln!(self.stdin, "GO {}", t0_ms.round() as u64).expect("GO");
        writeln!(self.stdin, "{expected}").expect("expected value");
        self.stdin.flush().expect("flush");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Closing stdin ends the harness; it stops everything it started.
        support::stop_child(&mut self.child, Duration::from_secs(15));
    }
}

/// The kubelet's part: copy the ConfigMap's data into the env file `delay` after each change,
/// atomically (the kubelet swaps a symlink; a rename is the same for a reader).
fn kubelet_sync(
    client: Client,
    ns: &str,
    name: &str,
    env_file: PathBuf,
    delay: Duration,
) -> tokio::task::JoinHandle<()> {
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let fields = format!("metadata.name={name}");
    tokio::spawn(async move {
        let mut written: Option<std::collections::BTreeMap<String, String>> = None;
        let mut events = watcher(api, watcher::Config::default().fields(&fields)).applied_objects().boxed();
        while let Some(Ok(cm)) = events.next().await {
            let data = cm.data.unwrap_or_default();
            if written.as_ref() == Some(&data) {
                continue;
            }
            // The pod started with the ConfigMap as it was; later changes arrive late.
            if written.is_some() {
                tokio::time::sleep(delay).await;
            }
            let text: String = data.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let tmp = env_file.with_extension("kubelet-tmp");
            std::fs::write(&tmp, text).expect("write env file");
            let _ = Command::new("chmod").arg("0644").arg(&tmp).status();
            std::fs::rename(&tmp, &env_file).expect("swap env file");
            written = Some(data);
        }
    })
}

fn token_file() -> PathBuf {
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.tokens", support::unique("tokens")));
    std::fs::write(&path, format!("reload-tests:{TOKEN}\n")).expect("token file");
    path
}

/// POST an alert to the REST intake: (HTTP status, body).
fn post_alert(port: u16, alert: &Value) -> (u16, Value) {
    use std::io::Read;
    let body = alert.to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "POST /api/nexus/alert HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::String(body.into())))
}

/// A one-replica Deployment with a ready pod, its env ConfigMap holding the old value.
async fn target_objects(client: &Client, ns: &str) {
    support::create_config_map(client, ns, "vael-ui-env", &[(KEY, "old")]).await;
    support::create_deployment(client, ns, &support::deployment("vael-ui", 1, None)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    support::wait_for(deployments, "vael-ui", Duration::from_secs(60), |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas) == Some(1)
    })
    .await;
}

fn config(ns: &str, reload_mode: &str, state_dir: &str, env_file: &Path) -> String {
    format!(
        "actions: {{edit_env: [VAEL_UI], reload_flask: [VAEL_UI]}}\n\
         targets:\n  VAEL_UI:\n    namespace: {ns}\n    deployment: vael-ui\n    container: app\n\
         \x20   config_map: vael-ui-env\n    config_map_mode: file\n    env_keys: [{KEY}]\n\
         \x20   reload_mode: {reload_mode}\n\
         \x20   companion: {{command: [{python}, -m, antibody_reload], state_dir: {state_dir}, env_file: {env}, \
         sync_timeout_seconds: 30}}\n\
         rules:\n  - {{name: ui-config, category: config, actions: [edit_env]}}\n\
         defaults: {{plan_namespace: {ns}, rollout_timeout_seconds: 60}}\n",
        python = python().display(),
        env = env_file.display(),
    )
}

/// Watch the plan until it is terminal; return it and when (epoch ms) it was seen terminal.
async fn wait_terminal(client: &Client, ns: &str, name: &str, timeout: Duration) -> (PatchPlan, f64) {
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), ns);
    let plan = support::wait_for(plans, name, timeout, support::plan_finished()).await;
    (plan, epoch_ms())
}

struct Run {
    plan: PatchPlan,
    applied_ms: f64,
    result: Value,
}

/// One harness at a time: 50 clients, a broadcaster and gunicorn each, on 2 cores — two at
/// once measure the machine, not the reload.
static ONE_HARNESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One alert through Antibody against the live app; the harness reports what clients saw.
async fn run_mode(reload_mode: &str, sync_delay: Duration) -> Run {
    let _alone = ONE_HARNESS.lock().await;
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, &format!("reload-{}", reload_mode.replace('_', "-"))).await;
    target_objects(&client, &ns.name).await;
    let mut harness = Harness::start(50, 8);
    let kubelet = kubelet_sync(client.clone(), &ns.name, "vael-ui-env", harness.env_file(), sync_delay);
    let tokens = token_file();
    let controller = ControllerProcess::start(
        &config(&ns.name, reload_mode, &harness.state_dir(), &harness.env_file()),
        &ns.name,
        &["--token-file", &tokens.display().to_string()],
    );
    controller.wait_ready().await;

    let t0 = epoch_ms();
    harness.go(t0, "new");
    let alert = json!({
        "id": support::unique("ui-cfg"), "source": "NEXUS", "category": "config", "severity": "high",
        "msg": "UI config drift", "patch_hint": format!("edit_env:VAEL_UI:{KEY}=new"),
    });
    let (code, body) = post_alert(controller.http_port, &alert);
    assert_eq!(code, 202, "{body}");
    let name = body["plan"].as_str().unwrap_or_else(|| panic!("no plan in {body}")).to_string();
    let (plan, applied_at) = wait_terminal(&client, &ns.name, &name, Duration::from_secs(60)).await;
    let result = harness.next_json(Duration::from_secs(60), "the harness result");
    kubelet.abort();
    eprintln!(
        "[{reload_mode}] alert→terminal {:.0} ms; harness: effect {} ms, all on new config {} ms, disconnects {}, \
         max reconnect {} ms, lost {} of {} events",
        applied_at - t0,
        result["effect_ms"],
        result["all_on_new_config_ms"],
        result["disconnects"],
        result["max_reconnect_ms"],
        result["events_lost"],
        result["events_published"],
    );
    Run { plan, applied_ms: applied_at - t0, result }
}

/// Runs per mode: 1 in the suite; `ANTIBODY_WS_RUNS=N` for the benchmark table (each run
/// is asserted, then the distribution is printed).
fn runs() -> usize {
    std::env::var("ANTIBODY_WS_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

/// p50 / max of one column over the runs, for the printed summary.
fn summary(mode: &str, all: &[Run]) {
    let column = |f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        format!("p50 {:.0} / max {:.0}", v[v.len() / 2], v[v.len() - 1])
    };
    let field = |k: &'static str| move |r: &Run| r.result[k].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "[{mode}] {} run(s): alert→PatchApplied {} ms; effect {} ms; all clients on new config {} ms; \
         disconnects {}; max reconnect {} ms; events lost {}",
        all.len(),
        column(&|r| r.applied_ms),
        column(&field("effect_ms")),
        column(&field("all_on_new_config_ms")),
        column(&field("disconnects")),
        column(&field("max_reconnect_ms")),
        column(&field("events_lost")),
    );
}

fn ms(value: &Value, what: &str) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("{what} missing: {value}"))
}

/// `reload_mode: companion`: the edit reaches every worker in place. PatchApplied only after
/// the workers acknowledged the new generation; no client dropped, no event lost.
#[tokio::test]
async fn in_place_reload_keeps_every_client_and_patch_applied_follows_the_effect() {
    let mut all = Vec::new();
    for _ in 0..runs() {
        let run = run_mode("companion", Duration::from_millis(1500)).await;
        check_in_place(&run);
        all.push(run);
    }
    summary("companion", &all);
}

fn check_in_place(run: &Run) {
    let plan = &run.plan;
    let applied = plan.condition("PatchApplied").expect("PatchApplied");
    assert_eq!((applied.status.as_str(), applied.reason.as_str()), ("True", "Applied"), "{:?}", plan.status);
    let reload = &plan.status.as_ref().expect("status").actions[1];
    assert!(reload.verified.as_deref().is_some_and(|v| v.contains("acknowledged")), "{reload:?}");
    let result = &run.result;
    // The app ran the fix before Antibody said so, and not before the kubelet synced the file.
    let effect = ms(&result["effect_ms"], "effect_ms");
    assert!(effect >= 1500.0, "applied before the env file was synced: {result}");
    assert!(run.applied_ms >= effect, "PatchApplied at {} ms, effect at {effect} ms", run.applied_ms);
    assert_eq!(result["disconnects"], 0, "{result}");
    assert_eq!(result["events_lost"], 0, "{result}");
    assert!(ms(&result["all_on_new_config_ms"], "all_on_new_config_ms") < 4000.0, "{result}");
}

/// `reload_mode: companion_hup`: gunicorn replaces the worker; the retiring worker hands its
/// clients over at once (not at gunicorn's 30 s graceful timeout), spread out, and the new
/// worker replays what they missed.
#[tokio::test]
async fn worker_replacement_moves_every_client_promptly_without_losing_events() {
    let mut all = Vec::new();
    for _ in 0..runs() {
        let run = run_mode("companion_hup", Duration::from_millis(500)).await;
        check_replacement(&run);
        all.push(run);
    }
    summary("companion_hup", &all);
}

fn check_replacement(run: &Run) {
    let plan = &run.plan;
    let applied = plan.condition("PatchApplied").expect("PatchApplied");
    assert_eq!((applied.status.as_str(), applied.reason.as_str()), ("True", "Applied"), "{:?}", plan.status);
    let result = &run.result;
    let gone = ms(&result["old_workers_gone_ms"], "old_workers_gone_ms");
    assert!(run.applied_ms >= gone, "PatchApplied at {} ms before the old worker exited at {gone} ms", run.applied_ms);
    assert_eq!(result["disconnects"], 50, "each client moves exactly once: {result}");
    assert_eq!(result["events_lost"], 0, "{result}");
    // Target: ≤ 3 s after the alert, here with a 0.5 s kubelet sync; bounded generously.
    assert!(ms(&result["all_on_new_config_ms"], "all_on_new_config_ms") < 6000.0, "{result}");
    let first = ms(&result["first_disconnect_ms"], "first_disconnect_ms");
    let last = ms(&result["last_disconnect_ms"], "last_disconnect_ms");
    assert!(last - first >= 100.0, "clients dropped all at once ({first}..{last} ms): {result}");
}

/// Effects nobody can observe are never PatchApplied; probes that fail end the plan with a
/// reason (and roll the edit back when asked); a missing companion is named.
#[tokio::test]
async fn patch_applied_is_never_claimed_without_an_observed_effect() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, "unobserved").await;
    target_objects(&client, &ns.name).await;
    let ns = ns.name.clone();
    let state_dir = std::env::temp_dir().join("antibody-tests").join(support::unique("no-workers"));
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let config = format!(
        "actions: {{edit_env: [UI_SIGNAL, UI_PROBED, UI_FAILING, UI_NO_COMPANION], \
         reload_flask: [UI_SIGNAL, UI_PROBED, UI_FAILING, UI_NO_COMPANION]}}\n\
         targets:\n\
         \x20 UI_SIGNAL: {{namespace: {ns}, deployment: vael-ui, container: app, config_map: vael-ui-env, reload_command: [\"true\"]}}\n\
         \x20 UI_PROBED: {{namespace: {ns}, deployment: vael-ui, container: app, config_map: vael-ui-env, reload_command: [\"true\"], \
         verify: {{command: [echo, healthy], expect_output: healthy}}}}\n\
         \x20 UI_FAILING: {{namespace: {ns}, deployment: vael-ui, container: app, config_map: vael-ui-env, config_map_mode: watched, \
         verify: {{command: [\"false\"], timeout_seconds: 2, interval_ms: 200}}}}\n\
         \x20 UI_NO_COMPANION: {{namespace: {ns}, deployment: vael-ui, container: app, config_map: vael-ui-env, reload_mode: companion, \
         companion: {{command: [/usr/bin/python3, -m, antibody_reload], state_dir: {}}}}}\n",
        state_dir.display()
    );
    let controller = ControllerProcess::start(&config, &ns, &[]);
    controller.wait_ready().await;
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns);
    let apply = |name: &str, actions: Value, rollback: bool| {
        let plan: PatchPlan = serde_json::from_value(json!({
            "apiVersion": "antibody.vael.io/v1alpha1", "kind": "PatchPlan",
            "metadata": {"name": name}, "spec": {"actions": actions, "rollbackOnFailure": rollback},
        }))
        .expect("plan");
        let (client, ns) = (client.clone(), ns.clone());
        async move { support::apply_plan(&client, &ns, &plan).await }
    };
    apply("bare-signal", json!([{"type": "reloadFlask", "target": "UI_SIGNAL"}]), false).await;
    apply("probed", json!([{"type": "reloadFlask", "target": "UI_PROBED"}]), false).await;
    apply("failing-probe", json!([{"type": "editEnv", "target": "UI_FAILING", "key": KEY, "value": "broken"}]), true)
        .await;
    apply("no-companion", json!([{"type": "reloadFlask", "target": "UI_NO_COMPANION"}]), false).await;

    let finished = |name: &'static str| {
        let plans = plans.clone();
        async move { support::wait_for(plans, name, Duration::from_secs(60), support::plan_finished()).await }
    };
    let conditions = |plan: &PatchPlan| {
        let get = |t: &str| plan.condition(t).map(|c| (c.status.clone(), c.reason.clone())).unwrap_or_default();
        (get("Ready"), get("PatchApplied"))
    };
    let bare = finished("bare-signal").await;
    assert_eq!(
        conditions(&bare),
        (("True".into(), "Unverified".into()), ("Unknown".into(), "Unverified".into())),
        "a bare signal is delivered, not applied: {:?}",
        bare.status
    );
    let probed = finished("probed").await;
    assert_eq!(conditions(&probed).1, ("True".into(), "Applied".into()), "{:?}", probed.status);
    let verified = probed.status.as_ref().and_then(|s| s.actions[0].verified.clone()).unwrap_or_default();
    assert!(verified.contains("healthy"), "{verified}");
    let failing = finished("failing-probe").await;
    assert_eq!(conditions(&failing).1.0, "False", "{:?}", failing.status);
    let message = failing.condition("Ready").map(|c| c.message.clone()).unwrap_or_default();
    assert_eq!(conditions(&failing).0.1, "RolledBack", "{message}");
    assert!(message.contains("VerificationFailed") || message.contains("did not pass"), "{message}");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns).get("vael-ui-env").await.expect("cm");
    assert_eq!(cm.data.unwrap_or_default().get(KEY).map(String::as_str), Some("old"), "the backup was restored");
    let missing = finished("no-companion").await;
    assert_eq!(conditions(&missing).0, ("False".into(), "CompanionMissing".into()), "{:?}", missing.status);
    // Nothing was announced as applied that was not.
    let all = plans.list(&ListParams::default()).await.expect("list");
    let applied: Vec<String> = all
        .items
        .iter()
        .filter(|p| p.condition("PatchApplied").is_some_and(|c| c.status == "True"))
        .map(|p| p.name_any())
        .collect();
    assert_eq!(applied, ["probed"]);
}

/// Restart preflight: the plan says what a rollout does to live connections, and
/// `safety.refuse_disruptive_restarts` refuses one that drops them all at once.
#[tokio::test]
async fn restart_preflight_reports_and_refuses_disruptive_rollouts() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, "preflight").await;
    let ns = ns.name.clone();
    support::create_deployment(&client, &ns, &support::deployment("single", 1, None)).await;
    support::create_deployment(&client, &ns, &support::deployment("pair", 2, None)).await;
    let config = format!(
        "actions: {{restart: [SINGLE, PAIR]}}\n\
         targets:\n  SINGLE: {{namespace: {ns}, deployment: single}}\n  PAIR: {{namespace: {ns}, deployment: pair}}\n\
         rules: [{{name: heartbeat, category: heartbeat, actions: [restart]}}]\n\
         safety: {{refuse_disruptive_restarts: true}}\ndefaults: {{rollout_timeout_seconds: 60, plan_namespace: {ns}}}\n"
    );
    let controller = ControllerProcess::start(&config, &ns, &[]);
    controller.wait_ready().await;
    for (name, target) in [("restart-single", "SINGLE"), ("restart-pair", "PAIR")] {
        let plan: PatchPlan = serde_json::from_value(json!({
            "apiVersion": "antibody.vael.io/v1alpha1", "kind": "PatchPlan",
            "metadata": {"name": name}, "spec": {"actions": [{"type": "restart", "target": target}]},
        }))
        .expect("plan");
        support::apply_plan(&client, &ns, &plan).await;
    }
    // `antibody plan --preflight` says it before anything is created.
    let config_file = std::env::temp_dir().join("antibody-tests").join(format!("{ns}.yml"));
    let mut plan_cli = Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(["plan", "--preflight", "--config"])
        .arg(&config_file)
        .env("KUBECONFIG", support::kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("antibody plan");
    let alert = r#"{"id":"hb-1","source":"NEXUS","category":"heartbeat","severity":"high","msg":"x","patch_hint":"restart:SINGLE"}"#;
    plan_cli.stdin.take().expect("stdin").write_all(alert.as_bytes()).expect("alert on stdin");
    let output = plan_cli.wait_with_output().expect("antibody plan output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("# restart:SINGLE: observed by the action itself"), "{stdout}");
    assert!(stdout.contains("1 replica(s)") && stdout.contains("[drops every connection at once]"), "{stdout}");

    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns);
    let single =
        support::wait_for(plans.clone(), "restart-single", Duration::from_secs(60), support::plan_finished()).await;
    let ready = single.condition("Ready").expect("Ready");
    assert_eq!(ready.reason, "DisruptiveRestart", "{ready:?}");
    assert!(ready.message.contains("1 replica"), "{}", ready.message);
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns).get("single").await.expect("single");
    let annotations = deployment.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).unwrap_or_default();
    assert!(!annotations.contains_key("kubectl.kubernetes.io/restartedAt"), "refused means untouched");

    let pair = support::wait_for(plans, "restart-pair", Duration::from_secs(90), support::plan_finished()).await;
    assert_eq!(pair.condition("PatchApplied").map(|c| c.status.as_str()), Some("True"), "{:?}", pair.status);
    let preflight = &pair.status.as_ref().expect("status").actions[0].preflight;
    assert!(preflight.iter().any(|p| p.contains("no readiness probe")), "{preflight:?}");
    assert!(preflight.iter().any(|p| p.contains("no preStop hook")), "{preflight:?}");
}
