//! Protocol oracles, judged from outside on what the nodes' `/status` says while the run goes
//! on. Raft hides one node's lost data by replicating it again, so a client may never see a
//! durability bug; a node that forgets what it had acknowledged, or two leaders in one term,
//! is a violation all the same.
//!
//! Each oracle needs fields a node may not report; one that never got them says "not
//! applicable", never "pass".
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::check::Verdict;

/// up_ms is whole milliseconds: a start is placed this much earlier than it says.
const START_MARGIN_NS: u64 = 2_000_000;

/// One violation, with where and when.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub oracle: &'static str,
    pub node: usize,
    /// ns since the run's start.
    pub time: u64,
    pub explanation: String,
}

/// The state of a node as one poll saw it.
#[derive(Clone, Copy, Debug)]
struct Life {
    boot: u64,
    term: u64,
    commit: u64,
}

#[derive(Default)]
pub struct Oracles {
    /// term -> (node that led it, when first seen).
    leaders: BTreeMap<u64, (usize, u64)>,
    /// node -> what its current process said last.
    lives: BTreeMap<usize, Life>,
    /// node -> (time, highest term it was seen leading) over its earlier lives.
    led: BTreeMap<usize, Vec<(u64, u64)>>,
    /// follower -> (time, index) a leader saw matched on it and committed, rising.
    acknowledged: BTreeMap<usize, Vec<(u64, u64)>>,
    /// node -> (time, commit index) it reported, rising over all its lives. A node reports the
    /// commit point it has made durable, and applies nothing past it (Raft saves the commit
    /// point before applying, as etcd's HardState and openraft's save_committed do).
    committed: BTreeMap<usize, Vec<(u64, u64)>>,
    /// node -> (time, term of the vote it reported on disk), rising over all its lives.
    voted: BTreeMap<usize, Vec<(u64, u64)>>,
    /// checkpoint index -> (node, results hash, when) as first reported, and whether a node
    /// disagreed with it already (one violation per index).
    results: BTreeMap<u64, (usize, String, u64, bool)>,
    /// Which oracles had what they need at least once.
    applicable: BTreeMap<&'static str, bool>,
    violations: Vec<Violation>,
}

pub const ONE_LEADER_PER_TERM: &str = "at most one leader per term";
pub const NOTHING_GOES_BACK: &str = "terms and commit index never go back";
pub const ACKNOWLEDGED_KEPT: &str = "acknowledged log entries survive restarts";
pub const SAME_RESULTS: &str = "replicas apply the same results";
pub const NAMES: [&str; 4] = [
    ONE_LEADER_PER_TERM,
    NOTHING_GOES_BACK,
    ACKNOWLEDGED_KEPT,
    SAME_RESULTS,
];

impl Oracles {
    /// Feeds one poll of node `node`'s /status, sent at `sent` and answered at `time` (ns since
    /// the start): the node produced it in between.
    pub fn observe(&mut self, node: usize, (sent, time): (u64, u64), status: &Value) {
        let term = status["term"].as_u64();
        let leading = super::target::says_it_leads(status);
        if let (Some(term), true) = (term, leading) {
            self.applicable.insert(ONE_LEADER_PER_TERM, true);
            match self.leaders.get(&term) {
                Some(&(other, since)) if other != node => self.violate(
                    ONE_LEADER_PER_TERM,
                    node,
                    time,
                    format!(
                        "n{node} leads term {term}, which n{other} was seen leading at {:.3} s",
                        secs(since)
                    ),
                ),
                Some(_) => {}
                None => {
                    self.leaders.insert(term, (node, time));
                }
            }
        }
        self.follow_life(node, (sent, time), status, term.unwrap_or(0), leading);
        if leading {
            self.record_matches(node, time, status);
        }
        self.compare_results(node, time, status);
    }

    /// Every replica applies the same entries in the same order to the same state, so at one
    /// log index all report one results hash. A retry applied twice, or a state rebuilt from
    /// a snapshot that lacks part of it, shows here even when the key it touched is written
    /// over a moment later and the final states agree again.
    fn compare_results(&mut self, node: usize, time: u64, status: &Value) {
        let Some(checkpoints) = status["result_checkpoints"].as_array() else {
            return;
        };
        self.applicable.insert(SAME_RESULTS, true);
        for checkpoint in checkpoints {
            let (Some(index), Some(hash)) = (checkpoint[0].as_u64(), checkpoint[1].as_str()) else {
                continue;
            };
            let first = self
                .results
                .entry(index)
                .or_insert_with(|| (node, hash.to_owned(), time, false));
            if first.1 == hash || first.3 {
                continue;
            }
            first.3 = true;
            let explanation = format!(
                "at log index {index} n{node} reports results hash {hash}, but n{} reported {} (at {:.3} s): the replicas applied the same entries with different results",
                first.0,
                first.1,
                secs(first.2)
            );
            self.violate(SAME_RESULTS, node, time, explanation);
        }
    }

