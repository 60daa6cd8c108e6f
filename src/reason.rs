//! Every reason Antibody gives, as one type: a plan condition's `reason`, a step's failure, an
//! alert's refusal. Each knows its wire name (unchanged: conditions, audit records, metrics
//! and clients read these strings), what it says about a plan (still waiting, ended well,
//! ended badly) and, for an alert refused at intake, its HTTP status. Pure.

use std::fmt;

/// What a reason says about the plan whose `Ready` condition carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In flight or held by a gate; the plan has not ended.
    Waiting,
    /// The plan ended well (`phase: Succeeded`).
    Succeeded,
    /// The plan (or the alert) was refused or failed; terminal.
    Failed,
    /// Either, by configuration: `Throttled` waits (`on_throttle: wait`) or fails (`fail`),
    /// `OutsideWindow` waits or refuses (`outside: refuse`).
    WaitingOrFailed,
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident => $stage:ident,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The wire name: the variant's own name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            pub fn stage(self) -> Stage {
                match self {
                    $(Reason::$name => Stage::$stage,)*
                }
            }
        }
    };
}

reasons! {
    // In flight: the plan is running one of its actions.
    /// Admitted and past every gate; the first action is about to run.
    Started => Waiting,
    RolloutInProgress => Waiting,
    EditingEnv => Waiting,
    Reloading => Waiting,
    RollingBack => Waiting,
    EvictingPod => Waiting,
    /// An action finished (the transition's reason; never a condition).
    ActionSucceeded => Waiting,
    // Held by a gate before it acts.
    /// `safety.paused` or the namespace's pause annotation.
    Paused => Waiting,
    Throttled => WaitingOrFailed,
    AwaitingApproval => Waiting,
    /// A human approved (the transition's reason; the plan then goes on).
    Approved => Waiting,
    OutsideWindow => WaitingOrFailed,
    Frozen => Waiting,
    /// The target's breaker is open: `antibody breaker reset`.
    BreakerOpen => Waiting,
    /// `audit.fail_closed`: a record could not be written, so nothing acts until it can.
    AuditUnavailable => Waiting,
    // Ended well.
    Applied => Succeeded,
    DryRun => Succeeded,
    /// Every action carried out, not every effect observed (`PatchApplied=Unknown`).
    Unverified => Succeeded,
    // Refused by admission (plans) or policy (alerts).
    NotAllowed => Failed,
    InvalidSpec => Failed,
    NamespaceNotAllowed => Failed,
    SignatureInvalid => Failed,
    SignatureReplayed => Failed,
    ApprovalExpired => Failed,
    Denied => Failed,
    // An action failed.
    TargetNotFound => Failed,
    BackupNotFound => Failed,
    BackupUntrusted => Failed,
    ExecFailed => Failed,
    NoReadyPods => Failed,
    NonZeroExitCode => Failed,
    VerificationFailed => Failed,
    EnvNotSynced => Failed,
    CompanionMissing => Failed,
    ProgressDeadlineExceeded => Failed,
    DisruptiveRestart => Failed,
    DeploymentPaused => Failed,
    DisruptionBudget => Failed,
    /// An action failed and the plan's edit was undone (`rollbackOnFailure`).
    RolledBack => Failed,
    /// The last step of an escalation ladder did not cure the target (transition reason).
    EscalationExhausted => Failed,
    // An alert refused at intake.
    InvalidAlert => Failed,
    NoTarget => Failed,
    InvalidHint => Failed,
    ApiUnavailable => Failed,
    ApiRejected => Failed,
    SigningFailed => Failed,
}

impl Reason {
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == name)
    }

    /// Whether a plan whose `Ready` reason this is has ended, if the reason alone says so.
    pub fn is_terminal(self) -> Option<bool> {
        match self.stage() {
            Stage::Waiting => Some(false),
            Stage::Succeeded | Stage::Failed => Some(true),
            Stage::WaitingOrFailed => None,
        }
    }

    /// HTTP status of an alert refused with this reason: the caller's fault (403, 422) or ours
    /// (500, 503 — retry later).
    pub fn http_status(self) -> u16 {
        match self {
            Reason::NotAllowed => 403,
            Reason::ApiUnavailable => 503,
            Reason::SigningFailed => 500,
            _ => 422,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.as_str().to_string()
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &reason in Reason::ALL {
            assert!(seen.insert(reason.as_str()), "{reason} twice");
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
    }

    #[test]
    fn table() {
        // (reason, wire name, terminal?, HTTP status as an intake refusal)
        let cases = [
            (Reason::Applied, "Applied", Some(true), 422),
            (Reason::DryRun, "DryRun", Some(true), 422),
            (Reason::Unverified, "Unverified", Some(true), 422),
            (Reason::RolloutInProgress, "RolloutInProgress", Some(false), 422),
            (Reason::BreakerOpen, "BreakerOpen", Some(false), 422),
            (Reason::AuditUnavailable, "AuditUnavailable", Some(false), 422),
            (Reason::Throttled, "Throttled", None, 422),
            (Reason::OutsideWindow, "OutsideWindow", None, 422),
            (Reason::NotAllowed, "NotAllowed", Some(true), 403),
            (Reason::NamespaceNotAllowed, "NamespaceNotAllowed", Some(true), 422),
            (Reason::ApiUnavailable, "ApiUnavailable", Some(true), 503),
            (Reason::SigningFailed, "SigningFailed", Some(true), 500),
            (Reason::InvalidAlert, "InvalidAlert", Some(true), 422),
            (Reason::InvalidHint, "InvalidHint", Some(true), 422),
            (Reason::RolledBack, "RolledBack", Some(true), 422),
        ];
        for (reason, name, terminal, status) in cases {
            assert_eq!(reason.as_str(), name);
            assert_eq!(reason.to_string(), name);
            assert_eq!(reason.is_terminal(), terminal, "{name}");
            assert_eq!(reason.http_status(), status, "{name}");
        }
        assert_eq!(serde_json::to_value(Reason::BackupUntrusted).ok(), Some(serde_json::json!("BackupUntrusted")));
    }
}
