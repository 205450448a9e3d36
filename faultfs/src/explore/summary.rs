//! What an exploration found, as the report and `--json` show it: each failing state with what
//! it lost, grouped by crash point.
use std::path::PathBuf;

use serde::Serialize;

use super::{
    check,
    state_id::state_id,
    states::{CrashState, Plan},
};
use crate::state::MetadataMode;

/// An operation as a report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct OpSummary {
    /// 1-based, in the order the workload made them.
    pub number: usize,
    pub call: &'static str,
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailingState {
    /// Names the state for `--replay`.
    pub id: String,
    /// How many pending operations it loses.
    pub lost: usize,
    pub dropped: Vec<OpSummary>,
    pub torn: Option<OpSummary>,
    pub check_exit: Option<i32>,
    pub timed_out: bool,
    pub check_output: String,
    /// Where the state was written (with --keep or when something failed).
    pub kept_at: Option<PathBuf>,
    pub replay: String,
}

/// The failing states of one crash point, with the one that loses least.
#[derive(Clone, Debug, Serialize)]
pub struct FailingPoint {
    pub after: OpSummary,
    pub failing_states: usize,
    pub smallest: FailingState,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub model: MetadataMode,
    pub operations: usize,
    pub syncs: usize,
    pub output_lines: usize,
    pub crash_points: usize,
    /// Crash states the model allows, before duplicates are removed.
    pub candidate_states: usize,
    /// Distinct states whose check ran.
    pub states_explored: usize,
    /// Candidates skipped because an identical state (same tree, same output) was checked.
    pub duplicates: usize,
    /// True when --max-states stopped the run before every candidate was tried.
    pub sampled: bool,
    pub failing_states: usize,
    pub failing: Vec<FailingPoint>,
    /// The record, kept when something failed or with --keep: `--replay` rebuilds from it.
    pub journal: Option<PathBuf>,
    pub elapsed_ms: u64,
}

/// Operation `number` (1-based; 0 is the start) as a report shows it: the plan's crash point
/// after it already names its call and path.
pub(super) fn summarise(plan: &Plan, number: usize) -> OpSummary {
    let point = &plan.points[number];
    OpSummary {
        number,
        call: point.call,
        path: point.path.clone(),
    }
}

/// A failing state as the report and `--replay` show it.
pub(super) fn failing_state(
    plan: &Plan,
    state: &CrashState,
    pending: &[usize],
    verdict: check::Verdict,
    kept_at: Option<PathBuf>,
    replay: String,
) -> FailingState {
    let (dropped, torn) = plan.losses(state, pending);
    FailingState {
        id: state_id(state),
        lost: state.lost,
        dropped: dropped.iter().map(|&n| summarise(plan, n)).collect(),
        torn: torn.map(|n| summarise(plan, n)),
        check_exit: verdict.code,
        timed_out: verdict.timed_out,
        check_output: verdict.output,
        kept_at,
        replay,
    }
}
