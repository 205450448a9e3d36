//! A test binary run in a process group of its own, so a stop reaches what its tests started.
//!
//! Killing a test binary runs none of its guards: the torture runs, database nodes and faultfs
//! mounts its tests started would outlive it. Each of those tears itself down on SIGTERM, so a
//! stop (a hang's timeout, Ctrl-C, SIGTERM, a panic here) sends SIGTERM to the whole group,
//! gives it time, and only then SIGKILLs what is left.
use std::{
    os::unix::process::CommandExt,
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};

/// How long a stopped group has to tear itself down (a torture run stops a cluster of nodes
/// and unmounts their file systems).
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long SIGKILLed processes may take to go: only one waiting in the kernel on something
/// that never answers outlives it.
const KILL_WAIT: Duration = Duration::from_secs(10);

static STOP_ASKED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_ASKED.store(true, Ordering::SeqCst);
}

/// While it lives, Ctrl-C and SIGTERM ask for a stop (see [`stop_asked`]) instead of ending
/// this process at once: the groups it starts are in no terminal's foreground, so this process
/// is the only one to hear them. Dropped, it gives both signals their default action back.
pub struct StopOnSignals(());

impl StopOnSignals {
    pub fn install() -> StopOnSignals {
        set_handlers(on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        StopOnSignals(())
    }
}

impl Drop for StopOnSignals {
    fn drop(&mut self) {
        set_handlers(libc::SIG_DFL);
    }
}

fn set_handlers(handler: libc::sighandler_t) {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler is SIG_DFL or `on_stop_signal`, which only stores to an atomic
        // (async-signal-safe).
        unsafe {
            libc::signal(signal, handler);
        }
    }
}

pub fn stop_asked() -> bool {
    STOP_ASKED.load(Ordering::SeqCst)
}

/// A child leading its own process group; stopped with its whole group when dropped.
pub struct GroupChild {
    child: Child,
    group: Pid,
}

impl GroupChild {
    pub fn spawn(command: &mut Command) -> Result<GroupChild> {
        let child = command
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        let group = Pid::from_child(&child);
        Ok(GroupChild { child, group })
    }

    /// Whether the child itself has exited (what it started may still run).
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// SIGTERM to the group, SIGKILL to what is left of it after `grace`; returns once no
    /// process of the group is left, or, if some outlive SIGKILL for [`KILL_WAIT`], says so
    /// and returns (a stop must end).
    pub fn stop_within(&mut self, grace: Duration) {
        let _ = kill_process_group(self.group, Signal::TERM);
        let deadline = Instant::now() + grace;
        while self.group_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + KILL_WAIT;
        while self.group_alive() {
            if Instant::now() >= deadline {
                eprintln!(
                    "process group {} still has members {} s after SIGKILL: a process stuck \
                     in the kernel (a request to a FUSE mount nobody answers any more?); see \
                     `ps -o pid,stat,wchan,cmd -g {}`, and `umount -l` the mount it waits on",
                    self.group.as_raw_nonzero(),
                    KILL_WAIT.as_secs(),
                    self.group.as_raw_nonzero(),
                );
                return;
            }
            let _ = kill_process_group(self.group, Signal::KILL);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn group_alive(&mut self) -> bool {
        // The leader is this process's child: reaped here, or it would count as a member.
        let _ = self.child.try_wait();
        test_kill_process_group(self.group).is_ok()
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.stop_within(TEARDOWN_GRACE);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader},
        path::Path,
        process::Stdio,
    };

    use super::*;

    /// A shell that starts a grandchild, prints its pid and waits; `prelude` runs first.
    fn family(prelude: &str) -> (GroupChild, String) {
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("{prelude} sleep 600 & echo $!; wait")])
            .stdout(Stdio::piped());
        let mut child = GroupChild::spawn(&mut command).unwrap();
        let mut line = String::new();
        BufReader::new(child.child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line.trim().to_owned())
    }

    #[test]
    fn a_stop_reaches_what_the_child_started() {
        let (child, grandchild) = family("");
        assert!(Path::new(&format!("/proc/{grandchild}")).exists());
        drop(child);
        assert!(
            !Path::new(&format!("/proc/{grandchild}")).exists(),
            "the grandchild outlived the stop"
        );
    }

    #[test]
    fn what_ignores_sigterm_is_killed_after_the_grace() {
        let (mut child, grandchild) = family("trap '' TERM;");
        let started = Instant::now();
        child.stop_within(Duration::from_millis(300));
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it was given its time"
        );
        assert!(!Path::new(&format!("/proc/{grandchild}")).exists());
        assert!(child.exited().unwrap());
    }
}
