//! Adversarial input: replays `tests/adversarial/corpus.jsonl` (made by `generate.py` there).
//!
//! Alerts, hints, configs and plans go through the pure functions the controller uses
//! (`ThreatAlert::from_json`, `PatchHint::parse`, `Config::from_yaml`, signature check +
//! admission); HTTP cases, and every alert again over REST, go to a real `antibody run`. Each
//! must be refused with the expected reason; afterwards no PatchPlan exists, the controller is
//! alive and its memory stayed bounded.

use antibody::names::SIGNATURE_ANNOTATION;
use antibody_test_support as support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use antibody::admission;
use antibody::alert::{PatchHint, ThreatAlert};
use antibody::config::Config;
use antibody::plan::{PatchPlan, PatchPlanSpec};
use antibody::signing;
use base64::Engine;
use ed25519_dalek::SigningKey;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use serde_json::Value;
use support::{ControllerProcess, TestNamespace};

const TOKEN: &str = "t0ken-for-the-adversarial-tests-012345678";
const CORPUS: &str = include_str!("adversarial/corpus.jsonl");
/// The controller must stay under this resident size however hostile the input.
const MAX_RSS_KIB: u64 = 256 * 1024;

#[derive(Debug, Deserialize)]
struct Case {
    kind: String,
    name: String,
    input: Value,
    expect: String,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default, rename = "gen")]
    generator: Option<Value>,
    #[serde(default)]
    rest_skip: bool,
}

fn corpus() -> Vec<Case> {
    CORPUS
        .lines()
        .enumerate()
        .map(|(i, line)| serde_json::from_str(line).unwrap_or_else(|e| panic!("corpus line {}: {e}", i + 1)))
        .collect()
}

/// `gen` expands big inputs: `{DEEP}` → N nested arrays, `{PAD}` → N pad characters,
/// `repeat` → a JSON list of N copies of `item`.
fn generated(spec: &Value) -> String {
    let n = spec.get("deep").or(spec.get("pad")).or(spec.get("repeat")).and_then(Value::as_u64).expect("gen size");
    let n = usize::try_from(n).expect("size");
    if let Some(item) = spec.get("item").and_then(Value::as_str) {
        return format!("[{}]", vec![item; n].join(","));
    }
    let template = spec["template"].as_str().expect("gen template");
    if spec.get("deep").is_some() {
        template.replace("{DEEP}", &format!("{}{}", "[".repeat(n), "]".repeat(n)))
    } else {
        let pad = spec.get("pad_char").and_then(Value::as_str).unwrap_or("x");
        template.replace("{PAD}", &pad.repeat(n))
    }
}

fn text_input(case: &Case) -> String {
    match &case.generator {
        Some(spec) => generated(spec),
        None => case.input.as_str().unwrap_or_else(|| panic!("{}: input must be a string", case.name)).to_string(),
    }
}

struct Keys {
    trusted: SigningKey,
    untrusted: SigningKey,
}

/// antibody.yml, requiring signatures from key `ci`.
fn signed_config(keys: &Keys) -> Config {
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    let public = base64::engine::general_purpose::STANDARD.encode(keys.trusted.verifying_key().to_bytes());
    config.safety.trusted_keys = BTreeMap::from([("ci".to_string(), public)]);
    config.safety.require_signature = true;
    config.validate().expect("signed config is valid");
    config
}

