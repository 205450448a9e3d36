//! With `--follow-forks`, a new process created by a target becomes a target too (a new thread
//! already is one: it shares the tgid), and stops being one when it exits.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use injector_common::ForkConfig;

use crate::fault::{STOPPED, TARGETS};

#[map]
static FORK_CONFIG: Array<ForkConfig> = Array::with_max_entries(1, 0);

const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint(category = "task", name = "task_newtask")]
pub fn follow_forks(ctx: TracePointContext) -> u32 {
    let Some(config) = FORK_CONFIG.get(0) else {
        return 0;
    };
    // The tracepoint runs in the task that forks.
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map lookup with a valid key.
    if unsafe { TARGETS.get(&parent) }.is_none() {
        return 0;
    }
    // SAFETY: offsets read from the tracepoint's own format file; the reads are checked.
    let Ok(flags) = (unsafe { ctx.read_at::<u64>(config.clone_flags_offset as usize) }) else {
        return 0;
    };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    // SAFETY: as above.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(config.pid_offset as usize) }) else {
        return 0;
    };
    let _ = TARGETS.insert(&(child as u32), &1, 0);
    0
}

/// A process that is gone leaves the targets and the stopped: the maps stay small however many
/// children come and go, and a later, unrelated process given the same pid is neither a target
/// nor continued by the guard.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn forget_exited(ctx: TracePointContext) -> u32 {
    let Some(config) = FORK_CONFIG.get(0) else {
        return 0;
    };
    // The tracepoint runs in the exiting thread.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: map lookups with a valid key.
    if unsafe { TARGETS.get(&tgid).is_none() && STOPPED.get(&tgid).is_none() } {
        return 0;
    }
    let gone = if config.group_dead_offset != 0 {
        // SAFETY: the offset comes from the tracepoint's own format file; the read is checked.
        unsafe { ctx.read_at::<u8>(config.group_dead_offset as usize) }.is_ok_and(|dead| dead != 0)
    } else {
        pid_tgid as u32 == tgid
    };
    if gone {
        let _ = TARGETS.remove(&tgid);
        let _ = STOPPED.remove(&tgid);
    }
    0
}
