//! Checks on the running cluster once everything is healed: do the nodes hold one state, and
//! did every node that was restarted rejoin and catch up with the leader.
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::status;

/// Every node has applied the same log and holds the same state (digest).
pub async fn converged(
    http: &reqwest::Client,
    addrs: &[String],
    limit: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut statuses: Vec<Value> = Vec::new();
        for addr in addrs {
            statuses.push(status(http, addr).await.unwrap_or(Value::Null));
        }
        let digests: Vec<&Value> = statuses.iter().map(|s| &s["state_digest"]).collect();
        let applied: Vec<&Value> = statuses.iter().map(|s| &s["applied_index"]).collect();
        if digests.iter().all(|d| !d.is_null() && *d == digests[0])
            && applied.iter().all(|a| *a == applied[0])
        {
            return Ok(format!(
                "{} nodes at applied index {}, digest {}",
                addrs.len(),
                applied[0],
                digests[0]
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {} s: applied {applied:?}, digests {digests:?}",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every node restarted during the run (id, restarts) reaches the commit index the leader
/// has made durable. Ok and Err carry the detail for the report.
pub async fn rejoined(
    http: &reqwest::Client,
    addrs: &[String],
    leader: usize,
    restarted: &[(usize, u32)],
    limit: Duration,
) -> Result<String, String> {
    if restarted.is_empty() {
        return Ok("no node was restarted in this run".into());
    }
    let Some(target) = status(http, &addrs[leader - 1])
        .await
        .and_then(|s| s["commit_index"].as_u64())
    else {
        return Err(format!("the leader n{leader} reports no commit index"));
    };
    let started = Instant::now();
    let who = restarted
        .iter()
        .map(|(id, times)| format!("n{id} ({times}x)"))
        .collect::<Vec<_>>()
        .join(", ");
    loop {
        let mut behind = Vec::new();
        for &(id, _) in restarted {
            let applied = status(http, &addrs[id - 1])
                .await
                .and_then(|s| s["applied_index"].as_u64());
            if applied.is_none_or(|a| a < target) {
                behind.push(format!(
                    "n{id} at {}",
                    applied.map_or("no answer".into(), |a| a.to_string())
                ));
            }
        }
        if behind.is_empty() {
            return Ok(format!(
                "restarted {who}: all reached the leader's commit index {target} \
                 ({:.1} s)",
                started.elapsed().as_secs_f64()
            ));
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "after {} s, behind the leader's commit index {target}: {}",
                limit.as_secs(),
                behind.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
