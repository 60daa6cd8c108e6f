//! Intake hardening (issue 17) against the real binary on the local control plane: the gRPC
//! intake authenticates before it decodes and bounds memory under a flood of oversized
//! unauthenticated calls; an authenticated oversized message is refused RESOURCE_EXHAUSTED; the
//! intake listeners serve TLS; the NEXUS dial speaks TLS to a grpcio peer; an https:// NEXUS
//! without usable trust roots is refused at startup.
//!
//! Certificates are a throwaway CA made with the `openssl` command for each test.

use antibody_test_support as support;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use antibody::config::Config;
use antibody::ingest::grpc::proto;
use antibody::plan::PatchPlan;
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::api::{Api, ListParams};
use support::{ControllerProcess, TestNamespace};
use tonic::Code;
use tonic::codegen::Bytes;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tower::ServiceExt;

const TOKEN: &str = "t0ken-for-the-hardening-tests-0123456789";

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn test_config(ns: &str) -> String {
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    for target in config.targets.values_mut() {
        target.namespace = Some(ns.to_string());
    }
    serde_yaml::to_string(&config).expect("config serialises")
}

fn token_file() -> PathBuf {
    let path = temp_dir().join(format!("{}.tokens", support::unique("tokens")));
    std::fs::write(&path, format!("hardening:{TOKEN}\n")).expect("token file");
    path
}

/// A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it.
struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    fn new() -> Self {
        let dir = temp_dir().join(support::unique("pki"));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let ca_subject = [
            "-subj",
            "/CN=antibody-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ];
        // CA extensions spelled out: not every openssl.cnf adds them.
        openssl(
            &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1"], &ca_subject].concat(),
        );
        let pki = Self { dir };
        pki.issue("server", "localhost");
        pki
    }

    /// `<name>.pem` and `<name>.key`: a server certificate for localhost / 127.0.0.1, subject `cn`.
    fn issue(&self, name: &str, cn: &str) {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&self.dir).output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat());
        std::fs::write(
            self.dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ]);
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.pem")).expect("ca.pem")
    }
}

/// VmRSS and VmHWM (peak) of a process we started, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// One `ThreatAlert` whose `id` is `payload_len` NUL bytes (valid protobuf and UTF-8), as a gRPC
/// request body produced lazily: the client holds 64 KiB, not the message.
fn oversized_body(payload_len: usize) -> tonic::body::Body {
    let mut protobuf_head = vec![0x0a]; // field 1, length-delimited
    let mut n = payload_len;
    while n >= 0x80 {
        protobuf_head.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    protobuf_head.push(n as u8);
    let message_len = (protobuf_head.len() + payload_len) as u32;
    let mut head = vec![0u8]; // uncompressed
    head.extend_from_slice(&message_len.to_be_bytes());
    head.extend(protobuf_head);
    let chunks = payload_len.div_ceil(ZEROS.len());
    let zeros = (0..chunks).map(move |i| Bytes::from_static(&ZEROS[..ZEROS.len().min(payload_len - i * ZEROS.len())]));
    let frames = futures::stream::iter(std::iter::once(Bytes::from(head)).chain(zeros))
        .map(|bytes| Ok::<_, Infallible>(http_body::Frame::data(bytes)));
    tonic::body::Body::new(http_body_util::StreamBody::new(frames))
}

const SUBMIT: &str = "/nexus.v1.AlertIntake/Submit";

/// A raw `AlertIntake/Submit` with an oversized body; the gRPC status code it ends with.
async fn submit_oversized(channel: Channel, token: Option<&str>, payload_len: usize) -> (Code, String) {
    call_oversized(channel, SUBMIT, token, payload_len).await
}

/// A raw call of `path` with an oversized body; the gRPC status code it ends with.
async fn call_oversized(channel: Channel, path: &str, token: Option<&str>, payload_len: usize) -> (Code, String) {
    let mut request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(oversized_body(payload_len)).expect("request");
    let response = match channel.oneshot(request).await {
        Ok(response) => response,
        Err(e) => return (Code::Unknown, format!("transport: {e}")),
    };
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return (status.code(), status.message().to_string());
    }
    match response.into_body().collect().await {
        Ok(collected) => match collected.trailers().and_then(tonic::Status::from_header_map) {
            Some(status) => (status.code(), status.message().to_string()),
            None => (Code::Unknown, "no grpc-status".into()),
        },
        Err(e) => (Code::Unknown, format!("body: {e}")),
    }
}

