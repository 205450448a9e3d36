//! Crash points that strike again: while the node recovers, and once it has recovered and
//! written to its log again.
use super::*;

/// A second crash point while `node` recovers from the first: recovery's own writes (cutting
/// a torn tail, replaying, rewriting metadata) must leave a state the next recovery accepts.
pub(super) async fn crash_while_recovering(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
    mode: &str,
    first: CrashAttempt,
    description: &mut String,
) -> Result<()> {
    let (class, call) = plan.next_pair();
    let skip = rng.below(3);
    let rule = format!("{call}(path=\"{}\")={skip}*off->1*crash", class.glob);
    let reached = place_and_wait(cluster, node, &rule, REACH_DURING_RECOVERY_WITHIN).await?;
    plan.attempts.push(CrashAttempt {
        class: class.name,
        call,
        nth: skip + 1,
        correlation: Correlation::Alone,
        during_recovery: true,
        reached: reached.is_some(),
        path: reached.clone(),
        role: "recovering".into(),
        ..first
    });
    match reached {
        Some(path) => {
            power_cut(cluster, &[node], mode, Duration::ZERO).await?;
            description.push_str(&format!(
                "; while recovering, stopped again after {} {call} #{} ({path}), power loss ({mode}), restarted",
                class.name,
                skip + 1
            ));
        }
        None => description.push_str(&format!(
            "; a second crash point while recovering ({} {call} #{}) was not reached",
            class.name,
            skip + 1
        )),
    }
    Ok(())
}

/// Where a crash once recovered stops the node's storage: right after its (`skip` + 1)th call
/// to its log of any of `calls` (each call counted on its own).
pub(super) struct StopAt {
    pub(super) calls: &'static [&'static str],
    pub(super) skip: u64,
}

/// A second crash once `node` has recovered and made its log calls `stop` names: what recovery
/// repaired only in memory (a torn tail found but left in the file, a half-done purge) is
/// met by the next recovery, after new records were appended behind it; and the first
/// appends after a restart (a new leader's truncation of the node's old suffix) meet a power
/// loss. Without this, a node often runs to the end of the run on the state its recovery
/// left, and nothing reads it. Returns whether that power loss tore a write to its log.
pub(super) async fn crash_once_recovered(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    plan: &mut CrashPlan,
    rng: &mut SplitMix64,
    stop: StopAt,
    first: CrashAttempt,
    description: &mut String,
) -> Result<bool> {
    let rules: Vec<String> = stop
        .calls
        .iter()
        .map(|call| {
            let log = log_class(plan.classes);
            format!("{call}(path=\"{log}\")={}*off->1*crash", stop.skip)
        })
        .collect();
    let reached = place_any_and_wait(cluster, node, &rules, REACH_ONCE_RECOVERED_WITHIN).await?;
    let calls = stop.calls.join(" or ");
    plan.attempts.push(CrashAttempt {
        class: "wal",
        call: reached
            .as_ref()
            .and_then(|point| stop.calls.iter().find(|call| **call == point.op))
            .copied()
            .unwrap_or(stop.calls[0]),
        nth: stop.skip + 1,
        correlation: Correlation::Alone,
        during_recovery: false,
        after_recovery: true,
        reached: reached.is_some(),
        path: reached.as_ref().map(|point| point.path.clone()),
        role: "recovered".into(),
        ..first
    });
    match reached {
        Some(point) => {
            let mode = power_loss_mode(&point.op, rng);
            let torn = power_cut(cluster, &[node], mode, Duration::ZERO).await?;
            description.push_str(&format!(
                "; once recovered, stopped again after its log {} #{} ({}), power loss ({mode}), restarted",
                point.op,
                stop.skip + 1,
                point.path
            ));
            Ok(!torn.is_empty())
        }
        None => {
            description.push_str(&format!(
                "; a second crash point once recovered (log {calls} #{}) was not reached within {} ms",
                stop.skip + 1,
                REACH_ONCE_RECOVERED_WITHIN.as_millis()
            ));
            Ok(false)
        }
    }
}
