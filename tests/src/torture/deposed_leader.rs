//! The `deposed-leader` fault: the leader cut off from the others (clients still reach it)
//! until one of them says it leads, then left running for a while as a leader nobody follows
//! any more. That is the window where a leader that does not confirm its leadership (a read
//! index or a lease) serves stale reads, and where clients' writes reach its log without being
//! committed. The nemesis's own client aims at it: a put through the new leader, then a read of
//! the same key from the deposed one. Then the old leader is SIGKILLed, the cut healed and the
//! node restarted, or, half the time, the cut is healed first and the old leader loses power
//! right after its first log write since: recovery must not apply the suffix the new leader
//! overwrites. The fault ends once the restarted node reports a results checkpoint past the
//! log it recovered, so the results check sees what it applied before another fault restarts
//! it (a restart rebuilds its state from the log the new leader has mended by then).
use std::{ops::ControlFlow, sync::Arc, time::Duration};

use anyhow::Result;
use fault_rules::SplitMix64;
use process_guard::Spawned;
use tokio::sync::Mutex;

use super::{
    cluster::{Cluster, cut_in_effect},
    crash_points::{next_log_write_crash, power_cut, wait_for_crash},
    leaders::{LEADER_WITHIN, leader_within, leading_now},
    network_shape::Cut,
    node_indexes::{checkpoint_past, index_once_up},
    poll::poll_until,
    probe::Probe,
};

/// How long the others may take to elect a new leader once the old one is cut off: well past
/// target-db's 0.5-1 s election timeouts and its 1 s leader lease.
const ELECTION_WITHIN: Duration = Duration::from_secs(6);

/// How long a healed old leader may take to write to its log (a heartbeat of the new leader
/// tells it the new term).
const REJOIN_WITHIN: Duration = Duration::from_secs(3);

/// How long the restarted old leader may take to answer.
const RESTART_WITHIN: Duration = Duration::from_secs(5);

/// Applies the fault for `hold` past the election; returns the old leader and what was done
/// (`node`, the nemesis's pick, if there was no leader to depose).
pub(super) async fn apply(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    probe: &Probe,
    rng: &mut SplitMix64,
) -> Result<(usize, String)> {
    let Some(old) = leader_within(cluster, LEADER_WITHIN).await else {
        return Ok((
            node,
            format!(
                "deposed leader skipped: no leader within {} ms",
                LEADER_WITHIN.as_millis()
            ),
        ));
    };
    let cut = Cut::isolate(old, cluster.lock().await.nodes.len());
    let partition = cut_in_effect(
        cluster,
        &cut,
        ELECTION_WITHIN + hold + Duration::from_secs(5),
    )
    .await?;
    let cut_at = tokio::time::Instant::now();
    let successor = poll_until(ELECTION_WITHIN, Duration::from_millis(50), || async {
        match leading_now(cluster, &[old]).await {
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
    // Half the time it rejoins first: a database that keeps a leader's unreplicated suffix in
    // memory writes it only with its next durable record, the vote of the new term it hears of
    // as it rejoins (target-db stages a leader's entries until its commit point moves, which
    // it never does here); a kill before the heal would find no suffix on its disk.
    let ending = if successor.is_ok() && rng.below(2) == 0 {
        crash_as_it_rejoins(cluster, old, partition).await?
    } else {
        cluster.lock().await.kill_node(old);
        // Ending the injector heals the cut.
        drop(partition);
        cluster.lock().await.start_node(old)?;
        format!(
            "n{old} SIGKILLed {} ms later (what it appended meanwhile was never committed), \
             healed, restarted",
            hold.as_millis()
        )
    };
    // Whatever its recovery applied from the log it found is covered by the next results
    // checkpoint past that log's end.
    let recovered = index_once_up(cluster, old, "recovered_index", RESTART_WITHIN).await;
    let checked = checkpoint_past(cluster, &[(old, recovered)]).await;
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
        "n{old}, the leader, cut off from the others (clients still reach it); {deposed}; \
         {ending}{aimed}{checked}"
    );
    Ok((old, description))
}

/// Heals the cut with the old leader's storage set to stop right after its first write to its
/// log (what it appended while cut off, if it kept that in memory, and the new term's vote),
/// then cuts its power keeping every write, and restarts it: its recovery meets the suffix
/// the new leader overwrites on a disk that also holds the new term.
async fn crash_as_it_rejoins(
    cluster: &Arc<Mutex<Cluster>>,
    old: usize,
    partition: Spawned,
) -> Result<String> {
    let rule_id = {
        let cluster = cluster.lock().await;
        cluster.add_fault(old, &next_log_write_crash(&cluster.target.log_glob()))?
    };
    drop(partition);
    match wait_for_crash(cluster, old, rule_id, REJOIN_WITHIN).await? {
        Some(path) => {
            power_cut(cluster, &[old], "keep", Duration::ZERO).await?;
            Ok(format!(
                "healed; n{old}'s storage stopped right after its first log write since \
                 ({path}), power loss (keep: what it wrote stays), restarted"
            ))
        }
        None => {
            let mut cluster = cluster.lock().await;
            cluster.kill_node(old);
            cluster.start_node(old)?;
            Ok(format!(
                "healed; n{old} wrote nothing to its log within {} ms; SIGKILLed, restarted",
                REJOIN_WITHIN.as_millis()
            ))
        }
    }
}
