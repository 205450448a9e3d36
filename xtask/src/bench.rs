//! `cargo xtask bench`: speed goals, measured in release builds (never in timed tests).
use std::path::Path;

use anyhow::Result;

use crate::cmd;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Bench {
    /// The history checker: the whole Jepsen corpus, and 100,000 generated operations.
    Checker,
    /// faultfs against ext4 on the same disk, four workloads, as ratios.
    Faultfs,
    /// `faultfs explore`: crash states checked per minute (goal: 1,000) on small workloads.
    Explore,
    /// What the injector costs a process (attached or not) next to strace; delay precision.
    Injector,
    /// `injector net --delay`: one-way UDP latency at 1,000 to 20,000 packets/s and TCP round
    /// trips, with and without the delay, and on a pair not named.
    Net,
    /// target-db puts/s and latency, 1 and 3 nodes, 1/4/16 clients, real fsync; with
    /// `--vs etcd`, target-db and etcd side by side (about 8 minutes).
    Db,
    /// Torture runs: ops/s with and without faults, heal to first write, checker time, and the
    /// time to first detection of each unsafe switch of target-db (about 10 minutes).
    Torture,
}

pub fn run(
    root: &Path,
    bench: Bench,
    vs: Option<&str>,
    json: Option<&Path>,
    db_flags: &[String],
) -> Result<()> {
    if vs.is_some() && !matches!(bench, Bench::Db) {
        anyhow::bail!("--vs compares databases: it goes with `cargo xtask bench db`");
    }
    if !db_flags.is_empty() && !matches!(bench, Bench::Db) {
        anyhow::bail!(
            "--db-flag is passed to target-db's nodes: it goes with `cargo xtask bench db`"
        );
    }
    match bench {
        Bench::Checker => cmd::run(
            std::process::Command::new(crate::torture::build_torture(root)?)
                .current_dir(root)
                .args(["bench-checker", "--corpus", "tests/data/linearizability"]),
        ),
        Bench::Faultfs => crate::bench_faultfs::run(root),
        Bench::Explore => crate::bench_explore::run(root),
        Bench::Injector => crate::bench_injector::run(root),
        Bench::Net => crate::bench_net::run(root),
        Bench::Torture => crate::bench_torture::run(root),
        Bench::Db => {
            crate::torture::build_tools(root)?;
            let mut command = std::process::Command::new(root.join("target/release/torture"));
            command.arg("bench-db");
            if let Some(other) = vs {
                crate::packages::ensure(&["etcd-server"], "benchmarking against etcd (--vs etcd)")?;
                command.args(["--vs", other]);
            }
            if let Some(json) = json {
                command.arg("--json").arg(json);
            }
            for flag in db_flags {
                command.arg(format!("--db-flag={flag}"));
            }
            cmd::run(&mut command)
        }
    }
}
