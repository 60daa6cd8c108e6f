//! Who observes each action's effect in the application (pure): the action itself, the
//! target's `verify` probe, or a later action of the plan that carries it. A plan whose
//! effects are not all observed ends `Unverified`, never `PatchApplied`.

use crate::config::{ConfigMapMode, ResolvedTarget};
use crate::effect::ReloadMode;
use crate::plan::{ActionType, PlanAction};

/// Which action of a plan observes the effect of action `index` in the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The action observes its own effect: a rollout complete (restart), the Deployment whole
    /// again (deletePod), the companion's acknowledgement (companion reloads).
    Itself,
    /// The target's `verify` probe, run after this action.
    Probe,
    /// A later action on the same target puts this edit into effect and observes it
    /// (a restart, or a reload that is itself observed).
    CarriedBy(usize),
    /// Nothing observes it: the plan can at best end `Unverified`.
    Unobservable,
}

/// How the effect of `actions[index]` is observed, given the resolved targets (same order).
pub fn observation(actions: &[PlanAction], targets: &[ResolvedTarget], index: usize) -> Observation {
    let (action, target) = (&actions[index], &targets[index]);
    let is_edit = matches!(action.action, ActionType::EditEnv | ActionType::Rollback);
    if is_edit {
        let carrier = (index + 1..actions.len()).find(|&j| {
            actions[j].target == action.target
                && match actions[j].action {
                    ActionType::Restart => true,
                    // A reload picks up a mounted file, never env vars fixed at container start.
                    ActionType::ReloadFlask => target.config_map_mode != ConfigMapMode::Env,
                    _ => false,
                }
        });
        if let Some(j) = carrier {
            return Observation::CarriedBy(j);
        }
    }
    if target.verify.is_some() {
        return Observation::Probe;
    }
    match action.action {
        ActionType::Restart | ActionType::DeletePod => Observation::Itself,
        ActionType::ReloadFlask if target.reload_mode != ReloadMode::Signal => Observation::Itself,
        ActionType::ReloadFlask | ActionType::EditEnv | ActionType::Rollback => Observation::Unobservable,
    }
}

/// The actions of a finished plan whose effect nobody observed, with why, for `Unverified`.
pub fn unobserved(actions: &[PlanAction], targets: &[ResolvedTarget]) -> Vec<String> {
    (0..actions.len())
        .filter_map(|i| {
            let mut at = i;
            while let Observation::CarriedBy(j) = observation(actions, targets, at) {
                at = j;
            }
            if observation(actions, targets, at) != Observation::Unobservable {
                return None;
            }
            let why = match actions[at].action {
                ActionType::ReloadFlask => "the reload command was delivered, but the target has no `verify` probe and no companion reload_mode to observe the workers reload",
                _ => "the ConfigMap was changed, but no restart, observed reload or `verify` probe of the target shows the app using it",
            };
            let via = if at == i { String::new() } else { format!(" (through {})", actions[at].describe()) };
            Some(format!("{}{via}: {why}", actions[i].describe()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::{CompanionSpec, VerifySpec};

    fn target(name: &str, mode: ConfigMapMode, reload: ReloadMode, probe: bool) -> ResolvedTarget {
        ResolvedTarget {
            name: name.into(),
            namespace: "ns".into(),
            deployment: "d".into(),
            config_map: Some("cm".into()),
            config_map_mode: mode,
            container: None,
            reload_command: vec!["true".into()],
            env_keys: None,
            reload_mode: reload,
            companion: CompanionSpec::default(),
            verify: probe.then(|| VerifySpec {
                command: vec!["probe".into()],
                expect_output: None,
                timeout_seconds: 5,
                interval_ms: 250,
            }),
        }
    }

    #[test]
    fn who_observes_each_effect() {
        use ActionType::*;
        use ConfigMapMode::{Env, File};
        use Observation::*;
        use ReloadMode::{Companion, Signal};
        let edit = || PlanAction::edit_env("T", "K", "v");
        let act = |a| PlanAction::new(a, "T");
        // (actions, target settings, expected observation of each action, unobserved count)
        let cases: Vec<(Vec<PlanAction>, ResolvedTarget, Vec<Observation>, usize)> = vec![
            (vec![act(Restart)], target("T", Env, Signal, false), vec![Itself], 0),
            (vec![act(DeletePod)], target("T", Env, Signal, false), vec![Itself], 0),
            (vec![act(ReloadFlask)], target("T", Env, Signal, false), vec![Unobservable], 1),
            (vec![act(ReloadFlask)], target("T", Env, Signal, true), vec![Probe], 0),
            (vec![act(ReloadFlask)], target("T", File, Companion, false), vec![Itself], 0),
            (vec![edit(), act(Restart)], target("T", Env, Signal, false), vec![CarriedBy(1), Itself], 0),
            // env vars are fixed at start: a reload does not carry the edit.
            (vec![edit(), act(ReloadFlask)], target("T", Env, Companion, false), vec![Unobservable, Itself], 1),
            (vec![edit(), act(ReloadFlask)], target("T", File, Companion, false), vec![CarriedBy(1), Itself], 0),
            (vec![edit(), act(ReloadFlask)], target("T", File, Signal, false), vec![CarriedBy(1), Unobservable], 2),
            (vec![edit(), act(ReloadFlask)], target("T", File, Signal, true), vec![CarriedBy(1), Probe], 0),
            (vec![edit()], target("T", File, Companion, false), vec![Unobservable], 1),
            (vec![edit()], target("T", File, Signal, true), vec![Probe], 0),
        ];
        for (actions, t, want, unobserved_count) in cases {
            let targets = vec![t; actions.len()];
            let got: Vec<Observation> = (0..actions.len()).map(|i| observation(&actions, &targets, i)).collect();
            assert_eq!(got, want, "{actions:?}");
            assert_eq!(unobserved(&actions, &targets).len(), unobserved_count, "{actions:?}");
        }
        // A reload of another target does not carry the edit.
        let actions = vec![edit(), PlanAction::new(ReloadFlask, "U")];
        let targets = vec![target("T", File, Companion, false), target("U", File, Companion, false)];
        assert_eq!(observation(&actions, &targets, 0), Unobservable);
    }
}
