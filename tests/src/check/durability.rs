//! Linear-time checks that need no search and name the most common failures directly: an
//! acknowledged write missing from the final state, a read of a value nobody wrote, and a client
//! seeing a key go back to an older value.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::Verdict;
use crate::history::{Args, Func, History, Operation, Outcome, shown};

#[derive(Clone, Debug, Serialize)]
pub struct DurabilityReport {
    pub verdict: Verdict,
    pub lost_writes: Vec<Finding>,
    pub values_from_nowhere: Vec<Finding>,
    pub stale_reads: Vec<Finding>,
}

/// One problem, with the operations (ids) that show it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub key: String,
    pub operations: Vec<usize>,
    pub explanation: String,
}

pub fn check(history: &History) -> DurabilityReport {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.operations {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut report = DurabilityReport {
        verdict: Verdict::Pass,
        lost_writes: Vec::new(),
        values_from_nowhere: Vec::new(),
        stale_reads: Vec::new(),
    };
    for (key, ops) in &by_key {
        report.lost_writes.extend(lost_writes(key, ops));
        report
            .values_from_nowhere
            .extend(values_from_nowhere(key, ops));
        report.stale_reads.extend(stale_reads(key, ops));
    }
    let found =
        report.lost_writes.len() + report.values_from_nowhere.len() + report.stale_reads.len();
    report.verdict = if found == 0 {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    report
}

/// Whether the operation may have changed the key (anything but a read, a failed operation or a
/// cas that found another value).
fn may_write(op: &Operation) -> bool {
    op.func().is_write()
        && op.outcome != Outcome::Fail
        && !(op.func() == Func::Cas && op.outcome == Outcome::Ok && !op.matched)
}

/// Whether the operation may have replaced the key's value (an append only adds to it).
fn may_replace(op: &Operation) -> bool {
    may_write(op) && op.func() != Func::Append
}

/// An acknowledged write that nothing could have overwritten must be in the final read.
fn lost_writes(key: &str, ops: &[&Operation]) -> Vec<Finding> {
    let Some(final_read) = ops
        .iter()
        .filter(|op| op.func() == Func::Get && op.outcome == Outcome::Ok)
        .max_by_key(|op| (op.invoke, op.id))
    else {
        return Vec::new();
    };
    // The two latest moments a replacing write could still take effect, to answer "could any
    // other write land after this one?" in O(1).
    let mut latest: [(u64, usize); 2] = [(0, usize::MAX); 2];
    for op in ops.iter().filter(|op| may_replace(op)) {
        let deadline = (op.effect_deadline(), op.id);
        if deadline > latest[0] {
            latest = [deadline, latest[0]];
        } else if deadline > latest[1] {
            latest[1] = deadline;
        }
    }
    let latest_append = ops
        .iter()
        .filter(|op| may_write(op) && op.func() == Func::Append)
        .map(|op| op.effect_deadline())
        .max()
        .unwrap_or(0);
    let latest_other = |op: &Operation| {
        if latest[0].1 == op.id {
            latest[1].0
        } else {
            latest[0].0
        }
    };
    let mut findings = Vec::new();
    for write in ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && may_write(op))
    {
        let Some(acked) = write.complete else {
            continue;
        };
        if acked >= final_read.invoke || latest_other(write) > write.invoke {
            // The read may precede it, or another write may have landed after it.
            continue;
        }
        // Appends only add to a value, so after one the written value is a prefix.
        let appended_after = latest_append > write.invoke;
        let read = final_read.read.as_deref();
        let survives = match &write.args {
            Args::Append(piece) => read.is_some_and(|v| v.contains(piece.as_str())),
            Args::Delete => read.is_none() || appended_after,
            _ => match (read, write.written_value()) {
                (Some(read), Some(written)) if appended_after => read.starts_with(written),
                (read, written) => read == written,
            },
        };
        if !survives {
            findings.push(Finding {
                key: key.to_owned(),
                operations: vec![write.id, final_read.id],
                explanation: format!(
                    "process {}'s {} was acknowledged and nothing could overwrite it, but the \
                     final read (process {}) gives {}",
                    write.process, write, final_read.process, final_read
                ),
            });
        }
    }
    findings
}

/// A read must return a value some write (not a failed one) produced, invoked before the read
/// returned. With appends, the value must be a written value followed by appended pieces.
fn values_from_nowhere(key: &str, ops: &[&Operation]) -> Vec<Finding> {
    let mut first_invoke: HashMap<&str, u64> = HashMap::new();
    let mut pieces: HashMap<&str, u64> = HashMap::new();
    for op in ops.iter().filter(|op| may_write(op)) {
        let (table, text) = match &op.args {
            Args::Append(piece) => (&mut pieces, piece.as_str()),
            _ => match op.written_value() {
                Some(value) => (&mut first_invoke, value),
                None => continue,
            },
        };
        let entry = table.entry(text).or_insert(op.invoke);
        *entry = (*entry).min(op.invoke);
    }
    let mut findings = Vec::new();
    for read in ops
        .iter()
        .filter(|op| op.func() == Func::Get && op.outcome == Outcome::Ok)
    {
        let Some(value) = read.read.as_deref() else {
            continue;
        };
        let before = read.complete.unwrap_or(u64::MAX);
        let written =
            |table: &HashMap<&str, u64>, text: &str| table.get(text).is_some_and(|&t| t <= before);
        let explained = written(&first_invoke, value) || {
            let usable: Vec<&str> = pieces
                .iter()
                .filter(|(_, t)| **t <= before)
                .map(|(p, _)| *p)
                .collect();
            assembled(value, &usable, |prefix| written(&first_invoke, prefix))
        };
        if !explained {
            findings.push(Finding {
                key: key.to_owned(),
                operations: vec![read.id],
                explanation: format!(
                    "process {}'s {} returned a value no write had produced by then",
                    read.process, read
                ),
            });
        }
    }
    findings
}

/// Whether `value` is a written base value (or nothing) followed by appended pieces.
fn assembled(value: &str, pieces: &[&str], is_base: impl Fn(&str) -> bool) -> bool {
    if pieces.is_empty() {
        return false;
    }
    let mut reachable = vec![false; value.len() + 1];
    reachable[0] = true;
    for end in 1..=value.len() {
        if value.is_char_boundary(end) && is_base(&value[..end]) {
            reachable[end] = true;
        }
    }
    for start in 0..value.len() {
        if !reachable[start] {
            continue;
        }
        for piece in pieces.iter().filter(|piece| !piece.is_empty()) {
            if value[start..].starts_with(piece) {
                reachable[start + piece.len()] = true;
            }
        }
    }
    reachable[value.len()]
}

/// A process that read value B must not later read value A when A's only write was acknowledged
/// before B's only write began: that is time going backwards for that client.
fn stale_reads(key: &str, ops: &[&Operation]) -> Vec<Finding> {
    let mut writers: HashMap<&str, Vec<&Operation>> = HashMap::new();
    for op in ops.iter().filter(|op| may_write(op)) {
        if let Some(value) = op.written_value() {
            writers.entry(value).or_default().push(op);
        }
    }
    let only_writer = |value: &str| match writers.get(value).map(Vec::as_slice) {
        Some([writer]) => Some(*writer),
        _ => None,
    };
    let mut reads: Vec<&&Operation> = ops
        .iter()
        .filter(|op| op.func() == Func::Get && op.outcome == Outcome::Ok && op.read.is_some())
        .collect();
    reads.sort_by_key(|op| (op.process, op.invoke));
    let mut findings = Vec::new();
    let mut reported: HashSet<(usize, usize)> = HashSet::new();
    for pair in reads.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        if earlier.process != later.process || earlier.read == later.read {
            continue;
        }
        let (Some(newer), Some(older)) = (
            only_writer(earlier.read.as_deref().unwrap_or_default()),
            only_writer(later.read.as_deref().unwrap_or_default()),
        ) else {
            continue;
        };
        let older_done_before_newer =
            older.outcome == Outcome::Ok && older.complete.is_some_and(|done| done < newer.invoke);
        if older_done_before_newer && reported.insert((earlier.id, later.id)) {
            findings.push(Finding {
                key: key.to_owned(),
                operations: vec![earlier.id, later.id, newer.id, older.id],
                explanation: format!(
                    "process {} read {}, then the older {} (written by process {} before \
                     process {} began writing {})",
                    earlier.process,
                    shown(earlier.read.as_deref().unwrap_or_default()),
                    shown(later.read.as_deref().unwrap_or_default()),
                    older.process,
                    newer.process,
                    shown(earlier.read.as_deref().unwrap_or_default())
                ),
            });
        }
    }
    findings
}
