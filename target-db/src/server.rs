//! One node's HTTP endpoint: Raft messages from peers, and the client API.
//!
//! - `POST /kv/write` `{"client":1,"seq":1,"op":"put","key":"k","value":"v"}`: 200 with the
//!   response once committed and applied; 421 with the leader's address when this node is not the
//!   leader (the write definitely did not happen); 503 with outcome "not-applied" from a node
//!   whose Raft core has stopped; 507 with outcome "not-applied" while this node's disk is full;
//!   503 with outcome "unknown" when the outcome is unknown.
//! - `GET /kv/get?key=k`: a linearizable read (read-index through openraft); 421 off the leader.
//! - `POST /init` `{"1":"127.0.0.1:7001",...}`, `POST /admin/add-learner` `{"id":4,"addr":...}`,
//!   `POST /admin/promote` `{"id":4}`, `POST /admin/remove` `{"id":4}`,
//!   `POST /admin/change-membership` `{"members":[1,2,3]}`, `POST /admin/transfer-leader`
//!   `{"to":2}` (or `{}`: the most caught-up voter), `GET /status`, `GET /metrics`.
//!
//! With a cluster token (`--cluster-token-file`), `/raft/*`, `/init` and `/admin/*` answer 403
//! to a request without it; `/kv/*`, `/status` and `/metrics` stay open to clients.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response as HttpResponse},
    routing::{get, post},
};
use openraft::{
    BasicNode, ChangeMembers, Raft,
    error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError},
    raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest},
};
use serde::Deserialize;
use serde_json::json;
use target_db_client::{Outcome, ReadReply, Refusal, Role, Status, WriteReply};

use crate::{
    bad_request::{Body, Params},
    cluster_token::{self, ClusterToken},
    handoff::{HandoffError, transfer_leadership},
    state_machine::StateMachine,
    types::{NodeId, Request, TypeConfig},
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

type Shared = Arc<Node>;

pub fn router(node: Shared) -> Router {
    // What peers and operators call: with a cluster token, only requests carrying it get here.
    let members_only = Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/init", post(init))
        .route("/admin/add-learner", post(add_learner))
        .route("/admin/change-membership", post(change_membership))
        .route("/admin/promote", post(promote))
        .route("/admin/remove", post(remove))
        .route("/admin/transfer-leader", post(transfer_leader))
        .route("/admin/campaign", post(campaign))
        .route("/admin/hold-elections", post(hold_elections))
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            require_cluster_token,
        ));
    Router::new()
        .route("/kv/write", post(write))
        .route("/kv/get", get(read))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .merge(members_only)
        .with_state(node)
}

/// Lets a request through if the node has no cluster token or the request carries it.
async fn require_cluster_token(
    State(node): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> HttpResponse {
    let Some(token) = &node.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(cluster_token::HEADER)
        .map(|value| value.as_bytes());
    if token.admits(presented) {
        return next.run(request).await;
    }
    let refusal = Refusal::plain(format!(
        "{} is for the cluster's own nodes and operators: send the cluster token in the {} header (target-db's --cluster-token-file)",
        request.uri().path(),
        cluster_token::HEADER
    ));
    refuse(StatusCode::FORBIDDEN, refusal)
}

async fn append(
    State(node): State<Shared>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(node.raft.append_entries(request).await)
}

async fn vote(
    State(node): State<Shared>,
    Json(request): Json<VoteRequest<NodeId>>,
) -> impl IntoResponse {
    Json(node.raft.vote(request).await)
}

async fn snapshot(
    State(node): State<Shared>,
    Json(request): Json<InstallSnapshotRequest<TypeConfig>>,
) -> impl IntoResponse {
    Json(node.raft.install_snapshot(request).await)
}

pub(crate) fn refuse(status: StatusCode, refusal: Refusal) -> HttpResponse {
    (status, Json(refusal)).into_response()
}

fn not_leader(forward: &ForwardToLeader<NodeId, BasicNode>) -> HttpResponse {
    let refusal = Refusal {
        leader_id: forward.leader_id,
        leader: forward.leader_node.as_ref().map(|n| n.addr.clone()),
        ..Refusal::new("not the leader", Outcome::NotApplied)
    };
    refuse(StatusCode::MISDIRECTED_REQUEST, refusal)
}

fn unknown(error: impl std::fmt::Display) -> HttpResponse {
    let refusal = Refusal::new(error.to_string(), Outcome::Unknown);
    refuse(StatusCode::SERVICE_UNAVAILABLE, refusal)
}

/// A node whose Raft core has stopped (a failed fsync stops it on purpose) cannot take a
/// request in: saying so definitely, rather than "unknown", keeps client histories checkable.
fn stopped(node: &Node) -> Option<HttpResponse> {
    let fatal = node.raft.metrics().borrow().running_state.clone().err()?;
    let refusal = Refusal::new(
        format!("this node has stopped ({fatal}); restart it to recover from its disk"),
        Outcome::NotApplied,
    );
    Some(refuse(StatusCode::SERVICE_UNAVAILABLE, refusal))
}

/// A node whose disk is full takes no new writes (they could only wait), but goes on serving
/// reads; it takes writes again once the log has caught up.
fn disk_full(node: &Node) -> Option<HttpResponse> {
    if !node.wal.disk_full() {
        return None;
    }
    let refusal = Refusal::new(
        "this node's disk is full: writes are refused until space returns (reads go on)",
        Outcome::NotApplied,
    );
    Some(refuse(StatusCode::INSUFFICIENT_STORAGE, refusal))
}

fn handing_off(node: &Node) -> Option<HttpResponse> {
    if !node.handing_off.load(Ordering::SeqCst) {
        return None;
    }
    let refusal = Refusal::new(
        "leadership is moving to another node: retry there in a moment",
        Outcome::NotApplied,
    );
    Some(refuse(StatusCode::SERVICE_UNAVAILABLE, refusal))
}

async fn write(State(node): State<Shared>, Body(request): Body<Request>) -> HttpResponse {
    if let Some(refusal) = stopped(&node)
        .or_else(|| disk_full(&node))
        .or_else(|| handing_off(&node))
    {
        return refusal;
    }
    match node.raft.client_write(request).await {
        Ok(written) => Json(WriteReply {
            response: written.data,
            index: written.log_id.index,
        })
        .into_response(),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            not_leader(&forward)
        }
        Err(error) => unknown(error),
    }
}