/// Build the plan a case describes, sign it as told, then check signature and admission.
fn plan_verdict(config: &Config, keys: &Keys, input: &Value) -> Result<(), String> {
    let spec: PatchPlanSpec = serde_json::from_value(input["spec"].clone()).map_err(|e| format!("spec: {e}"))?;
    let namespace = input["namespace"].as_str().expect("namespace");
    let name = input["name"].as_str().expect("name");
    let mut plan = PatchPlan::new(name, spec.clone());
    plan.metadata.namespace = Some(namespace.into());
    let signature = &input["signature"];
    let annotation = match signature["mode"].as_str().expect("signature.mode") {
        "none" => None,
        "raw" => Some(signature["annotation"].as_str().expect("annotation").to_string()),
        "sign" => {
            let signed_spec = match signature.get("signed_spec") {
                Some(other) => serde_json::from_value(other.clone()).expect("signed_spec"),
                None => spec,
            };
            let mut original = PatchPlan::new(signature["signed_name"].as_str().unwrap_or(name), signed_spec);
            original.metadata.namespace = Some(signature["signed_namespace"].as_str().unwrap_or(namespace).into());
            let key = if signature["key"] == "untrusted" { &keys.untrusted } else { &keys.trusted };
            let key_name = signature["key_name"].as_str().expect("key_name");
            signing::sign(&mut original, key_name, key, signing::DEFAULT_TTL_SECONDS).expect("sign");
            let value = original.annotations()[SIGNATURE_ANNOTATION].clone();
            Some(mangle(value, signature.get("mangle").and_then(Value::as_str)))
        }
        other => panic!("unknown signature mode {other}"),
    };
    if let Some(annotation) = annotation {
        plan.metadata.annotations = Some(BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), annotation)]));
    }
    admission::check_signature(config, &plan, true).map_err(|r| format!("{}: {}", r.reason, r.message))?;
    admission::admit(config, &plan.spec, namespace).map_err(|r| format!("{}: {}", r.reason, r.message))?;
    Ok(())
}

use kube::ResourceExt;

/// Ways a copied signature annotation gets damaged or forged.
fn mangle(value: String, how: Option<&str>) -> String {
    match how {
        None => value,
        Some("truncate") => value[..value.len() - 10].to_string(),
        Some("append") => format!("{value}AAAA"),
        Some("flip") => {
            let mut bytes = value.into_bytes();
            let at = bytes.len() - 20;
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).expect("ascii")
        }
        Some(other) => {
            let algorithm = other.strip_prefix("alg:").expect("mangle");
            value.replacen("ed25519", algorithm, 1)
        }
    }
}

#[test]
fn pure_parsers_refuse_every_hostile_input_with_a_reason() {
    let cases = corpus();
    assert!(cases.len() >= 200, "the corpus holds {} cases", cases.len());
    let keys = Keys { trusted: SigningKey::from_bytes(&[7; 32]), untrusted: SigningKey::from_bytes(&[9; 32]) };
    let config = signed_config(&keys);
    let mut counts = BTreeMap::<&str, usize>::new();
    let started = Instant::now();
    let mut failures = Vec::new();
    for case in cases.iter().filter(|c| c.kind != "http") {
        let t = Instant::now();
        let verdict: Result<(), String> = match case.kind.as_str() {
            "alert" => ThreatAlert::from_json(&text_input(case)).map(drop).map_err(|e| e.to_string()),
            "hint" => PatchHint::parse(&text_input(case)).map(drop).map_err(|e| e.to_string()),
            "config" => Config::from_yaml(&text_input(case)).map(drop).map_err(|e| e.to_string()),
            "plan" => plan_verdict(&config, &keys, &case.input),
            other => panic!("unknown kind {other}"),
        };
        match verdict {
            Ok(()) => failures.push(format!("{} {:?}: accepted", case.kind, case.name)),
            Err(reason) if !reason.contains(&case.expect) => {
                failures.push(format!("{} {:?}: reason {reason:?} lacks {:?}", case.kind, case.name, case.expect))
            }
            Err(_) => {}
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{}: took {:?}", case.name, t.elapsed());
        *counts.entry(case.kind.as_str()).or_default() += 1;
    }
    eprintln!("replayed {counts:?} in {:?}", started.elapsed());
    for kind in ["alert", "hint", "config", "plan"] {
        assert!(counts.get(kind).is_some_and(|n| *n > 0), "the corpus replays {kind} cases: {counts:?}");
    }
    assert!(failures.is_empty(), "{} of the corpus misbehaved:\n{}", failures.len(), failures.join("\n"));
}

/// One raw HTTP/1.1 exchange. The body is written from another thread so an early answer (413
/// before a 10 MB body is read) is still read before the server closes the connection.
fn exchange(port: u16, method: &str, path: &str, headers: &[String], body: Vec<u8>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut writer = stream.try_clone().expect("clone stream");
    writer.set_write_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&body));
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&response).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // The raw response, then the decoded reason (JSON escapes quotes).
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let reason = serde_json::from_str::<Value>(body).ok().and_then(|v| v["reason"].as_str().map(String::from));
    (code, format!("{text}\n{}", reason.unwrap_or_default()))
}

