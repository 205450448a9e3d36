//! Helpers shared by the injector's integration tests: worker processes with known syscalls,
//! and the injector binary driven over its JSON lines.
#![allow(dead_code)]

pub mod traffic;

use std::{
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use process_guard::Spawned;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

pub const INJECTOR: &str = env!("CARGO_BIN_EXE_injector");
pub const WORKER: &str = env!("CARGO_BIN_EXE_syscall-worker");

pub fn worker(name: &str, args: &[&str]) -> Spawned {
    let mut worker = Spawned::start(name, Command::new(WORKER).args(args)).unwrap();
    assert_eq!(worker.read_line().unwrap(), "ready");
    worker
}

/// Starts `injector SUBCOMMAND --json --pid PID EXTRA...` and returns once it reports attached.
pub fn attached(subcommand: &str, pid: u32, extra: &[&str]) -> Spawned {
    let mut injector = Spawned::start(
        "injector",
        Command::new(INJECTOR)
            .args([subcommand, "--json", "--pid", &pid.to_string()])
            .args(extra),
    )
    .unwrap();
    let line = injector.read_line().unwrap();
    let attached: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
    assert_eq!(attached["event"], "attached");
    assert_eq!(attached["pid"], pid);
    injector
}

/// Every JSON line the process prints until it exits.
pub fn remaining_json(process: &mut Spawned) -> Vec<Value> {
    let mut lines = Vec::new();
    while let Ok(line) = process.read_line() {
        lines.push(serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}")));
    }
    lines
}

pub fn done_count(line: &str) -> u64 {
    line.strip_prefix("done ")
        .unwrap_or_else(|| panic!("worker said {line:?}, expected `done N`"))
        .parse()
        .unwrap()
}

/// The process state letter from /proc/PID/stat (R, S, T, Z, ...), None once it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Polls until `condition` holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops a process the way a user does (SIGTERM) and waits, so it cleans up after itself.
pub fn stop(process: Spawned) {
    signal(process.pid(), Signal::TERM);
    let _ = process.wait();
}

/// The status a shell script reported with `echo child-exit $?`, skipping its other lines.
pub fn child_exit(shell: &mut Spawned) -> String {
    loop {
        let line = shell.read_line().unwrap();
        if let Some(status) = line.strip_prefix("child-exit ") {
            return status.to_owned();
        }
    }
}

/// What `injector probe --json` says about this kernel, asked once per test binary: the kernel
/// does not change between tests, and a probe loads every program it knows, which takes 10 s
/// inside an emulated VM.
pub fn probe() -> &'static Value {
    static PROBE: OnceLock<Value> = OnceLock::new();
    PROBE.get_or_init(|| {
        let output = Command::new(INJECTOR)
            .args(["probe", "--json"])
            .output()
            .unwrap();
        assert!(output.status.success(), "injector probe failed: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    })
}

/// What `injector probe --json` says about the mechanism whose name starts with `prefix`.
pub fn probed(prefix: &str) -> Value {
    probe()["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("probe lists no {prefix}"))
        .clone()
}

/// `injector attach ARGS` exits 2 (bad input) with `expected` in its message; returns stderr.
pub fn assert_refused(
    args: &[impl AsRef<std::ffi::OsStr> + std::fmt::Debug],
    expected: &str,
) -> String {
    let output = Command::new(INJECTOR)
        .arg("attach")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    stderr.into_owned()
}

/// A cgroup v2 made for the test under the machine's cgroup2 mount, removed when dropped.
pub struct TestCgroup(pub std::path::PathBuf);

impl TestCgroup {
    pub fn new(name: &str) -> TestCgroup {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let root = mounts
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(2) == Some(&"cgroup2")).then(|| fields[1].to_owned())
            })
            .expect("a cgroup2 mount");
        let path = std::path::Path::new(&root)
            .join(format!("faultline-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        TestCgroup(path)
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Its processes are gone by now (their guards were dropped first).
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Sends `signal` to a child this test started and has not reaped, so the pid is still its.
/// One that already exited is not an error.
pub fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a child's pid is never 0");
    let _ = kill_process(pid, signal);
}
