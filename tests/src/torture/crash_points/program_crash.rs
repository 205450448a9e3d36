//! Crash points that crash the program alone: the node SIGKILLed as it makes a call (faultfs
//! `kill`), no power lost, so what it wrote before stays in the page cache.
use super::*;
use crate::torture::poll::poll_until;

/// Whether a program crash can be placed at `call`: the program makes it itself (a `write`
/// reaches faultfs from the page cache, on the kernel's schedule).
pub(super) fn killable(call: &str) -> bool {
    call != "write"
}

/// A crash of the program alone at a call (faultfs `kill`): the node is SIGKILLed as it makes
/// its Kth `call` on `class`, the call is never made, and everything it wrote before stays in
/// the page cache, since the machine keeps running (an OOM kill, a panic, `kill -9`: the most
/// common crash). It shows what no power loss can: a step the program only wrote is on the
/// disk without the step it makes next (a power loss drops the unsynced write with it), so
/// two steps made in the wrong order meet the recovery half done. Half the time a power loss
/// follows the restart, which shows whether the new process made what it read durable before
/// relying on it.
pub(super) async fn program_crash_point(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    class: FileClass,
    call: &'static str,
    rng: &mut SplitMix64,
) -> Result<String> {
    let skip = calls_to_skip(&class, call, rng);
    let role = role_of(cluster, node).await;
    let within = reach_within(&class, call);
    let rule = format!("{call}(path=\"{}\")={skip}*off->1*kill", class.glob);
    let before = kills_so_far(cluster, node).await?;
    let rule_id = cluster.lock().await.add_fault(node, &rule)?;
    let reached = wait_for_kill(cluster, node, rule_id, before, within).await?;
    plan.attempts.push(CrashAttempt {
        program_crash: true,
        ..CrashAttempt::at(
            node,
            role,
            class.name,
            call,
            skip + 1,
            Correlation::Alone,
            reached.clone(),
        )
    });
    let Some(path) = reached else {
        return Ok(format!(
            "program crash point `{rule}` ({} {call} #{}) not reached within {} ms",
            class.name,
            skip + 1,
            within.as_millis()
        ));
    };
    let killed = format!(
        "program crash: n{node} SIGKILLed as it made its {} {call} #{} ({path}), which was not made; what it wrote before stayed in the page cache; restarted",
        class.name,
        skip + 1
    );
    // Half the time the power goes a moment later. The new process read the page cache as if
    // it were the disk; whatever it then relied on (entries it vouched for, a file it went on
    // appending to) must have been made durable first. PostgreSQL fsyncs its data directory
    // when crash recovery starts for this reason; a database that does not loses writes it
    // acknowledged after the restart.
    if rng.below(2) == 0 {
        return Ok(killed);
    }
    let after = Duration::from_millis(200 + rng.below(1301));
    tokio::time::sleep(after).await;
    cluster.lock().await.power_loss(node, "drop")?;
    Ok(format!(
        "{killed}; {} ms later power loss (drop), restarted",
        after.as_millis()
    ))
}

/// How many processes `node`'s mount has killed so far.
pub(super) async fn kills_so_far(cluster: &Arc<Mutex<Cluster>>, node: usize) -> Result<u64> {
    let status = cluster.lock().await.faultfs_status(node)?;
    Ok(status["killed"]["count"].as_u64().unwrap_or(0))
}

/// Waits until the `kill` rule `rule_id` on `node`'s mount has killed the node (more kills than
/// `before`) or `within` passes, removes the rule, and restarts the node if it was killed.
/// Returns the file the fatal call was on.
pub(super) async fn wait_for_kill(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_id: u64,
    before: u64,
    within: Duration,
) -> Result<Option<String>> {
    let path = await_kill(cluster, node, rule_id, before, within).await?;
    if path.is_some() {
        cluster.lock().await.start_node(node)?;
    }
    Ok(path)
}

/// Places the `kill` rule `rule` on `node`'s mount and waits up to `within` for it to kill the
/// node, which then stays down. Returns the file the fatal call was on; None (the rule
/// removed, the node still running) if the call did not come in time.
pub(crate) async fn kill_at(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule: &str,
    within: Duration,
) -> Result<Option<String>> {
    let before = kills_so_far(cluster, node).await?;
    let rule_id = cluster.lock().await.add_fault(node, rule)?;
    await_kill(cluster, node, rule_id, before, within).await
}

/// [`wait_for_kill`] without the restart.
pub(super) async fn await_kill(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule_id: u64,
    before: u64,
    within: Duration,
) -> Result<Option<String>> {
    let waited = poll_until(within, Duration::from_millis(10), || async move {
        match kills_so_far(cluster, node).await {
            Ok(kills) if kills == before => ControlFlow::Continue(()),
            Ok(_) => ControlFlow::Break(Ok(())),
            Err(error) => ControlFlow::Break(Err(error)),
        }
    })
    .await;
    if let Ok(Err(error)) = waited {
        return Err(error);
    }
    cluster.lock().await.remove_fault(node, rule_id)?;
    // Counted once the rule is gone, so a kill as it was being removed is not missed.
    let status = cluster.lock().await.faultfs_status(node)?;
    if status["killed"]["count"].as_u64().unwrap_or(0) == before {
        return Ok(None);
    }
    let path = status["killed"]["last"]["path"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    // The signal went out before the call's reply: the process is gone or about to be.
    let gone = crate::torture::poll::wait_for(
        Duration::from_secs(5),
        Duration::from_millis(10),
        move || async move { cluster.lock().await.reap(node).is_some() },
    )
    .await;
    anyhow::ensure!(
        gone,
        "n{node} still runs 5 s after its faultfs killed it at {path}"
    );
    Ok(Some(path))
}
