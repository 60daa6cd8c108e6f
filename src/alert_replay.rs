//! `antibody replay`: what past alerts would become under another antibody.yml — offline, for
//! review and CI on rule changes. Pure: files in, report out; nothing touches a cluster.
//!
//! Inputs are JSON lines of two kinds, mixed freely:
//! - an alert envelope (the original NEXUS format, as `POST /api/nexus/alert` takes it): its "was"
//!   is the decision of `--baseline old.yml` when given, else unknown;
//! - audit log records: each `kind: alert` record carries the alert and what actually happened
//!   (plan created / deduplicated / cooled down into a plan, ignored by a rule, refused), and the
//!   `kind: plan` records say which actions that plan held and how it ended. Records written
//!   before alert records carried the alert are counted and skipped.
//!
//! Replay re-runs the policy decision ([`crate::policy::decide`]) — the part of Antibody that
//! antibody.yml's rules, whitelist and targets decide. Intake state (cool-downs, claims, budgets,
//! pause, approvals, windows) depends on time and the cluster and is not simulated: an alert that
//! was deduplicated into a plan compares as that plan.
//!
//! "Changed" means a different outcome, a different list of actions, or a different refusal
//! reason; a renamed rule alone is not a change. An expectation file pins outcomes (see
//! [`Expectation`]); any expectation that disagrees, or matches no alert, fails the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert::ThreatAlert;
use crate::config::Config;
use crate::policy::{self, Decision};
use crate::report::audit::{AuditRecord, RecordKind};

/// What happened, or would happen, to one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `plan`, `ignored` or `refused`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `type:target[:key]`, in plan order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// How the plan ended (`patch_applied`, `patch_failed`, …), from the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// The intake's own word, when it was not a plain "plan created" (`deduplicated`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl Verdict {
    fn of_decision(decision: &Decision) -> Self {
        let base = |outcome: &str| Verdict {
            outcome: outcome.into(),
            rule: None,
            actions: Vec::new(),
            reason: None,
            plan: None,
            ended: None,
            via: None,
        };
        match decision {
            Decision::Plan { rule, name, spec } => Verdict {
                rule: Some(rule.clone()),
                actions: spec.actions.iter().map(crate::plan::PlanAction::describe).collect(),
                plan: Some(name.clone()),
                ..base("plan")
            },
            Decision::Ignore { rule } => Verdict { rule: Some(rule.clone()), ..base("ignored") },
            Decision::Refuse(refusal) => Verdict { reason: Some(refusal.reason.to_string()), ..base("refused") },
        }
    }

    /// Same effect: outcome, actions and refusal reason (rule names and plan names may differ).
    pub fn same_effect(&self, other: &Verdict) -> bool {
        self.outcome == other.outcome && self.actions == other.actions && self.reason == other.reason
    }

    fn describe(&self) -> String {
        let mut out = self.outcome.clone();
        if let Some(via) = &self.via {
            out.push_str(&format!(" ({via})"));
        }
        if let Some(plan) = &self.plan {
            out.push_str(&format!(" {plan}"));
        }
        if self.outcome == "plan" {
            out.push_str(&format!(" [{}]", self.actions.join(", ")));
        }
        if let Some(reason) = &self.reason {
            out.push_str(&format!(" {reason}"));
        }
        if let Some(rule) = &self.rule {
            out.push_str(&format!(" rule {rule:?}"));
        }
        if let Some(ended) = &self.ended {
            out.push_str(&format!(" → {ended}"));
        }
        out
    }
}

/// One past alert: where it was read, and what happened then (if known).
#[derive(Debug, Clone)]
pub struct Case {
    pub origin: String,
    pub alert: ThreatAlert,
    pub was: Option<Verdict>,
}

/// Everything read from the inputs.
#[derive(Debug, Default)]
pub struct Inputs {
    pub cases: Vec<Case>,
    /// Audit alert records without the alert (older logs, manual plans, unparsable alerts).
    pub skipped_records: usize,
}