fn http_case(port: u16, case: &Case) -> (u16, String) {
    let input = &case.input;
    let mut headers = Vec::new();
    match (input.get("raw_authorization").and_then(Value::as_str), input["token"].as_str()) {
        (Some(raw), _) => headers.push(format!("Authorization: {raw}")),
        (None, Some("valid")) => headers.push(format!("Authorization: Bearer {TOKEN}")),
        (None, Some(other)) => headers.push(format!("Authorization: Bearer {other}")),
        (None, None) => {}
    }
    let content_type = input.get("content_type").and_then(Value::as_str).unwrap_or("application/json");
    headers.push(format!("Content-Type: {content_type}"));
    let body = if let Some(spec) = &case.generator {
        generated(spec).into_bytes()
    } else if let Some(hex_body) = input.get("body_hex").and_then(Value::as_str) {
        hex::decode(hex_body).expect("body_hex")
    } else {
        input["body"].as_str().unwrap_or("").as_bytes().to_vec()
    };
    exchange(port, input["method"].as_str().expect("method"), input["path"].as_str().expect("path"), &headers, body)
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("controller /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_running_controller_refuses_hostile_http_and_stays_up_and_bounded() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "adversarial").await;
    support::install_crd(&client).await;
    let mut config =
        Config::from_yaml(include_str!("fixtures/antibody.yml")).expect("tests/fixtures/antibody.yml is valid");
    for target in config.targets.values_mut() {
        target.namespace = Some(ns.name.clone());
    }
    let dir = std::env::temp_dir().join("antibody-tests");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tokens = dir.join(format!("{}.tokens", support::unique("adversarial")));
    std::fs::write(&tokens, format!("adversarial:{TOKEN}\n")).expect("token file");
    let config = serde_yaml::to_string(&config).expect("config serialises");
    let tokens_arg = tokens.display().to_string();
    let mut controller = ControllerProcess::start(&config, &ns.name, &["--token-file", &tokens_arg]);
    controller.wait_ready().await;
    let port = controller.http_port;
    let pid = controller.pid();
    let (rss_before, _) = rss_kib(pid);

    let started = Instant::now();
    let cases = corpus();
    let mut failures = Vec::new();
    let mut sent = 0;
    for case in cases.iter().filter(|c| c.kind == "http") {
        let (status, response) = http_case(port, case);
        sent += 1;
        let expected_status = case.status.expect("http cases name a status");
        if status != expected_status || !response.contains(&case.expect) {
            failures.push(format!(
                "{:?}: got {status}, want {expected_status} with {:?}: {response:.300}",
                case.name, case.expect
            ));
        }
    }
    // Every hostile alert again, as a REST client would send it: a 4xx, never a plan.
    for case in cases.iter().filter(|c| c.kind == "alert" && c.generator.is_none() && !c.rest_skip) {
        let headers = [format!("Authorization: Bearer {TOKEN}"), "Content-Type: application/json".to_string()];
        let (status, response) = exchange(port, "POST", "/api/nexus/alert", &headers, text_input(case).into_bytes());
        sent += 1;
        if !(400..500).contains(&status) || !response.contains("\"error\"") {
            failures.push(format!("REST alert {:?}: got {status}: {response:.300}", case.name));
        }
    }
    let elapsed = started.elapsed();
    let (rss_after, rss_peak) = rss_kib(pid);
    eprintln!(
        "{sent} hostile requests in {elapsed:?}; controller RSS {rss_before} KiB before, {rss_after} KiB after, peak {rss_peak} KiB"
    );
    assert!(failures.is_empty(), "{} requests misbehaved:\n{}", failures.len(), failures.join("\n"));
    assert!(controller.alive(), "the controller survived:\n{}", controller.logs());
    assert_eq!(support::http_get(port, "/livez").map(|(c, _)| c), Some(200));
    assert!(rss_peak < MAX_RSS_KIB, "peak RSS {rss_peak} KiB over {MAX_RSS_KIB} KiB");
    let plans: Api<PatchPlan> = Api::namespaced(client.clone(), &ns.name);
    let listed = plans.list(&ListParams::default()).await.expect("list plans");
    assert!(
        listed.items.is_empty(),
        "no PatchPlan was created: {:?}",
        listed.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_file(&tokens);
}

/// Random mutations of valid inputs (a stable stand-in for fuzzing, seeded so failures replay):
/// the parsers never panic, and any spec that parses signs and verifies round trip.
#[test]
fn mutated_inputs_never_panic_and_signatures_round_trip() {
    let seed = std::env::var("ANTIBODY_MUTATION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let rounds: usize = std::env::var("ANTIBODY_MUTATION_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6_000);
    let mut rng = fastrand::Rng::with_seed(seed);
    let alert = r#"{"id":"a1","source":"NEXUS","category":"heartbeat","severity":"high","msg":"Pulse missed","patch_hint":"edit_env:VAEL_Core:LOG_LEVEL=debug","ts":"2025-05-30T12:34:56Z"}"#;
    let config = include_str!("fixtures/antibody.yml");
    let spec = r#"{"actions":[{"type":"editEnv","target":"VAEL_Core","key":"LOG_LEVEL","value":"debug"},{"type":"restart","target":"Sentinel"}],"dryRun":true,"alert":{"id":"a","source":"N","category":"c","severity":"high","fingerprint":"f"}}"#;
    let key = SigningKey::from_bytes(&[7; 32]);
    let trusted = BTreeMap::from([("ci".to_string(), key.verifying_key())]);
    let alphabet: &[u8] = b"{}[]:,\"\\ \n\t-_=:./$;`'0123456789aAzZ\x00\xff";
    let started = Instant::now();
    let (mut parsed_alerts, mut parsed_configs, mut signed_specs) = (0, 0, 0);
    for round in 0..rounds {
        let base = match round % 3 {
            0 => alert,
            1 => config,
            _ => spec,
        };
        let mut bytes = base.as_bytes().to_vec();
        for _ in 0..rng.usize(1..8) {
            let at = rng.usize(..=bytes.len());
            match rng.u8(..4) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, alphabet[rng.usize(..alphabet.len())]),
                2 if at < bytes.len() => bytes[at] = alphabet[rng.usize(..alphabet.len())],
                _ => {
                    let end = (at + rng.usize(..32)).min(bytes.len());
                    let chunk = bytes[at..end].to_vec();
                    bytes.splice(at..at, chunk);
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        match round % 3 {
            0 => {
                if let Ok(alert) = ThreatAlert::from_json(&text) {
                    parsed_alerts += 1;
                    // A valid alert always has a valid plan name.
                    antibody::validate::dns1123_subdomain(&alert.plan_name()).expect("plan name");
                }
                if let Some((_, hint)) = text.split_once("patch_hint\":\"") {
                    let _ = PatchHint::parse(hint.split('"').next().unwrap_or(""));
                }
            }
            1 => parsed_configs += usize::from(Config::from_yaml(&text).is_ok()),
            _ => {
                if let Ok(spec) = serde_json::from_str::<PatchPlanSpec>(&text) {
                    let mut plan = PatchPlan::new("p", spec);
                    plan.metadata.namespace = Some("ns".into());
                    signing::sign(&mut plan, "ci", &key, 60).expect("sign a parsed spec");
                    let verified = signing::verify_ignoring_expiry(&plan, &trusted).map(|v| v.key_name);
                    assert_eq!(verified, Ok("ci".to_string()), "{text}");
                    signed_specs += 1;
                }
            }
        }
    }
    eprintln!(
        "{rounds} mutations (seed {seed}) in {:?}: {parsed_alerts} alerts, {parsed_configs} configs, {signed_specs} specs still valid",
        started.elapsed()
    );
    // Both sides were exercised: some mutants of each kind still parse (so the round trip and
    // the plan-name check really ran) and some do not (so the mutations bite). With the fixed
    // seed and 6,000 rounds each count is in the hundreds; fewer than 1% would mean the
    // mutator or a parser changed.
    let per_kind = rounds / 3;
    for (kind, valid) in [("alerts", parsed_alerts), ("configs", parsed_configs), ("specs", signed_specs)] {
        assert!(valid >= per_kind / 100, "only {valid} of {per_kind} mutated {kind} still parsed: nothing was checked");
        assert!(valid < per_kind, "every mutated {kind} parsed: the mutations changed nothing");
    }
}
