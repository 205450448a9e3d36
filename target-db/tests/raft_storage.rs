//! The storage under openraft: its own conformance suite, and what survives a restart.
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
    storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine},
    testing::{StoreBuilder, Suite},
};
use target_db::{
    log_store::{LogOptions, LogStore},
    state_machine::StateMachine,
    types::{NodeId, Op, Request, TypeConfig},
    wal::{WalError, WalOptions},
};

/// Tiny segments, so rotation and the deletion of purged segments run in every test.
fn options() -> LogOptions {
    LogOptions {
        wal: WalOptions {
            segment_bytes: 512,
            ..WalOptions::default()
        },
        ..LogOptions::default()
    }
}

/// Stores opened with these options, for openraft's suite.
struct Builder(fn() -> LogOptions);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("wal"), (self.0)()).unwrap();
        let state = StateMachine::open(&dir.path().join("state")).unwrap();
        Ok((dir, log, state))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(Builder(options)).unwrap();
}

fn entry(term: u64, index: u64, client: u64, seq: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Request {
            client,
            seq,
            op: Op::Put {
                key: format!("k{index}"),
                value: format!("v{index}"),
            },
        }),
    }
}

#[tokio::test]
async fn votes_entries_truncation_and_purges_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    {
        let mut log = LogStore::open(&wal, options()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        for index in 1..=200 {
            log.blocking_append(vec![entry(3, index, 7, index)])
                .await
                .unwrap();
        }
        log.truncate(LogId::new(CommittedLeaderId::new(3, 1), 151))
            .await
            .unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(3, 1), 100))
            .await
            .unwrap();
    }
    let mut log = LogStore::open(&wal, options()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(100));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(150));
    let entries = log.try_get_log_entries(0..1000).await.unwrap();
    assert_eq!(entries.first().map(|e| e.log_id.index), Some(101));
    assert_eq!(entries.len(), 50);
    let segments = std::fs::read_dir(&wal).unwrap().count();
    assert!(
        segments < 60,
        "purged segments were deleted ({segments} left)"
    );
}

fn segment_files(wal: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    files.sort();
    files
}

/// A purge unlinks old segments with one directory fsync for all of them, so a power loss may
/// keep one and lose the next: a gap in the numbering with only purged entries before it.
#[tokio::test]
async fn a_purged_segment_left_behind_by_a_power_loss_does_not_stop_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    {
        let mut log = LogStore::open(&wal, options()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        for index in 0..=200 {
            log.blocking_append(vec![entry(3, index, 7, index)])
                .await
                .unwrap();
        }
        let before_purge = segment_files(&wal);
        for file in &before_purge {
            std::fs::copy(file, kept.join(file.file_name().unwrap())).unwrap();
        }
        log.purge(LogId::new(CommittedLeaderId::new(3, 1), 100))
            .await
            .unwrap();
        let after_purge = segment_files(&wal);
        let unlinked: Vec<_> = before_purge
            .iter()
            .filter(|f| !after_purge.contains(f))
            .collect();
        assert!(unlinked.len() >= 3, "the purge deleted segments");
        // The oldest unlinked segment comes back, as if its unlink never reached the disk.
        let name = unlinked[0].file_name().unwrap();
        std::fs::copy(kept.join(name), wal.join(name)).unwrap();
    }
    let mut log = LogStore::open(&wal, options()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(100));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(200));
    let entries = log.try_get_log_entries(0..1000).await.unwrap();
    assert_eq!(entries.first().map(|e| e.log_id.index), Some(101));
    assert_eq!(entries.len(), 100);

    // The same gap with entries past the purge point before it: those are needed, refused.
    drop(log);
    let segments = segment_files(&wal);
    std::fs::remove_file(&segments[segments.len() / 2]).unwrap();
    match LogStore::open(&wal, options()) {
        Err(WalError::Missing { reason, .. }) => assert!(
            reason.contains("the segments between are missing"),
            "{reason}"
        ),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a log with needed entries missing was opened"),
    }
}

/// A power loss between a rotation's new segment reaching the directory and the head (the vote,
/// the purge point, the commit point) reaching that segment leaves the newest segment empty. A
/// restart writes into it, and a later purge deletes every older segment: the head must have
/// been written again by then, or the node comes back with no vote and may vote twice in a term.
#[tokio::test]
async fn a_restart_into_a_headless_segment_keeps_the_vote_through_later_purges() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    {
        let mut log = LogStore::open(&wal, options()).unwrap();
        log.save_vote(&Vote::new(5, 2)).await.unwrap();
        for index in 0..=100 {
            log.blocking_append(vec![entry(5, index, 7, index)])
                .await
                .unwrap();
        }
        log.save_committed(Some(LogId::new(CommittedLeaderId::new(5, 1), 90)))
            .await
            .unwrap();
    }
    // The rotation's new segment reached the disk; nothing written into it did.
    let newest = segment_files(&wal).last().unwrap().clone();
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    let id: u64 = name["wal-".len()..name.len() - ".log".len()]
        .parse()
        .unwrap();
    std::fs::File::create(wal.join(format!("wal-{:020}.log", id + 1))).unwrap();
    {
        let mut log = LogStore::open(&wal, options()).unwrap();
        log.blocking_append(vec![entry(5, 101, 7, 101)])
            .await
            .unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(5, 1), 100))
            .await
            .unwrap();
        assert_eq!(
            segment_files(&wal),
            [wal.join(format!("wal-{:020}.log", id + 1))],
            "the purge deleted every older segment, and nothing rotated"
        );
    }
    let mut log = LogStore::open(&wal, options()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(5, 2)));
    assert_eq!(
        log.read_committed().await.unwrap().map(|c| c.index),
        Some(90)
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(100));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(101));
}

