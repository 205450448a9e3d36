//! What the cluster agrees on: batches of client requests, each with its client id and sequence
//! number, so a retried write is applied once (the requests are the client API's types, in
//! `target-db-client`).
use std::{fmt, io::Cursor};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{
        MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer, value::SeqAccessDeserializer,
    },
};
pub use target_db_client::{NodeId, Op, Request, Response};

/// The client writes one log entry carries: the writes that reached the leader while earlier
/// entries were on their way share one entry, one append and one fsync (see `batcher`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Batch(pub Vec<Request>);

impl From<Request> for Batch {
    fn from(request: Request) -> Self {
        Batch(vec![request])
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} client writes", self.0.len())
    }
}

/// Logs written before entries carried batches (2026-12-07) hold one request per entry, as a
/// JSON object: read as a batch of one.
impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = Batch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of client requests, or one request")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Batch, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Batch)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Batch, A::Error> {
                Request::deserialize(MapAccessDeserializer::new(map)).map(Batch::from)
            }
        }
        deserializer.deserialize_any(BatchVisitor)
    }
}

/// Each request's response, in the batch's order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Responses(pub Vec<Response>);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = Responses,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
