//! Mounting: checks that name the problem and the fix, an exclusive lock on the backing
//! directory, the FUSE session, and a clean unmount on Ctrl-C/SIGTERM.
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use fuser::{Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use rustix::mount::UnmountFlags;
use thiserror::Error;

use crate::{
    control::ControlServer,
    faults::Faults,
    fs::{FaultFs, Shared},
    journal::Journal,
    state::{MetadataMode, State},
    trace::Tracer,
};

#[derive(Debug, Error)]
pub enum MountError {
    #[error("mounting needs root (FUSE mount and allow_other): run it with sudo")]
    NotRoot,
    #[error("backing directory {0} does not exist: create it first (mkdir -p {0})")]
    NoBacking(String),
    #[error("{0} is not a directory: the backing and the mount point must be directories")]
    NotADirectory(String),
    #[error("mount point {0} does not exist: create it first (mkdir -p {0})")]
    NoMountpoint(String),
    #[error("{0} is already a mount point ({1}): unmount it first (umount {0})")]
    AlreadyMounted(String, String),
    #[error(
        "{0} and {1} overlap: the mount point must not be inside the backing directory, nor the reverse"
    )]
    Overlap(String, String),
    #[error("{0} is already served by another faultfs: a backing directory can be mounted once")]
    BackingInUse(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

#[derive(Clone, Debug)]
pub struct MountOptions {
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    pub seed: u64,
    pub metadata: MetadataMode,
    pub capacity: u64,
    pub durable_backing: bool,
    pub faults: Vec<String>,
    pub threads: usize,
    pub writeback_cache: bool,
    pub trace: Option<PathBuf>,
}

/// Everything that can be checked before mounting, so a bad command leaves nothing behind.
pub fn validate(options: &MountOptions) -> Result<(PathBuf, PathBuf), MountError> {
    if !rustix::process::geteuid().is_root() {
        return Err(MountError::NotRoot);
    }
    let show = |p: &Path| p.display().to_string();
    let backing = options
        .backing
        .canonicalize()
        .map_err(|_| MountError::NoBacking(show(&options.backing)))?;
    let mountpoint = options
        .mountpoint
        .canonicalize()
        .map_err(|_| MountError::NoMountpoint(show(&options.mountpoint)))?;
    for dir in [&backing, &mountpoint] {
        if !dir.is_dir() {
            return Err(MountError::NotADirectory(show(dir)));
        }
    }
    if backing.starts_with(&mountpoint) || mountpoint.starts_with(&backing) {
        return Err(MountError::Overlap(show(&backing), show(&mountpoint)));
    }
    if let Some(fstype) = mounted_at(&mountpoint) {
        return Err(MountError::AlreadyMounted(show(&mountpoint), fstype));
    }
    Ok((backing, mountpoint))
}

/// The file system type mounted exactly at `path`, if any (from /proc/self/mountinfo).
pub fn mounted_at(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|f| *f == "-")?;
        (unescape(fields.get(4)?) == path.to_string_lossy())
            .then(|| fields.get(separator + 1).map(|s| s.to_string()))
            .flatten()
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Holds the backing directory for one faultfs at a time (flock on the directory itself, so
/// nothing is written into it).
fn lock_backing(backing: &Path) -> Result<File, MountError> {
    let dir = File::open(backing).map_err(|e| MountError::Io(backing.display().to_string(), e))?;
    if rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(MountError::BackingInUse(backing.display().to_string()));
    }
    Ok(dir)
}

/// A database with thousands of files open keeps as many open in faultfs (its live copies): the
/// soft limit (often 1,024) goes up to the hard one, so faultfs runs out after the program does.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "could not raise the open-file limit");
        }
    }
}

/// What a live mount holds on to: the backing directory's lock and the volatile store.
struct Held {
    _lock: File,
    _store: tempfile::TempDir,
}

/// The file system's shared state for `options`, after the checks.
fn prepare(
    options: &MountOptions,
    journal: Option<Arc<Journal>>,
) -> anyhow::Result<(PathBuf, PathBuf, Arc<Shared>, Held)> {
    let (backing, mountpoint) = validate(options)?;
    let lock = lock_backing(&backing)?;
    raise_open_file_limit();
    let store = crate::store::create()?;
    let mut state = State::load(&backing, store.path(), options.metadata)?;
    state.durable_backing = options.durable_backing;
    let faults = Faults::new(options.seed);
    for rule in &options.faults {
        faults.add(rule)?;
    }
    let tracer = options.trace.as_deref().map(Tracer::create).transpose()?;
    let shared =
        Arc::new(Shared::new(state, faults, options.capacity, tracer).with_journal(journal));
    let held = Held {
        _lock: lock,
        _store: store,
    };
    Ok((backing, mountpoint, shared, held))
}

