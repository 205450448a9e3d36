//! Ctrl-C and SIGTERM during an exploration: the running workload or check is killed with its
//! process group, and the children started meanwhile do not inherit the blocked signals.
use std::{
    os::unix::process::CommandExt,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
};

use crate::mount;

/// Set by Ctrl-C/SIGTERM; the process group of the running workload or check, to stop it.
pub(super) struct Interrupt {
    pub(super) asked: AtomicBool,
    pub(super) running: Arc<AtomicI32>,
}

pub(super) fn watch_signals() -> Arc<Interrupt> {
    let interrupt = Arc::new(Interrupt {
        asked: AtomicBool::new(false),
        running: Arc::new(AtomicI32::new(0)),
    });
    mount::block_termination_signals();
    let watcher = interrupt.clone();
    let _ = std::thread::Builder::new()
        .name("explore-signals".into())
        .spawn(move || {
            loop {
                mount::wait_for_termination_signal();
                watcher.asked.store(true, Ordering::SeqCst);
                let group = watcher.running.load(Ordering::SeqCst);
                if let Some(pid) = rustix::process::Pid::from_raw(group) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
            }
        });
    interrupt
}

/// Children must not inherit the blocked termination signals of this process.
pub(super) fn unblock_signals_in_child(command: &mut Command) {
    let blocked = crate::mount::termination_signals();
    // SAFETY: between fork and exec the closure only calls pthread_sigmask, which is
    // async-signal-safe, on a set built before the fork.
    unsafe {
        command.pre_exec(move || {
            let _ = blocked.thread_unblock();
            Ok(())
        });
    }
}
