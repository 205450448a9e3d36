//! `torture run`: one seed, or a range of seeds (a shard of it for one job of a CI matrix),
//! each a whole torture run; a summary, JUnit XML and the command that replays each seed.
use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use tests::{
    report::{render_index, render_junit},
    torture::{
        self, TortureReport,
        campaign::{self, SeedRange, SeedResult, Shard, Summary},
        cluster::Binaries,
        nemesis::Fault,
        scenario::Scenario,
        target::{Target, TargetKind},
    },
};

use crate::{
    exit_code,
    preflight::{addresses_free, clear_earlier_run, create_run_dir, require_etcd, require_lsm},
    print::{print_crash_points, print_seed, print_summary},
};

/// Every fault this kernel can apply to target-db (wal-write-error needs BPF LSM).
/// `--faults`'s long help: the catalogue from the fault enum, between what holds for all.
fn faults_help() -> String {
    format!(
        "Comma-separated, each applied to a node the seed picks:\n\n{}\n\
         `none` alone: no faults (a baseline run). Half of all faults go to the leader. A run \
         with faults ends with one more: a follower's WAL fdatasyncs fail once (fsyncgate) \
         during rounds of writes to every key, then every node loses power at once and \
         restarts, and old requests are sent again.\n\n\
         Default: every fault but wal-write-error; with --target etcd, every fault etcd takes \
         ({}); with a target spec, the faults that act from outside ({}).",
        Fault::catalogue(),
        ETCD_FAULTS.replace(',', ", "),
        OUTSIDE_FAULTS.replace(',', ", "),
    )
}

const DEFAULT_FAULTS: &str = "crash-point,kill,kill-many,pause,wal-crash,partition,packet-loss,slow-network,\
                              flaky-network,power-loss,power-loss-all,disk-error,fsync-error,disk-full,slow-disk,\
                              leader-transfer,bitrot,corruption,membership,deposed-leader,\
                              stalled-leader";
/// Every fault that applies to another database (etcd, a spec's): those that need no knowledge
/// of a database's files or admin calls.
const OUTSIDE_FAULTS: &str = "kill,kill-many,pause,partition,packet-loss,power-loss,power-loss-all,\
                              disk-error,fsync-error,disk-full,slow-disk";
/// etcd's default: those, and crash points on its classes of files.
const ETCD_FAULTS: &str = "crash-point,kill,kill-many,pause,partition,packet-loss,power-loss,\
                           power-loss-all,disk-error,fsync-error,disk-full,slow-disk";

