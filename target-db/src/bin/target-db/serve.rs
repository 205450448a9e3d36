//! `target-db serve`: a node opened from its data directory (what recovery found, checked), its
//! Raft core and HTTP endpoint started, and a graceful stop that hands leadership over first.
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use openraft::{Config, Raft, SnapshotPolicy};
use target_db::{
    cluster_token::{self, ClusterToken},
    data_dir::record_claim,
    handoff::{HandoffError, transfer_leadership},
    log_store::{LogOptions, LogStore},
    network::Network,
    server::{Boot, Node, Recovered, count_elections, router},
    state_machine::StateMachine,
    types::NodeId,
};

/// What a node tells openraft: when to snapshot, and Raft's clock (the heartbeat interval, which
/// openraft also uses as the time an append to a follower has to be answered, and the election
/// timeout: the least of a random range up to twice it, and the leader's lease).
#[derive(Clone, Copy, Debug)]
pub struct RaftSettings {
    pub snapshot_every: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// UNSAFE (`--unsafe-tell-unsynced-commit`): followers hear the commit point openraft
    /// counted, which may lie past this leader's disk.
    pub tell_unsynced_commit: bool,
}

/// How long one attempt to send a snapshot chunk (and install it, for the last) may take.
const SNAPSHOT_ATTEMPT_MS: u64 = 10_000;

impl RaftSettings {
    pub const DEFAULT: RaftSettings = RaftSettings {
        // etcd's --snapshot-count. Every snapshot copies and writes the whole state on each
        // node; at 5,000 a node under 10,000 puts/s did that twice a second and it set the
        // p99 (64 clients: 34 ms at 5,000, 6 ms at 100,000).
        snapshot_every: 100_000,
        heartbeat_ms: 100,
        election_timeout_ms: 500,
        tell_unsynced_commit: false,
    };

    /// openraft's configuration, if a follower gets at least two heartbeats within its shortest
    /// timeout (with fewer, one late heartbeat starts an election); else an error naming both
    /// flags.
    pub fn config(self) -> Result<Config> {
        anyhow::ensure!(
            self.heartbeat_ms > 0,
            "--heartbeat-ms must be at least 1 (it is the leader's heartbeat interval)"
        );
        anyhow::ensure!(
            self.election_timeout_ms > 2 * self.heartbeat_ms,
            "--election-timeout-ms {} is not more than twice --heartbeat-ms {}: a follower would \
             campaign after one late heartbeat; raise --election-timeout-ms above {}",
            self.election_timeout_ms,
            self.heartbeat_ms,
            2 * self.heartbeat_ms
        );
        Ok(Config {
            cluster_name: "target-db".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: 2 * self.election_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: 0,
            // Each attempt to send a snapshot chunk must be answered within this, the last one
            // installed too. openraft's 200 ms is less than reading and installing a snapshot of
            // a few MB takes (more so on a busy machine), and a follower that never gets one
            // installed never catches up.
            install_snapshot_timeout: SNAPSHOT_ATTEMPT_MS,
            snapshot_max_chunk_size: target_db::network::SNAPSHOT_CHUNK_BYTES,
            ..Config::default()
        }
        .validate()?)
    }
}

