//! A real faultfs mount for a test: temporary backing and mount directories, the real binary in
//! the foreground, and a guard that unmounts and reaps it, also when the test panics.
#![allow(dead_code)]

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
};

use faultfs::control::{self, Request};
use faultfs::power_loss::PowerLossMode;
use process_guard::Spawned;
use serde_json::Value;

pub const FAULTFS: &str = env!("CARGO_BIN_EXE_faultfs");

pub struct Mounted {
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    daemon: Option<Spawned>,
    _dirs: tempfile::TempDir,
}

impl Mounted {
    pub fn new(extra: &[&str]) -> Mounted {
        Self::with_backing(extra, |_| {})
    }

    /// Mounts with faultfs started through `launcher` (a command that runs the rest of its
    /// arguments, such as `prlimit --nofile=256:`).
    pub fn launched_by(launcher: &[&str]) -> Mounted {
        Self::start(launcher, &[], |_| {})
    }

    /// Mounts after `prepare` has filled the backing directory.
    pub fn with_backing(extra: &[&str], prepare: impl FnOnce(&Path)) -> Mounted {
        Self::start(&[], extra, prepare)
    }

    fn start(launcher: &[&str], extra: &[&str], prepare: impl FnOnce(&Path)) -> Mounted {
        let dirs = tempfile::tempdir().unwrap();
        let backing = dirs.path().join("backing");
        let mountpoint = dirs.path().join("mnt");
        fs::create_dir(&backing).unwrap();
        fs::create_dir(&mountpoint).unwrap();
        prepare(&backing);
        let mut command = match launcher {
            [] => Command::new(FAULTFS),
            [program, arguments @ ..] => {
                let mut command = Command::new(program);
                command.args(arguments).arg(FAULTFS);
                command
            }
        };
        let mut daemon = Spawned::start(
            "faultfs",
            command
                .arg("mount")
                .arg(&backing)
                .arg(&mountpoint)
                .args(extra)
                .env("RUST_LOG", "warn,fuser::session=error"),
        )
        .unwrap();
        assert_eq!(daemon.read_line().unwrap(), "mounted");
        Mounted {
            backing,
            mountpoint,
            daemon: Some(daemon),
            _dirs: dirs,
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.mountpoint.join(relative)
    }

    pub fn ctl(&self, request: Request) -> Value {
        control::call(&self.mountpoint, &request).unwrap()
    }

    pub fn power_loss(&self, mode: PowerLossMode) -> Value {
        self.ctl(Request::PowerLoss { mode })
    }

    pub fn add_fault(&self, rule: &str) -> u64 {
        self.ctl(Request::FaultAdd { rule: rule.into() })["id"]
            .as_u64()
            .unwrap()
    }

    /// Sends `signal` to the faultfs process.
    pub fn signal(&self, signal: i32) {
        let pid = self.daemon.as_ref().expect("faultfs running").pid();
        // Our own child, not yet reaped, so the pid is not recycled.
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is never 0");
        let signal = rustix::process::Signal::from_named_raw(signal).expect("a named signal");
        rustix::process::kill_process(pid, signal).expect("signalling faultfs");
    }

    /// The faultfs process's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("faultfs started").pid()
    }

    /// How many file descriptors the faultfs process holds open.
    pub fn open_descriptors(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// faultfs's exit status once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.daemon
            .as_mut()
            .expect("faultfs started")
            .try_wait()
            .unwrap()
    }

    /// Whether the mount point still has a mount on it.
    pub fn is_mounted(&self) -> bool {
        faultfs::mount::mounted_at(&self.mountpoint.canonicalize().unwrap()).is_some()
    }

    /// Unmounts and waits for faultfs to exit cleanly; the returned directory holds the backing
    /// directory for inspection.
    pub fn unmount(mut self) -> tempfile::TempDir {
        let status = Command::new(FAULTFS)
            .arg("umount")
            .arg(&self.mountpoint)
            .status()
            .unwrap();
        assert!(status.success(), "faultfs umount failed");
        self.daemon.take().unwrap().finish().unwrap();
        assert!(faultfs::mount::mounted_at(&self.mountpoint.canonicalize().unwrap()).is_none());
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self._dirs, placeholder)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            // A lazy unmount cannot fail on a busy mount; then the guard reaps faultfs.
            let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

pub fn write_file(path: &Path, data: &[u8]) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(data).unwrap();
    file
}

pub fn fsync_path(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(data, offset).unwrap();
}

/// Polls `condition` every 5 ms until it holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The newest PostgreSQL installed (`/usr/lib/postgresql/N/bin`).
pub fn postgres_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian package postgresql, `cargo xtask setup`)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version directory").1
}
