//! The operator's gates on a plan that has not started: approval (`approval`), then freezes and
//! change windows (`window`). Called by the step machine after the pause switch and before the
//! signature replay guard and budgets, so a plan that waits here has reserved nothing.
//!
//! A waiting plan is `Ready=False` with reason `AwaitingApproval`, `Frozen` or `OutsideWindow`
//! and `status.waitingFor` (a printer column) says until when; a denial, an expiry or a
//! refusing window ends it (`Denied`, `ApprovalExpired`, `OutsideWindow`).

use crate::names::FREEZE_ANNOTATION;
use crate::reason::Reason;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::{Context, StatusWriter, finish, report};
use crate::approval::{self, Gate};
use crate::conditions::Outcome;
use crate::config::{Config, ResolvedTarget};
use crate::escalation;
use crate::plan::PatchPlan;
use crate::report::TransitionKind;
use crate::window::{self, Verdict};

/// `Some(action)`: the plan waits or ended here; `None`: it may go on.
pub(super) async fn gate(
    ctx: &Context,
    config: &Config,
    plan: &PatchPlan,
    namespace: &str,
    targets: &[ResolvedTarget],
    writer: &mut StatusWriter,
    now: &Time,
) -> crate::Result<Option<Action>> {
    // An open breaker (consecutive failures, or an exhausted escalation ladder) holds every plan
    // on its target until a human resets it.
    if config.safety.breaker.is_some() || config.rules.iter().any(|r| r.escalate.is_some()) {
        let breakers = escalation::breakers(&ctx.client, namespace).await?;
        let open: Vec<String> = targets
            .iter()
            .filter_map(|t| breakers.get(&t.name).filter(|b| b.is_open()).map(|b| format!("{} ({})", t.name, b.reason)))
            .collect();
        if !open.is_empty() {
            let names: Vec<&str> = targets
                .iter()
                .filter(|t| breakers.get(&t.name).is_some_and(|b| b.is_open()))
                .map(|t| t.name.as_str())
                .collect();
            writer.status.waiting_for = Some(format!("antibody breaker reset {}", names.join(" ")));
            let message =
                format!("breaker open for {}: nothing acts on it until `antibody breaker reset`", open.join(", "));
            writer.set_outcome(&Outcome::in_progress(Reason::BreakerOpen, message), now);
            writer.save().await?;
            // A reset is a ConfigMap change, which no watch here follows: look again often.
            return Ok(Some(Action::requeue(Duration::from_secs(3))));
        }
    }
    let since = writer.status.started_at.as_ref().map_or(now.0, |t| t.0);
    match approval::gate(&config.approvals, plan, targets, since, now.0) {
        Gate::NotRequired { .. } => {}
        Gate::Approved { decision } => {
            let reason = if decision.reason.is_empty() { String::new() } else { format!(": {}", decision.reason) };
            let until = decision.expires.map_or(String::new(), |e| format!(", valid until {e}"));
            let message = format!(
                "approved by {} at {} (spec digest {}{until}){reason}",
                decision.by, decision.at, decision.digest
            );
            // Reported once per plan (the reporter drops repeats): the audit's record of the decision.
            report(ctx, plan, writer, TransitionKind::Approved, Reason::Approved, &message);
        }
        Gate::Waiting { message, deadline } => {
            writer.status.waiting_for = Some(format!("approval until {deadline}"));
            writer.set_outcome(&Outcome::in_progress(Reason::AwaitingApproval, message.clone()), now);
            writer.save().await?;
            report(ctx, plan, writer, TransitionKind::AwaitingApproval, Reason::AwaitingApproval, &message);
            // A decision is an annotation: the plan watch wakes us. The requeue meets the deadline.
            return Ok(Some(Action::requeue(until(deadline, now.0, Duration::from_secs(30)))));
        }
        Gate::Denied { message } => {
            writer.status.waiting_for = None;
            let outcome = Outcome::failed(Reason::Denied, message);
            return finish(ctx, plan, writer, outcome, now).await.map(Some);
        }
        Gate::Expired { message } => {
            writer.status.waiting_for = None;
            let outcome = Outcome::failed(Reason::ApprovalExpired, message);
            return finish(ctx, plan, writer, outcome, now).await.map(Some);
        }
    }

    let mut namespaces: Vec<&str> =
        std::iter::once(namespace).chain(targets.iter().map(|t| t.namespace.as_str())).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut freezes = Vec::new();
    for candidate in namespaces {
        if let Some(value) = namespace_annotation(ctx, candidate, FREEZE_ANNOTATION).await? {
            freezes.push((candidate.to_string(), value));
        }
    }
    let pairs: Vec<(String, String)> = targets.iter().map(|t| (t.name.clone(), t.namespace.clone())).collect();
    match window::check(&config.change_windows, &freezes, &pairs, now.0) {
        Verdict::Open => {}
        Verdict::Wait { reason, message, retry_at } => {
            let what = if reason == Reason::Frozen { "freeze ends" } else { "window opens" };
            writer.status.waiting_for = Some(retry_at.map_or(format!("{what}: never"), |t| format!("{what} {t}")));
            writer.set_outcome(&Outcome::in_progress(reason, message), now);
            writer.save().await?;
            // A freeze can be lifted early (the namespace watch does not wake plans): look often.
            let cap = Duration::from_secs(if reason == Reason::Frozen { 5 } else { 30 });
            let delay = retry_at.map_or(cap, |t| until(t, now.0, cap));
            return Ok(Some(Action::requeue(delay)));
        }
        Verdict::Refuse { reason, message } => {
            writer.status.waiting_for = None;
            return finish(ctx, plan, writer, Outcome::failed(reason, message), now).await.map(Some);
        }
    }
    writer.status.waiting_for = None;
    Ok(None)
}

/// Time until `at` (plus a little, so the instant has passed), between 200 ms and `cap`.
fn until(at: Timestamp, now: Timestamp, cap: Duration) -> Duration {
    let left = Duration::try_from(at.duration_since(now)).unwrap_or_default();
    (left + Duration::from_millis(100)).clamp(Duration::from_millis(200), cap)
}

/// A namespace's annotation, from the namespace watch (read directly if not listed yet).
async fn namespace_annotation(ctx: &Context, namespace: &str, key: &str) -> crate::Result<Option<String>> {
    let cached = ctx.namespaces.get().and_then(|store| store.get(&ObjectRef::new(namespace)));
    let annotations = match cached {
        Some(ns) => ns.metadata.annotations.clone(),
        None => {
            let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
            crate::actions::not_found(namespaces.get_metadata(namespace).await)?.and_then(|n| n.metadata.annotations)
        }
    };
    Ok(annotations.and_then(|mut a| a.remove(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_delays_meet_the_instant_within_bounds() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().expect("ts");
        let cap = Duration::from_secs(30);
        let cases = [
            (5, Duration::from_millis(5100)),
            (0, Duration::from_millis(200)),
            (-10, Duration::from_millis(200)),
            (3600, cap),
        ];
        for (seconds, expected) in cases {
            let at = now + jiff::SignedDuration::from_secs(seconds);
            assert_eq!(until(at, now, cap), expected, "{seconds}s");
        }
    }
}
