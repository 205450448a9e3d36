//! Running child commands with the command line echoed and failures named.
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The cargo that runs xtask (rustup's host toolchain), for the host-side steps.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` with inherited stdio; an error names the command and its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its output, or None if it could not be started at all.
pub fn probe(cmd: &mut Command) -> Option<Output> {
    cmd.output().ok()
}

/// Stdout of a successful quiet run, trimmed.
pub fn probe_stdout(cmd: &mut Command) -> Option<String> {
    probe(cmd)
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn describe(cmd: &Command) -> String {
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.to_str()?, value?.to_str()?)))
        .collect();
    let args: Vec<String> = cmd
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let mut parts = envs;
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(args);
    parts.join(" ")
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
