//! Checks on the running cluster once everything is healed: do the nodes hold one state, and
//! did every node that was restarted rejoin and catch up with the leader.
use std::{
    ops::ControlFlow,
    time::{Duration, Instant},
};

use super::{poll::poll_until, target::Target};
use crate::check::Verdict;

/// Every node has applied the same log and holds the same state (digest).
pub async fn converged(
    target: &Target,
    http: &reqwest::Client,
    addrs: &[String],
    limit: Duration,
) -> Result<String, String> {
    let seen = poll_until(limit, Duration::from_millis(300), move || async move {
        let mut digests: Vec<Option<(u64, String)>> = Vec::new();
        for addr in addrs {
            digests.push(target.digest(http, addr).await);
        }
        match digests.first() {
            Some(Some((applied, digest)))
                if digests.iter().all(|d| d.as_ref() == digests[0].as_ref()) =>
            {
                ControlFlow::Break(format!(
                    "{} nodes at applied index {applied}, digest {digest}",
                    addrs.len(),
                ))
            }
            _ => ControlFlow::Continue(digests),
        }
    })
    .await;
    seen.map_err(|digests| {
        let seen: Vec<String> = digests
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Some((applied, digest)) => format!("n{}: {digest} at {applied}", i + 1),
                None => format!("n{}: no digest", i + 1),
            })
            .collect();
        format!(
            "after {} s, digests (at applied index): {}",
            limit.as_secs(),
            seen.join(", ")
        )
    })
}

/// Every node restarted during the run (id, restarts) reaches the commit index the leader
/// has made durable. Ok and Err carry the detail for the report; the verdict is Fail, or Not
/// applicable when the leader's status has no commit index at all (a spec's status command
/// that does not give one).
pub async fn rejoined(
    target: &Target,
    http: &reqwest::Client,
    addrs: &[String],
    leader: usize,
    restarted: &[(usize, u32)],
    limit: Duration,
) -> Result<String, (Verdict, String)> {
    if restarted.is_empty() {
        return Ok("no node was restarted in this run".into());
    }
    let status = target.status(http, &addrs[leader - 1]).await;
    let Some(commit) = status.as_ref().and_then(|s| s["commit_index"].as_u64()) else {
        let verdict = match status {
            Some(status) if status.get("commit_index").is_none() => Verdict::NotApplicable,
            _ => Verdict::Fail,
        };
        let word = if verdict == Verdict::NotApplicable {
            "not applicable: "
        } else {
            ""
        };
        return Err((
            verdict,
            format!("{word}the leader n{leader} reports no commit index"),
        ));
    };
    let started = Instant::now();
    let who = restarted
        .iter()
        .map(|(id, times)| format!("n{id} ({times}x)"))
        .collect::<Vec<_>>()
        .join(", ");
    let caught_up = poll_until(limit, Duration::from_millis(300), move || async move {
        let mut behind = Vec::new();
        for &(id, _) in restarted {
            let applied = target
                .status(http, &addrs[id - 1])
                .await
                .and_then(|s| s["applied_index"].as_u64());
            if applied.is_none_or(|a| a < commit) {
                behind.push(format!(
                    "n{id} at {}",
                    applied.map_or("no answer".into(), |a| a.to_string())
                ));
            }
        }
        if behind.is_empty() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(behind)
        }
    })
    .await;
    match caught_up {
        Ok(()) => Ok(format!(
            "restarted {who}: all reached the leader's commit index {commit} ({:.1} s)",
            started.elapsed().as_secs_f64()
        )),
        Err(behind) => Err((
            Verdict::Fail,
            format!(
                "after {} s, behind the leader's commit index {commit}: {}",
                limit.as_secs(),
                behind.join(", ")
            ),
        )),
    }
}
