//! One running node: its Raft core, state machine, log's statistics and what it found at start,
//! shared by every request handler.
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use openraft::Raft;

use crate::{
    cluster_token::ClusterToken,
    state_machine::StateMachine,
    types::{NodeId, TypeConfig},
    wal::WalStats,
};

pub struct Node {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub state: StateMachine,
    pub wal: Arc<WalStats>,
    /// Terms this node has seen begin (each election starts one).
    pub elections: Arc<AtomicU64>,
    /// Set while this leader hands leadership over: it takes no new writes meanwhile.
    pub handing_off: AtomicBool,
    /// Counts requests to hold elections, so only the latest one's timer ends the hold.
    pub election_holds: AtomicU64,
    /// For requests to other nodes outside Raft (asking one to campaign), from this node's
    /// own address like its Raft traffic, with the cluster token.
    pub peers: reqwest::Client,
    /// Required on the routes peers and operators use, when set.
    pub token: Option<ClusterToken>,
    pub boot: Boot,
}

/// This process's start: told apart from the node's earlier lives, with what its recovery
/// found on disk.
pub struct Boot {
    /// Different for every start of the node.
    pub id: u64,
    pub started: std::time::Instant,
    pub recovered: Recovered,
}

/// What recovery found on disk, before any peer could send anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recovered {
    /// The last log index (log or snapshot), None for an empty node.
    pub index: Option<u64>,
    /// The commit point on disk (or the snapshot's index, if higher).
    pub commit: Option<u64>,
    /// The term of the vote (0: none).
    pub term: u64,
}

impl Boot {
    pub fn now(recovered: Recovered) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            id: nanos ^ (u64::from(std::process::id()) << 32),
            started: std::time::Instant::now(),
            recovered,
        }
    }
}

/// Counts the terms this node sees, from openraft's metrics channel, for as long as it runs.
pub fn count_elections(raft: &Raft<TypeConfig>) -> Arc<AtomicU64> {
    let elections = Arc::new(AtomicU64::new(0));
    let counter = elections.clone();
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        let mut term = metrics.borrow().current_term;
        while metrics.changed().await.is_ok() {
            let now = metrics.borrow().current_term;
            if now > term {
                counter.fetch_add(now - term, Ordering::Relaxed);
                term = now;
            }
        }
    });
    elections
}

/// The node as every handler holds it.
pub type Shared = Arc<Node>;
