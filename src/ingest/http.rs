//! REST intake (axum), merged into the main HTTP listener:
//!
//! - `POST /api/nexus/alert` — one ThreatAlert, or a JSON list of them (at most
//!   `ingest.max_batch`). One alert: 202 with its outcome, or a 4xx naming why. A list: every
//!   item must validate (else 400 naming the first bad index, and nothing is acted on), then 202
//!   with one result per alert.
//! - `POST /api/antibody/patch` — a manual plan: a PatchPlanSpec, `{"name", "spec"}`, or the
//!   original plan shape (`{"id", "source_alert", "actions": [{"type": "reload_flask"}, {"type":
//!   "edit_env", "key", "val"}]}`: snake_case types, `val`, no target = `defaults.targets`).
//!   Admission (the whitelist) is checked before anything is written; a refusal is a 403/422 with
//!   the reason. Accepted: 202 `{"status": "accepted", "id", "plan", "namespace", "outcome"}`.
//! - `POST /api/alertmanager` — Alertmanager webhook v4 (see [`super::alertmanager`]): one plan per
//!   firing alert; a resolved alert cancels its plan if the plan has not started.
//!
//! Every route needs `Authorization: Bearer <token>` (see [`super::tokens`]); the token's name is
//! the requester in the audit trail. Bodies above `ingest.max_body_bytes` get 413, after reading
//! (and dropping) up to [`DRAIN_MAX_BYTES`] of them, so clients that send the whole body before
//! reading (Python `requests`) see the 413 rather than a connection reset. A JSON object with a
//! key twice is a 400 naming the key. Errors are JSON: `{"error": "<CamelCase code>", "reason":
//! "<what is wrong>"}`.

use crate::reason::Reason;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use kube::api::Api;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::alertmanager::{self, Request as AmRequest};
use super::{Intake, alert_from_value, annotate, apply_plan, id_hint};
use crate::admission;
use crate::plan::{PatchPlan, PatchPlanSpec};
use crate::report::AlertOutcome;
use crate::tokens::{Scope, TokenStore};

pub const ALERT_PATH: &str = "/api/nexus/alert";
pub const PATCH_PATH: &str = "/api/antibody/patch";
pub const ALERTMANAGER_PATH: &str = "/api/alertmanager";

use crate::names::SOURCE_ALERT_ANNOTATION;

/// Feed names in metrics and audit.
pub const FEED: &str = "rest";
pub const MANUAL_FEED: &str = "manual";
pub const ALERTMANAGER_FEED: &str = "alertmanager";

#[derive(Clone)]
struct HttpState {
    intake: Arc<Intake>,
    tokens: Arc<TokenStore>,
}

/// The token name of the caller, set by [`require_token`].
#[derive(Clone)]
struct Requester(String);

pub fn router(intake: Arc<Intake>, tokens: Arc<TokenStore>) -> Router {
    let state = HttpState { intake, tokens };
    Router::new()
        .route(ALERT_PATH, post(nexus_alert))
        .route(PATCH_PATH, post(manual_patch))
        .route(ALERTMANAGER_PATH, post(alertmanager_webhook))
        // Runs before the body is read: no token, no work.
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

pub fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": code, "reason": reason.into() }))).into_response()
}

pub use crate::tokens::denied_response;

async fn require_token(State(state): State<HttpState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("").to_string());
    let tokens = state.tokens.get();
    match tokens.authorize(header.as_deref(), Scope::Ingest) {
        Ok(name) => {
            request.extensions_mut().insert(Requester(name.to_string()));
            next.run(request).await
        }
        Err(denied) => denied_response(&denied),
    }
}

/// An oversize body is read and dropped up to this much (within [`DRAIN_TIME`]) before the 413,
/// so the client is not reset while still sending; beyond it the connection is closed.
pub const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Read and drop what is left of a body, bounded in bytes and time.
async fn drain(mut body: Body, mut budget: u64) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            if len > budget {
                break;
            }
            budget -= len;
        }
    })
    .await;
}

