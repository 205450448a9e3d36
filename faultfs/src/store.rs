//! Where a mount keeps its volatile file content: a directory in /dev/shm (memory), named after
//! the faultfs process that owns it (pid and start time), so that the store of a faultfs that
//! died without cleaning up (kill -9, a crash) is found and removed by the next mount instead
//! of holding memory that no process owns.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

const PREFIX: &str = "faultfs-store-";

/// A new store for this process, after removing the stores of faultfs processes that are gone.
pub fn create() -> io::Result<tempfile::TempDir> {
    let base = base();
    reclaim_orphans(&base);
    let me = std::process::id();
    let started = start_time(me).unwrap_or(0);
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{me}-{started}-"))
        .tempdir_in(base)
}

fn base() -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        PathBuf::from("/var/tmp")
    }
}

/// Removes every store whose owner (pid and start time in its name) is no longer running.
/// Stores named otherwise (by an older faultfs) are left alone: their owner cannot be told.
fn reclaim_orphans(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, started)) = owner(&name) else {
            continue;
        };
        if start_time(pid) != Some(started) {
            tracing::warn!(store = %entry.path().display(), pid, "removing the store of a faultfs that is gone");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The owner a store's name records: `faultfs-store-PID-STARTTIME-RANDOM`.
fn owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let started = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, started))
}

/// When process `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the pid,
/// it names one process, even after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_name_records_its_owner() {
        assert_eq!(owner("faultfs-store-123-456-AbC9x"), Some((123, 456)));
        assert_eq!(owner("faultfs-store-AbC9x"), None);
        assert_eq!(owner("faultfs-store-123-456"), None);
    }

    #[test]
    fn this_process_has_a_start_time_that_names_it() {
        let mine = start_time(std::process::id()).expect("own start time");
        assert!(mine > 0);
        assert_eq!(start_time(std::process::id()), Some(mine));
    }
}
