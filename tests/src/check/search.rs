//! Wing & Gong's search with Lowe's memoisation (as in Porcupine): linearize operations one at a
//! time in an order real time allows, remember every (set of linearized operations, state)
//! already explored, and backtrack when an operation's return is reached before it could be
//! placed.
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use super::model::{StateId, Step, Values};

/// One operation as the search sees it.
#[derive(Clone, Debug)]
pub struct SearchOp {
    pub step: Step,
    pub invoke: u64,
    /// `None`: outcome unknown, so it may be placed anywhere after its invoke, or nowhere.
    pub ret: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    NotLinearizable,
    /// The budget ran out before the search could decide.
    OutOfBudget,
}

/// How long and how much memory a search may use before it answers "unknown".
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub deadline: Instant,
    pub max_memory_bytes: usize,
}

impl Budget {
    pub fn new(time: Duration, max_memory_bytes: usize) -> Self {
        Self {
            deadline: Instant::now() + time,
            max_memory_bytes,
        }
    }
}

const NIL: usize = usize::MAX;

struct Entry {
    op: usize,
    is_call: bool,
}

/// The event list as a doubly linked list over arrays; `head` is a sentinel. Lifting an operation
/// unlinks its entries and unlifting relinks them, in strict stack order (dancing links).
struct EntryList {
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    call_of: Vec<usize>,
    return_of: Vec<usize>,
}

impl EntryList {
    fn new(ops: &[SearchOp]) -> Self {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            // At equal times a call sorts before a return: the two are treated as concurrent.
            order.push((op.invoke, false, index));
            if let Some(ret) = op.ret {
                order.push((ret, true, index));
            }
        }
        order.sort_unstable();
        let count = order.len();
        let head = count;
        let mut list = EntryList {
            entries: Vec::with_capacity(count),
            next: vec![NIL; count + 1],
            prev: vec![NIL; count + 1],
            head,
            call_of: vec![NIL; ops.len()],
            return_of: vec![NIL; ops.len()],
        };
        let mut last = head;
        for (position, (_, is_return, op)) in order.into_iter().enumerate() {
            list.entries.push(Entry {
                op,
                is_call: !is_return,
            });
            if is_return {
                list.return_of[op] = position;
            } else {
                list.call_of[op] = position;
            }
            list.next[last] = position;
            list.prev[position] = last;
            last = position;
        }
        list
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        if next != NIL {
            self.prev[next] = entry;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if self.return_of[op] != NIL {
            self.unlink(self.return_of[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.return_of[op] != NIL {
            self.relink(self.return_of[op]);
        }
        self.relink(self.call_of[op]);
    }
}

/// Whether `ops`, starting from `initial`, have a linearization.
pub fn search(ops: &[SearchOp], initial: StateId, values: &mut Values, budget: Budget) -> Outcome {
    let mut list = EntryList::new(ops);
    let words = ops.len().div_ceil(64);
    let bytes_per_memo = words * 8 + 48;
    let mut linearized = vec![0u64; words];
    let mut memo: HashSet<(Box<[u64]>, StateId)> = HashSet::new();
    // (operation lifted, state before it)
    let mut stack: Vec<(usize, StateId)> = Vec::new();
    let mut unplaced_acknowledged = ops.iter().filter(|op| op.ret.is_some()).count();
    let mut state = initial;
    let mut entry = list.next[list.head];
    let mut steps: u64 = 0;

    loop {
        if unplaced_acknowledged == 0 {
            return Outcome::Linearizable;
        }
        steps += 1;
        if steps.is_multiple_of(4096)
            && (Instant::now() > budget.deadline
                || memo.len() * bytes_per_memo > budget.max_memory_bytes)
        {
            return Outcome::OutOfBudget;
        }
        if entry != NIL && list.entries[entry].is_call {
            let op = list.entries[entry].op;
            if let Some(next_state) = ops[op].step.apply(state, values) {
                linearized[op / 64] |= 1 << (op % 64);
                if memo.insert((linearized.clone().into_boxed_slice(), next_state)) {
                    stack.push((op, state));
                    state = next_state;
                    list.lift(op);
                    if ops[op].ret.is_some() {
                        unplaced_acknowledged -= 1;
                    }
                    entry = list.next[list.head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = list.next[entry];
            continue;
        }
        // An acknowledged operation's return came before it could be placed (or the list ran
        // out): undo the most recent choice and try the next candidate after it.
        let Some((op, previous)) = stack.pop() else {
            return Outcome::NotLinearizable;
        };
        state = previous;
        linearized[op / 64] &= !(1 << (op % 64));
        list.unlift(op);
        if ops[op].ret.is_some() {
            unplaced_acknowledged += 1;
        }
        entry = list.next[list.call_of[op]];
    }
}