#[tokio::test]
async fn a_retried_request_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = StateMachine::open(dir.path()).unwrap();
    let put = |index, seq| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            client: 9,
            seq,
            op: Op::Cas {
                key: "k".into(),
                from: None,
                to: format!("v{index}"),
            },
        }),
    };
    let first = state.apply(vec![put(1, 1)]).await.unwrap();
    // The same request again (a client retry after a timeout): same answer, no second effect.
    let retried = state.apply(vec![put(2, 1)]).await.unwrap();
    assert_eq!(first, retried);
    assert!(first[0].ok);
    assert_eq!(
        state.data().await.kv.get("k").map(String::as_str),
        Some("v1")
    );
    let next = state.apply(vec![put(3, 2)]).await.unwrap();
    assert!(
        !next[0].ok,
        "a new cas from absent fails now that the key exists"
    );
}

/// The entry at `index` of a workload of puts by 3 clients, every 7th a retry of the client's
/// request before it (same client and seq), as a client sends one after a timeout; index 1501
/// is a late retry of 1499's request, sent again after the snapshot at 1500.
fn workload_entry(index: u64) -> Entry<TypeConfig> {
    let request = if index == 1501 { 1499 } else { index };
    let client = request % 3;
    let seq = if request % 7 == 0 {
        request / 3
    } else {
        request / 3 + 1
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            client,
            seq,
            op: Op::Put {
                key: format!("k{}", request % 5),
                value: format!("v{request}"),
            },
        }),
    }
}

async fn applied(state: &mut StateMachine, indexes: std::ops::RangeInclusive<u64>) {
    let entries: Vec<_> = indexes.map(workload_entry).collect();
    for batch in entries.chunks(37) {
        state.apply(batch.to_vec()).await.unwrap();
    }
}

#[tokio::test]
async fn replicas_report_the_same_results_at_each_checkpoint_unless_one_forgot_its_sessions() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut whole = StateMachine::open(dirs[0].path()).unwrap();
    applied(&mut whole, 0..=2000).await;
    let expected = whole.checkpoints().await;
    assert_eq!(
        expected.iter().map(|c| c.0).collect::<Vec<_>>(),
        [0, 1000, 2000]
    );

    // A replica restarted from its own snapshot at 1500 reaches 2000 with the same hash.
    let mut restarted = StateMachine::open(dirs[1].path()).unwrap();
    applied(&mut restarted, 0..=1500).await;
    restarted.build_snapshot().await.unwrap();
    drop(restarted);
    let mut restarted = StateMachine::open(dirs[1].path()).unwrap();
    applied(&mut restarted, 1501..=2000).await;
    assert_eq!(restarted.checkpoints().await, expected[2..]);

    // One that installed a snapshot without the client sessions applies the late retry a
    // second time: from the next checkpoint on, its hash differs.
    let mut source = StateMachine::open(dirs[2].path()).unwrap();
    applied(&mut source, 0..=1500).await;
    let snapshot = source.build_snapshot().await.unwrap();
    let mut data = source.data().await;
    data.sessions.clear();
    let forgetful_dir = tempfile::tempdir().unwrap();
    let mut forgetful = StateMachine::open(forgetful_dir.path()).unwrap();
    forgetful
        .install_snapshot(
            &snapshot.meta,
            Box::new(std::io::Cursor::new(serde_json::to_vec(&data).unwrap())),
        )
        .await
        .unwrap();
    applied(&mut forgetful, 1501..=2000).await;
    let differing = forgetful.checkpoints().await;
    assert_eq!(differing.len(), 1);
    assert_eq!(differing[0].0, 2000);
    assert_ne!(differing[0].1, expected[2].1);
}

/// The options of a node that writes beside replication (what `target-db serve` runs), as node 1.
fn node_1_options() -> LogOptions {
    LogOptions {
        node_id: Some(1),
        ..options()
    }
}

#[test]
fn openraft_storage_conformance_suite_with_writes_beside_replication() {
    Suite::test_all(Builder(node_1_options)).unwrap();
}

