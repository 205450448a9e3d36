//! `injector run`: a seccomp user-notification filter installed in the child just before exec.
//! Every call of a faulted syscall waits for this supervisor, which decides it: fail it with an
//! errno, hold it, kill the process, or let it continue. Works for every syscall, fsync
//! included, on every kernel since 5.5, and for the target's children and threads alike.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use fault_rules::{Action, CallFacts, Rule};
use rustix::{
    event::{PollFd, PollFlags, poll},
    io::Errno,
};

use crate::rules::{RUN, RuleError, syscall_of};

/// The listener is moved to this fd number in the child, for the parent to take it with
/// pidfd_getfd: the child cannot send it, because any syscall it makes after installing the
/// filter may be one that waits for the supervisor.
pub const LISTENER_FD: i32 = 1023;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

/// Rules checked for run mode, with their syscall numbers.
pub struct RunRules {
    pub rules: Vec<(Rule, u32)>,
}

impl RunRules {
    pub fn new(rules: Vec<Rule>) -> Result<Self, RuleError> {
        let mut checked = Vec::new();
        for rule in rules {
            rule.validate_actions_and_filters(&RUN)?;
            let nr = syscall_of(&rule)?;
            // The filter is installed before exec; trapping these would stall the exec itself.
            if matches!(
                rule.op.as_str(),
                "execve" | "execveat" | "dup3" | "exit_group" | "exit"
            ) {
                return Err(RuleError::UnknownSyscall {
                    rule: rule.text.clone(),
                    op: format!("{} (not faultable in run mode)", rule.op),
                });
            }
            checked.push((rule, nr));
        }
        Ok(Self { rules: checked })
    }

    /// Statistics for rules that saw no call.
    pub fn unused_stats(&self) -> Vec<RunStats> {
        self.rules
            .iter()
            .map(|(rule, _)| RunStats {
                rule: rule.text.clone(),
                calls: 0,
                faults: 0,
            })
            .collect()
    }

    /// The classic-BPF seccomp program: notify for the rules' syscalls, allow everything else.
    pub fn filter(&self) -> Vec<libc::sock_filter> {
        let statement = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        };
        let mut numbers: Vec<u32> = self.rules.iter().map(|(_, nr)| *nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let mut program = vec![
            // seccomp_data.arch at offset 4: only x86_64 numbers are meaningful here.
            statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
            jump(AUDIT_ARCH_X86_64, 1, 0),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            // seccomp_data.nr at offset 0.
            statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        ];
        let count = numbers.len();
        for (index, nr) in numbers.iter().enumerate() {
            // Match: jump over the remaining comparisons and the ALLOW to the NOTIFY.
            let to_notify = (count - index) as u8;
            program.push(jump(*nr, to_notify, 0));
        }
        program.push(statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ALLOW,
        ));
        program.push(statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_USER_NOTIF,
        ));
        program
    }
}

/// Runs in the forked child right before exec: only raw syscalls, no allocation.
///
/// # Safety
/// Must be called in a child after fork (from `pre_exec`); `program` must stay alive.
pub unsafe fn install_in_child(program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl and seccomp with valid arguments; fprog points to a live program.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        );
        if listener < 0 {
            return Err(io::Error::last_os_error());
        }
        // dup3 without O_CLOEXEC: the listener survives exec at a known number.
        if libc::dup3(listener as i32, LISTENER_FD, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(listener as i32);
    }
    Ok(())
}

/// Takes the child's listener with pidfd_getfd.
pub fn take_listener(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open/pidfd_getfd with valid arguments; the returned fds are new.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let listener = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), LISTENER_FD, 0);
        if listener < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(listener as i32))
    }
}

/// A fault the supervisor applied.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunFault {
    pub rule: usize,
    pub rule_text: String,
    pub syscall: &'static str,
    /// 1-based index of the matching call of this rule.
    pub call: u64,
    pub action: String,
    pub tid: u32,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RunStats {
    pub rule: String,
    pub calls: u64,
    pub faults: u64,
}

