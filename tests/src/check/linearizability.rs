//! Linearizability of a key-value history: keys are independent, so the history is linearizable
//! iff each key's part is. A key that fails is narrowed to the smallest window of operations
//! that cannot be linearized, for a person to read.
use std::{collections::BTreeMap, time::Instant};

use serde::Serialize;

use super::{
    Verdict,
    model::{ABSENT, ANY, StateId, Step, Values},
    search::{Budget, Outcome as SearchOutcome, SearchOp, search},
};
use crate::history::{Func, History, Operation, Outcome};

#[derive(Clone, Debug, Serialize)]
pub struct LinearizabilityReport {
    pub verdict: Verdict,
    pub keys_checked: usize,
    /// Keys whose search ran out of budget: their verdict is unknown, never "pass".
    pub undecided_keys: Vec<String>,
    pub violations: Vec<Violation>,
    pub elapsed_ms: u64,
}

/// A key whose operations have no linearization, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub key: String,
    /// The operation whose result is the first that no order can explain.
    pub stuck_at: usize,
    /// The smallest window of operations (ids, by invoke) that cannot be linearized on its own.
    pub window: Vec<usize>,
    /// Whether the window was checked from "any starting value" (it was cut out of the middle
    /// of the history) or from an absent key (it starts at the beginning).
    pub from_any_value: bool,
    pub explanation: String,
}

/// One key's operations, compiled for the search.
struct KeyPart<'a> {
    key: &'a str,
    ops: Vec<&'a Operation>,
    values: Values,
    steps: Vec<Step>,
}

impl<'a> KeyPart<'a> {
    fn new(key: &'a str, ops: Vec<&'a Operation>) -> Self {
        let mut values = Values::default();
        let steps = ops
            .iter()
            .map(|op| Step::compile(op, &mut values))
            .collect();
        Self {
            key,
            ops,
            values,
            steps,
        }
    }

    /// The ops with index in `members`, those returning after `horizon` made unknown.
    fn search_ops(&self, members: &[usize], horizon: u64) -> Vec<SearchOp> {
        members
            .iter()
            .map(|&index| {
                let op = self.ops[index];
                SearchOp {
                    step: self.steps[index].clone(),
                    invoke: op.invoke,
                    ret: acknowledged_return(op).filter(|&ret| ret <= horizon),
                }
            })
            .collect()
    }

    fn run(
        &mut self,
        members: &[usize],
        horizon: u64,
        initial: StateId,
        budget: Budget,
    ) -> SearchOutcome {
        let ops = self.search_ops(members, horizon);
        search(&ops, initial, &mut self.values, budget)
    }
}

/// When an acknowledged operation returned; None for one of unknown outcome.
fn acknowledged_return(op: &Operation) -> Option<u64> {
    match op.outcome {
        Outcome::Ok => op.complete,
        Outcome::Fail | Outcome::Unknown => None,
    }
}

/// Operations that can matter to the search: failed ones never took effect, and reads of
/// unknown outcome observed nothing.
fn relevant(op: &Operation) -> bool {
    match op.outcome {
        Outcome::Ok => true,
        Outcome::Fail => false,
        Outcome::Unknown => op.func() != Func::Get,
    }
}

pub fn check(history: &History, budget: Budget) -> LinearizabilityReport {
    let started = Instant::now();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.operations.iter().filter(|op| relevant(op)) {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut report = LinearizabilityReport {
        verdict: Verdict::Pass,
        keys_checked: by_key.len(),
        undecided_keys: Vec::new(),
        violations: Vec::new(),
        elapsed_ms: 0,
    };
    for (key, ops) in by_key {
        let mut part = KeyPart::new(key, ops);
        let everything: Vec<usize> = (0..part.ops.len()).collect();
        match part.run(&everything, u64::MAX, ABSENT, budget) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::OutOfBudget => report.undecided_keys.push(key.to_owned()),
            SearchOutcome::NotLinearizable => {
                report.violations.push(diagnose(&mut part, budget));
            }
        }
    }
    report.verdict = if !report.violations.is_empty() {
        Verdict::Fail
    } else if !report.undecided_keys.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Pass
    };
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

/// Narrows a non-linearizable key to a window: first the shortest failing prefix (ending at the
/// return of the operation the search gets stuck on), then the latest start from which the
/// window still cannot be linearized from any value.
fn diagnose(part: &mut KeyPart<'_>, budget: Budget) -> Violation {
    let mut returns: Vec<(u64, usize)> = part
        .ops
        .iter()
        .enumerate()
        .filter_map(|(index, op)| acknowledged_return(op).map(|ret| (ret, index)))
        .collect();
    returns.sort_unstable();

    let prefix = |part: &KeyPart<'_>, horizon: u64| -> Vec<usize> {
        (0..part.ops.len())
            .filter(|&index| part.ops[index].invoke <= horizon)
            .collect()
    };
    // Smallest k such that the history up to the k-th return fails; the whole history fails.
    let (mut low, mut high) = (0, returns.len() - 1);
    while low < high {
        let middle = (low + high) / 2;
        let horizon = returns[middle].0;
        let members = prefix(part, horizon);
        if part.run(&members, horizon, ABSENT, budget) == SearchOutcome::NotLinearizable {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let (horizon, stuck) = returns[low];
    let members = prefix(part, horizon);

    // Latest start s such that the operations still live at s, from any value, still fail.
    let live_from = |part: &KeyPart<'_>, start: u64| -> Vec<usize> {
        members
            .iter()
            .copied()
            .filter(|&index| acknowledged_return(part.ops[index]).is_none_or(|ret| ret >= start))
            .collect()
    };
    let mut starts: Vec<u64> = members
        .iter()
        .map(|&index| part.ops[index].invoke)
        .filter(|&invoke| invoke <= part.ops[stuck].invoke)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let (mut low, mut high) = (0usize, starts.len());
    // Invariant: starts[..low] fail from any value (or low == 0); starts[high..] do not.
    while low < high {
        let middle = (low + high) / 2;
        let window = live_from(part, starts[middle]);
        if part.run(&window, horizon, ANY, budget) == SearchOutcome::NotLinearizable {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let (window, from_any_value) = if low > 0 {
        (live_from(part, starts[low - 1]), true)
    } else {
        (members, false)
    };
    let mut window = window;
    window.sort_by_key(|&index| (part.ops[index].invoke, index));
    let window: Vec<usize> = window.into_iter().map(|index| part.ops[index].id).collect();

    let stuck_op = part.ops[stuck];
    let explanation = format!(
        "no order of these {} operations on key {:?}, starting from {}, gives every result they \
         returned; the first result no order explains is process {}'s {} (returned at {})",
        window.len(),
        part.key,
        if from_any_value {
            "any value"
        } else {
            "an absent key"
        },
        stuck_op.process,
        stuck_op,
        stuck_op.complete.unwrap_or_default()
    );
    Violation {
        key: part.key.to_owned(),
        stuck_at: stuck_op.id,
        window,
        from_any_value,
        explanation,
    }
}
