//! The `membership` fault: a follower is removed from the voters while the workload goes on with
//! the others, then added back (a learner first, caught up, then promoted), through the
//! database's own admin calls. Membership changes are log entries that recovery, snapshots,
//! compaction and elections must carry like any other: a store that loses the membership its
//! snapshot or log held comes back believing in an old configuration.
use std::{
    ops::ControlFlow,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::{Value, json};
use target_db_client::Client;
use tokio::sync::Mutex;

use super::{
    cluster::{Cluster, status},
    leaders::leading_now,
    poll::poll_until,
};

/// How long adding a node back may take, in all (a learner catching up from a snapshot).
const RESTORE_WITHIN: Duration = Duration::from_secs(40);

/// Removes `node` (a follower) from the voters, leaves it out for `out_for`, then adds it back.
/// Returns what was done, for the history.
pub async fn remove_and_add_back(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    out_for: Duration,
) -> Result<String> {
    let started = Instant::now();
    let removed = admin(
        cluster,
        "remove",
        json!({"id": node}),
        Duration::from_secs(10),
    )
    .await;
    let removal = match &removed {
        Ok(answer) => format!("removed from the voters (log index {})", answer["index"]),
        Err(why) => format!("removal failed ({why})"),
    };
    if removed.is_ok() {
        tokio::time::sleep(out_for).await;
    }
    let out_ms = started.elapsed().as_millis();
    let back = restore(cluster, node).await;
    Ok(match back {
        Ok(how) => format!("n{node} {removal}, out {out_ms} ms, then {how}"),
        Err(why) => format!("n{node} {removal}, out {out_ms} ms, NOT added back: {why}"),
    })
}

/// Makes every node a voter again (after the faults: a change cut short by the end of the run
/// is finished). Ok with what was done, if anything.
pub async fn restore_all(cluster: &Arc<Mutex<Cluster>>) -> Result<Vec<String>, String> {
    let size = cluster.lock().await.nodes.len();
    let mut done = Vec::new();
    for node in 1..=size {
        let how = restore(cluster, node).await?;
        if how != ALREADY {
            done.push(format!("n{node} {how}"));
        }
    }
    Ok(done)
}

const ALREADY: &str = "already a voter";

/// Adds `node` back as a learner, waits until it has caught up, and promotes it; following
/// leader changes, until it is a voter in the leader's configuration or `RESTORE_WITHIN` ends.
async fn restore(cluster: &Arc<Mutex<Cluster>>, node: usize) -> Result<String, String> {
    let deadline = Instant::now() + RESTORE_WITHIN;
    let started = Instant::now();
    let addr = cluster.lock().await.nodes[node - 1].addr.clone();
    let mut last_error = String::from("no leader");
    let mut changed = false;
    while Instant::now() < deadline {
        match voters(cluster).await {
            Some(voters) if voters.contains(&(node as u64)) => {
                return Ok(if changed {
                    format!(
                        "added back as a learner and promoted ({} ms)",
                        started.elapsed().as_millis()
                    )
                } else {
                    ALREADY.to_owned()
                });
            }
            Some(_) => {
                changed = true;
                let left = deadline.saturating_duration_since(Instant::now());
                let steps = async {
                    admin(
                        cluster,
                        "add-learner",
                        json!({"id": node, "addr": addr}),
                        left,
                    )
                    .await?;
                    admin(cluster, "promote", json!({"id": node}), left).await
                };
                if let Err(why) = steps.await {
                    last_error = why;
                }
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "not a voter after {} s: {last_error}",
        RESTORE_WITHIN.as_secs()
    ))
}

/// The voters in the configuration of the node that leads now.
async fn voters(cluster: &Arc<Mutex<Cluster>>) -> Option<Vec<u64>> {
    let leader = leading_now(cluster, &[]).await?;
    let addr = cluster.lock().await.nodes[leader - 1].addr.clone();
    let status = status(&reqwest::Client::new(), &addr).await?;
    status["members"]
        .as_array()
        .map(|members| members.iter().filter_map(Value::as_u64).collect())
}

/// POST /admin/CALL to the node that leads now, again through a new leader until it answers
/// with success or `within` ends; the answer, or why not.
async fn admin(
    cluster: &Arc<Mutex<Cluster>>,
    call: &str,
    body: Value,
    within: Duration,
) -> Result<Value, String> {
    let deadline = Instant::now() + within;
    let body = &body;
    poll_until(within, Duration::from_millis(200), || async move {
        let Some(leader) = leading_now(cluster, &[]).await else {
            return ControlFlow::Continue("no leader".to_owned());
        };
        let addr = cluster.lock().await.nodes[leader - 1].addr.clone();
        let left = deadline.saturating_duration_since(Instant::now());
        let node = Client::new().timeout(left.max(Duration::from_millis(100)));
        match node.post(&addr, &format!("/admin/{call}"), body).await {
            Ok(answer) if answer["index"].is_u64() => ControlFlow::Break(answer),
            Ok(answer) => ControlFlow::Continue(format!("{call} on n{leader}: {answer}")),
            Err(error) => ControlFlow::Continue(format!("{call} on n{leader}: {error}")),
        }
    })
    .await
}
