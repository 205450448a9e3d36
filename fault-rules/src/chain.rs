//! The action chain and its evaluation, with the `fail` crate's semantics.
use injector_common::roll;

use crate::Action;

/// `[P%][N*]action`: fires with probability P% (default 100) at most N times (default: always).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub percent: Option<u8>,
    pub count: Option<u64>,
    pub action: Action,
}

/// A chain of terms with the state of their counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    terms: Vec<Term>,
    /// Times each term has fired so far.
    fired: Vec<u64>,
    /// Calls evaluated so far: the counter the probability generator is keyed by.
    calls: u64,
}

impl Chain {
    pub fn new(terms: Vec<Term>) -> Self {
        let fired = vec![0; terms.len()];
        Self {
            terms,
            fired,
            calls: 0,
        }
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Calls evaluated so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Decides one matching call. Returns the action of the term that fired, or None when no
    /// term fired (the call proceeds). `Action::Off` also means "proceed", but it used a count.
    pub fn eval(&mut self, seed: u64, rule_index: u64) -> Option<&Action> {
        let call = self.calls;
        self.calls += 1;
        for (index, term) in self.terms.iter().enumerate() {
            if term.count.is_some_and(|count| self.fired[index] >= count) {
                continue;
            }
            if let Some(percent) = term.percent
                && roll(seed, rule_index, call, index as u64) >= u64::from(percent)
            {
                continue;
            }
            self.fired[index] += 1;
            return Some(&term.action);
        }
        None
    }
}
