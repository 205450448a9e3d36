//! `tp_btf/sys_enter` program that applies fault rules to the target processes. Counting is
//! done here, at syscall entry, with atomic tickets, so "the 3rd fsync" is exact even when
//! several threads call at once.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::error_hooks;
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, RingBuf},
    programs::BtfTracePointContext,
};
use injector_common::{
    ANY_FD, FORKED_FD, FaultConfig, FiredEvent, KernelRule, MAX_PATH_FDS, MAX_RULES,
    MAX_SYSCALL_NR, MAX_TERMS, RuleCounters, UNLIMITED, action, fd_key, roll,
};

#[map]
static RULES: Array<KernelRule> = Array::with_max_entries(MAX_RULES, 0);

#[map]
static RULE_COUNTERS: Array<RuleCounters> = Array::with_max_entries(MAX_RULES, 0);

#[map]
static FAULT_CONFIG: Array<FaultConfig> = Array::with_max_entries(1, 0);

#[map]
static SYSCALL_RULES: Array<u32> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Processes (tgids) the rules apply to when there is more than one; value unused.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Processes (tgids) a delay or pause has stopped, recorded before the stop and kept until they
/// exit: whatever happens to the injector, its guard continues every one of them.
#[map]
pub static STOPPED: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// tgid << 32 | fd -> the connected peer of the socket behind it, `port << 32 | addr`.
#[map]
static PEER_FDS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_PATH_FDS, 0);

/// The classifications in progress (see injector_common::CLASSIFYING_MAP); value unused.
#[map]
static CLASSIFYING: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// tgid << 32 | fd -> the path rules (bit per rule) whose filter matches that fd's file.
#[map]
static PATH_FDS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_PATH_FDS, 0);

const SIGSTOP: u32 = 19;
/// Offset of `di` (the first syscall argument) in x86_64's `struct pt_regs`.
const PT_REGS_DI: usize = 14;

#[btf_tracepoint(function = "sys_enter")]
pub fn fault_syscalls(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(config) = FAULT_CONFIG.get(0) else {
        return 0;
    };
    if !targeted(config, tgid) {
        return 0;
    }
    if config.has_error_rules != 0 {
        error_hooks::clear(pid_tgid);
    }
    let id: i64 = ctx.arg(1);
    let regs: *const u64 = ctx.arg(0);
    if (config.path_rules != 0 || config.dst_rules != 0) && id == SYS_CLOSE {
        let key = fd_key(tgid, first_argument(regs) as u32);
        let _ = PATH_FDS.remove(&key);
        let _ = PEER_FDS.remove(&key);
    }
    if !(0..i64::from(MAX_SYSCALL_NR)).contains(&id) {
        return 0;
    }
    let Some(&mask) = SYSCALL_RULES.get(id as u32) else {
        return 0;
    };
    if mask == 0 {
        return 0;
    }
    let mut decided = false;
    for index in 0..MAX_RULES {
        if mask & (1 << index) == 0 {
            continue;
        }
        let Some(rule) = RULES.get(index) else {
            break;
        };
        if rule.active == 0 {
            continue;
        }
        if rule.fd != ANY_FD && first_argument(regs) as i64 != rule.fd {
            continue;
        }
        if rule.has_comm != 0 && !comm_matches(&rule.comm) {
            continue;
        }
        if rule.by_path != 0 && !path_matches(tgid, first_argument(regs), index) {
            continue;
        }
        if rule.by_dst != 0 && !peer_matches(rule, tgid, id, regs) {
            continue;
        }
        let Some(counters) = RULE_COUNTERS.get_ptr_mut(index) else {
            continue;
        };
        // SAFETY: the pointer comes from a successful array lookup and stays valid during the
        // program; the counters are only ever changed atomically.
        let call = unsafe { take_ticket(&raw mut (*counters).calls) };
        // Every matching rule counts the call; the first rule whose chain fires decides it.
        if decided {
            continue;
        }
        for term_index in 0..MAX_TERMS {
            if term_index as u32 >= rule.term_count {
                break;
            }
            let term = &rule.terms[term_index];
            if term.percent < 100
                && roll(rule.seed, u64::from(index), call, term_index as u64)
                    >= u64::from(term.percent)
            {
                continue;
            }
            // SAFETY: as above.
            let ticket = unsafe { take_ticket(&raw mut (*counters).fired[term_index]) };
            if term.count != UNLIMITED && ticket >= term.count {
                continue;
            }
            decided = true;
            if term.action == action::ERROR {
                error_hooks::mark(pid_tgid, term.arg as u32);
            } else {
                fire(term.action, term.arg, tgid);
            }
            if term.action != action::OFF && term.action != action::COUNT {
                report(
                    index,
                    term_index as u32,
                    term.action,
                    pid_tgid,
                    id as u32,
                    call,
                    regs,
                );
            }
            break;
        }
    }
    0
}

