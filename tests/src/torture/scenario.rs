//! Named scenarios: short deterministic fault scripts instead of the random nemesis, each a
//! classic way a replicated store loses data. Every step is logged as a fault in the history.
use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::{Context, Result, ensure};
use tokio::sync::Mutex;

use super::{
    cluster::{Cluster, Cut},
    crash_points,
    nemesis::{attach_to_wal, leading_now, with_fault_rule},
    workload::Recorder,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Kill the leader while clients write; restart it; nothing acknowledged may be lost.
    LeaderFailureDataConsistency,
    /// Isolate one follower: the majority keeps serving, the follower catches up after.
    PartitionMinority,
    /// Isolate the leader: the majority elects another; the old leader must not commit alone.
    PartitionMajority,
    /// Kill a follower long enough for the log to be purged past it; it rejoins from a snapshot.
    NodeRejoin,
    /// Every node loses power at once (torn writes), then all restart.
    PowerLossAll,
    /// Five nodes: two followers killed, then a third, so no quorum is left (writes must fail or
    /// stay unknown), then all restarted.
    MultipleFailures,
    /// The leader cut off, then killed while entries it accepted cannot commit; after healing
    /// they must not appear (no phantom, no duplicate).
    UncommittedEntries,
    /// The leader killed four times in a row; each time it is restarted as soon as another node
    /// is elected, and that one is the next to die.
    RapidLeaderChanges,
    /// The leader and a follower killed at the same moment (3 nodes: no quorum), both restarted.
    ConcurrentFailures,
    /// The leader cut off (a new one is elected), then the new leader cut off as the old one
    /// comes back: two nodes have each believed they lead; one history must come out.
    SplitBrainRecovery,
    /// The leader's disk made slow so many writes are in flight, then the leader killed.
    LeaderFailureUnderLoad,
    /// A follower killed, its unsynced state lost to a power loss while it is down, restarted:
    /// it recovers from its own disk and catches up.
    FollowerRecovery,
    /// A follower down long enough to need a snapshot, restarted; once caught up, it loses power,
    /// so it must recover from the snapshot it installed.
    SnapshotAfterFailure,
    /// The leader loses power in torn mode mid-append: the torn tail of its WAL is cut at restart.
    TornWalTail,
    /// The leader's WAL fdatasyncs fail as Linux fails them (EIO, dirty pages dropped), then it
    /// loses power.
    Fsyncgate,
    /// A follower killed inside a WAL fdatasync (injector), the record it was syncing silently
    /// corrupted (a put's key changed, the record still parses), then restarted: only the CRC
    /// tells the damage, so a database that skips it diverges.
    WalBitrot,
    /// A follower down until the leader's log is purged past it, so it catches up from a
    /// snapshot; its storage stops as it renames the received snapshot into place, and it loses
    /// power: the log it had must still be there (the snapshot never made it to disk).
    SnapshotInstallCrash,
    /// A follower killed as it fsyncs its log's directory in a rotation, so the new log file is
    /// named in the page cache only; restarted with its directory fsyncs failing, it catches
    /// up, then loses power: what it recovered and relied on must have been made durable.
    KilledMidRotation,
}

pub const NAMES: &[&str] = &[
    "leader-failure-data-consistency",
    "partition-minority",
    "partition-majority",
    "node-rejoin",
    "power-loss-all",
    "multiple-failures",
    "uncommitted-entries",
    "rapid-leader-changes",
    "concurrent-failures",
    "split-brain-recovery",
    "leader-failure-under-load",
    "follower-recovery",
    "snapshot-after-failure",
    "torn-wal-tail",
    "fsyncgate",
    "wal-bitrot",
    "snapshot-install-crash",
    "killed-mid-rotation",
];

const ALL: [Scenario; 18] = [
    Scenario::LeaderFailureDataConsistency,
    Scenario::PartitionMinority,
    Scenario::PartitionMajority,
    Scenario::NodeRejoin,
    Scenario::PowerLossAll,
    Scenario::MultipleFailures,
    Scenario::UncommittedEntries,
    Scenario::RapidLeaderChanges,
    Scenario::ConcurrentFailures,
    Scenario::SplitBrainRecovery,
    Scenario::LeaderFailureUnderLoad,
    Scenario::FollowerRecovery,
    Scenario::SnapshotAfterFailure,
    Scenario::TornWalTail,
    Scenario::Fsyncgate,
    Scenario::WalBitrot,
    Scenario::SnapshotInstallCrash,
    Scenario::KilledMidRotation,
];

