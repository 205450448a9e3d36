//! Crash points: a node's storage stops right after its Kth call of one kind (fsync, rename,
//! ...) on one class of its files (write-ahead log, snapshot, metadata), then it loses power.
//! Crashes placed by call, not by time: almost every crash bug sits right after a sync-related
//! call (ALICE, CrashMonkey), in a window a random kill rarely lands in.
//!
//! Correlated: the nodes that lose power with it (none, a majority, all) lose it at that same
//! moment, since Raft repairs one node's loss from the others and only a loss shared by a
//! majority reaches a client (PACE). Some crashes strike again while the node recovers.
//!
//! The classes are path globs on the node's data directory, not the database's internals; the
//! plan walks every (class, call) pair in a seeded order so one run covers what it can, and the
//! report says which points were reached and which never were.
//!
//! This file places a run's crash points (`crash_point`); `plan` picks them and reports
//! coverage, `power_cut` stops storage and cuts the power of the nodes that go with it,
//! `program_crash` kills the program alone at a call, `recovery` strikes again while and after
//! a node recovers, `election` and `catch_up` aim at a vote and a snapshot install.
use std::{
    collections::BTreeSet,
    ops::ControlFlow,
    sync::Arc,
    time::{Duration, Instant},
};

mod catch_up;
mod election;
mod plan;
mod power_cut;
mod program_crash;
mod recovery;

pub(crate) use catch_up::fill_log;
use catch_up::*;
pub use catch_up::{KeptDown, kill_until_compacted};
use election::*;
use plan::*;
pub use plan::{CrashCoverage, CrashPlan};
use power_cut::*;
pub use power_cut::{
    PowerCut, next_log_write_crash, power_cut, power_cut_mid_write, wait_for_crash,
};
pub(crate) use program_crash::kill_at;
use program_crash::*;
use recovery::*;

use anyhow::Result;
use fault_rules::SplitMix64;
use serde::Serialize;
use tokio::sync::Mutex;

use super::cluster::{Cluster, status};
pub use super::target::{ETCD_CLASSES, FileClass, TARGET_DB_CLASSES};

/// The glob of the `wal` class among `classes`: the log a crash once recovered or an election
/// crash is aimed at.
fn log_class(classes: &[FileClass]) -> &'static str {
    classes
        .iter()
        .find(|class| class.name == "wal")
        .map_or("db/**", |class| class.glob)
}

/// The calls after which a crash can matter: those that make data durable or change names.
/// (A `write` reaches faultfs when the kernel writes its page cache back: at fsync, mostly.)
pub const CALLS: &[&str] = &[
    "fdatasync",
    "fsync",
    "write",
    "rename",
    "create",
    "unlink",
    "truncate",
];

/// Who else loses power at the crash point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Correlation {
    /// The node alone.
    Alone,
    /// A majority of the nodes, it included.
    Majority,
    /// Every node.
    All,
}

/// One crash point placed, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct CrashAttempt {
    pub node: usize,
    /// leader, follower or candidate (from the node's /status when the point was placed).
    pub role: String,
    pub class: &'static str,
    pub call: &'static str,
    /// The crash came after this call of that kind on that class (1-based).
    pub nth: u64,
    pub correlation: Correlation,
    pub during_recovery: bool,
    /// A second crash once the node had recovered and written to its log again.
    pub after_recovery: bool,
    /// A crash of the program alone (faultfs `kill`): SIGKILLed as it made the call, which was
    /// not made; no power loss, so what it wrote before stayed in the page cache.
    pub program_crash: bool,
    pub reached: bool,
    /// The file the crashing call was on, if reached.
    pub path: Option<String>,
}

