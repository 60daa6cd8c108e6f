//! Escalation ladders and per-target breakers.
//!
//! **Ladder** (`rules[].escalate`): the rule's actions are step 1. When the same problem (same
//! rule, same target) is alerted again while a step's plan runs, the alert joins that plan. Once
//! it has ended, the next alert is judged: the plan failed, or it succeeded less than
//! `cure_seconds` ago → not cured → the next step's plan; it succeeded longer ago → cured → a new
//! episode starts at step 1. The last step may be `page`: nothing more acts, notifiers get
//! `escalation_exhausted`, and the target's breaker opens. Ladder state lives in the ConfigMap
//! [`LADDER_CONFIG_MAP`] of the plan namespace (compare-and-swap), so restarts and replicas
//! share it.
//!
//! **Breaker** (`safety.breaker.failures`, and every exhausted ladder): consecutive failed plans
//! per target, in the ConfigMap [`BREAKER_CONFIG_MAP`]. An open breaker holds every plan that
//! acts on the target (`BreakerOpen`, not terminal) until `antibody breaker reset TARGET`.
//!
//! The decisions ([`next_step`], [`after_plan`]) are pure; the rest reads and writes the two
//! ConfigMaps.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::plan::{PatchPlan, Phase};

use crate::names::BREAKER_CONFIG_MAP;
use crate::names::LADDER_CONFIG_MAP;

// --- Ladder -----------------------------------------------------------------------------------

/// Where one ladder stands (one per rule and target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LadderState {
    /// 0-based step whose plan is `plan` (or that paged).
    pub step: usize,
    /// That step's plan; empty for `page`.
    #[serde(default)]
    pub plan: String,
    pub updated: String,
}

/// What the ladder's last plan came to, as far as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// Gone (deleted, cancelled): the ladder starts over.
    Missing,
    Running,
    Failed,
    Succeeded {
        finished: Timestamp,
    },
}

impl Previous {
    pub fn of(plan: Option<&PatchPlan>) -> Self {
        let Some(plan) = plan else { return Previous::Missing };
        match plan.phase() {
            Phase::Failed => Previous::Failed,
            Phase::Succeeded => {
                let finished = plan.status.as_ref().and_then(|s| s.finished_at.as_ref()).map(|t| t.0);
                Previous::Succeeded { finished: finished.unwrap_or_else(Timestamp::now) }
            }
            _ => Previous::Running,
        }
    }
}

/// The ladder's answer to one more alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// This step (0-based); with the plan it escalates from, if any.
    Step { step: usize, from: Option<String> },
    /// The step's plan is still running: the alert joins it.
    Join { plan: String },
    /// The ladder already paged and the alert is within `cure_seconds` of that: nothing new.
    StillPaged,
}

/// Pure: the next step for an alert, given the ladder's state and its last plan.
pub fn next_step(
    state: Option<&LadderState>,
    previous: Previous,
    paged_at: Option<Timestamp>,
    steps: usize,
    cure_seconds: u64,
    now: Timestamp,
) -> Next {
    let within = |at: Timestamp| now.as_second().saturating_sub(at.as_second()) <= cure_seconds as i64;
    let Some(state) = state else { return Next::Step { step: 0, from: None } };
    if state.plan.is_empty() {
        // Paged: hold off until the alert stays away for a cure period, then start over.
        return match paged_at {
            Some(at) if within(at) => Next::StillPaged,
            _ => Next::Step { step: 0, from: None },
        };
    }
    let escalate = || {
        let step = state.step + 1;
        if step < steps { Next::Step { step, from: Some(state.plan.clone()) } } else { Next::StillPaged }
    };
    match previous {
        Previous::Missing => Next::Step { step: 0, from: None },
        Previous::Running => Next::Join { plan: state.plan.clone() },
        Previous::Failed => escalate(),
        Previous::Succeeded { finished } if within(finished) => escalate(),
        Previous::Succeeded { .. } => Next::Step { step: 0, from: None },
    }
}

/// The ConfigMap data key of a ladder.
pub fn ladder_key(rule: &str, target: &str) -> String {
    // ConfigMap keys: `[-._a-zA-Z0-9]`.
    format!("{rule}.{target}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '-' })
        .take(250)
        .collect()
}

// --- Breaker ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    /// Failed plans in a row.
    pub failures: u32,
    /// Open since (RFC 3339); `None`: closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_since: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl BreakerState {
    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }
}

