//! `injector count`: exact syscall counts of one process.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use injector_user::{SyscallCount, SyscallCounter, Target};
use serde_json::json;

use super::{EndedBy, StopSignals, wait_for_end};

pub async fn count(pid: u32, duration: Option<Duration>, json: bool) -> Result<()> {
    let mut stop_signals = StopSignals::listen()?;
    let target = Target::open(pid)?;
    let counter = SyscallCounter::attach(&target)
        .with_context(|| format!("attaching the syscall counter to pid {pid}"))?;
    let started = Instant::now();
    if json {
        super::emit_json(&json!({"event": "attached", "pid": pid, "comm": target.comm()}))?;
    } else {
        eprintln!(
            "counting syscalls of pid {pid} ({}); Ctrl-C to stop",
            target.comm()
        );
    }

    let ended_by = wait_for_end(&target, duration, &mut stop_signals).await?;
    let counts = counter.counts()?;
    drop(counter);
    let elapsed = started.elapsed();
    if json {
        super::emit_json(&json!({
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
