//! The operators' routes (`/admin/*`): membership changes, moving leadership, and the two calls
//! a leader handing over makes to the node it hands to (hold elections, campaign).
use std::{collections::BTreeSet, sync::atomic::Ordering, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response as HttpResponse},
    routing::post,
};
use openraft::{
    BasicNode, ChangeMembers,
    error::{ClientWriteError, ForwardToLeader, RaftError},
};
use serde::Deserialize;
use serde_json::json;
use target_db_client::{Outcome, Refusal};

use crate::{
    bad_request::Body,
    handoff::{HandoffError, transfer_leadership},
    node::Shared,
    refusals::{not_leader, refuse, shared_address, unknown},
    types::{NodeId, TypeConfig},
};

/// The `/admin/*` routes; the server puts them behind the cluster token.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/admin/add-learner", post(add_learner))
        .route("/admin/change-membership", post(change_membership))
        .route("/admin/promote", post(promote))
        .route("/admin/remove", post(remove))
        .route("/admin/transfer-leader", post(transfer_leader))
        .route("/admin/campaign", post(campaign))
        .route("/admin/hold-elections", post(hold_elections))
}

#[derive(Deserialize)]
struct Learner {
    id: NodeId,
    addr: String,
}

async fn add_learner(State(node): State<Shared>, Body(learner): Body<Learner>) -> HttpResponse {
    // The membership with the learner in it (a node given again replaces its old address).
    let clash = shared_address(
        node.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != learner.id)
            .map(|(id, member)| (*id, member.addr.as_str()))
            .chain([(learner.id, learner.addr.as_str())]),
    );
    if let Some(refusal) = clash {
        return refusal;
    }
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