fn session_config(options: &MountOptions, backing: &Path) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("faultfs:{}", backing.display())),
        MountOption::Subtype("faultfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(options.threads.max(2));
    config
}

/// A mount served by threads of this process, for `faultfs explore`; dropping it unmounts.
pub struct Background {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    _held: Held,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(error) = session.umount_and_join()
        {
            tracing::warn!(%error, mountpoint = %self.mountpoint.display(), "unmount failed; detaching");
            let _ = rustix::mount::unmount(&self.mountpoint, UnmountFlags::DETACH);
        }
    }
}

/// Mounts in the background, recording every operation into `journal`.
pub fn serve_in_background(
    options: &MountOptions,
    journal: Arc<Journal>,
) -> anyhow::Result<Background> {
    let (backing, mountpoint, shared, held) = prepare(options, Some(journal))?;
    let config = session_config(options, &backing);
    let session = fuser::Session::new(
        FaultFs::new(shared, options.writeback_cache),
        &mountpoint,
        &config,
    )?;
    Ok(Background {
        session: Some(session.spawn()?),
        mountpoint,
        _held: held,
    })
}

/// Mounts and serves until unmounted or signalled. `on_mounted` runs once the mount is live.
pub fn serve(options: MountOptions, on_mounted: impl FnOnce()) -> anyhow::Result<()> {
    block_termination_signals();
    let (backing, mountpoint, shared, _held) = prepare(&options, None)?;
    let notifier = Arc::new(OnceLock::new());
    let _control =
        ControlServer::start(&mountpoint, shared.clone(), notifier.clone(), options.seed)?;

    let config = session_config(&options, &backing);
    let mut session = fuser::Session::new(
        FaultFs::new(shared, options.writeback_cache),
        &mountpoint,
        &config,
    )?;
    let _ = notifier.set(session.notifier());
    let mut unmounter = session.unmount_callable();
    let detach_at = mountpoint.clone();
    std::thread::Builder::new()
        .name("faultfs-signals".into())
        .spawn(move || {
            loop {
                let signal = wait_for_termination_signal();
                tracing::info!(signal, "unmounting");
                match unmount_once_free(&mut unmounter, &detach_at) {
                    Ok(()) => return,
                    // Not unmounted: a later signal tries again.
                    Err(error) => tracing::error!(%error, "unmount failed"),
                }
            }
        })?;
    tracing::info!(backing = %backing.display(), mountpoint = %mountpoint.display(), seed = options.seed, "mounted");
    on_mounted();
    session.run()?;
    tracing::info!("unmounted; what was not durable is gone, as after a crash");
    Ok(())
}

/// How long a busy mount is retried before it is detached: a signal sent to a whole process
/// group (a closed terminal, a supervisor stopping a job) stops the program using the mount
/// at the same moment, and its files close within milliseconds.
const BUSY_RETRIES: u32 = 40;
const BUSY_RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Unmounts; a mount still busy after the retries is detached (lazily unmounted): it leaves the
/// file tree at once, and the session ends when the last file open in it is closed. Giving up
/// instead would leave the mount behind for good, since the signal that asked is spent.
fn unmount_once_free(
    unmounter: &mut fuser::SessionUnmounter,
    mountpoint: &Path,
) -> std::io::Result<()> {
    // fuser's unmounter tries once and forgets the mount even when that fails, so the retries
    // call umount2 themselves.
    match unmounter.unmount() {
        Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {}
        other => return other,
    }
    let umount2 = |flags| rustix::mount::unmount(mountpoint, flags).map_err(std::io::Error::from);
    for _ in 0..BUSY_RETRIES {
        std::thread::sleep(BUSY_RETRY_EVERY);
        match umount2(UnmountFlags::empty()) {
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {}
            other => return other,
        }
    }
    tracing::warn!(
        mountpoint = %mountpoint.display(),
        "the mount is busy (files are open in it): detached from the file tree; faultfs exits once they are closed"
    );
    umount2(UnmountFlags::DETACH)
}

pub(crate) fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

/// Blocked in every thread (threads inherit the mask), so only the signal thread receives them.
pub(crate) fn block_termination_signals() {
    // Blocking a valid set in this thread cannot fail.
    let _ = termination_signals().thread_block();
}

pub(crate) fn wait_for_termination_signal() -> i32 {
    termination_signals()
        .wait()
        .map_or(libc::SIGTERM, |signal| signal as i32)
}
