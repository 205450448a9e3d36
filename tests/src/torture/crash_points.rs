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
use std::{
    collections::BTreeSet,
    ops::ControlFlow,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use fault_rules::SplitMix64;
use serde::Serialize;
use tokio::sync::Mutex;

use super::cluster::{Cluster, json_answer, status};

/// A class of a node's files, by a glob relative to its faultfs mount.
#[derive(Clone, Copy, Debug)]
pub struct FileClass {
    pub name: &'static str,
    pub glob: &'static str,
}

/// target-db's data directory (`db/` on each mount): its log segments (and their directory),
/// its snapshot (and its directory), and what sits at the top (marker files; a call on the
/// wal/ or state/ directory itself, such as its fsync, also counts here).
pub const TARGET_DB_CLASSES: &[FileClass] = &[
    FileClass {
        name: "wal",
        glob: "db/wal/**",
    },
    FileClass {
        name: "snapshot",
        glob: "db/state/**",
    },
    FileClass {
        name: "metadata",
        glob: "db/*",
    },
];

/// etcd's data directory: its WAL (`member/wal`), its snapshots and bbolt database
/// (`member/snap`), and what sits in `member/` (calls on those two directories themselves).
pub const ETCD_CLASSES: &[FileClass] = &[
    FileClass {
        name: "wal",
        glob: "db/member/wal/**",
    },
    FileClass {
        name: "snapshot",
        glob: "db/member/snap/**",
    },
    FileClass {
        name: "metadata",
        glob: "db/member/*",
    },
];

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

/// The seeded walk over every (class, call) pair, and what was placed so far.
pub struct CrashPlan {
    /// The target's classes of files.
    pub classes: &'static [FileClass],
    pairs: Vec<(FileClass, &'static str)>,
    next: usize,
    pub attempts: Vec<CrashAttempt>,
    /// The observer rules on each node's mount (`CALL(path=GLOB)=off`, which only count), by
    /// node, in the order of `pairs`: which pairs a node's database actually makes.
    observers: Vec<Vec<u64>>,
    /// Pairs some node was seen making.
    pub seen: BTreeSet<(&'static str, &'static str)>,
}

impl CrashPlan {
    pub fn new(classes: &'static [FileClass], rng: &mut SplitMix64) -> Self {
        let mut pairs: Vec<(FileClass, &'static str)> = classes
            .iter()
            .flat_map(|class| CALLS.iter().map(move |call| (*class, *call)))
            .collect();
        // Fisher-Yates with the seed: each run covers the pairs in its own order.
        for i in (1..pairs.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            pairs.swap(i, j);
        }
        Self {
            classes,
            pairs,
            next: 0,
            attempts: Vec::new(),
            observers: Vec::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Installs on every node's mount a rule per pair that only counts its calls, so crash
    /// points go where the database actually makes calls (a pair it never makes would only
    /// time out).
    pub async fn observe(&mut self, cluster: &Arc<Mutex<Cluster>>) -> Result<()> {
        let cluster = cluster.lock().await;
        for node in 1..=cluster.nodes.len() {
            let mut ids = Vec::new();
            for (class, call) in &self.pairs {
                ids.push(cluster.add_fault(node, &format!("{call}(path=\"{}\")=off", class.glob))?);
            }
            self.observers.push(ids);
        }
        Ok(())
    }

    /// Reads the observers' counts on `node`: every pair with a call so far is seen.
    fn look(&mut self, faultfs_status: &serde_json::Value) {
        let Some(rules) = faultfs_status["faults"].as_array() else {
            return;
        };
        for (index, (class, call)) in self.pairs.iter().enumerate() {
            let counted = self.observers.iter().any(|ids| {
                rules.iter().any(|rule| {
                    rule["id"].as_u64() == ids.get(index).copied()
                        && rule["calls"].as_u64() > Some(0)
                })
            });
            if counted {
                self.seen.insert((class.name, call));
            }
        }
    }

    /// The next pair to try: a pair seen made (all of them until something is seen), those
    /// never reached first, in the seeded order.
    fn next_pair(&mut self) -> (FileClass, &'static str) {
        if !self.seen.is_empty() {
            let seen = self.seen.clone();
            for _ in 0..self.pairs.len() {
                let pair = self.next_unreached();
                if seen.contains(&(pair.0.name, pair.1)) {
                    return pair;
                }
            }
        }
        self.next_unreached()
    }

    /// A durable call for a catch-up crash point, among the pairs seen made.
    fn catch_up_pair(&self, rng: &mut SplitMix64) -> Option<(FileClass, &'static str)> {
        let candidates: Vec<(FileClass, &'static str)> = self
            .pairs
            .iter()
            .filter(|(class, call)| {
                CATCH_UP_CALLS.contains(call) && self.seen.contains(&(class.name, *call))
            })
            .copied()
            .collect();
        // Half the time one of the snapshot's own calls: installing it is the catch-up's steps
        // (write, sync, rename into place) that the log's purge must not run ahead of.
        let snapshot: Vec<(FileClass, &'static str)> = candidates
            .iter()
            .filter(|(class, _)| class.name == "snapshot")
            .copied()
            .collect();
        let pool = if !snapshot.is_empty() && rng.below(2) == 0 {
            snapshot
        } else {
            candidates
        };
        (!pool.is_empty()).then(|| pool[rng.below(pool.len() as u64) as usize])
    }

    fn next_unreached(&mut self) -> (FileClass, &'static str) {
        let reached: BTreeSet<(&str, &str)> = self
            .attempts
            .iter()
            .filter(|a| a.reached)
            .map(|a| (a.class, a.call))
            .collect();
        for _ in 0..self.pairs.len() {
            let pair = self.pairs[self.next % self.pairs.len()];
            self.next += 1;
            if !reached.contains(&(pair.0.name, pair.1)) {
                return pair;
            }
        }
        let pair = self.pairs[self.next % self.pairs.len()];
        self.next += 1;
        pair
    }
}

/// The log's writes and syncs come by the hundred a second, the other calls a few times a
/// second or less (a snapshot every few seconds on a node that takes them rarely).
fn frequent(class: &FileClass, call: &str) -> bool {
    class.name == "wal" && matches!(call, "write" | "fdatasync")
}

/// How many matching calls to let pass before the crash.
fn calls_to_skip(class: &FileClass, call: &str, rng: &mut SplitMix64) -> u64 {
    rng.below(if frequent(class, call) { 40 } else { 2 })
}

/// How long a crash point may take to be reached: a rare call (a snapshot's) needs seconds.
fn reach_within(class: &FileClass, call: &str) -> Duration {
    if frequent(class, call) {
        REACH_WITHIN
    } else {
        RARE_REACH_WITHIN
    }
}

/// How long a crash point may take to be reached before it is reported as not reached.
const REACH_WITHIN: Duration = Duration::from_millis(2500);
/// The same for a call a node makes a few times a second or less.
const RARE_REACH_WITHIN: Duration = Duration::from_millis(5000);
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
        && let Some(leader) = super::nemesis::leading_now(cluster, None).await
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
    let attempt = CrashAttempt {
        node,
        role,
        class: class.name,
        call,
        nth: skip + 1,
        correlation,
        during_recovery: false,
        after_recovery: false,
        program_crash: false,
        reached: reached.is_some(),
        path: reached.clone(),
    };
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

/// Whether a program crash can be placed at `call`: the program makes it itself (a `write`
/// reaches faultfs from the page cache, on the kernel's schedule).
fn killable(call: &str) -> bool {
    call != "write"
}

/// A crash of the program alone at a call (faultfs `kill`): the node is SIGKILLed as it makes
/// its Kth `call` on `class`, the call is never made, and everything it wrote before stays in
/// the page cache, since the machine keeps running (an OOM kill, a panic, `kill -9`: the most
/// common crash). It shows what no power loss can: a step the program only wrote is on the
/// disk without the step it makes next (a power loss drops the unsynced write with it), so
/// two steps made in the wrong order meet the recovery half done. Half the time a power loss
/// follows the restart, which shows whether the new process made what it read durable before
/// relying on it.
async fn program_crash_point(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    class: FileClass,
    call: &'static str,
    rng: &mut SplitMix64,
) -> Result<String> {
    let skip = calls_to_skip(&class, call, rng);
    let role = role_of(cluster, node).await;
    let within = reach_within(&class, call);
    let rule = format!("{call}(path=\"{}\")={skip}*off->1*kill", class.glob);
    let before = kills_so_far(cluster, node).await?;
    let rule_id = cluster.lock().await.add_fault(node, &rule)?;
    let reached = wait_for_kill(cluster, node, rule_id, before, within).await?;
    plan.attempts.push(CrashAttempt {
        node,
        role,
        class: class.name,
        call,
        nth: skip + 1,
        correlation: Correlation::Alone,
        during_recovery: false,
        after_recovery: false,
        program_crash: true,
        reached: reached.is_some(),
        path: reached.clone(),
    });
    let Some(path) = reached else {
        return Ok(format!(
            "program crash point `{rule}` ({} {call} #{}) not reached within {} ms",
            class.name,
            skip + 1,
            within.as_millis()
        ));
    };
    let killed = format!(
        "program crash: n{node} SIGKILLed as it made its {} {call} #{} ({path}), which was not made; what it wrote before stayed in the page cache; restarted",
        class.name,
        skip + 1
    );
    // Half the time the power goes a moment later. The new process read the page cache as if
    // it were the disk; whatever it then relied on (entries it vouched for, a file it went on
    // appending to) must have been made durable first. PostgreSQL fsyncs its data directory
    // when crash recovery starts for this reason; a database that does not loses writes it
    // acknowledged after the restart.
    if rng.below(2) == 0 {
        return Ok(killed);
    }
    let after = Duration::from_millis(200 + rng.below(1301));
    tokio::time::sleep(after).await;
    cluster.lock().await.power_loss(node, "drop")?;
    Ok(format!(
        "{killed}; {} ms later power loss (drop), restarted",
        after.as_millis()
    ))
}

/// How many processes `node`'s mount has killed so far.
async fn kills_so_far(cluster: &Arc<Mutex<Cluster>>, node: usize) -> Result<u64> {
    let status = cluster.lock().await.faultfs_status(node)?;
    Ok(status["killed"]["count"].as_u64().unwrap_or(0))
}

/// Waits until the `kill` rule `rule_id` on `node`'s mount has killed the node (more kills than
/// `before`) or `within` passes, removes the rule, and restarts the node if it was killed.
/// Returns the file the fatal call was on.
async fn wait_for_kill(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_id: u64,
    before: u64,
    within: Duration,
) -> Result<Option<String>> {
    let path = await_kill(cluster, node, rule_id, before, within).await?;
    if path.is_some() {
        cluster.lock().await.start_node(node)?;
    }
    Ok(path)
}

/// Places the `kill` rule `rule` on `node`'s mount and waits up to `within` for it to kill the
/// node, which then stays down. Returns the file the fatal call was on; None (the rule
/// removed, the node still running) if the call did not come in time.
pub(super) async fn kill_at(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule: &str,
    within: Duration,
) -> Result<Option<String>> {
    let before = kills_so_far(cluster, node).await?;
    let rule_id = cluster.lock().await.add_fault(node, rule)?;
    await_kill(cluster, node, rule_id, before, within).await
}

/// [`wait_for_kill`] without the restart.
async fn await_kill(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_id: u64,
    before: u64,
    within: Duration,
) -> Result<Option<String>> {
    let started = Instant::now();
    while kills_so_far(cluster, node).await? == before && started.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.lock().await.remove_fault(node, rule_id)?;
    // Counted once the rule is gone, so a kill as it was being removed is not missed.
    let status = cluster.lock().await.faultfs_status(node)?;
    if status["killed"]["count"].as_u64().unwrap_or(0) == before {
        return Ok(None);
    }
    let path = status["killed"]["last"]["path"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    // The signal went out before the call's reply: the process is gone or about to be.
    let gone = super::poll::wait_for(
        Duration::from_secs(5),
        Duration::from_millis(10),
        move || async move { cluster.lock().await.reap(node).is_some() },
    )
    .await;
    anyhow::ensure!(
        gone,
        "n{node} still runs 5 s after its faultfs killed it at {path}"
    );
    Ok(Some(path))
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

/// A second crash point while `node` recovers from the first: recovery's own writes (cutting
/// a torn tail, replaying, rewriting metadata) must leave a state the next recovery accepts.
async fn crash_while_recovering(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
    mode: &str,
    first: CrashAttempt,
    description: &mut String,
) -> Result<()> {
    let (class, call) = plan.next_pair();
    let skip = rng.below(3);
    let rule = format!("{call}(path=\"{}\")={skip}*off->1*crash", class.glob);
    let reached = place_and_wait(cluster, node, &rule, REACH_DURING_RECOVERY_WITHIN).await?;
    plan.attempts.push(CrashAttempt {
        class: class.name,
        call,
        nth: skip + 1,
        correlation: Correlation::Alone,
        during_recovery: true,
        reached: reached.is_some(),
        path: reached.clone(),
        role: "recovering".into(),
        ..first
    });
    match reached {
        Some(path) => {
            power_cut(cluster, &[node], mode, Duration::ZERO).await?;
            description.push_str(&format!(
                "; while recovering, stopped again after {} {call} #{} ({path}), power loss ({mode}), restarted",
                class.name,
                skip + 1
            ));
        }
        None => description.push_str(&format!(
            "; a second crash point while recovering ({} {call} #{}) was not reached",
            class.name,
            skip + 1
        )),
    }
    Ok(())
}

/// Where a crash once recovered stops the node's storage: right after its (`skip` + 1)th call
/// to its log of any of `calls` (each call counted on its own).
struct StopAt {
    calls: &'static [&'static str],
    skip: u64,
}

/// A second crash once `node` has recovered and made its log calls `stop` names: what recovery
/// repaired only in memory (a torn tail found but left in the file, a half-done purge) is
/// met by the next recovery, after new records were appended behind it; and the first
/// appends after a restart (a new leader's truncation of the node's old suffix) meet a power
/// loss. Without this, a node often runs to the end of the run on the state its recovery
/// left, and nothing reads it. Returns whether that power loss tore a write to its log.
async fn crash_once_recovered(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
    stop: StopAt,
    first: CrashAttempt,
    description: &mut String,
) -> Result<bool> {
    let rules: Vec<String> = stop
        .calls
        .iter()
        .map(|call| {
            let log = log_class(plan.classes);
            format!("{call}(path=\"{log}\")={}*off->1*crash", stop.skip)
        })
        .collect();
    let reached = place_any_and_wait(cluster, node, &rules, REACH_ONCE_RECOVERED_WITHIN).await?;
    let calls = stop.calls.join(" or ");
    plan.attempts.push(CrashAttempt {
        class: "wal",
        call: reached
            .as_ref()
            .and_then(|point| stop.calls.iter().find(|call| **call == point.op))
            .copied()
            .unwrap_or(stop.calls[0]),
        nth: stop.skip + 1,
        correlation: Correlation::Alone,
        during_recovery: false,
        after_recovery: true,
        reached: reached.is_some(),
        path: reached.as_ref().map(|point| point.path.clone()),
        role: "recovered".into(),
        ..first
    });
    match reached {
        Some(point) => {
            let mode = power_loss_mode(&point.op, rng);
            let torn = power_cut(cluster, &[node], mode, Duration::ZERO).await?;
            description.push_str(&format!(
                "; once recovered, stopped again after its log {} #{} ({}), power loss ({mode}), restarted",
                point.op,
                stop.skip + 1,
                point.path
            ));
            Ok(!torn.is_empty())
        }
        None => {
            description.push_str(&format!(
                "; a second crash point once recovered (log {calls} #{}) was not reached within {} ms",
                stop.skip + 1,
                REACH_ONCE_RECOVERED_WITHIN.as_millis()
            ));
            Ok(false)
        }
    }
}

/// A crash point aimed at an election: the leader is killed, and each other node's storage
/// stops right after its first write to its log from then on, which is the election's (the
/// vote it casts; on a candidate, its own vote). Then every node loses power at that moment,
/// the old leader too, and all restart. A node that reported a vote as durable before it was
/// (an unsynced vote: two votes in one term after a power loss) comes back without it, which
/// the oracles compare with what it reported. Random faults almost never land in the few
/// milliseconds between a vote and the next sync.
async fn election_crash(
    cluster: &Arc<Mutex<Cluster>>,
    leader: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
) -> Result<String> {
    let voters: Vec<usize> = {
        let mut cluster = cluster.lock().await;
        cluster.kill_node(leader);
        (1..=cluster.nodes.len())
            .filter(|&id| id != leader && cluster.running(id))
            .collect()
    };
    let rule = format!("write(path=\"{}\")=1*crash", log_class(plan.classes));
    let mut placed = Vec::new();
    for &voter in &voters {
        placed.push((voter, cluster.lock().await.add_fault(voter, &rule)?));
    }
    let started = Instant::now();
    let mut crashed: Vec<(usize, String)> = Vec::new();
    while crashed.len() < voters.len() && started.elapsed() < REACH_WITHIN {
        for &voter in &voters {
            if crashed.iter().any(|(id, _)| *id == voter) {
                continue;
            }
            let status = cluster.lock().await.faultfs_status(voter)?;
            if let Some(path) = status["crashed"]["path"].as_str() {
                crashed.push((voter, path.to_owned()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (voter, rule_id) in placed {
        cluster.lock().await.remove_fault(voter, rule_id)?;
    }
    for &voter in &voters {
        let path = crashed.iter().find(|(id, _)| *id == voter).map(|(_, p)| p);
        plan.attempts
            .push(voter_attempt(voter, path.is_some(), path.cloned()));
    }
    if crashed.is_empty() {
        cluster.lock().await.start_node(leader)?;
        return Ok(format!(
            "election crash point: leader n{leader} killed, no other node wrote to its log within {} ms; restarted",
            REACH_WITHIN.as_millis()
        ));
    }
    let mode = ["drop", "torn", "reorder", "prefix"][rng.below(4) as usize];
    let mut victims = vec![leader];
    victims.extend(crashed.iter().map(|(id, _)| *id));
    let cut = power_cut_frozen(cluster, &victims, &[], mode, Duration::ZERO).await?;
    let stopped: Vec<String> = crashed
        .iter()
        .map(|(id, path)| format!("n{id} ({path})"))
        .collect();
    let names: Vec<String> = victims.iter().map(|id| format!("n{id}")).collect();
    let mut description = format!(
        "election crash point: leader n{leader} killed; storage stopped after the first log write since on {}; power loss ({mode}) of {}, restarted",
        stopped.join(", "),
        names.join(" ")
    );
    if let Some(&torn) = cut.log_torn.first() {
        let first = voter_attempt(torn, true, None);
        after_a_torn_log(cluster, torn, plan, rng, first, &mut description).await?;
    }
    Ok(description)
}

/// An election crash point's attempt on one voter: stopped at its first log write (the vote).
fn voter_attempt(node: usize, reached: bool, path: Option<String>) -> CrashAttempt {
    CrashAttempt {
        node,
        role: "voter".into(),
        class: "wal",
        call: "write",
        nth: 1,
        correlation: Correlation::All,
        during_recovery: false,
        after_recovery: false,
        program_crash: false,
        reached,
        path,
    }
}

/// The calls a node catching up from a snapshot makes: writing it and the log, syncing them,
/// renaming the snapshot into place.
const CATCH_UP_CALLS: &[&str] = &["write", "fdatasync", "fsync", "rename"];
/// How long the leader gets to compact its log past a stopped follower's last entry.
const COMPACTION_WITHIN: Duration = Duration::from_secs(8);

/// How a follower was kept down by `kill_until_compacted`.
pub struct KeptDown {
    /// The follower's last log index when it was killed.
    pub last: u64,
    /// Whether the leader's log was purged past it in time.
    pub compacted: bool,
    pub for_: Duration,
}

/// Writes a pass of `kill_until_compacted` sends to the leader, to one key of its own outside
/// the workload's (`compaction-filler`), so they touch no checked key.
const FILLER_WRITES: u64 = 20;

/// The filler writes' client id and its next sequence number (one client for the whole run,
/// so its sequence numbers only rise).
const FILLER_CLIENT: u64 = u64::MAX - 1;
static FILLER_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(super) async fn fill_log(client: &reqwest::Client, leader_addr: &str, writes: u64) {
    for _ in 0..writes {
        let seq = FILLER_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = serde_json::json!({"client": FILLER_CLIENT, "seq": seq, "op": "put",
            "key": "compaction-filler", "value": seq.to_string()});
        let request = client
            .post(format!("http://{leader_addr}/kv/write"))
            .json(&body);
        if json_answer(request, Duration::from_millis(500))
            .await
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    }
}

/// Kills `follower` and keeps it down until `leader` has purged its log past the follower's
/// last entry, so that it can only catch up from a snapshot, or until `within` passes.
pub async fn kill_until_compacted(
    cluster: &Arc<Mutex<Cluster>>,
    follower: usize,
    leader: usize,
    within: Duration,
) -> Result<KeptDown> {
    let client = reqwest::Client::new();
    let (follower_addr, leader_addr) = {
        let cluster = cluster.lock().await;
        (
            cluster.nodes[follower - 1].addr.clone(),
            cluster.nodes[leader - 1].addr.clone(),
        )
    };
    let last = status(&client, &follower_addr)
        .await
        .and_then(|s| s["last_log_index"].as_u64())
        .unwrap_or(0);
    cluster.lock().await.kill_node(follower);
    let started = Instant::now();
    let compacted = loop {
        let purged = status(&client, &leader_addr)
            .await
            .and_then(|s| s["purged_index"].as_u64());
        if purged.is_some_and(|purged| purged > last) {
            break true;
        }
        if started.elapsed() >= within {
            break false;
        }
        // The log must grow to the leader's next snapshot: the workload may be slow (a loaded
        // machine) or over (a scenario outlasts the run), so the wait writes too.
        fill_log(&client, &leader_addr, FILLER_WRITES).await;
    };
    Ok(KeptDown {
        last,
        compacted,
        for_: started.elapsed(),
    })
}

/// A crash point aimed at a catch-up from a snapshot (Raft's InstallSnapshot): a follower is
/// stopped until the leader has compacted its log past the follower's last entry, so the
/// leader must send a snapshot, and the follower writes it while it drops the log entries the
/// snapshot replaces. Its storage stops right after one of its first durable calls from its
/// restart on (half the time one of the snapshot's), and it loses power; or, half the time at
/// a call it makes itself, it is SIGKILLed at that call (a program crash). Two durable steps on two files, in an order that matters
/// (the log compacted only once the snapshot holding its entries is on disk), in a window
/// that random faults almost never hit: they strike running nodes.
async fn catch_up_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
) -> Result<String> {
    let follower = super::nemesis::follower_near(cluster, node).await;
    let Some(leader) = super::nemesis::leading_now(cluster, Some(follower)).await else {
        return Ok("catch-up crash point skipped: no leader".into());
    };
    if !cluster.lock().await.running(follower) {
        return Ok(format!("catch-up crash point skipped: n{follower} down"));
    }
    let Some((class, call)) = plan.catch_up_pair(rng) else {
        return Ok("catch-up crash point skipped: no durable call seen yet".into());
    };
    // The log takes a few writes before the snapshot arrives (its head at start, a vote); the
    // snapshot's files see one call of each kind per snapshot.
    let skip = rng.below(if class.name == "wal" { 4 } else { 2 });
    let mode = power_loss_mode(call, rng);
    let program_crash = killable(call) && rng.below(2) == 0;
    let KeptDown {
        last,
        compacted,
        for_,
    } = kill_until_compacted(cluster, follower, leader, COMPACTION_WITHIN).await?;
    let down_ms = for_.as_millis();
    let action = if program_crash { "kill" } else { "crash" };
    let rule = format!("{call}(path=\"{}\")={skip}*off->1*{action}", class.glob);
    let kills_before = kills_so_far(cluster, follower).await?;
    let rule_id = {
        let mut cluster = cluster.lock().await;
        let rule_id = cluster.add_fault(follower, &rule)?;
        cluster.start_node(follower)?;
        rule_id
    };
    let reached = if program_crash {
        wait_for_kill(
            cluster,
            follower,
            rule_id,
            kills_before,
            REACH_ONCE_RECOVERED_WITHIN,
        )
        .await?
    } else {
        wait_for_crash(cluster, follower, rule_id, REACH_ONCE_RECOVERED_WITHIN).await?
    };
    plan.attempts.push(CrashAttempt {
        node: follower,
        role: "catching up".into(),
        class: class.name,
        call,
        nth: skip + 1,
        correlation: Correlation::Alone,
        during_recovery: false,
        after_recovery: false,
        program_crash,
        reached: reached.is_some(),
        path: reached.clone(),
    });
    let how = if compacted {
        format!(
            "down {down_ms} ms until n{leader} had compacted its log past n{follower}'s last entry ({last})"
        )
    } else {
        format!(
            "down {down_ms} ms, but n{leader} had not compacted its log past n{follower}'s last entry ({last}): it caught up by appends"
        )
    };
    let Some(path) = reached else {
        return Ok(format!(
            "catch-up crash point: n{follower} {how}; restarted, and its {} {call} #{} was not reached within {} ms",
            class.name,
            skip + 1,
            REACH_ONCE_RECOVERED_WITHIN.as_millis()
        ));
    };
    if program_crash {
        return Ok(format!(
            "catch-up crash point: n{follower} {how}; restarted, SIGKILLed as it made its {} {call} #{} ({path}), which was not made (no power loss), restarted",
            class.name,
            skip + 1
        ));
    }
    power_cut(cluster, &[follower], mode, Duration::ZERO).await?;
    Ok(format!(
        "catch-up crash point: n{follower} {how}; restarted, storage stopped after its {} {call} #{} ({path}), power loss ({mode}), restarted",
        class.name,
        skip + 1
    ))
}

/// Adds the crash rule on the mounts of the running `nodes` (not waiting for it): returns the
/// rules, for `lift`.
async fn place_on(
    cluster: &Arc<Mutex<Cluster>>,
    nodes: &[usize],
    rule: &str,
) -> Result<Vec<(usize, u64)>> {
    let cluster = cluster.lock().await;
    let mut placed = Vec::new();
    for &id in nodes {
        if cluster.running(id) {
            placed.push((id, cluster.add_fault(id, rule)?));
        }
    }
    Ok(placed)
}

/// Removes rules placed by `place_on`; returns the nodes whose storage had stopped at them.
async fn lift(cluster: &Arc<Mutex<Cluster>>, placed: &[(usize, u64)]) -> Result<Vec<usize>> {
    let cluster = cluster.lock().await;
    let mut stopped = Vec::new();
    for &(id, rule) in placed {
        if !cluster.faultfs_status(id)?["crashed"].is_null() {
            stopped.push(id);
        }
        cluster.remove_fault(id, rule)?;
    }
    Ok(stopped)
}

/// Adds the crash rule on `node`'s mount and waits until its storage stops at it (returns the
/// file the crashing call was on) or `within` passes (the rule is removed either way).
async fn place_and_wait(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule: &str,
    within: Duration,
) -> Result<Option<String>> {
    let rule_id = cluster.lock().await.add_fault(node, rule)?;
    wait_for_crash(cluster, node, rule_id, within).await
}

/// Adds the crash rules on `node`'s mount and waits until its storage stops at one of them
/// (returns the call and file it stopped after) or `within` passes; the rules are removed
/// either way.
async fn place_any_and_wait(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rules: &[String],
    within: Duration,
) -> Result<Option<StoppedAt>> {
    let mut rule_ids = Vec::new();
    for rule in rules {
        let added = cluster.lock().await.add_fault(node, rule);
        match added {
            Ok(id) => rule_ids.push(id),
            Err(error) => {
                let cluster = cluster.lock().await;
                for id in rule_ids {
                    cluster.remove_fault(node, id)?;
                }
                return Err(error);
            }
        }
    }
    wait_for_any_crash(cluster, node, &rule_ids, within).await
}

/// Where a node's storage stopped: the call and the file it was on.
struct StoppedAt {
    op: String,
    path: String,
}

/// Waits until `node`'s storage stops at the crash rule `rule_id` (returns the file the crashing
/// call was on) or `within` passes, then removes the rule.
pub async fn wait_for_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_id: u64,
    within: Duration,
) -> Result<Option<String>> {
    let reached = wait_for_any_crash(cluster, node, &[rule_id], within).await?;
    Ok(reached.map(|point| point.path))
}

/// Waits until `node`'s storage stops at one of the crash rules `rule_ids` or `within` passes,
/// then removes them.
async fn wait_for_any_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_ids: &[u64],
    within: Duration,
) -> Result<Option<StoppedAt>> {
    let reached = super::poll::poll_until(within, Duration::from_millis(10), move || async move {
        let status = match cluster.lock().await.faultfs_status(node) {
            Ok(status) => status,
            Err(error) => return ControlFlow::Break(Err(error)),
        };
        match status["crashed"]["path"].as_str() {
            Some(path) => ControlFlow::Break(Ok(StoppedAt {
                op: status["crashed"]["op"]
                    .as_str()
                    .unwrap_or("call")
                    .to_owned(),
                path: path.to_owned(),
            })),
            None => ControlFlow::Continue(()),
        }
    })
    .await
    .ok()
    .transpose()?;
    let cluster = cluster.lock().await;
    for &rule_id in rule_ids {
        cluster.remove_fault(node, rule_id)?;
    }
    Ok(reached)
}

/// `node` and, for a correlated crash, the next nodes round the ring up to a majority or all.
fn correlated(
    node: usize,
    size: usize,
    correlation: Correlation,
    rng: &mut SplitMix64,
) -> Vec<usize> {
    let count = match correlation {
        Correlation::Alone => 1,
        Correlation::Majority => size / 2 + 1,
        Correlation::All => size,
    };
    // Which majority: the seed picks where round the ring the others start.
    let offset = 1 + rng.below(size as u64) as usize;
    let mut victims = vec![node];
    let mut next = node - 1 + offset;
    while victims.len() < count {
        let id = 1 + next % size;
        if !victims.contains(&id) {
            victims.push(id);
        }
        next += 1;
    }
    victims
}

/// The rule that stops a node's storage right after its next write to its data directory.
const FREEZE_RULE: &str = "write(path=\"db/**\")=1*crash";

/// Stops the storage of the running `nodes` right after each one's next write to its data
/// directory (a log append, mostly, caught before its fsync), so the nodes that lose power with
/// a crash point lose what each had in flight at that moment, as in a real correlated crash
/// (PACE), instead of syncing it in the seconds the harness takes to cut the power. Returns the
/// rules, which `power_cut_frozen` removes.
async fn freeze_at_next_write(
    cluster: &Arc<Mutex<Cluster>>,
    nodes: &[usize],
) -> Result<Vec<(usize, u64)>> {
    place_on(cluster, nodes, FREEZE_RULE).await
}

/// Every victim killed first (so none writes on after another lost power), then each one's
/// unsynced data lost in `mode`, then, after `down_for`, each restarted.
pub async fn power_cut(
    cluster: &Arc<Mutex<Cluster>>,
    victims: &[usize],
    mode: &str,
    down_for: Duration,
) -> Result<Vec<usize>> {
    Ok(power_cut_frozen(cluster, victims, &[], mode, down_for)
        .await?
        .log_torn)
}

/// Every victim loses power in `mode` while `writes` run, each right after its next write to its
/// log (the storage stops there until the cut, as at a crash point), so each loses a record it
/// had in flight, unsynced: what a real power cut under load leaves, and the only way a `torn`
/// cut tears a record. Then they restart, and `writes` finish against the restarted nodes
/// before this returns. Returns the nodes whose log a write was torn in, and what `writes`
/// returned.
pub async fn power_cut_mid_write<F>(
    cluster: &Arc<Mutex<Cluster>>,
    victims: &[usize],
    mode: &str,
    writes: F,
) -> Result<(PowerCut, F::Output)>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let log = cluster.lock().await.target.log_glob();
    let rule = format!("write(path=\"{log}\")=1*crash");
    let frozen = place_on(cluster, victims, &rule).await?;
    let writes = tokio::spawn(writes);
    let started = Instant::now();
    while started.elapsed() < REACH_WITHIN {
        let mut stopped = 0;
        for &(id, _) in &frozen {
            if !cluster.lock().await.faultfs_status(id)?["crashed"].is_null() {
                stopped += 1;
            }
        }
        if stopped == frozen.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut = power_cut_frozen(cluster, victims, &frozen, mode, Duration::ZERO).await?;
    let written = writes.await?;
    Ok((cut, written))
}

/// What a `power_cut_frozen` did.
pub struct PowerCut {
    /// The frozen victims whose storage had stopped by then.
    pub stopped: Vec<usize>,
    /// The victims a write to their log was torn on: their recovery meets a torn record.
    pub log_torn: Vec<usize>,
}

/// `power_cut`, for victims frozen by `freeze_at_next_write`: their rules are removed before
/// they are killed (one that never fired must not stop the restarted node).
async fn power_cut_frozen(
    cluster: &Arc<Mutex<Cluster>>,
    victims: &[usize],
    frozen: &[(usize, u64)],
    mode: &str,
    down_for: Duration,
) -> Result<PowerCut> {
    let rounds = cluster.lock().await.status_rounds.clone();
    seen_by_the_oracles(rounds).await;
    let mut stopped = Vec::new();
    let mut log_torn = Vec::new();
    {
        let mut cluster = cluster.lock().await;
        for &(id, rule) in frozen {
            if !cluster.faultfs_status(id)?["crashed"].is_null() {
                stopped.push(id);
            }
            cluster.remove_fault(id, rule)?;
        }
        for &id in victims {
            cluster.kill_node(id);
        }
        for &id in victims {
            let torn = cluster.lose_power(id, mode)?;
            let log = cluster.target.log_glob();
            if torn.iter().any(|file| in_the_log(file, &log)) {
                log_torn.push(id);
            }
        }
    }
    tokio::time::sleep(down_for).await;
    let mut cluster = cluster.lock().await;
    for &id in victims {
        cluster.start_node(id)?;
    }
    Ok(PowerCut { stopped, log_torn })
}

/// Whether a path on a node's mount is one of its log's files (`log`: the target's log glob).
fn in_the_log(path: &str, log: &str) -> bool {
    path.starts_with(log.trim_end_matches('*'))
}

/// Waits for one whole round of /status polls that started after the call: what a node
/// reported in the crashed state (its storage stopped, its process still answering) is then
/// known to the oracles, which hold it to that after its restart. At most 2 s (a node that
/// does not answer slows a round down), and not at all outside a run.
async fn seen_by_the_oracles(rounds: Option<tokio::sync::watch::Receiver<u64>>) {
    let Some(mut rounds) = rounds else {
        return;
    };
    let now = *rounds.borrow_and_update();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        rounds.wait_for(|&count| count >= now + 2),
    )
    .await;
}

async fn role_of(cluster: &Arc<Mutex<Cluster>>, node: usize) -> String {
    let (target, addr) = {
        let cluster = cluster.lock().await;
        (cluster.target.clone(), cluster.nodes[node - 1].addr.clone())
    };
    let client = reqwest::Client::new();
    target
        .status(&client, &addr)
        .await
        .and_then(|s| s["state"].as_str().map(str::to_lowercase))
        .unwrap_or_else(|| "unknown".into())
}

/// What the report says about the crash points of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CrashCoverage {
    pub placed: usize,
    pub reached: usize,
    /// `class call role` for each point reached (role: leader, follower, candidate, recovering).
    pub covered: Vec<String>,
    /// `class call` pairs placed and never reached.
    pub never_reached: Vec<String>,
    pub correlated: usize,
    pub during_recovery: usize,
    /// Reached second crashes once a node had recovered and written again.
    pub after_recovery: usize,
    /// Reached crashes of the program alone (no power loss).
    pub program_crashes: usize,
    /// `class call` pairs the nodes were seen making.
    pub seen: Vec<String>,
    pub attempts: Vec<CrashAttempt>,
}

impl CrashCoverage {
    pub fn of(attempts: &[CrashAttempt], seen: Vec<String>) -> Self {
        let covered: BTreeSet<String> = attempts
            .iter()
            .filter(|a| a.reached)
            .map(|a| format!("{} {} {}", a.class, a.call, a.role))
            .collect();
        let reached_pairs: BTreeSet<(&str, &str)> = attempts
            .iter()
            .filter(|a| a.reached)
            .map(|a| (a.class, a.call))
            .collect();
        let never: BTreeSet<String> = attempts
            .iter()
            .filter(|a| !reached_pairs.contains(&(a.class, a.call)))
            .map(|a| format!("{} {}", a.class, a.call))
            .collect();
        Self {
            placed: attempts.len(),
            reached: attempts.iter().filter(|a| a.reached).count(),
            covered: covered.into_iter().collect(),
            never_reached: never.into_iter().collect(),
            correlated: attempts
                .iter()
                .filter(|a| a.reached && a.correlation != Correlation::Alone)
                .count(),
            during_recovery: attempts
                .iter()
                .filter(|a| a.reached && a.during_recovery)
                .count(),
            after_recovery: attempts
                .iter()
                .filter(|a| a.reached && a.after_recovery)
                .count(),
            program_crashes: attempts
                .iter()
                .filter(|a| a.reached && a.program_crash)
                .count(),
            seen,
            attempts: attempts.to_vec(),
        }
    }
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
            node: 1,
            role: "leader".into(),
            class: "wal",
            call,
            nth: 1,
            correlation: Correlation::All,
            during_recovery: false,
            after_recovery: false,
            program_crash: false,
            reached,
            path: None,
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