fn alert_json(id: &str) -> String {
    serde_json::json!({"id": id, "source": "NEXUS", "category": "heartbeat", "severity": "high",
        "patch_hint": "restart:VAEL_Core"})
    .to_string()
}

async fn plan_count(client: &kube::Client, ns: &str) -> usize {
    Api::<PatchPlan>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list").items.len()
}

fn metrics(port: u16) -> String {
    support::http_get(port, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

/// 200 concurrent unauthenticated calls of 4 MiB − 1 KiB (just under tonic's default decode
/// limit, so a server that decodes before authenticating would buffer and decode every one)
/// over 8 connections: every answer is UNAUTHENTICATED and the controller's peak RSS stays
/// bounded. Then an authenticated message over `ingest.max_body_bytes` is RESOURCE_EXHAUSTED.
#[tokio::test]
async fn unauthenticated_flood_is_refused_before_decoding_and_memory_stays_bounded() {
    const CALLS: usize = 200;
    const CONNECTIONS: usize = 8;
    const PAYLOAD: usize = 4 * 1024 * 1024 - 1024;
    /// Peak RSS growth allowed over the idle controller's (measured: see README, intake section).
    const GROWTH_BOUND_KIB: u64 = 64 * 1024;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "harden-flood").await;
    support::install_crd(&client).await;
    let grpc_port = support::free_port();
    let tokens = token_file();
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let controller = ControllerProcess::start(
        &test_config(&ns.name),
        &ns.name,
        &["--token-file", &tokens.display().to_string(), "--grpc-addr", &grpc_addr],
    );
    controller.wait_ready().await;
    let (idle_rss, idle_peak) = memory_kib(controller.pid());

    let endpoint = Endpoint::from_shared(format!("http://{grpc_addr}")).expect("endpoint");
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(endpoint.connect().await.expect("connect to the gRPC intake"));
    }
    let started = Instant::now();
    let calls = (0..CALLS).map(|i| submit_oversized(channels[i % CONNECTIONS].clone(), None, PAYLOAD));
    let answers = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls))
        .await
        .expect("the flood is answered within 60 s");
    let elapsed = started.elapsed();
    let (rss, peak) = memory_kib(controller.pid());
    eprintln!(
        "flood: {CALLS} × {PAYLOAD} B unauthenticated over {CONNECTIONS} connections in {elapsed:?}; \
         RSS idle {idle_rss} KiB (peak {idle_peak}), after {rss} KiB, peak {peak} KiB"
    );
    let wrong: Vec<_> = answers.iter().filter(|(code, _)| *code != Code::Unauthenticated).collect();
    assert!(
        wrong.is_empty(),
        "{} of {CALLS} answers were not UNAUTHENTICATED: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        peak < idle_peak.max(idle_rss) + GROWTH_BOUND_KIB,
        "peak RSS {peak} KiB grew more than {GROWTH_BOUND_KIB} KiB over idle {idle_rss} KiB"
    );

    // Reflection needs no token: its requests are held to 16 KiB, not decoded at 4 MiB (the
    // peak RSS says which).
    for path in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        let calls = (0..40).map(|i| call_oversized(channels[i % CONNECTIONS].clone(), path, None, PAYLOAD));
        for (code, message) in futures::future::join_all(calls).await {
            // tonic-reflection ends the stream (OK) when its request stream fails to decode.
            assert!(matches!(code, Code::OutOfRange | Code::Ok), "{path}: {code:?} {message}");
        }
    }
    let (_, reflection_peak) = memory_kib(controller.pid());
    assert!(
        reflection_peak < idle_peak.max(idle_rss) + GROWTH_BOUND_KIB,
        "reflection flood: peak RSS {reflection_peak} KiB"
    );

    // Authenticated and over ingest.max_body_bytes (256 KiB by default): refused from the
    // length prefix, with a message that names the limit.
    let (code, message) = submit_oversized(channels[0].clone(), Some(TOKEN), 1024 * 1024).await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("ingest.max_body_bytes (262144 bytes)"), "{message}");
    // And the intake still works for a real alert on the same connection.
    let mut intake = proto::alert_intake_client::AlertIntakeClient::new(channels[0].clone());
    let mut request = tonic::Request::new(proto::ThreatAlert { json: alert_json("flood-ok"), ..Default::default() });
    request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("metadata"));
    let reply = intake.submit(request).await.expect("authenticated submit").into_inner();
    assert_eq!(reply.outcome, "plan_created", "{reply:?}");
    assert_eq!(plan_count(&client, &ns.name).await, 1, "only the authenticated alert made a plan");
    let m = metrics(controller.http_port);
    assert!(!m.contains("feed=\"grpc_intake\",outcome=\"refused\""), "nothing unauthenticated was decoded:\n{m}");

    // ingest.max_body_bytes is hot: after a reload, calls that start are held to the new limit.
    let mut config = Config::from_yaml(&test_config(&ns.name)).expect("config");
    config.ingest.max_body_bytes = 2048;
    let path = temp_dir().join(format!("{}.yml", ns.name));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("rewrite the config");
    let series = r#"antibody_config_reloads_total{result="applied"}"#;
    let reloads = support::wait_metric(controller.http_port, series, 1.0, Duration::from_secs(15)).await;
    assert!(reloads >= 1.0, "the config reload was not applied:\n{}", controller.logs());
    let (code, message) = submit_oversized(channels[1].clone(), Some(TOKEN), 4096).await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("(2048 bytes)"), "{message}");
}