const SYS_CLOSE: i64 = 3;
/// Offset of `orig_ax` (the syscall number) and `si` (the second argument) in `struct pt_regs`.
const PT_REGS_ORIG_AX: usize = 15;
const PT_REGS_SI: usize = 13;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

fn targeted(config: &FaultConfig, tgid: u32) -> bool {
    if config.single_tgid != 0 {
        config.single_tgid == tgid
    } else if config.cgroup_id != 0 {
        // SAFETY: a helper without arguments.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        cgroup == config.cgroup_id
    } else {
        // SAFETY: a map lookup with a valid key.
        unsafe { TARGETS.get(&tgid) }.is_some()
    }
}

const SYS_CONNECT: i64 = 42;
const SYS_SENDTO: i64 = 44;
const SYS_SENDMSG: i64 = 46;
const AF_INET: u16 = 2;
const EINPROGRESS: i64 = 115;
/// Offset of `r8` (the fifth syscall argument) in `struct pt_regs`.
const PT_REGS_R8: usize = 9;

/// The start of a `struct sockaddr_in`.
#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: u32,
}

/// Whether the call's peer is the rule's: the address the call names (connect, sendto with an
/// address, sendmsg with msg_name), else the connected peer of the socket behind its fd.
fn peer_matches(rule: &KernelRule, tgid: u32, id: i64, regs: *const u64) -> bool {
    let named = match id {
        SYS_CONNECT => argument(regs, PT_REGS_SI),
        SYS_SENDTO => argument(regs, PT_REGS_R8),
        // msg_name is the first field of struct msghdr.
        // SAFETY: a checked read of user memory the call itself is about to read.
        SYS_SENDMSG => unsafe {
            bpf_probe_read_user(argument(regs, PT_REGS_SI) as *const u64).unwrap_or(0)
        },
        _ => 0,
    };
    let (addr, port) = if named != 0 {
        // SAFETY: as above.
        let Ok(sockaddr) = (unsafe { bpf_probe_read_user(named as *const SockaddrIn) }) else {
            return false;
        };
        if sockaddr.family != AF_INET {
            return false;
        }
        (sockaddr.addr, u32::from(sockaddr.port))
    } else {
        let key = fd_key(tgid, first_argument(regs) as u32);
        // SAFETY: a map lookup with a valid key.
        let Some(&peer) = (unsafe { PEER_FDS.get(&key) }) else {
            return false;
        };
        (peer as u32, (peer >> 32) as u32)
    };
    addr == rule.dst_addr && (rule.dst_port == 0 || port == rule.dst_port)
}

fn path_matches(tgid: u32, fd: u64, rule: u32) -> bool {
    let key = fd_key(tgid, fd as u32);
    // SAFETY: a map lookup with a valid key.
    unsafe { PATH_FDS.get(&key) }.is_some_and(|mask| mask & (1 << rule) != 0)
}

