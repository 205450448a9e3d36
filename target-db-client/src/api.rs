//! target-db's client API as types: what a client sends, what a node answers, and how it refuses.
//! The server serialises these and the client parses them, so the wire format is written here
//! once.
//!
//! - `POST /kv/write` a [`Request`]: 200 with a [`WriteReply`] once committed and applied;
//!   otherwise a [`Refusal`] (421 with the leader's address off the leader, 503 or 507
//!   "not-applied" when the write definitely did not happen, 503 "unknown" when it may have).
//! - `GET /kv/get?key=K`: 200 with a [`ReadReply`] (a linearizable read); a [`Refusal`] otherwise.
//! - `POST /init` [`Peers`]; `GET /status`: a [`Status`].
use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// Every node of a new cluster, by id: the body of `POST /init`.
pub type Peers = BTreeMap<NodeId, String>;

/// The header that carries the cluster token to `/raft/*`, `/init` and `/admin/*`.
pub const CLUSTER_TOKEN_HEADER: &str = "x-cluster-token";

/// The cluster-token header with `token` as its value, marked sensitive so that no log or
/// debug print shows it. Fails when the token is not header text.
pub fn cluster_token_header(
    token: &str,
) -> Result<(HeaderName, HeaderValue), reqwest::header::InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(token)?;
    value.set_sensitive(true);
    Ok((HeaderName::from_static(CLUSTER_TOKEN_HEADER), value))
}

/// A write, with who sent it: `(client, seq)` makes retries idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub client: u64,
    pub seq: u64,
    /// Flattened: `{"client":1,"seq":1,"op":"put","key":"k","value":"v"}`.
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Put {
        key: String,
        value: String,
    },
    /// Compare-and-set: `from: None` means "only if absent".
    Cas {
        key: String,
        from: Option<String>,
        to: String,
    },
    Delete {
        key: String,
    },
}

/// What a write did, as the state machine applied it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// False only for a cas that found another value.
    pub ok: bool,
    /// The value before the operation.
    pub previous: Option<String>,
}

/// The answer to a write that committed: what it did and the log index it took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    pub response: Response,
    pub index: u64,
}

/// The answer to a read: the key's value, or `None` when the key is absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    pub key: String,
    pub value: Option<String>,
}

/// Whether a refused request may still take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It definitely did not happen: safe to send elsewhere.
    NotApplied,
    /// It may have happened, or may still.
    Unknown,
}

/// A request the node did not carry out: the problem in words and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
    /// Absent on refusals that say nothing about a write (a forbidden admin call, a second
    /// `/init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The leader this node knows of, when it is not the leader itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<NodeId>,
    /// That leader's address: where to send the request instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl Refusal {
    pub fn new(error: impl Into<String>, outcome: Outcome) -> Refusal {
        Refusal {
            error: error.into(),
            outcome: Some(outcome),
            leader_id: None,
            leader: None,
        }
    }

    /// A refusal that concerns no write.
    pub fn plain(error: impl Into<String>) -> Refusal {
        Refusal {
            error: error.into(),
            outcome: None,
            leader_id: None,
            leader: None,
        }
    }
}

/// A node's role in its Raft group, as `/status` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// `GET /status`: where a node stands, from its Raft core, its disk and its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub state: Role,
    pub term: u64,
    /// The leader this node follows (itself when it leads).
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    /// The commit point as written on this node's disk.
    pub commit_index: Option<u64>,
    /// The term of the vote on disk; `term` may run ahead of it while a vote is written.
    pub vote_term: u64,
    /// Whether the disk is full (writes are refused until space returns).
    pub disk_full: bool,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// The voters of the membership in effect.
    pub members: Vec<NodeId>,
    /// Different for every start of the node.
    pub boot: u64,
    pub up_ms: u64,
    /// What the node recovered from its disk when it started.
    pub recovered_index: Option<u64>,
    pub recovered_commit: Option<u64>,
    pub recovered_term: u64,
    /// A leader's view of how far each follower's log is known to match (acknowledged, so
    /// durable on that follower), by node id; `None` on a node that does not lead.
    pub matched: Option<BTreeMap<String, Option<u64>>>,
    /// A digest of the whole key-value state, so a checker can compare nodes cheaply.
    pub state_digest: String,
    pub keys: u64,
    /// `(index, results hash)` every 1000 indexes: replicas must agree at each.
    pub result_checkpoints: Vec<(u64, String)>,
}

impl Status {
    pub fn leads(&self) -> bool {
        self.state == Role::Leader
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_flat_json_and_reads_back() {
        let request = Request {
            client: 1,
            seq: 2,
            op: Op::Cas {
                key: "k".into(),
                from: None,
                to: "v".into(),
            },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"client":1,"seq":2,"op":"cas","key":"k","from":null,"to":"v"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
    }

    #[test]
    fn a_refusal_names_its_outcome_in_kebab_case_and_omits_what_it_lacks() {
        let refusal = Refusal::new("not the leader", Outcome::NotApplied);
        assert_eq!(
            serde_json::to_string(&refusal).unwrap(),
            r#"{"error":"not the leader","outcome":"not-applied"}"#
        );
        let forbidden: Refusal = serde_json::from_str(r#"{"error":"send the token"}"#).unwrap();
        assert_eq!(forbidden, Refusal::plain("send the token"));
    }
}
