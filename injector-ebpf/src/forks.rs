//! `tracepoint/task/task_newtask`: with `--follow-forks`, a new process created by a target
//! becomes a target too (a new thread already is one: it shares the tgid).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use injector_common::ForkConfig;

use crate::fault::TARGETS;

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
