//! A small process that outlives the injector by a moment: if the injector dies while a process
//! it stopped is still stopped (a delay or pause in progress, even after `kill -9`), it sends
//! SIGCONT to the attached pid and to every process in the kernel's STOPPED map (with
//! --follow-forks and --cgroup, the processes other than the pid that a rule stopped).
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Child, Command, Stdio},
};

use injector_user::{Signaller, Target};
use rustix::{
    event::{PollFd, PollFlags, poll},
    io::Errno,
};

/// Starts the guard in its own process group, so a Ctrl-C meant for the injector does not reach
/// it. It inherits a pidfd of this process, opened here (had the guard looked the injector up
/// itself (getppid), an injector killed before the guard got to run would leave it watching
/// init, and stopped processes stopped for good), a pidfd of the attached `pid` if there is
/// one, and the STOPPED map.
pub fn spawn(target: Option<&Target>, stopped_map: OwnedFd) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let injector = inheritable(Signaller::open(std::process::id())?.into_pidfd())?;
    let stopped_map = inheritable(stopped_map)?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("guard")
        .args(["--injector-pidfd", &injector.as_raw_fd().to_string()])
        .args(["--stopped-map-fd", &stopped_map.as_raw_fd().to_string()]);
    // The target's own pidfd, not a new one by pid: it exited or not, it is the same process
    // (a pid opened again could be a stranger's by now).
    let pid = target.map(Target::pid);
    let target = target
        .map(|target| inheritable(target.pidfd()?))
        .transpose()?;
    if let (Some(pid), Some(target)) = (pid, &target) {
        command
            .args(["--pid", &pid.to_string()])
            .args(["--target-pidfd", &target.as_raw_fd().to_string()]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
    // This process's copies of the descriptors close here; the guard keeps its own.
}

/// Clears close-on-exec so the guard inherits the descriptor.
fn inheritable(fd: OwnedFd) -> io::Result<OwnedFd> {
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
    Ok(fd)
}

/// The descriptors the injector handed the guard.
pub struct Inherited {
    pub injector_pidfd: i32,
    pub target_pidfd: Option<i32>,
    pub stopped_map_fd: i32,
}

/// Waits until the attached pid exits (with one: nothing left to do) or the injector does
/// (continue everything it stopped).
pub fn run(inherited: Inherited) -> io::Result<()> {
    // SAFETY: the descriptors were opened for this process by the injector and are owned by
    // nothing else here.
    let (injector, target, stopped_map) = unsafe {
        (
            OwnedFd::from_raw_fd(inherited.injector_pidfd),
            inherited.target_pidfd.map(|fd| OwnedFd::from_raw_fd(fd)),
            OwnedFd::from_raw_fd(inherited.stopped_map_fd),
        )
    };
    let injector_gone = loop {
        let mut fds = vec![PollFd::new(&injector, PollFlags::IN)];
        if let Some(target) = &target {
            fds.push(PollFd::new(target, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
            Ok(_) => {}
        }
        let ended = |fd: Option<&PollFd>| fd.is_some_and(|fd| !fd.revents().is_empty());
        if ended(fds.first()) {
            break true;
        }
        if ended(fds.get(1)) {
            break false;
        }
    };
    if injector_gone {
        if let Some(target) = target {
            Signaller::from(target).signal(libc::SIGCONT).ok();
        }
        continue_stopped(stopped_map);
    }
    Ok(())
}

/// Continues every process in the STOPPED map. The kernel took those that exited out of it
/// while the injector lived, so a pid here is one the injector stopped (reuse in the moment
/// since its death aside).
fn continue_stopped(stopped_map: OwnedFd) {
    let Ok(data) = aya::maps::MapData::from_fd(stopped_map) else {
        return;
    };
    let Ok(stopped) = aya::maps::HashMap::<_, u32, u32>::try_from(aya::maps::Map::HashMap(data))
    else {
        return;
    };
    for tgid in stopped.keys().flatten() {
        // SIGCONT is harmless to a process that is not stopped.
        if let Ok(process) = Signaller::open(tgid) {
            process.signal(libc::SIGCONT).ok();
        }
    }
}
