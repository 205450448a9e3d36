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
mod file_classes;
pub mod spec;
mod target_db;

pub use file_classes::{ETCD_CLASSES, FileClass, TARGET_DB_CLASSES};

/// Whether a status in the harness's words (above) says the node leads.
pub fn says_it_leads(status: &serde_json::Value) -> bool {
    status["state"] == "Leader"
}

use std::{
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::poll::wait_for;
pub use etcd::start_command as etcd_start_command;
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

#[derive(Clone)]
enum Backend {
    TargetDb,
    Etcd,
    Spec(Arc<spec::SpecTarget>),
}

/// The database under torture. Cheap to clone; clones share what they learnt of the cluster.
#[derive(Clone)]
pub struct Target {
    backend: Backend,
    /// etcd: member id -> node id, learnt from the nodes' own status.
    members: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    /// How many nodes the cluster has (known once it is initialised).
    nodes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Target {
    pub fn new(kind: TargetKind) -> Target {
        Target::with(match kind {
            TargetKind::TargetDb => Backend::TargetDb,
            TargetKind::Etcd => Backend::Etcd,
        })
    }

    /// The database a spec file describes (`--target-spec`).
    pub fn from_spec(path: &Path) -> Result<Target, spec::SpecError> {
        Ok(Target::with(Backend::Spec(Arc::new(
            spec::SpecTarget::load(path)?,
        ))))
    }

    fn with(backend: Backend) -> Target {
        Target {
            backend,
            members: Arc::default(),
            nodes: Arc::default(),
        }
    }

    /// Short, for logs and file names.
    pub fn name(&self) -> String {
        match &self.backend {
            Backend::TargetDb => "target-db".into(),
            Backend::Etcd => "etcd".into(),
            Backend::Spec(spec) => spec.spec.name.clone(),
        }
    }

    pub fn is_target_db(&self) -> bool {
        matches!(self.backend, Backend::TargetDb)
    }

    /// As the report names it.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::TargetDb => "target-db (openraft, own WAL)".into(),
            Backend::Etcd => "etcd 3.4 (Debian's etcd-server, v3 JSON gateway)".into(),
            Backend::Spec(spec) if spec.spec.description.is_empty() => {
                format!("{} (target spec)", spec.spec.name)
            }
            Backend::Spec(spec) => format!("{}: {}", spec.spec.name, spec.spec.description),
        }
    }

    /// How a target other than target-db (whose shape the seed draws) stores its data, as the
    /// report says it.
    pub fn own_storage(&self) -> String {
        match &self.backend {
            Backend::Etcd => etcd::STORAGE.into(),
            _ => format!("{}'s own", self.name()),
        }
    }

    /// The port clients talk to on every node's address.
    pub fn client_port(&self) -> u16 {
        match &self.backend {
            Backend::TargetDb => target_db::PORT,
            Backend::Etcd => etcd::CLIENT_PORT,
            Backend::Spec(spec) => spec.spec.client_port,
        }
    }

    /// Its write-ahead log files, relative to the node's faultfs mount (a faultfs path glob).
    pub fn log_glob(&self) -> String {
        match &self.backend {
            Backend::TargetDb => "db/wal/*".into(),
            Backend::Etcd => "db/member/wal/*".into(),
            Backend::Spec(spec) => format!("db/{}", spec.spec.log),
        }
    }

    /// The directory the log's files are created in (the log glob's parent): its fsync is what
    /// makes a new log file's name durable.
    pub fn log_dir(&self) -> String {
        let glob = self.log_glob();
        match glob.rsplit_once('/') {
            Some((dir, _)) => dir.to_owned(),
            None => glob,
        }
    }

    /// Whether its nodes report a digest of their state (for "nodes converge").
    pub fn has_digest(&self) -> bool {
        match &self.backend {
            Backend::Spec(spec) => spec.spec.digest.is_some(),
            _ => true,
        }
    }

    /// Whether its nodes may report commit and applied indexes (for "restarted nodes rejoin";
    /// a spec's status command may still leave them out).
    pub fn reports_indexes(&self) -> bool {
        match &self.backend {
            Backend::Spec(spec) => spec.spec.status.is_some(),
            _ => true,
        }
    }

    /// Why a cluster of `nodes` of this target cannot name a leader, if it cannot.
    pub fn leaderless(&self, nodes: usize) -> Option<String> {
        match &self.backend {
            Backend::Spec(spec) => spec.leaderless(nodes),
            _ => None,
        }
    }

    /// Whether a panic can be told from its log.
    pub fn has_panic_marker(&self) -> bool {
        !matches!(self.backend, Backend::Spec(_))
    }

    /// Why the run cannot go on, if something the target depends on broke (a client program
    /// that answered nonsense).
    pub fn broken(&self) -> Option<String> {
        match &self.backend {
            Backend::Spec(spec) => spec.broken.lock().expect("broken poisoned").clone(),
            _ => None,
        }
    }

    /// Whether the node's data directory is made before its first start, as a package makes
    /// it (etcd's /var/lib/etcd); otherwise the database makes it, and making that durable is
    /// its own job (target-db's is).
    pub fn data_dir_made_by_installer(&self) -> bool {
        match &self.backend {
            Backend::TargetDb => false,
            Backend::Etcd => true,
            Backend::Spec(spec) => spec.spec.data_dir_made_by_installer,
        }
    }

    /// Whether the harness may send a write again after an unknown outcome: only a database
    /// that recognises a request it has applied (client id and sequence number) keeps a resent
    /// write from applying twice.
    pub fn deduplicates(&self) -> bool {
        self.is_target_db()
    }

    /// Its classes of files, by path globs on the node's mount, where crash points go (none
    /// for a spec's database: crash points are refused for it).
    pub fn file_classes(&self) -> &'static [FileClass] {
        match self.backend {
            Backend::TargetDb => TARGET_DB_CLASSES,
            Backend::Etcd => ETCD_CLASSES,
            Backend::Spec(_) => &[],
        }
    }

    /// The command that starts (or restarts, on the same data directory) one node.
    pub fn start_command(&self, program: &Path, node: &NodePlace, flags: &[String]) -> Command {
        match &self.backend {
            Backend::TargetDb => target_db::start_command(program, node, flags),
            Backend::Etcd => etcd::start_command(node, flags),
            Backend::Spec(spec) => spec.start_command(node),
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
        self.nodes
            .store(addrs.len(), std::sync::atomic::Ordering::Relaxed);
        match &self.backend {
            Backend::TargetDb => target_db::initialise(http, addrs, settle).await,
            Backend::Etcd => etcd::initialise(self, http, addrs, settle).await,
            Backend::Spec(spec) => {
                // One deadline for all the nodes: they start together.
                let deadline = Instant::now() + settle;
                for (index, addr) in addrs.iter().enumerate() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ready =
                        wait_for(left, Duration::from_millis(100), || spec.ready(addr)).await;
                    anyhow::ensure!(
                        ready,
                        "n{} ({addr}) of {} never became ready within {} s: see node{}/{}.log in the run directory",
                        index + 1,
                        spec.spec.name,
                        settle.as_secs(),
                        index + 1,
                        spec.spec.name
                    );
                }
                Ok(())
            }
        }
    }

    /// What the node at `addr` says of itself, in the harness's words; None if it did not
    /// answer within a second.
    pub async fn status(&self, http: &reqwest::Client, addr: &str) -> Option<Value> {
        match &self.backend {
            Backend::TargetDb => target_db::status(http, addr).await,
            Backend::Etcd => etcd::status(self, http, addr).await,
            Backend::Spec(spec) => {
                let nodes = self.nodes.load(std::sync::atomic::Ordering::Relaxed);
                spec.status(addr, nodes).await
            }
        }
    }

    /// A digest of the node's whole state with the log index it was taken at: two nodes that
    /// applied the same entries give the same.
    pub async fn digest(&self, http: &reqwest::Client, addr: &str) -> Option<(u64, String)> {
        match &self.backend {
            Backend::TargetDb => {
                let status = target_db::status(http, addr).await?;
                let digest = &status["state_digest"];
                Some((status["applied_index"].as_u64()?, digest.to_string()))
                    .filter(|_| !digest.is_null())
            }
            Backend::Etcd => etcd::digest(http, addr).await,
            Backend::Spec(spec) => spec.digest(addr).await,
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
        match &self.backend {
            Backend::TargetDb => target_db::write(http, addr, body, timeout).await,
            Backend::Etcd => etcd::write(http, addr, body, timeout).await,
            Backend::Spec(spec) => {
                let mut request = body.clone();
                request["node"] = Value::from(addr);
                if let Some(object) = request.as_object_mut() {
                    object.remove("client");
                    object.remove("seq");
                }
                spec.call(request, timeout).await
            }
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
        match &self.backend {
            Backend::TargetDb => target_db::read(http, addr, key, timeout).await,
            Backend::Etcd => etcd::read(http, addr, key, timeout).await,
            Backend::Spec(spec) => {
                let request = serde_json::json!({"node": addr, "op": "get", "key": key});
                match spec.call(request, timeout).await {
                    Outcome::Ok(reply) => Outcome::Ok(reply["value"].clone()),
                    other => other,
                }
            }
        }
    }

    /// Whether a line of a node's log shows a panic.
    pub fn is_panic(&self, line: &str) -> bool {
        match &self.backend {
            Backend::TargetDb => line.contains("panicked at"),
            Backend::Etcd => etcd::is_panic(line),
            Backend::Spec(_) => false,
        }
    }

    /// Whether a line of a node's log says why it stopped.
    pub fn is_fatal(&self, line: &str) -> bool {
        match &self.backend {
            Backend::TargetDb => line.starts_with("Error:"),
            Backend::Etcd => etcd::is_fatal(line),
            Backend::Spec(_) => false,
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
