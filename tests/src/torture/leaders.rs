//! Who leads: the watcher that records each change of leader through a run and feeds the
//! protocol oracles, the wait for a leader every node agrees on, and one poll for the node
//! that says it leads now.
use std::{
    ops::ControlFlow,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Mutex;

use super::{cluster::Cluster, oracles, poll, target, target::Target, workload::Recorder};

/// Polls every node's /status every 50 ms until `stop`: records each change of leader (the
/// node that says it leads in the highest term; one that came and went between two polls is
/// not seen) and feeds the protocol oracles. Counts the rounds in `rounds`, so a fault can
/// wait until the oracles have seen the state it is about to destroy.
pub(super) async fn watch_nodes(
    target: Target,
    addrs: Vec<String>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    oracles: Arc<std::sync::Mutex<oracles::Oracles>>,
    rounds: tokio::sync::watch::Sender<u64>,
) {
    let http = reqwest::Client::new();
    let mut last: Option<(Option<u64>, Option<u64>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut seen: Option<(u64, u64)> = None;
        for (i, addr) in addrs.iter().enumerate() {
            let sent = recorder.now();
            let Some(status) = target.status(&http, addr).await else {
                continue;
            };
            oracles.lock().expect("oracles poisoned").observe(
                i + 1,
                (sent, recorder.now()),
                &status,
            );
            let term = status["term"].as_u64().unwrap_or(0);
            if target::says_it_leads(&status) && seen.is_none_or(|(t, _)| term > t) {
                seen = Some((term, i as u64 + 1));
            }
        }
        let now = (seen.map(|(_, id)| id), seen.map(|(term, _)| term));
        if last != Some(now) {
            recorder.leader(recorder.now(), now.0, now.1);
            last = Some(now);
        }
        rounds.send_modify(|count| *count += 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader every node agrees on, polled for up to `limit` (once if zero).
pub(super) async fn leader_agreed(
    target: &Target,
    http: &reqwest::Client,
    addrs: &[String],
    limit: Duration,
) -> Option<u64> {
    poll::poll_until(limit, Duration::from_millis(200), move || async move {
        let mut leaders = Vec::new();
        for addr in addrs {
            let status = target.status(http, addr).await;
            leaders.push(status.and_then(|s| s["leader"].as_u64()));
        }
        match leaders.first() {
            Some(Some(first)) if leaders.iter().all(|l| *l == Some(*first)) => {
                ControlFlow::Break(*first)
            }
            _ => ControlFlow::Continue(()),
        }
    })
    .await
    .ok()
}

/// What each node says of itself, one poll, for the detail of a failed check: its role, term,
/// the leader it follows and its log indexes (`n2: Follower, term 7, leader n1, log 610,
/// commit 608, applied 598`); a node that does not answer says so.
pub(super) async fn views(target: &Target, http: &reqwest::Client, addrs: &[String]) -> String {
    let mut views = Vec::new();
    for (index, addr) in addrs.iter().enumerate() {
        let view = match target.status(http, addr).await {
            Some(status) => view_of(&status),
            None => "no answer".to_owned(),
        };
        views.push(format!("n{}: {view}", index + 1));
    }
    views.join("; ")
}

fn view_of(status: &serde_json::Value) -> String {
    let mut parts = vec![status["state"].as_str().unwrap_or("?").to_owned()];
    if let Some(term) = status["term"].as_u64() {
        parts.push(format!("term {term}"));
    }
    parts.push(match status["leader"].as_u64() {
        Some(leader) => format!("leader n{leader}"),
        None => "no leader".to_owned(),
    });
    for (key, name) in [
        ("last_log_index", "log"),
        ("commit_index", "commit"),
        ("applied_index", "applied"),
    ] {
        if let Some(index) = status[key].as_u64() {
            parts.push(format!("{name} {index}"));
        }
    }
    parts.join(", ")
}

/// `node` if it does not lead, else the next node round the ring.
pub(in crate::torture) async fn follower_near(cluster: &Arc<Mutex<Cluster>>, node: usize) -> usize {
    match leader(cluster).await {
        Some(leader) if leader == node => leader % cluster.lock().await.nodes.len() + 1,
        _ => node,
    }
}

/// The node that says it leads, if one does.
pub(in crate::torture) async fn leader(cluster: &Arc<Mutex<Cluster>>) -> Option<usize> {
    leading_now(cluster, &[]).await
}

/// How long a fault aimed at the leader waits for one: a few rounds of target-db's 0.5-1 s
/// election timeouts.
pub(in crate::torture) const LEADER_WITHIN: Duration = Duration::from_secs(5);

/// The node that says it leads, polled for up to `limit`: a fault aimed at the leader that
/// comes during an election (after a kill, a power loss) waits for its winner instead of being
/// skipped, which would waste the run's one draw of that kind.
pub(in crate::torture) async fn leader_within(
    cluster: &Arc<Mutex<Cluster>>,
    limit: Duration,
) -> Option<usize> {
    poll::poll_until(limit, Duration::from_millis(50), || async {
        match leading_now(cluster, &[]).await {
            Some(leader) => ControlFlow::Break(leader),
            None => ControlFlow::Continue(()),
        }
    })
    .await
    .ok()
}

/// One poll of every node's /status: the first that says it leads, other than those in `not`
/// (which are not asked).
pub(in crate::torture) async fn leading_now(
    cluster: &Arc<Mutex<Cluster>>,
    not: &[usize],
) -> Option<usize> {
    let (target, addrs): (_, Vec<String>) = {
        let cluster = cluster.lock().await;
        let addrs = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
        (cluster.target.clone(), addrs)
    };
    let client = reqwest::Client::new();
    for (index, addr) in addrs.iter().enumerate() {
        if !not.contains(&(index + 1))
            && let Some(status) = target.status(&client, addr).await
            && target::says_it_leads(&status)
        {
            return Some(index + 1);
        }
    }
    None
}
