//! openraft's log storage on our write-ahead log. The log is a journal of what happened to it
//! (entries appended, truncated, purged; votes), replayed at start. Each new segment begins with
//! the current vote and purge point, so deleting old segments never loses them.
// openraft's traits return its (large) StorageError by value; the helpers here return the same
// type so it passes through unchanged.
#![allow(clippy::result_large_err)]
use std::{
    collections::BTreeMap, fmt::Debug, ops::RangeBounds, path::Path, sync::Arc, time::Duration,
};

use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
    storage::{LogFlushed, LogState, RaftLogStorage},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::{
    types::{NodeId, TypeConfig},
    wal::{Wal, WalError, WalOptions, WalStats, segment_file_name},
};

mod backlog;
mod recovery;

#[derive(Serialize, Deserialize)]
enum Journal {
    Entries(Vec<Entry<TypeConfig>>),
    Vote(Vote<NodeId>),
    /// The highest log id known committed. openraft saves it before applying (so before any
    /// client hears back); after a restart a node that resumes as leader from its saved vote
    /// must not serve reads below it.
    Committed(LogId<NodeId>),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this log id are gone (they are in a snapshot).
    Purge(LogId<NodeId>),
}

/// Whether a failed fsync stops the node from accepting writes (the safe default) or is logged
/// and ignored (an unsafe switch, to prove the torture harness catches it).
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub wal: WalOptions,
    pub ignore_fsync_error: bool,
    /// This node's id, to keep fsyncs off the write path (None: every record is durable
    /// before it returns). The entries it appends as leader are staged and openraft is told at
    /// once, so they are replicated while they are written; they reach the disk with the next
    /// durable record, the commit point at the latest, which openraft writes before it applies
    /// anything (so before any client hears back), and followers are told a commit point only
    /// once it is durable here (see `durable`). A follower's commit point is staged, to reach
    /// the disk with its next append: a follower only applies what it learnt was committed,
    /// and the cluster holds that on a majority of disks whatever this node remembers.
    pub node_id: Option<NodeId>,
}

struct Inner {
    wal: Wal,
    options: LogOptions,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    /// Highest entry index in each segment, to know which segments a purge frees.
    segment_max_index: BTreeMap<u64, u64>,
    /// Set after a failed write: the log may be behind what it acknowledged, so nothing more is
    /// accepted until a restart recovers from what is really on disk.
    failed: Option<String>,
    /// Records a full disk kept out of the log, oldest first, with the callbacks of the appends
    /// among them. They are already in memory; the retry task writes them once space returns.
    backlog: Vec<Vec<u8>>,
    backlog_callbacks: Vec<LogFlushed<TypeConfig>>,
    /// How many records have ever gone to the backlog: a record's ticket is this count after it.
    backlogged: u64,
    /// Whether the retry task is running.
    retrying: bool,
    /// The last entry index on disk and the newest commit point on disk: while the disk is
    /// full, a commit point past the entries on disk is not written (after a crash it would
    /// point past the end of the log).
    durable_last_entry: Option<u64>,
    committed_on_disk: Option<LogId<NodeId>>,
    /// The last log id on disk: every entry up to it is durable.
    durable: Arc<watch::Sender<Option<LogId<NodeId>>>>,
    /// The newest commit point staged and not yet written.
    staged_committed: Option<LogId<NodeId>>,
}

fn encode_journal(record: &Journal) -> Vec<u8> {
    serde_json::to_vec(record).expect("journal records serialise")
}

/// How far the backlog has been written: every ticket up to `written` is durable; `failed` once
/// writing it failed for a reason other than space.
#[derive(Clone, Debug, Default)]
struct BacklogProgress {
    written: u64,
    failed: Option<String>,
}

/// What became of records handed to the log.
enum Written {
    Durable,
    /// Waiting for space; durable once the backlog progress reaches the ticket.
    Backlogged {
        ticket: u64,
    },
}

