//! The FUSE side: each request is checked against the fault rules, then carried out on the
//! durability model. Delays and pauses run on their own thread and reply later, so a held
//! operation never blocks the others.
use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use fault_rules::Corruption;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::{
    faults::{Decision, Faults, Gate},
    journal::{Journal, NodeKind, Op},
    state::{FsResult, Ino, Inode, Kind, State},
    trace::{Record, Tracer},
};

/// How long the kernel may cache entries and attributes. Between power losses a live inode only
/// changes through the kernel itself, so caching is safe; a power loss gives every surviving
/// file a new inode number and invalidates every cached entry and inode (control.rs).
const TTL: Duration = Duration::from_secs(60);
/// File handles carry the epoch they were opened in (high bits), so a power loss invalidates
/// them all.
const EPOCH_SHIFT: u32 = 40;
/// A punched hole is written as zeros this many bytes at a time.
const PUNCH_CHUNK: u64 = 1 << 20;

pub struct Shared {
    pub state: Mutex<State>,
    pub faults: Faults,
    /// Bytes the mount may hold (0: no limit); beyond it writes fail with ENOSPC.
    pub capacity: AtomicU64,
    next_handle: AtomicU64,
    tracer: Option<Tracer>,
    /// `faultfs explore`'s record of every change, when exploring.
    journal: Option<Arc<Journal>>,
    /// The crash point a `crash` rule reached (op and path), until the next power loss: from
    /// then on every gated operation fails with EIO, so nothing after it becomes durable.
    crashed: Mutex<Option<CrashPoint>>,
    /// The processes `kill` rules killed.
    kills: Mutex<Kills>,
    /// A copy of `crashed.is_some()` read on every operation without a lock.
    is_crashed: std::sync::atomic::AtomicBool,
    /// The entries of each open directory handle, taken when it reads from the start: offsets
    /// into it stay valid while the directory changes, so every entry not removed since is
    /// returned exactly once (POSIX; an index into the live entries skipped some after each
    /// unlink).
    listings: Mutex<HashMap<u64, Arc<Listing>>>,
    /// How many references the kernel holds to each inode (one per entry replied, less what
    /// it forgets): at zero, an unlinked file's resources can go (`State::forgotten`).
    lookups: Mutex<HashMap<Ino, u64>>,
}

/// A directory's entries as one handle reads them: (inode, kind, name).
type Listing = Vec<(Ino, FileType, OsString)>;

