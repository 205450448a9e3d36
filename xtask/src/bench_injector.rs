//! `cargo xtask bench injector`: what the injector costs a process, attached or not, next to
//! strace's fault injection on the same loop, and how precise `delay` is.
use std::{path::Path, process::Command};

use anyhow::{Context, Result, ensure};
use process_guard::Spawned;

use crate::{
    cmd::{self, cargo},
    ebpf, kernel_fs, packages,
};

const WRITES: u64 = 1_000_000;
/// strace stops the process at every call: fewer calls, same per-call figure (and its `when=`
/// counts to 65535 at most, so the fault never fires).
const STRACE_WRITES: u64 = 50_000;
const ROUNDS: usize = 3;
const DELAY_MS: u64 = 50;
const DELAY_SAMPLES: u64 = 20;

struct Binaries {
    injector: std::path::PathBuf,
    worker: std::path::PathBuf,
}

/// The injector's release binaries (the eBPF object first: the injector embeds it); returns
/// the directory they are in.
pub fn build_release(root: &Path) -> Result<std::path::PathBuf> {
    ebpf::build(root)?;
    cmd::run(cargo().current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "injector-user",
        "--bins",
    ]))?;
    Ok(root.join("target/release"))
}

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "the injector needs root: run `sudo -E cargo xtask bench injector`"
    );
    packages::ensure(&["strace"], "comparing with strace -e inject")?;
    let bin = build_release(root)?;
    let binaries = Binaries {
        injector: bin.join("injector"),
        worker: bin.join("syscall-worker"),
    };

    let median = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    kernel_fs::ensure()?;
    let mut plain = Vec::new();
    let mut tracing_only = Vec::new();
    let mut bystander = Vec::new();
    let mut target = Vec::new();
    for _ in 0..ROUNDS {
        plain.push(null_writes(&binaries, Setup::Alone)?);
        tracing_only.push(null_writes(&binaries, Setup::KernelTracingOnly)?);
        bystander.push(null_writes(&binaries, Setup::Bystander)?);
        target.push(null_writes(&binaries, Setup::Target)?);
    }
    let strace = strace_writes(&binaries)?;
    let (plain, tracing_only, bystander, target) = (
        median(plain),
        median(tracing_only),
        median(bystander),
        median(target),
    );
    println!("1-byte write() to /dev/null, ns per call (median of {ROUNDS} runs of {WRITES}):");
    println!("  {:<58} {:>8.1}", "no injector", plain);
    println!(
        "  {:<58} {:>8.1} {:>6.2}x  (the floor of any syscall tracepoint)",
        "kernel syscall tracing on, no BPF (ftrace sys_enter_fsync)",
        tracing_only,
        tracing_only / plain
    );
    println!(
        "  {:<58} {:>8.1} {:>6.2}x  (goal <= 1.1x)",
        "bystander: injector attached to another process",
        bystander,
        bystander / plain
    );
    println!(
        "  {:<58} {:>8.1} {:>6.2}x  (goal <= 1.3x)",
        "target: `write(fd=999)=kill`, a rule that never fires",
        target,
        target / plain
    );
    println!(
        "  {:<58} {:>8.1} {:>6.1}x",
        "strace -e inject=write (never fires), for comparison",
        strace,
        strace / plain
    );
    let (median_ms, worst_ms) = delay_precision(&binaries)?;
    println!(
        "delay({DELAY_MS}) on fsync, {DELAY_SAMPLES} samples: stall median {median_ms:.2} ms, worst {worst_ms:.2} ms"
    );
    Ok(())
}

enum Setup {
    Alone,
    /// Any syscall tracepoint in use switches every task of the machine to the kernel's slow
    /// syscall path; an ftrace event on a syscall the loop never makes costs just that.
    KernelTracingOnly,
    Bystander,
    Target,
}

const FSYNC_EVENT: &str = "/sys/kernel/tracing/events/syscalls/sys_enter_fsync/enable";

/// The ftrace event on, for as long as this lives; refuses to borrow one someone else enabled.
struct FtraceEvent;

