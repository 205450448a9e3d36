//! The contract between `injector-ebpf` (kernel side) and `injector-user` (user side).
//!
//! Both sides compile this one crate, so a map's key/value layout or a program's name can only
//! change in one place. Everything here is `#[repr(C)]` plain data: the kernel side reads it from
//! BPF maps that the user side fills.
#![no_std]

/// Syscall numbers at or above this are ignored by the counting program. x86_64 tops out in the
/// mid 400s; the margin keeps new syscalls countable without a rebuild.
pub const MAX_SYSCALL_NR: u32 = 512;

/// Name of the `tp_btf/sys_enter` program that counts a target's syscalls.
pub const COUNT_PROGRAM: &str = "count_syscalls";
/// The BTF tracepoint the counting program attaches to.
pub const COUNT_TRACEPOINT: &str = "sys_enter";
/// Per-CPU array, index = syscall number, value = calls seen (`u64`).
pub const SYSCALL_COUNTS_MAP: &str = "SYSCALL_COUNTS";
/// One-entry array holding the [`CountConfig`].
pub const COUNT_CONFIG_MAP: &str = "COUNT_CONFIG";

/// Which process the counting program watches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountConfig {
    /// Thread-group id (the "pid" users see) of the target. 0 means "no target": the program
    /// counts nothing, so a half-configured program can never observe a bystander.
    pub target_tgid: u32,
    pub _reserved: u32,
}

impl CountConfig {
    pub const fn for_tgid(target_tgid: u32) -> Self {
        Self {
            target_tgid,
            _reserved: 0,
        }
    }
}

// SAFETY: CountConfig is #[repr(C)], has no padding (two u32) and every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CountConfig {}

/// Rules one attach can hold (slots of the RULES map).
pub const MAX_RULES: u32 = 16;
/// Terms of one rule's chain the kernel evaluates (`3*off->1*kill` has two).
pub const MAX_TERMS: usize = 4;
/// A term count meaning "no limit".
pub const UNLIMITED: u64 = u64::MAX;
/// A filter value meaning "any fd".
pub const ANY_FD: i64 = -1;

/// Name of the `tp_btf/sys_enter` program that applies fault rules.
pub const FAULT_PROGRAM: &str = "fault_syscalls";
pub const RULES_MAP: &str = "RULES";
pub const RULE_COUNTERS_MAP: &str = "RULE_COUNTERS";
pub const TARGETS_MAP: &str = "TARGETS";
/// Hash map of the tgids a delay or pause has stopped (kept until they exit): what the guard
/// continues if the injector dies.
pub const STOPPED_MAP: &str = "STOPPED";
pub const EVENTS_MAP: &str = "EVENTS";

/// What the kernel does when a term fires. Delays and pauses stop the process (SIGSTOP) and
/// leave the SIGCONT to user space.
pub mod action {
    pub const OFF: u32 = 0;
    pub const KILL: u32 = 1;
    pub const SIGNAL: u32 = 2;
    pub const STOP: u32 = 3;
    pub const COUNT: u32 = 4;
    /// The call fails with errno `arg`: sys_enter marks the thread, and the first LSM hook the
    /// call reaches returns the error.
    pub const ERROR: u32 = 5;
    /// Not a fault: the target got a new fd (`first_arg`) and was stopped until user space has
    /// classified it against the rules' path filters (see [`PATH_FDS_MAP`]).
    pub const OPENED: u32 = 100;
    /// Not a fault: a target's new child process, stopped on its way out of fork until user
    /// space has classified the fds it inherited (only while path rules exist).
    pub const FORKED: u32 = 101;
}

/// `tp_btf/sys_exit` program reporting the target's new fds while path rules exist.
pub const OPENS_PROGRAM: &str = "classify_opens";
pub const SYS_EXIT_TRACEPOINT: &str = "sys_exit";
/// Hash map: key = tgid << 32 | fd, value = bit i set when rule i's path filter matches the
/// file behind that fd (user space resolves it from /proc/TGID/fd/FD).
pub const PATH_FDS_MAP: &str = "PATH_FDS";
pub const MAX_PATH_FDS: u32 = 65536;
/// The key of one fd of one process in PATH_FDS, PEER_FDS and CLASSIFYING.
pub const fn fd_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Hash map: key = tgid << 32 | fd, value = the connected peer of the socket behind it,
/// `port << 32 | addr` (both as in a `sockaddr_in`), from /proc (while dst rules exist).
pub const PEER_FDS_MAP: &str = "PEER_FDS";

