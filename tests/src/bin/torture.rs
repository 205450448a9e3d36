//! `torture`: Faultline's torture harness. For now: check a recorded history.
use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tests::{
    check::{self, CheckReport, Limits, Verdict},
    history::{
        Format, History,
        generate::{Shape, linearizable_history},
    },
    report::render_html,
    torture::{self, cluster::Binaries, nemesis::Fault},
};

#[derive(Parser)]
#[command(name = "torture", version, about = "Faultline's torture harness.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a target-db cluster on faultfs mounts under a client workload and faults from
    /// outside, then check the history. Exit 0 only when every check passed.
    ///
    /// Each node has its own loopback address (127.0.0.11, .12, ...) and its data directory on
    /// its own faultfs mount. Faults: kill (SIGKILL, restart), pause (SIGSTOP/SIGCONT), partition
    /// (injector isolates one node), power-loss (kill, faultfs power-loss drop/torn/reorder/prefix,
    /// restart). Checks: serves again after healing, nodes converge, linearizable, no
    /// acknowledged write lost, no value from nowhere or stale read, no panic. Needs root.
    Run {
        /// Seed for every random choice; printed so the run can be replayed.
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Comma-separated: kill, pause, partition, power-loss, power-loss-all, disk-error (WAL
        /// fdatasync fails as on Linux, dirty pages dropped, then power loss of that node),
        /// slow-disk (WAL fdatasync 50-500 ms slower for a while), wal-write-error (the
        /// node's WAL writes fail with EIO for a while, then it restarts; needs BPF LSM: a stock
        /// kernel, e.g. in `cargo xtask vm-torture`; not in the default list).
        #[arg(
            long,
            default_value = "kill,pause,partition,power-loss,power-loss-all,disk-error,slow-disk"
        )]
        faults: String,
        #[arg(long, default_value_t = 4)]
        clients: u64,
        #[arg(long, default_value_t = 5)]
        keys: u64,
        /// Where histories, logs and reports go. Default: /var/tmp/faultline-torture-SEED.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Where target-db, faultfs and injector are. Default: next to this program.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// A named deterministic script instead of random faults: leader-failure-data-consistency,
        /// partition-minority, partition-majority, node-rejoin, power-loss-all, multiple-failures
        /// (needs --nodes 5), uncommitted-entries.
        #[arg(long)]
        scenario: Option<String>,
        /// How long the cluster gets to elect a leader and converge after healing.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Extra flag for every `target-db serve`, e.g. --db-flag=--unsafe-no-fsync to prove
        /// the checks catch a database that loses acknowledged writes. Repeatable.
        #[arg(long = "db-flag", allow_hyphen_values = true)]
        db_flags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check a history: linearizability and durability. Exit 0 pass, 1 fail, 3 unknown.
    ///
    /// Reads Faultline's JSON lines, Jepsen etcd logs or EDN key-value logs (detected from the
    /// first line, or --format). Prints a verdict per check and, for a key that cannot be
    /// linearized, the smallest window of operations that shows it. A search that runs out of
    /// --budget or --memory says "unknown", never "pass".
    #[command(
        after_help = "Examples:\n  torture check run/history.jsonl --html run/report.html\n  \
        torture check etcd_001.log --json"
    )]
    Check {
        history: PathBuf,
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Also write a self-contained HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Print the full report as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Time the linearizability search may take, e.g. `30s`, `5m`.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        budget: Duration,
        /// Memory the search's memo may take, in MiB.
        #[arg(long, default_value_t = 2048)]
        memory_mib: usize,
    },
    /// target-db puts/s and latency for 1 and 3 nodes as clients grow (cargo xtask bench db).
    #[command(hide = true)]
    BenchDb {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Time the checker on a corpus directory and on a generated 100,000-operation history.
    #[command(hide = true)]
    BenchChecker {
        #[arg(long)]
        corpus: PathBuf,
    },
}

