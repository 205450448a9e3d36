//! The injector's subcommands, one module each, and what they share.
pub mod attach;
pub mod control;
pub mod count;
pub mod guard;
pub mod partition;
pub mod run;

use std::{io::Write, time::Duration};

use anyhow::{Context, Result};
use injector_user::Target;
use tokio::signal::unix::{SignalKind, signal};

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

pub async fn wait_for_end(target: &Target, duration: Option<Duration>) -> Result<EndedBy> {
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

pub fn emit_json(value: &serde_json::Value) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}")?;
    stdout.flush()?;
    Ok(())
}

pub fn print_probe(json: bool) -> Result<()> {
    let found = injector_user::probe::probe()?;
    if json {
        return emit_json(&serde_json::json!({"kernel": kernel_release(), "mechanisms": found}));
    }
    println!("kernel {}", kernel_release());
    for mechanism in &found {
        let verdict = if mechanism.works { "works" } else { "NO" };
        println!("{verdict:<6} {:<36} {}", mechanism.name, mechanism.used_for);
        if !mechanism.works {
            println!("       {}", mechanism.detail);
        }
    }
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default()
}
