//! Alerts whose rule has an escalation ladder (`rules[].escalate`; the decisions are in
//! `crate::escalation`). The ladder replaces the cool-down for its rule: while a step's plan runs,
//! the same problem joins it; after it, the ladder says whether the alert starts over, climbs to
//! the next step, or pages a human.

use crate::names::ESCALATED_FROM_ANNOTATION;
use crate::names::ESCALATION_ANNOTATION;
use crate::reason::Reason;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use tracing::{info, warn};

use super::{Intake, annotate, sign_if_configured};
use crate::alert::ThreatAlert;
use crate::config::escalation::{Escalation, PAGE};
use crate::config::{Config, Rule};
use crate::escalation::{self, LadderState, Next, Previous};
use crate::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
use crate::policy::{self, Decision};
use crate::report::{AlertOutcome, PlanTransition, TransitionKind};

/// What one step of the ladder is, once resolved.
enum StepPlan {
    Plan(PatchPlanSpec),
    /// `rollback` with no backup of the target: nothing to roll back, try the next step.
    Skip(String),
    Page,
    Refused(AlertOutcome),
}

impl Intake {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn escalate(
        &self,
        config: &Config,
        alert: &ThreatAlert,
        feed: &str,
        requester: &str,
        namespace: &str,
        rule: &Rule,
        ladder: &Escalation,
        first: PatchPlanSpec,
    ) -> AlertOutcome {
        let unavailable = |e: kube::Error| AlertOutcome::Refused {
            reason: Reason::ApiUnavailable,
            message: format!("escalation state of rule {}: {e}", rule.name),
        };
        let Some(target) = first.actions.first().map(|a| a.target.clone()) else {
            return AlertOutcome::Ignored { rule: rule.name.clone() };
        };
        let key = escalation::ladder_key(&rule.name, &target);
        let plans: Api<PatchPlan> = Api::namespaced(self.client.clone(), namespace);
        let _serial = self.slow_path.lock().await;
        // Another replica may move the ladder between our read and our write: the write is a
        // compare-and-swap on what we read, and a lost race decides again on the new state.
        'decide: for _attempt in 0..4 {
            let state = match escalation::ladder(&self.client, namespace, &key).await {
                Ok(state) => state,
                Err(e) => return unavailable(e),
            };
            let previous_plan = match state.as_ref().filter(|s| !s.plan.is_empty()) {
                Some(s) => match plans.get_opt(&s.plan).await {
                    Ok(plan) => plan,
                    Err(e) => return unavailable(e),
                },
                None => None,
            };
            let paged_at =
                state.as_ref().filter(|s| s.plan.is_empty()).and_then(|s| s.updated.parse::<Timestamp>().ok());
            let previous = if state.as_ref().is_some_and(|s| s.plan.is_empty()) {
                Previous::Missing
            } else {
                Previous::of(previous_plan.as_ref())
            };
            let now = Timestamp::now();
            let next =
                escalation::next_step(state.as_ref(), previous, paged_at, ladder.steps(), ladder.cure_seconds, now);
            let (mut step, from) = match next {
                Next::Join { plan } => return AlertOutcome::CooledDown { target, plan },
                Next::StillPaged if paged_at.is_some() => {
                    return AlertOutcome::Paged { rule: rule.name.clone(), target };
                }
                // The last step did not cure it and there is no `page` step: page all the same.
                Next::StillPaged => (ladder.steps(), state.as_ref().map(|s| s.plan.clone())),
                Next::Step { step, from } => (step, from),
            };
            let mut skipped = Vec::new();
            loop {
                let resolved = if step == 0 {
                    StepPlan::Plan(first.clone())
                } else if step >= ladder.steps() || ladder.then[step - 1] == PAGE {
                    StepPlan::Page
                } else {
                    self.step_plan(config, alert, namespace, &target, &ladder.then[step - 1], &first).await
                };
                match resolved {
                    StepPlan::Skip(why) => {
                        skipped.push(why);
                        step += 1;
                    }
                    StepPlan::Refused(outcome) => return outcome,
                    StepPlan::Page => {
                        let reason = format!(
                            "escalation of rule {} exhausted after {} step(s); last plan {}",
                            rule.name,
                            step,
                            from.as_deref().unwrap_or("-")
                        );
                        let paged = LadderState { step, plan: String::new(), updated: now.to_string() };
                        match escalation::advance_ladder(&self.client, namespace, &key, state.as_ref(), paged).await {
                            Ok(true) => {}
                            Ok(false) => continue 'decide,
                            Err(e) => return unavailable(e),
                        }
                        if let Err(e) = escalation::open(&self.client, namespace, &target, reason.clone()).await {
                            return unavailable(e);
                        }
                        warn!(rule = %rule.name, %target, %reason, "escalation exhausted: breaker open, paging");
                        if let Some(last) = &previous_plan {
                            let message =
                                format!("{reason}; breaker of {target} open until `antibody breaker reset {target}`");
                            self.reporter.plan(PlanTransition {
                                plan: last,
                                kind: TransitionKind::EscalationExhausted,
                                reason: Reason::EscalationExhausted,
                                message: &message,
                            });
                        }
                        return AlertOutcome::Paged { rule: rule.name.clone(), target };
                    }
                    StepPlan::Plan(spec) => {
                        let name = if step == 0 {
                            alert.plan_name()
                        } else {
                            format!("{}-step{}", alert.plan_name(), step + 1)
                        };
                        let mut plan = policy::plan_object(&name, namespace, &rule.name, spec);
                        annotate(&mut plan, feed, requester);
                        let annotations = plan.metadata.annotations.get_or_insert_with(Default::default);
                        annotations.insert(
                            ESCALATION_ANNOTATION.into(),
                            format!("{}/{target} step {} of {}", rule.name, step + 1, ladder.steps()),
                        );
                        if let Some(from) = from.as_ref().filter(|_| step > 0) {
                            annotations.insert(ESCALATED_FROM_ANNOTATION.into(), from.clone());
                        }
                        if let Err(message) = sign_if_configured(config, &mut plan) {
                            return AlertOutcome::Refused { reason: Reason::SigningFailed, message };
                        }
                        // Claim the step, then create its plan (a crash in between leaves the ladder
                        // pointing at a missing plan: the next alert starts over).
                        let claimed = LadderState { step, plan: name.clone(), updated: now.to_string() };
                        match escalation::advance_ladder(&self.client, namespace, &key, state.as_ref(), claimed).await {
                            Ok(true) => {}
                            Ok(false) => continue 'decide,
                            Err(e) => return unavailable(e),
                        }
                        let outcome = match self.create_plan(namespace, &plans, &plan).await {
                            Ok(outcome) => outcome,
                            Err(e) => return unavailable(e),
                        };
                        return match (step, from, outcome) {
                            (step, Some(from), AlertOutcome::PlanCreated { plan }) if step > 0 => {
                                info!(rule = %rule.name, %target, %plan, %from, step = step + 1, ?skipped, "escalated");
                                AlertOutcome::Escalated { plan, step: step + 1, from }
                            }
                            (_, _, outcome) => outcome,
                        };
                    }
                }
            }
        }
        AlertOutcome::Refused {
            reason: Reason::ApiUnavailable,
            message: format!("escalation state of rule {} kept changing underneath (other replicas)", rule.name),
        }
    }

    /// The plan spec of a later step (`restart`, `rollback`, …).
    async fn step_plan(
        &self,
        config: &Config,
        alert: &ThreatAlert,
        namespace: &str,
        ladder_target: &str,
        step: &str,
        first: &PatchPlanSpec,
    ) -> StepPlan {
        let (kind, fixed) = step.split_once(':').map_or((step, None), |(k, t)| (k, Some(t.to_string())));
        if ActionType::from_config_name(kind) != Some(ActionType::Rollback) {
            return match policy::decide_step(config, alert, namespace, step) {
                Decision::Plan { spec, .. } => StepPlan::Plan(spec),
                Decision::Ignore { rule } => StepPlan::Refused(AlertOutcome::Ignored { rule }),
                Decision::Refuse(refusal) => StepPlan::Refused(AlertOutcome::Refused {
                    reason: refusal.reason,
                    message: format!("escalation step {step}: {}", refusal.message),
                }),
            };
        }
        // Roll back the target's last edit: its newest backup.
        let target = fixed.unwrap_or_else(|| ladder_target.to_string());
        let resolved = match config.resolve(&target, namespace) {
            Ok(resolved) => resolved,
            Err(message) => return StepPlan::Skip(format!("rollback of {target}: {message}")),
        };
        let Some(config_map) = resolved.config_map.clone() else {
            return StepPlan::Skip(format!("rollback of {target}: it has no config_map"));
        };
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &resolved.namespace);
        let backups = match crate::actions::env::list_backups(&api, &config_map).await {
            Ok(backups) => backups,
            Err(e) => {
                return StepPlan::Refused(AlertOutcome::Refused {
                    reason: Reason::ApiUnavailable,
                    message: format!("escalation step rollback: listing backups of {config_map}: {e}"),
                });
            }
        };
        let Some(newest) = backups.last().and_then(|b| b.metadata.name.clone()) else {
            return StepPlan::Skip(format!("rollback of {target}: no backup of {config_map}"));
        };
        let spec = PatchPlanSpec {
            alert: first.alert.clone(),
            actions: vec![PlanAction { backup: Some(newest), ..PlanAction::new(ActionType::Rollback, target) }],
            dry_run: false,
            rollback_on_failure: false,
        };
        match crate::admission::admit(config, &spec, namespace) {
            Ok(_) => StepPlan::Plan(spec),
            Err(refusal) => StepPlan::Refused(AlertOutcome::Refused {
                reason: refusal.reason,
                message: format!("escalation step rollback: {}", refusal.message),
            }),
        }
    }
}
