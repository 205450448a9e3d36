//! Whole torture runs, as `cargo xtask torture` does them, short: a safe target-db passes under
//! every kind of fault, and one that does not fsync is caught. Needs root (FUSE mounts, eBPF).
//! Both runs use the nodes' addresses 127.0.0.11-13, so they run one after the other.
mod common;

use std::process::{Command, Output};

use common::build_tools;

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");

fn torture(args: &[&str]) -> (Output, String) {
    let run_dir = tempfile::tempdir().unwrap();
    let output = Command::new(TORTURE)
        .arg("run")
        .arg("--run-dir")
        .arg(run_dir.path().join("run"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[test]
fn a_safe_database_passes_and_one_that_skips_fsync_is_caught() {
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

    // A named scenario: the leader is cut off; the majority elects another and loses nothing.
    let (output, report) = torture(&[
        "--seed",
        "5",
        "--duration",
        "8s",
        "--scenario",
        "partition-majority",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "partition-majority:\n{report}"
    );
    assert!(
        report.contains("--scenario partition-majority"),
        "the replay names it:\n{report}"
    );

    let (output, report) = torture(&[
        "--seed",
        "11",
        "--duration",
        "6s",
        "--faults",
        "power-loss-all",
        "--settle",
        "8s",
        "--db-flag=--unsafe-no-fsync",
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "losing acknowledged writes must fail the run:\n{report}"
    );
    assert!(report.lines().any(|l| l.starts_with("FAIL")), "{report}");
}
