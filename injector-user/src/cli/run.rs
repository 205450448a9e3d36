//! `injector run -- COMMAND`: run a command under a seccomp supervisor that applies the rules.
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::ExitStatus,
};

use anyhow::{Context, Result};
use injector_user::{
    InjectorError, rules,
    seccomp::{RunRules, install_in_child, supervise, take_listener},
};
use serde_json::json;

pub struct Options {
    pub faults: Vec<String>,
    pub faults_file: Option<PathBuf>,
    pub seed: u64,
    pub json: bool,
    pub command: Vec<String>,
}

/// Runs the command to completion; returns the exit code to pass on (128+N for signal N).
pub fn run(options: Options) -> Result<u8> {
    let env = std::env::var("INJECTOR_FAULTS").ok();
    let gathered = rules::gather(
        &options.faults,
        options.faults_file.as_deref(),
        env.as_deref(),
    )?;
    if gathered.is_empty() {
        return Err(rules::RuleError::NoRules.into());
    }
    let mut rules = RunRules::new(gathered)?;
    let program = rules.filter();
    let (executable, arguments) = options
        .command
        .split_first()
        .context("no command given: `injector run --fault RULE -- COMMAND [ARGS...]`")?;
    let mut command = std::process::Command::new(resolve(executable)?);
    command.arg0(executable).args(arguments);
    // SAFETY: install_in_child only makes raw syscalls; `program` was built before the fork
    // and is moved into the closure, so nothing allocates in the child.
    unsafe {
        command.pre_exec(move || install_in_child(&program));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {executable}"))?;
    // The child holds the listener itself, so a trapped call would have blocked it until we
    // answer: if it is already gone (ESRCH), it made no faulted call and there is nothing to do.
    let listener = match take_listener(child.id()) {
        Ok(listener) => Some(listener),
        Err(error) if error.raw_os_error() == Some(libc::ESRCH) => None,
        Err(error) => return Err(error).context("taking the seccomp listener from the child"),
    };
    let json = options.json;
    let seed = options.seed;
    let supervisor = std::thread::spawn(move || {
        let Some(listener) = listener else {
            return Ok(rules.unused_stats());
        };
        supervise(&listener, &mut rules, seed, |fault| {
            // The command owns stdout; the injector reports on stderr.
            if json {
                eprintln!("{}", json!({"event": "fault", "fault": fault}));
            } else {
                eprintln!(
                    "fault: {} at {} call #{} (tid {}) by rule `{}`",
                    fault.action, fault.syscall, fault.call, fault.tid, fault.rule_text
                );
            }
        })
    });
    let status = child.wait()?;
    let stats = supervisor
        .join()
        .map_err(|_| anyhow::anyhow!("the supervisor thread panicked"))??;
    if json {
        eprintln!(
            "{}",
            json!({"event": "summary", "exit": exit_code(status), "rules": stats})
        );
    } else {
        eprintln!("{executable} exited: {status}");
        for stat in &stats {
            eprintln!(
                "{:>10} calls {:>8} faults  {}",
                stat.calls, stat.faults, stat.rule
            );
        }
    }
    Ok(exit_code(status))
}

/// The program `name` names, found as exec would find it (PATH unless it has a slash), and
/// executable. Checked before the fork: a failed exec in the child reports its error to the
/// parent with a write, which the filter would trap before anyone supervises it, and the run
/// would hang.
fn resolve(name: &str) -> Result<PathBuf, InjectorError> {
    let fail = |reason: &str| InjectorError::CannotExecute {
        command: name.to_owned(),
        reason: reason.to_owned(),
    };
    let executable = |path: &Path| {
        path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        if !path.exists() {
            return Err(fail("No such file or directory"));
        }
        if !executable(&path) {
            return Err(fail("not an executable file (check its path and mode)"));
        }
        return Ok(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|path| executable(path))
        .ok_or_else(|| fail("no such command in PATH"))
}

fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128 + signal as u8,
        _ => 1,
    }
}
