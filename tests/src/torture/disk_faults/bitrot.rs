//! Silent corruption of a record nobody acknowledged: a node killed inside a WAL fdatasync, the
//! record at its log's tail rotted, the node restarted.
use std::{sync::Arc, time::Duration};

use anyhow::Result;
use tokio::sync::Mutex;

use super::attach_to_wal;
use crate::torture::{cluster::Cluster, crash_points, leaders::leading_now};

/// How long an attempt to kill the node in a WAL fdatasync lasts: the injector starts, then the
/// node must make a few fdatasyncs (2 s was often too short on a loaded machine: a flakes
/// campaign saw 30 attempts in a row end without a kill).
const KILL_WITHIN: Duration = Duration::from_secs(6);

/// How long a restarted node gets to open its write-ahead log before a try to rot it.
const LOG_OPEN_WITHIN: Duration = Duration::from_secs(10);

/// How often wal-bitrot kills the follower in a WAL fdatasync, at most, to find a put at the tail.
pub(in crate::torture) const BITROT_TRIES: usize = 30;

/// Kills `node` inside a WAL fdatasync (injector), so the record it was syncing is on disk but
/// nobody acknowledged it, and silently corrupts that record if it holds a put (its key changed:
/// only the CRC tells), then restarts it; up to `tries` times until a put is at the tail. About
/// half of those records are entries with a put (the others commit points), fewer on a loaded
/// machine: 8 tries once missed them all in CI. Returns what was done.
pub async fn rot_an_unacknowledged_record(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    tries: usize,
) -> Result<String> {
    let mut rotted = None;
    let (mut kills, mut attempts) = (0, 0);
    // An attempt in which the node made too few fdatasyncs to be killed (a loaded machine)
    // is not a try; a bounded number of them.
    while kills < tries && attempts < 3 * tries {
        attempts += 1;
        // Each try lets a different number of fdatasyncs pass first, never fewer than two:
        // right after a restart the first ones are always the same kinds of record (the head
        // a start writes, a commit point while catching up), so killing at them every time
        // could miss puts for good.
        let skip = 2 + (attempts - 1) % 4;
        // A node restarted by the try before may not have opened its log yet (on a loaded
        // machine that took longer than the pause between tries, and the scenario then
        // rotted nothing): wait for it while it runs.
        let opened_by = std::time::Instant::now() + LOG_OPEN_WITHIN;
        // The node must append while the injector waits for its fdatasyncs: the workload may
        // crawl (a loaded machine) or be over (a scenario outlasts the run), so the harness
        // writes to the leader itself meanwhile.
        let filler = match leading_now(cluster, &[node]).await {
            Some(leader) => {
                let addr = cluster.lock().await.nodes[leader - 1].addr.clone();
                Some(tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let until = std::time::Instant::now() + KILL_WITHIN + LOG_OPEN_WITHIN;
                    while std::time::Instant::now() < until {
                        crash_points::fill_log(&client, &addr, 5).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }))
            }
            None => None,
        };
        let attached = loop {
            let attached = attach_to_wal(cluster, node, KILL_WITHIN, |fd| {
                format!("fdatasync(fd={fd})={skip}*off->1*kill")
            })
            .await?;
            if attached.is_some()
                || std::time::Instant::now() >= opened_by
                || !cluster.lock().await.running(node)
            {
                break attached;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(filler) = filler {
            filler.abort();
        }
        if attached.is_none() {
            return Ok(format!(
                "bitrot skipped: n{node} down, or its log not open within {} s",
                LOG_OPEN_WITHIN.as_secs()
            ));
        }
        let mut cluster = cluster.lock().await;
        if cluster.reap(node).is_none() {
            continue;
        }
        kills += 1;
        rotted = cluster.rot_wal_tail(node)?;
        cluster.start_node(node)?;
        if rotted.is_some() {
            break;
        }
        drop(cluster);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(rotted.map_or_else(
        || format!("killed in a WAL fdatasync {kills} times in {attempts} attempts, never with a put at the tail: nothing rotted"),
        |what| format!("killed in a WAL fdatasync (injector), {what} (silent corruption of a record nobody acknowledged), restarted (kill {kills}, attempt {attempts})"),
    ))
}