/// How often a full disk is tried again.
const SPACE_RETRY: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    stats: Arc<WalStats>,
    progress: Arc<watch::Sender<BacklogProgress>>,
    /// The last index the snapshot on disk covers, when purges must wait for it.
    durable_snapshot: Option<watch::Receiver<Option<u64>>>,
}

/// How long a purge waits for the snapshot that covers it to reach the disk.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

fn io_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write_logs(AnyError::new(&error)),
    }
}

impl LogStore {
    pub fn open(dir: &Path, options: LogOptions) -> Result<LogStore, WalError> {
        let (wal, recovered) = Wal::open(dir, options.wal.clone())?;
        let stats = wal.stats();
        let mut inner = Inner {
            wal,
            options,
            entries: BTreeMap::new(),
            vote: None,
            committed: None,
            last_purged: None,
            segment_max_index: BTreeMap::new(),
            failed: None,
            backlog: Vec::new(),
            backlog_callbacks: Vec::new(),
            backlogged: 0,
            retrying: false,
            durable_last_entry: None,
            committed_on_disk: None,
            durable: Arc::new(watch::Sender::new(None)),
            staged_committed: None,
        };
        let gaps = recovered.gaps;
        for (segment, payload) in recovered.records {
            let record: Journal =
                serde_json::from_slice(&payload).map_err(|_| WalError::Corrupt {
                    file: dir.join(format!("segment {segment}")),
                    offset: 0,
                    reason: "a record that is not a log journal entry",
                })?;
            inner.replay(segment, record);
        }
        if let Some(reason) = inner.unpurged_before_gap(&gaps) {
            return Err(WalError::Missing {
                dir: dir.to_owned(),
                reason,
            });
        }
        if let Some(reason) = inner.hole() {
            return Err(WalError::Missing {
                dir: dir.to_owned(),
                reason,
            });
        }
        inner.durable_last_entry = inner.entries.keys().next_back().copied();
        inner.mark_durable();
        inner.start_as_candidate();
        inner.set_committed_on_disk(inner.committed);
        if let Some(vote) = inner.vote {
            stats.record_vote_term(vote.leader_id().term);
        }
        // The newest segment may lack the head: a power loss can keep a rotation's new segment
        // but nothing written into it. Once a purge deletes the older segments, the vote and
        // the purge point would go with them.
        inner.write_head().map_err(|error| WalError::Io {
            what: "writing the vote and the purge and commit points to",
            path: dir.to_owned(),
            source: std::io::Error::other(error.to_string()),
        })?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            stats,
            progress: Arc::new(watch::Sender::new(BacklogProgress::default())),
            durable_snapshot: None,
        })
    }

    /// Makes every purge wait until the snapshot on disk covers it. A follower that installs a
    /// snapshot from the leader is told to purge its log while the snapshot is still being
    /// written (openraft runs the two concurrently); a purge journaled first, then a crash,
    /// would leave the node with neither the entries nor the snapshot holding them.
    pub fn purge_within(mut self, durable_snapshot: watch::Receiver<Option<u64>>) -> LogStore {
        self.durable_snapshot = Some(durable_snapshot);
        self
    }

    async fn wait_for_snapshot_covering(&self, index: u64) -> Result<(), StorageError<NodeId>> {
        let Some(durable) = &self.durable_snapshot else {
            return Ok(());
        };
        let mut durable = durable.clone();
        let covered = tokio::time::timeout(
            SNAPSHOT_WAIT,
            durable.wait_for(|snapshot| *snapshot >= Some(index)),
        )
        .await
        .is_ok_and(|waited| waited.is_ok());
        if covered {
            return Ok(());
        }
        Err(io_error(std::io::Error::other(format!(
            "refusing to purge the log up to {index}: no snapshot on disk covers it \
             (the newest covers {:?})",
            *durable.borrow()
        ))))
    }
}

impl LogStore {
    /// The write-ahead log's counters, for /metrics.
    pub fn wal_stats(&self) -> Arc<WalStats> {
        self.stats.clone()
    }

