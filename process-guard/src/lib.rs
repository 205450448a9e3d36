//! Child processes for tests, demos and the torture harness: line-based talk over pipes, and a
//! guard that kills and reaps the child when dropped, also when a test panics.
use std::{
    io::{self, BufRead, BufReader, Write},
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("cannot start {name}: {source}")]
    Start {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{name} closed its output (exited?) while a line was expected")]
    EndOfOutput { name: String },
    #[error("{name}: stdin was already closed")]
    StdinClosed { name: String },
    #[error("{name} failed: {status}")]
    Failed { name: String, status: ExitStatus },
    #[error("{name}: {source}")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Makes the child `command` spawns get SIGKILL when the thread that spawns it ends, however
/// it ends: a SIGTERM or SIGKILL to this process runs no `Drop`, so a guard alone would leave
/// the child running (a qemu VM, say). Linux ties the parent-death signal to the spawning
/// thread, so spawn from a thread that outlives the child (one that waits for it).
pub fn killed_with_this_thread(command: &mut Command) -> &mut Command {
    let parent = rustix::process::getpid();
    let bind = move || {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        // The parent may have died between the fork and the line above: no signal comes then.
        if rustix::process::getppid() != Some(parent) {
            return Err(rustix::io::Errno::SRCH.into());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec; it makes two system calls and
    // builds an error from a raw errno: no allocation, no lock another thread could hold.
    unsafe { std::os::unix::process::CommandExt::pre_exec(command, bind) };
    command
}

/// A running child with piped stdin and stdout. stderr is inherited unless
/// [`Spawned::start_capturing_stderr`] was used.
pub struct Spawned {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl Spawned {
    pub fn start(name: &str, command: &mut Command) -> Result<Self, ProcessError> {
        Self::spawn(name, command.stderr(Stdio::inherit()))
    }

    pub fn start_capturing_stderr(name: &str, command: &mut Command) -> Result<Self, ProcessError> {
        Self::spawn(name, command.stderr(Stdio::piped()))
    }

    /// Like [`Spawned::start`], with stderr going to `log`.
    pub fn start_logging(
        name: &str,
        command: &mut Command,
        log: std::fs::File,
    ) -> Result<Self, ProcessError> {
        Self::spawn(name, command.stderr(log))
    }

    fn spawn(name: &str, command: &mut Command) -> Result<Self, ProcessError> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| ProcessError::Start {
                name: name.to_owned(),
                source,
            })?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let stderr = child.stderr.take();
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child prints (without its newline); an error if it exits first.
    pub fn read_line(&mut self) -> Result<String, ProcessError> {
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .map_err(|source| self.io_error(source))?;
        if read == 0 {
            return Err(ProcessError::EndOfOutput {
                name: self.name.clone(),
            });
        }
        Ok(line.trim_end().to_owned())
    }

    pub fn send_line(&mut self, line: &str) -> Result<(), ProcessError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(ProcessError::StdinClosed {
                name: self.name.clone(),
            });
        };
        let written = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        written.map_err(|source| self.io_error(source))
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Closes stdin and waits for the child to exit; returns its status and the rest of stderr
    /// (empty unless captured).
    pub fn wait(mut self) -> Result<(ExitStatus, String), ProcessError> {
        self.close_stdin();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.stderr.take() {
            io::Read::read_to_string(&mut pipe, &mut stderr)
                .map_err(|source| self.io_error(source))?;
        }
        let status = self.child.wait().map_err(|source| self.io_error(source))?;
        Ok((status, stderr))
    }

    /// The child's exit status if it has exited (it is then reaped), without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        self.child
            .try_wait()
            .map_err(|source| self.io_error(source))
    }

    /// Waits for the child and requires a successful exit.
    pub fn finish(self) -> Result<(), ProcessError> {
        let name = self.name.clone();
        let (status, _) = self.wait()?;
        if !status.success() {
            return Err(ProcessError::Failed { name, status });
        }
        Ok(())
    }

    fn io_error(&self, source: io::Error) -> ProcessError {
        ProcessError::Io {
            name: self.name.clone(),
            source,
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // try_wait reaps a child that already exited, so the kill below only ever targets our
        // own still-running child, never a recycled pid.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
