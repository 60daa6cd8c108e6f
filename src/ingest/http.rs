//! REST intake (axum), merged into the main HTTP listener:
//!
//! - `POST /api/nexus/alert` — one ThreatAlert, or a JSON list of them (at most
//!   `ingest.max_batch`). One alert: 202 with its outcome, or a 4xx naming why. A list: every
//!   item must validate (else 400 naming the first bad index, and nothing is acted on), then 202
//!   with one result per alert.
//! - `POST /api/antibody/patch` — a manual plan: a PatchPlanSpec, or `{"name", "spec"}`. Admission
//!   (the whitelist) is checked before anything is written; a refusal is a 403/422 with the reason.
//! - `POST /api/alertmanager` — Alertmanager webhook v4 (see [`super::alertmanager`]): one plan per
//!   firing alert; a resolved alert cancels its plan if the plan has not started.
//!
//! Every route needs `Authorization: Bearer <token>` (see [`super::tokens`]); the token's name is
//! the requester in the audit trail. Bodies above `ingest.max_body_bytes` get 413. Errors are
//! JSON: `{"error": "<CamelCase code>", "reason": "<what is wrong>"}`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kube::api::Api;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::alertmanager::{self, Request as AmRequest};
use super::tokens::TokenStore;
use super::{API_REJECTED, API_UNAVAILABLE, Intake, SIGNING_FAILED, alert_from_value, annotate, apply_plan, id_hint};
use crate::plan::{PatchPlan, PatchPlanSpec};
use crate::reconcile::admission::{self, NOT_ALLOWED};
use crate::report::AlertOutcome;

pub const ALERT_PATH: &str = "/api/nexus/alert";
pub const PATCH_PATH: &str = "/api/antibody/patch";
pub const ALERTMANAGER_PATH: &str = "/api/alertmanager";

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

async fn require_token(State(state): State<HttpState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("").to_string());
    let tokens = state.tokens.get();
    match tokens.authorize(header.as_deref()) {
        Ok(name) => {
            request.extensions_mut().insert(Requester(name.to_string()));
            next.run(request).await
        }
        Err(why) => {
            let mut response = error(StatusCode::UNAUTHORIZED, "Unauthorized", why);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Read the body up to `limit` bytes; more is a 413 (checked from Content-Length first). A
/// Content-Type other than application/json is a 415 (none at all is taken as JSON).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large = |size: String| {
        error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", format!("request body is {size} (max {limit} bytes)"))
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
        return Err(too_large(format!("{length} bytes")));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large("larger".into())),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, "BadBody", format!("could not read the request body: {e}"))),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))
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
    }
}

