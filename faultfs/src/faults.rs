//! The active fault rules of a mount: added at mount time or by `faultfs ctl`, evaluated on each
//! operation, each fired fault logged.
use std::{
    path::Path,
    sync::{Condvar, Mutex},
    time::Duration,
};

use fault_rules::{Action, CallFacts, Capabilities, Corruption, ParseError, Rule, parse_rule};
use serde::Serialize;

pub const CAPABILITIES: Capabilities<'static> = Capabilities {
    tool: "faultfs",
    ops: &[
        "read",
        "write",
        "fsync",
        "fdatasync",
        "open",
        "create",
        "mkdir",
        "symlink",
        "link",
        "unlink",
        "rmdir",
        "rename",
        "truncate",
        "fallocate",
        "readdir",
        "statfs",
        "flush",
    ],
    actions: &[
        "off",
        "error",
        "delay",
        "pause",
        "short",
        "lose",
        "fsyncgate",
        "corrupt",
        "crash",
        "kill",
    ],
    filters: &["path"],
};

/// The operations a program makes itself, so `kill` knows whom to kill: everything but read
/// and write, which the page cache sends on its own schedule.
const KILLABLE_OPS: &[&str] = &[
    "fsync",
    "fdatasync",
    "open",
    "create",
    "mkdir",
    "symlink",
    "link",
    "unlink",
    "rmdir",
    "rename",
    "truncate",
    "fallocate",
    "readdir",
    "statfs",
    "flush",
];

/// What an operation must do, decided before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Proceed,
    Fail(i32),
    Short(u64),
    Lose,
    Fsyncgate,
    Corrupt(Corruption),
    /// The operation completes, then the mount stops as at a power cut.
    Crash,
    /// The process that made the call is killed (SIGKILL) and the call is not performed: a
    /// crash of the program alone, at that call, with everything it wrote before kept.
    Kill,
}

/// A decision that may first hold the operation.
pub enum Decision {
    Now(Gate),
    /// After the delay, or as soon as the rule (its id) is removed.
    After(Duration, u64),
    UntilRemoved(u64),
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleInfo {
    pub id: u64,
    pub rule: String,
    pub calls: u64,
    pub fired: u64,
}

struct ActiveRule {
    id: u64,
    rule: Rule,
    fired: u64,
}

#[derive(Default)]
struct Table {
    rules: Vec<ActiveRule>,
    next_id: u64,
}

pub struct Faults {
    table: Mutex<Table>,
    removed: Condvar,
    seed: u64,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Self {
            table: Mutex::new(Table {
                rules: Vec::new(),
                next_id: 1,
            }),
            removed: Condvar::new(),
            seed,
        }
    }

