//! `cargo xtask bench explore`: crash states checked per minute by `faultfs explore` on
//! workloads of a few hundred operations on small files, with a trivial check (the goal is at
//! least 1,000 a minute), states built in memory (the default) and on this machine's disk.
use std::{path::Path, process::Command};

use anyhow::{Context, Result, ensure};

const GOAL_PER_MINUTE: f64 = 1000.0;
const MAX_STATES: &str = "3000";

struct Workload {
    name: &'static str,
    script: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "100 files: create, write, fsync each; one directory fsync (~300 ops)",
        script: "for i in $(seq 100); do echo $i > f$i; sync f$i; done; sync .",
    },
    Workload {
        name: "append-only log: 100 records, each fsynced (~200 ops)",
        script: "touch log; sync .; for i in $(seq 100); do echo record-$i >> log; sync log; done",
    },
];

pub fn run(root: &Path) -> Result<()> {
    let faultfs = crate::bench_faultfs::build_faultfs(root)?;
    let disk = tempfile::tempdir_in(root.join("target")).context("a directory on the disk")?;
    println!("| workload | states built in | states checked | seconds | states/min | goal |");
    println!("|---|---|---|---|---|---|");
    for workload in WORKLOADS {
        for (place, tmpdir) in [
            ("memory (/dev/shm)", None),
            ("disk (ext4)", Some(disk.path())),
        ] {
            let json = tempfile::NamedTempFile::new()?;
            let mut command = Command::new(&faultfs);
            command
                .args([
                    "explore",
                    "--max-states",
                    MAX_STATES,
                    "--check",
                    "true",
                    "--json",
                ])
                .arg(json.path())
                .args(["--", "sh", "-c", workload.script]);
            match tmpdir {
                Some(dir) => command.env("TMPDIR", dir),
                None => command.env_remove("TMPDIR"),
            };
            let output = command.output().context("running faultfs explore")?;
            ensure!(
                output.status.success(),
                "explore failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let summary: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(json.path())?)?;
            let states = summary["states_explored"].as_f64().unwrap_or(0.0);
            let seconds = summary["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            let per_minute = states / seconds.max(1e-3) * 60.0;
            println!(
                "| {} | {place} | {states} | {seconds:.1} | {per_minute:.0} | {} |",
                workload.name,
                if per_minute >= GOAL_PER_MINUTE {
                    "met (>= 1,000/min)"
                } else {
                    "MISSED (>= 1,000/min)"
                }
            );
        }
    }
    Ok(())
}
