//! target-db on a real faultfs mount whose WAL fdatasync fails: the node must stop taking
//! writes (after a failed fsync nobody knows what is on disk), say so definitely, stay stopped
//! when the disk recovers, and come back from a restart with every acknowledged write. With
//! `--unsafe-ignore-fsync-error` it goes on acknowledging instead. Needs root (FUSE).
mod common;

use std::{
    ops::ControlFlow,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use target_db_client::{Client, Op, Peers, Request};
use tests::torture::{
    cluster::{Binaries, Cluster, ClusterSpec, StorageShape},
    poll::{poll_until, wait_for},
    target::{Target, TargetKind},
};

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");
const FAILING_FSYNC: &str = r#"fdatasync(path="db/wal/*")=error(EIO)"#;

/// A node's answer or refusal as the JSON it sent; None if it sent none.
fn answer(result: Result<impl serde::Serialize, target_db_client::Error>) -> Option<Value> {
    match result {
        Ok(answer) => serde_json::to_value(answer).ok(),
        Err(target_db_client::Error::Refused { refusal, .. }) => serde_json::to_value(refusal).ok(),
        Err(_) => None,
    }
}

/// The node address is fixed (127.0.2.11:7000): one database at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Db {
    cluster: Cluster,
    client: Client,
    addr: String,
    seq: u64,
    _dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Db {
    async fn start(flags: &[&str]) -> Db {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        common::build_tools();
        let dir = tempfile::tempdir().unwrap();
        let binaries = Binaries::beside_me(Path::new(TORTURE).parent()).unwrap();
        let flags = flags.iter().map(|f| f.to_string()).collect();
        let cluster = Cluster::start(
            dir.path(),
            binaries,
            ClusterSpec {
                target: Target::new(TargetKind::TargetDb),
                size: 1,
                seed: 7,
                db_flags: flags,
                first_ip: std::net::Ipv4Addr::new(127, 0, 2, 11),
                metadata: "posix".into(),
                storage_shapes: vec![StorageShape::fixed(&[])],
            },
        )
        .unwrap();
        let addr = cluster.node(1).addr.clone();
        let db = Db {
            cluster,
            client: Client::new().timeout(Duration::from_secs(5)),
            addr,
            seq: 0,
            _dir: dir,
            _turn: turn,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let init = Peers::from([(1, db.addr.clone())]);
        while answer(db.client.init(&db.addr, &init).await).is_none() {
            assert!(Instant::now() < deadline, "target-db did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        db
    }

    async fn put(&mut self, value: &str) -> Value {
        self.seq += 1;
        let op = Op::Put {
            key: "k".into(),
            value: value.into(),
        };
        let request = Request {
            client: 1,
            seq: self.seq,
            op,
        };
        answer(self.client.write(&self.addr, &request).await)
            .unwrap_or(json!({"outcome": "no answer"}))
    }

    async fn get(&self) -> Value {
        answer(self.client.read(&self.addr, "k").await).unwrap_or(json!({"outcome": "no answer"}))
    }

    /// Puts until one is acknowledged (the node may still be electing itself), for up to 30 s.
    async fn put_acknowledged(&mut self, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.put(value).await.get("response").is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{value}` was never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_failed_wal_fsync_stops_writes_until_a_restart_that_keeps_every_acknowledged_write() {
    let mut db = Db::start(&[]).await;
    for value in ["v1", "v2", "v3"] {
        db.put_acknowledged(value).await;
    }
    let rule = db.cluster.add_fault(1, FAILING_FSYNC).unwrap();
    let failed = db.put("v4").await;
    assert!(
        failed.get("response").is_none(),
        "acknowledged after EIO: {failed}"
    );
    let refused = db.put("v5").await;
    assert_eq!(refused["outcome"], "not-applied", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("restart it"),
        "{refused}"
    );

    // The disk is fine again, but what the failed fsync left on it is unknown: still stopped.
    db.cluster.remove_fault(1, rule).unwrap();
    let still = db.put("v6").await;
    assert_eq!(still["outcome"], "not-applied", "{still}");

    db.cluster.restart_node(1).unwrap();
    db.put_acknowledged("v7").await;
    assert_eq!(db.get().await["value"], "v7");
    let log = std::fs::read_to_string(db.cluster.node(1).log_path()).unwrap();
    assert!(log.contains("write-ahead log write failed"), "{log}");
}

#[tokio::test]
async fn the_unsafe_switch_keeps_acknowledging_after_a_failed_wal_fsync() {
    let mut db = Db::start(&["--unsafe-ignore-fsync-error"]).await;
    db.put_acknowledged("v1").await;
    db.cluster.add_fault(1, FAILING_FSYNC).unwrap();
    for value in ["v2", "v3"] {
        let answer = db.put(value).await;
        assert_eq!(answer["response"]["ok"], true, "{answer}");
    }
    assert_eq!(db.get().await["value"], "v3");
}

#[tokio::test]
async fn a_failed_fsync_while_sealing_a_full_segment_does_not_stop_the_next_start() {
    // 4 KiB segments and 6 KiB values: every append fills its segment, and the log rotates
    // right after it: the next segment is created, begun with its opening record (synced) and
    // made durable, then the full one is sealed. The rule lets the append's fdatasync and the
    // opening's pass and fails the next one, the seal's. The
    // seal may be on disk all the same, so the new segment must stay: a sealed segment without
    // its successor reads as a lost segment, and the node would never start again.
    let mut db = Db::start(&["--segment-bytes=4096"]).await;
    let big = |tag: &str| format!("{tag}-{}", "x".repeat(6000));
    db.put_acknowledged(&big("v1")).await;
    let rule = db
        .cluster
        .add_fault(1, r#"fdatasync(path="db/wal/*")=2*off->1*error(EIO)"#)
        .unwrap();
    // Acknowledged or not (the entry was durable before the seal failed): the node stops.
    db.put(&big("v2")).await;
    let stopped = db.put("v3").await;
    assert!(
        stopped.get("response").is_none(),
        "still writing: {stopped}"
    );
    db.cluster.remove_fault(1, rule).unwrap();

    db.cluster.restart_node(1).unwrap();
    db.put_acknowledged("after").await;
    assert_eq!(db.get().await["value"], "after");
    let log = std::fs::read_to_string(db.cluster.node(1).log_path()).unwrap();
    assert!(!log.contains("was sealed when"), "{log}");
}

/// What a new process finds is made durable before it is trusted. Here the last process was
/// killed as it made a rotation's directory fsync: the new segment is in the page cache's
/// directory, not the disk's. A new process that appends to it (a torture run found one doing
/// so) acknowledges writes that a power loss takes away with the segment's name.
#[tokio::test]
async fn a_segment_left_unsynced_by_a_killed_process_is_made_durable_before_it_is_used() {
    // 4 KiB segments and 6 KiB values: every append fills its segment, and the log rotates.
    let mut db = Db::start(&["--segment-bytes=4096"]).await;
    let big = |tag: &str| format!("{tag}-{}", "x".repeat(6000));
    db.put_acknowledged(&big("v1")).await;
    let rule = db
        .cluster
        .add_fault(1, r#"fsync(path="db/wal")=kill"#)
        .unwrap();
    db.put(&big("v2")).await;
    let killed = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let exited = db.cluster.reap(1).is_some();
        async move { exited }
    })
    .await;
    assert!(
        killed,
        "the rotation's directory fsync never killed the node"
    );
    db.cluster.remove_fault(1, rule).unwrap();

    db.cluster.start_node(1).unwrap();
    db.put_acknowledged("v3").await;
    db.cluster.power_loss(1, "drop").unwrap();
    let read = poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let get = db.get();
        async move {
            let answer = get.await;
            match answer.get("value") {
                Some(_) => ControlFlow::Break(answer),
                None => ControlFlow::Continue(answer),
            }
        }
    })
    .await
    .unwrap_or_else(|last| panic!("no read served after the power loss: {last}"));
    let value = read["value"].as_str().unwrap_or_default();
    assert_eq!(
        value,
        "v3",
        "the acknowledged v3 was lost: the key reads {}",
        &value[..value.len().min(8)]
    );
}
