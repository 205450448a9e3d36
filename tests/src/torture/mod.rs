//! A torture run: a cluster under load, faults from outside, then checks with a verdict each,
//! a report, and the seed that replays it.
pub mod after_heal;
pub mod campaign;
pub mod cluster;
pub mod crash_points;
pub mod deposed_leader;
mod disk_faults;
mod final_power_loss;
mod leaders;
pub mod lsm;
pub mod membership;
pub mod nemesis;
pub mod network_shape;
mod node_indexes;
pub mod oracles;
pub mod poll;
pub mod probe;
mod progress;
mod report_files;
pub mod scenario;
mod stalled_leader;
pub mod target;
mod verdicts;
pub mod workload;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tokio::{sync::Mutex, task::JoinHandle};

use crate::{
    check::{self, Limits, Verdict},
    history::{History, Line, pair_events},
};
use after_heal::heal_and_check;
use cluster::{Binaries, Cluster};
use leaders::{leader_agreed, watch_nodes};
use nemesis::{Fault, NemesisOutcome};
use oracles::Oracles;
use progress::Progress;
use report_files::{RunFacts, write_history_and_page};
use target::Target;
use workload::{LatestWrites, Recorder, Workload};

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

/// A run, step by step: start the cluster, put it under load and faults for the run's
/// duration, heal it and check it live, then check the history and write the report.
pub async fn run(options: Options) -> Result<TortureReport> {
    std::fs::create_dir_all(&options.run_dir)?;
    let target = options.target.clone();
    let (cluster, storage) = start_cluster(&options)?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let cluster = Arc::new(Mutex::new(cluster));
    let http = reqwest::Client::new();
    target.initialise(&http, &addrs, options.settle).await?;
    leader_agreed(&target, &http, &addrs, options.settle)
        .await
        .context("the cluster never elected a leader")?;

    let loaded = Load::start(&options, &cluster, &addrs)
        .await
        .run_for(options.duration, &target)
        .await?;
    let (mut checks, healed) =
        heal_and_check(&options, &cluster, (&target, &http, &addrs), &loaded.shared).await?;
    let history = loaded.shared.stop_watching(loaded.leaders).await?;
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
    let shared = &loaded.shared;
    checks.extend(verdicts::of_history(&checked, healed.all_read));
    checks.extend(verdicts::of_oracles(
        &shared.oracles.lock().expect("oracles poisoned"),
    ));
    checks.push(verdicts::applied_once(
        &target,
        &shared.doubles.lock().expect("doubles poisoned"),
        shared.retries.load(Ordering::Relaxed),
    ));
    {
        let mut cluster = cluster.lock().await;
        checks.push(verdicts::still_running(&cluster.exited_by_themselves()));
        checks.push(verdicts::no_panic(&target, &cluster.panics()));
        checks.push(verdicts::damaged_logs_refused(&cluster.damaged_logs));
    }

    let verdict = Verdict::all(checks.iter().map(|c| c.verdict));
    let run_facts = RunFacts {
        storage: &storage,
        ops_per_second: loaded.ops_per_second,
    };
    write_history_and_page(&options, &history, &checked, &checks, shared, run_facts)?;
    let report = TortureReport {
        seed: options.seed,
        verdict,
        checks,
        operations: history.operations.len(),
        faults: loaded.nemesis.applied as usize,
        ops_per_second: loaded.ops_per_second,
        heal_to_first_write_ms: healed.first_write.map(|d| d.as_millis() as u64),
        check_ms,
        run_dir: options.run_dir.clone(),
        crash_points: crash_points::CrashCoverage::of(
            &loaded.nemesis.crash_points,
            loaded.nemesis.seen,
        ),
        storage,
        retries: shared.retries.load(Ordering::Relaxed),
    };
    std::fs::write(
        options.run_dir.join("report.json"),
        serde_json::to_string_pretty(&json!({"torture": report, "history_check": checked}))?,
    )?;
    drop(cluster);
    Ok(report)
}

