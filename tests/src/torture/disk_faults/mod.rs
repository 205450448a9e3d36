//! The faults on a node's disk and log that take more than one rule, shared by the nemesis and
//! the scenarios: a corrupted record in the middle of the log, a crash at the Nth WAL write or
//! fdatasync, a disk failing while the node catches up, a record rotted at the tail, and the
//! helpers that attach the injector to the WAL or a faultfs rule for a while.

mod bitrot;

pub(in crate::torture) use bitrot::{BITROT_TRIES, rot_an_unacknowledged_record};

use std::{ops::ControlFlow, sync::Arc, time::Duration};

use anyhow::{Result, bail};
use fault_rules::SplitMix64;
use tokio::sync::Mutex;

use crate::torture::{cluster::Cluster, leaders::follower_near, poll};

/// How long a node with a damaged log gets to refuse to start (it reads its log first).
const REFUSAL_WITHIN: Duration = Duration::from_secs(5);

/// The `corruption` fault on `node`: stop it, flip one byte in the payload of a record that is
/// neither the last nor in a segment's torn tail, start it, and see whether it refuses.
pub(in crate::torture) async fn corrupt_mid_log(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rng: &mut SplitMix64,
) -> Result<String> {
    if !cluster.lock().await.running(node) {
        return Ok("corruption skipped: node down".into());
    }
    cluster.lock().await.kill_node(node);
    let pick = rng.next_u64();
    let Some(rot) = cluster.lock().await.rot_wal_middle(node, pick)? else {
        cluster.lock().await.start_node(node)?;
        return Ok(format!(
            "n{node}: corruption skipped: its log has too few records"
        ));
    };
    cluster.lock().await.start_node(node)?;
    let refused = poll::poll_until(
        REFUSAL_WITHIN,
        Duration::from_millis(50),
        move || async move {
            match cluster.lock().await.reap(node) {
                Some(status) => ControlFlow::Break(status),
                None => ControlFlow::Continue(()),
            }
        },
    )
    .await
    .ok();
    match refused {
        Some(status) => {
            cluster.lock().await.damaged_logs.refused += 1;
            cluster.lock().await.restore(&rot)?;
            cluster.lock().await.start_node(node)?;
            Ok(format!(
                "n{node}: {}; it refused to start ({status}), the byte was put back, restarted",
                rot.what
            ))
        }
        None => {
            let what = format!(
                "n{node}: {}; it started on the damaged log (still running after {} s)",
                rot.what,
                REFUSAL_WITHIN.as_secs()
            );
            cluster
                .lock()
                .await
                .damaged_logs
                .accepted
                .push(what.clone());
            Ok(what)
        }
    }
}

/// A crash point: `injector attach` kills the node at its Nth write or fdatasync of the
/// active WAL segment; a write never happens, an fdatasync completes before the death.
pub(in crate::torture) async fn wal_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    rng: &mut SplitMix64,
) -> Result<String> {
    let call = ["write", "fdatasync"][rng.below(2) as usize];
    let skipped = rng.below(20);
    let Some(rule) = attach_to_wal(cluster, node, hold, |fd| {
        format!("{call}(fd={fd})={skipped}*off->1*kill")
    })
    .await?
    else {
        return Ok("wal-crash skipped: node down".into());
    };
    let mut cluster = cluster.lock().await;
    let Some(exit) = cluster.reap(node) else {
        return Ok(format!(
            "`{rule}` (injector): the node made fewer than {} such calls in {} ms",
            skipped + 1,
            hold.as_millis()
        ));
    };
    cluster.start_node(node)?;
    Ok(format!(
        "killed at WAL {call} #{} by `{rule}` (injector, {exit}), restarted",
        skipped + 1
    ))
}

