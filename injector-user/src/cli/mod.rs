//! The injector's subcommands, one module each, and what they share.
pub mod attach;
pub mod control;
pub mod count;
pub mod guard;
pub mod net;
pub mod partition;
pub mod run;

use std::{io::Write, time::Duration};

use anyhow::{Context, Result};
use injector_user::Target;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Why a session stopped; part of every report because "the target exited" means the counts
/// are complete, while the other two mean they cover a window.
#[derive(Clone, Copy, Debug)]
pub enum EndedBy {
    TargetExit,
    Duration,
    Signal,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::TargetExit => "target-exit",
            EndedBy::Duration => "duration",
            EndedBy::Signal => "signal",
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the start of a command, before it says it
/// is attached: tokio drops a signal that arrives after its handler is installed but before a
/// listener exists, so a listener made only after the announcement could miss the SIGTERM of a
/// caller that acts on it at once (the injector then ran on, attached, until a second SIGTERM).
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    pub fn listen() -> Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// Waits for either signal; cancel-safe, like tokio's Signal::recv, so it can be a
    /// select! branch in a loop.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

pub async fn wait_for_end(
    target: &Target,
    duration: Option<Duration>,
    stop_signals: &mut StopSignals,
) -> Result<EndedBy> {
    let deadline = until(duration);
    Ok(tokio::select! {
        exited = target.exited() => { exited.context("waiting for the target to exit")?; EndedBy::TargetExit }
        () = deadline => EndedBy::Duration,
        () = stop_signals.recv() => EndedBy::Signal,
    })
}

/// Resolves once `duration` has passed; never without one (a command that runs until stopped).
pub async fn until(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

pub fn emit_json(value: &serde_json::Value) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}")?;
    stdout.flush()?;
    Ok(())
}

pub fn print_probe(json: bool) -> Result<()> {
    let found = injector_user::probe::probe()?;
    let (net, why) = injector_user::net::probe_mechanism();
    if json {
        return emit_json(&serde_json::json!({
            "kernel": kernel_release(),
            "mechanisms": found,
            "net_mechanism": net,
        }));
    }
    println!("kernel {}", kernel_release());
    for mechanism in &found {
        let verdict = if mechanism.works { "works" } else { "NO" };
        println!("{verdict:<6} {:<36} {}", mechanism.name, mechanism.used_for);
        if !mechanism.works {
            println!("       {}", mechanism.detail);
        }
    }
    let net = serde_json::to_value(net)?;
    println!(
        "injector net uses {} here ({why})",
        net.as_str().unwrap_or_default()
    );
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default()
}
