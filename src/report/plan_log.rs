//! The original's plain-text plan log (`logs/antibody.log`): one line per plan transition,
//! `<time> INFO <transition> plan <namespace>/<name> [<actions>] <reason>: <message>`, for
//! people and `tail -f`. The JSONL audit log stays the record of truth.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use super::{Hook, PlanTransition, TransitionKind};

pub struct PlanLog {
    file: Mutex<std::fs::File>,
}

impl PlanLog {
    /// Open (append, create with its directory) the file `antibody.yml`'s `plan_log` names.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Mutex::new(file) })
    }
}

/// One line; control characters in the message are escaped so a line stays one line.
pub fn line(transition: &PlanTransition<'_>, now: jiff::Timestamp) -> String {
    let plan = transition.plan;
    let level = if transition.kind == TransitionKind::Failed { "WARNING" } else { "INFO" };
    let actions: Vec<String> = plan.spec.actions.iter().map(crate::plan::PlanAction::describe).collect();
    let message: String = transition.message.chars().flat_map(char::escape_default).collect();
    format!(
        "{now} {level} {} plan {}/{} [{}] {}: {message}\n",
        transition.kind.name(),
        plan.metadata.namespace.as_deref().unwrap_or("-"),
        plan.metadata.name.as_deref().unwrap_or("-"),
        actions.join(", "),
        transition.reason,
    )
}

impl Hook for PlanLog {
    fn on_plan(&self, transition: &PlanTransition<'_>) {
        let text = line(transition, jiff::Timestamp::now());
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::warn!(error = %e, "plan log: cannot write");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionType, PatchPlan, PatchPlanSpec, PlanAction};
    use crate::reason::Reason;

    #[test]
    fn one_line_per_transition() {
        let mut plan = PatchPlan::new(
            "policy-1",
            PatchPlanSpec { actions: vec![PlanAction::new(ActionType::ReloadFlask, "VAEL_UI")], ..Default::default() },
        );
        plan.metadata.namespace = Some("vael".into());
        let transition =
            PlanTransition { plan: &plan, kind: TransitionKind::Applied, reason: Reason::Applied, message: "done\nX" };
        let at = jiff::Timestamp::from_second(0).expect("epoch");
        assert_eq!(
            line(&transition, at),
            "1970-01-01T00:00:00Z INFO patch_applied plan vael/policy-1 [reloadFlask:VAEL_UI] Applied: done\\nX\n"
        );
    }
}
