//! A full disk, for real: the log on a tiny tmpfs (root, as CI runs). A failed write stops the
//! node from accepting writes; once space returns, a restart recovers what was acknowledged.
use std::{ffi::CString, path::Path};

use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader,
    storage::{RaftLogStorage, RaftLogStorageExt},
};
use target_db::{
    log_store::{LogOptions, LogStore},
    types::{Op, Request, TypeConfig},
};

/// A tmpfs of `size` mounted for the test, unmounted when dropped (also on panic).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        mount(dir.path(), &format!("size={size}"), 0);
        SmallDisk { dir }
    }

    fn grow(&self, size: &str) {
        mount(self.dir.path(), &format!("size={size}"), libc::MS_REMOUNT);
    }
}

fn mount(target: &Path, options: &str, flags: libc::c_ulong) {
    let source = CString::new("tmpfs").unwrap();
    let target = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
    let options = CString::new(options).unwrap();
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount tmpfs (needs root): {}",
        std::io::Error::last_os_error()
    );
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: unmounting the tmpfs this guard mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            client: 1,
            seq: index,
            op: Op::Put {
                key: format!("key-{index}"),
                value: "v".repeat(1000),
            },
        }),
    }
}

#[tokio::test]
async fn a_full_disk_stops_writes_and_a_restart_with_space_recovers() {
    let disk = SmallDisk::mount("256k");
    let wal = disk.dir.path().join("wal");
    let mut acknowledged = 0;
    {
        let mut log = LogStore::open(&wal, LogOptions::default()).unwrap();
        let error = loop {
            match log.blocking_append(vec![entry(acknowledged + 1)]).await {
                Ok(()) => acknowledged += 1,
                Err(error) => break error,
            }
            assert!(acknowledged < 10_000, "the small disk never filled up");
        };
        assert!(
            error.to_string().contains("No space left on device"),
            "{error}"
        );
        assert!(acknowledged > 50, "{acknowledged} entries fit");
        // The log may be behind what it said; it accepts nothing more until restarted.
        let refused = log
            .blocking_append(vec![entry(acknowledged + 1)])
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("restart the node to recover"),
            "{refused}"
        );
    }

    disk.grow("4m");
    let mut log = LogStore::open(&wal, LogOptions::default()).unwrap();
    let entries = log.try_get_log_entries(0..u64::MAX).await.unwrap();
    assert_eq!(
        entries.len() as u64,
        acknowledged,
        "every acknowledged entry, nothing half-written"
    );
    log.blocking_append(vec![entry(acknowledged + 1)])
        .await
        .unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(acknowledged + 1));
}

#[tokio::test]
async fn the_unsafe_switch_keeps_acknowledging_after_a_failed_write() {
    let disk = SmallDisk::mount("128k");
    let options = LogOptions {
        ignore_fsync_error: true,
        ..LogOptions::default()
    };
    let mut log = LogStore::open(&disk.dir.path().join("wal"), options).unwrap();
    // Far more than fits: every append is acknowledged anyway, the bug the harness must catch.
    for index in 1..=300 {
        log.blocking_append(vec![entry(index)]).await.unwrap();
    }
}
