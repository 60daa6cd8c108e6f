//! Reporting: every plan transition and every alert decision, told to the people and systems
//! around Antibody. Conditions are computed in [`crate::conditions`]; here they fan out to
//! Kubernetes Events, metrics, and the hooks (audit log, broadcasts, notifiers).
//!
//! Hooks are synchronous and must not block: anything slow (network) enqueues and returns.

pub mod access;
pub mod audit;
pub mod audit_anchor;
pub mod broadcast;
pub mod events;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod plan_log;
pub mod summary;

use crate::reason::Reason;
use std::sync::{Arc, Mutex, RwLock};

use kube::Client;
use kube::runtime::events::{EventType, Recorder, Reporter as EventReporter};

use crate::bounded::BoundedSet;
use crate::plan::PatchPlan;
pub use metrics::Metrics;

/// What just happened to a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionKind {
    /// First sight: admitted, `Reconciling=True`.
    Started,
    /// Action `index` finished successfully.
    ActionSucceeded { index: usize },
    /// Terminal: every action succeeded (`PatchApplied=True`).
    Applied,
    /// Terminal: proven with dryRun=All, nothing changed.
    DryRun,
    /// Terminal: every action carried out, but not every effect observed
    /// (`PatchApplied=Unknown`, reason `Unverified`).
    Unverified,
    /// Terminal: refused or failed (`Stalled=True`).
    Failed,
    /// Not started: an approval rule holds the plan until a human decides (notifiers announce it).
    AwaitingApproval,
    /// A human approved the plan's spec digest (the audit records who).
    Approved,
    /// This (ended) plan was the last step of an escalation ladder and the alert came back:
    /// nothing more acts on the target, its breaker is open, a human is paged (notifiers).
    EscalationExhausted,
}

impl TransitionKind {
    /// The one name of a transition: audit `event`, metrics label, notifier and Socket.IO
    /// event (each sink picks which kinds it announces: [`Self::notified`], [`Self::broadcast`]).
    pub fn name(self) -> &'static str {
        match self {
            TransitionKind::Started => "started",
            TransitionKind::ActionSucceeded { .. } => "action_succeeded",
            TransitionKind::Applied => "patch_applied",
            TransitionKind::DryRun => "patch_dry_run",
            TransitionKind::Unverified => "patch_unverified",
            TransitionKind::Failed => "patch_failed",
            TransitionKind::AwaitingApproval => "plan_awaiting_approval",
            TransitionKind::Approved => "approved",
            TransitionKind::EscalationExhausted => "escalation_exhausted",
        }
    }

    /// Told to notifiers (the VAEL UI, webhooks): outcomes, and the two states a human must act
    /// on (a plan awaiting approval, an exhausted escalation ladder).
    pub fn notified(self) -> bool {
        self.is_terminal() || matches!(self, TransitionKind::AwaitingApproval | TransitionKind::EscalationExhausted)
    }

    /// Broadcast over Socket.IO: the outcomes of plans that acted (a dry run changed nothing).
    pub fn broadcast(self) -> bool {
        matches!(self, TransitionKind::Applied | TransitionKind::Failed | TransitionKind::Unverified)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TransitionKind::Applied | TransitionKind::DryRun | TransitionKind::Unverified | TransitionKind::Failed
        )
    }
}

/// A plan transition; `plan.status` is the status as just saved.
#[derive(Debug, Clone, Copy)]
pub struct PlanTransition<'a> {
    pub plan: &'a PatchPlan,
    pub kind: TransitionKind,
    /// Condition reason (`Applied`, `NotAllowed`, …) or the action's event reason.
    pub reason: Reason,
    pub message: &'a str,
}

