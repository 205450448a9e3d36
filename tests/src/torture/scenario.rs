//! Named scenarios: short deterministic fault scripts instead of the random nemesis, each a
//! classic way a replicated store loses data.
use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::sync::Mutex;

use super::{
    cluster::{Cluster, Cut, status},
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
}

pub const NAMES: &[&str] = &[
    "leader-failure-data-consistency",
    "partition-minority",
    "partition-majority",
    "node-rejoin",
    "power-loss-all",
    "multiple-failures",
    "uncommitted-entries",
];

impl FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "leader-failure-data-consistency" => Scenario::LeaderFailureDataConsistency,
            "partition-minority" => Scenario::PartitionMinority,
            "partition-majority" => Scenario::PartitionMajority,
            "node-rejoin" => Scenario::NodeRejoin,
            "power-loss-all" => Scenario::PowerLossAll,
            "multiple-failures" => Scenario::MultipleFailures,
            "uncommitted-entries" => Scenario::UncommittedEntries,
            other => {
                return Err(format!(
                    "unknown scenario `{other}`: choose from {}",
                    NAMES.join(", ")
                ));
            }
        })
    }
}

async fn leader(cluster: &Arc<Mutex<Cluster>>) -> Result<usize> {
    let addrs: Vec<String> = cluster
        .lock()
        .await
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect();
    let http = reqwest::Client::new();
    for _ in 0..100 {
        for addr in &addrs {
            if let Some(leader) = status(&http, addr).await.and_then(|s| s["leader"].as_u64()) {
                return Ok(leader as usize);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None.context("no leader to aim the scenario at")
}

fn follower(cluster_size: usize, leader: usize) -> usize {
    (1..=cluster_size)
        .find(|&id| id != leader)
        .expect("a cluster has more than one node")
}

/// Runs the script once, logging each fault; returns how many faults it applied.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    scenario: Scenario,
    recorder: Recorder,
) -> Result<u64> {
    let size = cluster.lock().await.nodes.len();
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(1500).await;
    let start = recorder.now();
    let (target, description) = match scenario {
        Scenario::LeaderFailureDataConsistency => {
            let leader = leader(&cluster).await?;
            cluster.lock().await.kill_node(leader);
            pause(3000).await;
            cluster.lock().await.start_node(leader)?;
            (leader, "leader SIGKILLed, restarted after 3 s")
        }
        Scenario::PartitionMinority | Scenario::PartitionMajority => {
            let leader = leader(&cluster).await?;
            let isolated = if scenario == Scenario::PartitionMajority {
                leader
            } else {
                follower(size, leader)
            };
            let mut command = cluster
                .lock()
                .await
                .partition_command(&Cut::isolate(isolated, size), Duration::from_secs(4));
            let status = tokio::task::spawn_blocking(move || command.status()).await??;
            anyhow::ensure!(status.success(), "injector partition failed: {status}");
            let what = if isolated == leader {
                "the leader isolated for 4 s"
            } else {
                "a follower isolated for 4 s"
            };
            (isolated, what)
        }
        Scenario::NodeRejoin => {
            let leader = leader(&cluster).await?;
            let lagging = follower(size, leader);
            cluster.lock().await.kill_node(lagging);
            pause(5000).await;
            cluster.lock().await.start_node(lagging)?;
            (
                lagging,
                "follower down for 5 s while writes went on, restarted",
            )
        }
        Scenario::MultipleFailures => {
            anyhow::ensure!(size >= 5, "multiple-failures needs 5 nodes: add --nodes 5");
            let leader = leader(&cluster).await?;
            let followers: Vec<usize> = (1..=size).filter(|&id| id != leader).collect();
            for &id in &followers[..2] {
                cluster.lock().await.kill_node(id);
            }
            pause(2000).await;
            // Two of five left: no quorum, so nothing can commit.
            cluster.lock().await.kill_node(followers[2]);
            pause(3000).await;
            let mut cluster = cluster.lock().await;
            for &id in &followers[..3] {
                cluster.start_node(id)?;
            }
            (
                followers[2],
                "two followers killed, then a third (no quorum for 3 s), all restarted",
            )
        }
        Scenario::UncommittedEntries => {
            let leader = leader(&cluster).await?;
            let mut command = cluster
                .lock()
                .await
                .partition_command(&Cut::isolate(leader, size), Duration::from_secs(4));
            let partition = tokio::task::spawn_blocking(move || command.status());
            // While cut off, the leader accepts writes it can never commit; then it dies.
            pause(2000).await;
            cluster.lock().await.kill_node(leader);
            let status = partition.await??;
            anyhow::ensure!(status.success(), "injector partition failed: {status}");
            cluster.lock().await.start_node(leader)?;
            (
                leader,
                "leader cut off, killed with uncommitted entries, restarted after healing",
            )
        }
        Scenario::PowerLossAll => {
            let mut cluster = cluster.lock().await;
            for id in 1..=size {
                cluster.kill_node(id);
            }
            for id in 1..=size {
                cluster.power_loss(id, "torn")?;
            }
            (1, "power loss of every node (torn), restarted")
        }
    };
    recorder.fault(
        start,
        recorder.now(),
        format!("n{target}"),
        description.to_owned(),
    );
    Ok(1)
}
