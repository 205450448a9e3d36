//! Raft messages between nodes: JSON over HTTP (POST /raft/append, /raft/vote,
//! /raft/snapshot, the last as a [`SnapshotChunk`]). A node that cannot be reached is reported
//! as such, so openraft backs off and retries; an error raised by the remote node comes back as
//! that error; a message the peer cannot read (another version of target-db) is named as such.
use base64::Engine as _;
use openraft::{
    BasicNode, LogId, RaftNetwork, RaftNetworkFactory, SnapshotMeta, Vote,
    error::{
        InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
        Unreachable,
    },
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use crate::{
    cluster_token::{self, ClusterToken},
    types::{NodeId, TypeConfig},
};

/// The largest Raft message a node reads. Above a web server's usual 2 MB: a snapshot chunk
/// (`SNAPSHOT_CHUNK_BYTES`, in base64) and a batch of appended entries of large values must fit;
/// a batch that does not is sent again in smaller ones.
pub const RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// A batch of appended entries is split to stay under this. openraft gives an append as long
/// as a heartbeat interval to be answered (100 ms by default), the follower's parsing and fsync
/// included: batches of MBs of large values took longer every time, and a lagging follower
/// never caught up.
pub const APPEND_BATCH_BYTES: usize = 512 << 10;

/// The bytes of a snapshot sent in one message (a third more in base64).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;

/// An InstallSnapshot message on the wire: openraft's fields, with the snapshot's bytes in
/// base64. openraft's own serde form writes bytes as a JSON array of numbers, about four times
/// their size and slow to parse: a follower took longer to read a snapshot of a few MB than
/// the leader gave the attempt, every attempt, and never caught up.
#[derive(Serialize, Deserialize)]
pub struct SnapshotChunk {
    vote: Vote<NodeId>,
    meta: SnapshotMeta<NodeId, BasicNode>,
    offset: u64,
    done: bool,
    data_base64: String,
}

impl From<&InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(request: &InstallSnapshotRequest<TypeConfig>) -> Self {
        SnapshotChunk {
            vote: request.vote,
            meta: request.meta.clone(),
            offset: request.offset,
            done: request.done,
            data_base64: base64::engine::general_purpose::STANDARD.encode(&request.data),
        }
    }
}

impl SnapshotChunk {
    /// openraft's request, or why the bytes are not base64.
    pub fn into_request(self) -> Result<InstallSnapshotRequest<TypeConfig>, base64::DecodeError> {
        Ok(InstallSnapshotRequest {
            vote: self.vote,
            meta: self.meta,
            offset: self.offset,
            data: base64::engine::general_purpose::STANDARD.decode(self.data_base64)?,
            done: self.done,
        })
    }
}

#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    durable: Option<watch::Receiver<Option<LogId<NodeId>>>>,
}

impl Network {
    /// `local`: the address outgoing connections come from. Each node on one machine has its
    /// own loopback address (127.0.0.N), and binding to it makes a partition by address cut the
    /// node's own requests too, not only the ones it answers.
    /// `token`: the cluster token every message carries (see `cluster_token`).
    pub fn new(local: Option<std::net::IpAddr>, token: Option<&ClusterToken>) -> Network {
        let client = reqwest::Client::builder()
            .local_address(local)
            .default_headers(cluster_token::headers(token))
            .build()
            .expect("an HTTP client with default settings");
        Network {
            client,
            durable: None,
        }
    }

    /// Never tells a follower a commit point past `durable`, the last log id on this node's
    /// disk (see `LogStore::durable`).
    pub fn commit_within(mut self, durable: watch::Receiver<Option<LogId<NodeId>>>) -> Network {
        self.durable = Some(durable);
        self
    }
}

pub struct Connection {
    client: reqwest::Client,
    target: NodeId,
    addr: String,
    durable: Option<watch::Receiver<Option<LogId<NodeId>>>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
            durable: self.durable.clone(),
        }
    }
}