/// `injector attach` of the rule `rule_for(fd)` for `hold`, where fd is the one through which the
/// node appends to its active WAL segment. Returns the rule, or None if the node is down.
pub(in crate::torture) async fn attach_to_wal(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    rule_for: impl FnOnce(u32) -> String,
) -> Result<Option<String>> {
    let attach = {
        let cluster = cluster.lock().await;
        cluster.wal_fd(node).map(|fd| {
            let rule = rule_for(fd);
            let command = cluster.attach_command(node, &rule, hold);
            (rule, command)
        })
    };
    let Some((rule, mut command)) = attach else {
        return Ok(None);
    };
    let status = tokio::task::spawn_blocking(move || command.status()).await??;
    if !status.success() {
        bail!("injector attach `{rule}` failed: {status}");
    }
    Ok(Some(rule))
}

/// A follower stopped for a while, then started with one of its first log fdatasyncs failing
/// the way Linux fails them (EIO, the dirty pages dropped): catching up, it appends entries by
/// the hundred, so the pages lost are whole ones that no later append writes again. A database
/// that retries the fsync and goes on has acknowledged entries that are not on its disk, which
/// the power loss that follows exposes. Or, half the time, a follower killed mid-rotation and
/// restarted with its log directory's fsyncs failing: one that trusts the page cache's
/// directory loses the new log file it went on appending to.
pub(in crate::torture) async fn disk_error_while_catching_up(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    rng: &mut SplitMix64,
) -> Result<String> {
    let follower = follower_near(cluster, node).await;
    if !cluster.lock().await.running(follower) {
        return Ok(format!(
            "n{follower}: disk error while catching up skipped: node down"
        ));
    }
    // Short enough that the leader still has the entries in its log (no snapshot is sent).
    let behind = Duration::from_millis(400 + rng.below(500));
    let skip = 1 + rng.below(3);
    let (log, log_dir) = {
        let cluster = cluster.lock().await;
        (cluster.target.log_glob(), cluster.target.log_dir())
    };
    // Half the time the kill is aimed at the fsync of the log's directory, if one comes within
    // a second: a rotation's new log file is then in the page cache's directory, not the
    // disk's. The restarted node must make what it finds durable before it relies on it; while
    // it catches up, its directory fsyncs fail, so the next rotation cannot make that name
    // durable by chance, and the power loss at the end takes whatever it was not made to sync.
    let aimed = if rng.below(2) == 0 {
        let rule = format!(r#"fsync(path="{log_dir}")=kill"#);
        crate::torture::crash_points::kill_at(cluster, follower, &rule, Duration::from_secs(1))
            .await?
    } else {
        None
    };
    let (how, rule, failing) = if aimed.is_some() {
        (
            "killed at its log directory's fsync",
            format!(r#"fsync(path="{log_dir}")=error(EIO)"#),
            "its log directory's fsyncs failing (EIO)".to_owned(),
        )
    } else {
        (
            "killed",
            format!(r#"fdatasync(path="{log}")={skip}*off->1*fsyncgate"#),
            format!(
                "its WAL fdatasync #{} failing once (fsyncgate: EIO, dirty pages dropped)",
                skip + 1
            ),
        )
    };
    cluster.lock().await.kill_node(follower);
    tokio::time::sleep(behind).await;
    let rule_id = {
        let mut cluster = cluster.lock().await;
        let rule_id = cluster.add_fault(follower, &rule)?;
        cluster.start_node(follower)?;
        rule_id
    };
    tokio::time::sleep(hold).await;
    let mut cluster = cluster.lock().await;
    cluster.remove_fault(follower, rule_id)?;
    cluster.power_loss(follower, "drop")?;
    Ok(format!(
        "n{follower} {how}, restarted {} ms later with {failing} while it caught up; after {} ms power loss (drop), restarted",
        behind.as_millis(),
        hold.as_millis()
    ))
}

/// A faultfs rule on the node's mount for `hold`, then removed.
pub(in crate::torture) async fn with_fault_rule(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule: &str,
    hold: Duration,
) -> Result<()> {
    let rule_id = cluster.lock().await.add_fault(node, rule)?;
    tokio::time::sleep(hold).await;
    cluster.lock().await.remove_fault(node, rule_id)
}