/// `--tls-cert/--tls-key`: gRPC and REST intake over TLS with the test CA create plans; a
/// plaintext client to either TLS port gets nothing.
#[tokio::test]
async fn intake_listeners_serve_tls() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "harden-tls").await;
    support::install_crd(&client).await;
    let pki = TestPki::new();
    let grpc_port = support::free_port();
    let tokens = token_file();
    let controller = ControllerProcess::start(
        &test_config(&ns.name),
        &ns.name,
        &[
            "--token-file",
            &tokens.display().to_string(),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc_port}"),
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
        ],
    );
    // /readyz over TLS (the support helper speaks plaintext, which must not work any more).
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca()).expect("CA"))
        .build()
        .expect("https client");
    let base = format!("https://localhost:{}", controller.http_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = https.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16());
        if matches!(ready, Ok(200)) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready over https in 30 s ({ready:?}):\n{}", controller.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(support::http_get(controller.http_port, "/readyz"), None, "plaintext HTTP to the TLS port answers");

    // gRPC over TLS with the test CA.
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca())).domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{grpc_port}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connect to the gRPC intake");
    let mut intake = proto::alert_intake_client::AlertIntakeClient::new(channel);
    let mut request = tonic::Request::new(proto::ThreatAlert { json: alert_json("tls-grpc"), ..Default::default() });
    request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("metadata"));
    let reply = intake.submit(request).await.expect("submit over TLS").into_inner();
    assert_eq!(reply.outcome, "plan_created", "{reply:?}");
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    assert!(plans.get_opt(&reply.plan).await.expect("get plan").is_some(), "plan {} exists", reply.plan);

    // REST over TLS.
    let body = serde_json::json!({"id": "tls-rest", "source": "NEXUS", "category": "policy", "severity": "high",
        "patch_hint": "reload_flask:VAEL_UI"});
    let response = https
        .post(format!("{base}/api/nexus/alert"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("REST over TLS");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("plan_created"), "{text}");
    assert_eq!(plan_count(&client, &ns.name).await, 2);

    // Plaintext gRPC to the TLS port fails.
    let plaintext = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5));
    let refused = match plaintext.connect().await {
        Err(_) => true,
        Ok(channel) => {
            let mut intake = proto::alert_intake_client::AlertIntakeClient::new(channel);
            let mut request =
                tonic::Request::new(proto::ThreatAlert { json: alert_json("tls-plain"), ..Default::default() });
            request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("metadata"));
            intake.submit(request).await.is_err()
        }
    };
    assert!(refused, "a plaintext gRPC client got an answer from the TLS port");
    assert_eq!(plan_count(&client, &ns.name).await, 2, "the plaintext call created nothing");

    // Certificate rotation: new files in place (as a Secret update does) are served to new
    // connections, no restart.
    pki.issue("renewed", "renewed.localhost");
    for name in ["server.key", "server.pem"] {
        let renewed = name.replace("server", "renewed");
        std::fs::copy(pki.dir.join(&renewed), pki.dir.join(name)).expect("rotate");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let subject = served_subject(controller.http_port);
        if subject.contains("renewed.localhost") {
            break;
        }
        assert!(Instant::now() < deadline, "still serving {subject:?} 15 s after rotation:\n{}", controller.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = https.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16());
    assert!(matches!(after, Ok(200)), "the renewed certificate verifies with the CA: {after:?}");

    // A client that does not trust the CA is refused by its own verifier.
    let untrusted = reqwest::Client::builder().tls_built_in_root_certs(true).build().expect("client");
    assert!(untrusted.get(format!("{base}/readyz")).send().await.is_err(), "an untrusted certificate was accepted");
}

