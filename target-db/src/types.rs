//! What the cluster agrees on: client requests with their client id and sequence number, so a
//! retried write is applied once (the types are the client API's, in `target-db-client`).
use std::io::Cursor;

pub use target_db_client::{NodeId, Op, Request, Response};

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
