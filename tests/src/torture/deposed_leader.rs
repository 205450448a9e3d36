//! The `deposed-leader` fault: the leader cut off from the others (clients still reach it)
//! until one of them says it leads, then left running for a while as a leader nobody follows
//! any more. That is the window where a leader that does not confirm its leadership (a read
//! index or a lease) serves stale reads, and where clients' writes reach its log without being
//! committed. The nemesis's own client aims at it: a put through the new leader, then a read of
//! the same key from the deposed one. Then the old leader is SIGKILLed, the cut healed and the
//! node restarted: recovery must not apply the suffix the new leader overwrites.
use std::{ops::ControlFlow, sync::Arc, time::Duration};

use anyhow::Result;
use fault_rules::SplitMix64;
use tokio::sync::Mutex;

use super::{
    cluster::{Cluster, partition_in_effect},
    leaders::leading_now,
    network_shape::Cut,
    poll::poll_until,
    probe::Probe,
};

/// How long the others may take to elect a new leader once the old one is cut off: well past
/// target-db's 0.5-1 s election timeouts and its 1 s leader lease.
const ELECTION_WITHIN: Duration = Duration::from_secs(6);

/// Applies the fault for `hold` past the election; returns the old leader and what was done
/// (`node`, the nemesis's pick, if there was no leader to depose).
pub(super) async fn apply(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    probe: &Probe,
    rng: &mut SplitMix64,
) -> Result<(usize, String)> {
    let Some(old) = leading_now(cluster, None).await else {
        return Ok((node, "deposed leader skipped: no leader".into()));
    };
    let command = {
        let cluster = cluster.lock().await;
        let cut = Cut::isolate(old, cluster.nodes.len());
        cluster.partition_command(&cut, ELECTION_WITHIN + hold + Duration::from_secs(5))
    };
    let partition = tokio::task::spawn_blocking(move || partition_in_effect(command)).await??;
    let cut_at = tokio::time::Instant::now();
    let successor = poll_until(ELECTION_WITHIN, Duration::from_millis(50), || async {
        match leading_now(cluster, Some(old)).await {
            Some(new) => ControlFlow::Break(new),
            None => ControlFlow::Continue(()),
        }
    })
    .await;
    let elected_after = cut_at.elapsed();
    let aimed = successor.ok().map(|new| {
        let key = format!("k{}", rng.below(probe.keys.max(1)));
        let (probe, cluster) = (probe.clone(), cluster.clone());
        tokio::spawn(async move {
            let (new_addr, old_addr) = {
                let cluster = cluster.lock().await;
                (
                    cluster.node(new).addr.clone(),
                    cluster.node(old).addr.clone(),
                )
            };
            let http = reqwest::Client::new();
            if probe.put(&http, &new_addr, &key).await {
                probe.get(&http, &old_addr, &key).await;
                format!("; a put of {key} through n{new}, then a read of it from n{old}")
            } else {
                format!("; a put of {key} through n{new} went unanswered")
            }
        })
    });
    tokio::time::sleep(hold).await;
    cluster.lock().await.kill_node(old);
    // Ending the injector heals the cut.
    drop(partition);
    cluster.lock().await.start_node(old)?;
    let aimed = match aimed {
        Some(task) => task.await?,
        None => String::new(),
    };
    let deposed = match successor {
        Ok(new) => format!("n{new} elected {} ms into it", elected_after.as_millis()),
        Err(()) => format!(
            "no other node said it leads within {} ms",
            ELECTION_WITHIN.as_millis()
        ),
    };
    let description = format!(
        "n{old}, the leader, cut off from the others (clients still reach it); {deposed}; n{old} \
         SIGKILLed {} ms later (what it appended meanwhile was never committed), healed, \
         restarted{aimed}",
        hold.as_millis()
    );
    Ok((old, description))
}
