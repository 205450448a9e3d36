//! The database under torture, behind one interface: how a node is started, how the cluster is
//! initialised, how a client reads and writes, and what a node says about itself. The bundled
//! target-db is one implementation and etcd another; every check, fault and report of the
//! harness asks the target, never a database by name.
//!
//! A node's status is given in the harness's own words (see `docs/targets.md`): `state`
//! ("Leader" when the node says it leads), `term`, `leader` (the node id it follows),
//! `commit_index` and `applied_index`. A target that cannot say one leaves it out, and the
//! checks that need it say "not applicable".
mod etcd;
mod target_db;

use std::{
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

use super::nemesis::Fault;
pub use target_db::status as target_db_status;

/// How a client request ended.
pub enum Outcome {
    /// Answered; for a write, the answer in the harness's words: `previous` (the value the key
    /// held before, when the target tells) and, for a cas, `ok`.
    Ok(Value),
    /// Definitely not applied.
    Fail,
    /// May or may not have applied (a timeout, an error after the request was sent).
    Unknown,
}

/// Which database the cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// The bundled replicated key-value database (openraft, its own WAL and snapshots).
    TargetDb,
    /// etcd 3.4 from Debian's etcd-server package, through its v3 JSON gateway.
    Etcd,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::TargetDb => "target-db",
            TargetKind::Etcd => "etcd",
        }
    }
}

/// One node as the target sees it: its id (1-based), loopback address and data directory.
pub struct NodePlace<'a> {
    pub id: usize,
    pub ip: &'a str,
    pub data_dir: &'a Path,
    /// Every node's ip, node 1 first.
    pub peers: &'a [String],
}

/// The database under torture. Cheap to clone; clones share what they learnt of the cluster.
#[derive(Clone)]
pub struct Target {
    kind: TargetKind,
    /// etcd: member id -> node id, learnt from the nodes' own status.
    members: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl Target {
    pub fn new(kind: TargetKind) -> Target {
        Target {
            kind,
            members: Arc::default(),
        }
    }

    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// As the report names it.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            TargetKind::TargetDb => "target-db (openraft, own WAL)",
            TargetKind::Etcd => "etcd 3.4 (Debian's etcd-server, v3 JSON gateway)",
        }
    }

    /// The port clients talk to on every node's address.
    pub fn client_port(&self) -> u16 {
        match self.kind {
            TargetKind::TargetDb => target_db::PORT,
            TargetKind::Etcd => etcd::CLIENT_PORT,
        }
    }

    /// Its write-ahead log files, relative to the node's faultfs mount (a faultfs path glob).
    pub fn log_glob(&self) -> &'static str {
        match self.kind {
            TargetKind::TargetDb => "db/wal/*",
            TargetKind::Etcd => "db/member/wal/*",
        }
    }

    /// Whether the node's data directory is made before its first start, as a package makes
    /// it (etcd's /var/lib/etcd); otherwise the database makes it, and making that durable is
    /// its own job (target-db's is).
    pub fn data_dir_made_by_installer(&self) -> bool {
        self.kind == TargetKind::Etcd
    }

    /// Whether the harness may send a write again after an unknown outcome: only a database
    /// that recognises a request it has applied (client id and sequence number) keeps a resent
    /// write from applying twice.
    pub fn deduplicates(&self) -> bool {
        self.kind == TargetKind::TargetDb
    }

    /// Why `fault` cannot be applied to this target, if it cannot: it needs the database's
    /// own admin calls or the layout of its files.
    pub fn refuses(&self, fault: Fault) -> Option<String> {
        match self.kind {
            TargetKind::TargetDb => None,
            TargetKind::Etcd => etcd::refuses(fault),
        }
    }

    /// The command that starts (or restarts, on the same data directory) one node.
    pub fn start_command(&self, program: &Path, node: &NodePlace, flags: &[String]) -> Command {
        match self.kind {
            TargetKind::TargetDb => target_db::start_command(program, node, flags),
            TargetKind::Etcd => etcd::start_command(node, flags),
        }
    }

    /// Makes the started nodes one cluster (target-db: `/init` on node 1; etcd bootstraps
    /// itself from its flags) and learns what it needs of it.
    pub async fn initialise(
        &self,
        http: &reqwest::Client,
        addrs: &[String],
        settle: Duration,
    ) -> anyhow::Result<()> {
        match self.kind {
            TargetKind::TargetDb => target_db::initialise(http, addrs, settle).await,
            TargetKind::Etcd => etcd::initialise(self, http, addrs, settle).await,
        }
    }

    /// What the node at `addr` says of itself, in the harness's words; None if it did not
    /// answer within a second.
    pub async fn status(&self, http: &reqwest::Client, addr: &str) -> Option<Value> {
        match self.kind {
            TargetKind::TargetDb => target_db::status(http, addr).await,
            TargetKind::Etcd => etcd::status(self, http, addr).await,
        }
    }

    /// A digest of the node's whole state with the log index it was taken at: two nodes that
    /// applied the same entries give the same.
    pub async fn digest(&self, http: &reqwest::Client, addr: &str) -> Option<(u64, String)> {
        match self.kind {
            TargetKind::TargetDb => {
                let status = target_db::status(http, addr).await?;
                let digest = &status["state_digest"];
                Some((status["applied_index"].as_u64()?, digest.to_string()))
                    .filter(|_| !digest.is_null())
            }
            TargetKind::Etcd => etcd::digest(http, addr).await,
        }
    }

    /// A write, in the workload's words: `{"client", "seq", "op": "put"|"cas"|"delete", "key",
    /// "value" | "from", "to"}`.
    pub async fn write(
        &self,
        http: &reqwest::Client,
        addr: &str,
        body: &Value,
        timeout: Duration,
    ) -> Outcome {
        match self.kind {
            TargetKind::TargetDb => target_db::write(http, addr, body, timeout).await,
            TargetKind::Etcd => etcd::write(http, addr, body, timeout).await,
        }
    }

    /// A linearizable read of `key`: Ok(the value, or null when the key is absent).
    pub async fn read(
        &self,
        http: &reqwest::Client,
        addr: &str,
        key: &str,
        timeout: Duration,
    ) -> Outcome {
        match self.kind {
            TargetKind::TargetDb => target_db::read(http, addr, key, timeout).await,
            TargetKind::Etcd => etcd::read(http, addr, key, timeout).await,
        }
    }

    /// Whether a line of a node's log shows a panic.
    pub fn is_panic(&self, line: &str) -> bool {
        match self.kind {
            TargetKind::TargetDb => line.contains("panicked at"),
            TargetKind::Etcd => etcd::is_panic(line),
        }
    }

    /// Whether a line of a node's log says why it stopped.
    pub fn is_fatal(&self, line: &str) -> bool {
        match self.kind {
            TargetKind::TargetDb => line.starts_with("Error:"),
            TargetKind::Etcd => etcd::is_fatal(line),
        }
    }
}

/// The JSON answer to a request, or None if none came within `timeout`.
pub async fn json_answer(request: reqwest::RequestBuilder, timeout: Duration) -> Option<Value> {
    request
        .timeout(timeout)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}