/// Read JSON lines (`files`: name and text). Audit plan records are joined to the alert records
/// that name their plan; a line that is neither an alert nor an audit record is an error naming
/// the file and line.
pub fn read_inputs(files: &[(String, String)]) -> Result<Inputs, String> {
    struct Pending {
        origin: String,
        alert: ThreatAlert,
        record: AuditRecord,
    }
    let mut plain: Vec<(usize, Case)> = Vec::new();
    let mut recorded: Vec<(usize, Pending)> = Vec::new();
    let mut plans: BTreeMap<String, (Vec<String>, Option<String>)> = BTreeMap::new();
    let mut skipped_records = 0;
    let mut order = 0;
    for (file, text) in files {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let origin = format!("{file}:{}", index + 1);
            let value = crate::validate::json_strict(line.as_bytes()).map_err(|e| format!("{origin}: {e}"))?;
            order += 1;
            if is_audit_record(&value) {
                let record: AuditRecord =
                    serde_json::from_value(value).map_err(|e| format!("{origin}: audit record: {e}"))?;
                match record.kind {
                    RecordKind::Plan => {
                        let Some(plan) = &record.plan else { continue };
                        let entry = plans.entry(plan.name.clone()).or_default();
                        entry.0 = record.actions.iter().map(describe_action).collect();
                        if TERMINAL_EVENTS.contains(&record.event.as_str()) {
                            entry.1 = Some(record.event.clone());
                        }
                    }
                    // A resolution cancels a plan; it is not a decision to replay.
                    RecordKind::Alert if record.event == "resolved" => {}
                    RecordKind::Alert => match record.alert.clone() {
                        Some(alert) => recorded.push((order, Pending { origin, alert, record })),
                        None => skipped_records += 1,
                    },
                    RecordKind::ChainBreak => {}
                }
            } else {
                let alert = ThreatAlert::from_value(value).map_err(|e| format!("{origin}: {e}"))?;
                plain.push((order, Case { origin, alert, was: None }));
            }
        }
    }
    let mut cases: Vec<(usize, Case)> = plain;
    for (order, pending) in recorded {
        let was = history(&pending.record, &plans);
        cases.push((order, Case { origin: pending.origin, alert: pending.alert, was: Some(was) }));
    }
    cases.sort_by_key(|(order, _)| *order);
    Ok(Inputs { cases: cases.into_iter().map(|(_, case)| case).collect(), skipped_records })
}

/// Audit events that end a plan (see `report::TransitionKind`); `dry_run` is what logs written
/// before the one name map called `patch_dry_run`.
const TERMINAL_EVENTS: [&str; 5] = ["patch_applied", "patch_unverified", "patch_dry_run", "dry_run", "patch_failed"];

fn is_audit_record(value: &Value) -> bool {
    ["kind", "seq", "prev", "event"].iter().all(|key| value.get(key).is_some())
}

fn describe_action(action: &crate::report::audit::ActionRecord) -> String {
    match &action.key {
        Some(key) => format!("{}:{}:{key}", action.action, action.target),
        None => format!("{}:{}", action.action, action.target),
    }
}

/// What an audit alert record says happened.
fn history(record: &AuditRecord, plans: &BTreeMap<String, (Vec<String>, Option<String>)>) -> Verdict {
    let plan_name = record.plan.as_ref().map(|p| p.name.clone());
    let known = plan_name.as_ref().and_then(|name| plans.get(name));
    let base = Verdict {
        outcome: String::new(),
        rule: None,
        actions: Vec::new(),
        reason: None,
        plan: None,
        ended: None,
        via: None,
    };
    match record.event.as_str() {
        // An escalated alert got a later step of its rule's ladder (replay decides step 1 only).
        "plan_created" | "deduplicated" | "cooled_down" | "escalated" => Verdict {
            outcome: "plan".into(),
            actions: known.map(|(actions, _)| actions.clone()).unwrap_or_default(),
            plan: plan_name,
            ended: known.and_then(|(_, ended)| ended.clone()),
            via: (record.event != "plan_created").then(|| record.event.clone()),
            ..base
        },
        "ignored" => Verdict {
            outcome: "ignored".into(),
            rule: record.detail.get("rule").and_then(Value::as_str).map(str::to_string),
            ..base
        },
        "paged" => Verdict { outcome: "paged".into(), ..base },
        _ => Verdict { outcome: "refused".into(), reason: record.reason.clone(), ..base },
    }
}

/// One replayed alert.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub origin: String,
    pub alert: String,
    pub category: String,
    pub severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<Verdict>,
    pub now: Verdict,
    /// `same`, `changed`, or `new` (nothing to compare with).
    pub change: &'static str,
}

