//! Pure computation of a plan's kstatus-compatible conditions.
//!
//! `Ready` summarises, `PatchApplied` is the domain outcome (the `patch_applied` signal),
//! `Reconciling` is True while in flight, `Stalled` is True once the plan gave up.
//! `lastTransitionTime` only moves when a condition's status flips, so rewriting the same
//! outcome is byte-identical and does not re-trigger the controller.

use crate::reason::Reason;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const PATCH_APPLIED: &str = "PatchApplied";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Where a plan stands, as far as conditions are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Actions are running (or about to).
    InProgress { reason: Reason, message: String },
    /// Every action succeeded.
    Applied { message: String },
    /// Every action was proven with `dryRun=All`; nothing changed.
    DryRun { message: String },
    /// Every action was carried out, but the effect of some could not be observed (e.g. a bare
    /// SIGHUP with no `verify` probe): `Ready=True`, `PatchApplied=Unknown`, reason `Unverified`.
    Unverified { message: String },
    /// Refused or failed; terminal.
    Failed { reason: Reason, message: String },
}

impl Outcome {
    pub fn in_progress(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::InProgress { reason, message: message.into() }
    }

    pub fn failed(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::Failed { reason, message: message.into() }
    }
}

/// The four conditions for `outcome`, reusing `lastTransitionTime` from `previous` where the
/// status did not change.
pub fn compute(outcome: &Outcome, generation: Option<i64>, now: &Time, previous: &[Condition]) -> Vec<Condition> {
    const T: &str = "True";
    const F: &str = "False";
    let (ready, applied, reconciling, stalled, reason, message) = match outcome {
        Outcome::InProgress { reason, message } => (F, F, T, F, *reason, message.as_str()),
        Outcome::Applied { message } => (T, T, F, F, Reason::Applied, message.as_str()),
        Outcome::DryRun { message } => (T, F, F, F, Reason::DryRun, message.as_str()),
        Outcome::Unverified { message } => (T, "Unknown", F, F, Reason::Unverified, message.as_str()),
        Outcome::Failed { reason, message } => (F, F, F, T, *reason, message.as_str()),
    };
    [(READY, ready), (PATCH_APPLIED, applied), (RECONCILING, reconciling), (STALLED, stalled)]
        .into_iter()
        .map(|(type_, status)| {
            let status = status.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).expect("condition present")
    }

    #[test]
    fn table() {
        struct Case {
            outcome: Outcome,
            ready: &'static str,
            applied: &'static str,
            reconciling: &'static str,
            stalled: &'static str,
            reason: &'static str,
        }
        let cases = [
            Case {
                outcome: Outcome::in_progress(Reason::RolloutInProgress, "waiting"),
                ready: "False",
                applied: "False",
                reconciling: "True",
                stalled: "False",
                reason: "RolloutInProgress",
            },
            Case {
                outcome: Outcome::Applied { message: "ok".into() },
                ready: "True",
                applied: "True",
                reconciling: "False",
                stalled: "False",
                reason: "Applied",
            },
            Case {
                outcome: Outcome::DryRun { message: "would".into() },
                ready: "True",
                applied: "False",
                reconciling: "False",
                stalled: "False",
                reason: "DryRun",
            },
            Case {
                outcome: Outcome::Unverified { message: "sent".into() },
                ready: "True",
                applied: "Unknown",
                reconciling: "False",
                stalled: "False",
                reason: "Unverified",
            },
            Case {
                outcome: Outcome::failed(Reason::NotAllowed, "no"),
                ready: "False",
                applied: "False",
                reconciling: "False",
                stalled: "True",
                reason: "NotAllowed",
            },
        ];
        for case in cases {
            let conditions = compute(&case.outcome, Some(3), &at(10), &[]);
            assert_eq!(conditions.len(), 4);
            assert_eq!(get(&conditions, READY).status, case.ready, "{:?}", case.outcome);
            assert_eq!(get(&conditions, PATCH_APPLIED).status, case.applied, "{:?}", case.outcome);
            assert_eq!(get(&conditions, RECONCILING).status, case.reconciling, "{:?}", case.outcome);
            assert_eq!(get(&conditions, STALLED).status, case.stalled, "{:?}", case.outcome);
            assert!(conditions.iter().all(|c| c.reason == case.reason && c.observed_generation == Some(3)));
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = compute(&Outcome::in_progress(Reason::Started, "a"), Some(1), &at(10), &[]);
        let again = compute(&Outcome::in_progress(Reason::RolloutInProgress, "b"), Some(1), &at(20), &first);
        assert_eq!(get(&again, READY).last_transition_time, at(10), "Ready stayed False");
        assert_eq!(get(&again, RECONCILING).last_transition_time, at(10), "Reconciling stayed True");
        let done = compute(&Outcome::Applied { message: "c".into() }, Some(1), &at(30), &again);
        assert_eq!(get(&done, READY).last_transition_time, at(30), "Ready flipped");
        assert_eq!(get(&done, STALLED).last_transition_time, at(10), "Stalled stayed False");
        // Same outcome twice: identical output, so a status write is a no-op.
        assert_eq!(compute(&Outcome::Applied { message: "c".into() }, Some(1), &at(40), &done), done);
    }
}
