//! Alert claims (`ingest.cooldown_seconds`; not `safety.cooldown_seconds`, which spaces plans
//! that act on one target): a storm of different alerts asking for the same remediation
//! collapses into the one plan created first. Pure: the table, its rules, and its ConfigMap
//! encoding.
//!
//! A *remedy* is what one plan action does to one target, spelled as [`PlanAction::describe`]
//! spells it (`restart:VAEL_Core`, `editEnv:VAEL_Core:LOG_LEVEL`). A new plan is cooled down when
//! every remedy it holds was claimed by a plan created within the window; a plan asking for
//! something more (critical: restart *and* reload) still goes through. The window runs from the
//! claim, not from the last alert, so a storm that outlasts it gets a second plan.
//!
//! The table lives in the cluster (a ConfigMap per plan namespace, written with optimistic
//! concurrency) so restarts and failover keep it; [`super::Intake`] keeps a copy in memory.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::plan::{PatchPlanSpec, PlanAction};

/// One remedy claimed by a plan at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub remedy: String,
    pub plan: String,
    pub at: Timestamp,
}

/// What the table says about a new plan's remedies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// At least one remedy is free: the plan may be created.
    Open,
    /// Every remedy is claimed within the window; `plan` holds the first one.
    Covered { plan: String, remedy: String },
    /// One of the claims is by this very plan: the alert was seen before.
    Same,
}

/// The remedies a plan spec asks for, deduplicated and sorted.
pub fn remedies(spec: &PatchPlanSpec) -> Vec<String> {
    let mut remedies: Vec<String> = spec.actions.iter().map(PlanAction::describe).collect();
    remedies.sort();
    remedies.dedup();
    remedies
}