    /// The last log id on disk, as it moves: a leader tells followers no commit point past it.
    /// Entries it wrote beside their replication may be committed by openraft's count before
    /// they are durable here; a follower told of that commit would apply an entry that a crash
    /// of this leader, and an election among the nodes without it, could still take back.
    pub async fn durable(&self) -> watch::Receiver<Option<LogId<NodeId>>> {
        self.inner.lock().await.durable.subscribe()
    }

    /// Hands records to the log. An append returns at once and reports durability through its
    /// callback; anything else (a vote, the commit point, a truncation, a purge) returns only
    /// once it is durable, waiting for space if the disk is full.
    async fn write(
        &self,
        records: Vec<Journal>,
        callback: Option<LogFlushed<TypeConfig>>,
    ) -> Result<(), StorageError<NodeId>> {
        let reports_through_callback = callback.is_some();
        let written = {
            let mut inner = self.inner.lock().await;
            let written = inner.write(records, callback)?;
            // Also after a durable write: the commit point may have taken the space reserve.
            if inner.short_of_space() && !inner.retrying {
                inner.retrying = true;
                self.retry_until_space_returns();
            }
            written
        };
        let ticket = match written {
            Written::Backlogged { ticket } if !reports_through_callback => ticket,
            _ => return Ok(()),
        };
        let mut progress = self.progress.subscribe();
        let progress = progress
            .wait_for(|p| p.written >= ticket || p.failed.is_some())
            .await
            .expect("the sender lives in self");
        match &progress.failed {
            Some(reason) if progress.written < ticket => Err(io_error(std::io::Error::other(
                format!("the write-ahead log failed ({reason}); restart the node to recover"),
            ))),
            _ => Ok(()),
        }
    }
}

impl Inner {
    /// Appends records durably (one fsync for all), then applies them in memory.
    ///
    /// A full disk does not stop the node. The first record that finds it full is written from
    /// the space reserve, and the server refuses new client writes, so openraft's core, which
    /// waits for every append, stays free to serve reads. Once the reserve is used up, records
    /// wait in the backlog, in order (applied in memory at once, as openraft expects), and the
    /// retry task writes them when space returns. A vote, which stands alone, may go ahead of
    /// the backlog; so may the commit point, unless it lies past the entries on disk, in which
    /// case the newest one is written after the backlog.
    fn write(
        &mut self,
        records: Vec<Journal>,
        callback: Option<LogFlushed<TypeConfig>>,
    ) -> Result<Written, StorageError<NodeId>> {
        if let Some(reason) = &self.failed {
            let message = format!(
                "the write-ahead log failed earlier ({reason}); restart the node to recover"
            );
            if let Some(callback) = callback {
                callback.log_io_completed(Err(std::io::Error::other(message.clone())));
            }
            return Err(io_error(std::io::Error::other(message)));
        }
        let urgent = records
            .iter()
            .all(|r| matches!(r, Journal::Vote(_) | Journal::Committed(_)));
        if !self.backlog.is_empty() {
            if !urgent {
                return Ok(self.add_to_backlog(records, callback));
            }
            let on_disk = self.durable_last_entry;
            let past_the_disk = records
                .iter()
                .any(|r| matches!(r, Journal::Committed(c) if Some(c.index) > on_disk));
            if past_the_disk {
                self.apply_in_memory(records);
                return Ok(Written::Durable);
            }
        }
        let payloads: Vec<Vec<u8>> = records.iter().map(encode_journal).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        if self.may_stage(&records, callback.is_some()) {
            self.wal.stage(&refs);
            for record in &records {
                if let Journal::Committed(log_id) = record {
                    self.staged_committed = self.staged_committed.max(Some(*log_id));
                }
            }
            self.apply_in_memory(records);
            if !urgent {
                self.durable_last_entry = self.entries.keys().next_back().copied();
            }
            if let Some(callback) = callback {
                callback.log_io_completed(Ok(()));
            }
            return Ok(Written::Durable);
        }
        let mut appended = self.wal.append(&refs);
        if matches!(appended, Err(WalError::NoSpace { .. })) && !self.options.ignore_fsync_error {
            if !self.wal.stats().disk_full() {
                tracing::warn!("the disk is full: writes wait for space, reads go on");
                self.wal.stats().set_disk_full(true);
            }
            if self.wal.release_reserve() {
                appended = self.wal.append(&refs);
            }
            if matches!(appended, Err(WalError::NoSpace { .. })) {
                return Ok(self.add_to_backlog(records, callback));
            }
        }
        let durable = appended.is_ok();
        if let Err(error) = appended {
            if self.options.ignore_fsync_error {
                tracing::error!(%error, "UNSAFE: ignoring a failed write-ahead log write");
            } else {
                // This append's callback fails with the ones still waiting in the backlog.
                self.backlog_callbacks.extend(callback);
                return Err(self.fail(error));
            }
        }
        for record in &records {
            match record {
                Journal::Committed(log_id) => self.set_committed_on_disk(Some(*log_id)),
                Journal::Vote(vote) => self.wal.stats().record_vote_term(vote.leader_id().term),
                _ => {}
            }
        }
        self.apply_in_memory(records);
        if !urgent {
            self.durable_last_entry = self.entries.keys().next_back().copied();
        }
        if durable {
            self.staged_written();
            self.mark_durable();
        }
        if let Some(callback) = callback {
            callback.log_io_completed(Ok(()));
        }
        if !self.short_of_space() {
            self.rotate_if_full()?;
        }
        Ok(Written::Durable)
    }

