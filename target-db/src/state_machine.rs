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

use crate::types::{NodeId, Op, Request, Response, Responses, TypeConfig};

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

/// A snapshot as kept in memory: `data` is the JSON of a [`Data`], what followers are sent.
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Arc<Vec<u8>>,
}

/// `snapshot.json` as read: `{"meta": ..., "data": ...}`, where `data` is the state's JSON
/// itself. Files written before 2026-12-07 hold it as a JSON array of its bytes (about four times
/// the size, and slow to write: every node stalled its applies for a few hundred ms), and are
/// still read.
#[derive(Deserialize)]
struct SnapshotFile<'a> {
    meta: SnapshotMeta<NodeId, BasicNode>,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

impl StoredSnapshot {
    fn from_file(bytes: &[u8]) -> serde_json::Result<StoredSnapshot> {
        let file: SnapshotFile = serde_json::from_slice(bytes)?;
        let raw = file.data.get();
        let data = if raw.starts_with('[') {
            serde_json::from_str(raw)?
        } else {
            raw.as_bytes().to_vec()
        };
        Ok(StoredSnapshot {
            meta: file.meta,
            data: Arc::new(data),
        })
    }

    /// The file's bytes: `data` is valid JSON (serialised here, or parsed before an install).
    fn to_file(&self) -> serde_json::Result<Vec<u8>> {
        let meta = serde_json::to_vec(&self.meta)?;
        let mut file = Vec::with_capacity(self.data.len() + meta.len() + 32);
        file.extend_from_slice(b"{\"meta\":");
        file.extend_from_slice(&meta);
        file.extend_from_slice(b",\"data\":");
        file.extend_from_slice(&self.data);
        file.push(b'}');
        Ok(file)
    }
}

struct Inner {
    data: Data,
    dir: PathBuf,
    current: Option<Arc<StoredSnapshot>>,
    built: u64,
    /// (index, results hash after applying it) for the latest indexes that are multiples of
    /// CHECKPOINT_EVERY this process applied.
    checkpoints: VecDeque<(u64, u64)>,
}

#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    durable: Arc<watch::Sender<Option<u64>>>,
    /// Held while a snapshot is written, so a snapshot built from an older state never
    /// replaces a newer one (a build runs beside applies and installs).
    snapshot_file: Arc<Mutex<()>>,
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
                let stored = StoredSnapshot::from_file(&bytes)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                let data: Data = serde_json::from_slice(&stored.data)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                (data, Some(Arc::new(stored)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (Data::default(), None),
            Err(error) => return Err(error),
        };
        let durable = current
            .as_ref()
            .and_then(|stored| stored.meta.last_log_id)
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
            snapshot_file: Arc::new(Mutex::new(())),
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

    /// A copy of the current data.
    pub async fn data(&self) -> Data {
        self.inner.lock().await.data.clone()
    }

    /// Looks at the current data without copying it (a state of MBs: /status digests it).
    pub async fn inspect<R>(&self, look: impl FnOnce(&Data) -> R) -> R {
        look(&self.inner.lock().await.data)
    }

    /// One key's current value: a read must not copy the whole state.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.inner.lock().await.data.kv.get(key).cloned()
    }

    /// The last log id applied (or covered by the snapshot started from).
    pub async fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.inner.lock().await.data.last_applied
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
/// The writing runs off the async threads: a state of MBs takes a while, fsync included.
async fn persist_when_space(dir: &Path, stored: &Arc<StoredSnapshot>) -> std::io::Result<()> {
    let mut warned = false;
    loop {
        let (dir_owned, snapshot) = (dir.to_owned(), stored.clone());
        let written = tokio::task::spawn_blocking(move || persist(&dir_owned, &snapshot))
            .await
            .map_err(std::io::Error::other)?;
        match written {
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
    file.write_all(&stored.to_file().map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(SNAPSHOT_FILE))?;
    File::open(dir)?.sync_all()
}

fn snapshot_of(stored: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: stored.meta.clone(),
        snapshot: Box::new(Cursor::new(stored.data.as_ref().clone())),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Copies the state and lets applies go on while the copy is serialised and written: a
    /// state of MBs took a few hundred ms, and every write waited that long.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, dir, built) = {
            let mut inner = self.inner.lock().await;
            inner.built += 1;
            (inner.data.clone(), inner.dir.clone(), inner.built)
        };
        let last = data.last_applied;
        let last_membership = data.last_membership.clone();
        let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec(&data))
            .await
            .map_err(snapshot_error)?
            .map_err(snapshot_error)?;
        let snapshot_id = match last {
            Some(log_id) => format!("{}-{}-{built}", log_id.leader_id, log_id.index),
            None => format!("empty-{built}"),
        };
        let stored = Arc::new(StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership,
                snapshot_id,
            },
            data: Arc::new(bytes),
        });
        let _writing = self.snapshot_file.lock().await;
        let index = last.map(|log_id| log_id.index);
        if index <= *self.durable.borrow() {
            // An install (or another build) got a newer snapshot to disk meanwhile.
            let inner = self.inner.lock().await;
            if let Some(current) = &inner.current {
                return Ok(snapshot_of(current));
            }
        }
        persist_when_space(&dir, &stored)
            .await
            .map_err(snapshot_error)?;
        self.inner.lock().await.current = Some(stored.clone());
        self.persisted(&stored.meta);
        Ok(snapshot_of(&stored))
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Responses>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut responses = Vec::new();
        for entry in entries {
            inner.data.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            let results = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => batch
                    .0
                    .iter()
                    .map(|request| apply_request(&mut inner.data, request))
                    .collect(),
                EntryPayload::Membership(membership) => {
                    inner.data.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    vec![Response {
                        ok: true,
                        previous: None,
                    }]
                }
            };
            inner.data.results = results.iter().fold(inner.data.results, |hash, result| {
                fold_result(hash, index, result)
            });
            if index % CHECKPOINT_EVERY == 0 {
                let results = inner.data.results;
                if inner.checkpoints.len() == CHECKPOINTS_KEPT {
                    inner.checkpoints.pop_front();
                }
                inner.checkpoints.push_back((index, results));
            }
            responses.push(Responses(results));
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
        let _writing = self.snapshot_file.lock().await;
        let mut inner = self.inner.lock().await;
        let stored = Arc::new(StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(bytes),
        });
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
        Ok(inner.current.as_deref().map(snapshot_of))
    }
}
