//! Every named scenario, a short deterministic script, run against the safe target-db: each
//! must pass every check and log its steps as faults. Needs root (FUSE, eBPF). The runs share
//! the nodes' addresses (this file's range, FIRST_IP and up), so one runs at a time.
mod common;

use std::{
    process::Command,
    sync::{Mutex, Once},
};

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");
/// This file's own loopback range: runs of other test files (or a user's) never meet it.
const FIRST_IP: &str = "127.0.22.11";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static BUILD: Once = Once::new();

fn scenario(name: &str, nodes: &str, steps: usize) {
    BUILD.call_once(common::build_tools);
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run_dir = common::ScratchDir::new();
    let output = Command::new(TORTURE)
        .args(["run", "--seed", "5", "--duration", "8s", "--settle", "20s"])
        .args(["--first-ip", FIRST_IP])
        .args(["--nodes", nodes, "--scenario", name])
        .arg("--run-dir")
        .arg(run_dir.path().join("run"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{name}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("--scenario {name}")),
        "the replay names it:\n{stdout}"
    );
    let history = std::fs::read_to_string(run_dir.path().join("run/history.jsonl")).unwrap();
    // The final phase: one power loss of every node, and a second one when the first tore a
    // record in a log (a torn cut, odd seeds), which depends on where the cut fell.
    let (last, logged): (Vec<&str>, Vec<&str>) = history
        .lines()
        .filter(|l| l.contains("\"kind\":\"fault\""))
        .partition(|l| {
            l.contains("final power loss of every node")
                || l.contains("second power loss of every node")
        });
    assert_eq!(logged.len(), steps, "{name}: steps logged as faults");
    assert!(
        last.first()
            .is_some_and(|l| l.contains("final power loss of every node"))
            && last.len() <= 2,
        "{name}: the run ends with the final power loss: {last:?}"
    );
}

#[test]
fn leader_failure_data_consistency() {
    scenario("leader-failure-data-consistency", "3", 1);
}

#[test]
fn partition_minority() {
    scenario("partition-minority", "3", 1);
}

#[test]
fn partition_majority() {
    scenario("partition-majority", "3", 1);
}

#[test]
fn node_rejoin() {
    scenario("node-rejoin", "3", 1);
}

#[test]
fn power_loss_all() {
    scenario("power-loss-all", "3", 1);
}

#[test]
fn multiple_failures() {
    scenario("multiple-failures", "5", 2);
}

#[test]
fn uncommitted_entries() {
    scenario("uncommitted-entries", "3", 1);
}

#[test]
fn rapid_leader_changes() {
    scenario("rapid-leader-changes", "3", 4);
}

#[test]
fn concurrent_failures() {
    scenario("concurrent-failures", "3", 1);
}

#[test]
fn split_brain_recovery() {
    scenario("split-brain-recovery", "3", 2);
}

#[test]
fn leader_failure_under_load() {
    scenario("leader-failure-under-load", "3", 1);
}

#[test]
fn follower_recovery() {
    scenario("follower-recovery", "3", 1);
}

#[test]
fn snapshot_after_failure() {
    scenario("snapshot-after-failure", "3", 2);
}

#[test]
fn torn_wal_tail() {
    scenario("torn-wal-tail", "3", 1);
}

#[test]
fn fsyncgate() {
    scenario("fsyncgate", "3", 1);
}

#[test]
fn wal_bitrot() {
    scenario("wal-bitrot", "3", 1);
}

#[test]
fn snapshot_install_crash() {
    scenario("snapshot-install-crash", "3", 1);
}

#[test]
fn multiple_failures_on_three_nodes_is_refused_with_the_fix() {
    let output = Command::new(TORTURE)
        .args(["run", "--scenario", "multiple-failures", "--nodes", "3"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("add --nodes 5"), "{stderr}");
}