    /// Whether these records may wait for the next append (see `LogOptions::node_id`): the
    /// entries this node appends as the leader of its vote's term, or a follower's commit
    /// point. Never while the disk is full: then every record takes the path that waits for
    /// space.
    fn may_stage(&self, records: &[Journal], appended: bool) -> bool {
        let Some(me) = self.options.node_id else {
            return false;
        };
        if self.short_of_space() {
            return false;
        }
        let leader = self
            .vote
            .filter(|vote| vote.is_committed() && vote.leader_id().voted_for() == Some(me));
        records.iter().all(|record| match (record, leader) {
            (Journal::Entries(entries), Some(vote)) if appended => entries
                .iter()
                .all(|entry| entry.log_id.leader_id.term == vote.leader_id().term),
            (Journal::Committed(_), None) => !appended,
            _ => false,
        })
    }

    /// A leader's own entries are staged, so a leader that crashed may have lost entries of its
    /// term that followers hold. Resuming as that term's leader (openraft 0.9 does, from a
    /// committed vote of its own) it would append other entries under the same log ids, and a
    /// follower takes an entry whose log id it has for the one it has: the replicas diverge
    /// (found by the torture's results check, seed 2). It starts as a candidate that voted for
    /// itself in that term instead, and leads again only through an election in a new term.
    fn start_as_candidate(&mut self) {
        let (Some(me), Some(vote)) = (self.options.node_id, self.vote) else {
            return;
        };
        if vote.is_committed() && vote.leader_id().voted_for() == Some(me) {
            self.vote = Some(Vote::new(vote.leader_id().term, me));
        }
    }

