//! `torture`: Faultline's torture harness: torture runs of a target-db cluster, merging the
//! results of sharded runs, and checking recorded histories.
mod preflight;
mod print;
mod run;

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
    report::{render_html, render_index, render_junit},
    torture::{campaign::Summary, cluster::Binaries, target::TargetKind},
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
    /// outside, then check the history. Exit 0 only when every check passed (1: a check
    /// failed, 3: a check could not decide).
    ///
    /// Each node has its own loopback address (127.0.0.11, .12, ...) and its data directory on
    /// its own faultfs mount. Checks: serves again after healing, nodes converge, restarted
    /// nodes rejoin and catch up, linearizable, no acknowledged write lost, no value from
    /// nowhere or stale read, no panic, and after a final power loss of every node: serves
    /// again, nothing acknowledged lost. Needs root.
    #[command(
        after_help = "Examples:\n  torture run --seed 1234 --duration 60s --faults kill,partition\n  \
        torture run --seeds 1..200 --shard 3/8 --junit out.xml --duration 30s\n  \
        torture run --seed 11 --faults power-loss-all --db-flag=--unsafe-no-fsync"
    )]
    Run(Box<run::RunArgs>),
    /// Merge the run directories of several `torture run --seeds ... --shard` jobs into one
    /// verdict (and one JUnit file). Exit 0 only when every seed passed.
    #[command(after_help = "Example:\n  torture merge shard-1 shard-2 shard-3 --junit all.xml")]
    Merge {
        /// Run directories, each holding the summary.json its job wrote.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Also write JUnit XML of every seed here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Also write an HTML index of every seed here, failing seeds first, each linking to
        /// its own report.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Print the merged summary as JSON instead of text.
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
        /// Seconds each measurement counts (default 5; 10 with --vs).
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Side by side with this database (etcd): 3 nodes each, 1/16/64 clients, 3
        /// interleaved repetitions, medians.
        #[arg(long, value_enum)]
        vs: Option<TargetKind>,
        /// With --vs: also write the rows as JSON here.
        #[arg(long, requires = "vs")]
        json: Option<PathBuf>,
        /// One more flag for every target-db node (repeatable), e.g. --db-flag=--heartbeat-ms=250.
        #[arg(long = "db-flag", allow_hyphen_values = true)]
        db_flags: Vec<String>,
        /// Only these client counts (comma-separated), e.g. --clients 64; default 1,4,16
        /// (1,16,64 with --vs).
        #[arg(long, value_delimiter = ',')]
        clients: Vec<usize>,
        /// Only these cluster sizes (comma-separated; without --vs), e.g. --nodes 3; default 1,3.
        #[arg(long, value_delimiter = ',', conflicts_with = "vs")]
        nodes: Vec<usize>,
    },
    /// Time the checker on a corpus directory and on a generated 100,000-operation history.
    #[command(hide = true)]
    BenchChecker {
        #[arg(long)]
        corpus: PathBuf,
    },
}

/// Exit codes: 0 every check passed, 1 a check failed, 3 a check could not decide, 2 the run
/// could not be made (bad arguments, a cluster that would not start), with the reason.
fn main() -> ExitCode {
    match run_command(Cli::parse().command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("torture: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_command(command: Command) -> Result<ExitCode> {
    match command {
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
                let page = render_html(&loaded, &report, &history.display().to_string(), None);
                std::fs::write(&path, page)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("report: {}", path.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&loaded, &report);
            }
            Ok(exit_code(report.verdict))
        }
        Command::BenchChecker { corpus } => bench_checker(&corpus).map(|()| ExitCode::SUCCESS),
        Command::BenchDb {
            seconds,
            bin_dir,
            vs,
            json,
            db_flags,
            clients,
            nodes,
        } => {
            let or_default = |chosen: Vec<usize>, default: &[usize]| {
                if chosen.is_empty() {
                    default.to_vec()
                } else {
                    chosen
                }
            };
            let binaries = Binaries::beside_me(bin_dir.as_deref())?;
            // On the machine's disk (ext4 here), not tmpfs: the fsyncs are real.
            let scratch = tempfile::Builder::new()
                .prefix("targetdb-bench-")
                .tempdir_in("/var/tmp")?;
            let runtime = tokio::runtime::Runtime::new()?;
            if let Some(other) = vs {
                anyhow::ensure!(
                    other == TargetKind::Etcd,
                    "--vs takes another database to compare target-db with: etcd"
                );
                let seconds = seconds.unwrap_or(10);
                let rows = runtime.block_on(tests::bench_db::versus_etcd(
                    &binaries.target_db,
                    &db_flags,
                    scratch.path(),
                    &or_default(clients, &[1, 16, 64]),
                    3,
                    Duration::from_secs(2),
                    Duration::from_secs(seconds),
                ))?;
                println!(
                    "puts of 1 KiB values to 10,000 keys, 3 nodes each on this disk, closed loop, \
                     {seconds} s after 2 s of warm-up, medians of 3 interleaved repetitions:"
                );
                println!(
                    "{:>8} {:>22} {:>22} {:>7}",
                    "clients", "target-db puts/s (p99)", "etcd puts/s (p99)", "ratio"
                );
                for row in &rows {
                    println!(
                        "{:>8} {:>22} {:>22} {:>6.2}x",
                        row.clients,
                        format!(
                            "{:.0} ({:.1} ms)",
                            row.target_db_ops_per_s, row.target_db_p99_ms
                        ),
                        format!("{:.0} ({:.1} ms)", row.etcd_ops_per_s, row.etcd_p99_ms),
                        row.target_db_ops_per_s / row.etcd_ops_per_s.max(1e-9)
                    );
                }
                if let Some(path) = json {
                    std::fs::write(
                        &path,
                        serde_json::to_string_pretty(&serde_json::json!({"rows": rows}))?,
                    )
                    .with_context(|| format!("writing {}", path.display()))?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let seconds = seconds.unwrap_or(5);
            let results = runtime.block_on(tests::bench_db::run(
                &binaries.target_db,
                &db_flags,
                scratch.path(),
                &or_default(nodes, &[1, 3]),
                &or_default(clients, &[1, 4, 16]),
                seconds,
            ))?;
            println!("target-db puts of 1 KiB values, real fsync, {seconds} s each:");
            println!(
                "{:>6} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
                "nodes", "clients", "puts/s", "p50 ms", "p99 ms", "max ms", "CPU busy"
            );
            for m in results {
                println!(
                    "{:>6} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.1} {:>8.0}%",
                    m.nodes,
                    m.clients,
                    m.puts_per_second,
                    m.p50_ms,
                    m.p99_ms,
                    m.max_ms,
                    m.cpu_busy * 100.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(*args),
        Command::Merge {
            dirs,
            junit,
            html,
            json,
        } => {
            let summary = Summary::merge(&dirs)?;
            if let Some(path) = junit {
                std::fs::write(&path, render_junit(&summary))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = html {
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                std::fs::write(&path, render_index(&summary, dir))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print::print_summary(&summary, &format!("merged from {} directories", dirs.len()));
            }
            Ok(exit_code(summary.verdict()))
        }
    }
}

/// 0 pass, 1 fail, 3 unknown: the same for every subcommand.
fn exit_code(verdict: Verdict) -> ExitCode {
    ExitCode::from(match verdict {
        Verdict::Pass | Verdict::NotApplicable => 0,
        Verdict::Fail => 1,
        Verdict::Unknown => 3,
    })
}

fn word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::Unknown => "unknown",
        Verdict::NotApplicable => "n/a",
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