    /// Within one process nothing goes back; across a restart, the node must come back with
    /// every entry it had acknowledged and at least the term it led in.
    fn follow_life(
        &mut self,
        node: usize,
        (sent, time): (u64, u64),
        status: &Value,
        term: u64,
        leading: bool,
    ) {
        let (Some(boot), Some(commit)) = (status["boot"].as_u64(), status["commit_index"].as_u64())
        else {
            return;
        };
        self.applicable.insert(NOTHING_GOES_BACK, true);
        rise(self.committed.entry(node).or_default(), time, commit);
        if let Some(vote_term) = status["vote_term"].as_u64() {
            rise(self.voted.entry(node).or_default(), time, vote_term);
        }
        let now = Life { boot, term, commit };
        match self.lives.get(&node).copied() {
            Some(before) if before.boot == boot => {
                if term < before.term {
                    self.violate(
                        NOTHING_GOES_BACK,
                        node,
                        time,
                        format!(
                            "n{node}'s term went back from {} to {term} while it ran",
                            before.term
                        ),
                    );
                }
                if commit < before.commit {
                    self.violate(
                        NOTHING_GOES_BACK,
                        node,
                        time,
                        format!(
                            "n{node}'s commit index went back from {} to {commit} while it ran",
                            before.commit
                        ),
                    );
                }
            }
            Some(_) => self.judge_restart(node, (sent, time), status),
            None => {}
        }
        if leading {
            let led = self.led.entry(node).or_default();
            if led.last().is_none_or(|&(_, t)| term > t) {
                led.push((time, term));
            }
        }
        let kept = self.lives.entry(node).or_insert(now);
        *kept = Life {
            term: if kept.boot == boot {
                kept.term.max(term)
            } else {
                term
            },
            commit: if kept.boot == boot {
                kept.commit.max(commit)
            } else {
                commit
            },
            boot,
        };
    }

    /// A new process of `node`: what it recovered must cover what it had acknowledged, and the
    /// vote it recovered the terms it had led, as seen by polls answered before it started
    /// (so produced by its earlier process's peers about that process).
    fn judge_restart(&mut self, node: usize, (sent, time): (u64, u64), status: &Value) {
        let Some(up_ms) = status["up_ms"].as_u64() else {
            return;
        };
        // It said up_ms somewhere between `sent` and `time`: it started no earlier than this.
        let started = sent
            .saturating_sub(up_ms * 1_000_000)
            .saturating_sub(START_MARGIN_NS);
        let before = |series: Option<&Vec<(u64, u64)>>| {
            series
                .into_iter()
                .flatten()
                .filter(|(seen, _)| *seen < started)
                .map(|&(seen, value)| (value, seen))
                .max()
        };
        // null: the node recovered nothing (an empty log); absent: it does not say.
        let recovered = match status.get("recovered_index") {
            Some(Value::Null) => Some(0),
            Some(index) => index.as_u64(),
            None => None,
        };
        if let (Some(recovered), Some((acknowledged, seen))) =
            (recovered, before(self.acknowledged.get(&node)))
            && recovered < acknowledged
        {
            self.violate(
                ACKNOWLEDGED_KEPT,
                node,
                time,
                format!(
                    "n{node} had acknowledged log entries up to index {acknowledged} (matched and committed, as its leader said at {:.3} s), but after its restart at {:.3} s it recovered only up to {recovered}",
                    secs(seen),
                    secs(started + START_MARGIN_NS)
                ),
            );
        }
        // null: nothing committed on disk; absent: it does not say.
        let recovered_commit = match status.get("recovered_commit") {
            Some(Value::Null) => Some(0),
            Some(commit) => commit.as_u64(),
            None => None,
        };
        if let (Some(recovered), Some((commit, seen))) =
            (recovered_commit, before(self.committed.get(&node)))
            && recovered < commit
        {
            self.violate(
                NOTHING_GOES_BACK,
                node,
                time,
                format!(
                    "n{node} reported its commit index at {commit} (at {:.3} s), but after its restart at {:.3} s it recovered a commit point of {recovered}",
                    secs(seen),
                    secs(started + START_MARGIN_NS)
                ),
            );
        }
        if let (Some(recovered_term), Some((vote_term, seen))) = (
            status["recovered_term"].as_u64(),
            before(self.voted.get(&node)),
        ) && recovered_term < vote_term
        {
            self.violate(
                NOTHING_GOES_BACK,
                node,
                time,
                format!(
                    "n{node} reported a vote of term {vote_term} on its disk (at {:.3} s), but after its restart at {:.3} s it recovered a vote of term {recovered_term}",
                    secs(seen),
                    secs(started + START_MARGIN_NS)
                ),
            );
        }
        if let (Some(recovered_term), Some((led_term, seen))) = (
            status["recovered_term"].as_u64(),
            before(self.led.get(&node)),
        ) && recovered_term < led_term
        {
            self.violate(
                NOTHING_GOES_BACK,
                node,
                time,
                format!(
                    "n{node} led term {led_term} (seen at {:.3} s), but after its restart it recovered a vote of term {recovered_term}",
                    secs(seen)
                ),
            );
        }
    }