/// `tp_btf/sys_exit`, attached only while a rule filters by path: a call that gave the target a
/// new fd stops it (SIGSTOP, delivered before it returns to user space) and reports the fd, so
/// user space can resolve the file and fill PATH_FDS before any call can use that fd. A new
/// child process (a target already, by --follow-forks or its cgroup) is stopped the same way on
/// its first return to user space, out of fork, until the fds it inherited are classified.
#[btf_tracepoint(function = "sys_exit")]
pub fn classify_opens(ctx: BtfTracePointContext) -> i32 {
    let Some(config) = FAULT_CONFIG.get(0) else {
        return 0;
    };
    if config.path_rules == 0 && config.dst_rules == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !targeted(config, (pid_tgid >> 32) as u32) {
        return 0;
    }
    let regs: *const u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr = argument(regs, PT_REGS_ORIG_AX);
    // A socket that got its peer (for dst= filters): its fd is the first argument.
    let connected =
        nr == SYS_CONNECT as u64 && config.dst_rules != 0 && (ret == 0 || ret == -EINPROGRESS);
    if ret < 0 && !connected {
        return 0;
    }
    let gives_fd = connected
        || match nr {
            // open, creat, openat, openat2, dup, dup2, dup3, accept, accept4
            2 | 85 | 257 | 437 | 32 | 33 | 292 | 43 | 288 => true,
            // fcntl(F_DUPFD / F_DUPFD_CLOEXEC)
            72 => matches!(argument(regs, PT_REGS_SI), F_DUPFD | F_DUPFD_CLOEXEC),
            _ => false,
        };
    // clone, fork, vfork, clone3 returning 0 in a new process (not a thread: its pid is its tgid).
    let forked =
        matches!(nr, 56 | 57 | 58 | 435) && ret == 0 && pid_tgid as u32 == (pid_tgid >> 32) as u32;
    if !gives_fd && !forked {
        return 0;
    }
    let fd = if forked {
        FORKED_FD
    } else if connected {
        first_argument(regs) as u32
    } else {
        ret as u32
    };
    let tgid = (pid_tgid >> 32) as u32;
    // The event is published only once the stop is pending: user space continues the process as
    // soon as it has read the event, and a SIGCONT sent before the SIGSTOP would leave the
    // process stopped for good. So space is reserved first, and a stop that could not be
    // reported is not made.
    let Some(mut entry) = EVENTS.reserve::<FiredEvent>(0) else {
        return 0;
    };
    let key = fd_key(tgid, fd);
    // Recorded before the stop, so no delay can end without seeing it.
    if CLASSIFYING.insert(&key, &1, 0).is_err() {
        entry.discard(0);
        return 0;
    }
    if !stop(tgid) {
        let _ = CLASSIFYING.remove(&key);
        entry.discard(0);
        return 0;
    }
    entry.write(FiredEvent {
        // SAFETY: bpf_ktime_get_ns has no arguments.
        time_ns: unsafe { bpf_ktime_get_ns() },
        call: 0,
        first_arg: u64::from(fd),
        rule: 0,
        term: 0,
        action: if forked {
            action::FORKED
        } else {
            action::OPENED
        },
        tgid,
        tid: pid_tgid as u32,
        syscall_nr: nr as u32,
    });
    entry.submit(0);
    0
}

/// Atomically increments the counter and returns its previous value: a unique ticket, so
/// concurrent calls never share a number. (The BPF target has no `AtomicU64::fetch_add`; the
/// intrinsic compiles to BPF's atomic fetch-and-add. SeqCst, because with Relaxed LLVM emits the
/// legacy add that returns nothing, even where the result is used.)
///
/// # Safety
/// `counter` must be valid for the program's lifetime and only accessed atomically.
unsafe fn take_ticket(counter: *mut u64) -> u64 {
    // SAFETY: guaranteed by the caller.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, 1) }
}

fn first_argument(regs: *const u64) -> u64 {
    argument(regs, PT_REGS_DI)
}

/// The syscall argument in the pt_regs slot `index` (PT_REGS_DI, PT_REGS_SI, ...).
fn argument(regs: *const u64, index: usize) -> u64 {
    // A plain load, not bpf_probe_read_kernel: it runs at every targeted call, and a tp_btf
    // argument is a typed kernel pointer the verifier lets the program read directly.
    // SAFETY: regs is this syscall's `struct pt_regs`; the verifier checks the field access.
    unsafe { regs.add(index).read_volatile() }
}

fn comm_matches(expected: &[u8; 16]) -> bool {
    let Ok(comm) = bpf_get_current_comm() else {
        return false;
    };
    for i in 0..16 {
        if comm[i] != expected[i] {
            return false;
        }
        if comm[i] == 0 {
            return true;
        }
    }
    true
}

fn fire(kind: u32, argument: u64, tgid: u32) {
    let signal = match kind {
        action::KILL => 9,
        action::SIGNAL => argument as u32,
        action::STOP => {
            stop(tgid);
            return;
        }
        _ => return,
    };
    // SAFETY: bpf_send_signal signals the current process; it has no memory arguments.
    unsafe { aya_ebpf::helpers::bpf_send_signal(signal) };
}

/// Stops the current process (SIGSTOP, pending once this returns true), recorded in STOPPED
/// first: a stop nobody could be sure to undo is not made.
fn stop(tgid: u32) -> bool {
    if STOPPED.insert(&tgid, &1, 0).is_err() {
        return false;
    }
    // SAFETY: bpf_send_signal signals the current process; it has no memory arguments.
    unsafe { aya_ebpf::helpers::bpf_send_signal(SIGSTOP) == 0 }
}

fn report(
    rule: u32,
    term: u32,
    kind: u32,
    pid_tgid: u64,
    syscall_nr: u32,
    call: u64,
    regs: *const u64,
) {
    let event = FiredEvent {
        // SAFETY: bpf_ktime_get_ns has no arguments.
        time_ns: unsafe { bpf_ktime_get_ns() },
        call,
        first_arg: first_argument(regs),
        rule,
        term,
        action: kind,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        syscall_nr,
    };
    let _ = EVENTS.output::<FiredEvent>(&event, 0);
}