/// Starts the nodes, each with the storage shape the seed chose (target-db) or its own; returns
/// the cluster and a description of its storage for the report.
fn start_cluster(options: &Options) -> Result<(Cluster, String)> {
    let target = &options.target;
    let storage_shapes = match (target.is_target_db(), options.scenario) {
        (false, _) => vec![cluster::StorageShape::theirs(); options.nodes],
        (true, Some(_)) => vec![cluster::StorageShape::fixed(&options.db_flags); options.nodes],
        (true, None) => {
            cluster::StorageShape::for_run(options.seed, options.nodes, &options.db_flags)
        }
    };
    let cluster = Cluster::start(
        &options.run_dir,
        options.binaries.clone(),
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
    let storage = if target.is_target_db() {
        cluster::StorageShape::describe_all(&cluster.storage_shapes)
    } else {
        target.own_storage()
    };
    eprintln!("storage: {storage}");
    Ok((cluster, storage))
}

/// What the run's tasks share with it and with each other, and what the checks read at the end.
struct Shared {
    recorder: Recorder,
    /// Writes sent again (same client id and seq) after an unknown outcome.
    retries: Arc<AtomicU64>,
    /// Answers that showed a write applied a second time.
    doubles: Arc<std::sync::Mutex<Vec<String>>>,
    latest_writes: LatestWrites,
    oracles: Arc<std::sync::Mutex<Oracles>>,
    /// Set once the history is complete: leaders are watched through the healing too.
    watched: Arc<AtomicBool>,
}

/// The tasks that run while the faults do: the workload's clients, the nemesis (or a scenario's
/// script) and the watcher of leaders.
struct Load {
    shared: Shared,
    stop: Arc<AtomicBool>,
    leaders: JoinHandle<()>,
    workload: JoinHandle<u64>,
    nemesis: JoinHandle<Result<NemesisOutcome>>,
}

/// What the loaded part of a run left: the client operations' rate, what the nemesis did, and
/// the watcher of leaders, which goes on through the healing.
struct Loaded {
    ops_per_second: f64,
    nemesis: NemesisOutcome,
    shared: Shared,
    leaders: JoinHandle<()>,
}

impl Load {
    async fn start(options: &Options, cluster: &Arc<Mutex<Cluster>>, addrs: &[String]) -> Load {
        let target = &options.target;
        let shared = Shared {
            recorder: Recorder::new(),
            retries: Arc::new(AtomicU64::new(0)),
            doubles: Arc::new(std::sync::Mutex::new(Vec::new())),
            latest_writes: LatestWrites::default(),
            oracles: Arc::new(std::sync::Mutex::new(Oracles::default())),
            watched: Arc::new(AtomicBool::new(false)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (rounds, rounds_seen) = tokio::sync::watch::channel(0);
        cluster.lock().await.status_rounds = Some(rounds_seen);
        let leaders = tokio::spawn(watch_nodes(
            target.clone(),
            addrs.to_vec(),
            shared.recorder.clone(),
            shared.watched.clone(),
            shared.oracles.clone(),
            rounds,
        ));
        let workload = tokio::spawn(workload::run(
            Workload {
                target: target.clone(),
                clients: options.clients,
                keys: options.keys,
                seed: options.seed,
                retries: shared.retries.clone(),
                doubles: shared.doubles.clone(),
                latest_writes: shared.latest_writes.clone(),
            },
            addrs.to_vec(),
            shared.recorder.clone(),
            stop.clone(),
        ));
        let nemesis = spawn_nemesis(options, cluster, &shared, &stop);
        Load {
            shared,
            stop,
            leaders,
            workload,
            nemesis,
        }
    }

    /// Lets the load and the faults run for `duration`, printing progress every two seconds,
    /// then stops the clients and the nemesis and waits for them.
    async fn run_for(self, duration: Duration, target: &Target) -> Result<Loaded> {
        let recorder = &self.shared.recorder;
        let started = Instant::now();
        let mut progress = Progress::default();
        while started.elapsed() < duration {
            tokio::time::sleep(
                Duration::from_secs(2).min(duration.saturating_sub(started.elapsed())),
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
        self.stop.store(true, Ordering::Relaxed);
        let completed = self.workload.await?;
        let ops_per_second = completed as f64 / started.elapsed().as_secs_f64();
        let nemesis = self.nemesis.await??;
        Ok(Loaded {
            ops_per_second,
            nemesis,
            shared: self.shared,
            leaders: self.leaders,
        })
    }
}

/// The random nemesis over the chosen faults, or the scenario's script if the run has one.
fn spawn_nemesis(
    options: &Options,
    cluster: &Arc<Mutex<Cluster>>,
    shared: &Shared,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<Result<NemesisOutcome>> {
    match options.scenario {
        Some(script) => {
            let (cluster, recorder) = (cluster.clone(), shared.recorder.clone());
            tokio::spawn(async move {
                let applied = scenario::run(cluster, script, recorder).await?;
                Ok(NemesisOutcome {
                    applied,
                    ..Default::default()
                })
            })
        }
        None => tokio::spawn(nemesis::run(
            cluster.clone(),
            options.faults.clone(),
            options.seed,
            shared.recorder.clone(),
            probe::Probe::new(
                options.target.clone(),
                shared.recorder.clone(),
                shared.latest_writes.clone(),
                options.seed,
                options.keys,
            ),
            stop.clone(),
        )),
    }
}

impl Shared {
    /// Stops the watcher of leaders and pairs the recorded lines into the run's history.
    async fn stop_watching(&self, leaders: JoinHandle<()>) -> Result<History> {
        self.watched.store(true, Ordering::Relaxed);
        leaders.await?;
        let lines = self.recorder.lines();
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
        Ok(history)
    }
}
