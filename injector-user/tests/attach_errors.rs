//! `injector attach` with error(ERRNO): real calls of a real process fail through BPF LSM.
//!
//! Kernels split these tests in two. Where BPF LSM is allowed (stock distro kernels: run them
//! with `cargo xtask vm`), each test proves the injection: exactly the chosen call fails, with
//! the chosen errno, and nothing else does. Where the kernel refuses it (the CI machines), the
//! same tests prove that attach refuses cleanly, names the alternatives and leaves the target
//! untouched. Inside `cargo xtask vm` (FAULTLINE_VM set) a refusal is a failure, not a pass.
mod common;

use std::{path::Path, process::Command};

use common::{INJECTOR, attached, remaining_json, stop};
use process_guard::Spawned;
use serde_json::Value;

const OP_WORKER: &str = env!("CARGO_BIN_EXE_op-worker");

struct OpWorker {
    process: Spawned,
    dir: tempfile::TempDir,
}

impl OpWorker {
    fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut process =
            Spawned::start(name, Command::new(OP_WORKER).arg("--dir").arg(dir.path())).unwrap();
        assert_eq!(process.read_line().unwrap(), "ready");
        Self { process, dir }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Makes the call and returns `ok` or the errno's name.
    fn op(&mut self, op: &str) -> String {
        self.process.send_line(op).unwrap();
        self.process.read_line().unwrap()
    }

    fn ops(&mut self, ops: &[&str]) -> Vec<String> {
        ops.iter().map(|op| self.op(op)).collect()
    }

    /// The fd the worker holds for one of its files, as a user finds it in /proc/PID/fd.
    fn fd_of(&self, file: &str) -> String {
        let wanted = self.dir.path().join(file);
        for entry in std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap() {
            let entry = entry.unwrap();
            if std::fs::read_link(entry.path()).is_ok_and(|target| target == wanted) {
                return entry.file_name().to_string_lossy().into_owned();
            }
        }
        panic!("the worker holds no fd for {}", wanted.display());
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }
}

/// What `injector probe` says about BPF LSM on this kernel.
fn lsm_allowed() -> bool {
    let lsm = common::probed("BPF LSM");
    let allowed = lsm["works"] == true;
    if !allowed && std::env::var_os("FAULTLINE_VM").is_some() {
        panic!(
            "inside `cargo xtask vm` the kernel must allow BPF LSM, but probe says: {}",
            lsm["detail"]
        );
    }
    allowed
}

/// Attaches `rules` to the worker, or, on a kernel that refuses BPF LSM, checks that attach
/// refuses cleanly and returns None.
fn attach_or_check_refusal(target: &mut OpWorker, rules: &[String]) -> Option<Spawned> {
    let mut args = Vec::new();
    for rule in rules {
        args.push("--fault");
        args.push(rule.as_str());
    }
    if lsm_allowed() {
        return Some(attached("attach", target.pid(), &args));
    }
    let output = Command::new(INJECTOR)
        .args(["attach", "--pid", &target.pid().to_string()])
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs BPF LSM, and this kernel refused it"),
        "{stderr}"
    );
    assert!(stderr.contains("cargo xtask vm"), "{stderr}");
    assert!(stderr.contains("injector run"), "{stderr}");
    // Nothing was left half-applied: the target's calls still succeed.
    assert_eq!(target.op("write"), "ok");
    None
}

fn finish(target: OpWorker, injector: Spawned) -> Vec<Value> {
    let OpWorker { mut process, dir } = target;
    process.close_stdin();
    process.finish().unwrap();
    drop(dir);
    let mut injector = injector;
    let lines = remaining_json(&mut injector);
    injector.finish().unwrap();
    lines
}

#[test]
fn error_fails_exactly_the_chosen_write_of_the_target_and_no_bystanders() {
    let mut target = OpWorker::start("target");
    let mut bystander = OpWorker::start("bystander");
    // Both workers hold their data file at the same fd number: only the pid tells them apart.
    let fd = target.fd_of("data");
    assert_eq!(bystander.fd_of("data"), fd);
    let rule = format!("write(fd={fd})=1*off->1*error(EIO)->off");
    let Some(injector) = attach_or_check_refusal(&mut target, &[rule]) else {
        return;
    };
    assert_eq!(bystander.op("write"), "ok");
    assert_eq!(
        target.ops(&["write", "write", "write"]),
        ["ok", "EIO", "ok"]
    );
    assert_eq!(bystander.op("write"), "ok");
    // The failed write stored nothing.
    assert_eq!(std::fs::read(target.path("data")).unwrap(), b"xx");
    assert_eq!(std::fs::read(bystander.path("data")).unwrap(), b"xx");
    let lines = finish(target, injector);
    let faults: Vec<_> = lines.iter().filter(|l| l["event"] == "fault").collect();
    assert_eq!(faults.len(), 1, "{lines:?}");
    assert_eq!(faults[0]["action"], "error(EIO)");
    assert_eq!(faults[0]["syscall"], "write");
    assert_eq!(faults[0]["call"], 2);
    bystander.process.close_stdin();
    bystander.process.finish().unwrap();
}

