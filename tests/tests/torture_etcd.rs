//! Torture runs of a real database from Debian: etcd 3.4 (`etcd-server`, which `cargo xtask
//! setup` installs), through the same harness, faults and checks as target-db. Needs root
//! (FUSE mounts, eBPF for partitions).
mod common;

use std::{process::Output, sync::Mutex};

use common::{assert_checks, build_tools, torture_run};

/// This file's own loopback range: runs of other test files (or a user's) never meet it.
const FIRST_IP: &str = "127.0.26.11";

/// The runs share the nodes' addresses, so one runs at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn torture(args: &[&str]) -> (Output, String) {
    let run_dir = tempfile::tempdir().unwrap();
    let args = [&["--target", "etcd"], args].concat();
    torture_run(&ONE_AT_A_TIME, FIRST_IP, run_dir.path(), &args)
}

/// The verdict word each check got, by name, from the report's table.
fn verdicts(report: &str) -> Vec<(String, String)> {
    report
        .lines()
        .filter_map(|line| {
            let (word, rest) = line.split_once(char::is_whitespace)?;
            ["pass", "FAIL", "unknown", "n/a"]
                .contains(&word)
                .then(|| (word.to_owned(), rest.trim().to_owned()))
        })
        .collect()
}

/// etcd on ext4's rules (what it runs on in practice) under kills, pauses and partitions, and
/// the final power loss of every node: every check decides or says why it does not apply.
#[test]
fn etcd_passes_under_kills_pauses_and_partitions() {
    build_tools();
    let (output, report) = torture(&[
        "--seed",
        "1",
        "--duration",
        "10s",
        "--faults",
        "kill,pause,partition",
        "--metadata",
        "ext4",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{report}\n{stderr}");
    let verdicts = verdicts(&report);
    assert_checks(
        &report,
        "pass",
        &[
            "linearizable",
            "no acknowledged write lost",
            "nodes converge to one state",
            "restarted nodes rejoin and catch up",
            "at most one leader per term",
            "serves after a power loss of every node",
        ],
    );
    // What etcd cannot tell (request ids, target-db's own status fields) is not a pass.
    for (word, rest) in &verdicts {
        if word == "n/a" {
            assert!(rest.contains("not applicable: "), "{rest}");
        }
    }
    assert_checks(&report, "n/a", &["each write applied once"]);
    assert!(
        report.contains("--target etcd --faults kill,pause,partition --metadata ext4"),
        "the replay names the target:\n{report}"
    );
}

/// etcd's own unsafe switch (`--unsafe-no-fsync`): a power loss of every node leaves each with
/// a preallocated but empty log, so no member knows the others any more: no leader is ever
/// elected again, and what was acknowledged is gone. The checks say so.
#[test]
fn etcd_without_fsync_loses_acknowledged_writes_and_the_run_fails() {
    build_tools();
    let (output, report) = torture(&[
        "--seed",
        "2",
        "--duration",
        "6s",
        "--faults",
        "power-loss-all",
        "--metadata",
        "ext4",
        "--db-flag=--unsafe-no-fsync",
        "--settle",
        "5s",
    ]);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let lost_or_stuck = [
        "serves after a power loss of every node",
        "serves again after healing",
        "no acknowledged write lost",
        "linearizable",
    ];
    assert!(
        verdicts(&report).iter().any(|(word, check)| word == "FAIL"
            && lost_or_stuck.iter().any(|name| check.starts_with(name))),
        "{report}"
    );
}
