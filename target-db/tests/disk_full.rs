//! A full disk, for real: the log on a tiny tmpfs (root, as CI runs). Appends that find the disk
//! full wait for space, the node refuses new writes and serves reads meanwhile, and everything
//! goes on, nothing lost or doubled, once space returns.
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

/// Entry `index`; openraft's log starts at 0, and recovery refuses one that starts later.
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
async fn an_append_that_finds_the_disk_full_completes_once_space_returns() {
    // Room for the log's 256 KiB space reserve and a few hundred entries.
    let disk = SmallDisk::mount("768k");
    let wal = disk.dir.path().join("wal");
    let mut log = LogStore::open(&wal, LogOptions::default()).unwrap();
    let stats = log.wal_stats();
    let mut acknowledged = 0;
    let mut full_at = None;
    // An append that must wait for space is pending on its first poll, and one that can be
    // written is done by then: no timing involved. The first append that finds the disk full
    // is written from the space reserve; the reserve takes some more, then appends wait.
    let mut waiting = loop {
        let mut appender = log.clone();
        let mut append =
            Box::pin(async move { appender.blocking_append(vec![entry(acknowledged)]).await });
        tokio::select! {
            biased;
            done = &mut append => {
                done.unwrap();
                acknowledged += 1;
                if stats.disk_full() {
                    full_at.get_or_insert(acknowledged);
                }
            }
            () = std::future::ready(()) => break append,
        }
        assert!(acknowledged < 10_000, "the small disk never filled up");
    };
    let full_at = full_at.expect("the disk-full flag was set before appends had to wait");
    assert!(
        full_at > 50,
        "only {full_at} entries fit before the disk was full"
    );
    assert!(
        acknowledged - full_at + 1 >= 10,
        "the 256 KiB reserve took only {} 1 KiB entries",
        acknowledged - full_at + 1
    );

    // Meanwhile the log still reads, the waiting entry included (openraft may replicate it).
    let entries = log.try_get_log_entries(0..u64::MAX).await.unwrap();
    assert_eq!(entries.len() as u64, acknowledged + 1);
    // A vote may go ahead of the waiting entries (it stands alone), written if it still fits
    // and waiting otherwise; either way it must be on disk once save_vote returns.
    let mut voter = log.clone();
    let vote = openraft::Vote::new(2, 1);
    let saving_vote = tokio::spawn(async move { voter.save_vote(&vote).await });

    disk.grow("4m");
    (&mut waiting).await.unwrap();
    saving_vote.await.unwrap().unwrap();
    assert!(!stats.disk_full(), "the flag clears once the log caught up");
    log.blocking_append(vec![entry(acknowledged + 1)])
        .await
        .unwrap();
    drop(log);

    let mut reopened = LogStore::open(&wal, LogOptions::default()).unwrap();
    let entries = reopened.try_get_log_entries(0..u64::MAX).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(
        indexes,
        (0..=acknowledged + 1).collect::<Vec<_>>(),
        "every entry once, in order, nothing half-written"
    );
    assert_eq!(reopened.read_vote().await.unwrap(), Some(vote));
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

/// The JSON answer to a request, or None if there was none within `timeout`.
async fn answer(request: reqwest::RequestBuilder, timeout: Duration) -> Option<serde_json::Value> {
    request
        .timeout(timeout)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn write(addr: &str, seq: u64, value: &str) -> Option<serde_json::Value> {
    let body =
        serde_json::json!({"client": 1, "seq": seq, "op": "put", "key": "k", "value": value});
    let request = reqwest::Client::new()
        .post(format!("http://{addr}/kv/write"))
        .json(&body);
    answer(request, Duration::from_secs(5)).await
}

async fn read(addr: &str, key: &str) -> serde_json::Value {
    reqwest::get(format!("http://{addr}/kv/get?key={key}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Starts one target-db node per disk (data directory on it), bootstraps them as one cluster,
/// and returns the nodes (killed when dropped) and their addresses.
async fn start_cluster(disks: &[SmallDisk]) -> (Vec<Node>, Vec<String>) {
    let addrs: Vec<String> = disks
        .iter()
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("127.0.0.1:{port}")
        })
        .collect();
    let nodes = disks
        .iter()
        .zip(&addrs)
        .enumerate()
        .map(|(i, (disk, addr))| {
            Node(
                Command::new(env!("CARGO_BIN_EXE_target-db"))
                    .args(["serve", "--id", &(i + 1).to_string(), "--listen", addr])
                    .arg("--data-dir")
                    .arg(disk.dir.path().join("db"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let peers: serde_json::Map<String, serde_json::Value> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| ((i + 1).to_string(), serde_json::json!(addr)))
        .collect();
    while reqwest::Client::new()
        .post(format!("http://{}/init", addrs[0]))
        .json(&peers)
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "target-db did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (nodes, addrs)
}

#[tokio::test]
async fn a_node_with_a_full_disk_refuses_writes_serves_reads_and_recovers_when_space_returns() {
    let disks = [SmallDisk::mount("1m")];
    let (_node, addrs) = start_cluster(&disks).await;
    let (disk, addr) = (&disks[0], addrs[0].clone());
    let deadline = Instant::now() + Duration::from_secs(60);

    // Fill the disk. The write that finds it full waits for space (its client times out: its
    // outcome is unknown); every later one is refused at once.
    let big = "v".repeat(16 * 1024);
    let mut seq = 0;
    let mut last_acknowledged = None;
    let refusal = loop {
        seq += 1;
        assert!(seq < 1000, "the small disk never filled up");
        assert!(Instant::now() < deadline, "no write was refused");
        let value = format!("{seq}-{big}");
        match write(&addr, seq, &value).await {
            Some(answer) if answer.get("response").is_some() => last_acknowledged = Some(value),
            Some(answer)
                if answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("disk is full")) =>
            {
                break answer;
            }
            // Not leader yet, or the write that found the disk full.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(refusal["outcome"], "not-applied", "{refusal}");
    let last_acknowledged = last_acknowledged.expect("some writes fit");

    let status: serde_json::Value = reqwest::get(format!("http://{addr}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["disk_full"], true, "{status}");
    // Reads go on: the last acknowledged value, or the waiting write's if it got in after all.
    let value = read(&addr, "k").await["value"].as_str().unwrap().to_owned();
    let seq_read: u64 = value.split('-').next().unwrap().parse().unwrap();
    assert!(
        value == last_acknowledged || seq_read > seq - 3,
        "read {} after acknowledged {}",
        &value[..10],
        &last_acknowledged[..10]
    );

    // Space returns: the node takes writes again, with no restart.
    disk.grow("8m");
    let answer = loop {
        assert!(
            Instant::now() < deadline,
            "writes never resumed after space returned"
        );
        seq += 1;
        match write(&addr, seq, "after").await {
            Some(answer) if answer.get("response").is_some() => break answer,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(answer["index"].as_u64().is_some(), "{answer}");
    assert_eq!(read(&addr, "k").await["value"], "after");
}

async fn status_of(addr: &str) -> Option<serde_json::Value> {
    let request = reqwest::Client::new().get(format!("http://{addr}/status"));
    answer(request, Duration::from_secs(2)).await
}

/// Fills a file system from outside, as another program would; removing the file frees it.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0xa5u8; 4096];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(error) => panic!("filling {}: {error}", dir.display()),
        }
    }
    path
}

#[tokio::test]
async fn a_leader_whose_disk_fills_hands_leadership_over_and_catches_up_when_space_returns() {
    let disks: Vec<SmallDisk> = (0..3).map(|_| SmallDisk::mount("4m")).collect();
    let (_nodes, addrs) = start_cluster(&disks).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader_of = |addr: String| async move { status_of(&addr).await?["leader"].as_u64() };
    let leader = loop {
        assert!(Instant::now() < deadline, "no leader");
        if let Some(leader) = leader_of(addrs[0].clone()).await {
            break leader as usize;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut seq = 0;
    let mut put = |value: &'static str| {
        seq += 1;
        let seq = seq;
        let addrs = addrs.clone();
        async move {
            for addr in &addrs {
                if let Some(answer) = write(addr, seq, value).await
                    && answer.get("response").is_some()
                {
                    return true;
                }
            }
            false
        }
    };
    assert!(put("before").await);

    // Another program fills the leader's disk; its next append finds no room.
    let filler = fill(disks[leader - 1].dir.path());
    let moved = loop {
        assert!(
            Instant::now() < deadline,
            "leadership never left the full disk"
        );
        put("while full").await;
        let now = leader_of(addrs[0].clone()).await;
        if let Some(now) = now.filter(|&l| l as usize != leader) {
            break now as usize;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while !put("on the new leader").await {
        assert!(Instant::now() < deadline, "the new leader took no write");
    }
    let old = &addrs[leader - 1];
    assert_eq!(status_of(old).await.unwrap()["disk_full"], true);

    // Space returns: the old leader writes what waited and catches up, with no restart.
    std::fs::remove_file(filler).unwrap();
    assert!(put("after").await);
    loop {
        assert!(Instant::now() < deadline, "the old leader never caught up");
        let reference = status_of(&addrs[moved - 1]).await.unwrap();
        if let Some(status) = status_of(old).await
            && status["disk_full"] == false
            && status["state_digest"] == reference["state_digest"]
            && status["applied_index"] == reference["applied_index"]
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
