//! The HTTP client every part of Faultline talks to target-db with. It sends the typed requests
//! of [`crate::api`], parses the answers, and says of each failure whether the request
//! definitely did not take effect, which a checker needs to know.
use std::time::Duration;

use reqwest::{RequestBuilder, header::HeaderMap};
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::api::{
    Outcome, Peers, ReadReply, Refusal, Request, Status, WriteReply, cluster_token_header,
};

#[derive(Debug, Error)]
pub enum Error {
    /// The connection was refused: the request never reached a node.
    #[error("{addr} refused the connection (is the node running, at that address?)")]
    Unreachable {
        addr: String,
        source: reqwest::Error,
    },
    /// Sent, but no answer came (a timeout, a reset): it may have taken effect.
    #[error("no answer from {addr}: {source}")]
    NoAnswer {
        addr: String,
        source: reqwest::Error,
    },
    /// The node answered with an error status and said why.
    #[error("{addr} refused ({status}): {}", refusal.error)]
    Refused {
        addr: String,
        status: u16,
        refusal: Refusal,
    },
    /// The node answered with something that is not target-db's API.
    #[error("{addr} answered {status} with a body that is not target-db's answer: {reason}")]
    BadAnswer {
        addr: String,
        status: u16,
        reason: String,
    },
    #[error("the cluster token is not a valid header value: {0}")]
    BadToken(String),
}

impl Error {
    /// Whether the request definitely did not take effect: never reached a node, or refused
    /// with outcome "not-applied".
    pub fn not_applied(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Refused { refusal, .. } => refusal.outcome == Some(Outcome::NotApplied),
            _ => false,
        }
    }

    /// The leader's address, when a node refused because it does not lead.
    pub fn leader(&self) -> Option<&str> {
        match self {
            Error::Refused { refusal, .. } if refusal.outcome == Some(Outcome::NotApplied) => {
                refusal.leader.as_deref()
            }
            _ => None,
        }
    }
}

/// A client of target-db nodes, addressed as `HOST:PORT` on each call.
#[derive(Clone, Debug, Default)]
pub struct Client {
    http: reqwest::Client,
    headers: HeaderMap,
    timeout: Option<Duration>,
    /// How many times a request refused by a non-leader is sent on to the leader it names.
    redirects: u32,
}

impl Client {
    pub fn new() -> Client {
        Client::default()
    }

    /// A client on an existing connection pool.
    pub fn with_http(http: reqwest::Client) -> Client {
        Client {
            http,
            ..Client::default()
        }
    }

    /// Each request gives up after `timeout` (its outcome is then unknown).
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// A request a follower refuses, naming the leader, is sent there, up to `redirects` times.
    /// A write keeps its (client, seq), so a redirected write never applies twice.
    pub fn following_leader(mut self, redirects: u32) -> Client {
        self.redirects = redirects;
        self
    }

    /// Sends the cluster token, which `/init`, `/admin/*` and `/raft/*` require when the nodes
    /// have one.
    pub fn token(mut self, token: &str) -> Result<Client, Error> {
        let (name, value) =
            cluster_token_header(token).map_err(|error| Error::BadToken(error.to_string()))?;
        self.headers.insert(name, value);
        Ok(self)
    }

    pub async fn status(&self, addr: &str) -> Result<Status, Error> {
        self.call(addr, |to| self.http.get(format!("http://{to}/status")))
            .await
    }

    /// Forms a new cluster of `peers`, sent to the node at `addr` (one of them).
    pub async fn init(&self, addr: &str, peers: &Peers) -> Result<serde_json::Value, Error> {
        self.post(addr, "/init", peers).await
    }

    pub async fn write(&self, addr: &str, request: &Request) -> Result<WriteReply, Error> {
        self.call(addr, |to| {
            self.http
                .post(format!("http://{to}/kv/write"))
                .json(request)
        })
        .await
    }

    pub async fn read(&self, addr: &str, key: &str) -> Result<ReadReply, Error> {
        self.call(addr, |to| {
            self.http
                .get(format!("http://{to}/kv/get"))
                .query(&[("key", key)])
        })
        .await
    }

    /// Any other call with a JSON body (the `/admin/*` routes), its answer as JSON.
    pub async fn post(
        &self,
        addr: &str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<serde_json::Value, Error> {
        self.call(addr, |to| {
            self.http.post(format!("http://{to}{path}")).json(body)
        })
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        addr: &str,
        build: impl Fn(&str) -> RequestBuilder,
    ) -> Result<T, Error> {
        let mut to = addr.to_owned();
        let mut redirects = self.redirects;
        loop {
            match self.once(&to, build(&to)).await {
                Err(error) if redirects > 0 && error.leader().is_some() => {
                    to = error.leader().unwrap_or_default().to_owned();
                    redirects -= 1;
                }
                answer => return answer,
            }
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        addr: &str,
        request: RequestBuilder,
    ) -> Result<T, Error> {
        let mut request = request.headers(self.headers.clone());
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|source| {
            let addr = addr.to_owned();
            if source.is_connect() {
                Error::Unreachable { addr, source }
            } else {
                Error::NoAnswer { addr, source }
            }
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|source| Error::NoAnswer {
            addr: addr.to_owned(),
            source,
        })?;
        let bad = |reason: serde_json::Error| Error::BadAnswer {
            addr: addr.to_owned(),
            status: status.as_u16(),
            reason: reason.to_string(),
        };
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(bad);
        }
        Err(Error::Refused {
            addr: addr.to_owned(),
            status: status.as_u16(),
            refusal: serde_json::from_slice(&body).map_err(bad)?,
        })
    }
}
