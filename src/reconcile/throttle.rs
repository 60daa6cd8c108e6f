//! Cool-downs and budgets: may a new plan start acting now? Pure.
//!
//! The history is built from PatchPlan statuses in the cluster (so it survives restarts and
//! failover) plus in-memory reservations for plans admitted a moment ago whose status the
//! watch has not shown yet (so two plans admitted together cannot both squeeze past a limit).

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{Budget, Safety};

/// One action that started (or is reserved to start) at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub plan_uid: String,
    pub index: usize,
    /// Logical target name.
    pub target: String,
    /// The target's namespace.
    pub namespace: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    Throttled { message: String, retry_after: Duration },
}

/// Drop duplicates (the same action seen in status and in a reservation).
pub fn dedup(history: Vec<Activity>) -> Vec<Activity> {
    let mut seen = HashSet::new();
    history.into_iter().filter(|a| seen.insert((a.plan_uid.clone(), a.index))).collect()
}

fn since(at: Timestamp, now: Timestamp) -> Duration {
    crate::clock::elapsed(at, now)
}

/// `wanted`: (target, namespace) of each action of the plan asking to start.
pub fn check(
    safety: &Safety,
    plan_uid: &str,
    wanted: &[(String, String)],
    history: &[Activity],
    now: Timestamp,
) -> Gate {
    let others: Vec<&Activity> = history.iter().filter(|a| a.plan_uid != plan_uid).collect();

    if safety.cooldown_seconds > 0 {
        let cooldown = Duration::from_secs(safety.cooldown_seconds);
        for (target, namespace) in wanted {
            let recent = others
                .iter()
                .filter(|a| &a.target == target && &a.namespace == namespace && since(a.at, now) < cooldown)
                .max_by_key(|a| a.at);
            if let Some(last) = recent {
                let ago = since(last.at, now);
                return Gate::Throttled {
                    message: format!(
                        "cool-down: {target} ({namespace}) was acted on {}s ago by another plan; cool-down is {}s",
                        ago.as_secs(),
                        cooldown.as_secs()
                    ),
                    retry_after: cooldown - ago,
                };
            }
        }
    }

    let over = |budget: &Budget, scope: &dyn Fn(&Activity) -> bool, asking: usize, label: &str| -> Option<Gate> {
        let window = Duration::from_secs(budget.window_seconds);
        let mut in_window: Vec<Timestamp> =
            others.iter().filter(|a| scope(a) && since(a.at, now) < window).map(|a| a.at).collect();
        if in_window.len() + asking <= budget.max_actions as usize {
            return None;
        }
        in_window.sort();
        // Room opens when enough of the oldest actions leave the window.
        let must_expire = (in_window.len() + asking).saturating_sub(budget.max_actions as usize);
        let retry_after = in_window
            .get(must_expire.saturating_sub(1))
            .map(|at| window.saturating_sub(since(*at, now)))
            .unwrap_or(window);
        Some(Gate::Throttled {
            message: format!(
                "budget: {} action(s) {label} in the last {}s, this plan needs {asking} more, the limit is {}",
                in_window.len(),
                budget.window_seconds,
                budget.max_actions
            ),
            retry_after,
        })
    };

    if let Some(budget) = &safety.global_budget
        && let Some(gate) = over(budget, &|_| true, wanted.len(), "in all namespaces")
    {
        return gate;
    }
    if let Some(budget) = &safety.namespace_budget {
        let mut namespaces: Vec<&String> = wanted.iter().map(|(_, ns)| ns).collect();
        namespaces.dedup();
        for namespace in namespaces {
            let asking = wanted.iter().filter(|(_, ns)| ns == namespace).count();
            let label = format!("in namespace {namespace}");
            if let Some(gate) = over(budget, &|a: &Activity| &a.namespace == namespace, asking, &label) {
                return gate;
            }
        }
    }
    Gate::Open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + second).expect("timestamp")
    }

    fn act(uid: &str, target: &str, ns: &str, second: i64) -> Activity {
        Activity { plan_uid: uid.into(), index: 0, target: target.into(), namespace: ns.into(), at: at(second) }
    }

    fn want(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect()
    }

    #[test]
    fn table() {
        let budget = |max, window| Some(Budget { max_actions: max, window_seconds: window });
        let safety = |cooldown, global, namespace| Safety {
            cooldown_seconds: cooldown,
            global_budget: global,
            namespace_budget: namespace,
            ..Safety::default()
        };
        let history = vec![act("p1", "A", "ns1", 0), act("p2", "B", "ns1", 10), act("p3", "C", "ns2", 20)];
        type Case = (&'static str, Safety, Vec<(String, String)>, i64, Option<u64>);
        let cases: Vec<Case> = vec![
            ("no limits", safety(0, None, None), want(&[("A", "ns1")]), 30, None),
            ("cool-down hit", safety(60, None, None), want(&[("A", "ns1")]), 30, Some(30)),
            ("cool-down passed", safety(60, None, None), want(&[("A", "ns1")]), 61, None),
            ("cool-down other namespace", safety(60, None, None), want(&[("A", "ns2")]), 30, None),
            ("global room", safety(0, budget(4, 60), None), want(&[("D", "ns3")]), 30, None),
            ("global full", safety(0, budget(3, 60), None), want(&[("D", "ns3")]), 30, Some(30)),
            ("global two over", safety(0, budget(3, 60), None), want(&[("D", "ns3"), ("E", "ns3")]), 30, Some(40)),
            ("global window moved", safety(0, budget(3, 60), None), want(&[("D", "ns3")]), 61, None),
            ("namespace full", safety(0, None, budget(2, 60)), want(&[("D", "ns1")]), 30, Some(30)),
            ("namespace other", safety(0, None, budget(2, 60)), want(&[("D", "ns2")]), 30, None),
        ];
        for (name, safety, wanted, now, retry) in cases {
            let gate = check(&safety, "new", &wanted, &history, at(now));
            match (gate, retry) {
                (Gate::Open, None) => {}
                (Gate::Throttled { retry_after, message }, Some(secs)) => {
                    assert_eq!(retry_after, Duration::from_secs(secs), "{name}: {message}")
                }
                (gate, want) => panic!("{name}: got {gate:?}, wanted retry {want:?}"),
            }
        }
    }

    #[test]
    fn a_plan_never_throttles_itself_and_reservations_dedup() {
        let safety = Safety { cooldown_seconds: 60, ..Safety::default() };
        let history = dedup(vec![act("me", "A", "ns", 0), act("me", "A", "ns", 0)]);
        assert_eq!(history.len(), 1);
        assert_eq!(check(&safety, "me", &want(&[("A", "ns")]), &history, at(1)), Gate::Open);
    }
}
