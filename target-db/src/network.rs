//! Raft messages between nodes: JSON over HTTP (POST /raft/append, /raft/vote,
//! /raft/snapshot). A node that cannot be reached is reported as such, so openraft backs off and
//! retries; an error raised by the remote node comes back as that error.
use openraft::{
    BasicNode, RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    cluster_token::{self, ClusterToken},
    types::{NodeId, TypeConfig},
};

#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
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
        Network { client }
    }
}

pub struct Connection {
    client: reqwest::Client,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("http://{}/raft/{path}", self.addr);
        let response = self
            .client
            .post(url)
            .timeout(option.hard_ttl())
            .json(request)
            .send()
            .await
            .map_err(|error| RPCError::Unreachable(Unreachable::new(&error)))?;
        if response.status() == reqwest::StatusCode::FORBIDDEN {
            let refused = std::io::Error::other(format!(
                "node {} refused the message: its cluster token is not this node's (give every node the same --cluster-token-file)",
                self.target
            ));
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

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &request, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &request, &option).await
    }
}