/// Hash map: key = tgid << 32 | fd (fd [`FORKED_FD`] for a new child), present while the
/// kernel holds that process stopped for a classification user space has not finished; a
/// delay ending meanwhile leaves the continue to the classification.
pub const CLASSIFYING_MAP: &str = "CLASSIFYING";
pub const FORKED_FD: u32 = u32::MAX;

/// Hash map: key = pid_tgid of a thread whose current syscall must fail, value = errno. Set at
/// syscall entry, taken by the first LSM hook the call reaches, cleared at the thread's next
/// syscall entry if no hook took it (the call failed before reaching one).
pub const PENDING_ERRORS_MAP: &str = "PENDING_ERRORS";

/// The LSM programs that deliver pending errors: (program name, LSM hook).
pub const ERROR_HOOKS: &[(&str, &str)] = &[
    ("error_file_permission", "file_permission"),
    ("error_file_open", "file_open"),
    ("error_file_truncate", "file_truncate"),
    ("error_path_truncate", "path_truncate"),
    ("error_socket_sendmsg", "socket_sendmsg"),
    ("error_socket_recvmsg", "socket_recvmsg"),
    ("error_socket_connect", "socket_connect"),
    ("error_socket_accept", "socket_accept"),
    ("error_inode_rename", "inode_rename"),
    ("error_inode_unlink", "inode_unlink"),
    ("error_inode_rmdir", "inode_rmdir"),
    ("error_inode_mkdir", "inode_mkdir"),
];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTerm {
    /// Fires with this probability in percent (100: always).
    pub percent: u32,
    pub action: u32,
    /// At most this many times ([`UNLIMITED`]: always).
    pub count: u64,
    /// The signal for `signal`, unused otherwise.
    pub arg: u64,
}

/// One rule as the kernel evaluates it: a syscall, filters, and the chain of terms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelRule {
    /// 0: empty slot.
    pub active: u32,
    pub syscall_nr: u32,
    /// Only calls on this fd (first argument), or [`ANY_FD`].
    pub fd: i64,
    /// Only calls by threads with this name (comm), when `has_comm` is 1.
    pub has_comm: u32,
    pub term_count: u32,
    /// 1: only calls on an fd whose file matches the rule's path filter (PATH_FDS).
    pub by_path: u32,
    /// 1: only calls whose peer is `dst_addr:dst_port`: the address the call names (connect,
    /// sendto, sendmsg), else the connected peer of the socket behind the fd (PEER_FDS).
    pub by_dst: u32,
    pub comm: [u8; 16],
    /// IPv4 address and port as they lie in a `sockaddr_in` (network order), read as host
    /// integers.
    pub dst_addr: u32,
    pub dst_port: u32,
    pub seed: u64,
    pub terms: [KernelTerm; MAX_TERMS],
}

/// Per rule, updated atomically by the kernel: matching calls seen, and tickets taken per term
/// (a counted term fired `min(fired, count)` times).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    pub calls: u64,
    pub fired: [u64; MAX_TERMS],
}

/// Sent through the ring buffer each time a fault fires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FiredEvent {
    pub time_ns: u64,
    /// 0-based index of the matching call of this rule.
    pub call: u64,
    pub first_arg: u64,
    pub rule: u32,
    pub term: u32,
    pub action: u32,
    pub tgid: u32,
    pub tid: u32,
    pub syscall_nr: u32,
}

