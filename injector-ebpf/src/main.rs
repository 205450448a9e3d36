//! The injector's kernel side. Every program filters on the target's tgid before doing anything,
//! so a process the user did not point at is never touched.
#![no_std]
#![no_main]
// Atomic fetch-and-add (fault.rs): the BPF target has no AtomicU64::fetch_add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray},
    programs::BtfTracePointContext,
};
use injector_common::{CountConfig, MAX_SYSCALL_NR};

mod error_hooks;
mod fault;
mod forks;
mod partition;
mod probe;

#[map]
static COUNT_CONFIG: Array<CountConfig> = Array::with_max_entries(1, 0);

// Per-CPU so that concurrent threads of the target never lose an increment without atomics;
// user space sums the CPUs.
#[map]
static SYSCALL_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_SYSCALL_NR, 0);

/// `tp_btf/sys_enter`: runs at the entry of every syscall of every task, so it must stay cheap
/// and bail out early for anything that is not the target.
#[btf_tracepoint(function = "sys_enter")]
pub fn count_syscalls(ctx: BtfTracePointContext) -> i32 {
    let Some(config) = COUNT_CONFIG.get(0) else {
        return 0;
    };
    if config.target_tgid == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != config.target_tgid {
        return 0;
    }
    // sys_enter(struct pt_regs *regs, long id)
    let id: i64 = ctx.arg(1);
    if !(0..MAX_SYSCALL_NR as i64).contains(&id) {
        return 0;
    }
    if let Some(slot) = SYSCALL_COUNTS.get_ptr_mut(id as u32) {
        // SAFETY: the pointer comes from a successful per-CPU map lookup, so it is valid and
        // only this CPU writes it while this program runs.
        unsafe { *slot += 1 };
    }
    0
}

// BTF tracing programs are only loadable with a GPL-compatible license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
