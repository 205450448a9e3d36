//! Placing a crash point, waiting for it, and cutting the power of the nodes that go down with
//! it at the same moment (correlated crashes), after the oracles have seen the crashed state.
use super::*;

/// Adds the crash rule on the mounts of the running `nodes` (not waiting for it): returns the
/// rules, for `lift`.
pub(super) async fn place_on(
    cluster: &Arc<Mutex<Cluster>>,
    nodes: &[usize],
    rule: &str,
) -> Result<Vec<(usize, u64)>> {
    let cluster = cluster.lock().await;
    let mut placed = Vec::new();
    for &id in nodes {
        if cluster.running(id) {
            placed.push((id, cluster.add_fault(id, rule)?));
        }
    }
    Ok(placed)
}

/// Removes rules placed by `place_on`; returns the nodes whose storage had stopped at them.
pub(super) async fn lift(
    cluster: &Arc<Mutex<Cluster>>,
    placed: &[(usize, u64)],
) -> Result<Vec<usize>> {
    let cluster = cluster.lock().await;
    let mut stopped = Vec::new();
    for &(id, rule) in placed {
        if !cluster.faultfs_status(id)?["crashed"].is_null() {
            stopped.push(id);
        }
        cluster.remove_fault(id, rule)?;
    }
    Ok(stopped)
}

/// Adds the crash rule on `node`'s mount and waits until its storage stops at it (returns the
/// file the crashing call was on) or `within` passes (the rule is removed either way).
pub(super) async fn place_and_wait(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule: &str,
    within: Duration,
) -> Result<Option<String>> {
    let rule_id = cluster.lock().await.add_fault(node, rule)?;
    wait_for_crash(cluster, node, rule_id, within).await
}

/// Adds the crash rules on `node`'s mount and waits until its storage stops at one of them
/// (returns the call and file it stopped after) or `within` passes; the rules are removed
/// either way.
pub(super) async fn place_any_and_wait(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rules: &[String],
    within: Duration,
) -> Result<Option<StoppedAt>> {
    let mut rule_ids = Vec::new();
    for rule in rules {
        let added = cluster.lock().await.add_fault(node, rule);
        match added {
            Ok(id) => rule_ids.push(id),
            Err(error) => {
                let cluster = cluster.lock().await;
                for id in rule_ids {
                    cluster.remove_fault(node, id)?;
                }
                return Err(error);
            }
        }
    }
    wait_for_any_crash(cluster, node, &rule_ids, within).await
}

/// Where a node's storage stopped: the call and the file it was on.
pub(super) struct StoppedAt {
    pub(super) op: String,
    pub(super) path: String,
}

/// Waits until `node`'s storage stops at the crash rule `rule_id` (returns the file the crashing
/// call was on) or `within` passes, then removes the rule.
pub async fn wait_for_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_id: u64,
    within: Duration,
) -> Result<Option<String>> {
    let reached = wait_for_any_crash(cluster, node, &[rule_id], within).await?;
    Ok(reached.map(|point| point.path))
}

/// Waits until `node`'s storage stops at one of the crash rules `rule_ids` or `within` passes,
/// then removes them.
pub(super) async fn wait_for_any_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_ids: &[u64],
    within: Duration,
) -> Result<Option<StoppedAt>> {
    let reached =
        crate::torture::poll::poll_until(within, Duration::from_millis(10), move || async move {
            let status = match cluster.lock().await.faultfs_status(node) {
                Ok(status) => status,
                Err(error) => return ControlFlow::Break(Err(error)),
            };
            match status["crashed"]["path"].as_str() {
                Some(path) => ControlFlow::Break(Ok(StoppedAt {
                    op: status["crashed"]["op"]
                        .as_str()
                        .unwrap_or("call")
                        .to_owned(),
                    path: path.to_owned(),
                })),
                None => ControlFlow::Continue(()),
            }
        })
        .await
        .ok()
        .transpose()?;
    let cluster = cluster.lock().await;
    for &rule_id in rule_ids {
        cluster.remove_fault(node, rule_id)?;
    }
    Ok(reached)
}

/// `node` and, for a correlated crash, the next nodes round the ring up to a majority or all.
pub(super) fn correlated(
    node: usize,
    size: usize,
    correlation: Correlation,
    rng: &mut SplitMix64,
) -> Vec<usize> {
    let count = match correlation {
        Correlation::Alone => 1,
        Correlation::Majority => size / 2 + 1,
        Correlation::All => size,
    };
    // Which majority: the seed picks where round the ring the others start.
    let offset = 1 + rng.below(size as u64) as usize;
    let mut victims = vec![node];
    let mut next = node - 1 + offset;
    while victims.len() < count {
        let id = 1 + next % size;
        if !victims.contains(&id) {
            victims.push(id);
        }
        next += 1;
    }
    victims
}

/// The rule that stops a node's storage right after its next write to its data directory.
/// The faultfs rule that stops a node's storage right after its next write to its log (`log`:
/// the log's glob on its mount).
pub fn next_log_write_crash(log: &str) -> String {
    format!("write(path=\"{log}\")=1*crash")
}

pub(super) const FREEZE_RULE: &str = "write(path=\"db/**\")=1*crash";