impl Scenario {
    pub fn name(self) -> &'static str {
        NAMES[ALL
            .iter()
            .position(|&s| s == self)
            .expect("every scenario is in ALL")]
    }

    /// Why the script works only on target-db, if it does: it reads target-db's log records or
    /// its status's compaction fields.
    pub fn needs_target_db(self) -> Option<&'static str> {
        match self {
            Scenario::WalBitrot => Some("it rewrites a record in target-db's log format"),
            Scenario::SnapshotInstallCrash => {
                Some("it waits for target-db's status to say the log was compacted")
            }
            _ => None,
        }
    }

    /// The smallest cluster the script makes sense on.
    pub fn min_nodes(self) -> usize {
        if self == Scenario::MultipleFailures {
            5
        } else {
            3
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .position(|&name| name == text)
            .map(|i| ALL[i])
            .ok_or_else(|| {
                format!(
                    "unknown scenario `{text}`: choose from {}",
                    NAMES.join(", ")
                )
            })
    }
}

/// The node that says it is the leader, other than `not`, polled for up to 10 s.
async fn leader_other_than(cluster: &Arc<Mutex<Cluster>>, not: Option<usize>) -> Result<usize> {
    for _ in 0..100 {
        if let Some(leader) = leading_now(cluster, not).await {
            return Ok(leader);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None.context("no leader to aim the scenario at")
}

async fn leader(cluster: &Arc<Mutex<Cluster>>) -> Result<usize> {
    leader_other_than(cluster, None).await
}

fn follower(cluster_size: usize, leader: usize) -> usize {
    (1..=cluster_size)
        .find(|&id| id != leader)
        .expect("a cluster has more than one node")
}

fn pause(ms: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(ms))
}

/// Logs the steps of a script as faults, each from its start to when the next one is logged.
struct Steps<'a> {
    recorder: &'a Recorder,
    scenario: &'static str,
    count: u64,
}

impl Steps<'_> {
    fn log(&mut self, start: u64, node: usize, what: impl Into<String>) {
        self.recorder
            .fault_since(start, format!("n{node}"), self.scenario, what.into());
        self.count += 1;
    }
}

async fn partition(cluster: &Arc<Mutex<Cluster>>, node: usize, seconds: u64) -> Result<()> {
    let mut command = {
        let cluster = cluster.lock().await;
        let cut = Cut::isolate(node, cluster.nodes.len());
        cluster.partition_command(&cut, Duration::from_secs(seconds))
    };
    let status = tokio::task::spawn_blocking(move || command.status()).await??;
    ensure!(status.success(), "injector partition failed: {status}");
    Ok(())
}