impl Connection {
    /// `entries`: how many log entries the message carries (0 but for appends); a batch over
    /// `APPEND_BATCH_BYTES`, or too large for the peer, is reported to openraft as too large,
    /// with how many to send instead.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        entries: usize,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(request)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        if entries > 1 && body.len() > APPEND_BATCH_BYTES {
            let fitting = (entries * APPEND_BATCH_BYTES / body.len()).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting as u64),
            ));
        }
        let url = format!("http://{}/raft/{path}", self.addr);
        let response = self
            .client
            .post(url)
            .timeout(option.hard_ttl())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| RPCError::Unreachable(Unreachable::new(&error)))?;
        let status = response.status();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE && entries > 1 {
            let fewer = (entries / 2) as u64;
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fewer),
            ));
        }
        if status.is_client_error() {
            let reason = response.text().await.unwrap_or_default();
            let refused = std::io::Error::other(refusal(self.target, path, status, reason.trim()));
            return Err(RPCError::Network(NetworkError::new(&refused)));
        }
        let result: Result<Resp, E> = response
            .json()
            .await
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        result.map_err(|source| {
            RPCError::RemoteError(RemoteError {
                target: self.target,
                target_node: None,
                source,
            })
        })
    }
}

/// What a peer's 4xx answer to a Raft message means, for the sender's log.
fn refusal(target: NodeId, path: &str, status: reqwest::StatusCode, reason: &str) -> String {
    match status {
        reqwest::StatusCode::FORBIDDEN => format!(
            "node {target} refused the message: its cluster token is not this node's (give \
             every node the same --cluster-token-file)"
        ),
        // The peer names the problem itself (a message from the node it is).
        reqwest::StatusCode::CONFLICT => {
            format!("node {target} refused the {path} message: {reason}")
        }
        _ => format!(
            "node {target} could not read the {path} message (HTTP {status}: {reason}): is it \
             running another version of target-db? Run one version on every node"
        ),
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        mut request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if let Some(durable) = &self.durable {
            request.leader_commit = request.leader_commit.min(*durable.borrow());
        }
        let entries = request.entries.len();
        self.call("append", &request, entries, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &SnapshotChunk::from(&request), 0, &option)
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &request, 0, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use openraft::{CommittedLeaderId, network::RPCOption};

    use super::*;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    /// A peer on a real socket that records the commit point of each append it is sent.
    async fn recording_peer() -> (String, Arc<Mutex<Vec<Option<u64>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/raft/append",
            axum::routing::post(
                move |axum::Json(request): axum::Json<AppendEntriesRequest<TypeConfig>>| {
                    let record = record.clone();
                    async move {
                        record
                            .lock()
                            .unwrap()
                            .push(request.leader_commit.map(|l| l.index));
                        axum::Json(Ok::<_, RaftError<NodeId>>(
                            AppendEntriesResponse::<NodeId>::Success,
                        ))
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    async fn send_commit(network: &mut Network, addr: &str, committed: u64) {
        let mut connection = network
            .new_client(2, &BasicNode { addr: addr.into() })
            .await;
        let request = AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(9)),
            entries: Vec::new(),
            leader_commit: Some(log_id(committed)),
        };
        connection
            .append_entries(request, RPCOption::new(std::time::Duration::from_secs(5)))
            .await
            .unwrap();
    }

    /// openraft counts the leader's entries before they are on its disk; a follower told that
    /// commit point would apply what a crash of the leader could still take back.
    #[tokio::test]
    async fn followers_are_told_no_commit_point_past_the_leaders_disk() {
        let (addr, seen) = recording_peer().await;
        let (durable, on_disk) = watch::channel(Some(log_id(5)));
        let mut network = Network::new(None, None).commit_within(on_disk);
        send_commit(&mut network, &addr, 9).await;
        durable.send_replace(Some(log_id(9)));
        send_commit(&mut network, &addr, 9).await;
        send_commit(&mut network, &addr, 7).await;
        assert_eq!(*seen.lock().unwrap(), [Some(5), Some(9), Some(7)]);
    }
}