pub async fn serve(
    id: NodeId,
    cluster: &str,
    data_dir: PathBuf,
    listen: String,
    settings: RaftSettings,
    options: LogOptions,
    token: Option<ClusterToken>,
) -> Result<()> {
    let state = StateMachine::open(&data_dir.join("state"))?;
    let mut log =
        LogStore::open(&data_dir.join("wal"), options)?.purge_within(state.durable_snapshot());
    record_claim(&data_dir, cluster, id)?;
    let wal = log.wal_stats();
    // What recovery found on disk, before anyone could send an entry: /status shows it, so a
    // checker can tell whether a restart lost entries this node had acknowledged.
    let log_state = openraft::storage::RaftLogStorage::get_log_state(&mut log).await?;
    let snapshot_index = state.data().await.last_applied.map(|l| l.index);
    // The log is purged only up to a snapshot on disk. A purge point past the snapshot leaves
    // entries in neither, and openraft would only fail later, in its own words.
    if let Some(purged) = log_state.last_purged_log_id.map(|l| l.index)
        && snapshot_index.is_none_or(|snapshot| snapshot < purged)
    {
        anyhow::bail!(
            "the write-ahead log in {} was purged up to index {purged}, but the snapshot in {} \
             covers {}: entries {}..={purged} are in neither, so the node will not start \
             (restore the data directory, or remove the node and let it rejoin with an empty one)",
            data_dir.join("wal").display(),
            data_dir.join("state").display(),
            snapshot_index.map_or("nothing".to_owned(), |s| format!("only up to {s}")),
            snapshot_index.map_or(0, |s| s + 1),
        );
    }
    let recovered_index = log_state.last_log_id.map(|l| l.index).max(snapshot_index);
    let recovered_commit = openraft::storage::RaftLogStorage::read_committed(&mut log)
        .await?
        .map(|l| l.index)
        .max(snapshot_index);
    let recovered_term = openraft::storage::RaftLogStorage::read_vote(&mut log)
        .await?
        .map_or(0, |vote| vote.leader_id().term);
    let config = settings.config()?;
    let local = listen
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| addr.ip())
        .filter(|ip| !ip.is_unspecified());
    let mut network = Network::new(local, token.as_ref());
    if !settings.tell_unsynced_commit {
        network = network.commit_within(log.durable().await);
    }
    let raft = Raft::new(id, Arc::new(config), network, log, state.clone()).await?;
    let elections = count_elections(&raft);
    let node = Arc::new(Node {
        wal,
        elections,
        id,
        raft: raft.clone(),
        state,
        handing_off: AtomicBool::new(false),
        election_holds: AtomicU64::new(0),
        peers: reqwest::Client::builder()
            .local_address(local)
            .default_headers(cluster_token::headers(token.as_ref()))
            .build()?,
        token,
        boot: Boot::now(Recovered {
            index: recovered_index,
            commit: recovered_commit,
            term: recovered_term,
        }),
    });
    tokio::spawn(hand_off_when_the_disk_fills(node.clone()));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(id, %listen, data_dir = %data_dir.display(), "serving");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopped = stopping.clone();
    let server = axum::serve(listener, router(node.clone())).with_graceful_shutdown(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        // The server keeps answering meanwhile: the new leader's election goes through it.
        if node.raft.metrics().borrow().current_leader == Some(node.id) {
            match transfer_leadership(&node, None, Duration::from_secs(5)).await {
                Ok(leader) => tracing::info!(leader, "stopping after the hand-off"),
                Err(error) => tracing::warn!(%error, "stopping without a hand-off"),
            }
        }
        stopping.notify_one();
    });
    tokio::select! {
        served = server => served?,
        // A request that waits on a full disk would hold a graceful stop forever.
        () = async {
            stopped.notified().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => tracing::warn!("requests still open 5 s after the stop began; stopping anyway"),
    }
    raft.shutdown().await.ok();
    Ok(())
}

/// A leader whose disk is full refuses every write, which would stop the whole cluster's
/// writes: it hands leadership to a voter that can take them.
async fn hand_off_when_the_disk_fills(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let leads = node.raft.metrics().borrow().current_leader == Some(node.id);
        if leads && node.wal.disk_full() {
            match transfer_leadership(&node, None, Duration::from_secs(5)).await {
                Ok(leader) => tracing::warn!(leader, "the disk is full: handed leadership over"),
                // The only voter: refusing writes is all it can do.
                Err(HandoffError::Alone) => {}
                Err(error) => tracing::warn!(%error, "the disk is full and leadership stays here"),
            }
        }
    }
}