impl CrashAttempt {
    /// A crash point on `node` after its `nth` `call` on `class` files, with the power of the
    /// nodes `correlation` names cut with it; `reached`: the file that call was on, if it came.
    /// Not during or after a recovery, and not a crash of the program alone.
    pub fn at(
        node: usize,
        role: impl Into<String>,
        class: &'static str,
        call: &'static str,
        nth: u64,
        correlation: Correlation,
        reached: Option<String>,
    ) -> CrashAttempt {
        CrashAttempt {
            node,
            role: role.into(),
            class,
            call,
            nth,
            correlation,
            during_recovery: false,
            after_recovery: false,
            program_crash: false,
            reached: reached.is_some(),
            path: reached,
        }
    }
}

/// The same while the node recovers: recovery is short.
const REACH_DURING_RECOVERY_WITHIN: Duration = Duration::from_millis(1500);
/// The same after a restart, for writes past recovery: a restart takes up to a second.
const REACH_ONCE_RECOVERED_WITHIN: Duration = Duration::from_millis(4000);

/// Places one crash point on `node` and, once it is reached, cuts the power of the nodes the
/// correlation names at that moment, then restarts them; one time in three the crash strikes
/// again while `node` recovers. Returns the fault's description.
pub async fn crash_point(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
) -> Result<String> {
    if !cluster.lock().await.running(node) {
        return Ok("crash point skipped: node down".into());
    }
    // One time in three, aimed at an election instead: the leader's loss forces one; one time
    // in six at a follower catching up from a snapshot.
    let aim = rng.below(6);
    if aim < 2
        && let Some(leader) = crate::torture::leaders::leading_now(cluster, &[]).await
    {
        return election_crash(cluster, leader, plan, rng).await;
    }
    // Only target-db tells when its log is compacted past a follower (its /status).
    if aim == 2 && cluster.lock().await.target.is_target_db() {
        return catch_up_crash(cluster, node, plan, rng).await;
    }
    let faultfs_status = cluster.lock().await.faultfs_status(node)?;
    plan.look(&faultfs_status);
    let (class, call) = plan.next_pair();
    if killable(call) && rng.below(3) == 0 {
        return program_crash_point(cluster, node, plan, class, call, rng).await;
    }
    let size = cluster.lock().await.nodes.len();
    let correlation = match rng.below(10) {
        0..=3 => Correlation::Alone,
        4..=6 => Correlation::Majority,
        _ => Correlation::All,
    };
    let victims = correlated(node, size, correlation, rng);
    // Log writes and fdatasyncs come once per batch on every node, in step: the same point on
    // every victim at once stops each at about the same batch with its own copy unsynced
    // (PACE's protocol-equivalent crash points). A leader stopped first sends nothing more,
    // so a follower stopped only once the leader's point is seen would have synced its copy.
    // Close to the placement, while the nodes are still in step.
    let aligned = victims.len() > 1 && frequent(&class, call);
    let skip = if aligned {
        rng.below(4)
    } else {
        calls_to_skip(&class, call, rng)
    };
    let mode = power_loss_mode(call, rng);
    let role = role_of(cluster, node).await;
    let rule = format!("{call}(path=\"{}\")={skip}*off->1*crash", class.glob);
    let alongside = if aligned {
        place_on(cluster, &victims[1..], &rule).await?
    } else {
        Vec::new()
    };
    let within = reach_within(&class, call);
    let reached = place_and_wait(cluster, node, &rule, within).await?;
    let attempt = CrashAttempt::at(
        node,
        role,
        class.name,
        call,
        skip + 1,
        correlation,
        reached.clone(),
    );
    let at_the_same_point = lift(cluster, &alongside).await?;
    let Some(path) = reached else {
        plan.attempts.push(attempt);
        let mut description = format!(
            "crash point `{rule}` ({} {call} #{}) not reached within {} ms",
            class.name,
            skip + 1,
            within.as_millis()
        );
        if !at_the_same_point.is_empty() {
            // Their storage stopped at it: a power loss is what ends that.
            power_cut(cluster, &at_the_same_point, mode, Duration::ZERO).await?;
            let names: Vec<String> = at_the_same_point
                .iter()
                .map(|id| format!("n{id}"))
                .collect();
            description.push_str(&format!(
                " on n{node}; {} reached it, lost power ({mode}) and restarted",
                names.join(" ")
            ));
        }
        return Ok(description);
    };
    // A leader back within the election timeout resumes from its saved vote and nobody else
    // is elected: half the time the nodes stay down long enough for an election, so the crash
    // state meets a new leader (votes, truncations, catch-up).
    let down_for = if rng.below(2) == 0 {
        Duration::from_millis(1200 + rng.below(800))
    } else {
        Duration::ZERO
    };
    let still_running: Vec<usize> = victims[1..]
        .iter()
        .copied()
        .filter(|id| !at_the_same_point.contains(id))
        .collect();
    let frozen = freeze_at_next_write(cluster, &still_running).await?;
    let PowerCut { stopped, log_torn } =
        power_cut_frozen(cluster, &victims, &frozen, mode, down_for).await?;
    let names: Vec<String> = victims
        .iter()
        .map(|id| {
            if at_the_same_point.contains(id) {
                format!("n{id} (at its own {} {call} #{})", class.name, skip + 1)
            } else if stopped.contains(id) {
                format!("n{id} (stopped at its next write)")
            } else {
                format!("n{id}")
            }
        })
        .collect();
    let mut description = format!(
        "crash point: storage stopped after {} {call} #{} ({path}), power loss ({mode}) of {}, restarted{}",
        class.name,
        skip + 1,
        names.join(" "),
        if down_for.is_zero() {
            String::new()
        } else {
            format!(" after {} ms down", down_for.as_millis())
        }
    );
    plan.attempts.push(attempt.clone());
    // A torn record in a log is what recovery repairs most often and checks least: whether
    // the repair reached the disk, or lives only in memory with new records appended behind
    // the damage, shows only at the next recovery. So a node whose log was torn always
    // crashes again once it has written past it.
    if let Some(&torn) = log_torn.iter().find(|&&id| id == node).or(log_torn.first()) {
        let first = CrashAttempt {
            node: torn,
            ..attempt
        };
        after_a_torn_log(cluster, torn, plan, rng, first, &mut description).await?;
        return Ok(description);
    }
    match rng.below(3) {
        0 => {
            crash_while_recovering(cluster, node, plan, rng, mode, attempt, &mut description)
                .await?
        }
        1 => {
            // Soon: the first appends a restarted node takes are where a new leader overwrites
            // the suffix it had and others did not (a truncation). Later: past whatever
            // recovery left.
            let skip = if rng.below(2) == 0 {
                rng.below(4)
            } else {
                10 + rng.below(40)
            };
            let stop = StopAt {
                calls: &["write"],
                skip,
            };
            let torn = crash_once_recovered(
                cluster,
                node,
                plan,
                rng,
                stop,
                attempt.clone(),
                &mut description,
            )
            .await?;
            if torn {
                after_a_torn_log(cluster, node, plan, rng, attempt, &mut description).await?;
            }
        }
        _ => {}
    }
    Ok(description)
}

