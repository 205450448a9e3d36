//! Named scenarios: short deterministic fault scripts instead of the random nemesis, each a
//! classic way a replicated store loses data. Every step is logged as a fault in the history.
use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result, ensure};
use tokio::sync::Mutex;

mod names;

pub use names::{NAMES, Scenario};

use super::{
    cluster::Cluster,
    crash_points,
    disk_faults::{BITROT_TRIES, rot_an_unacknowledged_record, with_fault_rule},
    leaders::leading_now,
    network_shape::Cut,
    workload::Recorder,
};

/// The node that says it is the leader, other than `not`, polled for up to 10 s.
async fn leader_other_than(cluster: &Arc<Mutex<Cluster>>, not: Option<usize>) -> Result<usize> {
    for _ in 0..100 {
        if let Some(leader) = leading_now(cluster, not.as_slice()).await {
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
