//! `cargo xtask demo`: counts the syscalls of a running process from outside it, and checks the
//! count against what the process says it did, with a busy bystander that must not be counted.
use std::{path::Path, process::Command};

use anyhow::{Context, Result, ensure};

use process_guard::Spawned;

use crate::{
    cmd::{self, cargo},
    ebpf, kernel_fs,
};

const THREADS: u64 = 4;
const FSYNCS_PER_THREAD: u64 = 250;

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "the demo loads eBPF programs and needs root: run `sudo -E cargo xtask demo`"
    );
    ebpf::build(root)?;
    cmd::run(cargo().current_dir(root).args([
        "build",
        "--quiet",
        "--package",
        "injector-user",
        "--bins",
    ]))?;
    kernel_fs::ensure()?;
    let bin = target_dir(root)?.join("debug");

    let mut bystander = Spawned::start(
        "bystander",
        Command::new(bin.join("syscall-worker")).arg("--until-stdin-closes"),
    )?;
    bystander.read_line()?;
    let mut worker = Spawned::start(
        "worker",
        Command::new(bin.join("syscall-worker")).args([
            "--wait-for-go",
            "--threads",
            &THREADS.to_string(),
            "--fsyncs",
            &FSYNCS_PER_THREAD.to_string(),
        ]),
    )?;
    worker.read_line()?;
    let mut injector = Spawned::start(
        "injector",
        Command::new(bin.join("injector"))
            .args(["count", "--json", "--pid"])
            .arg(worker.pid().to_string()),
    )?;
    injector
        .read_line()
        .context("waiting for the injector to attach")?;
    println!(
        "injector attached to the worker (pid {}); a bystander (pid {}) is calling fsync in a loop",
        worker.pid(),
        bystander.pid()
    );

    worker.send_line("go")?;
    let worker_said = worker.read_line()?;
    let worker_pid = worker.pid();
    worker.finish()?;
    let counts: serde_json::Value = serde_json::from_str(&injector.read_line()?)?;
    injector.finish()?;
    bystander.close_stdin();
    let bystander_said = bystander.read_line()?;
    bystander.finish()?;

    println!("worker (pid {worker_pid}, {THREADS} threads) says: {worker_said}");
    println!("bystander says: {bystander_said} (none of them may be counted)");
    println!("injector counted, for pid {worker_pid} only:");
    let syscalls = counts["syscalls"]
        .as_array()
        .context("no syscalls in report")?;
    for entry in syscalls {
        println!(
            "  {:<20} {:>8}",
            entry["name"].as_str().unwrap_or("?"),
            entry["calls"]
        );
    }
    let fsyncs = syscalls
        .iter()
        .find(|entry| entry["name"] == "fsync")
        .and_then(|entry| entry["calls"].as_u64())
        .unwrap_or(0);
    let expected = THREADS * FSYNCS_PER_THREAD;
    ensure!(
        fsyncs == expected,
        "the injector counted {fsyncs} fsync calls, the worker made {expected}"
    );
    println!("fsync: counted {fsyncs}, made {expected}: exact");
    println!(
        "try it on your own process: sudo {} count --pid PID",
        bin.join("injector").display()
    );
    Ok(())
}

fn target_dir(root: &Path) -> Result<std::path::PathBuf> {
    let metadata = cmd::probe_stdout(cargo().current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))
    .context("`cargo metadata` failed")?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    Ok(metadata["target_directory"]
        .as_str()
        .context("no target_directory in cargo metadata")?
        .into())
}