/// A number in 0..100 that depends only on its inputs: the counter-based generator behind rule
/// probabilities, shared by the kernel programs and user space (`fault-rules`) so both fire on
/// the same calls for the same seed. Uses `%` because BPF has no 128-bit multiply.
pub const fn roll(seed: u64, rule: u64, call: u64, term: u64) -> u64 {
    let mut z = seed
        ^ rule.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ call.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ term.wrapping_mul(0x1656_67b1_9e37_79f9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z % 100
}

// The shared structs are #[repr(C)], have no implicit padding (the sizes are checked below) and
// every bit pattern is a valid value, which is what aya::Pod requires.
#[cfg(feature = "user")]
// SAFETY: see above.
unsafe impl aya::Pod for KernelRule {}
#[cfg(feature = "user")]
// SAFETY: see above.
unsafe impl aya::Pod for RuleCounters {}
#[cfg(feature = "user")]
// SAFETY: see above.
unsafe impl aya::Pod for FiredEvent {}
#[cfg(feature = "user")]
// SAFETY: see above.
unsafe impl aya::Pod for KernelTerm {}

const _: () = assert!(core::mem::size_of::<KernelTerm>() == 24);
const _: () = assert!(core::mem::size_of::<KernelRule>() == 64 + 24 * MAX_TERMS);
const _: () = assert!(core::mem::size_of::<FiredEvent>() == 48);

/// Packet rules one partition can hold.
pub const MAX_PARTITION_RULES: u32 = 64;
/// Name of the tc classifier that drops partitioned packets.
pub const PARTITION_PROGRAM: &str = "partition";
/// cgroup_skb programs at the cgroup v2 root, for kernels without TCX.
pub const PARTITION_EGRESS_PROGRAM: &str = "partition_egress";
pub const PARTITION_INGRESS_PROGRAM: &str = "partition_ingress";
pub const PARTITION_MAP: &str = "PARTITION";

/// Drop IPv4 packets from `src` to `dst` (an address, and a port unless 0), every one
/// (`loss_percent` 100) or that percentage of them. Addresses and ports in network byte order,
/// as they are in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionRule {
    /// 0: empty slot.
    pub active: u32,
    pub loss_percent: u32,
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<PartitionRule>() == 24);

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], no implicit padding (size checked above), every bit pattern valid.
unsafe impl aya::Pod for PartitionRule {}

/// Do-nothing programs `injector probe` tries to load and attach.
pub const PROBE_LSM_PROGRAM: &str = "probe_lsm";
pub const PROBE_LSM_HOOK: &str = "file_permission";
pub const PROBE_FENTRY_PROGRAM: &str = "probe_fentry";
pub const PROBE_FENTRY_FUNCTION: &str = "vfs_fsync_range";

pub const FAULT_CONFIG_MAP: &str = "FAULT_CONFIG";
/// Index = syscall number, value = bit i set when rule i applies to that syscall, so a call no
/// rule names costs one array lookup.
pub const SYSCALL_RULES_MAP: &str = "SYSCALL_RULES";

/// Which processes the fault program applies to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// The one target, compared directly (the common case, and the cheapest check for every
    /// other process's syscalls); 0 means "look the tgid up in the TARGETS map".
    pub single_tgid: u32,
    /// 1 while some rule can fire error(): sys_enter then clears the thread's stale pending error.
    pub has_error_rules: u32,
    /// When not 0, the targets are the tasks in this cgroup v2 (its id: the directory's inode
    /// number), whatever their tgid.
    pub cgroup_id: u64,
    /// How many rules filter by path: while not 0, new fds stop the target until classified.
    pub path_rules: u32,
    /// How many rules filter by peer (dst=): while not 0, so do connects.
    pub dst_rules: u32,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], u32 pairs and a u64 without implicit padding, every bit pattern valid.
unsafe impl aya::Pod for FaultConfig {}

/// `tracepoint/task/task_newtask` program adding a target's new child processes to TARGETS.
pub const FOLLOW_FORKS_PROGRAM: &str = "follow_forks";
pub const FOLLOW_FORKS_CATEGORY: &str = "task";
pub const FOLLOW_FORKS_TRACEPOINT: &str = "task_newtask";
pub const FORK_CONFIG_MAP: &str = "FORK_CONFIG";
/// `tracepoint/sched/sched_process_exit` program taking an exited process out of TARGETS, so
/// that its pid, once reused by an unrelated process, is not a target.
pub const FORGET_EXITED_PROGRAM: &str = "forget_exited";
pub const EXIT_CATEGORY: &str = "sched";
pub const EXIT_TRACEPOINT: &str = "sched_process_exit";

/// Where the tracepoints' fields are in their records (read from tracefs at run time, not
/// assumed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkConfig {
    /// task_newtask's `pid`.
    pub pid_offset: u32,
    /// task_newtask's `clone_flags`.
    pub clone_flags_offset: u32,
    /// sched_process_exit's `group_dead` (set when the last thread exits; kernels 6.16 and
    /// later). 0 when the field is missing: then a process counts as gone once its main
    /// thread exits (its pid cannot be reused before that).
    pub group_dead_offset: u32,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], three u32 without padding, every bit pattern valid.
unsafe impl aya::Pod for ForkConfig {}

const _: () = assert!(core::mem::size_of::<FaultConfig>() == 24);
