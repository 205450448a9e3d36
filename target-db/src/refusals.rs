//! How a node turns a request down, in target-db-client's `Refusal`: the status, the problem in
//! words, and whether the request may still take effect.
use std::{collections::BTreeMap, sync::atomic::Ordering};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response as HttpResponse},
};
use openraft::{BasicNode, error::ForwardToLeader};
use target_db_client::{Outcome, Refusal};

use crate::{node::Node, types::NodeId};

/// Two members given one address, among the members a cluster would have: a cluster set up
/// that way sends one node's messages to another.
pub(crate) fn shared_address<'a>(
    members: impl IntoIterator<Item = (NodeId, &'a str)>,
) -> Option<HttpResponse> {
    let mut seen = BTreeMap::new();
    for (id, addr) in members {
        if let Some(first) = seen.insert(addr, id) {
            let refusal = Refusal::plain(format!(
                "nodes {first} and {id} are both given the address {addr}: each node needs its \
                 own (the --listen address it serves on)"
            ));
            return Some(refuse(StatusCode::UNPROCESSABLE_ENTITY, refusal));
        }
    }
    None
}

pub(crate) fn refuse(status: StatusCode, refusal: Refusal) -> HttpResponse {
    (status, Json(refusal)).into_response()
}

pub(crate) fn not_leader(forward: &ForwardToLeader<NodeId, BasicNode>) -> HttpResponse {
    let refusal = Refusal {
        leader_id: forward.leader_id,
        leader: forward.leader_node.as_ref().map(|n| n.addr.clone()),
        ..Refusal::new("not the leader", Outcome::NotApplied)
    };
    refuse(StatusCode::MISDIRECTED_REQUEST, refusal)
}

pub(crate) fn unknown(error: impl std::fmt::Display) -> HttpResponse {
    let refusal = Refusal::new(error.to_string(), Outcome::Unknown);
    refuse(StatusCode::SERVICE_UNAVAILABLE, refusal)
}

/// A node whose Raft core has stopped (a failed fsync stops it on purpose) cannot take a
/// request in: saying so definitely, rather than "unknown", keeps client histories checkable.
pub(crate) fn stopped(node: &Node) -> Option<HttpResponse> {
    let fatal = node.raft.metrics().borrow().running_state.clone().err()?;
    let refusal = Refusal::new(
        format!("this node has stopped ({fatal}); restart it to recover from its disk"),
        Outcome::NotApplied,
    );
    Some(refuse(StatusCode::SERVICE_UNAVAILABLE, refusal))
}

/// A node whose disk is full takes no new writes (they could only wait), but goes on serving
/// reads; it takes writes again once the log has caught up.
pub(crate) fn disk_full(node: &Node) -> Option<HttpResponse> {
    if !node.wal.disk_full() {
        return None;
    }
    let refusal = Refusal::new(
        "this node's disk is full: writes are refused until space returns (reads go on)",
        Outcome::NotApplied,
    );
    Some(refuse(StatusCode::INSUFFICIENT_STORAGE, refusal))
}

pub(crate) fn handing_off(node: &Node) -> Option<HttpResponse> {
    if !node.handing_off.load(Ordering::SeqCst) {
        return None;
    }
    let refusal = Refusal::new(
        "leadership is moving to another node: retry there in a moment",
        Outcome::NotApplied,
    );
    Some(refuse(StatusCode::SERVICE_UNAVAILABLE, refusal))
}