/// What became of one alert. Every accepted alert ends in exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOutcome {
    PlanCreated {
        plan: String,
    },
    Deduplicated {
        plan: String,
    },
    CooledDown {
        target: String,
        plan: String,
    },
    Ignored {
        rule: String,
    },
    Refused {
        reason: Reason,
        message: String,
    },
    /// Alertmanager `resolved`: the plan was cancelled (`cancelled`), had already started
    /// (`already_started`), or did not exist (`not_found`).
    Resolved {
        plan: String,
        result: String,
    },
    /// An escalation ladder created `plan` for step `step` (1-based) after `from` did not cure it.
    Escalated {
        plan: String,
        step: usize,
        from: String,
    },
    /// An escalation ladder is exhausted: nothing acts, the target's breaker is open.
    Paged {
        rule: String,
        target: String,
    },
}

impl AlertOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            AlertOutcome::PlanCreated { .. } => "plan_created",
            AlertOutcome::Deduplicated { .. } => "deduplicated",
            AlertOutcome::CooledDown { .. } => "cooled_down",
            AlertOutcome::Ignored { .. } => "ignored",
            AlertOutcome::Refused { .. } => "refused",
            AlertOutcome::Resolved { .. } => "resolved",
            AlertOutcome::Escalated { .. } => "escalated",
            AlertOutcome::Paged { .. } => "paged",
        }
    }
}

/// One alert decision, for the audit log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub alert_id: String,
    /// The validated alert, when the decision was about one (not for manual plans or alerts
    /// that did not parse).
    pub alert: Option<crate::alert::ThreatAlert>,
    /// Where it came from: `grpc`, `ws`, `rest`, `alertmanager`.
    pub feed: String,
    /// Who asked: the alert's `source`, or the REST token name.
    pub requester: String,
    pub outcome: AlertOutcome,
}

