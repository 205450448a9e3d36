//! Ctrl-C, SIGTERM or SIGHUP in the middle of a torture run tears the cluster down: no node
//! process and no faultfs mount of the run is left. Sent to the torture process alone, the
//! clean-up is its own; sent to its whole process group, as a closing terminal does, the nodes
//! and the faultfs mounts get it at the same moment, and a mount the dying nodes still hold
//! must not be left behind. Needs root.
mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");
/// This file's own loopback range: runs of other test files (or a user's) never meet it.
const FIRST_IP: &str = "127.0.25.11";

/// Processes whose command line names `dir` (the run's nodes and mounts do).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle) && !cmdline.contains(TORTURE))
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(dir.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

/// Who gets the signal.
#[derive(Clone, Copy)]
enum To {
    Torture,
    ItsProcessGroup,
}

fn interrupt_mid_run(signal: i32, to: To, words: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let run_dir = scratch.path().join("run");
    let mut child = Command::new(TORTURE)
        .args(["run", "--seed", "4", "--duration", "60s"])
        .args(["--first-ip", FIRST_IP])
        .arg("--run-dir")
        .arg(&run_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so a signal to the group reaches no process of this test.
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The first progress line: the cluster is up, the workload and the nemesis are running.
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no progress:\n{seen}"
        );
        seen.push_str(&line);
        if line.starts_with('[') {
            break;
        }
    }
    assert!(
        !mounts_under(&run_dir).is_empty(),
        "the nodes' mounts were not up"
    );
    // The child this test spawned and has not reaped (or the process group it leads, which
    // holds only what it started), so the id is still its.
    let pid = Pid::from_raw(child.id() as i32).expect("a child's pid is never 0");
    let signal = Signal::from_named_raw(signal).expect("a named signal");
    match to {
        To::Torture => kill_process(pid, signal),
        To::ItsProcessGroup => kill_process_group(pid, signal),
    }
    .expect("signalling torture");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(!status.success());
    assert!(rest.contains(words), "{rest}");
    assert_eq!(mounts_under(&run_dir), Vec::<String>::new());
    assert_eq!(processes_using(&run_dir), Vec::<String>::new());
}

#[test]
fn ctrl_c_sigterm_and_sighup_tear_the_cluster_down() {
    common::build_tools();
    interrupt_mid_run(
        libc::SIGINT,
        To::Torture,
        "stopped by Ctrl-C: the cluster is torn down",
    );
    interrupt_mid_run(
        libc::SIGTERM,
        To::Torture,
        "stopped by SIGTERM: the cluster is torn down",
    );
    interrupt_mid_run(
        libc::SIGHUP,
        To::ItsProcessGroup,
        "stopped by SIGHUP (its terminal closed): the cluster is torn down",
    );
}
