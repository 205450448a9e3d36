//! `cargo xtask bench torture`: what a torture run costs and what it finds. Client ops/s with
//! and without faults, the time from healing to the first write, how long the checks took; and
//! for each unsafe switch of target-db, how long runs take to catch it (time to first
//! detection: seeds are run one after another until one fails).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::{cmd, kernel_fs, torture::build_tools};

const DURATION: &str = "20s";
const SEEDS: u64 = 3;
/// Seeds tried per unsafe switch before it counts as not caught.
const DETECTION_SEEDS: u64 = 5;

/// An unsafe switch of target-db and the faults (`--faults LIST` or `--scenario NAME`) that
/// should expose it.
struct Unsafe {
    flags: &'static [&'static str],
    faults: [&'static str; 2],
}

const UNSAFE: &[Unsafe] = &[
    Unsafe {
        flags: &["--unsafe-no-fsync"],
        faults: ["--faults", "power-loss-all"],
    },
    Unsafe {
        flags: &["--unsafe-ignore-fsync-error"],
        faults: ["--faults", "disk-error"],
    },
    Unsafe {
        // Small segments, so new segment files (whose names are not made durable) are common.
        flags: &["--unsafe-no-dir-fsync", "--segment-bytes=16384"],
        faults: ["--faults", "power-loss,power-loss-all"],
    },
    Unsafe {
        // No snapshots: one sent to the damaged follower would erase the damage.
        flags: &["--unsafe-skip-checksum", "--snapshot-every=1000000"],
        faults: ["--scenario", "wal-bitrot"],
    },
];

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "torture runs mount file systems and load eBPF: run the bench as root"
    );
    build_tools(root)?;
    kernel_fs::ensure()?;
    let scratch = tempfile::Builder::new()
        .prefix("faultline-bench-torture-")
        .tempdir_in("/var/tmp")?;
    let torture = root.join("target/release/torture");

    println!("torture runs of {DURATION}, 3 nodes, 4 clients, seeds 1..{SEEDS}:");
    println!(
        "{:<12} {:>8} {:>22} {:>14}",
        "faults", "ops/s", "heal -> write (max)", "checks (max)"
    );
    for (label, faults) in [("none", "none"), ("all", "default")] {
        let mut command = Command::new(&torture);
        command
            .args(["run", "--json", "--duration", DURATION])
            .arg(format!("--seeds=1..{SEEDS}"))
            .arg("--run-dir")
            .arg(scratch.path().join(label));
        if faults != "default" {
            command.arg(format!("--faults={faults}"));
        }
        let reports = reports(&summary(&mut command)?)?;
        let mean = |key: &str| {
            reports.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / reports.len() as f64
        };
        let max = |key: &str| {
            reports
                .iter()
                .map(|r| r[key].as_f64())
                .try_fold(0f64, |acc, v| v.map(|v| acc.max(v)))
        };
        println!(
            "{label:<12} {:>8.0} {:>22} {:>14}",
            mean("ops_per_second"),
            max("heal_to_first_write_ms").map_or("never".into(), |ms| format!("{ms:.0} ms")),
            max("check_ms").map_or("?".into(), |ms| format!("{ms:.0} ms")),
        );
    }

    println!();
    println!(
        "time to first detection of each unsafe switch (seeds 1..{DETECTION_SEEDS} in turn, {DURATION} each):"
    );
    for case in UNSAFE {
        let mut elapsed = 0.0;
        let mut caught = None;
        for seed in 1..=DETECTION_SEEDS {
            let mut command = Command::new(&torture);
            command
                .args(["run", "--json", "--duration", DURATION, "--settle", "20s"])
                .args(["--seed", &seed.to_string()])
                .args(case.faults)
                .arg("--run-dir")
                .arg(scratch.path().join(format!("unsafe-{seed}")));
            for flag in case.flags {
                command.arg(format!("--db-flag={flag}"));
            }
            let summary = summary(&mut command)?;
            let result = &summary["results"][0];
            elapsed += result["seconds"].as_f64().unwrap_or(0.0);
            if result["verdict"] == "fail" {
                let failed: Vec<&str> = result["checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["verdict"] == "fail")
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                caught = Some((seed, failed.join("; ")));
                break;
            }
        }
        let switch = case.flags.join(" ");
        let faults = case.faults.join(" ");
        match caught {
            Some((seed, checks)) => println!(
                "  {switch} ({faults}): caught by seed {seed} after {elapsed:.0} s: {checks}"
            ),
            None => println!(
                "  {switch} ({faults}): NOT caught in {DETECTION_SEEDS} seeds ({elapsed:.0} s)"
            ),
        }
    }
    Ok(())
}

/// Runs `torture run --json` and returns the summary it prints (whatever the verdict).
fn summary(command: &mut Command) -> Result<Value> {
    eprintln!("+ {}", cmd::describe(command));
    let output = command.output().context("starting torture")?;
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "torture printed no summary ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The `torture` part of each seed's report.json.
fn reports(summary: &Value) -> Result<Vec<Value>> {
    summary["results"]
        .as_array()
        .context("a summary without results")?
        .iter()
        .map(|result| {
            let dir = PathBuf::from(result["run_dir"].as_str().context("no run_dir")?);
            let text = std::fs::read_to_string(dir.join("report.json"))
                .with_context(|| format!("reading {}/report.json", dir.display()))?;
            let report: Value = serde_json::from_str(&text)?;
            Ok(report["torture"].clone())
        })
        .collect()
}