fn main() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Check {
            history,
            format,
            html,
            json,
            budget,
            memory_mib,
        } => {
            let loaded = History::load(&history, format)?;
            let limits = Limits {
                time: budget,
                memory_bytes: memory_mib << 20,
            };
            let report = check::check(&loaded, limits);
            if let Some(path) = html {
                let page = render_html(&loaded, &report, &history.display().to_string());
                std::fs::write(&path, page)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("report: {}", path.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&loaded, &report);
            }
            Ok(ExitCode::from(match report.verdict {
                Verdict::Pass => 0,
                Verdict::Fail => 1,
                Verdict::Unknown => 3,
            }))
        }
        Command::BenchChecker { corpus } => bench_checker(&corpus).map(|()| ExitCode::SUCCESS),
        Command::BenchDb { seconds, bin_dir } => {
            let binaries = Binaries::beside_me(bin_dir.as_deref())?;
            // On the machine's disk (ext4 here), not tmpfs: the fsyncs are real.
            let scratch = tempfile::Builder::new()
                .prefix("targetdb-bench-")
                .tempdir_in("/var/tmp")?;
            let runtime = tokio::runtime::Runtime::new()?;
            let results = runtime.block_on(tests::bench_db::run(
                &binaries.target_db,
                scratch.path(),
                &[1, 3],
                &[1, 4, 16],
                seconds,
            ))?;
            println!("target-db puts of 1 KiB values, real fsync, {seconds} s each:");
            println!(
                "{:>6} {:>8} {:>10} {:>9} {:>9}",
                "nodes", "clients", "puts/s", "p50 ms", "p99 ms"
            );
            for m in results {
                println!(
                    "{:>6} {:>8} {:>10.0} {:>9.2} {:>9.2}",
                    m.nodes, m.clients, m.puts_per_second, m.p50_ms, m.p99_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            seed,
            duration,
            nodes,
            faults,
            clients,
            keys,
            run_dir,
            bin_dir,
            db_flags,
            settle,
            scenario,
            json,
        } => {
            let script = scenario
                .as_deref()
                .map(|name| {
                    name.parse::<tests::torture::scenario::Scenario>()
                        .map_err(anyhow::Error::msg)
                })
                .transpose()?;
            if script == Some(tests::torture::scenario::Scenario::MultipleFailures) && nodes < 5 {
                anyhow::bail!("the multiple-failures scenario needs 5 nodes: add --nodes 5");
            }
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64 % 1_000_000)
                    .unwrap_or(1)
            });
            let fault_list = faults
                .split(',')
                .filter(|f| !f.is_empty())
                .map(|f| f.parse::<Fault>().map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let run_dir = run_dir
                .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/faultline-torture-{seed}")));
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("clearing {}", run_dir.display()))?;
            }
            let binaries = Binaries::beside_me(bin_dir.as_deref())?;
            if fault_list.iter().any(|f| f.needs_lsm()) {
                require_lsm(&binaries.injector)?;
            }
            let options = torture::Options {
                seed,
                duration,
                nodes,
                faults: fault_list,
                clients,
                keys,
                run_dir,
                binaries,
                db_flags: db_flags.clone(),
                settle,
                scenario: script,
            };
            eprintln!(
                "torture run: seed {seed}, {nodes} nodes, {} s, faults {faults}",
                duration.as_secs()
            );
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(torture::run(options))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for check in &report.checks {
                    println!(
                        "{:<8} {:<38} {}",
                        word(check.verdict),
                        check.name,
                        check.detail
                    );
                }
                println!(
                    "{}: {} operations, {} faults; run directory {}",
                    word(report.verdict),
                    report.operations,
                    report.faults,
                    report.run_dir.display()
                );
                let mut flags: String =
                    db_flags.iter().map(|f| format!(" --db-flag={f}")).collect();
                if let Some(name) = &scenario {
                    flags.push_str(&format!(" --scenario {name}"));
                }
                println!(
                    "replay: cargo xtask torture --seed {seed} --duration {}s --nodes {nodes} --faults {faults}{flags}",
                    duration.as_secs()
                );
            }
            Ok(ExitCode::from(match report.verdict {
                Verdict::Pass => 0,
                Verdict::Fail => 1,
                Verdict::Unknown => 3,
            }))
        }
    }
}

fn word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::Unknown => "unknown",
    }
}

fn print_report(history: &History, report: &CheckReport) {
    let lin = &report.linearizability;
    let dur = &report.durability;
    println!(
        "{}: {} operations, {} keys",
        word(report.verdict),
        report.operations,
        lin.keys_checked
    );
    println!(
        "  linearizability     {} ({} ms)",
        word(lin.verdict),
        lin.elapsed_ms
    );
    if !lin.undecided_keys.is_empty() {
        println!(
            "    undecided within the budget: {}",
            lin.undecided_keys.join(", ")
        );
    }
    for violation in &lin.violations {
        println!("    {}", violation.explanation);
        for &id in &violation.window {
            let op = &history.operations[id];
            let marker = if id == violation.stuck_at { "=>" } else { "  " };
            println!(
                "    {marker} #{id:<6} process {:<4} [{} .. {}] {op}",
                op.process,
                op.invoke,
                op.complete.map_or("never".to_owned(), |t| t.to_string())
            );
        }
    }
    for (name, findings) in [
        ("lost writes", &dur.lost_writes),
        ("values from nowhere", &dur.values_from_nowhere),
        ("stale reads", &dur.stale_reads),
    ] {
        let verdict = if findings.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        println!("  {name:<19} {} ({})", word(verdict), findings.len());
        for finding in findings.iter().take(10) {
            println!("    {}", finding.explanation);
        }
    }
}

fn bench_checker(corpus: &std::path::Path) -> Result<()> {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["jepsen-etcd", "kv"] {
        for entry in std::fs::read_dir(corpus.join(dir))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log" || e == "txt") {
                files.push(path);
            }
        }
    }
    let started = Instant::now();
    for file in &files {
        let history = History::load(file, None)?;
        check::check(&history, Limits::default());
    }
    println!(
        "corpus: {} files checked in {:.2} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    for unknown_percent in [1, 5] {
        let shape = Shape {
            clients: 10,
            keys: 20,
            operations: 100_000,
            unknown_percent,
            seed: 1,
        };
        let history = linearizable_history(shape);
        let started = Instant::now();
        let report = check::check(&history, Limits::default());
        println!(
            "generated: {} operations, {} clients, {} keys, {}% unknown outcomes: {} in {:.2} s",
            shape.operations,
            shape.clients,
            shape.keys,
            unknown_percent,
            word(report.verdict),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Faults that make calls fail through the injector need BPF LSM: refuse the run before
/// anything starts if the kernel does not allow it.
fn require_lsm(injector: &std::path::Path) -> Result<()> {
    if let Some(reason) = tests::torture::lsm::refusal(injector)? {
        anyhow::bail!(
            "fault wal-write-error needs BPF LSM, which this kernel refuses ({reason}); leave it \
             out of --faults, or run in a VM with a stock kernel: cargo xtask vm-torture"
        );
    }
    Ok(())
}