pub fn replay(config: &Config, baseline: Option<&Config>, inputs: &Inputs, plan_namespace: &str) -> Vec<Replayed> {
    inputs
        .cases
        .iter()
        .map(|case| {
            let now = Verdict::of_decision(&policy::decide(config, &case.alert, plan_namespace));
            let was = case.was.clone().or_else(|| {
                baseline.map(|old| Verdict::of_decision(&policy::decide(old, &case.alert, plan_namespace)))
            });
            let change = match &was {
                None => "new",
                // A history whose plan records were not in the input has unknown actions: compare
                // the outcome only.
                Some(was) if was.outcome == "plan" && was.actions.is_empty() && now.outcome == "plan" => "same",
                Some(was) if was.same_effect(&now) => "same",
                Some(_) => "changed",
            };
            Replayed {
                origin: case.origin.clone(),
                alert: case.alert.id.clone(),
                category: case.alert.category.clone(),
                severity: case.alert.severity.to_string(),
                was,
                now,
                change,
            }
        })
        .collect()
}

/// A pinned outcome. Selects alerts by id and/or category/severity (all given must match);
/// checks the outcome and, when given, the rule, the exact action list and the refusal reason.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    pub outcome: String,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectationFile {
    expectations: Vec<Expectation>,
}

/// Parse an expectation file (`expectations: [...]`); errors name the entry.
pub fn parse_expectations(text: &str) -> Result<Vec<Expectation>, String> {
    let file: ExpectationFile = serde_yaml::from_str(text).map_err(|e| format!("expectations: {e}"))?;
    for (index, e) in file.expectations.iter().enumerate() {
        if e.alert.is_none() && e.category.is_none() && e.severity.is_none() {
            return Err(format!("expectations[{index}]: select alerts with alert, category and/or severity"));
        }
        if !["plan", "ignored", "refused"].contains(&e.outcome.as_str()) {
            return Err(format!("expectations[{index}].outcome: {:?} is not plan, ignored or refused", e.outcome));
        }
    }
    Ok(file.expectations)
}

impl Expectation {
    fn selects(&self, replayed: &Replayed) -> bool {
        self.alert.as_ref().is_none_or(|id| *id == replayed.alert)
            && self.category.as_ref().is_none_or(|c| c.eq_ignore_ascii_case(&replayed.category))
            && self.severity.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(&replayed.severity))
    }

    fn selector(&self) -> String {
        let parts: Vec<String> = [("alert", &self.alert), ("category", &self.category), ("severity", &self.severity)]
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
            .collect();
        parts.join(" ")
    }

    /// Why `now` disagrees, if it does.
    fn disagreement(&self, now: &Verdict) -> Option<String> {
        let mut wrong = Vec::new();
        if now.outcome != self.outcome {
            wrong.push(format!("outcome {} (expected {})", now.outcome, self.outcome));
        }
        if let Some(rule) = &self.rule
            && now.rule.as_ref() != Some(rule)
        {
            wrong.push(format!("rule {:?} (expected {rule:?})", now.rule.as_deref().unwrap_or("-")));
        }
        if let Some(actions) = &self.actions
            && &now.actions != actions
        {
            wrong.push(format!("actions [{}] (expected [{}])", now.actions.join(", "), actions.join(", ")));
        }
        if let Some(reason) = &self.reason
            && now.reason.as_ref() != Some(reason)
        {
            wrong.push(format!("reason {} (expected {reason})", now.reason.as_deref().unwrap_or("-")));
        }
        (!wrong.is_empty()).then(|| wrong.join(", "))
    }
}

/// Every expectation against every alert it selects: the failures, as lines. An expectation
/// that selects nothing fails too (a stale pin is a silent gap).
pub fn check(expectations: &[Expectation], replayed: &[Replayed]) -> Vec<String> {
    let mut failures = Vec::new();
    for expectation in expectations {
        let selected: Vec<&Replayed> = replayed.iter().filter(|r| expectation.selects(r)).collect();
        if selected.is_empty() {
            failures.push(format!("{}: matched no alert in the input", expectation.selector()));
        }
        for r in selected {
            if let Some(why) = expectation.disagreement(&r.now) {
                failures.push(format!("{} ({}, {}): {why}", expectation.selector(), r.alert, r.origin));
            }
        }
    }
    failures
}

