//! What every FUSE request shares: the model behind its lock, the fault rules, the trace and
//! journal, the crash point reached and the processes killed, open directory listings and
//! the kernel's references to each inode.
use super::*;

pub struct Shared {
    pub state: Mutex<State>,
    pub faults: Faults,
    /// Bytes the mount may hold (0: no limit); beyond it writes fail with ENOSPC.
    pub capacity: AtomicU64,
    pub(super) next_handle: AtomicU64,
    pub(super) tracer: Option<Tracer>,
    /// `faultfs explore`'s record of every change, when exploring.
    pub(super) journal: Option<Arc<Journal>>,
    /// The crash point a `crash` rule reached (op and path), until the next power loss: from
    /// then on every gated operation fails with EIO, so nothing after it becomes durable.
    pub(super) crashed: Mutex<Option<CrashPoint>>,
    /// The processes `kill` rules killed.
    pub(super) kills: Mutex<Kills>,
    /// A copy of `crashed.is_some()` read on every operation without a lock.
    pub(super) is_crashed: std::sync::atomic::AtomicBool,
    /// The entries of each open directory handle, taken when it reads from the start: offsets
    /// into it stay valid while the directory changes, so every entry not removed since is
    /// returned exactly once (POSIX; an index into the live entries skipped some after each
    /// unlink).
    pub(super) listings: Mutex<HashMap<u64, Arc<Listing>>>,
    /// How many references the kernel holds to each inode (one per entry replied, less what
    /// it forgets): at zero, an unlinked file's resources can go (`State::forgotten`).
    pub(super) lookups: Mutex<HashMap<Ino, u64>>,
}

/// A directory's entries as one handle reads them: (inode, kind, name).
pub(super) type Listing = Vec<(Ino, FileType, OsString)>;

/// The process (thread group) a thread belongs to, from /proc; None for no thread (0: a
/// request of the kernel's own) or one gone already.
pub(super) fn thread_group_of(thread: u32) -> Option<u32> {
    if thread == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{thread}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
}

/// A process a `kill` rule killed, and the call it was killed at.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KillPoint {
    pub op: &'static str,
    pub path: PathBuf,
    pub pid: u32,
}

/// What `kill` rules did on this mount.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Kills {
    pub count: u64,
    pub last: Option<KillPoint>,
}

/// Where a `crash` rule stopped the mount.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CrashPoint {
    pub op: &'static str,
    pub path: PathBuf,
}

impl Shared {
    pub fn new(state: State, faults: Faults, capacity: u64, tracer: Option<Tracer>) -> Self {
        Self {
            state: Mutex::new(state),
            faults,
            capacity: AtomicU64::new(capacity),
            next_handle: AtomicU64::new(1),
            tracer,
            journal: None,
            crashed: Mutex::new(None),
            kills: Mutex::new(Kills::default()),
            is_crashed: std::sync::atomic::AtomicBool::new(false),
            listings: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
        }
    }

    /// The crash point reached, if the mount is stopped at one.
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Self {
        self.journal = journal;
        self
    }

    /// Records a change that succeeded, when exploring; `path` is where it happened (for
    /// reports).
    pub(super) fn record(
        &self,
        state: &State,
        ino: Ino,
        child: Option<&OsStr>,
        op: impl FnOnce() -> Op,
    ) {
        let Some(journal) = &self.journal else { return };
        let mut path = state.path_of(ino);
        if let Some(child) = child {
            path.push(child);
        }
        journal.record(op(), path);
    }

    pub fn crash_point(&self) -> Option<CrashPoint> {
        self.crashed.lock().expect("crash point poisoned").clone()
    }

    /// Stops the mount at a crash point (before the crashing operation's reply goes out, so no
    /// operation the program starts after seeing that reply can succeed).
    pub(super) fn crash(&self, op: &'static str, path: PathBuf) {
        tracing::warn!(op, path = %path.display(), "crash point reached: the mount stops until a power loss");
        *self.crashed.lock().expect("crash point poisoned") = Some(CrashPoint { op, path });
        self.is_crashed.store(true, Ordering::SeqCst);
    }

    /// SIGKILLs the process that made `op` (its thread `caller`): a `kill` rule fired. False
    /// when there is no such process to kill (a request the kernel made on its own, or faultfs
    /// itself), and then the call goes on.
    pub(super) fn kill_caller(&self, caller: u32, op: &'static str, path: PathBuf) -> bool {
        let Some(pid) = thread_group_of(caller).filter(|&pid| pid != std::process::id()) else {
            tracing::warn!(op, path = %path.display(), caller, "kill: no process of its own made this call; it goes on");
            return false;
        };
        let Some(target) = rustix::process::Pid::from_raw(pid as i32) else {
            return false;
        };
        if let Err(error) = rustix::process::kill_process(target, rustix::process::Signal::KILL) {
            tracing::warn!(op, path = %path.display(), pid, %error, "kill: the caller could not be killed; the call goes on");
            return false;
        }
        tracing::warn!(op, path = %path.display(), pid, "kill: the caller was killed at this call, which was not made");
        let mut kills = self.kills.lock().expect("kills poisoned");
        kills.count += 1;
        kills.last = Some(KillPoint { op, path, pid });
        true
    }