/// Receives transitions and alert decisions (audit log, Socket.IO, Redis, webhooks).
pub trait Hook: Send + Sync {
    fn on_plan(&self, transition: &PlanTransition<'_>);
    fn on_alert(&self, _record: &AlertRecord) {}
    /// A terminal plan seen again (each controller start reconciles every plan once): a hook
    /// that promises at-least-once delivery re-sends what it has no delivery marker for.
    /// Hooks that only record (audit, Events) ignore it.
    fn on_terminal_replay(&self, _transition: &PlanTransition<'_>) {}
}

/// Transitions already reported, by plan uid. A reconcile can run on a stale cached copy of a
/// plan (the watch has not yet delivered our own status write) and reach the same transition
/// again; it must not be announced twice (Events, audit, `patch_applied`). Bounded, FIFO.
pub struct ReportedTransitions(BoundedSet<(String, TransitionKind)>);

impl ReportedTransitions {
    pub fn new(capacity: usize) -> Self {
        Self(BoundedSet::new(capacity))
    }

    /// Let `(uid, kind)` be reported again.
    pub fn forget(&mut self, uid: &str, kind: TransitionKind) {
        self.0.remove(&(uid.to_string(), kind));
    }

    /// True the first time `(uid, kind)` is seen.
    pub fn first_time(&mut self, uid: &str, kind: TransitionKind) -> bool {
        self.0.insert((uid.to_string(), kind))
    }
}

const REPORTED_CAPACITY: usize = 50_000;

pub struct Reporter {
    events: events::EventQueue,
    pub metrics: Arc<Metrics>,
    hooks: RwLock<Vec<Arc<dyn Hook>>>,
    reported: Mutex<ReportedTransitions>,
    /// The audit log, for `audit.fail_closed` (it is also among the hooks).
    audit: RwLock<Option<Arc<audit::AuditLog>>>,
}

impl Reporter {
    pub fn new(client: Client, instance: String, metrics: Arc<Metrics>) -> Self {
        let reporter = EventReporter { controller: "antibody".into(), instance: Some(instance) };
        Self {
            events: events::EventQueue::start(Recorder::new(client, reporter), metrics.clone()),
            metrics,
            hooks: RwLock::default(),
            reported: Mutex::new(ReportedTransitions::new(REPORTED_CAPACITY)),
            audit: RwLock::default(),
        }
    }

    /// The audit log: a hook, and what [`Reporter::audit_durable`] waits on.
    pub fn set_audit(&self, log: Arc<audit::AuditLog>) {
        self.add_hook(log.clone());
        *self.audit.write().unwrap_or_else(|p| p.into_inner()) = Some(log);
    }

    /// Every record reported so far is on disk (`Ok` when there is no audit log).
    pub async fn audit_durable(&self) -> Result<(), audit::AuditUnavailable> {
        let log = self.audit.read().unwrap_or_else(|p| p.into_inner()).clone();
        match log {
            Some(log) => log.flush().await,
            None => Ok(()),
        }
    }

    /// Let a transition be reported again (its record was lost: the plan did not act on it).
    pub fn forget(&self, uid: &str, kind: TransitionKind) {
        self.reported.lock().unwrap_or_else(|p| p.into_inner()).forget(uid, kind);
    }

    pub fn add_hook(&self, hook: Arc<dyn Hook>) {
        self.hooks.write().unwrap_or_else(|p| p.into_inner()).push(hook);
    }

    fn hooks(&self) -> Vec<Arc<dyn Hook>> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A plan transition: Event on the plan, metrics, hooks.
    pub fn plan(&self, transition: PlanTransition<'_>) {
        if let Some(uid) = transition.plan.metadata.uid.as_deref() {
            let first = self.reported.lock().unwrap_or_else(|p| p.into_inner()).first_time(uid, transition.kind);
            if !first {
                self.metrics.duplicate_transitions.inc();
                tracing::debug!(uid, transition = transition.kind.name(), "transition already reported");
                return;
            }
        }
        let (type_, action) = match transition.kind {
            TransitionKind::Failed => (EventType::Warning, "Finish"),
            TransitionKind::Started => (EventType::Normal, "Start"),
            TransitionKind::AwaitingApproval | TransitionKind::Approved => (EventType::Normal, "Approve"),
            TransitionKind::EscalationExhausted => (EventType::Warning, "Escalate"),
            TransitionKind::ActionSucceeded { .. } => (EventType::Normal, "Act"),
            TransitionKind::Applied | TransitionKind::DryRun => (EventType::Normal, "Finish"),
            TransitionKind::Unverified => (EventType::Warning, "Finish"),
        };
        // The last action's success is announced by the plan's own `Applied` Event right after
        // it: one Event (an API write) less per plan. Audit and hooks still get every transition.
        let last_action = matches!(transition.kind, TransitionKind::ActionSucceeded { index }
            if index + 1 == transition.plan.spec.actions.len());
        if !last_action {
            self.events.publish(
                transition.plan,
                type_,
                transition.reason.as_str(),
                action,
                transition.message.to_string(),
            );
        }
        self.metrics.plan_transition(&transition);
        for hook in self.hooks() {
            hook.on_plan(&transition);
        }
    }

    /// Send the Events still queued (bounded wait): on shutdown.
    pub async fn flush_events(&self, limit: std::time::Duration) {
        self.events.flush(limit).await;
    }

    /// A terminal plan reconciled again: hooks' [`Hook::on_terminal_replay`] only (no Event,
    /// no metrics: nothing happened to the plan).
    pub fn replay_terminal(&self, plan: &PatchPlan) {
        let Some((kind, reason, message)) = terminal_transition(plan) else {
            return;
        };
        let transition = PlanTransition { plan, kind, reason, message };
        for hook in self.hooks() {
            hook.on_terminal_replay(&transition);
        }
    }

    /// An alert decision: metrics and hooks.
    pub fn alert(&self, record: &AlertRecord) {
        self.metrics.alert(&record.feed, record.outcome.name());
        for hook in self.hooks() {
            hook.on_alert(record);
        }
    }
}

/// The terminal transition a saved plan went through, from its phase and `Ready` condition.
/// A failed plan whose reason Antibody does not know (its status was written by someone else)
/// is not replayed.
pub fn terminal_transition(plan: &PatchPlan) -> Option<(TransitionKind, Reason, &str)> {
    let ready = plan.condition(crate::conditions::READY);
    let (reason, message) = ready.map(|c| (Reason::parse(&c.reason), c.message.as_str())).unwrap_or((None, ""));
    match (plan.phase(), reason) {
        (crate::plan::Phase::Succeeded, Some(Reason::DryRun)) => {
            Some((TransitionKind::DryRun, Reason::DryRun, message))
        }
        (crate::plan::Phase::Succeeded, Some(Reason::Unverified)) => {
            Some((TransitionKind::Unverified, Reason::Unverified, message))
        }
        (crate::plan::Phase::Succeeded, _) => Some((TransitionKind::Applied, Reason::Applied, message)),
        (crate::plan::Phase::Failed, Some(reason)) => Some((TransitionKind::Failed, reason, message)),
        (crate::plan::Phase::Failed, None) | (crate::plan::Phase::Pending | crate::plan::Phase::Running, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transition_of_a_plan_is_reported_once() {
        let mut reported = ReportedTransitions::new(3);
        assert!(reported.first_time("a", TransitionKind::Started));
        assert!(reported.first_time("a", TransitionKind::ActionSucceeded { index: 0 }));
        assert!(reported.first_time("a", TransitionKind::ActionSucceeded { index: 1 }));
        assert!(!reported.first_time("a", TransitionKind::ActionSucceeded { index: 0 }), "a repeat");
        assert!(reported.first_time("b", TransitionKind::Started), "another plan");
        // Bounded: the oldest entry ("a" Started) was forgotten.
        assert!(reported.first_time("a", TransitionKind::Started));
        assert_eq!(reported.0.len(), 3);
    }

    /// Counts what the hooks were told.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, TransitionKind)>>);

    impl Hook for Recorded {
        fn on_plan(&self, transition: &PlanTransition<'_>) {
            let uid = transition.plan.metadata.uid.clone().unwrap_or_default();
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push((uid, transition.kind));
        }
    }

    /// A repeat reaches neither hooks nor transition metrics; `antibody_duplicate_transitions_total`
    /// counts each one, by value.
    #[tokio::test]
    async fn repeated_transitions_are_counted_not_reported() {
        use TransitionKind::{ActionSucceeded, Applied, Started};
        // No API server behind it: Events fail to publish (counted dropped), which is not the
        // subject here.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let reporter = Reporter::new(client, "test".into(), Arc::new(Metrics::new()));
        let hook = Arc::new(Recorded::default());
        reporter.add_hook(hook.clone());
        let mut a = PatchPlan::new("a", Default::default());
        a.metadata.uid = Some("uid-a".into());
        let mut b = PatchPlan::new("b", Default::default());
        b.metadata.uid = Some("uid-b".into());
        // (plan, transition, reported?)
        let table = [
            (&a, Started, true),
            (&a, Started, false),
            (&a, ActionSucceeded { index: 0 }, true),
            (&b, Started, true),
            (&a, ActionSucceeded { index: 0 }, false),
            (&a, Applied, true),
            (&a, Applied, false),
            (&b, Applied, true),
        ];
        for (plan, kind, _) in &table {
            reporter.plan(PlanTransition { plan, kind: *kind, reason: Reason::Applied, message: "" });
        }
        let expected: Vec<(String, TransitionKind)> = table
            .iter()
            .filter(|(_, _, reported)| *reported)
            .map(|(plan, kind, _)| (plan.metadata.uid.clone().unwrap_or_default(), *kind))
            .collect();
        assert_eq!(*hook.0.lock().unwrap_or_else(|p| p.into_inner()), expected);
        let repeats = table.iter().filter(|(_, _, reported)| !reported).count() as u64;
        assert_eq!(reporter.metrics.duplicate_transitions.get(), repeats);
        let text = reporter.metrics.encode();
        assert!(text.lines().any(|l| l == format!("antibody_duplicate_transitions_total {repeats}")), "{text}");
    }
}
