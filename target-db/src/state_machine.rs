//! The key-value state machine, with client sessions (a retried write is applied once) and
//! snapshots made durable the careful way: temporary file, fsync, rename, directory fsync.
use std::{
    collections::{BTreeMap, VecDeque},
    fs::{self, File},
    io::{Cursor, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, storage::RaftStateMachine,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::types::{NodeId, Op, Request, Response, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Data {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    pub kv: BTreeMap<String, String>,
    /// Per client: the last sequence number applied and its response.
    pub sessions: BTreeMap<u64, (u64, Response)>,
    /// A running hash of every entry's index and result, in log order: replicas that applied
    /// the same entries to the same state hold the same one, and one that applied a retry
    /// twice, or lost part of its state, differs from then on.
    #[serde(default)]
    pub results: u64,
}

/// Every this many log indexes, the results hash is kept for /status (see `checkpoints`).
pub const CHECKPOINT_EVERY: u64 = 1000;
/// How many checkpoints /status shows: seconds of history at thousands of writes a second.
const CHECKPOINTS_KEPT: usize = 16;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct Inner {
    data: Data,
    dir: PathBuf,
    current: Option<StoredSnapshot>,
    built: u64,
    /// (index, results hash after applying it) for the latest indexes that are multiples of
    /// CHECKPOINT_EVERY this process applied.
    checkpoints: VecDeque<(u64, u64)>,
}

#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    durable: Arc<watch::Sender<Option<u64>>>,
}

fn snapshot_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write_snapshot(None, AnyError::new(&error)),
    }
}

impl StateMachine {
    /// Starts from the latest durable snapshot in `dir`, if any.
    pub fn open(dir: &Path) -> std::io::Result<StateMachine> {
        crate::data_dir::create_dir_durably(dir)?;
        let path = dir.join(SNAPSHOT_FILE);
        let (data, current) = match fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredSnapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                let data: Data = serde_json::from_slice(&stored.data)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                (data, Some(stored))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (Data::default(), None),
            Err(error) => return Err(error),
        };
        let durable = current
            .as_ref()
            .and_then(|stored: &StoredSnapshot| stored.meta.last_log_id)
            .map(|log_id| log_id.index);
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                data,
                dir: dir.to_owned(),
                current,
                built: 0,
                checkpoints: VecDeque::new(),
            })),
            durable: Arc::new(watch::Sender::new(durable)),
        })
    }

    /// The last log index the snapshot on disk covers: the log may be purged up to it, and no
    /// further (see `LogStore::purge_within`).
    pub fn durable_snapshot(&self) -> watch::Receiver<Option<u64>> {
        self.durable.subscribe()
    }

    fn persisted(&self, meta: &SnapshotMeta<NodeId, BasicNode>) {
        let index = meta.last_log_id.map(|log_id| log_id.index);
        self.durable.send_if_modified(|durable| {
            let newer = index > *durable;
            if newer {
                *durable = index;
            }
            newer
        });
    }

    /// One key's value, for reads: copying the whole state per read made reads cost as much
    /// as the state is large.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.inner.lock().await.data.kv.get(key).cloned()
    }

    /// A copy of the current data, for digests.
    pub async fn data(&self) -> Data {
        self.inner.lock().await.data.clone()
    }

    /// The results hash at the latest checkpoint indexes this process applied, oldest first:
    /// a checker compares them across nodes (the same index must give the same hash).
    pub async fn checkpoints(&self) -> Vec<(u64, u64)> {
        self.inner
            .lock()
            .await
            .checkpoints
            .iter()
            .copied()
            .collect()
    }
}

/// Folds one applied entry into the results hash (FNV-1a over the index and the result).
fn fold_result(hash: u64, index: u64, response: &Response) -> u64 {
    let previous = response.previous.as_deref().map(str::as_bytes);
    index
        .to_le_bytes()
        .into_iter()
        .chain([u8::from(response.ok), u8::from(previous.is_some())])
        .chain(previous.unwrap_or_default().iter().copied())
        .fold(hash ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Applies one request, once per (client, seq).
fn apply_request(data: &mut Data, request: &Request) -> Response {
    if let Some((seq, response)) = data.sessions.get(&request.client)
        && *seq >= request.seq
    {
        // A retry of something already applied: answer as the first time.
        return response.clone();
    }
    let response = match &request.op {
        Op::Put { key, value } => Response {
            ok: true,
            previous: data.kv.insert(key.clone(), value.clone()),
        },
        Op::Delete { key } => Response {
            ok: true,
            previous: data.kv.remove(key),
        },
        Op::Cas { key, from, to } => {
            let current = data.kv.get(key).cloned();
            if current == *from {
                data.kv.insert(key.clone(), to.clone());
                Response {
                    ok: true,
                    previous: current,
                }
            } else {
                Response {
                    ok: false,
                    previous: current,
                }
            }
        }
    };
    data.sessions
        .insert(request.client, (request.seq, response.clone()));
    response
}

/// Writes the snapshot durably, waiting for space if the disk is full: the log is purged up to a
/// snapshot once it exists, so a snapshot that is not on disk must never be reported built.
async fn persist_when_space(dir: &Path, stored: &StoredSnapshot) -> std::io::Result<()> {
    let mut warned = false;
    loop {
        match persist(dir, stored) {
            Err(error) if crate::wal::is_no_space(&error) => {
                if !warned {
                    tracing::warn!(dir = %dir.display(), "no space for a snapshot; waiting for space");
                    warned = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// Writes the snapshot durably: temporary file, fsync, rename, directory fsync.
fn persist(dir: &Path, stored: &StoredSnapshot) -> std::io::Result<()> {
    let temporary = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(stored).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(SNAPSHOT_FILE))?;
    File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let bytes = serde_json::to_vec(&inner.data).map_err(snapshot_error)?;
        inner.built += 1;
        let last = inner.data.last_applied;
        let snapshot_id = match last {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, inner.built),
            None => format!("empty-{}", inner.built),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: inner.data.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        persist_when_space(&inner.dir, &stored)
            .await
            .map_err(snapshot_error)?;
        inner.current = Some(stored);
        self.persisted(&meta);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let inner = self.inner.lock().await;
        Ok((inner.data.last_applied, inner.data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut responses = Vec::new();
        for entry in entries {
            inner.data.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(request) => apply_request(&mut inner.data, &request),
                EntryPayload::Membership(membership) => {
                    inner.data.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    Response {
                        ok: true,
                        previous: None,
                    }
                }
            };
            let index = entry.log_id.index;
            inner.data.results = fold_result(inner.data.results, index, &response);
            if index % CHECKPOINT_EVERY == 0 {
                let results = inner.data.results;
                if inner.checkpoints.len() == CHECKPOINTS_KEPT {
                    inner.checkpoints.pop_front();
                }
                inner.checkpoints.push_back((index, results));
            }
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let data: Data = serde_json::from_slice(&bytes).map_err(snapshot_error)?;
        let mut inner = self.inner.lock().await;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        persist_when_space(&inner.dir, &stored)
            .await
            .map_err(snapshot_error)?;
        inner.data = data;
        inner.current = Some(stored);
        self.persisted(meta);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.current.as_ref().map(|stored| Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        }))
    }
}
