//! A seed range split across the jobs of a CI matrix: two shards run their seeds (nodes
//! SIGKILLed and restarted), and `torture merge` makes one verdict and one JUnit file of them.
//! Needs root (FUSE, eBPF).
mod common;

use std::{path::Path, process::Command};

use serde_json::Value;

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");
/// This file's own loopback range: runs of other test files (or a user's) never meet it.
const FIRST_IP: &str = "127.0.24.11";

fn shard(dir: &Path, shard: &str) -> std::process::Output {
    Command::new(TORTURE)
        .args(["run", "--seeds", "21..23", "--shard", shard])
        .args(["--first-ip", FIRST_IP])
        .args(["--duration", "5s", "--settle", "20s", "--faults", "kill"])
        .arg("--run-dir")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn shards_cover_the_seed_range_and_merge_into_one_verdict() {
    common::build_tools();
    let scratch = tempfile::tempdir().unwrap();
    let (first, second) = (scratch.path().join("job1"), scratch.path().join("job2"));

    let output = shard(&first, "1/2");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 of 2 seeds passed"), "{stdout}");
    assert!(shard(&second, "2/2").status.success());
    // Each job's index page links its seeds' reports, relative to it.
    let index = std::fs::read_to_string(first.join("index.html")).unwrap();
    assert!(index.contains("href=\"seed-21/report.html\""), "{index}");
    assert!(index.contains("href=\"seed-23/report.html\""), "{index}");

    // Seeds 21 and 23 went to job 1, 22 to job 2, each with its own run directory.
    for (job, seed) in [(&first, 21), (&second, 22), (&first, 23)] {
        let history = std::fs::read_to_string(job.join(format!("seed-{seed}/history.jsonl")))
            .unwrap_or_else(|e| panic!("seed {seed} in {}: {e}", job.display()));
        // A SIGKILL always lands within the 5 s (a WAL crash here once did not: on a loaded
        // machine the node had not made its Nth call in time), so the check below always has
        // a restarted node to judge.
        assert!(
            history.contains("SIGKILL, restarted"),
            "seed {seed}: no node was killed and restarted"
        );
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(job.join(format!("seed-{seed}/report.json"))).unwrap(),
        )
        .unwrap();
        let rejoin = report["torture"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "restarted nodes rejoin and catch up")
            .unwrap();
        assert_eq!(rejoin["verdict"], "pass");
        assert!(
            rejoin["detail"]
                .as_str()
                .unwrap()
                .contains("reached the leader's commit index"),
            "{rejoin}"
        );
    }

    let junit = scratch.path().join("all.xml");
    let all = scratch.path().join("all.html");
    let merged = Command::new(TORTURE)
        .args(["merge", "--json", "--junit"])
        .arg(&junit)
        .arg("--html")
        .arg(&all)
        .arg(&first)
        .arg(&second)
        .output()
        .unwrap();
    assert!(merged.status.success());
    let summary: Value = serde_json::from_slice(&merged.stdout).unwrap();
    let seeds: Vec<u64> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [21, 22, 23]);
    let all = std::fs::read_to_string(&all).unwrap();
    for link in ["job1/seed-21", "job2/seed-22", "job1/seed-23"] {
        assert!(
            all.contains(&format!("href=\"{link}/report.html\"")),
            "{all}"
        );
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"3\" failures=\"0\" errors=\"0\""),
        "{xml}"
    );
    assert!(
        xml.contains("replay: cargo xtask torture --seed 22 --duration 5s --nodes 3 --faults kill"),
        "{xml}"
    );

    let overlap = Command::new(TORTURE)
        .arg("merge")
        .arg(&first)
        .arg(&first)
        .output()
        .unwrap();
    assert!(!overlap.status.success());
    let stderr = String::from_utf8_lossy(&overlap.stderr);
    assert!(stderr.contains("seed 21 is in both"), "{stderr}");
}
