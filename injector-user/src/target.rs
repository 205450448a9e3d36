use std::{fs, io, os::fd::OwnedFd};

use tokio::io::unix::AsyncFd;

use crate::InjectorError;

/// The one process the injector is pointed at. Holding a pidfd pins its identity: if it exits and
/// the pid is reused, the pidfd still refers to the old process and reports it as exited.
#[derive(Debug)]
pub struct Target {
    pid: u32,
    comm: String,
    pidfd: OwnedFd,
}

impl Target {
    pub fn open(pid: u32) -> Result<Self, InjectorError> {
        if pid == 0 || pid > i32::MAX as u32 {
            return Err(InjectorError::InvalidPid { pid });
        }
        if pid == std::process::id() {
            return Err(InjectorError::IsSelf { pid });
        }
        // /proc/TID exists for every thread though only leaders are listed; a thread's Tgid
        // names the process the user probably meant.
        if let Some(tgid) = thread_group_of(pid)
            && tgid != pid
        {
            return Err(InjectorError::NotAProcess { pid, tgid });
        }
        let pidfd = pidfd_open(pid).map_err(|source| match source.raw_os_error() {
            Some(libc::ESRCH | libc::ENOENT) => InjectorError::NoSuchProcess { pid },
            _ => InjectorError::Pidfd { pid, source },
        })?;
        // A zombie has a pid and a pidfd but will never make another call.
        if process_state(pid) == Some('Z') {
            return Err(InjectorError::Exited { pid });
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|comm| comm.trim_end().to_owned())
            .unwrap_or_default();
        Ok(Self { pid, comm, pidfd })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A new descriptor of the same pidfd (for a helper process to inherit).
    pub fn pidfd(&self) -> io::Result<OwnedFd> {
        self.pidfd.try_clone()
    }

    /// The process's command name (`/proc/PID/comm`), empty if it could not be read.
    pub fn comm(&self) -> &str {
        &self.comm
    }

    /// Resolves once the target has exited (a pidfd becomes readable then). Every syscall the
    /// target made has passed the syscall-entry tracepoint by that time, so counts are final.
    pub async fn exited(&self) -> io::Result<()> {
        // SAFETY: the OwnedFd is a fresh duplicate that the AsyncFd owns until it is dropped, so
        // it cannot be closed or replaced while registered.
        let fd = unsafe { AsyncFd::register(self.pidfd.try_clone()?)? };
        let _ready = fd.readable().await?;
        Ok(())
    }
}

/// A handle that can signal the target from another thread (its own copy of the pidfd).
pub struct Signaller {
    pidfd: OwnedFd,
}

impl Signaller {
    /// A pidfd of `pid` now. Whether it is the process the caller means is the caller's to
    /// make sure of (see `FaultSession::is_stopped`).
    pub fn open(pid: u32) -> io::Result<Signaller> {
        Ok(Signaller {
            pidfd: pidfd_open(pid)?,
        })
    }

    /// The pidfd itself, e.g. for a child process to inherit.
    pub fn into_pidfd(self) -> OwnedFd {
        self.pidfd
    }

    pub fn try_clone(&self) -> io::Result<Signaller> {
        Ok(Signaller {
            pidfd: self.pidfd.try_clone()?,
        })
    }

    pub fn signal(&self, signal: i32) -> io::Result<()> {
        send_signal(&self.pidfd, signal)
    }
}

/// A pidfd this process already holds (inherited, say).
impl From<OwnedFd> for Signaller {
    fn from(pidfd: OwnedFd) -> Signaller {
        Signaller { pidfd }
    }
}

impl Target {
    pub fn signaller(&self) -> io::Result<Signaller> {
        Ok(Signaller {
            pidfd: self.pidfd.try_clone()?,
        })
    }

    /// Signals the target through its pidfd, so a recycled pid is never signalled.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        send_signal(&self.pidfd, signal)
    }
}

fn send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    let signal = rustix::process::Signal::from_named_raw(signal)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::pidfd_send_signal(pidfd, signal)?)
}

fn thread_group_of(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// The state letter of /proc/PID/stat (R, S, D, T, Z, ...), after the command name, which may
/// itself hold spaces and parentheses.
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
