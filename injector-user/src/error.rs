use thiserror::Error;

/// Everything that can go wrong between "the user named a pid" and "the programs are attached".
/// Each message says what to do about it.
#[derive(Debug, Error)]
pub enum InjectorError {
    #[error(
        "no process with pid {pid} exists (it may already have exited); check the pid with `ps -p {pid}`"
    )]
    NoSuchProcess { pid: u32 },
    #[error("pid {pid} is a thread, not a process: pass its process id, --pid {tgid}")]
    NotAProcess { pid: u32, tgid: u32 },
    #[error("pid {pid} is the injector itself; point it at the process under test")]
    IsSelf { pid: u32 },
    #[error("starting {command}: {reason}")]
    CannotExecute { command: String, reason: String },
    #[error("pid must be a positive number, got {pid}")]
    InvalidPid { pid: u32 },
    #[error(
        "pid 1 is init: faults there would hit the whole machine; point the injector at the \
         process under test"
    )]
    IsInit,
    #[error(
        "pid {pid} has exited (a zombie its parent has not reaped yet): it makes no more calls; \
         start the program again and pass its new pid"
    )]
    Exited { pid: u32 },
    #[error("no network interface named `{name}` (list them with `ip link`)")]
    NoSuchInterface { name: String },
    #[error("loading eBPF programs needs root (CAP_BPF and CAP_PERFMON): run it with sudo")]
    NotRoot,
    #[error("cannot open the cgroup v2 root {path}")]
    CgroupRoot {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hand the guard process a descriptor of the stopped processes")]
    Guard {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open pid {pid}")]
    Pidfd {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused to load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(
        "the eBPF object has no {kind} named `{name}`: rebuild it with `cargo xtask build-ebpf`"
    )]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("eBPF program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "cannot read the kernel's BTF (/sys/kernel/btf/vmlinux), which BTF tracepoints need: {0}"
    )]
    Btf(#[from] aya::BtfError),
    #[error(
        "{rule}: error() in attach mode needs BPF LSM, and this kernel refused it (lsm/{hook}: \
         {reason}); `injector probe` shows what this kernel allows. Use `injector run -- COMMAND` \
         (seccomp), faultfs for file errors, or a VM with a stock kernel (`cargo xtask vm`)"
    )]
    LsmRefused {
        rule: String,
        hook: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Rule(#[from] crate::rules::RuleError),
    #[error(transparent)]
    Partition(#[from] crate::partition::PartitionError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

impl InjectorError {
    /// The error of a map operation on the map `name`, for `map_err`.
    pub fn map(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> InjectorError {
        move |source| InjectorError::Map { name, source }
    }
}
