//! Synthetic histories of a correct (linearizable) key-value store under concurrent clients, for
//! benchmarks and tests. Each operation takes effect at a random instant inside its interval, and
//! results are computed by applying operations in that order, so the history is linearizable by
//! construction.
use std::collections::HashMap;

use super::{Args, History, Operation, Outcome};
use fault_rules::SplitMix64;

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub clients: u64,
    pub keys: u64,
    pub operations: usize,
    /// Percentage of operations whose outcome the client never learns (timeouts).
    pub unknown_percent: u64,
    pub seed: u64,
}

pub fn linearizable_history(shape: Shape) -> History {
    let mut rng = SplitMix64::new(shape.seed);
    // (effect time, op index, whether an unknown op actually takes effect)
    let mut effects: Vec<(u64, usize, bool)> = Vec::with_capacity(shape.operations);
    let mut operations = Vec::with_capacity(shape.operations);
    let mut clock: Vec<u64> = (0..shape.clients).map(|_| rng.below(1000)).collect();
    let mut process_of: Vec<u64> = (0..shape.clients).collect();
    let mut value_counter = 0u64;
    for id in 0..shape.operations {
        let client = rng.below(shape.clients) as usize;
        let invoke = clock[client] + 1 + rng.below(200);
        let complete = invoke + 100 + rng.below(2000);
        clock[client] = complete;
        let key = format!("k{}", rng.below(shape.keys));
        value_counter += 1;
        let args = match rng.below(10) {
            0..=4 => Args::Get,
            5..=7 => Args::Put(format!("v{value_counter}")),
            8 => Args::Cas {
                from: format!("v{}", value_counter.saturating_sub(1 + rng.below(6))),
                to: format!("v{value_counter}"),
            },
            _ => Args::Delete,
        };
        let unknown = rng.percent(shape.unknown_percent);
        let effect = invoke + rng.below(complete - invoke + 1);
        effects.push((effect, id, !unknown || rng.percent(50)));
        operations.push(Operation {
            id,
            process: process_of[client],
            key,
            args,
            outcome: if unknown {
                Outcome::Unknown
            } else {
                Outcome::Ok
            },
            read: None,
            matched: true,
            invoke,
            complete: (!unknown).then_some(complete),
        });
        if unknown {
            // Like Jepsen: a client whose request timed out continues as a new process.
            process_of[client] += shape.clients;
        }
    }
    effects.sort_unstable();
    let mut state: HashMap<String, String> = HashMap::new();
    for (_, id, takes_effect) in effects {
        if !takes_effect {
            continue;
        }
        let op = &mut operations[id];
        let current = state.get(&op.key).cloned();
        match &op.args {
            // A client that timed out never learns what it read.
            Args::Get if op.outcome == Outcome::Ok => op.read = current,
            Args::Get => {}
            Args::Put(value) => {
                state.insert(op.key.clone(), value.clone());
            }
            Args::Cas { from, to } => {
                let matched = current.as_deref() == Some(from.as_str());
                if op.outcome == Outcome::Ok {
                    op.matched = matched;
                }
                if matched {
                    state.insert(op.key.clone(), to.clone());
                }
            }
            Args::Delete => {
                state.remove(&op.key);
            }
            Args::Append(piece) => {
                let grown = current.unwrap_or_default() + piece;
                state.insert(op.key.clone(), grown);
            }
        }
    }
    operations.sort_by_key(|op| op.invoke);
    for (id, op) in operations.iter_mut().enumerate() {
        op.id = id;
    }
    History {
        operations,
        faults: Vec::new(),
        leaders: Vec::new(),
    }
}

/// A history no order satisfies, built so the search must try every subset of `unknown_writes`
/// concurrent writes of unknown outcome before it can say so: for testing budgets. The reads
/// see v0, v1, v0 in turn, but v0 is written only once.
pub fn exhausting_history(unknown_writes: u64) -> History {
    let mut operations: Vec<Operation> = (0..unknown_writes)
        .map(|i| Operation {
            id: 0,
            process: 100 + i,
            key: "k".into(),
            args: Args::Put(format!("v{i}")),
            outcome: Outcome::Unknown,
            read: None,
            matched: true,
            invoke: 10 + i,
            complete: None,
        })
        .collect();
    for (step, seen) in ["v0", "v1", "v0"].into_iter().enumerate() {
        let invoke = 1000 + 2 * step as u64;
        operations.push(Operation {
            id: 0,
            process: 1,
            key: "k".into(),
            args: Args::Get,
            outcome: Outcome::Ok,
            read: Some(seen.into()),
            matched: true,
            invoke,
            complete: Some(invoke + 1),
        });
    }
    for (id, op) in operations.iter_mut().enumerate() {
        op.id = id;
    }
    History {
        operations,
        faults: Vec::new(),
        leaders: Vec::new(),
    }
}