/// Pure: the breaker after a plan on its target ended. An open breaker stays open (only a
/// human closes it); a success closes the count.
pub fn after_plan(
    state: &BreakerState,
    failed: bool,
    threshold: Option<u32>,
    plan: &str,
    now: Timestamp,
) -> BreakerState {
    if state.is_open() {
        return state.clone();
    }
    if !failed {
        return BreakerState::default();
    }
    let failures = state.failures.saturating_add(1);
    match threshold {
        Some(threshold) if failures >= threshold => BreakerState {
            failures,
            open_since: Some(now.to_string()),
            reason: format!("{failures} failed plans in a row (safety.breaker.failures: {threshold}), the last {plan}"),
        },
        _ => BreakerState { failures, ..Default::default() },
    }
}

// --- Storage (one JSON value per key, compare-and-swap) ---------------------------------------

/// What to do with one key, given its current value.
enum Change<T> {
    Set(T),
    Remove,
    /// Leave it (and the ConfigMap) as it is.
    Keep,
}

/// Read-modify-write one key of `name` with the resourceVersion read (409 → read again).
async fn update_key<T: Serialize + for<'de> Deserialize<'de>>(
    api: &Api<ConfigMap>,
    name: &str,
    key: &str,
    mut change: impl FnMut(Option<T>) -> Option<T>,
) -> Result<(), kube::Error> {
    change_key(api, name, key, |current| match change(current) {
        Some(value) => Change::Set(value),
        None => Change::Remove,
    })
    .await
}

async fn change_key<T: Serialize + for<'de> Deserialize<'de>>(
    api: &Api<ConfigMap>,
    name: &str,
    key: &str,
    mut change: impl FnMut(Option<T>) -> Change<T>,
) -> Result<(), kube::Error> {
    for _ in 0..8 {
        let stored = api.get_opt(name).await?;
        let current = stored
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(key))
            .and_then(|v| serde_json::from_str(v).ok());
        let value = match change(current) {
            Change::Keep => return Ok(()),
            Change::Set(value) => Some(serde_json::to_string(&value).unwrap_or_default()),
            Change::Remove => None,
        };
        let result = match &stored {
            Some(config_map) => {
                let patch = json!({
                    "metadata": { "resourceVersion": config_map.resource_version() },
                    "data": { key: value.map_or(Value::Null, Value::String) },
                });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            }
            None => {
                let Some(value) = value else { return Ok(()) };
                let config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        labels: Some(crate::names::managed_labels()),
                        ..Default::default()
                    },
                    data: Some([(key.to_string(), value)].into()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &config_map).await.map(|_| ())
            }
        };
        match result {
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => continue,
            other => return other,
        }
    }
    Ok(())
}

async fn read_all<T: for<'de> Deserialize<'de>>(
    api: &Api<ConfigMap>,
    name: &str,
) -> Result<BTreeMap<String, T>, kube::Error> {
    let stored = api.get_opt(name).await?;
    Ok(stored
        .and_then(|c| c.data)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|v| (k, v)))
        .collect())
}

pub async fn ladder(client: &Client, namespace: &str, key: &str) -> Result<Option<LadderState>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    Ok(read_all::<LadderState>(&api, LADDER_CONFIG_MAP).await?.remove(key))
}

/// Move the ladder from `expected` (what the decision was made on) to `next`, only if nobody
/// else moved it since (another replica deciding on the same problem). `Ok(false)`: it moved;
/// decide again.
pub async fn advance_ladder(
    client: &Client,
    namespace: &str,
    key: &str,
    expected: Option<&LadderState>,
    next: LadderState,
) -> Result<bool, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut advanced = false;
    change_key(&api, LADDER_CONFIG_MAP, key, |current: Option<LadderState>| {
        advanced = current.as_ref() == expected;
        if advanced { Change::Set(next.clone()) } else { Change::Keep }
    })
    .await?;
    Ok(advanced)
}

/// Every target's breaker in `namespace` (the plan namespace).
pub async fn breakers(client: &Client, namespace: &str) -> Result<BTreeMap<String, BreakerState>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    read_all(&api, BREAKER_CONFIG_MAP).await
}

/// Open `target`'s breaker (an exhausted ladder).
pub async fn open(client: &Client, namespace: &str, target: &str, reason: String) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let now = Timestamp::now().to_string();
    update_key(&api, BREAKER_CONFIG_MAP, target, |current: Option<BreakerState>| {
        let current = current.unwrap_or_default();
        if current.is_open() {
            return Some(current);
        }
        Some(BreakerState { open_since: Some(now.clone()), reason: reason.clone(), ..current })
    })
    .await
}