/// The process (thread group) a thread belongs to, from /proc; None for no thread (0: a
/// request of the kernel's own) or one gone already.
fn thread_group_of(thread: u32) -> Option<u32> {
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
    fn record(&self, state: &State, ino: Ino, child: Option<&OsStr>, op: impl FnOnce() -> Op) {
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
    fn crash(&self, op: &'static str, path: PathBuf) {
        tracing::warn!(op, path = %path.display(), "crash point reached: the mount stops until a power loss");
        *self.crashed.lock().expect("crash point poisoned") = Some(CrashPoint { op, path });
        self.is_crashed.store(true, Ordering::SeqCst);
    }

    /// SIGKILLs the process that made `op` (its thread `caller`): a `kill` rule fired. False
    /// when there is no such process to kill (a request the kernel made on its own, or faultfs
    /// itself), and then the call goes on.
    fn kill_caller(&self, caller: u32, op: &'static str, path: PathBuf) -> bool {
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

    fn stopped_by_crash(&self) -> bool {
        self.is_crashed.load(Ordering::SeqCst)
    }

    /// mkdir and create: the node made (unless a fault says otherwise) and traced.
    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &self,
        state: &mut State,
        gate: Gate,
        op: &str,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        owner: (u32, u32),
    ) -> FsResult<Ino> {
        let result = fail(gate).and_then(|()| state.create(parent, name, kind, mode, owner, None));
        self.trace(state, op, parent, Some(name), (None, None), &result, false);
        if let Ok(ino) = result {
            let node = if kind == Kind::Dir {
                NodeKind::Dir
            } else {
                NodeKind::File
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
    fn trace<T>(
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

    fn new_handle(&self, epoch: u64) -> FileHandle {
        let sequence = self.next_handle.fetch_add(1, Ordering::Relaxed);
        FileHandle((epoch << EPOCH_SHIFT) | (sequence & ((1 << EPOCH_SHIFT) - 1)))
    }

    /// The kernel took a reference to `ino` (an entry or a created file was replied).
    fn looked_up(&self, ino: Ino) {
        *self
            .lookups
            .lock()
            .expect("lookups poisoned")
            .entry(ino)
            .or_default() += 1;
    }

    /// The kernel dropped `count` references to `ino`; at none, the inode may let go of what
    /// it holds. Inodes from before a power loss are no longer in the state: nothing to do.
    fn forget(&self, ino: Ino, count: u64) {
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

    fn check_handle(state: &State, fh: FileHandle) -> FsResult<()> {
        if fh.0 >> EPOCH_SHIFT != state.epoch {
            // Opened before a power loss: that file is gone as the program knew it.
            return Err(libc::EIO);
        }
        Ok(())
    }

    fn check_capacity(&self, state: &State, growth: u64) -> FsResult<()> {
        let capacity = self.capacity.load(Ordering::Relaxed);
        if capacity != 0 && state.used_bytes() + growth > capacity {
            return Err(libc::ENOSPC);
        }
        Ok(())
    }
}

pub struct FaultFs {
    shared: Arc<Shared>,
    writeback_cache: bool,
}

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
    fn gated(
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
enum Held {
    /// Its delay passed or its rule was removed.
    Released,
    /// The program that made it got SIGKILL meanwhile.
    CallerKilled,
}

/// How often a held call looks whether its caller was killed.
const KILL_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Holds a call for `delay` (None: until its rule is removed), or until the program that made
/// it is SIGKILLed. A process killed in a FUSE call the daemon already received stays in the
/// kernel until the call is answered: the kernel asks the daemon to interrupt it, but fuser
/// answers every interrupt "not implemented", so without this a `kill -9` of a program held by
/// `delay(3600000)` or `pause` would leave it unkillable (and its mount busy) for the hour.
fn hold(shared: &Shared, caller: u32, rule: u64, delay: Option<Duration>) -> Held {
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
fn caller_killed(tid: u32) -> bool {
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

/// The entries of directory `ino` now, "." and ".." first.
fn list(state: &State, ino: Ino, dir: &Inode) -> Listing {
    let parent = dir.links.first().map_or(ino, |(p, _)| *p);
    let mut listing: Listing = vec![
        (ino, FileType::Directory, ".".into()),
        (parent, FileType::Directory, "..".into()),
    ];
    for (name, &child) in &dir.children {
        let kind = match state.inode(child).map(|c| c.kind) {
            Ok(Kind::Dir) => FileType::Directory,
            Ok(Kind::Symlink) => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        listing.push((child, kind, name.clone()));
    }
    listing
}

/// How a file is opened: the kernel keeps the pages it cached across opens (warm reads never
/// reach faultfs, as on a disk file system; a power loss invalidates them), unless a rule on
/// `read` is active, which must see the reads: the open then drops the file's cached pages.
fn keep_cache(shared: &Shared) -> FopenFlags {
    if shared.faults.has_rules_for("read") {
        FopenFlags::empty()
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

fn fail(gate: Gate) -> FsResult<()> {
    match gate {
        Gate::Fail(errno) => Err(errno),
        _ => Ok(()),
    }
}

fn to_errno(errno: i32) -> Errno {
    Errno::from_i32(errno)
}

pub fn attributes(ino: Ino, inode: &Inode) -> FileAttr {
    let (kind, size, nlink) = match inode.kind {
        Kind::File => (FileType::RegularFile, inode.size, inode.links.len() as u32),
        Kind::Dir => (FileType::Directory, 4096, 2),
        Kind::Symlink => (FileType::Symlink, inode.target.as_os_str().len() as u64, 1),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: inode.atime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.ctime,
        kind,
        perm: inode.mode as u16,
        nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn reply_entry(reply: ReplyEntry, shared: &Shared, state: &State, result: FsResult<Ino>) {
    match result.and_then(|ino| Ok((ino, state.inode(ino)?))) {
        Ok((ino, inode)) => {
            shared.looked_up(ino);
            reply.entry(&TTL, &attributes(ino, inode), Generation(state.epoch))
        }
        Err(errno) => reply.error(to_errno(errno)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: FsResult<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(to_errno(errno)),
    }
}

fn time(value: TimeOrNow) -> SystemTime {
    match value {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        if self.writeback_cache
            && config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            tracing::warn!("this kernel has no FUSE writeback cache; writes go through one by one");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.shared.lock();
        let result = state.lookup(parent.0, name);
        reply_entry(reply, &self.shared, &state, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.shared.lock();
        match state.inode(ino.0) {
            Ok(inode) => reply.attr(&TTL, &attributes(ino.0, inode)),
            Err(errno) => reply.error(to_errno(errno)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        let body = move |shared: &Shared, gate: Gate| {
            let mut state = shared.lock();
            let result = fail(gate)
                .and_then(|()| fh.map_or(Ok(()), |fh| Shared::check_handle(&state, fh)))
                .and_then(|()| {
                    if let Some(size) = size {
                        let growth = size.saturating_sub(state.inode(ino)?.size);
                        shared.check_capacity(&state, growth)?;
                        state.truncate(ino, size)?;
                    }
                    state.set_attributes(ino, mode, (uid, gid), (atime.map(time), mtime.map(time)))
                });
            let op = if size.is_some() {
                "truncate"
            } else {
                "setattr"
            };
            shared.trace(&state, op, ino, None, (size, None), &result, false);
            if let (Ok(()), Some(size)) = (&result, size) {
                shared.record(&state, ino, None, || Op::Resize { ino, size });
            }
            if let (Ok(()), Some(mode)) = (&result, mode) {
                shared.record(&state, ino, None, || Op::Chmod {
                    ino,
                    mode: mode & 0o7777,
                });
            }
            match result.and_then(|()| state.inode(ino)) {
                Ok(inode) => reply.attr(&TTL, &attributes(ino, inode)),
                Err(errno) => reply.error(to_errno(errno)),
            }
        };
        if size.is_some() {
            self.gated(req.pid(), "truncate", ino, None, body);
        } else {
            body(&self.shared, Gate::Proceed);
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.shared.lock();
        match state.inode(ino.0) {
            Ok(inode) if inode.kind == Kind::Symlink => {
                reply.data(inode.target.as_os_str().as_encoded_bytes())
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(errno) => reply.error(to_errno(errno)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let owner = (req.uid(), req.gid());
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "mkdir",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let mode = mode & !umask;
                let result = shared.create_node(
                    &mut state,
                    gate,
                    "mkdir",
                    parent.0,
                    &name,
                    Kind::Dir,
                    mode,
                    owner,
                );
                reply_entry(reply, shared, &state, result);
            },
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut state = self.shared.lock();
        let result = state.create(
            parent.0,
            link_name,
            Kind::Symlink,
            0o777,
            (req.uid(), req.gid()),
            Some(target),
        );
        let traced = (None, None);
        self.shared.trace(
            &state,
            "symlink",
            parent.0,
            Some(link_name),
            traced,
            &result,
            false,
        );
        if let Ok(ino) = result {
            self.shared
                .record(&state, parent.0, Some(link_name), || Op::Create {
                    parent: parent.0,
                    name: link_name.to_string_lossy().into_owned(),
                    ino,
                    kind: NodeKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    },
                    mode: 0o777,
                });
        }
        reply_entry(reply, &self.shared, &state, result);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "unlink",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let removed = state.lookup(parent.0, &name).ok();
                let result = fail(gate).and_then(|()| state.unlink(parent.0, &name));
                if let (Ok(()), Some(ino)) = (&result, removed) {
                    shared.record(&state, parent.0, Some(&name), || Op::Remove {
                        parent: parent.0,
                        name: name.to_string_lossy().into_owned(),
                        ino,
                    });
                }
                let traced = (None, None);
                shared.trace(
                    &state,
                    "unlink",
                    parent.0,
                    Some(&name),
                    traced,
                    &result,
                    false,
                );
                reply_empty(reply, result);
            },
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "rmdir",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let removed = state.lookup(parent.0, &name).ok();
                let result = fail(gate).and_then(|()| state.rmdir(parent.0, &name));
                if let (Ok(()), Some(ino)) = (&result, removed) {
                    shared.record(&state, parent.0, Some(&name), || Op::Remove {
                        parent: parent.0,
                        name: name.to_string_lossy().into_owned(),
                        ino,
                    });
                }
                shared.trace(
                    &state,
                    "rmdir",
                    parent.0,
                    Some(&name),
                    (None, None),
                    &result,
                    false,
                );
                reply_empty(reply, result);
            },
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (name, newname): (OsString, OsString) = (name.to_owned(), newname.to_owned());
        self.gated(
            req.pid(),
            "rename",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let moved = state.lookup(parent.0, &name).ok();
                let result = fail(gate).and_then(|()| {
                    state.rename(parent.0, &name, newparent.0, &newname, no_replace)
                });
                if let (Ok(()), Some(ino)) = (&result, moved) {
                    shared.record(&state, parent.0, Some(&name), || Op::Rename {
                        from_parent: parent.0,
                        from_name: name.to_string_lossy().into_owned(),
                        to_parent: newparent.0,
                        to_name: newname.to_string_lossy().into_owned(),
                        ino,
                    });
                }
                let traced = (None, None);
                shared.trace(
                    &state,
                    "rename",
                    parent.0,
                    Some(&name),
                    traced,
                    &result,
                    false,
                );
                reply_empty(reply, result);
            },
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = self.shared.lock();
        let result = state.link(ino.0, newparent.0, newname).map(|()| ino.0);
        if result.is_ok() {
            self.shared
                .record(&state, newparent.0, Some(newname), || Op::Link {
                    parent: newparent.0,
                    name: newname.to_string_lossy().into_owned(),
                    ino: ino.0,
                });
        }
        let traced = (None, None);
        self.shared.trace(
            &state,
            "link",
            newparent.0,
            Some(newname),
            traced,
            &result,
            false,
        );
        reply_entry(reply, &self.shared, &state, result);
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.gated(req.pid(), "open", ino.0, None, move |shared, gate| {
            let state = shared.lock();
            match fail(gate).and_then(|()| state.inode(ino.0).map(drop)) {
                Ok(()) => reply.opened(shared.new_handle(state.epoch), keep_cache(shared)),
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let owner = (req.uid(), req.gid());
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "create",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let mode = mode & !umask;
                let result = shared.create_node(
                    &mut state,
                    gate,
                    "create",
                    parent.0,
                    &name,
                    Kind::File,
                    mode,
                    owner,
                );
                let result = result.and_then(|ino| Ok((ino, state.inode(ino)?)));
                match result {
                    Ok((ino, inode)) => {
                        shared.looked_up(ino);
                        reply.created(
                            &TTL,
                            &attributes(ino, inode),
                            Generation(state.epoch),
                            shared.new_handle(state.epoch),
                            keep_cache(shared),
                        )
                    }
                    Err(errno) => reply.error(to_errno(errno)),
                }
            },
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.gated(req.pid(), "read", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| state.read(ino.0, offset, size));
            let length = result.as_ref().ok().map(|data| data.len() as u64);
            shared.trace(
                &state,
                "read",
                ino.0,
                None,
                (Some(offset), length),
                &result,
                false,
            );
            drop(state);
            match result {
                Ok(mut data) => {
                    match gate {
                        Gate::Corrupt(Corruption::Zero) => data.fill(0),
                        Gate::Corrupt(Corruption::Flip) if !data.is_empty() => {
                            let middle = data.len() / 2;
                            data[middle] ^= 0x01;
                        }
                        _ => {}
                    }
                    reply.data(&data);
                }
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut data = data.to_vec();
        self.gated(req.pid(), "write", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            if let Gate::Short(bytes) = gate {
                data.truncate(bytes as usize);
            }
            let result = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| {
                    let end = offset + data.len() as u64;
                    let growth = end.saturating_sub(state.inode(ino.0)?.size);
                    shared.check_capacity(&state, growth)?;
                    let recorded = shared.journal.as_ref().map(|_| data.clone());
                    let written = state.write(ino.0, offset, data)?;
                    if let Some(data) = recorded {
                        shared.record(&state, ino.0, None, || Op::Write {
                            ino: ino.0,
                            offset,
                            data,
                        });
                    }
                    Ok(written)
                });
            let length = result.as_ref().ok().map(|&n| n as u64);
            shared.trace(
                &state,
                "write",
                ino.0,
                None,
                (Some(offset), length),
                &result,
                false,
            );
            match result {
                Ok(written) => reply.written(written as u32),
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.gated(req.pid(), "flush", ino.0, None, move |shared, gate| {
            let state = shared.lock();
            reply_empty(
                reply,
                fail(gate).and_then(|()| Shared::check_handle(&state, fh)),
            );
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = if datasync { "fdatasync" } else { "fsync" };
        self.gated(req.pid(), op, ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = Shared::check_handle(&state, fh).and_then(|()| match gate {
                Gate::Fail(errno) => Err(errno),
                Gate::Lose => Ok(()),
                Gate::Fsyncgate => state.mark_clean(ino.0).and(Err(libc::EIO)),
                _ => state.fsync(ino.0),
            });
            let durable = !matches!(gate, Gate::Lose);
            shared.trace(&state, op, ino.0, None, (None, None), &result, durable);
            if result.is_ok() && durable {
                shared.record(&state, ino.0, None, || Op::Fsync {
                    ino: ino.0,
                    data_only: datasync,
                });
            }
            reply_empty(reply, result);
        });
    }

    /// A regular file is always ready, as on a disk file system (answered here so fuser does
    /// not log every poll as unimplemented).
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        let ready = fuser::PollEvents::POLLIN
            | fuser::PollEvents::POLLOUT
            | fuser::PollEvents::POLLRDNORM
            | fuser::PollEvents::POLLWRNORM;
        reply.poll(events & ready);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let state = self.shared.lock();
        match state.inode(ino.0) {
            Ok(inode) if inode.kind == Kind::Dir => {
                reply.opened(self.shared.new_handle(state.epoch), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(errno) => reply.error(to_errno(errno)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.gated(req.pid(), "readdir", ino.0, None, move |shared, gate| {
            let state = shared.lock();
            let entries = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| state.inode(ino.0));
            let dir = match entries {
                Ok(dir) => dir,
                Err(errno) => return reply.error(to_errno(errno)),
            };
            let mut listings = shared.listings.lock().expect("listings poisoned");
            let listing = match listings.get(&fh.0) {
                Some(listing) if offset != 0 => listing.clone(),
                _ => {
                    let listing = Arc::new(list(&state, ino.0, dir));
                    listings.insert(fh.0, listing.clone());
                    listing
                }
            };
            drop(listings);
            for (index, (child, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*child), index as u64 + 1, *kind, name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared
            .listings
            .lock()
            .expect("listings poisoned")
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.gated(req.pid(), "fsync", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = Shared::check_handle(&state, fh).and_then(|()| match gate {
                Gate::Fail(errno) => Err(errno),
                Gate::Lose | Gate::Fsyncgate => Ok(()),
                _ => state.fsync(ino.0),
            });
            let durable = matches!(gate, Gate::Proceed);
            if result.is_ok() && durable {
                shared.record(&state, ino.0, None, || Op::FsyncDir { ino: ino.0 });
            }
            shared.trace(
                &state,
                "fsyncdir",
                ino.0,
                None,
                (None, None),
                &result,
                durable,
            );
            reply_empty(reply, result);
        });
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.gated(req.pid(), "statfs", ino.0, None, move |shared, gate| {
            if let Gate::Fail(errno) = gate {
                return reply.error(to_errno(errno));
            }
            let state = shared.lock();
            let path = PathBuf::from(state.statfs_path());
            let used = state.used_bytes();
            drop(state);
            match statvfs(&path) {
                Ok(mut stat) => {
                    let capacity = shared.capacity.load(Ordering::Relaxed);
                    if capacity != 0 {
                        let block = stat.f_frsize.max(1);
                        stat.f_blocks = capacity / block;
                        stat.f_bfree = capacity.saturating_sub(used) / block;
                        stat.f_bavail = stat.f_bfree;
                    }
                    reply.statfs(
                        stat.f_blocks,
                        stat.f_bfree,
                        stat.f_bavail,
                        stat.f_files,
                        stat.f_ffree,
                        stat.f_bsize as u32,
                        stat.f_namemax as u32,
                        stat.f_frsize as u32,
                    )
                }
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Self::no_xattrs());
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Self::no_xattrs());
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Self::no_xattrs());
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Self::no_xattrs());
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.gated(req.pid(), "fallocate", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| {
                    let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
                    let size = state.inode(ino.0)?.size;
                    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                    if mode == punch {
                        // Reads as zeros afterwards, like ext4's hole: an unsynced write of
                        // zeros here, a page at a time.
                        let mut at = offset;
                        while at < end.min(size) {
                            let chunk = (end.min(size) - at).min(PUNCH_CHUNK);
                            state.write(ino.0, at, vec![0; chunk as usize])?;
                            shared.record(&state, ino.0, None, || Op::Write {
                                ino: ino.0,
                                offset: at,
                                data: vec![0; chunk as usize],
                            });
                            at += chunk;
                        }
                        return Ok(());
                    }
                    if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                        return Err(libc::EOPNOTSUPP);
                    }
                    if mode & libc::FALLOC_FL_KEEP_SIZE != 0 || end <= size {
                        return Ok(());
                    }
                    shared.check_capacity(&state, end - size)?;
                    state.truncate(ino.0, end)?;
                    shared.record(&state, ino.0, None, || Op::Resize {
                        ino: ino.0,
                        size: end,
                    });
                    Ok(())
                });
            let range = (Some(offset), Some(length));
            shared.trace(&state, "fallocate", ino.0, None, range, &result, false);
            reply_empty(reply, result);
        });
    }
}

// Extended attributes are not modelled. ENOSYS (answered here without fuser's logged default)
// makes the kernel stop asking: otherwise it asks for security.capability before every write.
impl FaultFs {
    fn no_xattrs() -> Errno {
        Errno::ENOSYS
    }
}

/// statvfs of a path, as the libc struct (u64 fields on 64-bit Linux).
fn statvfs(path: &Path) -> FsResult<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: path is a valid C string and stat points to writable memory for one statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    Ok(unsafe { stat.assume_init() })
}
