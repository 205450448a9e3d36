//! A whole torture run, as `cargo xtask torture` does it, short: a safe target-db passes under
//! every kind of fault this kernel allows. Needs root (FUSE mounts, eBPF).
mod common;

use std::process::{Command, Output};

use common::build_tools;

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");
/// This file's own loopback range: runs of other test files (or a user's) never meet it.
const FIRST_IP: &str = "127.0.21.11";

fn torture(args: &[&str]) -> (Output, String) {
    let run_dir = tempfile::tempdir().unwrap();
    let output = Command::new(TORTURE)
        .arg("run")
        .args(["--first-ip", FIRST_IP])
        .arg("--run-dir")
        .arg(run_dir.path().join("run"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[test]
fn a_safe_database_passes_under_every_fault() {
    build_tools();

    // Every fault this kernel allows (the default list).
    let (output, report) = torture(&["--seed", "12", "--duration", "8s"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the safe database should pass:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for check in [
        "linearizable",
        "no acknowledged write lost",
        "nodes converge to one state",
        "restarted nodes rejoin and catch up",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("pass") && l.contains(check)),
            "{check}:\n{report}"
        );
    }
    assert!(
        report.contains("replay: cargo xtask torture --seed 12"),
        "{report}"
    );
}
