//! What a node says it applied, and the wait until the results check can see it: a fault
//! that leaves a node with state the others do not share must not end before that node
//! reports a results checkpoint past it, or the next fault (a restart rebuilds the state from
//! the log again, a snapshot sent to a node that fell behind replaces it) hides the difference.
use std::{ops::ControlFlow, sync::Arc, time::Duration};

use tokio::sync::Mutex;

use super::{cluster::Cluster, poll::poll_until};

/// How long a node may take to apply up to its next results checkpoint: target-db keeps one
/// every 1,000 entries, and the torture's load commits several hundred to a few thousand
/// entries a second.
const CHECKPOINT_WITHIN: Duration = Duration::from_secs(5);

/// Node `id`'s /status, if it answers.
async fn status_of(cluster: &Arc<Mutex<Cluster>>, id: usize) -> Option<serde_json::Value> {
    let (target, addr) = {
        let cluster = cluster.lock().await;
        (cluster.target.clone(), cluster.node(id).addr.clone())
    };
    target.status(&reqwest::Client::new(), &addr).await
}

/// What the nodes' /status says in `field`, if it says.
pub(super) async fn indexes_of(
    cluster: &Arc<Mutex<Cluster>>,
    nodes: &[usize],
    field: &str,
) -> Vec<(usize, Option<u64>)> {
    let mut said = Vec::new();
    for &id in nodes {
        let value = status_of(cluster, id)
            .await
            .and_then(|status| status[field].as_u64());
        said.push((id, value));
    }
    said
}

/// `field` of `node`'s /status once it answers (a restarted node), polled for up to `limit`.
pub(super) async fn index_once_up(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    field: &str,
    limit: Duration,
) -> Option<u64> {
    poll_until(limit, Duration::from_millis(50), || async {
        match indexes_of(cluster, &[node], field).await[..] {
            [(_, Some(index))] => ControlFlow::Break(index),
            _ => ControlFlow::Continue(()),
        }
    })
    .await
    .ok()
}

/// `nN index` for each node, `?` where it did not say.
pub(super) fn said(indexes: &[(usize, Option<u64>)]) -> String {
    let said: Vec<String> = indexes
        .iter()
        .map(|(id, index)| format!("n{id} {}", index.map_or("?".to_owned(), |i| i.to_string())))
        .collect();
    said.join(", ")
}

/// Waits until each node reports a results checkpoint past the index given for it (the nodes
/// watcher polls every 50 ms and sees it too); says what each reached.
pub(super) async fn checkpoint_past(
    cluster: &Arc<Mutex<Cluster>>,
    applied: &[(usize, Option<u64>)],
) -> String {
    let mut waited = Vec::new();
    for &(id, index) in applied {
        let Some(index) = index else { continue };
        let reached = poll_until(CHECKPOINT_WITHIN, Duration::from_millis(100), || async {
            let newest = status_of(cluster, id).await.and_then(|status| {
                status["result_checkpoints"]
                    .as_array()?
                    .iter()
                    .filter_map(|checkpoint| checkpoint[0].as_u64())
                    .max()
            });
            match newest {
                Some(newest) if newest > index => ControlFlow::Break(newest),
                _ => ControlFlow::Continue(()),
            }
        })
        .await;
        waited.push(match reached {
            Ok(checkpoint) => format!("; n{id} applied results checkpoint {checkpoint}"),
            Err(()) => format!(
                "; n{id} reported no results checkpoint past {index} within {} ms",
                CHECKPOINT_WITHIN.as_millis()
            ),
        });
    }
    waited.concat()
}