/// Read the body up to `limit` bytes; more is a 413 (checked from Content-Length first). A
/// Content-Type other than application/json is a 415 (none at all is taken as JSON).
async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large = |size: String| {
        let mut response = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("request body is {size} (max {limit} bytes)"),
        );
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    // Every route takes JSON; a body declared as anything else was not meant for us.
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let media_type = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("Content-Type {media_type:?} is not accepted: send application/json"),
            ));
        }
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&l| l > limit as u64) {
        if length <= DRAIN_MAX_BYTES {
            drain(body, length).await;
        }
        return Err(too_large(format!("{length} bytes")));
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| error(StatusCode::BAD_REQUEST, "BadBody", format!("could not read the request body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                drain(body, DRAIN_MAX_BYTES).await;
                return Err(too_large("larger".into()));
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// Duplicate keys are refused here, for every route (see [`crate::validate::json_strict`]).
fn parse_json(bytes: &[u8]) -> Result<Value, crate::validate::Invalid> {
    crate::validate::json_strict(bytes)
}

/// The alert's JSON answer plus the top-level fields that were ignored, if any.
fn with_ignored(mut body: Value, ignored: Vec<String>) -> Value {
    if !ignored.is_empty() {
        body["ignored_fields"] = json!(ignored);
    }
    body
}

/// The JSON answer for one alert's outcome.
pub fn outcome_json(id: &str, outcome: &AlertOutcome) -> Value {
    let name = outcome.name();
    match outcome {
        AlertOutcome::PlanCreated { plan } | AlertOutcome::Deduplicated { plan } => {
            json!({ "id": id, "outcome": name, "plan": plan })
        }
        AlertOutcome::CooledDown { target, plan } => {
            json!({ "id": id, "outcome": name, "plan": plan, "target": target })
        }
        AlertOutcome::Ignored { rule } => json!({ "id": id, "outcome": name, "plan": null, "rule": rule }),
        AlertOutcome::Refused { reason, message } => {
            json!({ "id": id, "outcome": name, "plan": null, "error": reason, "reason": message })
        }
        AlertOutcome::Resolved { plan, result } => json!({ "id": id, "outcome": name, "plan": plan, "result": result }),
        AlertOutcome::Escalated { plan, step, from } => {
            json!({ "id": id, "outcome": name, "plan": plan, "step": step, "escalated_from": from })
        }
        AlertOutcome::Paged { rule, target } => {
            json!({ "id": id, "outcome": name, "plan": null, "rule": rule, "target": target })
        }
    }
}

/// HTTP status for one alert: accepted (202) unless refused.
pub fn outcome_status(outcome: &AlertOutcome) -> StatusCode {
    match outcome {
        AlertOutcome::Refused { reason, .. } => {
            StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
        }
        _ => StatusCode::ACCEPTED,
    }
}

async fn nexus_alert(
    State(state): State<HttpState>,
    Extension(Requester(requester)): Extension<Requester>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let intake = &state.intake;
    let limits = intake.config().ingest.clone();
    let bytes = match read_body(&headers, body, limits.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => {
            intake.refuse_invalid("-", FEED, &requester, "request body too large or unreadable");
            return response;
        }
    };
    let value = match parse_json(&bytes) {
        Ok(value) => value,
        Err(reason) => {
            intake.refuse_invalid("-", FEED, &requester, reason.clone());
            return error(StatusCode::BAD_REQUEST, "MalformedJson", reason);
        }
    };
    let Value::Array(items) = value else {
        let id = id_hint(&value);
        let ignored = crate::alert::unknown_fields(&value);
        return match alert_from_value(value) {
            Ok(alert) => {
                let outcome = intake.submit(&alert, FEED, &requester).await;
                (outcome_status(&outcome), Json(with_ignored(outcome_json(&alert.id, &outcome), ignored)))
                    .into_response()
            }
            Err(reason) => {
                intake.refuse_invalid(&id, FEED, &requester, reason.clone());
                error(StatusCode::BAD_REQUEST, "InvalidAlert", reason.to_string())
            }
        };
    };
    if items.is_empty() {
        return error(StatusCode::BAD_REQUEST, "EmptyBatch", "the alert list is empty");
    }
    if items.len() > limits.max_batch {
        let reason = format!("{} alerts in one request (max {}, ingest.max_batch)", items.len(), limits.max_batch);
        intake.refuse_invalid("-", FEED, &requester, reason.clone());
        return error(StatusCode::PAYLOAD_TOO_LARGE, "BatchTooLarge", reason);
    }
    // All or nothing: a list with a bad alert is refused whole, so the sender can fix and resend.
    let mut alerts = Vec::with_capacity(items.len());
    let mut first_error = None;
    for (index, item) in items.into_iter().enumerate() {
        let id = id_hint(&item);
        let ignored = crate::alert::unknown_fields(&item);
        match alert_from_value(item) {
            Ok(alert) => alerts.push((alert, ignored)),
            Err(reason) => {
                intake.refuse_invalid(&id, FEED, &requester, reason.clone());
                first_error.get_or_insert(format!("alerts[{index}] (id {id}): {reason}"));
            }
        }
    }
    if let Some(reason) = first_error {
        return error(StatusCode::BAD_REQUEST, "InvalidAlert", format!("{reason}; no alert of this list was acted on"));
    }
    let mut results = Vec::with_capacity(alerts.len());
    for (alert, ignored) in alerts {
        let outcome = intake.submit(&alert, FEED, &requester).await;
        results.push(with_ignored(outcome_json(&alert.id, &outcome), ignored));
    }
    (StatusCode::ACCEPTED, Json(json!({ "results": results }))).into_response()
}

/// A manual plan as posted: its name if chosen, the spec, and the original shape's `id` and
/// `source_alert` (echoed back / kept on the plan).
#[derive(Debug, Clone, PartialEq)]
struct ManualRequest {
    name: Option<String>,
    spec: PatchPlanSpec,
    /// The original's plan `id`, answered back as `id`.
    id: Option<String>,
    source_alert: Option<String>,
}

/// Today's PatchPlanSpec and the original plan shape, one schema. Unknown fields are errors
/// (typos must not silently drop a safety flag such as `dryRun`); every PatchPlanSpec field is
/// here (a unit test round-trips a full spec, so a new one cannot be forgotten).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ManualSpec {
    #[serde(default)]
    alert: Option<crate::plan::AlertSummary>,
    actions: Vec<ManualAction>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    rollback_on_failure: bool,
    /// The original: the plan's id (`patch-…`).
    #[serde(default)]
    id: Option<String>,
    /// The original: the alert the plan answers.
    #[serde(default, rename = "source_alert")]
    source_alert: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualAction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    /// The original's name for `value`.
    #[serde(default)]
    val: Option<String>,
    #[serde(default)]
    backup: Option<String>,
}

/// `{"name", "spec"}` or a bare spec (today's or the original's) → a [`ManualRequest`]. Every
/// error names the field (`spec.actions[1].type: …`).
fn manual_request(value: Value, config: &crate::config::Config) -> Result<ManualRequest, crate::validate::Invalid> {
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object: a PatchPlanSpec, {\"name\", \"spec\"} or the original plan".into());
    };
    let (name, spec, prefix) = if object.contains_key("spec") {
        if let Some(unknown) = object.keys().find(|k| !["name", "spec"].contains(&k.as_str())) {
            return Err(format!("unknown field {unknown:?} (expected name, spec)").into());
        }
        let name = match object.remove("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(other) => return Err(format!("name must be a string, not {other}").into()),
        };
        (name, object.remove("spec").unwrap_or_default(), "spec.")
    } else {
        (None, Value::Object(object), "")
    };
    if !spec.is_object() {
        return Err("spec must be a JSON object".into());
    }
    let parsed: ManualSpec = serde_path_to_error::deserialize(&spec).map_err(|e| {
        let path = e.path().to_string();
        // serde quotes names with backticks; JSON readers expect "…".
        let inner = e.into_inner().to_string().replace('`', "\"");
        if path == "." { format!("{prefix}{inner}") } else { format!("{prefix}{path}: {inner}") }
    })?;
    let mut actions = Vec::with_capacity(parsed.actions.len());
    for (i, action) in parsed.actions.into_iter().enumerate() {
        let field = |f: &str| format!("{prefix}actions[{i}].{f}");
        let kind = crate::plan::ActionType::from_config_name(&action.kind).ok_or_else(|| {
            format!(
                "{}: unknown action {:?} (restart, reload_flask, edit_env, rollback, delete_pod; or camelCase)",
                field("type"),
                action.kind
            )
        })?;
        let value = match (action.value, action.val) {
            (Some(_), Some(_)) => return Err(format!("{}: give value or val, not both", field("val")).into()),
            (value, val) => value.or(val),
        };
        let target = match action.target {
            Some(target) => target,
            None => config.default_target(kind).map(String::from).ok_or_else(|| {
                format!(
                    "{}: missing, and defaults.targets.{} names no target of antibody.yml",
                    field("target"),
                    kind.config_name()
                )
            })?,
        };
        actions.push(crate::plan::PlanAction { action: kind, target, key: action.key, value, backup: action.backup });
    }
    if let Some(id) = &parsed.id {
        crate::alert::token_field("id", id, 128).map_err(|e| format!("{prefix}{e}"))?;
    }
    let mut alert = parsed.alert;
    if let Some(source_alert) = &parsed.source_alert {
        crate::alert::token_field("source_alert", source_alert, 128).map_err(|e| format!("{prefix}{e}"))?;
        if alert.as_ref().is_some_and(|a| &a.id != source_alert) {
            return Err(format!("{prefix}source_alert: differs from alert.id").into());
        }
        // The original's patch_applied carries source_alert: keep it where the summary reads it.
        alert.get_or_insert_with(|| crate::plan::AlertSummary {
            id: source_alert.clone(),
            source: "manual".into(),
            category: "manual".into(),
            ..Default::default()
        });
    }
    let spec =
        PatchPlanSpec { alert, actions, dry_run: parsed.dry_run, rollback_on_failure: parsed.rollback_on_failure };
    // The plan's name: chosen, else the original id when it is a valid name, else derived from
    // the id (the same id → the same plan, so a re-post deduplicates).
    let name = match (name, &parsed.id) {
        (Some(name), _) => Some(name),
        (None, Some(id)) if crate::validate::dns1123_subdomain(id).is_ok() => Some(id.clone()),
        (None, Some(id)) => Some(format!("patch-{}", &hex::encode(Sha256::digest(id.as_bytes()))[..16])),
        (None, None) => None,
    };
    if let Some(name) = &name {
        crate::validate::dns1123_subdomain(name).map_err(|e| format!("name: {e}"))?;
    }
    Ok(ManualRequest { name, spec, id: parsed.id, source_alert: parsed.source_alert })
}

/// A fresh name for an unnamed manual plan (a retry is a new plan).
fn manual_name(requester: &str, spec: &PatchPlanSpec) -> String {
    let mut hasher = Sha256::new();
    hasher.update(requester.as_bytes());
    hasher.update(jiff::Timestamp::now().as_nanosecond().to_le_bytes());
    hasher.update(fastrand::u64(..).to_le_bytes());
    hasher.update(serde_json::to_vec(spec).unwrap_or_default());
    format!("manual-{}", &hex::encode(hasher.finalize())[..16])
}

async fn manual_patch(
    State(state): State<HttpState>,
    Extension(Requester(requester)): Extension<Requester>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let intake = &state.intake;
    let config = intake.config();
    let bytes = match read_body(&headers, body, config.ingest.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let value = match parse_json(&bytes) {
        Ok(value) => value,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "MalformedJson", reason),
    };
    let ManualRequest { name, spec, id, source_alert } = match manual_request(value, &config) {
        Ok(request) => request,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "InvalidSpec", reason),
    };
    let name = name.unwrap_or_else(|| manual_name(&requester, &spec));
    // The original answers {"status": "accepted", "id": <plan id>}; today's fields come along.
    let answer = |outcome: &AlertOutcome| {
        let mut body = outcome_json(&name, outcome);
        body["status"] = json!("accepted");
        body["id"] = json!(id.clone().unwrap_or_else(|| name.clone()));
        body
    };
    let namespace = intake.plan_namespace(&config);
    if let Err(refusal) = admission::admit(&config, &spec, &namespace) {
        let outcome = AlertOutcome::Refused { reason: refusal.reason, message: refusal.message.clone() };
        intake.record(&name, MANUAL_FEED, &requester, outcome.clone());
        return error(outcome_status(&outcome), refusal.reason.as_str(), refusal.message);
    }
    let mut plan = crate::policy::plan_object(&name, &namespace, "manual", spec);
    annotate(&mut plan, MANUAL_FEED, &requester);
    if let Some(source_alert) = &source_alert {
        plan.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(SOURCE_ALERT_ANNOTATION.into(), source_alert.clone());
    }
    if let Err(reason) = super::sign_if_configured(&config, &mut plan) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, Reason::SigningFailed.as_str(), reason);
    }
    let plans: Api<PatchPlan> = Api::namespaced(intake.client().clone(), &namespace);
    let unavailable = |e: kube::Error| match crate::backoff::api_failure(&e) {
        crate::backoff::ApiFailure::Unavailable => {
            error(StatusCode::SERVICE_UNAVAILABLE, Reason::ApiUnavailable.as_str(), format!("Kubernetes API: {e}"))
        }
        crate::backoff::ApiFailure::Conflict | crate::backoff::ApiFailure::Rejected => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            Reason::ApiRejected.as_str(),
            format!("the API server refused the plan: {e}"),
        ),
    };
    match plans.get_opt(&name).await {
        Ok(Some(existing)) if existing.spec == plan.spec => {
            let outcome = AlertOutcome::Deduplicated { plan: name.clone() };
            intake.record(&name, MANUAL_FEED, &requester, outcome.clone());
            return (StatusCode::ACCEPTED, Json(answer(&outcome))).into_response();
        }
        Ok(Some(_)) => {
            return error(
                StatusCode::CONFLICT,
                "Conflict",
                format!("plan {name} exists with a different spec; specs are immutable: choose a new name"),
            );
        }
        Ok(None) => {}
        Err(e) => return unavailable(e),
    }
    if let Err(e) = apply_plan(&plans, &plan).await {
        return unavailable(e);
    }
    let outcome = AlertOutcome::PlanCreated { plan: name.clone() };
    intake.record(&name, MANUAL_FEED, &requester, outcome.clone());
    let mut body = answer(&outcome);
    body["namespace"] = Value::String(namespace);
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn alertmanager_webhook(
    State(state): State<HttpState>,
    Extension(Requester(requester)): Extension<Requester>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let intake = &state.intake;
    let limits = intake.config().ingest.clone();
    let bytes = match read_body(&headers, body, limits.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let webhook = match alertmanager::parse(&bytes) {
        Ok(webhook) => webhook,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "InvalidWebhook", reason),
    };
    if webhook.alerts.len() > limits.max_batch {
        let reason = format!("{} alerts in one notification (max {})", webhook.alerts.len(), limits.max_batch);
        return error(StatusCode::PAYLOAD_TOO_LARGE, "BatchTooLarge", reason);
    }
    let mut results = Vec::with_capacity(webhook.alerts.len());
    let mut unavailable = false;
    for alert in &webhook.alerts {
        let id = if alert.fingerprint.is_empty() { "-" } else { alert.fingerprint.as_str() };
        match alertmanager::map(alert) {
            Ok(AmRequest::Fire(threat)) => {
                let outcome = intake.submit(&threat, ALERTMANAGER_FEED, &requester).await;
                unavailable |= outcome_status(&outcome) == StatusCode::SERVICE_UNAVAILABLE;
                results.push(outcome_json(id, &outcome));
            }
            Ok(AmRequest::Resolve(threat)) => match intake.resolve(&threat, ALERTMANAGER_FEED, &requester).await {
                Ok((plan, cancel)) => {
                    tracing::info!(alert = id, %plan, outcome = cancel.name(), "alertmanager: resolved");
                    results.push(json!({ "id": id, "outcome": cancel.name(), "plan": plan }));
                }
                Err(e) => {
                    unavailable = true;
                    results.push(
                        json!({ "id": id, "outcome": "error", "error": Reason::ApiUnavailable, "reason": e.to_string() }),
                    );
                }
            },
            Err(reason) => {
                let outcome = intake.refuse_invalid(id, ALERTMANAGER_FEED, &requester, reason);
                results.push(outcome_json(id, &outcome));
            }
        }
    }
    // 503 makes Alertmanager retry the group; what did go through dedupes on the retry.
    let status = if unavailable { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::ACCEPTED };
    (status, Json(json!({ "receiver": webhook.receiver, "results": results }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ActionType;

    fn config() -> crate::config::Config {
        crate::config::Config::from_yaml(include_str!("../../antibody.yml")).expect("antibody.yml")
    }

    #[test]
    fn manual_requests() {
        let config = config();
        let request =
            manual_request(json!({"actions":[{"type":"restart","target":"VAEL_Core"}],"dryRun":true}), &config)
                .expect("bare spec");
        assert_eq!(
            (request.name, request.spec.actions[0].action, request.spec.dry_run),
            (None, ActionType::Restart, true)
        );
        let request = manual_request(
            json!({"name":"fix-1","spec":{"actions":[{"type":"reloadFlask","target":"VAEL_UI"}]}}),
            &config,
        )
        .expect("named");
        assert_eq!(request.name.as_deref(), Some("fix-1"));
        let bad: &[(Value, &str)] = &[
            (json!([1]), "expected a JSON object"),
            (json!({"actions":[{"type":"restart","target":"X"}],"dry_run":true}), "unknown field \"dry_run\""),
            (json!({"name":"x","spec":{"actions":[]},"extra":1}), "unknown field \"extra\""),
            (json!({"name":"Bad_Name","spec":{"actions":[{"type":"restart","target":"X"}]}}), "name: invalid name"),
            (json!({"name":7,"spec":{"actions":[]}}), "name must be a string"),
            (json!({"actions":[{"type":"reboot","target":"X"}]}), "actions[0].type: unknown action \"reboot\""),
            (
                json!({"spec":{"actions":[{"type":"restart"},{"type":"restart","colour":1}]}}),
                "spec.actions[1].colour: unknown field \"colour\"",
            ),
            (
                json!({"actions":[{"type":"edit_env","key":"K","value":"a","val":"b"}]}),
                "actions[0].val: give value or val",
            ),
            (json!({"id":"a b","actions":[{"type":"restart"}]}), "id \"a b\" must be printable"),
            (json!({"actions":"restart"}), "actions: invalid type"),
            (json!({"spec":"restart"}), "spec must be a JSON object"),
        ];
        for (value, want) in bad {
            let error = manual_request(value.clone(), &config).expect_err(want);
            assert!(error.contains(want), "{value}: {error}");
        }
        let spec = PatchPlanSpec::default();
        let (a, b) = (manual_name("ops", &spec), manual_name("ops", &spec));
        assert_ne!(a, b, "each manual plan gets a fresh name");
        crate::validate::dns1123_subdomain(&a).expect("valid name");
    }

    /// ANTIBODY_IMPLEMENTATION.md's plan shape: id, source_alert, snake_case, val, no targets.
    #[test]
    fn the_original_plan_shape() {
        let original = json!({"id":"patch-1","source_alert":"a1","actions":[
            {"type":"restart","target":"VAEL_Core"},{"type":"reload_flask"},
            {"type":"edit_env","key":"FLASK_DEBUG","val":"False"}]});
        let request = manual_request(original, &config()).expect("the original plan is accepted");
        assert_eq!((request.name.as_deref(), request.id.as_deref()), (Some("patch-1"), Some("patch-1")));
        let described: Vec<String> = request.spec.actions.iter().map(crate::plan::PlanAction::describe).collect();
        assert_eq!(described, ["restart:VAEL_Core", "reloadFlask:VAEL_UI", "editEnv:VAEL_Core:FLASK_DEBUG"]);
        assert_eq!(request.spec.actions[2].value.as_deref(), Some("False"));
        assert_eq!(request.spec.alert.as_ref().map(|a| a.id.as_str()), Some("a1"));
        // The original's own ids are timestamps, not Kubernetes names: a stable derived name.
        let stamped = json!({"id":"patch-2025-05-30T12:34:56.789","actions":[{"type":"reload_flask"}]});
        let a = manual_request(stamped.clone(), &config()).expect("valid").name.expect("named");
        assert_eq!(Some(a.clone()), manual_request(stamped, &config()).expect("valid").name);
        assert!(a.starts_with("patch-") && crate::validate::dns1123_subdomain(&a).is_ok(), "{a}");
    }

    /// Every PatchPlanSpec field is accepted (rollbackOnFailure was once missing from a list).
    #[test]
    fn every_spec_field_round_trips() {
        let spec = PatchPlanSpec {
            alert: Some(crate::plan::AlertSummary { id: "a".into(), severity: "high".into(), ..Default::default() }),
            actions: vec![crate::plan::PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug")],
            dry_run: true,
            rollback_on_failure: true,
        };
        let value = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(manual_request(value, &config()).expect("full spec").spec, spec);
    }

    #[test]
    fn outcome_statuses() {
        let refused = |reason: Reason| AlertOutcome::Refused { reason, message: "m".into() };
        let cases = [
            (AlertOutcome::PlanCreated { plan: "p".into() }, StatusCode::ACCEPTED),
            (AlertOutcome::Ignored { rule: "r".into() }, StatusCode::ACCEPTED),
            (AlertOutcome::CooledDown { target: "T".into(), plan: "p".into() }, StatusCode::ACCEPTED),
            (refused(Reason::NotAllowed), StatusCode::FORBIDDEN),
            (refused(Reason::InvalidHint), StatusCode::UNPROCESSABLE_ENTITY),
            (refused(Reason::ApiUnavailable), StatusCode::SERVICE_UNAVAILABLE),
            (refused(Reason::SigningFailed), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (outcome, want) in cases {
            assert_eq!(outcome_status(&outcome), want, "{outcome:?}");
        }
        let body = outcome_json("a1", &refused(Reason::NotAllowed));
        assert_eq!((body["error"].as_str(), body["reason"].as_str()), (Some("NotAllowed"), Some("m")));
    }
}
