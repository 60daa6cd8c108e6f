//! Approval gates: *whether a human must say yes* before a plan acts.
//!
//! `approvals.rules` in antibody.yml are checked in order; the first rule whose filters all
//! match decides (`require` or `auto_approve`); no match → `approvals.default` (built in:
//! `auto_approve`, i.e. no gate). Filters: `actions` and `targets` (some action of the plan
//! matches both), `namespaces` (the plan's or a target's), `severities` (the alert's; a plan
//! without an alert matches no severity), `during` (local time ranges, explicit time zone).
//!
//! A decision is stored on the plan as the annotation `antibody.vael.io/approval` (JSON
//! [`Decision`]), bound to the plan's uid and its spec digest (sha256 of namespace, name and
//! spec, the same canonical JSON signing uses): a decision for another spec or another object
//! is ignored and the plan keeps waiting. Who may decide is who may `patch` PatchPlans (RBAC):
//! the CLI writes with the human's own kubeconfig and records the name the API server knows
//! them by (SelfSubjectReview); the REST endpoint needs a token with scope `approve` and records
//! the token name. The `by` field is what the writer claims; the API server's own audit log
//! holds who really wrote the annotation. A plan that waits longer than
//! `approvals.timeout_seconds`, or whose approval expired before it started, ends
//! `ApprovalExpired`; a denial ends it `Denied`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::ResolvedTarget;
use crate::plan::{PatchPlan, PatchPlanSpec};
use crate::tokens::{Scope, TokenStore};

use crate::names::APPROVAL_ANNOTATION;
/// `POST` here (scope `approve`): `{"reason"?, "digest"?, "ttl_seconds"?}`.
pub const APPROVE_PATH: &str = "/api/antibody/plans/{namespace}/{name}/approve";
pub const DENY_PATH: &str = "/api/antibody/plans/{namespace}/{name}/deny";

pub use crate::config::approvals::{ApprovalConfig, ApprovalRule, During, RuleDecision};