    /// A leader's matched index for each follower, capped at its commit index: committed
    /// entries a follower acknowledged, which no later leader may take back.
    fn record_matches(&mut self, leader: usize, time: u64, status: &Value) {
        let (Some(matched), Some(commit)) = (
            status["matched"].as_object(),
            status["commit_index"].as_u64(),
        ) else {
            return;
        };
        self.applicable.insert(ACKNOWLEDGED_KEPT, true);
        for (follower, index) in matched {
            let (Ok(follower), Some(index)) = (follower.parse::<usize>(), index.as_u64()) else {
                continue;
            };
            if follower == leader {
                continue;
            }
            let kept = index.min(commit);
            let series = self.acknowledged.entry(follower).or_default();
            if series.last().is_none_or(|&(_, v)| kept > v) {
                series.push((time, kept));
            }
        }
    }

    fn violate(&mut self, oracle: &'static str, node: usize, time: u64, explanation: String) {
        tracing::warn!(oracle, node, %explanation, "protocol oracle violated");
        self.violations.push(Violation {
            oracle,
            node,
            time,
            explanation,
        });
    }

    /// The verdict of oracle `name` and its detail: the first violation, or what was watched.
    pub fn verdict(&self, name: &'static str) -> (Verdict, String) {
        let violations: Vec<&Violation> = self
            .violations
            .iter()
            .filter(|v| v.oracle == name)
            .collect();
        if let Some(first) = violations.first() {
            return (
                Verdict::Fail,
                format!(
                    "{} violation(s); first at {:.3} s: {}",
                    violations.len(),
                    secs(first.time),
                    first.explanation
                ),
            );
        }
        if !self.applicable.get(name).copied().unwrap_or(false) {
            let needs = match name {
                ONE_LEADER_PER_TERM => "`term` from a node that says it leads",
                NOTHING_GOES_BACK => "`boot` and `commit_index`",
                ACKNOWLEDGED_KEPT => "`matched` and `commit_index` from the leader",
                _ => "`result_checkpoints`",
            };
            return (
                Verdict::NotApplicable,
                format!("not applicable: the nodes' status never gave {needs}"),
            );
        }
        let detail = match name {
            ONE_LEADER_PER_TERM => format!("{} terms with a leader seen", self.leaders.len()),
            ACKNOWLEDGED_KEPT => format!(
                "acknowledgements followed on {} followers",
                self.acknowledged.len()
            ),
            SAME_RESULTS => format!("{} checkpoints compared", self.results.len()),
            _ => format!("{} nodes followed", self.lives.len()),
        };
        (Verdict::Pass, detail)
    }

    /// When oracle `name` was first violated (the run's clock, ns), if it was.
    pub fn first_violation_at(&self, name: &str) -> Option<u64> {
        self.violations
            .iter()
            .find(|v| v.oracle == name)
            .map(|v| v.time)
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }
}

/// Appends `value` seen at `time` to a rising series, if it is higher than the last.
fn rise(series: &mut Vec<(u64, u64)>, time: u64, value: u64) {
    if series.last().is_none_or(|&(_, last)| value > last) {
        series.push((time, value));
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests;
