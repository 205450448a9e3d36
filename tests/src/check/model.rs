//! The key-value model the search runs: one key's value, with every string interned so a state
//! is a `u32` and states compare and hash in O(1).
use std::collections::HashMap;

use crate::history::{Args, Operation, Outcome};

pub type StateId = u32;
/// The key does not exist.
pub const ABSENT: StateId = 0;
/// Any value at all: the start state of a window cut out of the middle of a history.
pub const ANY: StateId = u32::MAX;

#[derive(Debug)]
pub struct Values {
    ids: HashMap<String, StateId>,
    texts: Vec<String>,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
            texts: vec![String::new()],
        }
    }
}

impl Values {
    pub fn intern(&mut self, text: &str) -> StateId {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.texts.len() as StateId;
        self.texts.push(text.to_owned());
        self.ids.insert(text.to_owned(), id);
        id
    }

    /// The text of a state, `""` for ABSENT (appending to an absent key starts from nothing).
    pub fn text(&self, id: StateId) -> &str {
        &self.texts[id as usize]
    }
}

/// An operation's effect and observation, with its strings interned.
#[derive(Clone, Debug)]
pub enum Step {
    Read(StateId),
    Put(StateId),
    Delete,
    Cas {
        from: StateId,
        to: StateId,
        matched: bool,
    },
    Append(String),
}

impl Step {
    pub fn compile(op: &Operation, values: &mut Values) -> Step {
        match &op.args {
            Args::Get => Step::Read(op.read.as_deref().map_or(ABSENT, |v| values.intern(v))),
            Args::Put(value) => Step::Put(values.intern(value)),
            Args::Delete => Step::Delete,
            Args::Cas { from, to } => Step::Cas {
                from: values.intern(from),
                to: values.intern(to),
                // Only an acknowledged cas tells us whether it matched.
                matched: op.outcome != Outcome::Ok || op.matched,
            },
            Args::Append(piece) => Step::Append(piece.clone()),
        }
    }

    /// The state after this step from `state`, or None if the step's result is impossible there.
    pub fn apply(&self, state: StateId, values: &mut Values) -> Option<StateId> {
        match *self {
            Step::Read(seen) => (state == ANY || state == seen).then_some(seen),
            Step::Put(value) => Some(value),
            Step::Delete => Some(ABSENT),
            Step::Cas {
                from,
                to,
                matched: true,
            } => (state == ANY || state == from).then_some(to),
            Step::Cas {
                from,
                matched: false,
                ..
            } => (state == ANY || state != from).then_some(state),
            Step::Append(ref piece) => {
                if state == ANY {
                    return Some(ANY);
                }
                let grown = format!("{}{piece}", values.text(state));
                Some(values.intern(&grown))
            }
        }
    }
}
