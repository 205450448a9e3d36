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
