//! What the cluster agrees on: client requests with their client id and sequence number, so a
//! retried write is applied once.
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

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

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// False only for a cas that found another value.
    pub ok: bool,
    /// The value before the operation.
    pub previous: Option<String>,
}