/// The human report: a line per alert, then totals.
pub fn render(replayed: &[Replayed], skipped_records: usize, failures: &[String], expectations: usize) -> String {
    let mut out = String::new();
    for r in replayed {
        let label = match r.change {
            "changed" => "CHANGED",
            "new" => "new    ",
            _ => "same   ",
        };
        let was = r.was.as_ref().map_or_else(|| "-".to_string(), Verdict::describe);
        out.push_str(&format!(
            "{label}  {} {}/{}  was: {was}\n         now: {}\n",
            r.alert,
            r.category,
            r.severity,
            r.now.describe()
        ));
    }
    let count = |change: &str| replayed.iter().filter(|r| r.change == change).count();
    out.push_str(&format!(
        "replayed {} alert(s): {} changed, {} same, {} without history",
        replayed.len(),
        count("changed"),
        count("same"),
        count("new")
    ));
    if skipped_records > 0 {
        out.push_str(&format!("; {skipped_records} audit alert record(s) carry no alert and were skipped"));
    }
    out.push('\n');
    if expectations > 0 {
        out.push_str(&format!("expectations: {expectations} checked, {} failure(s)\n", failures.len()));
        for failure in failures {
            out.push_str(&format!("  FAIL {failure}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
targets:
  VAEL_Core: {deployment: vael-core, namespace: prod}
  VAEL_UI: {deployment: vael-ui, namespace: prod, config_map: vael-ui-env, env_keys: [LOG_LEVEL]}
actions:
  restart: [VAEL_Core, VAEL_UI]
  edit_env: [VAEL_UI]
  reload_flask: [VAEL_UI]
rules:
  - {name: heartbeat, category: heartbeat_missed, actions: [restart], target: VAEL_Core}
  - {name: quiet, category: policy_flood, actions: []}
"#;

    fn config(text: &str) -> Config {
        Config::from_yaml(text).expect("test config")
    }

    fn alert(id: &str, category: &str, severity: &str) -> String {
        format!(r#"{{"id":"{id}","source":"nexus","category":"{category}","severity":"{severity}","msg":"m"}}"#)
    }

    fn audit_alert(seq: u64, id: &str, category: &str, event: &str, plan: Option<&str>) -> String {
        let mut record = serde_json::json!({
            "seq": seq, "time": "2026-12-01T00:00:00Z", "kind": "alert", "event": event, "prev": "x",
            "alert_id": id, "feed": "rest",
            "alert": serde_json::from_str::<Value>(&alert(id, category, "critical")).expect("alert"),
        });
        if let Some(plan) = plan {
            record["plan"] = serde_json::json!({"name": plan});
        }
        if event == "refused" {
            record["reason"] = "NotAllowed".into();
        }
        record.to_string()
    }

    fn audit_plan(seq: u64, plan: &str, event: &str, actions: &[(&str, &str)]) -> String {
        let actions: Vec<Value> =
            actions.iter().map(|(kind, target)| serde_json::json!({"type": kind, "target": target})).collect();
        serde_json::json!({
            "seq": seq, "time": "2026-12-01T00:00:01Z", "kind": "plan", "event": event, "prev": "x",
            "plan": {"name": plan}, "actions": actions,
        })
        .to_string()
    }

    fn run(config_text: &str, baseline: Option<&str>, lines: &[String]) -> Vec<Replayed> {
        let inputs = read_inputs(&[("in.jsonl".into(), lines.join("\n"))]).expect("inputs");
        let baseline = baseline.map(config);
        replay(&config(config_text), baseline.as_ref(), &inputs, "antibody")
    }

    #[test]
    fn verdicts_and_changes() {
        let new_rules = CONFIG.replace("actions: [restart], target: VAEL_Core", "actions: [restart], target: VAEL_UI");
        // (name, config, baseline, lines, expected (change, now outcome, now actions) per case)
        type Want = (&'static str, &'static str, Vec<&'static str>);
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<String>, Vec<Want>);
        let cases: Vec<Case> = vec![
            (
                "plain alerts without a baseline are new",
                CONFIG,
                None,
                vec![alert("a1", "heartbeat_missed", "critical"), alert("a2", "policy_flood", "critical")],
                vec![("new", "plan", vec!["restart:VAEL_Core"]), ("new", "ignored", vec![])],
            ),
            (
                "a baseline gives plain alerts a past",
                &new_rules,
                Some(CONFIG),
                vec![alert("a1", "heartbeat_missed", "critical"), alert("a2", "policy_flood", "critical")],
                vec![("changed", "plan", vec!["restart:VAEL_UI"]), ("same", "ignored", vec![])],
            ),
            (
                "audit history: plan actions joined from plan records",
                &new_rules,
                None,
                vec![
                    audit_alert(1, "a1", "heartbeat_missed", "plan_created", Some("pp-a1")),
                    audit_plan(2, "pp-a1", "patch_applied", &[("restart", "VAEL_Core")]),
                    audit_alert(3, "a3", "policy_flood", "ignored", None),
                ],
                vec![("changed", "plan", vec!["restart:VAEL_UI"]), ("same", "ignored", vec![])],
            ),
            (
                "the same rules replay the same",
                CONFIG,
                None,
                vec![
                    audit_alert(1, "a1", "heartbeat_missed", "deduplicated", Some("pp-a1")),
                    audit_plan(2, "pp-a1", "patch_failed", &[("restart", "VAEL_Core")]),
                ],
                vec![("same", "plan", vec!["restart:VAEL_Core"])],
            ),
            (
                "a refusal that is now a plan is a change",
                CONFIG,
                None,
                vec![audit_alert(1, "a1", "heartbeat_missed", "refused", None)],
                vec![("changed", "plan", vec!["restart:VAEL_Core"])],
            ),
        ];
        for (name, config_text, baseline, lines, want) in cases {
            let replayed = run(config_text, baseline, &lines);
            let got: Vec<(&str, String, Vec<String>)> =
                replayed.iter().map(|r| (r.change, r.now.outcome.clone(), r.now.actions.clone())).collect();
            let want: Vec<(&str, String, Vec<String>)> = want
                .into_iter()
                .map(|(c, o, a)| (c, o.to_string(), a.into_iter().map(String::from).collect()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn history_keeps_how_the_plan_ended() {
        let replayed = run(
            CONFIG,
            None,
            &[
                audit_alert(1, "a1", "heartbeat_missed", "cooled_down", Some("pp-a1")),
                audit_plan(2, "pp-a1", "started", &[("restart", "VAEL_Core")]),
                audit_plan(3, "pp-a1", "patch_failed", &[("restart", "VAEL_Core")]),
            ],
        );
        let was = replayed[0].was.as_ref().expect("history");
        assert_eq!(was.ended.as_deref(), Some("patch_failed"));
        assert_eq!(was.via.as_deref(), Some("cooled_down"));
        assert!(render(&replayed, 0, &[], 0).contains("cooled_down"));
    }

    #[test]
    fn bad_input_names_the_line() {
        let cases = [
            ("{\"id\":1}", "in.jsonl:1"),
            ("not json", "in.jsonl:1"),
            (r#"{"seq":1,"kind":"bogus","prev":"x","event":"e","time":"t"}"#, "audit record"),
        ];
        for (line, want) in cases {
            let error = read_inputs(&[("in.jsonl".into(), format!("\n{line}"))]).expect_err(line);
            assert!(error.contains(want) || error.contains("in.jsonl:2"), "{line}: {error}");
        }
        // Alert records without the alert are counted, not replayed.
        let old = r#"{"seq":1,"time":"t","kind":"alert","event":"ignored","prev":"x","alert_id":"a"}"#;
        let inputs = read_inputs(&[("in.jsonl".into(), old.into())]).expect("old record");
        assert_eq!((inputs.cases.len(), inputs.skipped_records), (0, 1));
    }

    #[test]
    fn expectations_pin_outcomes() {
        let replayed =
            run(CONFIG, None, &[alert("a1", "heartbeat_missed", "critical"), alert("a2", "policy_flood", "warn")]);
        let cases: &[(&str, usize, &str)] = &[
            ("expectations: [{alert: a1, outcome: plan, actions: ['restart:VAEL_Core'], rule: heartbeat}]", 0, ""),
            ("expectations: [{category: policy_flood, outcome: ignored}]", 0, ""),
            ("expectations: [{alert: a1, outcome: ignored}]", 1, "outcome plan (expected ignored)"),
            (
                "expectations: [{alert: a1, outcome: plan, actions: ['restart:VAEL_UI']}]",
                1,
                "actions [restart:VAEL_Core]",
            ),
            ("expectations: [{alert: zz, outcome: plan}]", 1, "matched no alert"),
            (
                "expectations: [{severity: warn, outcome: refused, reason: NotAllowed}]",
                1,
                "reason - (expected NotAllowed)",
            ),
        ];
        for (text, failures, want) in cases {
            let expectations = parse_expectations(text).expect(text);
            let got = check(&expectations, &replayed);
            assert_eq!(got.len(), *failures, "{text}: {got:?}");
            assert!(got.iter().all(|f| f.contains(want)), "{text}: {got:?}");
        }
        let bad = [
            ("expectations: [{outcome: plan}]", "select alerts"),
            ("expectations: [{alert: a, outcome: done}]", "is not plan, ignored or refused"),
            ("expectations: [{alert: a, outcome: plan, acts: []}]", "unknown field"),
        ];
        for (text, want) in bad {
            let error = parse_expectations(text).expect_err(text);
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
