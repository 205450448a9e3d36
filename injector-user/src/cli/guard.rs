//! A small process that outlives the injector by a moment: if the injector dies while the target
//! is stopped (a delay or pause in progress, even after `kill -9`), it sends the target SIGCONT.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Child, Command, Stdio},
};

/// Starts the guard for `pid` in its own process group, so a Ctrl-C meant for the injector does
/// not reach it. It inherits pidfds of the target and of this process, opened here: had the
/// guard looked the injector up itself (getppid), an injector killed before the guard got to
/// run (slow machines, VMs) would leave it watching init, and the target stopped for good.
pub fn spawn(pid: u32) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let target = inheritable(pidfd(pid)?)?;
    let injector = inheritable(pidfd(std::process::id())?)?;
    Command::new(std::env::current_exe()?)
        .args(["guard", "--pid", &pid.to_string()])
        .args(["--target-pidfd", &target.as_raw_fd().to_string()])
        .args(["--injector-pidfd", &injector.as_raw_fd().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
    // This process's copies of the pidfds close here; the guard keeps its own.
}

/// Clears close-on-exec so the guard inherits the descriptor.
fn inheritable(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Waits until the target exits (nothing to do) or the injector does (continue the target).
pub fn run(target_pidfd: i32, injector_pidfd: i32) -> io::Result<()> {
    // SAFETY: the descriptors were opened for this process by the injector and are owned by
    // nothing else here.
    let (target, injector) = unsafe {
        (
            OwnedFd::from_raw_fd(target_pidfd),
            OwnedFd::from_raw_fd(injector_pidfd),
        )
    };
    let mut fds = [
        libc::pollfd {
            fd: target.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: injector.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a valid array of two pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if fds[0].revents != 0 {
            return Ok(());
        }
        if fds[1].revents != 0 {
            // SAFETY: pidfd_send_signal on our pidfd of the target; SIGCONT is harmless to a
            // process that is not stopped.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    target.as_raw_fd(),
                    libc::SIGCONT,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            return Ok(());
        }
    }
}

fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