    /// Parses, validates and activates a rule; returns its id.
    pub fn add(&self, text: &str) -> Result<u64, ParseError> {
        let rule = parse_rule(text)?;
        rule.validate(&CAPABILITIES)?;
        for term in rule.chain.terms() {
            let only = match term.action {
                Action::Short(_) => Some(&["write"][..]),
                Action::Lose | Action::Fsyncgate => Some(&["fsync", "fdatasync"][..]),
                Action::Corrupt(_) => Some(&["read"][..]),
                // Through the page cache, reads and writes reach the mount from the kernel
                // (read-ahead, write-back), not from the program that made them.
                Action::Kill => Some(KILLABLE_OPS),
                _ => None,
            };
            if let Some(ops) = only
                && !ops.contains(&rule.op.as_str())
            {
                return Err(ParseError::new(
                    text,
                    0,
                    format!(
                        "`{}` only applies to {}{}",
                        term.action.name(),
                        listed(ops),
                        if term.action == Action::Kill {
                            " (reads and writes reach faultfs from the kernel's page cache, \
                             not from the program: kill it at the fsync after them)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        let mut table = self.table.lock().expect("fault table poisoned");
        let id = table.next_id;
        table.next_id += 1;
        table.rules.push(ActiveRule { id, rule, fired: 0 });
        tracing::info!(id, rule = text, "fault rule added");
        Ok(id)
    }

    /// Removes a rule; operations paused by it resume.
    pub fn remove(&self, id: u64) -> bool {
        let mut table = self.table.lock().expect("fault table poisoned");
        let before = table.rules.len();
        table.rules.retain(|rule| rule.id != id);
        let removed = table.rules.len() != before;
        drop(table);
        if removed {
            tracing::info!(id, "fault rule removed");
            self.removed.notify_all();
        }
        removed
    }

    /// True when no rule is active: the common case, checked before any per-request work.
    pub fn is_empty(&self) -> bool {
        self.table
            .lock()
            .expect("fault table poisoned")
            .rules
            .is_empty()
    }

    /// Whether any active rule is on `op`.
    pub fn has_rules_for(&self, op: &str) -> bool {
        self.table
            .lock()
            .expect("fault table poisoned")
            .rules
            .iter()
            .any(|active| active.rule.op == op)
    }

    pub fn list(&self) -> Vec<RuleInfo> {
        let table = self.table.lock().expect("fault table poisoned");
        table
            .rules
            .iter()
            .map(|active| RuleInfo {
                id: active.id,
                rule: active.rule.text.clone(),
                calls: active.rule.chain.calls(),
                fired: active.fired,
            })
            .collect()
    }

    /// Decides `op` on `path` (relative to the mount), as `fault_rules::decide` does for every
    /// tool: the first matching rule whose chain fires decides, every matching rule counts.
    pub fn decide(&self, op: &str, path: &Path) -> Decision {
        let mut table = self.table.lock().expect("fault table poisoned");
        if table.rules.is_empty() {
            return Decision::Now(Gate::Proceed);
        }
        let call = FileCall(path);
        let on_op = table
            .rules
            .iter_mut()
            .filter(|active| active.rule.op == op)
            .map(|active| (active.id, &mut active.rule));
        let Some(fired) = fault_rules::decide(on_op, self.seed, &call) else {
            return Decision::Now(Gate::Proceed);
        };
        if let Some(active) = table.rules.iter_mut().find(|active| active.id == fired.key) {
            active.fired += 1;
        }
        let (id, action) = (fired.key, fired.action);
        tracing::warn!(rule = id, op, path = %path.display(), action = %action, "fault fired");
        match action {
            Action::Error(errno) => Decision::Now(Gate::Fail(errno)),
            Action::Delay(ms) => Decision::After(Duration::from_millis(ms), id),
            Action::Pause => Decision::UntilRemoved(id),
            Action::Short(bytes) => Decision::Now(Gate::Short(bytes)),
            Action::Lose => Decision::Now(Gate::Lose),
            Action::Fsyncgate => Decision::Now(Gate::Fsyncgate),
            Action::Corrupt(how) => Decision::Now(Gate::Corrupt(how)),
            Action::Crash => Decision::Now(Gate::Crash),
            Action::Kill => Decision::Now(Gate::Kill),
            // Validation admits no other action.
            _ => Decision::Now(Gate::Proceed),
        }
    }

    /// Blocks until rule `id` is removed or `limit` has passed: removing a delay rule lets the
    /// calls it holds go at once. Returns whether it was removed.
    pub fn wait_removed_within(&self, id: u64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut table = self.table.lock().expect("fault table poisoned");
        while table.rules.iter().any(|rule| rule.id == id) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            table = self
                .removed
                .wait_timeout(table, left)
                .expect("fault table poisoned")
                .0;
        }
        true
    }
}

/// `a`, `a and b`, `a, b and c`.
fn listed(ops: &[&str]) -> String {
    match ops {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A file operation, as the rules' filters see it: its path relative to the mount.
struct FileCall<'a>(&'a Path);

impl CallFacts for FileCall<'_> {
    fn path(&self) -> Option<String> {
        Some(self.0.to_string_lossy().into_owned())
    }
}