    /// The processes `kill` rules killed: how many, and the last.
    pub fn kills(&self) -> Kills {
        self.kills.lock().expect("kills poisoned").clone()
    }

    /// The mount runs again (after a power loss).
    pub fn clear_crash(&self) {
        *self.crashed.lock().expect("crash point poisoned") = None;
        self.is_crashed.store(false, Ordering::SeqCst);
    }

    pub(super) fn stopped_by_crash(&self) -> bool {
        self.is_crashed.load(Ordering::SeqCst)
    }

    /// mkdir, create and symlink: the node made (unless a fault says otherwise), traced and
    /// journaled.
    pub(super) fn create_node(
        &self,
        state: &mut State,
        gate: Gate,
        op: &str,
        node: NewNode<'_>,
    ) -> FsResult<Ino> {
        let NewNode {
            parent,
            name,
            kind,
            mode,
            owner,
            target,
        } = node;
        let result =
            fail(gate).and_then(|()| state.create(parent, name, kind, mode, owner, target));
        self.trace(state, op, parent, Some(name), (None, None), &result, false);
        if let Ok(ino) = result {
            let node = match (kind, target) {
                (Kind::Dir, _) => NodeKind::Dir,
                (Kind::Symlink, Some(target)) => NodeKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                },
                _ => NodeKind::File,
            };
            self.record(state, parent, Some(name), || Op::Create {
                parent,
                name: name.to_string_lossy().into_owned(),
                ino,
                kind: node,
                mode: mode & 0o7777,
            });
        }
        result
    }

    /// Writes a trace line when tracing is on; `state` is the locked state the operation used.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn trace<T>(
        &self,
        state: &State,
        op: &str,
        ino: Ino,
        child: Option<&OsStr>,
        range: (Option<u64>, Option<u64>),
        result: &FsResult<T>,
        durable: bool,
    ) {
        let Some(tracer) = &self.tracer else { return };
        let mut path = state.path_of(ino);
        if let Some(child) = child {
            path.push(child);
        }
        let errno_name;
        let result_text = match result {
            Ok(_) => "ok",
            Err(errno) => {
                errno_name = fault_rules::errno_name(*errno).unwrap_or("error");
                errno_name
            }
        };
        tracer.write(&Record {
            time_ns: tracer.elapsed_ns(),
            op,
            path: &path,
            offset: range.0,
            length: range.1,
            result: result_text,
            durable: durable && result.is_ok(),
        });
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state poisoned")
    }

    pub(super) fn new_handle(&self, epoch: u64) -> FileHandle {
        let sequence = self.next_handle.fetch_add(1, Ordering::Relaxed);
        FileHandle((epoch << EPOCH_SHIFT) | (sequence & ((1 << EPOCH_SHIFT) - 1)))
    }

    /// The kernel took a reference to `ino` (an entry or a created file was replied).
    pub(super) fn looked_up(&self, ino: Ino) {
        *self
            .lookups
            .lock()
            .expect("lookups poisoned")
            .entry(ino)
            .or_default() += 1;
    }

    /// The kernel dropped `count` references to `ino`; at none, the inode may let go of what
    /// it holds. Inodes from before a power loss are no longer in the state: nothing to do.
    pub(super) fn forget(&self, ino: Ino, count: u64) {
        let unreferenced = {
            let mut lookups = self.lookups.lock().expect("lookups poisoned");
            let Some(held) = lookups.get_mut(&ino) else {
                return;
            };
            *held = held.saturating_sub(count);
            let unreferenced = *held == 0;
            if unreferenced {
                lookups.remove(&ino);
            }
            unreferenced
        };
        if unreferenced {
            self.lock().forgotten(ino);
        }
    }

    pub(super) fn check_handle(state: &State, fh: FileHandle) -> FsResult<()> {
        if fh.0 >> EPOCH_SHIFT != state.epoch {
            // Opened before a power loss: that file is gone as the program knew it.
            return Err(libc::EIO);
        }
        Ok(())
    }

    pub(super) fn check_capacity(&self, state: &State, growth: u64) -> FsResult<()> {
        let capacity = self.capacity.load(Ordering::Relaxed);
        if capacity != 0 && state.used_bytes() + growth > capacity {
            return Err(libc::ENOSPC);
        }
        Ok(())
    }
}

/// A node mkdir, create or symlink makes.
pub(super) struct NewNode<'a> {
    pub parent: Ino,
    pub name: &'a OsStr,
    pub kind: Kind,
    pub mode: u32,
    pub owner: (u32, u32),
    /// A symlink's target.
    pub target: Option<&'a Path>,
}
