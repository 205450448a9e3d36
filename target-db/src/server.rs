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
use std::{collections::BTreeMap, sync::atomic::Ordering};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    response::{IntoResponse, Response as HttpResponse},
    routing::{get, post},
};
use openraft::{
    BasicNode, Vote,
    error::{CheckIsLeaderError, ClientWriteError, RaftError},
    raft::{AppendEntriesRequest, VoteRequest},
};
use serde::Deserialize;
use serde_json::json;
use target_db_client::{ReadReply, Refusal, Role, Status, WriteReply};

pub use crate::node::{Boot, Node, Recovered, count_elections};
use crate::{
    admin,
    bad_request::{Body, Params},
    cluster_token,
    network::{RAFT_MESSAGE_BYTES, SnapshotChunk},
    node::Shared,
    refusals::{disk_full, handing_off, not_leader, refuse, shared_address, stopped, unknown},
    types::{NodeId, Request, TypeConfig},
};

pub fn router(node: Shared) -> Router {
    // What peers and operators call: with a cluster token, only requests carrying it get here.
    let members_only = Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/init", post(init))
        .merge(admin::routes())
        .layer(DefaultBodyLimit::max(RAFT_MESSAGE_BYTES))
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
) -> HttpResponse {
    if let Some(refusal) = from_itself(&node, &request.vote) {
        return refusal;
    }
    Json(node.raft.append_entries(request).await).into_response()
}

async fn vote(
    State(node): State<Shared>,
    Json(request): Json<VoteRequest<NodeId>>,
) -> HttpResponse {
    if let Some(refusal) = from_itself(&node, &request.vote) {
        return refusal;
    }
    Json(node.raft.vote(request).await).into_response()
}

/// A Raft message that names this node as its sender came back to it: another member's address
/// reaches this node (two nodes given one address). Taking it in would have this node follow
/// or vote for itself as if it were a peer, which openraft does not expect (its core stops).
fn from_itself(node: &Node, vote: &Vote<NodeId>) -> Option<HttpResponse> {
    if vote.leader_id().voted_for() != Some(node.id) {
        return None;
    }
    let problem = format!(
        "node {id} got a Raft message from node {id}, itself: the cluster's membership gives \
         another node an address that reaches node {id}; give each node its own address",
        id = node.id
    );
    tracing::error!("{problem}");
    Some(refuse(StatusCode::CONFLICT, Refusal::plain(problem)))
}

async fn snapshot(State(node): State<Shared>, Json(chunk): Json<SnapshotChunk>) -> HttpResponse {
    match chunk.into_request() {
        Ok(request) => {
            if let Some(refusal) = from_itself(&node, &request.vote) {
                return refusal;
            }
            Json(node.raft.install_snapshot(request).await).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("the snapshot chunk's data_base64 is not base64: {error}"),
        )
            .into_response(),
    }
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
            let value = node.state.get(&query.key).await;
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
    if let Some(refusal) = shared_address(peers.iter().map(|(id, addr)| (*id, addr.as_str()))) {
        return refusal;
    }
    let members: BTreeMap<NodeId, BasicNode> = peers
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    match node.raft.initialize(members).await {
        Ok(()) => Json(json!({"initialized": true})).into_response(),
        Err(error) => refuse(StatusCode::CONFLICT, Refusal::plain(error.to_string())),
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
    // Raft's numbers only: a scrape must not pay for the state digest that /status computes.
    let raft = node.raft.metrics().borrow().clone();
    let number = |index: Option<u64>| index.unwrap_or(0);
    let is_leader = u64::from(raft.current_leader == Some(node.id));
    format!(
        "# TYPE targetdb_term gauge\ntargetdb_term {}\n\
         # TYPE targetdb_is_leader gauge\ntargetdb_is_leader {is_leader}\n\
         # TYPE targetdb_last_log_index gauge\ntargetdb_last_log_index {}\n\
         # TYPE targetdb_commit_index gauge\ntargetdb_commit_index {}\n\
         # TYPE targetdb_applied_index gauge\ntargetdb_applied_index {}\n\
         # TYPE targetdb_snapshot_index gauge\ntargetdb_snapshot_index {}\n",
        raft.current_term,
        number(raft.last_log_index),
        number(node.wal.committed_index()),
        number(raft.last_applied.map(|l| l.index)),
        number(raft.snapshot.map(|l| l.index)),
    ) + &format!(
        "# TYPE targetdb_elections_total counter\ntargetdb_elections_total {}\n",
        node.elections.load(Ordering::Relaxed)
    ) + &node.wal.prometheus()
}
