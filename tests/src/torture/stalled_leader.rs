//! The `stalled-leader` fault: a commit point announced before a majority's disks hold it.
//!
//! A leader that counts its own unsynced log write toward a majority (or tells followers a
//! commit point its disk does not hold yet) loses nothing a client sees when it alone
//! crashes: the follower that has the entries is in the next majority, and Raft replicates
//! them back. The loss shows only when the next election is won by nodes without them, and
//! only if the crash comes while the commit point is past the leader's disk, which a random
//! crash seldom hits. So: the followers that would be left behind are cut off; the others are
//! cut off from the leader for a moment, so entries pile up in it uncommitted; as that heals
//! they take the pile in one append, and the leader's storage stops right after the write
//! their answer triggers (its fsync never returns, its network runs on); it loses power with
//! what it had not synced; the followers that kept up are frozen (SIGSTOP, their memory kept)
//! while the restarted leader and the cut-off ones elect; then they resume. What they applied
//! must be what the new majority holds (the results check compares them).
use std::{
    ops::ControlFlow,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use fault_rules::SplitMix64;
use tokio::sync::Mutex;

use super::{
    cluster::{Cluster, Frozen, cut_in_effect},
    crash_points::{next_log_write_crash, power_cut, wait_for_crash},
    leaders::{LEADER_WITHIN, leader_within, leading_now},
    network_shape::Cut,
    node_indexes::{checkpoint_past, index_once_up, indexes_of, said},
    poll::poll_until,
    probe::Probe,
};

/// How long the leader may take to write to its log: under load, milliseconds.
const WRITE_WITHIN: Duration = Duration::from_secs(3);

/// How long the restarted leader and the cut-off followers may take to elect one of them:
/// a cut-off follower campaigned in terms of its own meanwhile, so a round or two of target-db's
/// 0.5-1 s election timeouts.
const ELECTION_WITHIN: Duration = Duration::from_secs(10);

/// How long the restarted leader may take to answer.
const RESTART_WITHIN: Duration = Duration::from_secs(5);

/// Applies the fault; returns the leader it struck and what was done.
pub(super) async fn apply(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    probe: &Probe,
    rng: &mut SplitMix64,
) -> Result<(usize, String)> {
    let Some(leader) = leader_within(cluster, LEADER_WITHIN).await else {
        return Ok((
            node,
            format!(
                "stalled leader skipped: no leader within {} ms",
                LEADER_WITHIN.as_millis()
            ),
        ));
    };
    let size = cluster.lock().await.nodes.len();
    let Some((ahead, behind)) = sides(size, leader, rng) else {
        return Ok((
            leader,
            format!(
                "stalled leader skipped: {size} nodes have no majority without the followers that kept up"
            ),
        ));
    };
    // Long enough for what follows; ending the injector heals the cut.
    let cut = Cut {
        from: behind.clone(),
        to: (1..=size).filter(|id| !behind.contains(id)).collect(),
        one_way: false,
        loss_percent: 100,
    };
    let partition = cut_in_effect(
        cluster,
        &cut,
        WRITE_WITHIN + ELECTION_WITHIN + Duration::from_secs(10),
    )
    .await?;
    // The cut-off followers fall behind while the leader and the others go on.
    tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
    // The followers that keep up cut off from the leader too, for less than an election
    // timeout: the leader cannot commit, so it writes nothing to its log while clients'
    // entries pile up in it (in its memory only, if it writes them with its commit point), and
    // what was in flight to them is lost. As the cut heals they get every entry since their
    // last answer in one append, and the commit point their answer moves is what the leader
    // writes next: its storage stops right after that write, before its fsync. (Under steady
    // load a leader's write mostly carries entries a later commit point covers, and at a
    // random crash an unsynced commit point is seldom past its disk.)
    let piled_up = Duration::from_millis(150 + rng.below(250));
    let cut = Cut {
        from: ahead.clone(),
        to: vec![leader],
        one_way: false,
        loss_percent: 100,
    };
    let pause = cut_in_effect(cluster, &cut, piled_up + Duration::from_secs(5)).await?;
    tokio::time::sleep(piled_up).await;
    let rule_id = {
        let cluster = cluster.lock().await;
        cluster.add_fault(leader, &next_log_write_crash(&cluster.target.log_glob()))?
    };
    // The workload's clients mostly wait on entries the leader appended before the cut, so
    // the nemesis's own client adds some (in the history like any client's); the cut heals
    // once the leader's log holds them.
    let piled = pile_up(cluster, leader, probe, rng).await;
    drop(pause);
    let Some(path) = wait_for_crash(cluster, leader, rule_id, WRITE_WITHIN).await? else {
        drop(partition);
        piled.finish().await;
        return Ok((
            leader,
            format!(
                "{} cut off, {} cut off from n{leader} for {} ms; n{leader} wrote nothing to its \
                 log within {} ms of that heal; healed",
                names(&behind),
                names(&ahead),
                piled_up.as_millis(),
                WRITE_WITHIN.as_millis()
            ),
        ));
    };
    // The leader's disk is stuck, its network is not: what it sends meanwhile is what a
    // follower may apply.
    let stall = Duration::from_millis(100 + rng.below(400));
    tokio::time::sleep(stall).await;
    let applied = indexes_of(cluster, &ahead, "applied_index").await;
    let frozen = Frozen::stop(&*cluster.lock().await, &ahead)?;
    power_cut(cluster, &[leader], "drop", Duration::ZERO).await?;
    drop(partition);
    let started = Instant::now();
    let recovered = recovered_index(cluster, leader).await;
    let elected = poll_until(ELECTION_WITHIN, Duration::from_millis(50), || async {
        match leading_now(cluster, &ahead).await {
            Some(new) => ControlFlow::Break(new),
            None => ControlFlow::Continue(()),
        }
    })
    .await;
    let election = match elected {
        Ok(new) => format!(
            "n{new} elected {} ms after the heal;",
            started.elapsed().as_millis()
        ),
        Err(()) => format!(
            "no leader among the others within {} ms; then",
            ELECTION_WITHIN.as_millis()
        ),
    };
    drop(frozen);
    let checked = checkpoint_past(cluster, &applied).await;
    let piled = piled.finish().await;
    Ok((
        leader,
        format!(
            "{} cut off, {} cut off from n{leader} for {} ms{piled} and healed; n{leader}'s \
             storage stopped right after its next log write ({path}); {} ms later {} frozen (SIGSTOP; applied up to \
             {}) and n{leader} lost power (drop: unsynced writes lost), restarted (its log ends \
             at {recovered}), healed; {election} {} resumed{checked}",
            names(&behind),
            names(&ahead),
            piled_up.as_millis(),
            stall.as_millis(),
            names(&ahead),
            said(&applied),
            names(&ahead),
        ),
    ))
}

/// How many puts the nemesis's client sends to the cut-off leader.
const PILE: u64 = 3;

/// Puts sent to the leader while it cannot commit.
struct Piled {
    puts: Vec<tokio::task::JoinHandle<bool>>,
    /// Whether its log grew by all of them before the cut healed.
    appended: bool,
}

impl Piled {
    /// Waits for the puts' outcomes (the leader's crash ends them); returns what was done.
    async fn finish(self) -> String {
        let count = self.puts.len();
        for put in self.puts {
            let _ = put.await;
        }
        if self.appended {
            format!(", {count} puts sent to it meanwhile")
        } else {
            format!(", {count} puts sent to it meanwhile (not all in its log before the heal)")
        }
    }
}

/// Sends `PILE` puts of workload keys to `leader` and waits (up to a few seconds) until its
/// last log index has grown by as many.
async fn pile_up(
    cluster: &Arc<Mutex<Cluster>>,
    leader: usize,
    probe: &Probe,
    rng: &mut SplitMix64,
) -> Piled {
    let before = indexes_of(cluster, &[leader], "last_log_index").await[0].1;
    let addr = cluster.lock().await.node(leader).addr.clone();
    let puts = (0..PILE)
        .map(|_| {
            let (probe, addr) = (probe.clone(), addr.clone());
            let key = format!("k{}", rng.below(probe.keys.max(1)));
            tokio::spawn(async move { probe.put(&reqwest::Client::new(), &addr, &key).await })
        })
        .collect();
    let appended = match before {
        Some(before) => poll_until(WRITE_WITHIN, Duration::from_millis(10), || async {
            match indexes_of(cluster, &[leader], "last_log_index").await[0].1 {
                Some(now) if now >= before + PILE => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        })
        .await
        .is_ok(),
        None => false,
    };
    Piled { puts, appended }
}

/// The last log index the restarted node recovered, once it answers.
async fn recovered_index(cluster: &Arc<Mutex<Cluster>>, node: usize) -> String {
    let answered = index_once_up(cluster, node, "recovered_index", RESTART_WITHIN).await;
    answered.map_or(format!("n{node} ?"), |index| format!("n{node} {index}"))
}

/// The followers that keep up with the leader and those cut off, in a seeded split: the
/// leader and the first make a bare majority, and so do the leader and the second (odd sizes
/// only).
fn sides(size: usize, leader: usize, rng: &mut SplitMix64) -> Option<(Vec<usize>, Vec<usize>)> {
    let majority = size / 2 + 1;
    let mut followers: Vec<usize> = (1..=size).filter(|&id| id != leader).collect();
    for i in (1..followers.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        followers.swap(i, j);
    }
    let behind = followers.split_off(majority - 1);
    (1 + behind.len() >= majority && !followers.is_empty()).then_some((followers, behind))
}

fn names(nodes: &[usize]) -> String {
    let names: Vec<String> = nodes.iter().map(|id| format!("n{id}")).collect();
    names.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_side_makes_a_majority_with_the_leader() {
        let mut rng = SplitMix64::new(7);
        for size in [3, 5, 7] {
            for leader in 1..=size {
                let (ahead, behind) = sides(size, leader, &mut rng).unwrap();
                assert_eq!(ahead.len() + behind.len() + 1, size);
                assert!(!ahead.contains(&leader) && !behind.contains(&leader));
                assert_eq!(1 + ahead.len(), size / 2 + 1);
                assert!(1 + behind.len() > size / 2);
            }
        }
        assert_eq!(sides(4, 1, &mut rng), None);
        assert_eq!(sides(1, 1, &mut rng), None);
    }
}
