//! The action chain and its evaluation, with the `fail` crate's semantics.
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

/// A number in 0..100 that depends only on its inputs (a counter-based generator), so replaying
/// the same calls with the same seed gives the same faults.
fn roll(seed: u64, rule: u64, call: u64, term: u64) -> u64 {
    let mut z = seed
        ^ rule.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ call.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ term.wrapping_mul(0x1656_67b1_9e37_79f9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((u128::from(z) * 100) >> 64) as u64
}