    /// The last entry's log id, or the purge point's if every entry is purged.
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(self.last_purged)
    }

    /// After an append: what was staged is on disk.
    fn staged_written(&mut self) {
        if let Some(committed) = self.staged_committed.take() {
            self.set_committed_on_disk(Some(committed));
        }
    }

    /// Everything in memory is on disk, unless a backlog waits (after an append, which writes
    /// what was staged first).
    fn mark_durable(&mut self) {
        if !self.backlog.is_empty() {
            return;
        }
        let last = self.last_log_id();
        self.durable.send_if_modified(|durable| {
            let moved = *durable != last;
            *durable = last;
            moved
        });
    }

    /// The commit point on disk, which /status reports: a checker may hold the node to it
    /// after a restart (openraft saves it before applying what it covers).
    fn set_committed_on_disk(&mut self, committed: Option<LogId<NodeId>>) {
        self.committed_on_disk = self.committed_on_disk.max(committed);
        if let Some(committed) = self.committed_on_disk {
            self.wal.stats().record_committed(committed.index);
        }
    }

    /// Applies records to the in-memory log, as written to the active segment (no segment
    /// rotates while a backlog waits, so that is also where backlogged records will land).
    fn apply_in_memory(&mut self, records: Vec<Journal>) {
        let segment = self.wal.active_segment();
        for record in records {
            self.replay(segment, record);
        }
    }

    /// A write failed for a reason other than space: nothing more until a restart.
    fn fail(&mut self, error: WalError) -> StorageError<NodeId> {
        tracing::error!(%error, "write-ahead log write failed: no more writes until restart");
        self.failed = Some(error.to_string());
        for callback in self.backlog_callbacks.drain(..) {
            callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
        }
        io_error(error)
    }

    fn rotate_if_full(&mut self) -> Result<(), StorageError<NodeId>> {
        if !self.wal.needs_rotation() {
            return Ok(());
        }
        match self.wal.rotate() {
            Ok(_) => {}
            // No room for a new segment: the full one takes more until there is.
            Err(WalError::NoSpace { path }) => {
                tracing::warn!(file = %path.display(), "no space for a new segment; the active one grows");
                return Ok(());
            }
            Err(error) => return Err(io_error(error)),
        }
        self.write_head()
    }

    /// Writes what every segment must hold for the older ones to be deletable: the vote, the
    /// purge point and the commit point. If this finds the disk full, the head waits in the
    /// backlog like any record, and the retry task writes it.
    fn write_head(&mut self) -> Result<(), StorageError<NodeId>> {
        let mut head = Vec::new();
        if let Some(vote) = self.vote {
            head.push(Journal::Vote(vote));
        }
        if let Some(purged) = self.last_purged {
            head.push(Journal::Purge(purged));
        }
        if let Some(committed) = self.committed {
            head.push(Journal::Committed(committed));
        }
        if !head.is_empty() {
            self.write(head, None)?;
        }
        Ok(())
    }

    /// Deletes the oldest segments while every entry in them is purged.
    fn drop_purged_segments(&mut self) -> Result<(), StorageError<NodeId>> {
        let Some(purged) = self.last_purged else {
            return Ok(());
        };
        let active = self.wal.active_segment();
        let mut keep_from = active;
        for &segment in self.wal.segments() {
            let fully_purged = self
                .segment_max_index
                .get(&segment)
                .is_none_or(|&max| max <= purged.index);
            if segment == active || !fully_purged {
                keep_from = segment;
                break;
            }
        }
        self.wal
            .remove_segments_before(keep_from)
            .map_err(io_error)?;
        self.segment_max_index = self.segment_max_index.split_off(&keep_from);
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        use std::ops::Bound::{Excluded, Included};
        // openraft asks for the entries after the state machine's last applied one; a range
        // that ends before it starts means this node applied entries its log no longer holds
        // (truncated below what was applied), which no restart mends. A bug, so a panic, but
        // one that says so (a BTreeMap range would panic with "range start is greater than
        // range end").
        let backwards = match (range.start_bound(), range.end_bound()) {
            (Excluded(start), Excluded(end)) => start >= end,
            (Included(start) | Excluded(start), Included(end) | Excluded(end)) => start > end,
            _ => false,
        };
        assert!(
            !backwards,
            "asked for log entries {range:?}, which end before they start: this node applied \
             entries its log no longer holds (its log was truncated below what it applied)"
        );
        let inner = self.inner.lock().await;
        Ok(inner
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(vec![Journal::Vote(*vote)], None).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        match committed {
            Some(log_id) => self.write(vec![Journal::Committed(log_id)], None).await,
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        // openraft hands over every entry that arrived together: they share one fsync.
        self.write(vec![Journal::Entries(entries)], Some(callback))
            .await
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(vec![Journal::Truncate(log_id.index)], None)
            .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.wait_for_snapshot_covering(log_id.index).await?;
        self.write(vec![Journal::Purge(log_id)], None).await?;
        self.inner.lock().await.drop_purged_segments()
    }
}
