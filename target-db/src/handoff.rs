//! Moving leadership to another voter: on `admin transfer-leader`, and before a leader stops on
//! SIGTERM, so clients meet a leader that is already elected rather than an election.
//!
//! openraft 0.9 has no transfer call, but its parts suffice: the leader stops taking writes,
//! waits until the chosen follower holds every entry it has, asks the other voters to hold
//! their own elections for a while, stops its heartbeats and asks the chosen one to campaign
//! (`trigger().elect()`). The voters refuse the campaign until the old leader's lease runs out
//! (about `election_timeout_max`, one second here), then elect it.
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::{node::Node, types::NodeId};

#[derive(Debug, Error)]
pub enum HandoffError {
    #[error("this node is not the leader{}", leader.map(|l| format!("; node {l} is")).unwrap_or_default())]
    NotLeader { leader: Option<NodeId> },
    #[error(
        "node {to} is not a voter of this cluster (voters: {voters:?}); name one of the others"
    )]
    NotAVoter { to: NodeId, voters: Vec<NodeId> },
    #[error("this node is the only voter: there is nobody to hand leadership to")]
    Alone,
    #[error("leadership did not move within {0:?}; this node still leads")]
    TimedOut(Duration),
}

/// Hands leadership to `to` (or the most caught-up voter) and returns the node that leads now.
pub async fn transfer_leadership(
    node: &Node,
    to: Option<NodeId>,
    within: Duration,
) -> Result<NodeId, HandoffError> {
    let metrics = node.raft.metrics().borrow().clone();
    if metrics.current_leader != Some(node.id) {
        return Err(HandoffError::NotLeader {
            leader: metrics.current_leader,
        });
    }
    let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    let others: Vec<NodeId> = voters.iter().copied().filter(|&v| v != node.id).collect();
    let target = match to {
        Some(to) if others.contains(&to) => to,
        Some(to) => return Err(HandoffError::NotAVoter { to, voters }),
        None => {
            let matched = |id: &NodeId| {
                metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| l.index)
            };
            *others
                .iter()
                .max_by_key(|id| matched(id))
                .ok_or(HandoffError::Alone)?
        }
    };
    node.handing_off.store(true, Ordering::SeqCst);
    let result = hand_to(node, target, within).await;
    node.raft.runtime_config().heartbeat(true);
    node.raft.runtime_config().elect(true);
    node.handing_off.store(false, Ordering::SeqCst);
    result
}

async fn hand_to(node: &Node, target: NodeId, within: Duration) -> Result<NodeId, HandoffError> {
    let deadline = Instant::now() + within;
    let raft = &node.raft;
    let mut metrics = raft.metrics();
    // Writes are refused from now on, so the target can catch up with a log that stands still.
    let caught_up = |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&target).copied().flatten())
            .map(|l| l.index);
        matched >= m.last_log_index || m.current_leader != Some(node.id)
    };
    tokio::time::timeout_at(deadline.into(), metrics.wait_for(caught_up))
        .await
        .map_err(|_| HandoffError::TimedOut(within))?
        .map_err(|_| HandoffError::TimedOut(within))?;
    tracing::info!(
        to = target,
        "handing leadership over: heartbeats stop, the target campaigns"
    );
    let membership = metrics.borrow().membership_config.clone();
    let addr_of = |id: NodeId| {
        membership
            .membership()
            .get_node(&id)
            .map(|n| format!("http://{}", n.addr))
    };
    let bystanders: Vec<String> = membership
        .membership()
        .voter_ids()
        .filter(|&id| id != node.id && id != target)
        .filter_map(addr_of)
        .collect();
    // Otherwise a bystander whose election timer fires first campaigns too, and may win.
    hold_elections(node, &bystanders, within).await;
    raft.runtime_config().heartbeat(false);
    raft.runtime_config().elect(false);
    let url = addr_of(target).map(|addr| format!("{addr}/admin/campaign"));
    loop {
        let leader = metrics.borrow().current_leader;
        if let Some(leader) = leader.filter(|&l| l != node.id) {
            tracing::info!(leader, "handed leadership to node {leader}");
            hold_elections(node, &bystanders, Duration::ZERO).await;
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            hold_elections(node, &bystanders, Duration::ZERO).await;
            return Err(HandoffError::TimedOut(within));
        }
        if let Some(url) = &url {
            // Refused while the voters' lease from this leader lasts; asked again until elected.
            let _ = node
                .peers
                .post(url)
                .timeout(Duration::from_millis(500))
                .send()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
    }
}

/// Asks these nodes not to start elections for `how_long` (zero: start again now). Best effort:
/// a node that does not answer may campaign, which costs the hand-off its choice, not safety.
async fn hold_elections(node: &Node, addrs: &[String], how_long: Duration) {
    for addr in addrs {
        let _ = node
            .peers
            .post(format!("{addr}/admin/hold-elections"))
            .json(&serde_json::json!({"ms": how_long.as_millis() as u64}))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
    }
}
