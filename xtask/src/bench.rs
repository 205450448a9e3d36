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
    /// target-db puts/s and latency, 1 and 3 nodes, 1/4/16 clients, real fsync.
    Db,
    /// Torture runs: ops/s with and without faults, heal to first write, checker time, and the
    /// time to first detection of each unsafe switch of target-db (about 10 minutes).
    Torture,
}

pub fn run(root: &Path, bench: Bench) -> Result<()> {
    match bench {
        Bench::Checker => cmd::run(
            std::process::Command::new(crate::torture::build_torture(root)?)
                .current_dir(root)
                .args(["bench-checker", "--corpus", "tests/data/linearizability"]),
        ),
        Bench::Faultfs => crate::bench_faultfs::run(root),
        Bench::Explore => crate::bench_explore::run(root),
        Bench::Injector => crate::bench_injector::run(root),
        Bench::Torture => crate::bench_torture::run(root),
        Bench::Db => {
            crate::torture::build_tools(root)?;
            cmd::run(
                std::process::Command::new(root.join("target/release/torture")).arg("bench-db"),
            )
        }
    }
}
