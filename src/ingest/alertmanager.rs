//! Alertmanager webhook (payload version 4) → ThreatAlerts. Pure.
//!
//! One plan per alert in the group; the Alertmanager `fingerprint` (a hash of the alert's label
//! set) is the alert's identity, so repeat notifications of a firing alert dedupe into one plan.
//! Mapping, per alert:
//!
//! | ThreatAlert   | from                                                                     |
//! |---------------|--------------------------------------------------------------------------|
//! | `id`          | `fingerprint` (required)                                                 |
//! | `source`      | `"alertmanager"`                                                         |
//! | `category`    | label `category`, else label `alertname` (one is required)               |
//! | `severity`    | label `severity` (required): info, low, warn/warning, medium, high, critical |
//! | `msg`         | annotation `summary`, else `description`, else label `alertname`         |
//! | `patch_hint`  | annotation `patch_hint`, else label `patch_hint` (optional)              |
//! | `ts`          | `startsAt`                                                               |
//!
//! An alert with `status: resolved` cancels its plan if no action of it has started yet.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::alert::{AlertError, ThreatAlert};

pub const SOURCE: &str = "alertmanager";
const MAX_MSG: usize = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub fingerprint: String,
}

/// What one Alertmanager alert asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Fire(ThreatAlert),
    /// Cancel the plan of this alert if it has not started.
    Resolve(ThreatAlert),
}

pub fn parse(body: &[u8]) -> Result<Webhook, crate::validate::Invalid> {
    // Duplicate keys (e.g. two `severity` labels) are refused before anything reads them.
    let value = crate::validate::json_strict(body).map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    let webhook: Webhook =
        serde_json::from_value(value).map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if webhook.version != "4" {
        return Err(format!("Alertmanager webhook version {:?} is not supported (4)", webhook.version).into());
    }
    Ok(webhook)
}

