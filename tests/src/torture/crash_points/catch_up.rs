//! Crash points aimed at a catch-up from a snapshot: a follower kept down until the leader has
//! compacted its log past it, then crashed among its first durable calls as the snapshot arrives.
use target_db_client::{Client, Op, Request};

use super::*;

/// The calls a node catching up from a snapshot makes: writing it and the log, syncing them,
/// renaming the snapshot into place.
pub(super) const CATCH_UP_CALLS: &[&str] = &["write", "fdatasync", "fsync", "rename"];

/// How long the leader gets to compact its log past a stopped follower's last entry.
pub(super) const COMPACTION_WITHIN: Duration = Duration::from_secs(8);

/// How a follower was kept down by `kill_until_compacted`.
pub struct KeptDown {
    /// The follower's last log index when it was killed.
    pub last: u64,
    /// Whether the leader's log was purged past it in time.
    pub compacted: bool,
    pub for_: Duration,
}

/// Writes a pass of `kill_until_compacted` sends to the leader, to one key of its own outside
/// the workload's (`compaction-filler`), so they touch no checked key.
pub(super) const FILLER_WRITES: u64 = 20;

/// The filler writes' client id and its next sequence number (one client for the whole run,
/// so its sequence numbers only rise).
pub(super) const FILLER_CLIENT: u64 = u64::MAX - 1;

static FILLER_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) async fn fill_log(client: &reqwest::Client, leader_addr: &str, writes: u64) {
    let nodes = Client::with_http(client.clone()).timeout(Duration::from_millis(500));
    for _ in 0..writes {
        let seq = FILLER_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let op = Op::Put {
            key: "compaction-filler".into(),
            value: seq.to_string(),
        };
        let request = Request {
            client: FILLER_CLIENT,
            seq,
            op,
        };
        // A refusal is an answer (the leader is there, just not taking this one); silence is not.
        match nodes.write(leader_addr, &request).await {
            Ok(_) | Err(target_db_client::Error::Refused { .. }) => {}
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
        }
    }
}

/// Kills `follower` and keeps it down until `leader` has purged its log past the follower's
/// last entry, so that it can only catch up from a snapshot, or until `within` passes.
pub async fn kill_until_compacted(
    cluster: &Arc<Mutex<Cluster>>,
    follower: usize,
    leader: usize,
    within: Duration,
) -> Result<KeptDown> {
    let client = reqwest::Client::new();
    let (follower_addr, leader_addr) = {
        let cluster = cluster.lock().await;
        (
            cluster.nodes[follower - 1].addr.clone(),
            cluster.nodes[leader - 1].addr.clone(),
        )
    };
    let last = status(&client, &follower_addr)
        .await
        .and_then(|s| s["last_log_index"].as_u64())
        .unwrap_or(0);
    cluster.lock().await.kill_node(follower);
    let started = Instant::now();
    let compacted = loop {
        let purged = status(&client, &leader_addr)
            .await
            .and_then(|s| s["purged_index"].as_u64());
        if purged.is_some_and(|purged| purged > last) {
            break true;
        }
        if started.elapsed() >= within {
            break false;
        }
        // The log must grow to the leader's next snapshot: the workload may be slow (a loaded
        // machine) or over (a scenario outlasts the run), so the wait writes too.
        fill_log(&client, &leader_addr, FILLER_WRITES).await;
    };
    Ok(KeptDown {
        last,
        compacted,
        for_: started.elapsed(),
    })
}

/// A crash point aimed at a catch-up from a snapshot (Raft's InstallSnapshot): a follower is
/// stopped until the leader has compacted its log past the follower's last entry, so the
/// leader must send a snapshot, and the follower writes it while it drops the log entries the
/// snapshot replaces. Its storage stops right after one of its first durable calls from its
/// restart on (half the time one of the snapshot's), and it loses power; or, half the time at
/// a call it makes itself, it is SIGKILLed at that call (a program crash). Two durable steps on two files, in an order that matters
/// (the log compacted only once the snapshot holding its entries is on disk), in a window
/// that random faults almost never hit: they strike running nodes.
pub(super) async fn catch_up_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
) -> Result<String> {
    let follower = crate::torture::leaders::follower_near(cluster, node).await;
    let Some(leader) = crate::torture::leaders::leading_now(cluster, &[follower]).await else {
        return Ok("catch-up crash point skipped: no leader".into());
    };
    if !cluster.lock().await.running(follower) {
        return Ok(format!("catch-up crash point skipped: n{follower} down"));
    }
    let Some((class, call)) = plan.catch_up_pair(rng) else {
        return Ok("catch-up crash point skipped: no durable call seen yet".into());
    };
    // The log takes a few writes before the snapshot arrives (its head at start, a vote); the
    // snapshot's files see one call of each kind per snapshot.
    let skip = rng.below(if class.name == "wal" { 4 } else { 2 });
    let mode = power_loss_mode(call, rng);
    let program_crash = killable(call) && rng.below(2) == 0;
    let KeptDown {
        last,
        compacted,
        for_,
    } = kill_until_compacted(cluster, follower, leader, COMPACTION_WITHIN).await?;
    let down_ms = for_.as_millis();
    let action = if program_crash { "kill" } else { "crash" };
    let rule = format!("{call}(path=\"{}\")={skip}*off->1*{action}", class.glob);
    let kills_before = kills_so_far(cluster, follower).await?;
    let rule_id = {
        let mut cluster = cluster.lock().await;
        let rule_id = cluster.add_fault(follower, &rule)?;
        cluster.start_node(follower)?;
        rule_id
    };
    let reached = if program_crash {
        wait_for_kill(
            cluster,
            follower,
            rule_id,
            kills_before,
            REACH_ONCE_RECOVERED_WITHIN,
        )
        .await?
    } else {
        wait_for_crash(cluster, follower, rule_id, REACH_ONCE_RECOVERED_WITHIN).await?
    };
    plan.attempts.push(CrashAttempt {
        program_crash,
        ..CrashAttempt::at(
            follower,
            "catching up",
            class.name,
            call,
            skip + 1,
            Correlation::Alone,
            reached.clone(),
        )
    });
    let how = if compacted {
        format!(
            "down {down_ms} ms until n{leader} had compacted its log past n{follower}'s last entry ({last})"
        )
    } else {
        format!(
            "down {down_ms} ms, but n{leader} had not compacted its log past n{follower}'s last entry ({last}): it caught up by appends"
        )
    };
    let Some(path) = reached else {
        return Ok(format!(
            "catch-up crash point: n{follower} {how}; restarted, and its {} {call} #{} was not reached within {} ms",
            class.name,
            skip + 1,
            REACH_ONCE_RECOVERED_WITHIN.as_millis()
        ));
    };
    if program_crash {
        return Ok(format!(
            "catch-up crash point: n{follower} {how}; restarted, SIGKILLed as it made its {} {call} #{} ({path}), which was not made (no power loss), restarted",
            class.name,
            skip + 1
        ));
    }
    power_cut(cluster, &[follower], mode, Duration::ZERO).await?;
    Ok(format!(
        "catch-up crash point: n{follower} {how}; restarted, storage stopped after its {} {call} #{} ({path}), power loss ({mode}), restarted",
        class.name,
        skip + 1
    ))
}