/// What a power loss would leave of the log right now: the files as they are (every write
/// here is followed by its fsync, or not made at all), opened as a fresh start would.
async fn on_disk_now(wal: &std::path::Path) -> (Option<u64>, Option<u64>) {
    let copy = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(wal).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, copy.path().join(file.file_name().unwrap())).unwrap();
    }
    let mut log = LogStore::open(copy.path(), options()).unwrap();
    let last = log.get_log_state().await.unwrap().last_log_id;
    let committed = log.read_committed().await.unwrap();
    (last.map(|l| l.index), committed.map(|l| l.index))
}

/// A leader's own entries are told durable at once, so openraft replicates them while they are
/// written; they reach the disk with the commit point, which openraft saves before it applies
/// anything, and only then do followers hear of it (the durable mark).
#[tokio::test]
async fn a_leaders_entries_reach_the_disk_with_the_commit_point_before_anything_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let mut log = LogStore::open(&wal, node_1_options()).unwrap();
    let durable = log.durable().await;
    log.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
    for index in 0..=3 {
        log.blocking_append(vec![entry(4, index, 7, index)])
            .await
            .unwrap();
    }
    assert_eq!(
        log.get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map(|l| l.index),
        Some(3)
    );
    assert_eq!(
        on_disk_now(&wal).await,
        (None, None),
        "the entries wait for the commit point"
    );
    assert_eq!(
        *durable.borrow(),
        None,
        "followers are told no commit point yet"
    );

    log.save_committed(Some(LogId::new(CommittedLeaderId::new(4, 1), 2)))
        .await
        .unwrap();
    assert_eq!(on_disk_now(&wal).await, (Some(3), Some(2)));
    assert_eq!(durable.borrow().map(|l| l.index), Some(3));

    // Entries of an earlier term, or appended while another node leads, are durable at once.
    log.save_vote(&Vote::new_committed(5, 2)).await.unwrap();
    log.blocking_append(vec![entry(4, 4, 7, 4)]).await.unwrap();
    assert_eq!(on_disk_now(&wal).await, (Some(4), Some(2)));
    assert_eq!(durable.borrow().map(|l| l.index), Some(4));
}

/// A follower's commit point is staged and reaches the disk with its next append; what it
/// reports as on disk (`/status` commit_index) follows the disk, not memory.
#[tokio::test]
async fn a_followers_commit_point_reaches_the_disk_with_its_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let mut log = LogStore::open(&wal, node_1_options()).unwrap();
    let stats = log.wal_stats();
    log.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
    for index in 0..=3 {
        log.blocking_append(vec![entry(4, index, 7, index)])
            .await
            .unwrap();
    }
    assert_eq!(
        on_disk_now(&wal).await,
        (Some(3), None),
        "a follower's entries are durable"
    );
    log.save_committed(Some(LogId::new(CommittedLeaderId::new(4, 1), 3)))
        .await
        .unwrap();
    assert_eq!(
        log.read_committed().await.unwrap().map(|l| l.index),
        Some(3)
    );
    assert_eq!(on_disk_now(&wal).await, (Some(3), None));
    assert_eq!(
        stats.committed_index(),
        None,
        "not reported as on disk while staged"
    );

    log.blocking_append(vec![entry(4, 4, 7, 4)]).await.unwrap();
    assert_eq!(on_disk_now(&wal).await, (Some(4), Some(3)));
    assert_eq!(stats.committed_index(), Some(3));
}

/// A leader that crashed may have lost staged entries of its term that followers hold: it must
/// not resume as that term's leader and append other entries under their log ids.
#[tokio::test]
async fn a_restarted_leader_starts_as_a_candidate_of_its_term() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    {
        let mut log = LogStore::open(&wal, node_1_options()).unwrap();
        log.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        log.blocking_append(vec![entry(4, 0, 7, 0)]).await.unwrap();
    }
    let mut log = LogStore::open(&wal, node_1_options()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 1)));
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        None,
        "the staged entry is gone"
    );
    // A follower's vote, and any vote where nothing is staged, comes back as it was.
    log.save_vote(&Vote::new_committed(5, 2)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(&wal, node_1_options()).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(5, 2))
    );
    drop(log);
    let mut log = LogStore::open(&wal, options()).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(5, 2))
    );
}

#[tokio::test]
#[should_panic(expected = "applied entries its log no longer holds")]
async fn a_read_of_entries_that_ends_before_it_starts_says_the_log_lost_applied_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(&dir.path().join("wal"), options()).unwrap();
    for index in 1..=10 {
        log.blocking_append(vec![entry(1, index, 7, index)])
            .await
            .unwrap();
    }
    assert_eq!(log.try_get_log_entries(1..6).await.unwrap().len(), 5);
    assert_eq!(log.try_get_log_entries(4..4).await.unwrap().len(), 0);
    // What openraft asks for once its state machine applied up to 8 and the log was cut
    // back to 6.
    log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 7))
        .await
        .unwrap();
    #[allow(clippy::reversed_empty_ranges)]
    let _ = log.try_get_log_entries(9..=6).await;
}