/// The subject of the certificate served on 127.0.0.1:`port` (read with `openssl s_client`).
fn served_subject(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or("").to_string()
}

/// A peer process we started (killed on drop).
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn start(script: &str, args: &[&str]) -> Self {
        let python = support::python_env().join("bin/python");
        let log = temp_dir().join(format!("{}.log", support::unique("nexus-tls")));
        let file = std::fs::File::create(&log).expect("peer log");
        let child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .expect("start the peer");
        let peer = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !peer.text().contains("\"event\": \"ready\"") {
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

/// `--nexus-grpc https://… --nexus-ca`: the subscriber dials the grpcio NEXUS over TLS and the
/// alerts it streams become plans.
#[tokio::test]
async fn nexus_feed_over_tls() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "harden-nexus").await;
    support::install_crd(&client).await;
    let pki = TestPki::new();
    let port = support::free_port();
    let alerts = temp_dir().join(format!("{}.jsonl", support::unique("alerts")));
    std::fs::write(&alerts, format!("{}\n", alert_json("nexus-tls-1"))).expect("alerts");
    let port_text = port.to_string();
    let (cert, key, alerts_path) = (pki.path("server.pem"), pki.path("server.key"), alerts.display().to_string());
    let feed = Peer::start(
        "nexus_feed.py",
        &[
            "--port",
            &port_text,
            "--alerts",
            &alerts_path,
            "--interval",
            "0.1",
            "--hold",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let controller = ControllerProcess::start(
        &test_config(&ns.name),
        &ns.name,
        &["--nexus-grpc", &format!("https://localhost:{port}"), "--nexus-ca", &pki.path("ca.pem")],
    );
    controller.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while plan_count(&client, &ns.name).await < 1 {
        assert!(Instant::now() < deadline, "no plan from the TLS feed in 30 s\n{}\n{}", feed.text(), controller.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(feed.text().contains("\"event\": \"sent\""), "{}", feed.text());
    assert!(metrics(controller.http_port).contains("antibody_alerts_total{feed=\"grpc\",outcome=\"plan_created\"} 1"));
}

/// `--nexus-ws https://… --nexus-ca`: the Socket.IO feed over TLS (wss://) to the
/// Flask-SocketIO NEXUS stand-in, trusting only the test CA.
#[tokio::test]
async fn nexus_socketio_feed_over_tls() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "harden-wss").await;
    support::install_crd(&client).await;
    let pki = TestPki::new();
    let port = support::free_port();
    let port_text = port.to_string();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let nexus = Peer::start("nexus_ws.py", &["--port", &port_text, "--tls-cert", &cert, "--tls-key", &key]);
    let controller = ControllerProcess::start(
        &test_config(&ns.name),
        &ns.name,
        &["--nexus-ws", &format!("https://localhost:{port}"), "--nexus-ca", &pki.path("ca.pem")],
    );
    controller.wait_ready().await;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca()).expect("CA"))
        .build()
        .expect("https client");
    let base = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connected = match https.get(format!("{base}/clients")).send().await {
            Ok(response) => response
                .text()
                .await
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v["connected"].as_u64()),
            Err(_) => None,
        };
        if connected.unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "antibody did not connect over wss in 30 s\n{}\n{}",
            nexus.text(),
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let emitted = https
        .post(format!("{base}/emit"))
        .header("content-type", "application/json")
        .body(alert_json("wss-1"))
        .send()
        .await;
    assert!(emitted.is_ok_and(|r| r.status().is_success()), "emit");
    let deadline = Instant::now() + Duration::from_secs(20);
    while plan_count(&client, &ns.name).await < 1 {
        assert!(
            Instant::now() < deadline,
            "no plan from the wss feed in 20 s\n{}\n{}",
            nexus.text(),
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics(controller.http_port).contains("antibody_alerts_total{feed=\"ws\",outcome=\"plan_created\"} 1"));
}