/// Count a finished plan against each of its targets.
pub async fn record(
    client: &Client,
    namespace: &str,
    targets: &[String],
    failed: bool,
    threshold: Option<u32>,
    plan: &str,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let now = Timestamp::now();
    let mut opened = Vec::new();
    for target in targets {
        update_key(&api, BREAKER_CONFIG_MAP, target, |current: Option<BreakerState>| {
            let before = current.unwrap_or_default();
            let after = after_plan(&before, failed, threshold, plan, now);
            if after.is_open() && !before.is_open() {
                opened.push(target.clone());
            }
            // A closed breaker with no failures needs no entry.
            (after != BreakerState::default()).then_some(after)
        })
        .await?;
    }
    opened.dedup();
    Ok(opened)
}

/// Close `target`'s breaker (a human decided). `Ok(false)`: it was not open.
pub async fn reset(client: &Client, namespace: &str, target: &str) -> Result<bool, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut was_open = false;
    update_key(&api, BREAKER_CONFIG_MAP, target, |current: Option<BreakerState>| {
        was_open = current.as_ref().is_some_and(BreakerState::is_open);
        None
    })
    .await?;
    Ok(was_open)
}

/// The targets (logical names) a plan acts on.
pub fn targets_of(plan: &PatchPlan) -> Vec<String> {
    let mut targets: Vec<String> = plan.spec.actions.iter().map(|a| a.target.clone()).collect();
    targets.sort();
    targets.dedup();
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    fn state(step: usize, plan: &str) -> LadderState {
        LadderState { step, plan: plan.into(), updated: at(0).to_string() }
    }

    #[test]
    fn the_ladder_climbs_only_when_not_cured() {
        let steps = 3; // the rule's actions, then two more
        let cure = 60;
        let now = at(1000);
        let s0 = state(0, "p0");
        let s2 = state(2, "p2");
        let paged = state(3, "");
        // (case, ladder state, its last plan, paged at, expected)
        type Case<'a> = (&'a str, Option<&'a LadderState>, Previous, Option<Timestamp>, Next);
        let cases: Vec<Case> = vec![
            ("first alert", None, Previous::Missing, None, Next::Step { step: 0, from: None }),
            ("plan running: join it", Some(&s0), Previous::Running, None, Next::Join { plan: "p0".into() }),
            ("plan failed", Some(&s0), Previous::Failed, None, Next::Step { step: 1, from: Some("p0".into()) }),
            (
                "recurred within cure",
                Some(&s0),
                Previous::Succeeded { finished: at(950) },
                None,
                Next::Step { step: 1, from: Some("p0".into()) },
            ),
            (
                "cured: new episode",
                Some(&s0),
                Previous::Succeeded { finished: at(900) },
                None,
                Next::Step { step: 0, from: None },
            ),
            ("plan deleted", Some(&s0), Previous::Missing, None, Next::Step { step: 0, from: None }),
            ("last step failed", Some(&s2), Previous::Failed, None, Next::StillPaged),
            ("paged recently", Some(&paged), Previous::Missing, Some(at(990)), Next::StillPaged),
            ("paged long ago", Some(&paged), Previous::Missing, Some(at(100)), Next::Step { step: 0, from: None }),
        ];
        for (name, state, previous, paged_at, want) in cases {
            assert_eq!(next_step(state, previous, paged_at, steps, cure, now), want, "{name}");
        }
    }

    #[test]
    fn a_breaker_opens_after_consecutive_failures_and_stays_open() {
        let now = at(0);
        let closed = BreakerState::default();
        let one = after_plan(&closed, true, Some(2), "a", now);
        assert_eq!((one.failures, one.is_open()), (1, false));
        assert_eq!(after_plan(&one, false, Some(2), "b", now), closed, "a success resets the count");
        let two = after_plan(&one, true, Some(2), "c", now);
        assert!(two.is_open() && two.reason.contains("the last c"), "{two:?}");
        assert_eq!(after_plan(&two, false, Some(2), "d", now), two, "only a human closes it");
        let unconfigured = after_plan(&closed, true, None, "e", now);
        assert_eq!((unconfigured.failures, unconfigured.is_open()), (1, false), "no threshold: counts only");
    }
}
