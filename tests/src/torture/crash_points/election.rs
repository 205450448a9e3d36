//! Crash points aimed at an election: the leader killed, every voter's storage stopped right
//! after the vote it casts, and all lose power at that moment.
use super::*;

/// A crash point aimed at an election: the leader is killed, and each other node's storage
/// stops right after its first write to its log from then on, which is the election's (the
/// vote it casts; on a candidate, its own vote). Then every node loses power at that moment,
/// the old leader too, and all restart. A node that reported a vote as durable before it was
/// (an unsynced vote: two votes in one term after a power loss) comes back without it, which
/// the oracles compare with what it reported. Random faults almost never land in the few
/// milliseconds between a vote and the next sync.
pub(super) async fn election_crash(
    cluster: &Arc<Mutex<Cluster>>,
    leader: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
) -> Result<String> {
    let voters: Vec<usize> = {
        let mut cluster = cluster.lock().await;
        cluster.kill_node(leader);
        (1..=cluster.nodes.len())
            .filter(|&id| id != leader && cluster.running(id))
            .collect()
    };
    let rule = next_log_write_crash(log_class(plan.classes));
    let mut placed = Vec::new();
    for &voter in &voters {
        placed.push((voter, cluster.lock().await.add_fault(voter, &rule)?));
    }
    let started = Instant::now();
    let mut crashed: Vec<(usize, String)> = Vec::new();
    while crashed.len() < voters.len() && started.elapsed() < REACH_WITHIN {
        for &voter in &voters {
            if crashed.iter().any(|(id, _)| *id == voter) {
                continue;
            }
            let status = cluster.lock().await.faultfs_status(voter)?;
            if let Some(path) = status["crashed"]["path"].as_str() {
                crashed.push((voter, path.to_owned()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (voter, rule_id) in placed {
        cluster.lock().await.remove_fault(voter, rule_id)?;
    }
    for &voter in &voters {
        let path = crashed.iter().find(|(id, _)| *id == voter).map(|(_, p)| p);
        plan.attempts
            .push(voter_attempt(voter, path.is_some(), path.cloned()));
    }
    if crashed.is_empty() {
        cluster.lock().await.start_node(leader)?;
        return Ok(format!(
            "election crash point: leader n{leader} killed, no other node wrote to its log within {} ms; restarted",
            REACH_WITHIN.as_millis()
        ));
    }
    let mode = ["drop", "torn", "reorder", "prefix"][rng.below(4) as usize];
    let mut victims = vec![leader];
    victims.extend(crashed.iter().map(|(id, _)| *id));
    let cut = power_cut_frozen(cluster, &victims, &[], mode, Duration::ZERO).await?;
    let stopped: Vec<String> = crashed
        .iter()
        .map(|(id, path)| format!("n{id} ({path})"))
        .collect();
    let names: Vec<String> = victims.iter().map(|id| format!("n{id}")).collect();
    let mut description = format!(
        "election crash point: leader n{leader} killed; storage stopped after the first log write since on {}; power loss ({mode}) of {}, restarted",
        stopped.join(", "),
        names.join(" ")
    );
    if let Some(&torn) = cut.log_torn.first() {
        let first = voter_attempt(torn, true, None);
        after_a_torn_log(cluster, torn, plan, rng, first, &mut description).await?;
    }
    Ok(description)
}

/// An election crash point's attempt on one voter: stopped at its first log write (the vote).
pub(super) fn voter_attempt(node: usize, reached: bool, path: Option<String>) -> CrashAttempt {
    CrashAttempt {
        reached,
        path,
        ..CrashAttempt::at(node, "voter", "wal", "write", 1, Correlation::All, None)
    }
}