/// HTTP status for one alert: accepted (202) unless refused.
pub fn outcome_status(outcome: &AlertOutcome) -> StatusCode {
    match outcome {
        AlertOutcome::Refused { reason, .. } => match reason.as_str() {
            NOT_ALLOWED => StatusCode::FORBIDDEN,
            API_UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            SIGNING_FAILED => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        },
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
            intake.refuse_invalid("-", FEED, &requester, "request body too large or unreadable".into());
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
        return match alert_from_value(value) {
            Ok(alert) => {
                let outcome = intake.submit(&alert, FEED, &requester).await;
                (outcome_status(&outcome), Json(outcome_json(&alert.id, &outcome))).into_response()
            }
            Err(reason) => {
                intake.refuse_invalid(&id, FEED, &requester, reason.clone());
                error(StatusCode::BAD_REQUEST, "InvalidAlert", reason)
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
        match alert_from_value(item) {
            Ok(alert) => alerts.push(alert),
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
    for alert in &alerts {
        let outcome = intake.submit(alert, FEED, &requester).await;
        results.push(outcome_json(&alert.id, &outcome));
    }
    (StatusCode::ACCEPTED, Json(json!({ "results": results }))).into_response()
}

/// `{"name", "spec"}` or a bare spec → (name, spec). Unknown fields are errors (typos must not
/// silently drop a safety flag such as `dryRun`).
fn manual_request(value: Value) -> Result<(Option<String>, PatchPlanSpec), String> {
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object: a PatchPlanSpec or {\"name\", \"spec\"}".into());
    };
    let (name, spec) = if object.contains_key("spec") {
        if let Some(unknown) = object.keys().find(|k| !["name", "spec"].contains(&k.as_str())) {
            return Err(format!("unknown field {unknown:?} (expected name, spec)"));
        }
        let name = match object.remove("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(other) => return Err(format!("name must be a string, not {other}")),
        };
        (name, object.remove("spec").unwrap_or_default())
    } else {
        (None, Value::Object(object))
    };
    let Value::Object(fields) = &spec else { return Err("spec must be a JSON object".into()) };
    if let Some(unknown) = fields.keys().find(|k| !["alert", "actions", "dryRun"].contains(&k.as_str())) {
        return Err(format!("spec: unknown field {unknown:?} (expected actions, dryRun, alert)"));
    }
    let spec: PatchPlanSpec = serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))?;
    if let Some(name) = &name {
        crate::validate::dns1123_subdomain(name).map_err(|e| format!("name: {e}"))?;
    }
    Ok((name, spec))
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
    let (name, spec) = match manual_request(value) {
        Ok(request) => request,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "InvalidSpec", reason),
    };
    let name = name.unwrap_or_else(|| manual_name(&requester, &spec));
    let namespace = intake.plan_namespace(&config);
    if let Err(refusal) = admission::admit(&config, &spec, &namespace) {
        let outcome = AlertOutcome::Refused { reason: refusal.reason.into(), message: refusal.message.clone() };
        intake.record(&name, MANUAL_FEED, &requester, outcome.clone());
        return error(outcome_status(&outcome), refusal.reason, refusal.message);
    }
    let mut plan = crate::policy::plan_object(&name, &namespace, "manual", spec);
    annotate(&mut plan, MANUAL_FEED, &requester);
    if let Err(reason) = super::sign_if_configured(&config, &mut plan) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, SIGNING_FAILED, reason);
    }
    let plans: Api<PatchPlan> = Api::namespaced(intake.client().clone(), &namespace);
    let unavailable = |e: kube::Error| match e {
        kube::Error::Api(status) if status.code < 500 && status.code != 429 => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            API_REJECTED,
            format!("the API server refused the plan: {}", status.message),
        ),
        other => error(StatusCode::SERVICE_UNAVAILABLE, API_UNAVAILABLE, format!("Kubernetes API: {other}")),
    };
    match plans.get_opt(&name).await {
        Ok(Some(existing)) if existing.spec == plan.spec => {
            let outcome = AlertOutcome::Deduplicated { plan: name.clone() };
            intake.record(&name, MANUAL_FEED, &requester, outcome.clone());
            return (StatusCode::ACCEPTED, Json(outcome_json(&name, &outcome))).into_response();
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
    let mut body = outcome_json(&name, &outcome);
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
            Ok(AmRequest::Resolve(threat)) => match intake.cancel(&threat).await {
                Ok((plan, cancel)) => {
                    tracing::info!(alert = id, %plan, outcome = cancel.name(), "alertmanager: resolved");
                    results.push(json!({ "id": id, "outcome": cancel.name(), "plan": plan }));
                }
                Err(e) => {
                    unavailable = true;
                    results.push(
                        json!({ "id": id, "outcome": "error", "error": API_UNAVAILABLE, "reason": e.to_string() }),
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

    #[test]
    fn manual_requests() {
        let (name, spec) = manual_request(json!({"actions":[{"type":"restart","target":"VAEL_Core"}],"dryRun":true}))
            .expect("bare spec");
        assert_eq!((name, spec.actions[0].action, spec.dry_run), (None, ActionType::Restart, true));
        let (name, _) =
            manual_request(json!({"name":"fix-1","spec":{"actions":[{"type":"reloadFlask","target":"VAEL_UI"}]}}))
                .expect("named");
        assert_eq!(name.as_deref(), Some("fix-1"));
        let bad: &[(Value, &str)] = &[
            (json!([1]), "expected a JSON object"),
            (json!({"actions":[{"type":"restart","target":"X"}],"dry_run":true}), "unknown field \"dry_run\""),
            (json!({"name":"x","spec":{"actions":[]},"extra":1}), "unknown field \"extra\""),
            (json!({"name":"Bad_Name","spec":{"actions":[{"type":"restart","target":"X"}]}}), "name: invalid name"),
            (json!({"name":7,"spec":{"actions":[]}}), "name must be a string"),
            (json!({"actions":[{"type":"reboot","target":"X"}]}), "spec: unknown variant"),
            (json!({"spec":"restart"}), "spec must be a JSON object"),
        ];
        for (value, want) in bad {
            let error = manual_request(value.clone()).expect_err(want);
            assert!(error.contains(want), "{value}: {error}");
        }
        let spec = PatchPlanSpec::default();
        let (a, b) = (manual_name("ops", &spec), manual_name("ops", &spec));
        assert_ne!(a, b, "each manual plan gets a fresh name");
        crate::validate::dns1123_subdomain(&a).expect("valid name");
    }

    #[test]
    fn outcome_statuses() {
        let refused = |reason: &str| AlertOutcome::Refused { reason: reason.into(), message: "m".into() };
        let cases = [
            (AlertOutcome::PlanCreated { plan: "p".into() }, StatusCode::ACCEPTED),
            (AlertOutcome::Ignored { rule: "r".into() }, StatusCode::ACCEPTED),
            (AlertOutcome::CooledDown { target: "T".into(), plan: "p".into() }, StatusCode::ACCEPTED),
            (refused("NotAllowed"), StatusCode::FORBIDDEN),
            (refused("InvalidHint"), StatusCode::UNPROCESSABLE_ENTITY),
            (refused("ApiUnavailable"), StatusCode::SERVICE_UNAVAILABLE),
            (refused("SigningFailed"), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (outcome, want) in cases {
            assert_eq!(outcome_status(&outcome), want, "{outcome:?}");
        }
        let body = outcome_json("a1", &refused("NotAllowed"));
        assert_eq!((body["error"].as_str(), body["reason"].as_str()), (Some("NotAllowed"), Some("m")));
    }
}
