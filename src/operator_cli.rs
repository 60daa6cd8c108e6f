//! `antibody approve|deny|freeze|unfreeze`: the operator's switches, written with the caller's
//! own kubeconfig so the API server (its RBAC and audit log) knows who flipped them. Each
//! command prints what it recorded; errors name what is wrong and change nothing.

use crate::names::FREEZE_ANNOTATION;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Config};
use serde_json::json;

use crate::approval::{self, Request, Verdict};
use crate::window::Freeze;

async fn client() -> Result<Client, String> {
    let config = Config::infer().await.map_err(|e| format!("cannot find cluster credentials: {e}"))?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Record an approval or a denial of plan `namespace/name`.
pub async fn decide(
    namespace: &str,
    name: &str,
    verdict: Verdict,
    reason: String,
    digest: Option<String>,
    ttl_seconds: u64,
) -> Result<String, String> {
    if ttl_seconds == 0 {
        return Err("--ttl-seconds must be > 0".into());
    }
    let client = client().await?;
    let by = approval::caller(&client).await.map_err(|e| format!("who am I (SelfSubjectReview): {e}"))?;
    let request = Request { verdict, by, reason, expected_digest: digest, ttl_seconds };
    let decision = approval::decide(&client, namespace, name, &request).await.map_err(|e| e.to_string())?;
    let what = match verdict {
        Verdict::Approved => format!("approved until {}", decision.expires.map_or("-".into(), |t| t.to_string())),
        Verdict::Denied => "denied".to_string(),
    };
    Ok(format!("{namespace}/{name}: {what} by {} (spec digest {})\n", decision.by, decision.digest))
}

/// Freeze a namespace: no plan acting in it starts until `now + for_seconds`.
pub async fn freeze(namespace: &str, reason: &str, for_seconds: u64) -> Result<String, String> {
    if reason.trim().is_empty() {
        return Err("--reason must say why (it is shown on every waiting plan)".into());
    }
    if for_seconds == 0 {
        return Err("--for-seconds must be > 0".into());
    }
    let seconds = i64::try_from(for_seconds).map_err(|_| "--for-seconds too large".to_string())?;
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .map_err(|e| format!("--for-seconds: {e}"))?;
    let client = client().await?;
    let by = approval::caller(&client).await.map_err(|e| format!("who am I (SelfSubjectReview): {e}"))?;
    let value = serde_json::to_string(&Freeze { reason: reason.to_string(), until, by: Some(by.clone()) })
        .map_err(|e| e.to_string())?;
    annotate(&client, namespace, Some(value)).await?;
    Ok(format!("namespace {namespace}: frozen until {until} by {by}: {reason}\n"))
}

/// `antibody breaker status`: a table of the namespace's breakers.
pub async fn breaker_status(namespace: &str) -> Result<String, String> {
    let client = client().await?;
    let breakers = crate::escalation::breakers(&client, namespace).await.map_err(|e| format!("{namespace}: {e}"))?;
    let mut table = format!("{:<20} {:<9} {:<32} REASON\n", "TARGET", "FAILURES", "OPEN SINCE");
    for (target, state) in &breakers {
        table.push_str(&format!(
            "{:<20} {:<9} {:<32} {}\n",
            target,
            state.failures,
            state.open_since.as_deref().unwrap_or("(closed)"),
            state.reason
        ));
    }
    if breakers.is_empty() {
        table.push_str(&format!("(no failures recorded in {namespace})\n"));
    }
    Ok(table)
}

/// `antibody breaker reset TARGET`: close it; plans waiting on it go on.
pub async fn breaker_reset(namespace: &str, target: &str) -> Result<String, String> {
    let client = client().await?;
    let by = approval::caller(&client).await.map_err(|e| format!("who am I (SelfSubjectReview): {e}"))?;
    let was_open =
        crate::escalation::reset(&client, namespace, target).await.map_err(|e| format!("{namespace}: {e}"))?;
    Ok(if was_open {
        format!("breaker of {target} in {namespace} reset by {by}: its plans go on\n")
    } else {
        format!("breaker of {target} in {namespace} was not open (its failure count is cleared)\n")
    })
}

pub async fn unfreeze(namespace: &str) -> Result<String, String> {
    annotate(&client().await?, namespace, None).await?;
    Ok(format!("namespace {namespace}: freeze lifted\n"))
}

async fn annotate(client: &Client, namespace: &str, value: Option<String>) -> Result<(), String> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let patch = json!({ "metadata": { "annotations": { FREEZE_ANNOTATION: value } } });
    api.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("namespace {namespace}: {e}"))
}
