//! A full disk, for real: the log on a tiny tmpfs (root, as CI runs). A failed write stops the
//! node from accepting writes; once space returns, a restart recovers what was acknowledged.
use std::{
    ffi::CString,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

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

/// A target-db process this test started, killed when dropped (also on panic).
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn write(addr: &str, seq: u64, value: &str) -> Option<serde_json::Value> {
    let body =
        serde_json::json!({"client": 1, "seq": seq, "op": "put", "key": "k", "value": value});
    reqwest::Client::new()
        .post(format!("http://{addr}/kv/write"))
        .timeout(Duration::from_secs(5))
        .json(&body)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test]
async fn a_node_stopped_by_a_failed_write_says_new_requests_did_not_apply() {
    let disk = SmallDisk::mount("512k");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _node = Node(
        Command::new(env!("CARGO_BIN_EXE_target-db"))
            .args(["serve", "--id", "1", "--listen", &addr, "--data-dir"])
            .arg(disk.dir.path().join("db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let init = serde_json::json!({"1": addr});
    while reqwest::Client::new()
        .post(format!("http://{addr}/init"))
        .json(&init)
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "target-db did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Fill the disk: the write that fails stops the Raft core; its own outcome is unknown.
    let big = "v".repeat(16 * 1024);
    let mut seq = 0;
    loop {
        seq += 1;
        assert!(seq < 1000, "the small disk never filled up");
        assert!(Instant::now() < deadline, "no write was refused");
        match write(&addr, seq, &big).await {
            Some(answer) if answer.get("response").is_some() => {}
            // Not leader yet, or the disk just filled.
            Some(answer)
                if answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("stopped")) =>
            {
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // Every request from now on is refused definitely, so a client may record it as failed.
    let answer = write(&addr, seq + 1, "small").await.unwrap();
    assert_eq!(answer["outcome"], "not-applied", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("restart it"),
        "{answer}"
    );
    let read: serde_json::Value = reqwest::get(format!("http://{addr}/kv/get?key=k"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["outcome"], "not-applied", "{read}");
}
