//! A torture run: a cluster under load, faults from outside, then checks with a verdict each,
//! a report, and the seed that replays it.
pub mod after_heal;
pub mod campaign;
pub mod cluster;
pub mod crash_points;
pub mod deposed_leader;
pub mod lsm;
pub mod membership;
pub mod nemesis;
pub mod network_shape;
pub mod oracles;
pub mod poll;
pub mod probe;
pub mod scenario;
pub mod target;
pub mod workload;

use std::{
    ops::ControlFlow,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::{
    check::{self, Limits, Verdict},
    history::{History, LeaderEvent, Line, pair_events},
    report::{CheckLine, RunSummary, render_html},
};
use cluster::{Binaries, Cluster};
use nemesis::Fault;
use target::Target;
use workload::{Recorder, Workload};

pub struct Options {
    /// The database the nodes run.
    pub target: Target,
    pub seed: u64,
    pub duration: Duration,
    pub nodes: usize,
    pub faults: Vec<Fault>,
    pub clients: u64,
    pub keys: u64,
    pub run_dir: PathBuf,
    pub binaries: Binaries,
    pub db_flags: Vec<String>,
    /// How long the cluster gets to elect a leader and converge after healing.
    pub settle: Duration,
    /// A named script instead of the random nemesis.
    pub scenario: Option<scenario::Scenario>,
    /// Node 1's loopback address; node N has the Nth from it.
    pub first_ip: std::net::Ipv4Addr,
    /// faultfs's metadata model on every node (`posix` or `ext4`).
    pub metadata: String,
    /// The command that replays the run, for the report.
    pub replay: String,
}

pub use crate::results::CheckResult;

#[derive(Clone, Debug, Serialize)]
pub struct TortureReport {
    pub seed: u64,
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
    pub operations: usize,
    pub faults: usize,
    /// Client operations finished per second (any outcome) while the faults ran.
    pub ops_per_second: f64,
    /// From healing to the first write the cluster took (None: none within --settle).
    pub heal_to_first_write_ms: Option<u64>,
    /// How long the history checks took.
    pub check_ms: u64,
    pub run_dir: PathBuf,
    /// The crash points placed, reached and never reached.
    pub crash_points: crash_points::CrashCoverage,
    /// The nodes' snapshot interval and log segment size (chosen by the seed).
    pub storage: String,
    /// Writes sent again (same client id and seq) after an unknown outcome.
    pub retries: u64,
}

pub async fn run(options: Options) -> Result<TortureReport> {
    std::fs::create_dir_all(&options.run_dir)?;
    let target = options.target.clone();
    let storage_shapes = match (target.is_target_db(), options.scenario) {
        (false, _) => vec![cluster::StorageShape::theirs(); options.nodes],
        (true, Some(_)) => vec![cluster::StorageShape::fixed(&options.db_flags); options.nodes],
        (true, None) => {
            cluster::StorageShape::for_run(options.seed, options.nodes, &options.db_flags)
        }
    };
    let cluster = Cluster::start(
        &options.run_dir,
        options.binaries,
        cluster::ClusterSpec {
            target: target.clone(),
            size: options.nodes,
            seed: options.seed,
            db_flags: options.db_flags.clone(),
            first_ip: options.first_ip,
            metadata: options.metadata.clone(),
            storage_shapes,
        },
    )?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let storage = if target.is_target_db() {
        cluster::StorageShape::describe_all(&cluster.storage_shapes)
    } else {
        target.own_storage()
    };
    eprintln!("storage: {storage}");
    let cluster = Arc::new(Mutex::new(cluster));
    let http = reqwest::Client::new();
    target.initialise(&http, &addrs, options.settle).await?;
    leader_agreed(&target, &http, &addrs, options.settle)
        .await
        .context("the cluster never elected a leader")?;

    let recorder = Recorder::new();
    let retries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let doubles = Arc::new(std::sync::Mutex::new(Vec::new()));
    let latest_writes = workload::LatestWrites::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Leaders are watched through the healing too, until the history is checked.
    let watched = Arc::new(AtomicBool::new(false));
    let oracles = Arc::new(std::sync::Mutex::new(oracles::Oracles::default()));
    let (rounds, rounds_seen) = tokio::sync::watch::channel(0);
    cluster.lock().await.status_rounds = Some(rounds_seen);
    let leaders = tokio::spawn(watch_nodes(
        target.clone(),
        addrs.clone(),
        recorder.clone(),
        watched.clone(),
        oracles.clone(),
        rounds,
    ));
    let workload = tokio::spawn(workload::run(
        Workload {
            target: target.clone(),
            clients: options.clients,
            keys: options.keys,
            seed: options.seed,
            retries: retries.clone(),
            doubles: doubles.clone(),
            latest_writes: latest_writes.clone(),
        },
        addrs.clone(),
        recorder.clone(),
        stop.clone(),
    ));
    let nemesis = match options.scenario {
        Some(script) => {
            let (cluster, recorder) = (cluster.clone(), recorder.clone());
            tokio::spawn(async move {
                let applied = scenario::run(cluster, script, recorder).await?;
                Ok(nemesis::NemesisOutcome {
                    applied,
                    ..Default::default()
                })
            })
        }
        None => tokio::spawn(nemesis::run(
            cluster.clone(),
            options.faults.clone(),
            options.seed,
            recorder.clone(),
            probe::Probe::new(
                target.clone(),
                recorder.clone(),
                latest_writes.clone(),
                options.seed,
                options.keys,
            ),
            stop.clone(),
        )),
    };
    let started = Instant::now();
    let mut progress = Progress::default();
    while started.elapsed() < options.duration {
        tokio::time::sleep(
            Duration::from_secs(2).min(options.duration.saturating_sub(started.elapsed())),
        )
        .await;
        if let Some(why) = target.broken() {
            anyhow::bail!("{why}: the run is stopped and the cluster torn down");
        }
        let line = progress.line(&recorder.lines(), started.elapsed());
        match recorder.running_faults() {
            running if running.is_empty() => eprintln!("{line}"),
            running => eprintln!("{line}; under way: {}", running.join(", ")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let completed = workload.await?;
    let ops_per_second = completed as f64 / started.elapsed().as_secs_f64();
    let nemesis_outcome = nemesis.await??;
    let faults_applied = nemesis_outcome.applied;
    let crash_coverage =
        crash_points::CrashCoverage::of(&nemesis_outcome.crash_points, nemesis_outcome.seen);

    // Heal: every node running (partitions and pauses end by themselves).
    {
        let mut cluster = cluster.lock().await;
        for id in 1..=options.nodes {
            cluster.start_node(id)?;
        }
    }
    // A membership change cut short by the end of the run is finished: every node a voter.
    let restored = if options.faults.contains(&Fault::Membership) {
        membership::restore_all(&cluster).await
    } else {
        Ok(Vec::new())
    };
    let mut checks = Vec::new();
    let first_write = workload::first_write(&target, &addrs, options.settle).await;
    let serves = leader_agreed(&target, &http, &addrs, options.settle).await;
    checks.push(CheckResult {
        name: "serves again after healing".into(),
        verdict: if serves.is_some() && first_write.is_some() && restored.is_ok() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: match (&restored, first_write, serves) {
            (Err(why), _, _) => format!("a node could not be made a voter again: {why}"),
            (Ok(_), None, _) => format!("no write taken within {} s", options.settle.as_secs()),
            (Ok(_), Some(_), None) => format!(
                "the nodes did not agree on a leader within {} s",
                options.settle.as_secs()
            ),
            (Ok(restored), Some(took), Some(leader)) => format!(
                "first write {:.1} s after healing, leader n{leader}{}",
                took.as_secs_f64(),
                if restored.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", restored.join("; "))
                }
            ),
        },
    });
    if !options.faults.is_empty() || options.scenario.is_some() {
        let shape = (options.seed, options.keys, options.settle);
        let client = (&target, &http, addrs.as_slice());
        checks.push(final_power_loss(shape, &cluster, client, &recorder).await?);
        if target.deduplicates() {
            let lines = recorder.lines();
            let again =
                workload::resend_first_and_last_puts(&target, &addrs, &lines, &latest_writes).await;
            doubles.lock().expect("doubles poisoned").extend(again);
        }
    }
    let all_read = workload::final_reads(&target, &addrs, options.keys, &recorder, 1_000_000).await;
    let convergence = if target.has_digest() {
        after_heal::converged(&target, &http, &addrs, options.settle)
            .await
            .map_err(|e| (Verdict::Fail, e))
    } else {
        Err((
            Verdict::NotApplicable,
            not_reported(&target, "reports no state digest"),
        ))
    };
    checks.push(CheckResult {
        name: "nodes converge to one state".into(),
        verdict: convergence
            .as_ref()
            .map_or_else(|(v, _)| *v, |_| Verdict::Pass),
        detail: convergence.unwrap_or_else(|(_, e)| e),
    });
    let restarted: Vec<(usize, u32)> = cluster
        .lock()
        .await
        .nodes
        .iter()
        .filter(|n| n.restarts > 0)
        .map(|n| (n.id, n.restarts))
        .collect();
    let rejoin = match leader_agreed(&target, &http, &addrs, Duration::ZERO).await {
        _ if !target.reports_indexes() => Err((
            Verdict::NotApplicable,
            not_reported(&target, "reports no commit or applied index"),
        )),
        Some(leader) => {
            let leader = leader as usize;
            after_heal::rejoined(&target, &http, &addrs, leader, &restarted, options.settle).await
        }
        None => Err((Verdict::Unknown, "no leader to compare with".to_owned())),
    };
    checks.push(CheckResult {
        name: "restarted nodes rejoin and catch up".into(),
        verdict: rejoin.as_ref().map_or_else(|(v, _)| *v, |_| Verdict::Pass),
        detail: rejoin.unwrap_or_else(|(_, e)| e),
    });

    watched.store(true, Ordering::Relaxed);
    leaders.await?;
    let lines = recorder.lines();
    let events: Vec<(usize, crate::history::Event)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| match line {
            Line::Op(event) => Some((i + 1, event.clone())),
            Line::Fault(_) | Line::Leader(_) => None,
        })
        .collect();
    let mut history: History = pair_events(events)?;
    for line in &lines {
        match line {
            Line::Fault(fault) => history.faults.push(fault.clone()),
            Line::Leader(leader) => history.leaders.push(leader.clone()),
            Line::Op(_) => {}
        }
    }
    if let Some(why) = target.broken() {
        anyhow::bail!("{why}: the run's history cannot be trusted, so it is not checked");
    }
    let checking = Instant::now();
    let checked = check::check(
        &history,
        Limits {
            time: Duration::from_secs(60),
            ..Limits::default()
        },
    );
    let check_ms = checking.elapsed().as_millis() as u64;
    let lin = &checked.linearizability;
    checks.push(CheckResult {
        name: "linearizable".into(),
        verdict: lin.verdict,
        detail: lin.violations.first().map_or_else(
            || {
                format!(
                    "{} keys, {} ms{}",
                    lin.keys_checked,
                    lin.elapsed_ms,
                    if lin.undecided_keys.is_empty() {
                        String::new()
                    } else {
                        format!(", undecided: {}", lin.undecided_keys.join(","))
                    }
                )
            },
            |v| v.explanation.clone(),
        ),
    });
    let lost = &checked.durability.lost_writes;
    checks.push(CheckResult {
        name: "no acknowledged write lost".into(),
        verdict: if !all_read {
            Verdict::Unknown
        } else if lost.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: lost.first().map_or_else(
            || {
                if all_read {
                    "every key read at the end".into()
                } else {
                    "some final reads failed".into()
                }
            },
            |f| f.explanation.clone(),
        ),
    });
    let other = checked.durability.values_from_nowhere.len() + checked.durability.stale_reads.len();
    checks.push(CheckResult {
        name: "no value from nowhere, no stale read".into(),
        verdict: if other == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: format!("{other} found"),
    });
    {
        let oracles = oracles.lock().expect("oracles poisoned");
        for name in oracles::NAMES {
            let (verdict, detail) = oracles.verdict(name);
            checks.push(CheckResult {
                name: name.into(),
                verdict,
                detail,
            });
        }
    }
    {
        let doubles = doubles.lock().expect("doubles poisoned");
        checks.push(CheckResult {
            name: "each write applied once".into(),
            verdict: if !target.deduplicates() {
                Verdict::NotApplicable
            } else if doubles.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            detail: doubles.first().cloned().unwrap_or_else(|| {
                if !target.deduplicates() {
                    return format!(
                        "not applicable: {} has no request ids, so no write was sent again",
                        target.name()
                    );
                }
                format!(
                    "no answer showed a second application ({} writes sent again)",
                    retries.load(Ordering::Relaxed)
                )
            }),
        });
    }
    let exited = cluster.lock().await.exited_by_themselves();
    checks.push(CheckResult {
        name: "every node still running".into(),
        verdict: if exited.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if exited.is_empty() {
            "all running at the end".into()
        } else {
            exited.join("; ")
        },
    });
    let panics = cluster.lock().await.panics();
    checks.push(CheckResult {
        name: "no node panicked".into(),
        verdict: if !target.has_panic_marker() {
            Verdict::NotApplicable
        } else if panics.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if target.has_panic_marker() {
            panics.first().cloned().unwrap_or_else(|| "none".into())
        } else {
            not_reported(&target, "has no way to tell a panic from its log")
        },
    });

    std::fs::write(
        options.run_dir.join("history.jsonl"),
        history.to_json_lines(),
    )?;
    let verdict = Verdict::all(checks.iter().map(|c| c.verdict));
    let run_summary = RunSummary {
        verdict,
        nodes: options.nodes as u64,
        checks: {
            let oracles = oracles.lock().expect("oracles poisoned");
            checks
                .iter()
                .map(|c| CheckLine {
                    name: c.name.clone(),
                    verdict: c.verdict,
                    detail: c.detail.clone(),
                    at: oracles.first_violation_at(&c.name),
                })
                .collect()
        },
        facts: vec![
            ("seed".into(), options.seed.to_string()),
            ("nodes".into(), options.nodes.to_string()),
            (
                "duration".into(),
                format!("{} s", options.duration.as_secs()),
            ),
            (
                "faults".into(),
                match &options.scenario {
                    Some(scenario) => format!("scenario {}", scenario.name()),
                    None => {
                        let names: Vec<String> =
                            options.faults.iter().map(|f| f.name().to_owned()).collect();
                        names.join(", ")
                    }
                },
            ),
            ("storage".into(), storage.clone()),
            (
                "metadata model".into(),
                format!("faultfs --metadata {}", options.metadata),
            ),
            ("target".into(), target.describe()),
            (
                "operations".into(),
                format!(
                    "{} ({ops_per_second:.0}/s), {} faults",
                    history.operations.len(),
                    history.faults.len()
                ),
            ),
        ],
        replay: options.replay.clone(),
    };
    std::fs::write(
        options.run_dir.join("report.html"),
        render_html(
            &history,
            &checked,
            &format!("torture seed {}", options.seed),
            Some(&run_summary),
        ),
    )?;
    let report = TortureReport {
        seed: options.seed,
        verdict,
        checks,
        operations: history.operations.len(),
        faults: faults_applied as usize,
        ops_per_second,
        heal_to_first_write_ms: first_write.map(|d| d.as_millis() as u64),
        check_ms,
        run_dir: options.run_dir.clone(),
        crash_points: crash_coverage,
        storage,
        retries: retries.load(Ordering::Relaxed),
    };
    std::fs::write(
        options.run_dir.join("report.json"),
        serde_json::to_string_pretty(&json!({"torture": report, "history_check": checked}))?,
    )?;
    drop(cluster);
    Ok(report)
}

/// The last fault of a run: a new value written to every key, then every node loses power at
/// once and restarts. What the database acknowledged must survive that (the final reads check
/// it); a write made durable only by a later one, which a run's faults can hide, is lost here
/// because nothing comes after it; and each node must recover from the disk the whole run left
/// behind (a torn tail an earlier recovery kept, a hole a purge left), not only from the state
/// a fault caught. The mode alternates with the seed: `drop` loses all that was unsynced,
/// `torn` also leaves half-written records for recovery to cut.
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
type ClientOf<'a> = (&'a Target, &'a reqwest::Client, &'a [String]);

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

async fn final_power_loss(
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

/// Polls every node's /status every 50 ms until `stop`: records each change of leader (the
/// node that says it leads in the highest term; one that came and went between two polls is
/// not seen) and feeds the protocol oracles. Counts the rounds in `rounds`, so a fault can
/// wait until the oracles have seen the state it is about to destroy.
async fn watch_nodes(
    target: Target,
    addrs: Vec<String>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    oracles: Arc<std::sync::Mutex<oracles::Oracles>>,
    rounds: tokio::sync::watch::Sender<u64>,
) {
    let http = reqwest::Client::new();
    let mut last: Option<(Option<u64>, Option<u64>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut seen: Option<(u64, u64)> = None;
        for (i, addr) in addrs.iter().enumerate() {
            let sent = recorder.now();
            let Some(status) = target.status(&http, addr).await else {
                continue;
            };
            oracles.lock().expect("oracles poisoned").observe(
                i + 1,
                (sent, recorder.now()),
                &status,
            );
            let term = status["term"].as_u64().unwrap_or(0);
            if target::says_it_leads(&status) && seen.is_none_or(|(t, _)| term > t) {
                seen = Some((term, i as u64 + 1));
            }
        }
        let now = (seen.map(|(_, id)| id), seen.map(|(term, _)| term));
        if last != Some(now) {
            recorder.leader(recorder.now(), now.0, now.1);
            last = Some(now);
        }
        rounds.send_modify(|count| *count += 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader every node agrees on, polled for up to `limit` (once if zero).
async fn leader_agreed(
    target: &Target,
    http: &reqwest::Client,
    addrs: &[String],
    limit: Duration,
) -> Option<u64> {
    poll::poll_until(limit, Duration::from_millis(200), move || async move {
        let mut leaders = Vec::new();
        for addr in addrs {
            let status = target.status(http, addr).await;
            leaders.push(status.and_then(|s| s["leader"].as_u64()));
        }
        match leaders.first() {
            Some(Some(first)) if leaders.iter().all(|l| *l == Some(*first)) => {
                ControlFlow::Break(*first)
            }
            _ => ControlFlow::Continue(()),
        }
    })
    .await
    .ok()
}

/// The detail of a check the target cannot answer: `lacks` says why.
fn not_reported(target: &Target, lacks: &str) -> String {
    format!("not applicable: {} {lacks}", target.name())
}

/// The one-line progress report of a run: operations so far and the rate since the last line,
/// faults done, the leader and its term as the watcher last saw them.
#[derive(Default)]
struct Progress {
    ops: usize,
    at: Duration,
}

impl Progress {
    fn line(&mut self, lines: &[Line], now: Duration) -> String {
        let ops = lines
            .iter()
            .filter(|l| matches!(l, Line::Op(e) if e.kind != crate::history::Kind::Invoke))
            .count();
        let faults = lines.iter().filter(|l| matches!(l, Line::Fault(_))).count();
        let leader = lines.iter().rev().find_map(|l| match l {
            Line::Leader(leader) => Some(leader),
            _ => None,
        });
        let leader = match leader {
            Some(LeaderEvent {
                leader: Some(node),
                term,
                ..
            }) => format!(
                "leader n{node}{}",
                term.map_or(String::new(), |t| format!(" (term {t})"))
            ),
            Some(_) => "no leader".to_owned(),
            None => "leader not seen yet".to_owned(),
        };
        let rate = (ops - self.ops) as f64 / (now - self.at).as_secs_f64().max(1e-3);
        (self.ops, self.at) = (ops, now);
        format!(
            "[{:>5.1} s] {ops} operations ({rate:.0}/s), {faults} faults done, {leader}",
            now.as_secs_f64()
        )
    }
}