#[derive(Deserialize)]
struct KeyQuery {
    key: String,
}

async fn read(State(node): State<Shared>, Params(query): Params<KeyQuery>) -> HttpResponse {
    if let Some(refusal) = stopped(&node) {
        return refusal;
    }
    match node.raft.ensure_linearizable().await {
        Ok(_) => {
            let value = node.state.data().await.kv.get(&query.key).cloned();
            Json(ReadReply {
                key: query.key,
                value,
            })
            .into_response()
        }
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
            not_leader(&forward)
        }
        Err(error) => unknown(error),
    }
}

async fn init(
    State(node): State<Shared>,
    Body(peers): Body<BTreeMap<NodeId, String>>,
) -> HttpResponse {
    let members: BTreeMap<NodeId, BasicNode> = peers
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    match node.raft.initialize(members).await {
        Ok(()) => Json(json!({"initialized": true})).into_response(),
        Err(error) => refuse(StatusCode::CONFLICT, Refusal::plain(error.to_string())),
    }
}

#[derive(Deserialize)]
struct Learner {
    id: NodeId,
    addr: String,
}

async fn add_learner(State(node): State<Shared>, Body(learner): Body<Learner>) -> HttpResponse {
    match node
        .raft
        .add_learner(learner.id, BasicNode::new(learner.addr), true)
        .await
    {
        Ok(written) => Json(json!({"index": written.log_id.index})).into_response(),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            not_leader(&forward)
        }
        Err(error) => unknown(error),
    }
}

#[derive(Deserialize)]
struct Members {
    members: BTreeSet<NodeId>,
}

async fn change_membership(
    State(node): State<Shared>,
    Body(members): Body<Members>,
) -> HttpResponse {
    membership_answer(node.raft.change_membership(members.members, false).await)
}

#[derive(Deserialize)]
struct NodeIdBody {
    id: NodeId,
}

/// Makes a learner a voter.
async fn promote(State(node): State<Shared>, Body(body): Body<NodeIdBody>) -> HttpResponse {
    let change = ChangeMembers::AddVoterIds(BTreeSet::from([body.id]));
    membership_answer(node.raft.change_membership(change, false).await)
}

/// Takes a node out of the cluster, as voter and as learner.
async fn remove(State(node): State<Shared>, Body(body): Body<NodeIdBody>) -> HttpResponse {
    let voters: Vec<NodeId> = node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    if !voters.contains(&body.id) {
        let refusal = Refusal::new(
            format!("node {} is not a voter (voters: {voters:?})", body.id),
            Outcome::NotApplied,
        );
        return refuse(StatusCode::BAD_REQUEST, refusal);
    }
    let change = ChangeMembers::RemoveVoters(BTreeSet::from([body.id]));
    membership_answer(node.raft.change_membership(change, false).await)
}

fn membership_answer(
    result: Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    >,
) -> HttpResponse {
    match result {
        Ok(written) => Json(json!({"index": written.log_id.index})).into_response(),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            not_leader(&forward)
        }
        // An unknown learner, an empty membership, a change already under way: nothing changed.
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => refuse(
            StatusCode::BAD_REQUEST,
            Refusal::new(error.to_string(), Outcome::NotApplied),
        ),
        Err(error) => unknown(error),
    }
}

#[derive(Deserialize)]
struct TransferBody {
    /// The voter to lead next; the most caught-up one when absent.
    to: Option<NodeId>,
}