/// Stops the storage of the running `nodes` right after each one's next write to its data
/// directory (a log append, mostly, caught before its fsync), so the nodes that lose power with
/// a crash point lose what each had in flight at that moment, as in a real correlated crash
/// (PACE), instead of syncing it in the seconds the harness takes to cut the power. Returns the
/// rules, which `power_cut_frozen` removes.
pub(super) async fn freeze_at_next_write(
    cluster: &Arc<Mutex<Cluster>>,
    nodes: &[usize],
) -> Result<Vec<(usize, u64)>> {
    place_on(cluster, nodes, FREEZE_RULE).await
}

/// Every victim killed first (so none writes on after another lost power), then each one's
/// unsynced data lost in `mode`, then, after `down_for`, each restarted.
pub async fn power_cut(
    cluster: &Arc<Mutex<Cluster>>,
    victims: &[usize],
    mode: &str,
    down_for: Duration,
) -> Result<Vec<usize>> {
    Ok(power_cut_frozen(cluster, victims, &[], mode, down_for)
        .await?
        .log_torn)
}

/// Every victim loses power in `mode` while `writes` run, each right after its next write to its
/// log (the storage stops there until the cut, as at a crash point), so each loses a record it
/// had in flight, unsynced: what a real power cut under load leaves, and the only way a `torn`
/// cut tears a record. Then they restart, and `writes` finish against the restarted nodes
/// before this returns. Returns the nodes whose log a write was torn in, and what `writes`
/// returned.
pub async fn power_cut_mid_write<F>(
    cluster: &Arc<Mutex<Cluster>>,
    victims: &[usize],
    mode: &str,
    writes: F,
) -> Result<(PowerCut, F::Output)>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rule = next_log_write_crash(&cluster.lock().await.target.log_glob());
    let frozen = place_on(cluster, victims, &rule).await?;
    let writes = tokio::spawn(writes);
    let started = Instant::now();
    while started.elapsed() < REACH_WITHIN {
        let mut stopped = 0;
        for &(id, _) in &frozen {
            if !cluster.lock().await.faultfs_status(id)?["crashed"].is_null() {
                stopped += 1;
            }
        }
        if stopped == frozen.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut = power_cut_frozen(cluster, victims, &frozen, mode, Duration::ZERO).await?;
    let written = writes.await?;
    Ok((cut, written))
}

/// What a `power_cut_frozen` did.
pub struct PowerCut {
    /// The frozen victims whose storage had stopped by then.
    pub stopped: Vec<usize>,
    /// The victims a write to their log was torn on: their recovery meets a torn record.
    pub log_torn: Vec<usize>,
}

/// `power_cut`, for victims frozen by `freeze_at_next_write`: their rules are removed before
/// they are killed (one that never fired must not stop the restarted node).
pub(super) async fn power_cut_frozen(
    cluster: &Arc<Mutex<Cluster>>,
    victims: &[usize],
    frozen: &[(usize, u64)],
    mode: &str,
    down_for: Duration,
) -> Result<PowerCut> {
    let rounds = cluster.lock().await.status_rounds.clone();
    seen_by_the_oracles(rounds).await;
    let mut stopped = Vec::new();
    let mut log_torn = Vec::new();
    {
        let mut cluster = cluster.lock().await;
        for &(id, rule) in frozen {
            if !cluster.faultfs_status(id)?["crashed"].is_null() {
                stopped.push(id);
            }
            cluster.remove_fault(id, rule)?;
        }
        for &id in victims {
            cluster.kill_node(id);
        }
        for &id in victims {
            let torn = cluster.lose_power(id, mode)?;
            let log = cluster.target.log_glob();
            if torn.iter().any(|file| in_the_log(file, &log)) {
                log_torn.push(id);
            }
        }
    }
    tokio::time::sleep(down_for).await;
    let mut cluster = cluster.lock().await;
    for &id in victims {
        cluster.start_node(id)?;
    }
    Ok(PowerCut { stopped, log_torn })
}

/// Whether a path on a node's mount is one of its log's files (`log`: the target's log glob).
pub(super) fn in_the_log(path: &str, log: &str) -> bool {
    path.starts_with(log.trim_end_matches('*'))
}

/// Waits for one whole round of /status polls that started after the call: what a node
/// reported in the crashed state (its storage stopped, its process still answering) is then
/// known to the oracles, which hold it to that after its restart. At most 2 s (a node that
/// does not answer slows a round down), and not at all outside a run.
pub(super) async fn seen_by_the_oracles(rounds: Option<tokio::sync::watch::Receiver<u64>>) {
    let Some(mut rounds) = rounds else {
        return;
    };
    let now = *rounds.borrow_and_update();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        rounds.wait_for(|&count| count >= now + 2),
    )
    .await;
}

pub(super) async fn role_of(cluster: &Arc<Mutex<Cluster>>, node: usize) -> String {
    let (target, addr) = {
        let cluster = cluster.lock().await;
        (cluster.target.clone(), cluster.nodes[node - 1].addr.clone())
    };
    let client = reqwest::Client::new();
    target
        .status(&client, &addr)
        .await
        .and_then(|s| s["state"].as_str().map(str::to_lowercase))
        .unwrap_or_else(|| "unknown".into())
}
