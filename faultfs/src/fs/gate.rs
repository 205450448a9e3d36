//! The one gate every request passes: the fault rules decide it, and it runs at once, after a
//! delay or once a pause is lifted (on a thread of its own), or fails, or kills its caller.
use super::*;

impl FaultFs {
    /// `writeback_cache`: let the kernel gather writes in its page cache and send them in large
    /// requests (much faster for bulk writes); write faults and ENOSPC then surface at fsync or
    /// close instead of at write(), as with a real page cache.
    pub fn new(shared: Arc<Shared>, writeback_cache: bool) -> Self {
        Self {
            shared,
            writeback_cache,
        }
    }

    /// Runs `body` as the rules decide for `op` on the inode (and child name): at once, after a
    /// delay, or once a pause is lifted (the last two on a thread of their own).
    pub(super) fn gated(
        &self,
        caller: u32,
        op: &'static str,
        ino: Ino,
        child: Option<&OsStr>,
        body: impl FnOnce(&Shared, Gate) + Send + 'static,
    ) {
        if self.shared.stopped_by_crash() {
            return body(&self.shared, Gate::Fail(libc::EIO));
        }
        if self.shared.faults.is_empty() {
            return body(&self.shared, Gate::Proceed);
        }
        let path = {
            let state = self.shared.lock();
            let path = state.path_of(ino);
            match child {
                Some(name) => path.join(name),
                None => path,
            }
        };
        // A held operation that resumes after a crash point fails like every later one.
        let resumed = |shared: &Shared| {
            if shared.stopped_by_crash() {
                Gate::Fail(libc::EIO)
            } else {
                Gate::Proceed
            }
        };
        match self.shared.faults.decide(op, &path) {
            Decision::Now(Gate::Crash) => {
                self.shared.crash(op, path);
                body(&self.shared, Gate::Proceed);
            }
            Decision::Now(Gate::Kill) => {
                // The reply comes after the signal: the caller, waiting for it in the kernel,
                // dies without seeing the call return, and the call leaves no trace.
                let gate = if self.shared.kill_caller(caller, op, path) {
                    Gate::Fail(libc::EIO)
                } else {
                    Gate::Proceed
                };
                body(&self.shared, gate);
            }
            Decision::Now(gate) => body(&self.shared, gate),
            Decision::After(delay, rule) => {
                let shared = self.shared.clone();
                std::thread::spawn(move || {
                    let gate = match hold(&shared, caller, rule, Some(delay)) {
                        Held::Released => resumed(&shared),
                        Held::CallerKilled => Gate::Fail(libc::EINTR),
                    };
                    body(&shared, gate);
                });
            }
            Decision::UntilRemoved(rule) => {
                let shared = self.shared.clone();
                std::thread::spawn(move || {
                    let gate = match hold(&shared, caller, rule, None) {
                        Held::Released => resumed(&shared),
                        Held::CallerKilled => Gate::Fail(libc::EINTR),
                    };
                    body(&shared, gate);
                });
            }
        }
    }
}

/// How a held call ended.
pub(super) enum Held {
    /// Its delay passed or its rule was removed.
    Released,
    /// The program that made it got SIGKILL meanwhile.
    CallerKilled,
}

/// How often a held call looks whether its caller was killed.
pub(super) const KILL_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Holds a call for `delay` (None: until its rule is removed), or until the program that made
/// it is SIGKILLed. A process killed in a FUSE call the daemon already received stays in the
/// kernel until the call is answered: the kernel asks the daemon to interrupt it, but fuser
/// answers every interrupt "not implemented", so without this a `kill -9` of a program held by
/// `delay(3600000)` or `pause` would leave it unkillable (and its mount busy) for the hour.
pub(super) fn hold(shared: &Shared, caller: u32, rule: u64, delay: Option<Duration>) -> Held {
    let deadline = delay.map(|delay| Instant::now() + delay);
    loop {
        let slice = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Held::Released;
                }
                left.min(KILL_CHECK_EVERY)
            }
            None => KILL_CHECK_EVERY,
        };
        if shared.faults.wait_removed_within(rule, slice) {
            return Held::Released;
        }
        if caller_killed(caller) {
            return Held::CallerKilled;
        }
    }
}

/// Whether the thread `tid` is gone or has a SIGKILL pending (it dies as soon as its call
/// returns). 0 (the kernel's own requests) never is.
pub(super) fn caller_killed(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    status.lines().any(|line| {
        let pending = line
            .strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"));
        pending
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & SIGKILL_BIT != 0)
    })
}