/// Map one alert; the error says which field is missing or wrong.
pub fn map(alert: &Alert) -> Result<Request, AlertError> {
    let field = |message: &str| AlertError::Field(message.to_string());
    let category = alert
        .labels
        .get("category")
        .or_else(|| alert.labels.get("alertname"))
        .ok_or_else(|| field("label 'category' or 'alertname' is required"))?;
    let severity = alert.labels.get("severity").ok_or_else(|| field("label 'severity' is required"))?;
    let severity = severity.parse().map_err(|e: String| AlertError::Field(format!("label severity: {e}")))?;
    let msg = alert
        .annotations
        .get("summary")
        .or_else(|| alert.annotations.get("description"))
        .or_else(|| alert.labels.get("alertname"))
        .map(|m| truncate(m, MAX_MSG))
        .unwrap_or_default();
    let patch_hint = alert.annotations.get("patch_hint").or_else(|| alert.labels.get("patch_hint")).cloned();
    let threat = ThreatAlert {
        id: alert.fingerprint.clone(),
        source: SOURCE.into(),
        category: category.clone(),
        severity,
        msg,
        patch_hint,
        ts: alert.starts_at.clone().filter(|t| !t.is_empty()),
    };
    threat.validate().map_err(|e| if alert.fingerprint.is_empty() { field("fingerprint is missing") } else { e })?;
    match alert.status.as_str() {
        "firing" => Ok(Request::Fire(threat)),
        "resolved" => Ok(Request::Resolve(threat)),
        other => Err(AlertError::Malformed(format!("status {other:?} is neither firing nor resolved"))),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    #[test]
    fn duplicate_keys_are_refused() {
        let body = br#"{"version":"4","receiver":"r","status":"firing","alerts":[{"status":"firing","labels":{"severity":"info","severity":"critical"}}]}"#;
        let error = parse(body).expect_err("ambiguous");
        assert!(error.contains(r#"duplicate key "severity" in $.alerts[0].labels"#), "{error}");
    }

    fn alert(status: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)], fingerprint: &str) -> Alert {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Alert {
            status: status.into(),
            labels: map(labels),
            annotations: map(annotations),
            starts_at: Some("2025-05-30T12:34:56.789Z".into()),
            fingerprint: fingerprint.into(),
        }
    }

    #[test]
    fn mapping_table() {
        let fire = map(&alert(
            "firing",
            &[("alertname", "VaelCoreDown"), ("category", "heartbeat"), ("severity", "warning")],
            &[("summary", "Pulse missed"), ("description", "long"), ("patch_hint", "restart:VAEL_Core")],
            "c0ffee",
        ))
        .expect("maps");
        let Request::Fire(a) = fire else { panic!("firing → Fire") };
        assert_eq!(
            (a.id.as_str(), a.source.as_str(), a.category.as_str(), a.severity, a.msg.as_str()),
            ("c0ffee", "alertmanager", "heartbeat", Severity::Warn, "Pulse missed")
        );
        assert_eq!(a.patch_hint.as_deref(), Some("restart:VAEL_Core"));
        assert_eq!(a.ts.as_deref(), Some("2025-05-30T12:34:56.789Z"));

        // alertname stands in for category; description for summary; label hint for annotation.
        let Request::Resolve(b) = map(&alert(
            "resolved",
            &[("alertname", "KernelPanic"), ("severity", "critical"), ("patch_hint", "restart:VAEL_Core")],
            &[("description", "it broke")],
            "f00d",
        ))
        .expect("maps") else {
            panic!("resolved → Resolve")
        };
        assert_eq!((b.category.as_str(), b.msg.as_str(), b.severity), ("KernelPanic", "it broke", Severity::Critical));
        assert_eq!(b.patch_hint.as_deref(), Some("restart:VAEL_Core"));

        let errors: &[(Alert, &str)] = &[
            (alert("firing", &[("severity", "high")], &[], "f1"), "'category' or 'alertname'"),
            (alert("firing", &[("alertname", "X")], &[], "f1"), "'severity' is required"),
            (alert("firing", &[("alertname", "X"), ("severity", "page")], &[], "f1"), "unknown severity"),
            (alert("firing", &[("alertname", "X"), ("severity", "high")], &[], ""), "fingerprint is missing"),
            (
                alert("firing", &[("alertname", "X"), ("severity", "high")], &[("patch_hint", "restart:../x")], "f1"),
                "invalid target",
            ),
            (alert("pending", &[("alertname", "X"), ("severity", "high")], &[], "f1"), "neither firing nor resolved"),
            (alert("firing", &[("alertname", "has space"), ("severity", "high")], &[], "f1"), "category"),
        ];
        for (a, want) in errors {
            let error = map(a).expect_err(want);
            assert!(error.to_string().contains(want), "{a:?}: {error}");
        }
    }

    #[test]
    fn same_fingerprint_same_plan_and_long_summaries_are_cut() {
        let labels = [("alertname", "VaelCoreDown"), ("severity", "high")];
        let one = map(&alert("firing", &labels, &[("summary", "first")], "abc")).expect("maps");
        let two = map(&alert("firing", &labels, &[("summary", "repeat")], "abc")).expect("maps");
        let name = |r: Request| match r {
            Request::Fire(a) | Request::Resolve(a) => a.plan_name(),
        };
        assert_eq!(name(one), name(two));
        let long = "é".repeat(3000);
        let Request::Fire(a) = map(&alert("firing", &labels, &[("summary", &long)], "abc")).expect("maps") else {
            panic!()
        };
        assert!(a.msg.len() <= MAX_MSG && a.msg.len() >= MAX_MSG - 1);
    }

    #[test]
    fn payload_version_is_checked() {
        let body = br#"{"version":"4","status":"firing","receiver":"antibody","groupKey":"{}:{}","alerts":[
            {"status":"firing","labels":{"alertname":"A","severity":"high"},"annotations":{},
             "startsAt":"2025-05-30T12:34:56Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://x","fingerprint":"1"}],
            "groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am","truncatedAlerts":0}"#;
        assert_eq!(parse(body).expect("v4 parses").alerts.len(), 1);
        let v3 = String::from_utf8_lossy(body).replace(r#""version":"4""#, r#""version":"3""#);
        assert!(parse(v3.as_bytes()).expect_err("v3").contains("version \"3\""));
        assert!(parse(b"{").expect_err("malformed").contains("not an Alertmanager webhook"));
        assert!(parse(br#"{"version":"4"}"#).expect_err("no alerts").contains("alerts"));
    }
}