/// Runs the script once, logging each step; returns how many steps it applied.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    scenario: Scenario,
    recorder: Recorder,
) -> Result<u64> {
    let (size, log) = {
        let cluster = cluster.lock().await;
        (cluster.nodes.len(), cluster.target.log_glob())
    };
    ensure!(
        size >= scenario.min_nodes(),
        "{} needs {} nodes: add --nodes {}",
        scenario.name(),
        scenario.min_nodes(),
        scenario.min_nodes()
    );
    let mut steps = Steps {
        recorder: &recorder,
        scenario: scenario.name(),
        count: 0,
    };
    pause(1500).await;
    let start = recorder.now();
    match scenario {
        Scenario::LeaderFailureDataConsistency => {
            let leader = leader(&cluster).await?;
            cluster.lock().await.kill_node(leader);
            pause(3000).await;
            cluster.lock().await.start_node(leader)?;
            steps.log(start, leader, "leader SIGKILLed, restarted after 3 s");
        }
        Scenario::PartitionMinority | Scenario::PartitionMajority => {
            let leader = leader(&cluster).await?;
            let isolated = if scenario == Scenario::PartitionMajority {
                leader
            } else {
                follower(size, leader)
            };
            partition(&cluster, isolated, 4).await?;
            let what = if isolated == leader {
                "the leader isolated for 4 s"
            } else {
                "a follower isolated for 4 s"
            };
            steps.log(start, isolated, what);
        }
        Scenario::NodeRejoin => {
            let leader = leader(&cluster).await?;
            let lagging = follower(size, leader);
            cluster.lock().await.kill_node(lagging);
            pause(5000).await;
            cluster.lock().await.start_node(lagging)?;
            steps.log(
                start,
                lagging,
                "follower down for 5 s while writes went on, restarted",
            );
        }
        Scenario::MultipleFailures => {
            let leader = leader(&cluster).await?;
            let followers: Vec<usize> = (1..=size).filter(|&id| id != leader).collect();
            for &id in &followers[..2] {
                cluster.lock().await.kill_node(id);
            }
            steps.log(start, followers[0], "two followers SIGKILLed");
            pause(2000).await;
            // Two of five left: no quorum, so nothing can commit.
            let start = recorder.now();
            cluster.lock().await.kill_node(followers[2]);
            pause(3000).await;
            let mut cluster = cluster.lock().await;
            for &id in &followers[..3] {
                cluster.start_node(id)?;
            }
            steps.log(
                start,
                followers[2],
                "a third follower SIGKILLed (no quorum for 3 s), all restarted",
            );
        }
        Scenario::UncommittedEntries => {
            let leader = leader(&cluster).await?;
            let cut = partition(&cluster, leader, 4);
            let kill = async {
                // While cut off, the leader accepts writes it can never commit; then it dies.
                pause(2000).await;
                cluster.lock().await.kill_node(leader);
            };
            let (cut, ()) = tokio::join!(cut, kill);
            cut?;
            cluster.lock().await.start_node(leader)?;
            steps.log(
                start,
                leader,
                "leader cut off, killed with uncommitted entries, restarted after healing",
            );
        }
        Scenario::PowerLossAll => {
            let mut cluster = cluster.lock().await;
            for id in 1..=size {
                cluster.kill_node(id);
            }
            for id in 1..=size {
                cluster.power_loss(id, "torn")?;
            }
            steps.log(start, 1, "power loss of every node (torn), restarted");
        }
        Scenario::RapidLeaderChanges => {
            for round in 1..=4 {
                let start = recorder.now();
                let leader = leader(&cluster).await?;
                cluster.lock().await.kill_node(leader);
                // Restarted only once another node leads, so every round is a real change.
                let next = leader_other_than(&cluster, Some(leader)).await?;
                cluster.lock().await.start_node(leader)?;
                steps.log(
                    start,
                    leader,
                    format!(
                        "leader change {round} of 4: leader SIGKILLed, n{next} elected, restarted"
                    ),
                );
            }
        }
        Scenario::ConcurrentFailures => {
            let leader = leader(&cluster).await?;
            let other = follower(size, leader);
            {
                let mut cluster = cluster.lock().await;
                cluster.kill_node(leader);
                cluster.kill_node(other);
            }
            pause(3000).await;
            let mut cluster = cluster.lock().await;
            cluster.start_node(leader)?;
            cluster.start_node(other)?;
            steps.log(
                start,
                leader,
                format!("leader and follower n{other} SIGKILLed together, restarted after 3 s"),
            );
        }
        Scenario::SplitBrainRecovery => {
            let old = leader(&cluster).await?;
            let first = partition(&cluster, old, 4);
            let second = async {
                // Once the majority has a new leader, cut that one off too, while the old
                // leader's partition heals.
                let new = leader_other_than(&cluster, Some(old)).await?;
                let start = recorder.now();
                partition(&cluster, new, 4).await?;
                Ok::<_, anyhow::Error>((new, start))
            };
            let (first, second) = tokio::join!(first, second);
            first?;
            let (new, second_start) = second?;
            steps.log(start, old, "the leader isolated for 4 s");
            steps.log(
                second_start,
                new,
                "the leader elected meanwhile isolated for 4 s",
            );
        }
        Scenario::LeaderFailureUnderLoad => {
            let leader = leader(&cluster).await?;
            let rule = format!(r#"fdatasync(path="{log}")=delay(200)"#);
            let slow = with_fault_rule(&cluster, leader, &rule, Duration::from_secs(2));
            let kill = async {
                pause(1000).await;
                cluster.lock().await.kill_node(leader);
            };
            let (slow, ()) = tokio::join!(slow, kill);
            slow?;
            cluster.lock().await.start_node(leader)?;
            steps.log(
                start,
                leader,
                "leader's WAL fdatasync 200 ms slower, leader SIGKILLed 1 s in, restarted",
            );
        }
        Scenario::FollowerRecovery => {
            let leader = leader(&cluster).await?;
            let node = follower(size, leader);
            cluster.lock().await.kill_node(node);
            pause(2000).await;
            cluster.lock().await.power_loss(node, "drop")?;
            steps.log(
                start,
                node,
                "follower SIGKILLed, down 2 s, power loss (drop), restarted",
            );
        }
        Scenario::SnapshotAfterFailure => {
            let leader = leader(&cluster).await?;
            let node = follower(size, leader);
            cluster.lock().await.kill_node(node);
            pause(5000).await;
            cluster.lock().await.start_node(node)?;
            steps.log(start, node, "follower down 5 s, restarted");
            // The harness makes a snapshot every 500 entries: 5 s of writes is many more.
            let start = recorder.now();
            pause(3000).await;
            cluster.lock().await.power_loss(node, "drop")?;
            steps.log(
                start,
                node,
                "3 s after it rejoined: power loss (drop), restarted",
            );
        }
        Scenario::TornWalTail => {
            let leader = leader(&cluster).await?;
            cluster.lock().await.power_loss(leader, "torn")?;
            steps.log(
                start,
                leader,
                "leader lost power mid-append (torn), restarted",
            );
        }
        Scenario::Fsyncgate => {
            let leader = leader(&cluster).await?;
            with_fault_rule(
                &cluster,
                leader,
                &format!(r#"fdatasync(path="{log}")=fsyncgate"#),
                Duration::from_secs(2),
            )
            .await?;
            cluster.lock().await.power_loss(leader, "drop")?;
            steps.log(
                start,
                leader,
                "leader's WAL fdatasync failed as on Linux (fsyncgate) for 2 s, then power loss",
            );
        }
        Scenario::KilledMidRotation => {
            let leader = leader(&cluster).await?;
            let node = follower(size, leader);
            let log_dir = cluster.lock().await.target.log_dir();
            let kill = format!(r#"fsync(path="{log_dir}")=kill"#);
            let killed = crash_points::kill_at(&cluster, node, &kill, Duration::from_secs(20))
                .await?
                .with_context(|| {
                    format!("n{node} made no fsync of {log_dir} in 20 s: give it smaller log files")
                })?;
            let failing = format!(r#"fsync(path="{log_dir}")=error(EIO)"#);
            let rule = {
                let mut cluster = cluster.lock().await;
                let rule = cluster.add_fault(node, &failing)?;
                cluster.start_node(node)?;
                rule
            };
            pause(3000).await;
            let mut cluster = cluster.lock().await;
            cluster.remove_fault(node, rule)?;
            cluster.power_loss(node, "drop")?;
            steps.log(
                start,
                node,
                format!(
                    "follower SIGKILLed at its fsync of {killed}, restarted with that directory's fsyncs failing; 3 s later power loss (drop), restarted"
                ),
            );
        }
        Scenario::WalBitrot => {
            let leader = leader(&cluster).await?;
            let node = follower(size, leader);
            let what = rot_an_unacknowledged_record(&cluster, node, BITROT_TRIES).await?;
            steps.log(start, node, what);
        }
        Scenario::SnapshotInstallCrash => {
            let leader = leader(&cluster).await?;
            let node = follower(size, leader);
            // Down until the leader's log no longer holds what the follower lacks (a fixed 5 s
            // was too short on a loaded machine: the follower then caught up by appends).
            let down =
                crash_points::kill_until_compacted(&cluster, node, leader, COMPACTION_WITHIN)
                    .await?;
            anyhow::ensure!(
                down.compacted,
                "n{leader} did not compact its log past n{node}'s last entry ({}) within {} s",
                down.last,
                COMPACTION_WITHIN.as_secs()
            );
            // Armed before the restart: the install begins as soon as the leader reaches it.
            let rule_id = cluster
                .lock()
                .await
                .add_fault(node, r#"rename(path="db/state/**")=1*crash"#)?;
            cluster.lock().await.start_node(node)?;
            let reached =
                crash_points::wait_for_crash(&cluster, node, rule_id, Duration::from_secs(10))
                    .await?;
            let path = reached.with_context(|| {
                format!("n{node} renamed no snapshot into place within 10 s of its restart")
            })?;
            crash_points::power_cut(&cluster, &[node], "drop", Duration::ZERO).await?;
            steps.log(
                start,
                node,
                format!(
                    "follower down {} ms, until the leader compacted its log past it; \
                     restarted; storage stopped as it renamed the snapshot it received \
                     ({path}), power loss (drop), restarted",
                    down.for_.as_millis()
                ),
            );
        }
    }
    Ok(steps.count)
}

/// How long snapshot-install-crash waits for the leader to compact its log past the follower.
const COMPACTION_WITHIN: Duration = Duration::from_secs(60);

/// How long an attempt to kill the node in a WAL fdatasync lasts: the injector starts, then the
/// node must make a few fdatasyncs (2 s was often too short on a loaded machine: a flakes
/// campaign saw 30 attempts in a row end without a kill).
const KILL_WITHIN: Duration = Duration::from_secs(6);

/// How long a restarted node gets to open its write-ahead log before a try to rot it.
const LOG_OPEN_WITHIN: Duration = Duration::from_secs(10);

/// How often wal-bitrot kills the follower in a WAL fdatasync, at most, to find a put at the tail.
const BITROT_TRIES: usize = 30;

/// Kills `node` inside a WAL fdatasync (injector), so the record it was syncing is on disk but
/// nobody acknowledged it, and silently corrupts that record if it holds a put (its key changed:
/// only the CRC tells), then restarts it; up to `tries` times until a put is at the tail. About
/// half of those records are entries with a put (the others commit points), fewer on a loaded
/// machine: 8 tries once missed them all in CI. Returns what was done.
pub async fn rot_an_unacknowledged_record(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    tries: usize,
) -> Result<String> {
    let mut rotted = None;
    let (mut kills, mut attempts) = (0, 0);
    // An attempt in which the node made too few fdatasyncs to be killed (a loaded machine)
    // is not a try; a bounded number of them.
    while kills < tries && attempts < 3 * tries {
        attempts += 1;
        // Each try lets a different number of fdatasyncs pass first, never fewer than two:
        // right after a restart the first ones are always the same kinds of record (the head
        // a start writes, a commit point while catching up), so killing at them every time
        // could miss puts for good.
        let skip = 2 + (attempts - 1) % 4;
        // A node restarted by the try before may not have opened its log yet (on a loaded
        // machine that took longer than the pause between tries, and the scenario then
        // rotted nothing): wait for it while it runs.
        let opened_by = std::time::Instant::now() + LOG_OPEN_WITHIN;
        // The node must append while the injector waits for its fdatasyncs: the workload may
        // crawl (a loaded machine) or be over (a scenario outlasts the run), so the harness
        // writes to the leader itself meanwhile.
        let filler = match super::nemesis::leading_now(cluster, Some(node)).await {
            Some(leader) => {
                let addr = cluster.lock().await.nodes[leader - 1].addr.clone();
                Some(tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let until = std::time::Instant::now() + KILL_WITHIN + LOG_OPEN_WITHIN;
                    while std::time::Instant::now() < until {
                        super::crash_points::fill_log(&client, &addr, 5).await;
                        pause(20).await;
                    }
                }))
            }
            None => None,
        };
        let attached = loop {
            let attached = attach_to_wal(cluster, node, KILL_WITHIN, |fd| {
                format!("fdatasync(fd={fd})={skip}*off->1*kill")
            })
            .await?;
            if attached.is_some()
                || std::time::Instant::now() >= opened_by
                || !cluster.lock().await.running(node)
            {
                break attached;
            }
            pause(50).await;
        };
        if let Some(filler) = filler {
            filler.abort();
        }
        if attached.is_none() {
            return Ok(format!(
                "bitrot skipped: n{node} down, or its log not open within {} s",
                LOG_OPEN_WITHIN.as_secs()
            ));
        }
        let mut cluster = cluster.lock().await;
        if cluster.reap(node).is_none() {
            continue;
        }
        kills += 1;
        rotted = cluster.rot_wal_tail(node)?;
        cluster.start_node(node)?;
        if rotted.is_some() {
            break;
        }
        drop(cluster);
        pause(300).await;
    }
    Ok(rotted.map_or_else(
        || format!("killed in a WAL fdatasync {kills} times in {attempts} attempts, never with a put at the tail: nothing rotted"),
        |what| format!("killed in a WAL fdatasync (injector), {what} (silent corruption of a record nobody acknowledged), restarted (kill {kills}, attempt {attempts})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_its_scenario_and_back() {
        assert_eq!(NAMES.len(), ALL.len());
        for name in NAMES {
            assert_eq!(name.parse::<Scenario>().unwrap().name(), *name);
        }
        let error = "leader-flap".parse::<Scenario>().unwrap_err();
        assert!(error.contains("fsyncgate"), "{error}");
    }
}