/// Answers notifications until every process using the filter has exited.
pub fn supervise(
    listener: &OwnedFd,
    rules: &mut RunRules,
    seed: u64,
    mut on_fault: impl FnMut(&RunFault),
) -> io::Result<Vec<RunStats>> {
    let mut faults = vec![0u64; rules.rules.len()];
    loop {
        let mut fds = [PollFd::new(&listener, PollFlags::IN)];
        match poll(&mut fds, None) {
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
            Ok(_) => {}
        }
        if !fds[0].revents().contains(PollFlags::IN) {
            // POLLHUP: no process uses the filter any more.
            break;
        }
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
        let mut request: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV fills the struct we pass.
        if unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut request,
            )
        } != 0
        {
            let error = io::Error::last_os_error();
            // ENOENT: the caller died between the wakeup and RECV.
            if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) {
                continue;
            }
            return Err(error);
        }
        let decision = decide(rules, seed, &request, &mut faults, &mut on_fault);
        respond(listener, &request, decision);
    }
    Ok(rules
        .rules
        .iter()
        .zip(faults)
        .map(|((rule, _), faults)| RunStats {
            rule: rule.text.clone(),
            calls: rule.chain.calls(),
            faults,
        })
        .collect())
}

enum Decision {
    Continue,
    Fail(i32),
}

fn decide(
    rules: &mut RunRules,
    seed: u64,
    request: &libc::seccomp_notif,
    faults: &mut [u64],
    on_fault: &mut impl FnMut(&RunFault),
) -> Decision {
    let nr = request.data.nr as u32;
    let on_syscall = rules
        .rules
        .iter_mut()
        .enumerate()
        .filter(|(_, (_, rule_nr))| *rule_nr == nr)
        .map(|(index, (rule, _))| (index as u64, rule));
    let Some(fired) = fault_rules::decide(on_syscall, seed, &NotifiedCall(request)) else {
        return Decision::Continue;
    };
    let index = fired.key as usize;
    let rule = &rules.rules[index].0;
    faults[index] += 1;
    on_fault(&RunFault {
        rule: index,
        rule_text: rule.text.clone(),
        syscall: crate::syscall_names::syscall_name(nr).unwrap_or("?"),
        call: rule.chain.calls(),
        action: fired.action.to_string(),
        tid: request.pid,
    });
    match fired.action {
        Action::Error(errno) => Decision::Fail(errno),
        Action::Delay(ms) => {
            std::thread::sleep(Duration::from_millis(ms));
            Decision::Continue
        }
        Action::Kill => {
            // The calling thread's process; the call never completes.
            if let Some(pid) = rustix::process::Pid::from_raw(request.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            Decision::Fail(libc::EINTR)
        }
        _ => Decision::Continue,
    }
}

/// A notified syscall, as the rules' filters see it: its first argument as the fd, and the
/// path that fd refers to (read from /proc only when a rule filters on it).
struct NotifiedCall<'a>(&'a libc::seccomp_notif);

impl CallFacts for NotifiedCall<'_> {
    fn fd(&self) -> Option<i32> {
        Some(self.0.data.args[0] as i32)
    }

    fn path(&self) -> Option<String> {
        path_of_call(self.0).map(|path| path.to_string_lossy().into_owned())
    }
}

/// The file a call is about: the path its fd (first argument) refers to.
fn path_of_call(request: &libc::seccomp_notif) -> Option<PathBuf> {
    let fd = request.data.args[0] as i32;
    std::fs::read_link(format!("/proc/{}/fd/{fd}", request.pid)).ok()
}

fn respond(listener: &OwnedFd, request: &libc::seccomp_notif, decision: Decision) {
    let (error, flags) = match decision {
        Decision::Fail(errno) => (-errno, 0),
        Decision::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let mut response = libc::seccomp_notif_resp {
        id: request.id,
        val: 0,
        error,
        flags,
    };
    // SAFETY: SEND reads the response struct; ENOENT (the caller died meanwhile) is harmless.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut response,
        )
    };
}
