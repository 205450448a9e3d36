//! `injector count` against real processes, with the real eBPF program in the real kernel.
//! Needs root, as CI runs.
mod common;

use std::process::Command;

use common::{INJECTOR, attached, done_count, worker};
use serde_json::Value;

/// Starts `injector count --json` on `pid` and returns once it reports being attached.
fn attach_counter(pid: u32, extra: &[&str]) -> process_guard::Spawned {
    attached("count", pid, extra)
}

fn calls_of(report: &Value, name: &str) -> u64 {
    report["syscalls"]
        .as_array()
        .expect("report lists syscalls")
        .iter()
        .find(|entry| entry["name"] == name)
        .map_or(0, |entry| entry["calls"].as_u64().unwrap())
}

#[test]
fn counts_exactly_the_targets_fsyncs_and_none_of_a_bystanders() {
    const THREADS: u64 = 4;
    const FSYNCS: u64 = 37;
    let mut bystander = worker("bystander", &["--until-stdin-closes"]);
    let mut target = worker(
        "target",
        &[
            "--wait-for-go",
            "--threads",
            &THREADS.to_string(),
            "--fsyncs",
            &FSYNCS.to_string(),
        ],
    );
    let mut injector = attach_counter(target.pid(), &[]);

    target.send_line("go").unwrap();
    assert_eq!(done_count(&target.read_line().unwrap()), THREADS * FSYNCS);
    target.finish().unwrap();
    let report: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    injector.finish().unwrap();
    bystander.close_stdin();
    let bystander_fsyncs = done_count(&bystander.read_line().unwrap());
    bystander.finish().unwrap();

    assert_eq!(report["event"], "counts");
    assert_eq!(report["ended_by"], "target-exit");
    assert!(
        bystander_fsyncs > 0,
        "the bystander must have been calling fsync while the target was counted"
    );
    assert_eq!(
        calls_of(&report, "fsync"),
        THREADS * FSYNCS,
        "exactly the target's fsyncs, none of the bystander's {bystander_fsyncs}: {report}"
    );
    // The target's threads each exited, and the process ended with exit_group.
    assert_eq!(calls_of(&report, "exit_group"), 1, "{report}");
}

#[test]
fn duration_ends_counting_and_leaves_the_target_running() {
    let mut target = worker("target", &["--wait-for-go", "--fsyncs", "3"]);
    let injector = attach_counter(target.pid(), &["--duration", "300ms"]);
    let mut injector = injector;
    let report: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    injector.finish().unwrap();
    assert_eq!(report["ended_by"], "duration");
    assert_eq!(calls_of(&report, "fsync"), 0, "{report}");

    // Detached and unharmed: the target still works normally.
    target.send_line("go").unwrap();
    assert_eq!(done_count(&target.read_line().unwrap()), 3);
    target.finish().unwrap();
}

#[test]
fn a_pid_that_does_not_exist_is_a_clear_error() {
    // A child we started and reaped: its pid names no process now.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();

    let output = Command::new(INJECTOR)
        .args(["count", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("no process with pid {pid} exists")),
        "stderr: {stderr}"
    );
}

#[test]
fn a_thread_id_is_refused_with_the_fix() {
    let mut target = worker("target", &["--until-stdin-closes", "--threads", "2"]);
    let pid = target.pid();
    let thread = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .find(|tid| tid != &pid.to_string())
        .expect("the worker runs more than one thread");

    let output = Command::new(INJECTOR)
        .args(["count", "--pid", &thread])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "is a thread, not a process: pass its process id, --pid {pid}"
        )),
        "stderr: {stderr}"
    );
    target.close_stdin();
    target.finish().unwrap();
}