#[derive(Args)]
pub struct RunArgs {
    /// The database to torture: the bundled target-db, or etcd (Debian's etcd-server 3.4,
    /// installed by `cargo xtask setup`; each node listens on its address's ports 2379 and
    /// 2380; faults that need target-db's files or admin calls are refused).
    #[arg(long, value_enum, default_value_t = TargetKind::TargetDb)]
    target: TargetKind,
    /// Any other database, described by a spec file: how to start a node, when it is ready,
    /// its log's files, and a client program speaking JSON lines (docs/targets.md;
    /// examples/redis.toml). Takes the faults etcd takes.
    #[arg(long, conflicts_with = "target")]
    target_spec: Option<PathBuf>,
    /// Seed for every random choice; printed so the run can be replayed. Default: the clock.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run each of these seeds in turn, FIRST..LAST with both included (1..200 is 200 runs).
    /// Each seed gets its own directory under --run-dir, and summary.json lists them all.
    #[arg(long)]
    seeds: Option<SeedRange>,
    /// With --seeds: be job INDEX of COUNT of a CI matrix (e.g. 3/8 takes seeds 3, 11, 19, ...
    /// of 1..200). Merge the jobs' run directories with `torture merge`.
    #[arg(long, requires = "seeds")]
    shard: Option<Shard>,
    /// Also write JUnit XML here: one test case per seed, a failed check is a failure, an
    /// undecided one an error.
    #[arg(long)]
    junit: Option<PathBuf>,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Comma-separated faults, each applied to a node the seed picks (`--help` describes
    /// each); `none` alone for a run without faults.
    #[arg(long, long_help = faults_help())]
    faults: Option<String>,
    #[arg(long, default_value_t = 4)]
    clients: u64,
    #[arg(long, default_value_t = 5)]
    keys: u64,
    /// Where histories, logs and reports go. Default: /var/tmp/faultline-torture-SEED (or
    /// -seeds-FIRST-LAST). An existing directory is replaced only if it holds an earlier run.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Where target-db, faultfs and injector are. Default: next to this program.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// A named deterministic script instead of random faults: leader-failure-data-consistency,
    /// partition-minority, partition-majority, node-rejoin, power-loss-all, multiple-failures
    /// (needs --nodes 5), uncommitted-entries, rapid-leader-changes, concurrent-failures,
    /// split-brain-recovery, leader-failure-under-load, follower-recovery,
    /// snapshot-after-failure, torn-wal-tail, fsyncgate, wal-bitrot.
    #[arg(long)]
    scenario: Option<String>,
    /// How long the cluster gets to elect a leader and converge after healing.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Extra flag for every `target-db serve`, e.g. --db-flag=--unsafe-no-fsync to prove
    /// the checks catch a database that loses acknowledged writes. Repeatable.
    #[arg(long = "db-flag", allow_hyphen_values = true)]
    db_flags: Vec<String>,
    /// When a new directory entry on the nodes' faultfs mounts becomes durable: `posix` (only
    /// at an fsync of its directory, all that POSIX promises) or `ext4` (also at an fsync of
    /// the file itself, as ext4's journal does).
    #[arg(long, default_value = "posix", value_parser = ["posix", "ext4"])]
    metadata: String,
    /// Print the summary (every seed's checks) as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Node 1's loopback address (node N listens on the Nth address from it, port 7000). Give
    /// two runs on one machine different ranges, e.g. 127.0.0.11 and 127.0.1.11: partitions
    /// cut traffic by address, so two clusters on the same addresses would disturb each other.
    #[arg(long, default_value = "127.0.0.11")]
    first_ip: std::net::Ipv4Addr,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let scenario = args
        .scenario
        .as_deref()
        .map(|name| name.parse::<Scenario>().map_err(anyhow::Error::msg))
        .transpose()?;
    if let Some(script) = scenario
        && args.nodes < script.min_nodes()
    {
        let needed = script.min_nodes();
        bail!(
            "the {} scenario needs {needed} nodes: add --nodes {needed}",
            script.name()
        );
    }
    let last_ip = std::net::Ipv4Addr::from(
        u32::from(args.first_ip).saturating_add(args.nodes.saturating_sub(1) as u32),
    );
    if !args.first_ip.is_loopback() || !last_ip.is_loopback() {
        bail!(
            "--first-ip {}: the nodes need loopback addresses (127.x.y.z) up to {last_ip}; pick one like 127.0.1.11",
            args.first_ip
        );
    }
    if args.nodes == 0 {
        bail!("--nodes 0: a cluster needs at least one node (3 or 5 are usual)");
    }
    if args.clients == 0 {
        bail!("--clients 0: with no client nothing is tested; give at least 1 (default 4)");
    }
    if args.keys == 0 {
        bail!("--keys 0: the clients need at least one key (default 5)");
    }
    let target = match &args.target_spec {
        Some(path) => Target::from_spec(path)?,
        None => Target::new(args.target),
    };
    let fault_list = args.faults.as_deref().unwrap_or(if target.is_target_db() {
        DEFAULT_FAULTS
    } else if args.target == TargetKind::Etcd && args.target_spec.is_none() {
        ETCD_FAULTS
    } else {
        OUTSIDE_FAULTS
    });
    let faults = if fault_list == "none" {
        Vec::new()
    } else {
        let faults = fault_list
            .split(',')
            .filter(|f| !f.trim().is_empty())
            .map(|f| f.trim().parse::<Fault>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        if faults.is_empty() && args.scenario.is_none() {
            bail!(
                "--faults `{fault_list}` names no fault: list some (e.g. kill,partition) or say --faults none for a run without faults",
            );
        }
        faults
    };
    // One node has no link to cut and no others to kill with it: the default list leaves those
    // faults out, a list that names one is refused.
    let alone = [
        Fault::Partition,
        Fault::PacketLoss,
        Fault::SlowNetwork,
        Fault::FlakyNetwork,
        Fault::KillMany,
    ];
    let faults: Vec<Fault> = if args.nodes == 1 && args.faults.is_none() {
        faults.into_iter().filter(|f| !alone.contains(f)).collect()
    } else {
        faults
    };
    if args.nodes == 1
        && let Some(fault) = faults.iter().find(|f| alone.contains(f))
    {
        bail!(
            "--faults {}: needs at least 2 nodes (--nodes 1 has no link to cut and no other node)",
            fault.name()
        );
    }
    let fault_list = if args.faults.is_none() {
        let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
        names.join(",")
    } else {
        fault_list.to_owned()
    };
    for &fault in &faults {
        if let Some(why) = fault.refused_by(&target) {
            let allowed = if args.target == TargetKind::Etcd && args.target_spec.is_none() {
                ETCD_FAULTS
            } else {
                OUTSIDE_FAULTS
            };
            bail!(
                "--faults {}: {} cannot be applied to {}: {why}; for {} use: {allowed}",
                fault.name(),
                fault.name(),
                target.name(),
                target.name()
            );
        }
    }
    if let Some(script) = scenario
        && !target.is_target_db()
        && let Some(why) = script.needs_target_db()
    {
        bail!(
            "--scenario {}: works only on target-db: {why}; for {} pick another scenario or give --faults",
            script.name(),
            target.name()
        );
    }
    if let Some(why) = target.leaderless(args.nodes) {
        bail!("{why}");
    }
    if args.target == TargetKind::Etcd {
        require_etcd()?;
    }
    addresses_free(args.first_ip, args.nodes, &target)?;
    let seeds = match args.seeds {
        Some(range) => campaign::seeds(range, args.shard.unwrap_or(Shard::WHOLE))?,
        None => vec![args.seed.unwrap_or_else(clock_seed)],
    };
    let binaries = || Binaries::beside_me(args.bin_dir.as_deref());
    if faults.iter().any(|f| f.needs_lsm()) {
        require_lsm(&binaries()?.injector)?;
    }
    let base = args
        .run_dir
        .clone()
        .unwrap_or_else(|| default_run_dir(&args, seeds[0]));
    clear_earlier_run(&base)?;
    create_run_dir(&base)?;

    let runtime = tokio::runtime::Runtime::new()?;
    let mut summary = Summary::default();
    let outcome = (|| -> Result<()> {
        for (done, &seed) in seeds.iter().enumerate() {
            let run_dir = if args.seeds.is_some() {
                base.join(format!("seed-{seed}"))
            } else {
                base.clone()
            };
            eprintln!(
                "torture run: seed {seed}{}, {} nodes, {} s, {}",
                if seeds.len() > 1 {
                    format!(" ({} of {})", done + 1, seeds.len())
                } else {
                    String::new()
                },
                args.nodes,
                args.duration.as_secs(),
                args.scenario
                    .as_ref()
                    .map_or(format!("faults {fault_list}"), |s| format!("scenario {s}"))
            );
            let options = torture::Options {
                target: target.clone(),
                seed,
                duration: args.duration,
                nodes: args.nodes,
                faults: faults.clone(),
                clients: args.clients,
                keys: args.keys,
                run_dir,
                binaries: binaries()?,
                db_flags: args.db_flags.clone(),
                settle: args.settle,
                scenario,
                first_ip: args.first_ip,
                metadata: args.metadata.clone(),
                replay: replay_command(&args, seed),
            };
            let started = Instant::now();
            let report = runtime.block_on(until_interrupted(torture::run(options)))?;
            let result = seed_result(&report, started.elapsed(), replay_command(&args, seed));
            if !args.json {
                print_crash_points(&report);
                print_seed(&result);
            }
            summary.results.push(result);
            // After every seed, so an interrupted campaign keeps what it found.
            summary.write(&base)?;
            if args.seeds.is_some() {
                let index = base.join("index.html");
                std::fs::write(&index, render_index(&summary, &base))
                    .with_context(|| format!("writing {}", index.display()))?;
            }
        }
        Ok(())
    })();
    // The spawned workload and nemesis tasks own the cluster too: shutting the runtime down
    // drops them, which stops every node and unmounts every file system.
    runtime.shutdown_timeout(Duration::from_secs(10));
    outcome?;

    if let Some(path) = &args.junit {
        std::fs::write(path, render_junit(&summary))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if summary.results.len() > 1 {
        let source = format!("summary {}", base.join(campaign::SUMMARY_FILE).display());
        print_summary(&summary, &source);
    }
    Ok(exit_code(summary.verdict()))
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000)
        .unwrap_or(1)
}

fn default_run_dir(args: &RunArgs, seed: u64) -> PathBuf {
    let name = match (args.seeds, args.shard) {
        (None, _) => format!("faultline-torture-{seed}"),
        (Some(range), None) => format!("faultline-torture-seeds-{}-{}", range.first, range.last),
        (Some(range), Some(shard)) => format!(
            "faultline-torture-seeds-{}-{}-shard-{}-of-{}",
            range.first, range.last, shard.index, shard.count
        ),
    };
    PathBuf::from("/var/tmp").join(name)
}

/// Runs `work` unless Ctrl-C, SIGTERM or SIGHUP (its terminal closed) comes first; then it is
/// dropped, and with it the cluster it owns.
async fn until_interrupted<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::select! {
        result = work => result,
        _ = terminate.recv() => bail!("stopped by SIGTERM: the cluster is torn down"),
        _ = interrupt.recv() => bail!("stopped by Ctrl-C: the cluster is torn down"),
        _ = hangup.recv() => bail!("stopped by SIGHUP (its terminal closed): the cluster is torn down"),
    }
}

fn seed_result(report: &TortureReport, took: Duration, replay: String) -> SeedResult {
    SeedResult {
        seed: report.seed,
        verdict: report.verdict,
        checks: report.checks.clone(),
        operations: report.operations,
        faults: report.faults,
        seconds: took.as_secs_f64(),
        run_dir: report.run_dir.clone(),
        replay,
    }
}

fn replay_command(args: &RunArgs, seed: u64) -> String {
    let mut command = format!(
        "cargo xtask torture --seed {seed} --duration {}s --nodes {}",
        args.duration.as_secs(),
        args.nodes
    );
    if let Some(path) = &args.target_spec {
        command.push_str(&format!(" --target-spec {}", path.display()));
    } else if args.target != TargetKind::TargetDb {
        command.push_str(&format!(" --target {}", args.target.name()));
    }
    match (&args.scenario, &args.faults) {
        (Some(name), _) => command.push_str(&format!(" --scenario {name}")),
        (None, None) => {}
        (None, Some(faults)) => command.push_str(&format!(" --faults {faults}")),
    }
    for flag in &args.db_flags {
        command.push_str(&format!(" --db-flag={flag}"));
    }
    if args.metadata != "posix" {
        command.push_str(&format!(" --metadata {}", args.metadata));
    }
    command
}