/// Schemes and trust that cannot work end the process at startup with the reason.
#[test]
fn unusable_tls_settings_are_refused_at_startup() {
    let dir = temp_dir().join(support::unique("no-roots"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("antibody.yml");
    std::fs::write(&config, include_str!("fixtures/antibody.yml")).expect("config");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").expect("file");
    let not_pem = not_pem.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        // No --nexus-ca and a system store with no roots (SSL_CERT_FILE/DIR point at nothing).
        (&["--nexus-grpc", "https://127.0.0.1:1"], "needs trust roots"),
        (&["--nexus-grpc", "https://127.0.0.1:1", "--nexus-ca", &not_pem], "no PEM certificate"),
        (&["--nexus-grpc", "http://127.0.0.1:1", "--nexus-ca", &not_pem], "use https://"),
        (&["--nexus-grpc", "grpcs://127.0.0.1:1"], "expected http://HOST:PORT or https://"),
        (&["--tls-cert", &not_pem, "--tls-key", &not_pem], "--tls-cert/--tls-key"),
        (&["--tls-cert", &not_pem], "--tls-key"),
        (&["--nexus-ws", "http://127.0.0.1:1", "--nexus-ca", &not_pem], "use https:// or wss://"),
        (&["--nexus-ws", "wss://127.0.0.1:1", "--nexus-ca", &not_pem], "no PEM certificate"),
    ];
    for (flags, want) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_antibody"))
            .args(["run", "--config"])
            .arg(&config)
            .args(["--http-addr", "127.0.0.1:0"])
            .args(*flags)
            .env("KUBECONFIG", support::kubeconfig_path())
            .env("SSL_CERT_FILE", dir.join("empty-bundle.pem"))
            .env("SSL_CERT_DIR", &dir)
            .env("ANTIBODY_AUDIT_DIR", dir.join("audit"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run antibody");
        // A refusal is immediate; one that started anyway is killed (it is our child) and fails.
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let started = matches!(child.try_wait(), Ok(None));
        if started {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!started && !out.status.success(), "{flags:?} started:\n{stderr}");
        assert!(stderr.contains(want), "{flags:?}: want {want:?} in:\n{stderr}");
    }
}
