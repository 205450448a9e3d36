//! The last fault of a run: a new value written to every key, then every node loses power at
//! once and restarts. What the database acknowledged must survive that (the final reads check
//! it); a write made durable only by a later one, which a run's faults can hide, is lost here
//! because nothing comes after it; and each node must recover from the disk the whole run left
//! behind (a torn tail an earlier recovery kept, a hole a purge left), not only from the state
//! a fault caught. The mode alternates with the seed: `drop` loses all that was unsynced,
//! `torn` also leaves half-written records for recovery to cut.
use std::{
    ops::ControlFlow,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::Mutex;

use super::{
    CheckResult,
    cluster::Cluster,
    crash_points,
    leaders::leader_agreed,
    poll,
    target::Target,
    workload::{self, Recorder},
};
use crate::check::Verdict;

/// In how many rounds of the final writes a follower's next WAL fdatasync fails.
const GATED_ROUNDS: u64 = 3;

/// A WAL fdatasync failing the way Linux fails it (EIO, the dirty pages marked clean
/// unwritten), once: a database must stop trusting that data (target-db stops taking writes
/// until it restarts; the leader and the other nodes carry on). One that retries the fsync, or
/// ignores the error, acknowledges entries it has lost, which the power loss that follows
/// shows.
fn gate_rule(target: &Target) -> String {
    format!(r#"fdatasync(path="{}")=1*fsyncgate"#, target.log_glob())
}

/// The target, an HTTP client and every node's address: what it takes to talk to the cluster.
pub(super) type ClientOf<'a> = (&'a Target, &'a reqwest::Client, &'a [String]);

/// The follower whose fdatasyncs the final rounds fail, if there is a leader and a majority
/// without that follower.
async fn follower_to_gate((target, http, addrs): ClientOf<'_>) -> Option<usize> {
    if addrs.len() < 3 {
        return None;
    }
    let leader = leader_agreed(target, http, addrs, Duration::ZERO).await?;
    Some(leader as usize % addrs.len() + 1)
}

/// Whether the node's fault rule has fired, waiting for it up to `within`.
async fn gate_fired(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule: u64,
    within: Duration,
) -> Result<bool> {
    let fired = poll::poll_until(within, Duration::from_millis(20), move || async move {
        let status = match cluster.lock().await.faultfs_status(node) {
            Ok(status) => status,
            Err(error) => return ControlFlow::Break(Err(error)),
        };
        let fired = status["faults"]
            .as_array()
            .and_then(|rules| rules.iter().find(|r| r["id"] == rule))
            .is_some_and(|r| r["fired"].as_u64() > Some(0));
        if fired {
            ControlFlow::Break(Ok(()))
        } else {
            ControlFlow::Continue(())
        }
    })
    .await;
    match fired {
        Ok(Ok(())) => Ok(true),
        Ok(Err(error)) => Err(error),
        Err(()) => Ok(false),
    }
}

/// The second power loss of every node, after the first tore a record in the logs of `torn`:
/// once every key is written again (acknowledged, so synced behind the damage), the power
/// goes again (`drop`) and they restart. A recovery that cut the torn record only in memory,
/// or left it in the file, now meets it in the middle of the log, with acknowledged records
/// after it; the first restart alone never shows that. Returns the leader the nodes then
/// agree on.
async fn power_loss_again(
    (seed, keys, settle): (u64, u64, Duration),
    cluster: &Arc<Mutex<Cluster>>,
    (target, http, addrs): ClientOf<'_>,
    recorder: &Recorder,
    torn: &[usize],
) -> Result<Option<u64>> {
    let first_process = 2_000_000 + (GATED_ROUNDS + 2) * 1_000_000;
    let written = workload::final_writes(target, addrs, keys, seed, recorder, first_process).await;
    let cut = recorder.fault_starts("all", "second power loss (drop)");
    let everyone: Vec<usize> = (1..=addrs.len()).collect();
    crash_points::power_cut(cluster, &everyone, "drop", Duration::ZERO).await?;
    let torn: Vec<String> = torn.iter().map(|node| format!("n{node}")).collect();
    recorder.fault_ends(
        cut,
        "all".into(),
        format!(
            "second power loss of every node (drop): the first tore a record in the log of {}; \
             after one more write to every key ({written} of {keys} acknowledged), restarted",
            torn.join(" ")
        ),
    );
    Ok(leader_agreed(target, http, addrs, settle).await)
}

/// The final power loss, with the gated rounds of writes before it (and a second power loss
/// after a torn one); its check: the nodes agree on a leader again within `settle`.
pub(super) async fn final_power_loss(
    (seed, keys, settle): (u64, u64, Duration),
    cluster: &Arc<Mutex<Cluster>>,
    client: ClientOf<'_>,
    recorder: &Recorder,
) -> Result<CheckResult> {
    let (target, http, addrs) = client;
    let mode = ["drop", "torn"][(seed % 2) as usize];
    // Rounds of writes, in each of the first ones one follower's next WAL fdatasync fails; a
    // failed fsync loses whole pages only when it was for a 16 KiB record, not for a small
    // commit point, so it is tried in several rounds. The last round comes after them: a
    // database that acknowledged what a failed fsync lost then writes and syncs more behind
    // it, and its commit point moves past it, so the loss is in the middle of what it
    // acknowledged, not at a tail nobody counted yet.
    let gated = follower_to_gate(client).await;
    let mut written = 0;
    let mut failed_fsyncs = 0;
    for round in 0..=GATED_ROUNDS {
        let rule = match gated {
            Some(node) if round < GATED_ROUNDS => Some((
                node,
                cluster.lock().await.add_fault(node, &gate_rule(target))?,
            )),
            _ => None,
        };
        let first_process = 2_000_000 + round * 1_000_000;
        written += workload::final_writes(target, addrs, keys, seed, recorder, first_process).await;
        if let Some((node, rule)) = rule {
            if gate_fired(cluster, node, rule, Duration::from_secs(1)).await? {
                failed_fsyncs += 1;
            }
            // Removed before the next round and the cut: one that never fired must not fail
            // the restarted node.
            cluster.lock().await.remove_fault(node, rule)?;
        }
    }
    let gate = match gated {
        Some(node) => format!(
            ", {failed_fsyncs} of n{node}'s WAL fdatasyncs among them (one a round in {GATED_ROUNDS} \
             rounds) failing as Linux fails them (fsyncgate: EIO, the dirty pages dropped)"
        ),
        None => String::new(),
    };
    let cut = recorder.fault_starts("all", format!("final power loss ({mode})"));
    let everyone: Vec<usize> = (1..=addrs.len()).collect();
    let (torn, in_flight) = if mode == "torn" {
        // A torn cut tears only what is in flight: one more write to every key runs meanwhile,
        // and each node loses power right after its next log write.
        let writes = {
            let (target, addrs, recorder) = (target.clone(), addrs.to_vec(), recorder.clone());
            let first_process = 2_000_000 + (GATED_ROUNDS + 1) * 1_000_000;
            async move {
                workload::final_writes(&target, &addrs, keys, seed, &recorder, first_process).await
            }
        };
        let (cut, written) =
            crash_points::power_cut_mid_write(cluster, &everyone, mode, writes).await?;
        let stopped: Vec<String> = cut.stopped.iter().map(|id| format!("n{id}")).collect();
        let in_flight = format!(
            ", while one more write to every key was in flight (each node cut right after its \
             next log write: {} reached it; {written} of {keys} of these acknowledged after the \
             restart)",
            if stopped.is_empty() {
                "none".to_owned()
            } else {
                stopped.join(" ")
            }
        );
        (cut.log_torn, in_flight)
    } else {
        let torn = crash_points::power_cut(cluster, &everyone, mode, Duration::ZERO).await?;
        (torn, String::new())
    };
    recorder.fault_ends(
        cut,
        "all".into(),
        format!(
            "final power loss of every node ({mode}) right after {} writes to every key \
             ({written} of {} acknowledged){gate}{in_flight}, restarted",
            GATED_ROUNDS + 1,
            (GATED_ROUNDS + 1) * keys
        ),
    );
    let restarted = Instant::now();
    let mut serves = leader_agreed(target, http, addrs, settle).await;
    let mut restarts = "the restart";
    if serves.is_some() && !torn.is_empty() {
        serves = power_loss_again((seed, keys, settle), cluster, client, recorder, &torn).await?;
        restarts = "the second restart";
    }
    Ok(CheckResult {
        name: "serves after a power loss of every node".into(),
        verdict: if serves.is_some() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: match serves {
            Some(leader) => format!(
                "{mode}: leader n{leader} {:.1} s after the first restart",
                restarted.elapsed().as_secs_f64()
            ),
            None => format!(
                "{mode}: the nodes did not agree on a leader within {} s of {restarts}",
                settle.as_secs()
            ),
        },
    })
}
