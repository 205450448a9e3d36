//! `injector`: fault injection into a running process with eBPF, from outside the process.
use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use injector_user::{SyscallCount, SyscallCounter, Target};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "injector",
    version,
    about = "Observe and break a running process's syscalls from outside it, with eBPF.",
    long_about = "Observe and break a running process's syscalls from outside it, with eBPF.\n\n\
        The target needs no change and no restart: programs are attached in the kernel and \
        filter on the target's process id, so no other process is ever touched. Needs root.",
    after_help = "Examples:\n  \
        sudo injector count --pid 4242                 # until Ctrl-C or the target exits\n  \
        sudo injector count --pid 4242 --duration 10s --json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Count a process's syscalls by name, exactly, until it exits, Ctrl-C or --duration.
    ///
    /// Counting happens in the kernel at syscall entry (tp_btf/sys_enter), for every thread of
    /// the process; children it forks are separate processes and are not counted.
    Count {
        /// Process id of the target (its thread-group id; see `pgrep`).
        #[arg(long)]
        pid: u32,
        /// Stop after this long: `10s`, `500ms`, `2m`, or a number of seconds.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// JSON lines on stdout: an `attached` event once counting has started, then `counts`.
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string());
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}: write a duration like `10s`, `500ms` or `2m`"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Count {
            pid,
            duration,
            json,
        } => count(pid, duration, json).await,
    }
}

/// Why counting stopped; part of the report because "the target exited" means the counts are
/// complete, while the other two mean they cover a window.
#[derive(Clone, Copy)]
enum EndedBy {
    TargetExit,
    Duration,
    Signal,
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            EndedBy::TargetExit => "target-exit",
            EndedBy::Duration => "duration",
            EndedBy::Signal => "signal",
        }
    }
}

async fn count(pid: u32, duration: Option<Duration>, json: bool) -> Result<()> {
    let target = Target::open(pid)?;
    let counter = SyscallCounter::attach(&target)
        .with_context(|| format!("attaching the syscall counter to pid {pid}"))?;
    let started = Instant::now();
    if json {
        emit_json(&json!({"event": "attached", "pid": pid, "comm": target.comm()}))?;
    } else {
        eprintln!(
            "counting syscalls of pid {pid} ({}); Ctrl-C to stop",
            target.comm()
        );
    }

    let ended_by = wait_for_end(&target, duration).await?;
    let counts = counter.counts()?;
    drop(counter);
    let elapsed = started.elapsed();
    if json {
        emit_json(&json!({
            "event": "counts",
            "pid": pid,
            "comm": target.comm(),
            "ended_by": ended_by.as_str(),
            "elapsed_ms": elapsed.as_millis() as u64,
            "syscalls": counts,
        }))?;
    } else {
        print_table(&target, ended_by, elapsed, &counts);
    }
    Ok(())
}

async fn wait_for_end(target: &Target, duration: Option<Duration>) -> Result<EndedBy> {
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    Ok(tokio::select! {
        exited = target.exited() => { exited.context("waiting for the target to exit")?; EndedBy::TargetExit }
        () = deadline => EndedBy::Duration,
        _ = tokio::signal::ctrl_c() => EndedBy::Signal,
        _ = terminate.recv() => EndedBy::Signal,
    })
}

fn emit_json(value: &serde_json::Value) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}")?;
    stdout.flush()?;
    Ok(())
}

fn print_table(target: &Target, ended_by: EndedBy, elapsed: Duration, counts: &[SyscallCount]) {
    let total: u64 = counts.iter().map(|c| c.calls).sum();
    println!(
        "pid {} ({}): {total} calls of {} syscalls in {:.2} s, ended by {}",
        target.pid(),
        target.comm(),
        counts.len(),
        elapsed.as_secs_f64(),
        ended_by.as_str()
    );
    println!("{:<24} {:>5} {:>12}", "syscall", "nr", "calls");
    for count in counts {
        println!(
            "{:<24} {:>5} {:>12}",
            count.name.unwrap_or("?"),
            count.nr,
            count.calls
        );
    }
}
