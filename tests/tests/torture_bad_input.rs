//! `torture run` refuses arguments that would test nothing or could not work, before anything
//! starts: one line naming the problem and the fix, exit code 2, nothing mounted.
use std::process::Command;

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");

fn refused(args: &[&str], expected: &str) {
    let run_dir = tempfile::tempdir().unwrap();
    let output = Command::new(TORTURE)
        .arg("run")
        .arg("--run-dir")
        .arg(run_dir.path().join("run"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    assert!(
        !run_dir.path().join("run/node1").exists(),
        "{args:?}: nothing may start"
    );
}

#[test]
fn arguments_that_test_nothing_are_refused() {
    refused(&["--nodes", "0"], "--nodes 0");
    refused(&["--clients", "0"], "--clients 0");
    refused(&["--faults", ","], "--faults none");
    refused(&["--faults", "kill,nosuch"], "unknown fault `nosuch`");
    refused(&["--first-ip", "10.0.0.1"], "loopback");
}

#[test]
fn a_fault_or_scenario_the_target_cannot_take_is_refused() {
    // wal-crash needs target-db's log format: etcd is not silently run without it.
    refused(
        &["--target", "etcd", "--faults", "kill,wal-crash"],
        "wal-crash cannot be applied to etcd",
    );
    refused(
        &["--target", "etcd", "--scenario", "wal-bitrot"],
        "--scenario wal-bitrot: works only on target-db",
    );
    refused(&["--target", "mysql"], "invalid value 'mysql'");
}

#[test]
fn a_spec_that_cannot_name_a_leader_of_several_nodes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("db.toml");
    std::fs::write(
        &spec,
        "name = \"kv\"\nclient_port = 6399\nstart = \"kv {ip}\"\nlog = \"*\"\nclient = \"cat\"\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    refused(
        &["--target-spec", spec, "--nodes", "3"],
        "gives neither `primary` (a fixed primary) nor `status`",
    );
    refused(
        &[
            "--target-spec",
            spec,
            "--nodes",
            "1",
            "--faults",
            "kill,partition",
        ],
        "--faults partition: needs at least 2 nodes",
    );
    refused(
        &["--target-spec", spec, "--faults", "crash-point"],
        "crash-point cannot be applied to kv",
    );
}

#[test]
fn an_address_another_process_listens_on_is_refused() {
    // Something already listens where node 1 would: the run must not send it /init.
    let taken = std::net::TcpListener::bind("127.0.9.11:7000").unwrap();
    refused(&["--first-ip", "127.0.9.11"], "127.0.9.11:7000 is taken");
    drop(taken);
}
