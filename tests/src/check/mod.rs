//! Checkers over a [`History`]: linearizability (a search) and durability (linear-time rules).
pub mod durability;
pub mod linearizability;
mod model;
pub mod search;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::history::History;
pub use search::Budget;

/// A check's verdict. "unknown" means it could not decide (budget), and is never a pass;
/// "not applicable" means the target cannot answer what the check needs (it says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Unknown,
    #[serde(rename = "not-applicable")]
    NotApplicable,
}

impl Verdict {
    /// The combined verdict: any failure fails, else any unknown is unknown; a check that does
    /// not apply to the target counts neither way.
    pub fn all(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts
            .into_iter()
            .fold(Verdict::Pass, |acc, v| match (acc, v) {
                (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
                (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
                _ => Verdict::Pass,
            })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub verdict: Verdict,
    pub operations: usize,
    pub linearizability: linearizability::LinearizabilityReport,
    pub durability: durability::DurabilityReport,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub time: Duration,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(60),
            memory_bytes: 2 << 30,
        }
    }
}

pub fn check(history: &History, limits: Limits) -> CheckReport {
    let durability = durability::check(history);
    let linearizability =
        linearizability::check(history, Budget::new(limits.time, limits.memory_bytes));
    CheckReport {
        verdict: Verdict::all([linearizability.verdict, durability.verdict]),
        operations: history.operations.len(),
        linearizability,
        durability,
    }
}
