//! The offline commands the README documents, run as a user runs them: `antibody crd` and
//! `antibody plan` (one alert on stdin → the PatchPlan it would create). No cluster needed.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use antibody::plan::{ActionType, PatchPlan};

fn antibody(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_antibody"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run antibody");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait for antibody")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let out = antibody(&["crd"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed = include_str!("../crds/patchplan.yaml");
    assert_eq!(text(&out.stdout), committed, "`antibody crd` is what crds/patchplan.yaml holds");
    let crd: serde_yaml::Value = serde_yaml::from_str(&text(&out.stdout)).expect("YAML");
    assert_eq!(crd["kind"].as_str(), Some("CustomResourceDefinition"));
    assert_eq!(crd["metadata"]["name"].as_str(), Some("patchplans.antibody.vael.io"));
}

#[test]
fn plan_command_prints_the_plan_an_alert_would_create() {
    let alert = r#"{"id":"h1","source":"NEXUS","category":"heartbeat","severity":"high","msg":"missed","patch_hint":"restart:VAEL_Core"}"#;
    let out = antibody(&["plan", "--config", "antibody.yml", "--namespace", "ops"], alert);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: PatchPlan = serde_yaml::from_str(&text(&out.stdout)).expect("a PatchPlan on stdout");
    assert_eq!(plan.metadata.namespace.as_deref(), Some("ops"));
    assert!(plan.metadata.name.as_deref().is_some_and(|n| n.starts_with("heartbeat-")), "{:?}", plan.metadata.name);
    let actions: Vec<(ActionType, &str)> = plan.spec.actions.iter().map(|a| (a.action, a.target.as_str())).collect();
    assert_eq!(actions, [(ActionType::Restart, "VAEL_Core")]);
    assert_eq!(plan.spec.alert.as_ref().map(|a| a.id.as_str()), Some("h1"));
}

#[test]
fn plan_command_says_no_action_for_info_and_refuses_bad_input() {
    let info = r#"{"id":"i1","source":"NEXUS","category":"heartbeat","severity":"info","msg":"fine"}"#;
    let out = antibody(&["plan", "--config", "antibody.yml"], info);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("no action") && !stdout.contains("kind: PatchPlan"), "{stdout}");

    let cases = [
        (r#"{"id":"b1","source":"NEXUS","category":"heartbeat","severity":"huge","msg":"x"}"#, "huge"),
        ("not json", "malformed"),
    ];
    for (input, named) in cases {
        let out = antibody(&["plan", "--config", "antibody.yml"], input);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{input}: {stderr}");
        assert!(stderr.contains(named), "{input}: the error names {named:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{input}: no plan printed");
    }
}

/// The README's replay example: a rules change (policy floods restart instead of reloading)
/// shown against the old rules, pinned outcomes checked.
#[test]
fn replay_command_diffs_a_rules_change_and_checks_expectations() {
    let base = ["replay", "--config", "examples/replay/antibody.new.yml", "--baseline", "antibody.yml"];
    let with = |extra: &[&str]| -> Output {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        antibody(&args, "")
    };
    let out = with(&["examples/replay/alerts.jsonl"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("replayed 5 alert(s): 1 changed, 4 same"), "{stdout}");
    let changed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("CHANGED")).collect();
    assert_eq!(changed.len(), 1, "{stdout}");
    assert!(changed[0].contains("pf-1") && changed[0].contains("[reloadFlask:VAEL_UI]"), "{stdout}");

    let out = with(&["--expect", "examples/replay/expectations.yml", "examples/replay/alerts.jsonl"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("expectations: 3 checked, 0 failure(s)"), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let out = with(&["--fail-on-change", "examples/replay/alerts.jsonl"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // Alerts on stdin; a malformed one is exit 2 with its line.
    let out = with(&["-"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = antibody(&base.iter().chain(&["-"]).copied().collect::<Vec<_>>(), "{\"id\":\"x\"}\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("-:1"), "{}", text(&out.stderr));
}