/// Logical target of a remedy (`restart:VAEL_Core` → `VAEL_Core`).
pub fn target_of(remedy: &str) -> &str {
    remedy.split(':').nth(1).unwrap_or(remedy)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimTable {
    claims: HashMap<String, Claim>,
}

/// A claim made at `at` still holds at `now` (a claim from a clock slightly ahead holds too).
fn live(at: Timestamp, now: Timestamp, window: Duration) -> bool {
    let age = now.as_millisecond() - at.as_millisecond();
    age < window.as_millis().min(i64::MAX as u128) as i64
}

impl ClaimTable {
    pub fn check(&self, plan: &str, remedies: &[String], now: Timestamp, window: Duration) -> Coverage {
        if window.is_zero() || remedies.is_empty() {
            return Coverage::Open;
        }
        let mut first = None;
        for remedy in remedies {
            match self.claims.get(remedy).filter(|c| live(c.at, now, window)) {
                Some(claim) if claim.plan == plan => return Coverage::Same,
                Some(claim) => {
                    first.get_or_insert(claim);
                }
                None => return Coverage::Open,
            }
        }
        match first {
            Some(claim) => Coverage::Covered { plan: claim.plan.clone(), remedy: claim.remedy.clone() },
            None => Coverage::Open,
        }
    }

    /// Plans whose live claims on `remedies` are older than `grace`: if such a plan does not
    /// exist, its claim is an orphan (deleted plan, or a crash between claim and create). Younger
    /// claims are trusted as they are: their plan may be being created right now by a replica.
    pub fn settled_claimants(
        &self,
        remedies: &[String],
        now: Timestamp,
        window: Duration,
        grace: Duration,
    ) -> Vec<String> {
        let mut plans: Vec<String> = remedies
            .iter()
            .filter_map(|r| self.claims.get(r))
            .filter(|c| live(c.at, now, window) && !live(c.at, now, grace))
            .map(|c| c.plan.clone())
            .collect();
        plans.sort();
        plans.dedup();
        plans
    }

    pub fn claim(&mut self, plan: &str, remedies: &[String], now: Timestamp) {
        for remedy in remedies {
            self.claims.insert(remedy.clone(), Claim { remedy: remedy.clone(), plan: plan.to_string(), at: now });
        }
    }

    /// Drop every claim held by `plan`; true when something was dropped.
    pub fn release(&mut self, plan: &str) -> bool {
        let before = self.claims.len();
        self.claims.retain(|_, c| c.plan != plan);
        before != self.claims.len()
    }

    /// Drop claims older than the window (keeps the stored table small). A claim dated in the
    /// future (a replica's clock far ahead, or a hand-edited table) is capped at `now`: it then
    /// expires one window from now instead of never.
    pub fn prune(&mut self, now: Timestamp, window: Duration) {
        for claim in self.claims.values_mut() {
            if claim.at > now {
                claim.at = now;
            }
        }
        self.claims.retain(|_, c| live(c.at, now, window));
    }

    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// ConfigMap `data`: key = remedy with `:` → `.` (a valid ConfigMap key), value = the claim
    /// as JSON (which names the remedy, so keys are never parsed back).
    pub fn to_data(&self) -> BTreeMap<String, String> {
        self.claims
            .values()
            .filter_map(|c| Some((c.remedy.replace(':', "."), serde_json::to_string(c).ok()?)))
            .collect()
    }

    /// Read a stored table; entries that do not parse are dropped (they can only free a remedy).
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let claims = data
            .values()
            .filter_map(|v| serde_json::from_str::<Claim>(v).ok())
            .map(|c| (c.remedy.clone(), c))
            .collect();
        Self { claims }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionType, PlanAction};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid timestamp")
    }

    fn r(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn coverage_table() {
        let mut table = ClaimTable::default();
        table.claim("hb-1", &r(&["restart:VAEL_Core"]), at(0));
        table.claim("pol-1", &r(&["reloadFlask:VAEL_UI"]), at(0));
        let cases: &[(&str, &[&str], i64, Coverage)] = &[
            // A different alert, same remedy, inside the window: collapsed into hb-1.
            (
                "hb-2",
                &["restart:VAEL_Core"],
                10,
                Coverage::Covered { plan: "hb-1".into(), remedy: "restart:VAEL_Core".into() },
            ),
            // The same alert again.
            ("hb-1", &["restart:VAEL_Core"], 10, Coverage::Same),
            // Asking for more than was claimed (critical: restart + reload) goes through.
            ("crit-1", &["reloadFlask:VAEL_Core", "restart:VAEL_Core"], 10, Coverage::Open),
            // Another target is not affected.
            ("s-1", &["restart:Sentinel"], 10, Coverage::Open),
            // The window ends 60 s after the claim.
            (
                "hb-3",
                &["restart:VAEL_Core"],
                59,
                Coverage::Covered { plan: "hb-1".into(), remedy: "restart:VAEL_Core".into() },
            ),
            ("hb-3", &["restart:VAEL_Core"], 60, Coverage::Open),
            // A claim from a clock slightly ahead still holds.
            (
                "hb-4",
                &["restart:VAEL_Core"],
                -5,
                Coverage::Covered { plan: "hb-1".into(), remedy: "restart:VAEL_Core".into() },
            ),
            ("none", &[], 10, Coverage::Open),
        ];
        for (plan, remedies, now, want) in cases {
            assert_eq!(table.check(plan, &r(remedies), at(*now), WINDOW), *want, "{plan} {remedies:?} at +{now}s");
        }
        assert_eq!(table.check("hb-2", &r(&["restart:VAEL_Core"]), at(10), Duration::ZERO), Coverage::Open, "0 = off");
    }

    #[test]
    fn covered_by_several_plans_names_the_first() {
        let mut table = ClaimTable::default();
        table.claim("a", &r(&["restart:VAEL_Core"]), at(0));
        table.claim("b", &r(&["reloadFlask:VAEL_Core"]), at(1));
        let remedies = r(&["reloadFlask:VAEL_Core", "restart:VAEL_Core"]);
        assert_eq!(
            table.check("c", &remedies, at(2), WINDOW),
            Coverage::Covered { plan: "b".into(), remedy: "reloadFlask:VAEL_Core".into() }
        );
        let grace = Duration::from_secs(1);
        assert_eq!(table.settled_claimants(&remedies, at(2), WINDOW, grace), ["a", "b"]);
        assert_eq!(table.settled_claimants(&remedies, at(1), WINDOW, grace), ["a"], "b's claim is too young to judge");
        assert_eq!(table.settled_claimants(&remedies, at(60), WINDOW, grace), ["b"], "a's claim expired");
    }

    #[test]
    fn release_prune_and_round_trip() {
        let mut table = ClaimTable::default();
        table.claim("old", &r(&["restart:Sentinel"]), at(0));
        table.claim("new", &r(&["restart:VAEL_Core", "editEnv:VAEL_Core:LOG_LEVEL"]), at(100));
        let data = table.to_data();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["editEnv.VAEL_Core.LOG_LEVEL", "restart.Sentinel", "restart.VAEL_Core"]
        );
        for key in data.keys() {
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)), "ConfigMap key {key}");
        }
        assert_eq!(ClaimTable::from_data(&data), table);
        table.prune(at(100), WINDOW);
        assert_eq!(table.len(), 2, "the claim from 100 s ago is gone");
        assert!(table.release("new"));
        assert!(table.is_empty());
        assert!(!table.release("new"));
        let mut broken = data.clone();
        broken.insert("junk".into(), "{not json".into());
        assert_eq!(ClaimTable::from_data(&broken).len(), 3, "unparseable entries are dropped");
    }

    #[test]
    fn a_future_dated_claim_expires_one_window_after_it_is_seen() {
        let mut table = ClaimTable::default();
        table.claim("far-future", &r(&["restart:VAEL_Core"]), at(1_000_000));
        table.prune(at(100), WINDOW);
        assert_eq!(table.len(), 1, "capped, not dropped: it still holds for a window");
        assert!(matches!(table.check("other", &r(&["restart:VAEL_Core"]), at(101), WINDOW), Coverage::Covered { .. }));
        let after = 100 + WINDOW.as_secs() as i64;
        table.prune(at(after), WINDOW);
        assert_eq!(table.check("other", &r(&["restart:VAEL_Core"]), at(after), WINDOW), Coverage::Open);
        assert!(table.is_empty());
    }

    #[test]
    fn remedies_of_a_spec() {
        let spec = PatchPlanSpec {
            actions: vec![
                PlanAction::new(ActionType::Restart, "VAEL_Core"),
                PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug"),
                PlanAction::new(ActionType::Restart, "VAEL_Core"),
            ],
            ..Default::default()
        };
        assert_eq!(remedies(&spec), ["editEnv:VAEL_Core:LOG_LEVEL", "restart:VAEL_Core"]);
        assert_eq!(target_of("editEnv:VAEL_Core:LOG_LEVEL"), "VAEL_Core");
        assert_eq!(target_of("restart:Sentinel"), "Sentinel");
    }
}
