//! openraft's log storage on our write-ahead log. The log is a journal of what happened to it
//! (entries appended, truncated, purged; votes), replayed at start. Each new segment begins with
//! the current vote and purge point, so deleting old segments never loses them.
// openraft's traits return its (large) StorageError by value; the helpers here return the same
// type so it passes through unchanged.
#![allow(clippy::result_large_err)]
use std::{collections::BTreeMap, fmt::Debug, ops::RangeBounds, path::Path, sync::Arc};

use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
    storage::{LogFlushed, LogState, RaftLogStorage},
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{
    types::{NodeId, TypeConfig},
    wal::{Wal, WalError, WalOptions, WalStats},
};

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
}

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    stats: Arc<WalStats>,
}

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
        };
        for (segment, payload) in recovered.records {
            let record: Journal =
                serde_json::from_slice(&payload).map_err(|_| WalError::Corrupt {
                    file: dir.join(format!("segment {segment}")),
                    offset: 0,
                    reason: "a record that is not a log journal entry",
                })?;
            inner.replay(segment, record);
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            stats,
        })
    }
}

impl LogStore {
    /// The write-ahead log's counters, for /metrics.
    pub fn wal_stats(&self) -> Arc<WalStats> {
        self.stats.clone()
    }
}

impl Inner {
    fn replay(&mut self, segment: u64, record: Journal) {
        match record {
            Journal::Entries(entries) => {
                for entry in entries {
                    let index = entry.log_id.index;
                    let max = self.segment_max_index.entry(segment).or_default();
                    *max = (*max).max(index);
                    self.entries.insert(index, entry);
                }
            }
            Journal::Vote(vote) => self.vote = Some(vote),
            Journal::Committed(log_id) => {
                if self.committed.is_none_or(|c| c < log_id) {
                    self.committed = Some(log_id);
                    self.wal.stats().record_committed(log_id.index);
                }
            }
            Journal::Truncate(from) => {
                self.entries.split_off(&from);
            }
            Journal::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                if self.last_purged.is_none_or(|p| p < log_id) {
                    self.last_purged = Some(log_id);
                }
            }
        }
    }

    /// Appends records durably (one fsync for all), then applies them in memory.
    fn write(&mut self, records: Vec<Journal>) -> Result<(), StorageError<NodeId>> {
        if let Some(reason) = &self.failed {
            return Err(io_error(std::io::Error::other(format!(
                "the write-ahead log failed earlier ({reason}); restart the node to recover"
            ))));
        }
        let payloads: Vec<Vec<u8>> = records
            .iter()
            .map(|r| serde_json::to_vec(r).expect("journal records serialise"))
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        if let Err(error) = self.wal.append(&refs) {
            if self.options.ignore_fsync_error {
                tracing::error!(%error, "UNSAFE: ignoring a failed write-ahead log write");
            } else {
                tracing::error!(%error, "write-ahead log write failed: no more writes until restart");
                self.failed = Some(error.to_string());
                return Err(io_error(error));
            }
        }
        let segment = self.wal.active_segment();
        for record in records {
            self.replay(segment, record);
        }
        if self.wal.needs_rotation() {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StorageError<NodeId>> {
        self.wal.rotate().map_err(io_error)?;
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
            self.write(head)?;
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
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.inner.lock().await.write(vec![Journal::Vote(*vote)])
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        match committed {
            Some(log_id) => self
                .inner
                .lock()
                .await
                .write(vec![Journal::Committed(log_id)]),
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
        let result = self
            .inner
            .lock()
            .await
            .write(vec![Journal::Entries(entries)]);
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(error) => callback.log_io_completed(Err(std::io::Error::other(error.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.inner
            .lock()
            .await
            .write(vec![Journal::Truncate(log_id.index)])
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.write(vec![Journal::Purge(log_id)])?;
        inner.drop_purged_segments()
    }
}