/// The crash that follows a power loss that tore a write to `node`'s log: right after its
/// second to fourth sync of the log once restarted, so that what it appended behind the damage
/// is durable whatever the power loss drops (a crash after a write alone loses the appends
/// with the power, and the torn record is the tail again), and soon, before a purge deletes
/// the segment. A recovery that left the torn record in the file then meets it in the middle
/// of the log.
async fn after_a_torn_log(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
    first: CrashAttempt,
    description: &mut String,
) -> Result<()> {
    description.push_str(&format!("; n{node}'s log was torn"));
    let stop = StopAt {
        calls: &["fdatasync", "fsync"],
        skip: 1 + rng.below(3),
    };
    crash_once_recovered(cluster, node, plan, rng, stop, first, description).await?;
    Ok(())
}

/// The power loss mode for a crash after `call`. A call that syncs nothing (a write, a
/// truncate, a rename, ...) leaves its effect unsynced, and the state a crash point after it
/// is there for, that effect on the disk, is one a power loss rarely keeps: `drop` is the state
/// of the sync before, `prefix` keeps the newest call only when it keeps everything. So right
/// after a write, half the time it is torn (the state a recovery meets least often and handles
/// worst); right after any other such call, half the time every unsynced call is kept (`keep`,
/// what a crash of the program alone leaves: an in-place rewrite caught truncated, say).
fn power_loss_mode(call: &str, rng: &mut SplitMix64) -> &'static str {
    const ANY: [&str; 5] = ["drop", "torn", "reorder", "prefix", "keep"];
    if matches!(call, "fsync" | "fdatasync") {
        return ANY[rng.below(4) as usize];
    }
    if rng.below(2) == 0 {
        return if call == "write" { "torn" } else { "keep" };
    }
    ANY[rng.below(5) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_walks_every_pair_before_repeating_one() {
        let mut rng = SplitMix64::new(7);
        let mut plan = CrashPlan::new(TARGET_DB_CLASSES, &mut rng);
        let total = TARGET_DB_CLASSES.len() * CALLS.len();
        let seen: BTreeSet<(&str, &str)> = (0..total)
            .map(|_| {
                let (class, call) = plan.next_pair();
                (class.name, call)
            })
            .collect();
        assert_eq!(seen.len(), total);
    }

    #[test]
    fn a_plan_walks_the_calls_that_change_which_files_exist_first() {
        for seed in 1..20 {
            let mut plan = CrashPlan::new(TARGET_DB_CLASSES, &mut SplitMix64::new(seed));
            let namespace = TARGET_DB_CLASSES.len() * plan::NAMESPACE_CALLS.len();
            let order: Vec<&str> = (0..TARGET_DB_CLASSES.len() * CALLS.len())
                .map(|_| plan.next_pair().1)
                .collect();
            assert!(
                order[..namespace]
                    .iter()
                    .all(|call| plan::NAMESPACE_CALLS.contains(call)),
                "seed {seed}: {order:?}"
            );
        }
        let first =
            |seed| CrashPlan::new(TARGET_DB_CLASSES, &mut SplitMix64::new(seed)).next_pair();
        assert!(
            (2..20)
                .any(|seed| first(seed).1 != first(1).1 || first(seed).0.name != first(1).0.name),
            "the order within the group follows the seed"
        );
    }

    #[test]
    fn correlated_victims_are_distinct_and_include_the_node() {
        let mut rng = SplitMix64::new(3);
        for node in 1..=5 {
            for (correlation, count) in [
                (Correlation::Alone, 1),
                (Correlation::Majority, 3),
                (Correlation::All, 5),
            ] {
                let victims = correlated(node, 5, correlation, &mut rng);
                assert_eq!(victims.len(), count);
                assert_eq!(victims[0], node);
                let distinct: BTreeSet<_> = victims.iter().collect();
                assert_eq!(distinct.len(), count);
                assert!(victims.iter().all(|v| (1..=5).contains(v)));
            }
        }
    }

    #[test]
    fn coverage_names_pairs_never_reached() {
        let attempt = |call, reached| CrashAttempt {
            reached,
            ..CrashAttempt::at(1, "leader", "wal", call, 1, Correlation::All, None)
        };
        let coverage = CrashCoverage::of(
            &[
                attempt("fdatasync", true),
                attempt("rename", false),
                attempt("fdatasync", false),
            ],
            vec!["wal fdatasync".into(), "wal rename".into()],
        );
        assert_eq!(coverage.placed, 3);
        assert_eq!(coverage.reached, 1);
        assert_eq!(coverage.covered, ["wal fdatasync leader"]);
        assert_eq!(coverage.never_reached, ["wal rename"]);
        assert_eq!(coverage.correlated, 1);
    }
}