async fn transfer_leader(
    State(node): State<Shared>,
    Body(body): Body<TransferBody>,
) -> HttpResponse {
    match transfer_leadership(&node, body.to, Duration::from_secs(10)).await {
        Ok(leader) => Json(json!({"leader": leader})).into_response(),
        Err(HandoffError::NotLeader { .. }) => {
            let metrics = node.raft.metrics().borrow().clone();
            let forward = ForwardToLeader {
                leader_id: metrics.current_leader,
                leader_node: metrics.current_leader.and_then(|id| {
                    metrics
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .cloned()
                }),
            };
            not_leader(&forward)
        }
        Err(error @ (HandoffError::NotAVoter { .. } | HandoffError::Alone)) => refuse(
            StatusCode::BAD_REQUEST,
            Refusal::new(error.to_string(), Outcome::NotApplied),
        ),
        Err(error @ HandoffError::TimedOut(_)) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            Refusal::plain(error.to_string()),
        ),
    }
}

#[derive(Deserialize)]
struct HoldBody {
    ms: u64,
}

/// Asked by a leader handing over to another node: start no election for a while. The hold
/// ends by itself, so a hand-off that dies half-way cannot leave a node unable to campaign.
async fn hold_elections(State(node): State<Shared>, Body(body): Body<HoldBody>) -> HttpResponse {
    let generation = node.election_holds.fetch_add(1, Ordering::SeqCst) + 1;
    node.raft.runtime_config().elect(body.ms == 0);
    if body.ms > 0 {
        let node = node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(body.ms)).await;
            // Only the latest hold may end itself.
            if node.election_holds.load(Ordering::SeqCst) == generation {
                node.raft.runtime_config().elect(true);
            }
        });
    }
    Json(json!({"elections_held_ms": body.ms})).into_response()
}

/// Asked by a leader handing over: start an election now.
async fn campaign(State(node): State<Shared>) -> HttpResponse {
    match node.raft.trigger().elect().await {
        Ok(()) => Json(json!({"campaigning": true})).into_response(),
        Err(error) => unknown(error),
    }
}

fn role(state: openraft::ServerState) -> Role {
    match state {
        openraft::ServerState::Leader => Role::Leader,
        openraft::ServerState::Follower => Role::Follower,
        openraft::ServerState::Candidate => Role::Candidate,
        openraft::ServerState::Learner => Role::Learner,
        openraft::ServerState::Shutdown => Role::Shutdown,
    }
}

async fn status_of(node: &Node) -> Status {
    let metrics = node.raft.metrics().borrow().clone();
    let data = node.state.data().await;
    let status = Status {
        id: node.id,
        state: role(metrics.state),
        term: metrics.current_term,
        leader: metrics.current_leader,
        last_log_index: metrics.last_log_index,
        commit_index: node.wal.committed_index(),
        vote_term: node.wal.vote_term(),
        disk_full: node.wal.disk_full(),
        applied_index: metrics.last_applied.map(|l| l.index),
        snapshot_index: metrics.snapshot.map(|l| l.index),
        purged_index: metrics.purged.map(|l| l.index),
        members: metrics.membership_config.membership().voter_ids().collect(),
        boot: node.boot.id,
        up_ms: node.boot.started.elapsed().as_millis() as u64,
        recovered_index: node.boot.recovered.index,
        recovered_commit: node.boot.recovered.commit,
        recovered_term: node.boot.recovered.term,
        matched: metrics.replication.as_ref().map(|replication| {
            replication
                .iter()
                .map(|(id, log_id)| (id.to_string(), log_id.map(|l| l.index)))
                .collect()
        }),
        state_digest: format!("{:016x}", digest(&data.kv)),
        keys: data.kv.len() as u64,
        result_checkpoints: Vec::new(),
    };
    drop(data);
    Status {
        result_checkpoints: node
            .state
            .checkpoints()
            .await
            .into_iter()
            .map(|(index, hash)| (index, format!("{hash:016x}")))
            .collect(),
        ..status
    }
}

async fn status(State(node): State<Shared>) -> impl IntoResponse {
    Json(status_of(&node).await)
}

fn digest(kv: &BTreeMap<String, String>) -> u64 {
    kv.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, (k, v)| {
        k.bytes()
            .chain([0])
            .chain(v.bytes())
            .chain([0])
            .fold(hash, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    })
}

async fn metrics(State(node): State<Shared>) -> impl IntoResponse {
    let status = status_of(&node).await;
    let number = |index: Option<u64>| index.unwrap_or(0);
    let is_leader = u64::from(status.leader == Some(node.id));
    format!(
        "# TYPE targetdb_term gauge\ntargetdb_term {}\n\
         # TYPE targetdb_is_leader gauge\ntargetdb_is_leader {is_leader}\n\
         # TYPE targetdb_last_log_index gauge\ntargetdb_last_log_index {}\n\
         # TYPE targetdb_commit_index gauge\ntargetdb_commit_index {}\n\
         # TYPE targetdb_applied_index gauge\ntargetdb_applied_index {}\n\
         # TYPE targetdb_snapshot_index gauge\ntargetdb_snapshot_index {}\n",
        status.term,
        number(status.last_log_index),
        number(status.commit_index),
        number(status.applied_index),
        number(status.snapshot_index),
    ) + &format!(
        "# TYPE targetdb_elections_total counter\ntargetdb_elections_total {}\n",
        node.elections.load(Ordering::Relaxed)
    ) + &node.wal.prometheus()
}