/// sha256 (hex) of the plan's namespace, name and spec as canonical JSON (typed serialisation,
/// as `signing::canonical_bytes`): what a human approved.
pub fn spec_digest(namespace: &str, name: &str, spec: &PatchPlanSpec) -> String {
    let payload = json!({ "namespace": namespace, "name": name, "spec": spec });
    let mut hasher = Sha256::new();
    hasher.update(b"antibody.vael.io/PatchPlan/approval/v1\n");
    hasher.update(payload.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

pub fn plan_digest(plan: &PatchPlan) -> String {
    spec_digest(plan.metadata.namespace.as_deref().unwrap_or_default(), &plan.name_any(), &plan.spec)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approved,
    Denied,
}

/// The annotation's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub decision: Verdict,
    /// `user:<name>` (CLI, from the API server) or `token:<name>` (REST).
    pub by: String,
    pub digest: String,
    pub uid: String,
    pub at: Timestamp,
    /// Approvals only: not valid after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Where a gated plan stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// No approval needed (no rule, or `auto_approve`).
    NotRequired {
        rule: Option<String>,
    },
    Approved {
        decision: Decision,
    },
    Waiting {
        message: String,
        deadline: Timestamp,
    },
    Denied {
        message: String,
    },
    Expired {
        message: String,
    },
}

/// Decide what an approval-gated plan may do now. `waiting_since`: when the plan was first seen.
pub fn gate(
    config: &ApprovalConfig,
    plan: &PatchPlan,
    targets: &[ResolvedTarget],
    waiting_since: Timestamp,
    now: Timestamp,
) -> Gate {
    let namespace = plan.metadata.namespace.as_deref().unwrap_or_default();
    let (rule, decision) = config.decide(&plan.spec, namespace, targets, now);
    let rule_name = rule.map_or("approvals.default".to_string(), |r| format!("approval rule {r}"));
    if decision == RuleDecision::AutoApprove {
        return Gate::NotRequired { rule: rule.map(str::to_string) };
    }
    let timeout = jiff::SignedDuration::from_secs(i64::try_from(config.timeout_seconds).unwrap_or(i64::MAX));
    let deadline = waiting_since.checked_add(timeout).unwrap_or(Timestamp::MAX);
    let digest = plan_digest(plan);
    let uid = plan.metadata.uid.clone().unwrap_or_default();
    let recorded = plan.metadata.annotations.as_ref().and_then(|a| a.get(APPROVAL_ANNOTATION));
    let mut note = String::new();
    if let Some(value) = recorded {
        match serde_json::from_str::<Decision>(value) {
            Err(e) => note = format!("; the {APPROVAL_ANNOTATION} annotation does not parse ({e}): ignored"),
            Ok(d) if d.uid != uid => {
                note = format!("; the decision on record by {} is for another object (uid {}): ignored", d.by, d.uid)
            }
            Ok(d) if d.digest != digest => {
                note = format!(
                    "; the decision on record by {} is for spec digest {}, this plan's is {}: ignored",
                    d.by,
                    short(&d.digest),
                    short(&digest)
                )
            }
            Ok(d) if d.decision == Verdict::Denied => {
                let why = if d.reason.is_empty() { String::new() } else { format!(": {}", d.reason) };
                return Gate::Denied { message: format!("denied by {} at {}{why}", d.by, d.at) };
            }
            Ok(d) => match capped_expiry(&d, config.max_ttl_seconds) {
                Some(expires) if expires <= now => {
                    return Gate::Expired {
                        message: format!("the approval by {} expired at {expires} before the plan started", d.by),
                    };
                }
                _ => return Gate::Approved { decision: d },
            },
        }
    }
    if now >= deadline {
        return Gate::Expired {
            message: format!(
                "no decision within approvals.timeout_seconds ({}s, {rule_name}){note}",
                config.timeout_seconds
            ),
        };
    }
    let message = format!(
        "{rule_name} requires approval of spec digest {}: `antibody approve -n {namespace} {}` or deny, before {deadline}{note}",
        short(&digest),
        plan.name_any()
    );
    Gate::Waiting { message, deadline }
}

/// An approval is valid at most `approvals.max_ttl_seconds` after it was given, whatever
/// expiry its writer (CLI, REST, a hand-written annotation) put in it.
fn capped_expiry(decision: &Decision, max_ttl_seconds: u64) -> Option<Timestamp> {
    let max = jiff::SignedDuration::from_secs(i64::try_from(max_ttl_seconds).unwrap_or(i64::MAX));
    let cap = decision.at.checked_add(max).unwrap_or(Timestamp::MAX);
    Some(decision.expires.map_or(cap, |e| e.min(cap)))
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Why a decision could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("plan {0} not found")]
    NotFound(String),
    #[error("plan {0} has already finished ({1}): nothing to decide")]
    Finished(String, String),
    #[error("the plan's spec digest is {actual}, not the {expected} you reviewed: look again at the plan")]
    DigestMismatch { expected: String, actual: String },
    #[error("ttl_seconds {0} is beyond approvals.max_ttl_seconds ({1})")]
    TtlTooLong(u64, u64),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// What to record.
#[derive(Debug, Clone)]
pub struct Request {
    pub verdict: Verdict,
    pub by: String,
    pub reason: String,
    /// The digest the decider reviewed; must match the plan's.
    pub expected_digest: Option<String>,
    pub ttl_seconds: u64,
}

/// Record a decision on the plan (compare-and-swap on its resourceVersion).
pub async fn decide(client: &Client, namespace: &str, name: &str, request: &Request) -> Result<Decision, DecideError> {
    let api: Api<PatchPlan> = Api::namespaced(client.clone(), namespace);
    let plan = crate::actions::not_found(api.get(name).await)?
        .ok_or_else(|| DecideError::NotFound(format!("{namespace}/{name}")))?;
    if let Some(status) = plan.status.as_ref().filter(|s| s.phase.is_terminal()) {
        return Err(DecideError::Finished(format!("{namespace}/{name}"), format!("{:?}", status.phase)));
    }
    let digest = plan_digest(&plan);
    if let Some(expected) = &request.expected_digest
        && expected != &digest
    {
        return Err(DecideError::DigestMismatch { expected: expected.clone(), actual: digest });
    }
    let now = Timestamp::now();
    let expires = (request.verdict == Verdict::Approved).then(|| {
        let ttl = jiff::SignedDuration::from_secs(i64::try_from(request.ttl_seconds).unwrap_or(i64::MAX));
        now.checked_add(ttl).unwrap_or(Timestamp::MAX)
    });
    let decision = Decision {
        decision: request.verdict,
        by: request.by.clone(),
        digest,
        uid: plan.metadata.uid.clone().unwrap_or_default(),
        at: now,
        expires,
        reason: request.reason.clone(),
    };
    let value = serde_json::to_string(&decision).map_err(|e| DecideError::Kube(kube::Error::SerdeError(e)))?;
    let patch = json!({
        "metadata": {
            "resourceVersion": plan.metadata.resource_version,
            "annotations": { APPROVAL_ANNOTATION: value },
        }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(decision)
}

/// The caller's user name as the API server knows it (SelfSubjectReview).
pub async fn caller(client: &Client) -> Result<String, kube::Error> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api.create(&Default::default(), &SelfSubjectReview::default()).await?;
    let user = review.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default();
    Ok(if user.is_empty() { "user:(unknown)".into() } else { format!("user:{user}") })
}

#[derive(Clone)]
struct HttpState {
    client: Client,
    tokens: Arc<TokenStore>,
    config: Arc<crate::config::SharedConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /api/antibody/plans/{namespace}/{name}/approve|deny` (token scope `approve`).
pub fn router(client: Client, tokens: Arc<TokenStore>, config: Arc<crate::config::SharedConfig>) -> Router {
    Router::new().route(APPROVE_PATH, post(approve)).route(DENY_PATH, post(deny)).with_state(HttpState {
        client,
        tokens,
        config,
    })
}

async fn approve(
    state: State<HttpState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    decide_http(state, path, headers, body, Verdict::Approved).await
}

async fn deny(
    state: State<HttpState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    decide_http(state, path, headers, body, Verdict::Denied).await
}

async fn decide_http(
    State(state): State<HttpState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
    verdict: Verdict,
) -> Response {
    use crate::tokens::denied_response;
    // The intake's error shape (`{"error", "reason"}`), without depending on the intake.
    fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
        (status, Json(json!({ "error": code, "reason": reason.into() }))).into_response()
    }
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = match state.tokens.get().authorize(header, Scope::Approve) {
        Ok(name) => name.to_string(),
        Err(denied) => return denied_response(&denied),
    };
    if body.len() > 16 * 1024 {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", "body over 16 KiB");
    }
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", format!("body: {e}")),
        }
    };
    if crate::validate::dns1123_subdomain(&name).is_err() || crate::validate::dns1123_label(&namespace).is_err() {
        return error(StatusCode::BAD_REQUEST, "BadRequest", "namespace and name must be Kubernetes names");
    }
    let config = state.config.get();
    let max = config.approvals.max_ttl_seconds;
    let ttl = body.ttl_seconds.unwrap_or(max);
    if ttl > max || ttl == 0 {
        return error(StatusCode::BAD_REQUEST, "BadRequest", DecideError::TtlTooLong(ttl, max).to_string());
    }
    let request = Request {
        verdict,
        by: format!("token:{token}"),
        reason: body.reason,
        expected_digest: body.digest,
        ttl_seconds: ttl,
    };
    match decide(&state.client, &namespace, &name, &request).await {
        Ok(decision) => (StatusCode::OK, Json(json!({ "plan": format!("{namespace}/{name}"), "decision": decision })))
            .into_response(),
        Err(e @ DecideError::NotFound(_)) => error(StatusCode::NOT_FOUND, "NotFound", e.to_string()),
        Err(e @ (DecideError::Finished(..) | DecideError::DigestMismatch { .. })) => {
            error(StatusCode::CONFLICT, "Conflict", e.to_string())
        }
        Err(e @ DecideError::TtlTooLong(..)) => error(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
        Err(DecideError::Kube(kube::Error::Api(status))) if status.code == 409 => {
            error(StatusCode::CONFLICT, "Conflict", "the plan changed while deciding: try again")
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AlertSummary, PlanAction};

    fn config(yaml: &str) -> ApprovalConfig {
        serde_yaml::from_str(yaml).expect("approval yaml")
    }

    fn plan(actions: Vec<PlanAction>, severity: Option<&str>) -> PatchPlan {
        let spec = PatchPlanSpec {
            alert: severity.map(|s| AlertSummary { severity: s.into(), ..Default::default() }),
            actions,
            ..Default::default()
        };
        let mut plan = PatchPlan::new("p1", spec);
        plan.metadata.namespace = Some("prod".into());
        plan.metadata.uid = Some("uid-1".into());
        plan
    }

    fn target(name: &str, namespace: &str) -> ResolvedTarget {
        let config = crate::config::Config::from_yaml("actions: {restart: [VAEL_Core]}").expect("config");
        let mut t = config.resolve(name, namespace).expect("convention target");
        t.namespace = namespace.into();
        t
    }

    const RULES: &str = "
default: auto_approve
rules:
  - {name: critical-auto, decision: auto_approve, severities: [critical]}
  - {name: core-env, decision: require, actions: [edit_env], targets: [VAEL_Core]}
  - {name: prod-business-hours, decision: require, namespaces: [prod-eu],
     during: {time_zone: Europe/Berlin, ranges: [{days: [mon, tue, wed, thu, fri], from: '09:00', to: '17:00'}]}}
";

    #[test]
    fn first_matching_rule_decides() {
        let rules = config(RULES);
        rules.validate().expect("valid");
        let monday_noon: Timestamp = "2026-12-07T11:00:00Z".parse().expect("ts");
        let saturday: Timestamp = "2026-12-05T11:00:00Z".parse().expect("ts");
        let edit = || PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug");
        let restart = || PlanAction::new(crate::plan::ActionType::Restart, "VAEL_Core");
        let cases = [
            (
                "edit on core",
                plan(vec![edit()], Some("high")),
                "prod",
                monday_noon,
                (Some("core-env"), RuleDecision::Require),
            ),
            (
                "critical first",
                plan(vec![edit()], Some("critical")),
                "prod",
                monday_noon,
                (Some("critical-auto"), RuleDecision::AutoApprove),
            ),
            (
                "manual plan (no severity)",
                plan(vec![restart(), edit()], None),
                "prod",
                monday_noon,
                (Some("core-env"), RuleDecision::Require),
            ),
            (
                "restart only",
                plan(vec![restart()], Some("high")),
                "prod",
                monday_noon,
                (None, RuleDecision::AutoApprove),
            ),
            (
                "business hours",
                plan(vec![restart()], Some("high")),
                "prod-eu",
                monday_noon,
                (Some("prod-business-hours"), RuleDecision::Require),
            ),
            ("weekend", plan(vec![restart()], Some("high")), "prod-eu", saturday, (None, RuleDecision::AutoApprove)),
        ];
        for (name, plan, namespace, now, expected) in cases {
            let targets: Vec<_> = plan.spec.actions.iter().map(|a| target(&a.target, namespace)).collect();
            assert_eq!(rules.decide(&plan.spec, "prod", &targets, now), expected, "{name}");
        }
    }

    #[test]
    fn bad_rules_name_the_field() {
        let cases = [
            ("timeout_seconds: 0", "approvals.timeout_seconds"),
            ("rules: [{name: a, decision: require, actions: [explode]}]", "approvals.rules[0].actions"),
            ("rules: [{name: a, decision: require}, {name: a, decision: require}]", "approvals.rules[1].name"),
            (
                "rules: [{name: a, decision: require, during: {time_zone: Nowhere/Land, ranges: [{from: '09:00', to: '10:00'}]}}]",
                "approvals.rules[0].during.time_zone",
            ),
            (
                "rules: [{name: a, decision: require, during: {time_zone: UTC, ranges: [{from: '09:00', to: 'soon'}]}}]",
                "approvals.rules[0].during.ranges[0].to",
            ),
        ];
        for (yaml, field) in cases {
            let error = config(yaml).validate().expect_err(yaml);
            assert_eq!(error.field, field, "{yaml}: {error}");
        }
        assert!(serde_yaml::from_str::<ApprovalConfig>("rules: [{name: a, decision: maybe}]").is_err());
    }

    #[test]
    fn antibody_yml_errors_name_the_operator_fields() {
        let cases = [
            ("approvals: {rules: [{name: a, decision: require, actions: [nuke]}]}", "approvals.rules[0].actions"),
            (
                "change_windows: {windows: [{name: w, time_zone: Moon/Base, allow: [{from: '09:00', to: '10:00'}]}]}",
                "change_windows.windows[0].time_zone",
            ),
            ("change_windows: {freeze: {reason: '', until: '2026-12-24T00:00:00Z'}}", "change_windows.freeze.reason"),
            ("change_windows: {freeze: {reason: r, until: tomorrow}}", "change_windows.freeze.until"),
        ];
        for (yaml, field) in cases {
            let error = crate::config::Config::from_yaml(yaml).expect_err(yaml);
            assert_eq!(error.field, field, "{yaml}: {error}");
        }
        let config =
            crate::config::Config::from_yaml(RULES.replace('\n', "\n  ").replacen("", "approvals:\n  ", 1).as_str());
        assert!(config.is_ok_and(|c| c.approvals.rules.len() == 3));
    }

    #[test]
    fn decisions_bind_to_uid_digest_and_expire() {
        let rules = config("default: require\ntimeout_seconds: 600");
        let now: Timestamp = "2026-12-07T11:00:00Z".parse().expect("ts");
        let since = now - jiff::SignedDuration::from_secs(60);
        let base = plan(vec![PlanAction::new(crate::plan::ActionType::Restart, "VAEL_Core")], Some("high"));
        let digest = plan_digest(&base);
        let decision = |verdict, digest: &str, uid: &str, expires: Option<i64>| Decision {
            decision: verdict,
            by: "user:alice".into(),
            digest: digest.into(),
            uid: uid.into(),
            at: now,
            expires: expires.map(|s| now + jiff::SignedDuration::from_secs(s)),
            reason: "looked fine".into(),
        };
        let with = |d: Option<Decision>| {
            let mut p = base.clone();
            if let Some(d) = d {
                p.metadata.annotations =
                    Some([(APPROVAL_ANNOTATION.to_string(), serde_json::to_string(&d).expect("json"))].into());
            }
            p
        };
        let other_spec = spec_digest("prod", "p1", &PatchPlanSpec::default());
        let cases: Vec<(&str, PatchPlan, Timestamp, &str)> = vec![
            ("no decision", with(None), now, "waiting"),
            ("approved", with(Some(decision(Verdict::Approved, &digest, "uid-1", Some(300)))), now, "approved"),
            ("denied", with(Some(decision(Verdict::Denied, &digest, "uid-1", None))), now, "denied"),
            ("older spec", with(Some(decision(Verdict::Approved, &other_spec, "uid-1", Some(300)))), now, "waiting"),
            ("other object", with(Some(decision(Verdict::Approved, &digest, "uid-0", Some(300)))), now, "waiting"),
            ("approval expired", with(Some(decision(Verdict::Approved, &digest, "uid-1", Some(-1)))), now, "expired"),
            (
                "garbage",
                {
                    let mut p = base.clone();
                    p.metadata.annotations = Some([(APPROVAL_ANNOTATION.to_string(), "yes".to_string())].into());
                    p
                },
                now,
                "waiting",
            ),
            ("timed out", with(None), now + jiff::SignedDuration::from_secs(600), "expired"),
            (
                "expiry beyond approvals.max_ttl_seconds is capped",
                with(Some(decision(Verdict::Approved, &digest, "uid-1", Some(100_000)))),
                now + jiff::SignedDuration::from_secs(rules.max_ttl_seconds as i64 + 1),
                "expired",
            ),
        ];
        for (name, plan, at, expected) in cases {
            let got = gate(&rules, &plan, &[], since, at);
            let kind = match &got {
                Gate::NotRequired { .. } => "not required",
                Gate::Approved { .. } => "approved",
                Gate::Waiting { .. } => "waiting",
                Gate::Denied { .. } => "denied",
                Gate::Expired { .. } => "expired",
            };
            assert_eq!(kind, expected, "{name}: {got:?}");
        }
        let Gate::Waiting { message, .. } =
            gate(&rules, &with(Some(decision(Verdict::Approved, &other_spec, "uid-1", Some(300)))), &[], since, now)
        else {
            panic!("waiting")
        };
        assert!(message.contains("is for spec digest"), "{message}");
    }

    #[test]
    fn digest_covers_namespace_name_and_spec() {
        let spec = plan(vec![PlanAction::new(crate::plan::ActionType::Restart, "VAEL_Core")], None).spec;
        let base = spec_digest("prod", "p1", &spec);
        assert_eq!(base, spec_digest("prod", "p1", &spec.clone()));
        assert_ne!(base, spec_digest("prod", "p2", &spec));
        assert_ne!(base, spec_digest("dev", "p1", &spec));
        let mut edited = spec.clone();
        edited.dry_run = true;
        assert_ne!(base, spec_digest("prod", "p1", &edited));
    }
}