impl FtraceEvent {
    fn enable() -> Result<Self> {
        let state = std::fs::read_to_string(FSYNC_EVENT)
            .with_context(|| format!("reading {FSYNC_EVENT}"))?;
        ensure!(
            state.trim() == "0",
            "{FSYNC_EVENT} is already on (someone is tracing fsync): turn it off (`echo 0 > {FSYNC_EVENT}`) and run the bench again"
        );
        std::fs::write(FSYNC_EVENT, "1").with_context(|| format!("enabling {FSYNC_EVENT}"))?;
        Ok(Self)
    }
}

impl Drop for FtraceEvent {
    fn drop(&mut self) {
        if let Err(error) = std::fs::write(FSYNC_EVENT, "0") {
            eprintln!("could not turn {FSYNC_EVENT} off again: {error}");
        }
    }
}

fn null_writes(binaries: &Binaries, setup: Setup) -> Result<f64> {
    let count = WRITES.to_string();
    let mut worker = Spawned::start(
        "worker",
        Command::new(&binaries.worker).args(["--null-writes", &count, "--wait-for-go"]),
    )?;
    worker.read_line()?;
    // An idle process to attach to, for the bystander case.
    let mut idle = Spawned::start(
        "idle",
        Command::new(&binaries.worker).args(["--until-stdin-closes", "--threads", "0"]),
    )?;
    idle.read_line()?;
    let _tracing = match setup {
        Setup::KernelTracingOnly => Some(FtraceEvent::enable()?),
        _ => None,
    };
    let attach_to = match setup {
        Setup::Alone | Setup::KernelTracingOnly => None,
        Setup::Bystander => Some(idle.pid()),
        Setup::Target => Some(worker.pid()),
    };
    let injector = match attach_to {
        Some(pid) => {
            let mut injector = Spawned::start(
                "injector",
                Command::new(&binaries.injector)
                    .args(["attach", "--json", "--fault", "write(fd=999)=kill", "--pid"])
                    .arg(pid.to_string()),
            )?;
            injector
                .read_line()
                .context("the injector did not attach")?;
            Some(injector)
        }
        None => None,
    };
    worker.send_line("go")?;
    let line = worker.read_line()?;
    worker.finish()?;
    drop(injector);
    drop(idle);
    parse_ns(&line)
}

fn strace_writes(binaries: &Binaries) -> Result<f64> {
    let output = Command::new("strace")
        .args([
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "inject=write:error=EIO:when=65535",
        ])
        .arg(&binaries.worker)
        .args(["--null-writes", &STRACE_WRITES.to_string()])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ns_per_call"))
        .context("strace run printed no result")?;
    parse_ns(line)
}

fn parse_ns(line: &str) -> Result<f64> {
    line.strip_prefix("ns_per_call ")
        .with_context(|| format!("unexpected worker output {line:?}"))?
        .parse()
        .context("bad number")
}

/// Median and worst stall of fsync under delay(DELAY_MS), from the target's own timings.
fn delay_precision(binaries: &Binaries) -> Result<(f64, f64)> {
    let mut worker = Spawned::start(
        "worker",
        Command::new(&binaries.worker).args([
            "--fsyncs",
            &DELAY_SAMPLES.to_string(),
            "--time-fsyncs",
            "--wait-for-go",
        ]),
    )?;
    worker.read_line()?;
    let mut injector = Spawned::start(
        "injector",
        Command::new(&binaries.injector)
            .args([
                "attach",
                "--json",
                "--fault",
                &format!("fsync=delay({DELAY_MS})"),
                "--pid",
            ])
            .arg(worker.pid().to_string()),
    )?;
    injector.read_line()?;
    worker.send_line("go")?;
    let timings = worker.read_line()?;
    worker.finish()?;
    drop(injector);
    let mut stalls: Vec<f64> = timings
        .strip_prefix("fsync_us ")
        .context("no timings")?
        .split(' ')
        .map(|t| t.parse::<f64>().map(|us| us / 1000.0))
        .collect::<Result<_, _>>()?;
    stalls.sort_by(f64::total_cmp);
    Ok((stalls[stalls.len() / 2], stalls[stalls.len() - 1]))
}
