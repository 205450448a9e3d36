//! Healing the cluster at the end of a run and the checks on it, live, once healed: does it
//! serve again, survive a power loss of every node, hold one state on every node, and did every
//! node that was restarted rejoin and catch up with the leader.
use std::{
    ops::ControlFlow,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::Mutex;

use super::{
    CheckResult, Options, Shared,
    cluster::Cluster,
    final_power_loss::{ClientOf, final_power_loss},
    leaders::{leader_agreed, views},
    membership,
    nemesis::Fault,
    poll::poll_until,
    target::Target,
    verdicts::{self, not_reported},
    workload,
};
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
    let digests = match seen {
        Ok(agreed) => return Ok(agreed),
        Err(digests) => digests,
    };
    let views = views(target, http, addrs).await;
    let seen: Vec<String> = digests
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some((applied, digest)) => format!("n{}: {digest} at {applied}", i + 1),
            None => format!("n{}: no digest", i + 1),
        })
        .collect();
    Err(format!(
        "after {} s, digests (at applied index): {}; then {views}",
        limit.as_secs(),
        seen.join(", ")
    ))
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
                "after {} s, behind the leader's commit index {commit}: {}; then {}",
                limit.as_secs(),
                behind.join(", "),
                views(target, http, addrs).await
            ),
        )),
    }
}

/// What healing measured that the report and the later checks need.
pub(super) struct Healed {
    /// From healing to the first write the cluster took (None: none within --settle).
    pub(super) first_write: Option<Duration>,
    /// Whether every key was read at the end (lost writes are judged only then).
    pub(super) all_read: bool,
}

/// Heals the cluster (every node running, every node a voter) and checks it live: it serves
/// again, survives a power loss of every node (if the run had faults), reads every key, holds
/// one state on every node, and every restarted node caught up.
pub(super) async fn heal_and_check(
    options: &Options,
    cluster: &Arc<Mutex<Cluster>>,
    client: ClientOf<'_>,
    shared: &Shared,
) -> Result<(Vec<CheckResult>, Healed)> {
    let (target, http, addrs) = client;
    // Partitions and pauses end by themselves.
    {
        let mut cluster = cluster.lock().await;
        for id in 1..=options.nodes {
            cluster.start_node(id)?;
        }
    }
    // A membership change cut short by the end of the run is finished: every node a voter.
    let restored = if options.faults.contains(&Fault::Membership) {
        membership::restore_all(cluster).await
    } else {
        Ok(Vec::new())
    };
    let mut checks = Vec::new();
    let first_write = workload::first_write(target, addrs, options.settle).await;
    let serves = leader_agreed(target, http, addrs, options.settle).await;
    checks.push(verdicts::serves_again(
        &restored,
        first_write,
        serves,
        options.settle,
    ));
    if !options.faults.is_empty() || options.scenario.is_some() {
        let shape = (options.seed, options.keys, options.settle);
        checks.push(final_power_loss(shape, cluster, client, &shared.recorder).await?);
        if target.deduplicates() {
            let lines = shared.recorder.lines();
            let again =
                workload::resend_first_and_last_puts(target, addrs, &lines, &shared.latest_writes)
                    .await;
            shared
                .doubles
                .lock()
                .expect("doubles poisoned")
                .extend(again);
        }
    }
    let all_read =
        workload::final_reads(target, addrs, options.keys, &shared.recorder, 1_000_000).await;
    let convergence = if target.has_digest() {
        converged(target, http, addrs, options.settle)
            .await
            .map_err(|e| (Verdict::Fail, e))
    } else {
        Err((
            Verdict::NotApplicable,
            not_reported(target, "reports no state digest"),
        ))
    };
    checks.push(verdicts::of_outcome(
        "nodes converge to one state",
        convergence,
    ));
    let restarted: Vec<(usize, u32)> = cluster
        .lock()
        .await
        .nodes
        .iter()
        .filter(|n| n.restarts > 0)
        .map(|n| (n.id, n.restarts))
        .collect();
    let rejoin = match leader_agreed(target, http, addrs, Duration::ZERO).await {
        _ if !target.reports_indexes() => Err((
            Verdict::NotApplicable,
            not_reported(target, "reports no commit or applied index"),
        )),
        Some(leader) => {
            let leader = leader as usize;
            rejoined(target, http, addrs, leader, &restarted, options.settle).await
        }
        None => Err((
            Verdict::Unknown,
            format!(
                "no leader to compare with: {}",
                views(target, http, addrs).await
            ),
        )),
    };
    checks.push(verdicts::of_outcome(
        "restarted nodes rejoin and catch up",
        rejoin,
    ));
    Ok((
        checks,
        Healed {
            first_write,
            all_read,
        },
    ))
}