#[test]
fn error_on_openat_fails_the_open_with_the_chosen_errno() {
    let mut target = OpWorker::start("target");
    let rule = "openat=1*error(EMFILE)->off".to_owned();
    let Some(injector) = attach_or_check_refusal(&mut target, &[rule]) else {
        return;
    };
    assert_eq!(target.ops(&["openat", "openat"]), ["EMFILE", "ok"]);
    finish(target, injector);
}

#[test]
fn error_on_sendmsg_fails_sendmsg_but_not_sendto_through_the_same_hook() {
    let mut target = OpWorker::start("target");
    let rule = "sendmsg=error(ECONNRESET)".to_owned();
    let Some(injector) = attach_or_check_refusal(&mut target, &[rule]) else {
        return;
    };
    assert_eq!(
        target.ops(&["sendmsg", "sendto", "sendmsg"]),
        ["ECONNRESET", "ok", "ECONNRESET"]
    );
    finish(target, injector);
}

/// `dst=` picks one peer's calls: the worker's UDP socket is connected, so its sendmsg names
/// no address and the socket's peer counts.
#[test]
fn error_with_dst_fails_only_the_calls_to_that_peer() {
    let mut target = OpWorker::start("target");
    let peer = injector_user::sockets::ProcessSockets::open(target.pid())
        .unwrap()
        .all()
        .unwrap()
        .into_iter()
        .find_map(|socket| socket.peer)
        .expect("the worker's connected UDP socket");
    let rules = [
        format!("sendmsg(dst={peer})=1*error(ECONNRESET)->off"),
        "sendto(dst=127.0.0.1:9)=error(EPERM)".to_owned(),
    ];
    let Some(injector) = attach_or_check_refusal(&mut target, &rules) else {
        return;
    };
    assert_eq!(
        target.ops(&["sendmsg", "sendto", "sendmsg"]),
        ["ECONNRESET", "ok", "ok"]
    );
    finish(target, injector);
}

#[test]
fn error_on_namespace_and_socket_calls_leaves_them_undone() {
    let mut target = OpWorker::start("target");
    let rules = [
        "rename=1*error(EROFS)->off",
        "mkdir=1*error(ENOSPC)->off",
        "connect=1*error(ECONNREFUSED)->off",
        "ftruncate=1*error(EIO)->off",
        "pread64=1*error(EIO)->off",
    ]
    .map(str::to_owned);
    let Some(injector) = attach_or_check_refusal(&mut target, &rules) else {
        return;
    };
    assert_eq!(target.op("rename"), "EROFS");
    assert!(target.path("a").exists() && !target.path("b").exists());
    assert_eq!(target.op("rename"), "ok");
    assert!(target.path("b").exists());

    assert_eq!(target.op("mkdir"), "ENOSPC");
    assert!(!target.path("sub").exists());
    assert_eq!(target.ops(&["mkdir", "unlinkat"]), ["ok", "ok"]);

    assert_eq!(target.ops(&["connect", "connect"]), ["ECONNREFUSED", "ok"]);

    assert_eq!(target.op("write"), "ok");
    assert_eq!(target.op("ftruncate"), "EIO");
    assert_eq!(std::fs::read(target.path("data")).unwrap(), b"x");
    assert_eq!(
        target.ops(&["ftruncate", "pread64", "pread64"]),
        ["ok", "EIO", "ok"]
    );
    let lines = finish(target, injector);
    let summary = lines.last().unwrap();
    let faults: Vec<u64> = summary["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["faults"].as_u64().unwrap())
        .collect();
    assert_eq!(faults, [1, 1, 1, 1, 1], "{summary}");
}

#[test]
fn a_call_that_fails_before_its_hook_does_not_pass_the_error_to_a_later_call() {
    let mut target = OpWorker::start("target");
    // The first mkdir fails with EEXIST in path lookup, before the LSM hook; the pending error
    // it was given must not fail the next call that reaches the hook (a write).
    std::fs::create_dir(target.path("sub")).unwrap();
    let rule = "mkdir=1*error(ENOSPC)->off".to_owned();
    let Some(injector) = attach_or_check_refusal(&mut target, &[rule]) else {
        return;
    };
    assert_eq!(target.op("mkdir"), "EEXIST");
    assert_eq!(target.op("write"), "ok");
    finish(target, injector);
}

#[test]
fn fsync_errors_are_refused_in_attach_mode_with_the_routes_that_work() {
    let target = OpWorker::start("target");
    let output = Command::new(INJECTOR)
        .args(["attach", "--pid", &target.pid().to_string()])
        .args(["--fault", "fsync=error(EIO)"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no LSM hook sees fsync"), "{stderr}");
    assert!(stderr.contains("injector run"), "{stderr}");
    assert!(Path::new(&format!("/proc/{}", target.pid())).exists());
    stop(target.process);
}
