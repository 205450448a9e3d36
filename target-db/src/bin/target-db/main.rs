//! `target-db`: a replicated key-value database on openraft with its own write-ahead log.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use target_db::{
    cluster_token::ClusterToken,
    data_dir::{check_claim, sync_before_reading},
    log_store::LogOptions,
    types::NodeId,
    wal::WalOptions,
};
use tracing_subscriber::EnvFilter;

mod client_cli;
mod serve;

use client_cli::{answered, client, client_with, random_client_id};
use serve::serve;

#[derive(Parser)]
#[command(
    name = "target-db",
    version,
    about = "A replicated key-value database (Raft with openraft, its own write-ahead log).",
    after_help = "Example, three nodes on one machine:\n  \
        target-db serve --id 1 --data-dir /tmp/db1 --listen 127.0.0.1:7001 &\n  \
        target-db serve --id 2 --data-dir /tmp/db2 --listen 127.0.0.1:7002 &\n  \
        target-db serve --id 3 --data-dir /tmp/db3 --listen 127.0.0.1:7003 &\n  \
        target-db init --addr 127.0.0.1:7001 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003\n  \
        target-db client --addr 127.0.0.1:7001 put k v"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node until SIGTERM or Ctrl-C; a leader first hands leadership to a caught-up voter.
    Serve {
        #[arg(long)]
        id: NodeId,
        #[arg(long)]
        data_dir: PathBuf,
        /// The cluster's name, recorded in the data directory at first start; a directory of
        /// another cluster is refused, so a wrong path cannot mix two clusters' data.
        #[arg(long, default_value = "target-db")]
        cluster: String,
        /// Address for both peers and clients, e.g. 127.0.0.1:7001.
        #[arg(long)]
        listen: String,
        /// Build a snapshot (and purge the log before it) every this many entries. The log
        /// (and the memory holding it) grows to this many entries between snapshots.
        #[arg(long, default_value_t = serve::RaftSettings::DEFAULT.snapshot_every)]
        snapshot_every: u64,
        /// Bytes per write-ahead log segment.
        #[arg(long, default_value_t = 64 << 20)]
        segment_bytes: u64,
        /// How often a leader sends heartbeats, in ms. openraft also gives every append to a
        /// follower this long to be answered (its fsync included): a follower whose disk takes
        /// longer is never acknowledged while writes keep coming. Raise it on slow disks.
        #[arg(long, default_value_t = serve::RaftSettings::DEFAULT.heartbeat_ms)]
        heartbeat_ms: u64,
        /// How long a follower waits without hearing from a leader before it campaigns, in ms
        /// (each node picks at random between this and twice this); also the leader's lease.
        /// Must be more than twice --heartbeat-ms.
        #[arg(long, default_value_t = serve::RaftSettings::DEFAULT.election_timeout_ms)]
        election_timeout_ms: u64,
        /// UNSAFE: never fsync the write-ahead log.
        #[arg(long)]
        unsafe_no_fsync: bool,
        /// UNSAFE: do not fsync the directory after creating a segment.
        #[arg(long)]
        unsafe_no_dir_fsync: bool,
        /// UNSAFE: log a failed fsync and carry on acknowledging writes.
        #[arg(long)]
        unsafe_ignore_fsync_error: bool,
        /// UNSAFE: recovery trusts records without checking their CRC.
        #[arg(long)]
        unsafe_skip_checksum: bool,
        /// UNSAFE: at start, read the data directory as it is, without first fsyncing it: what
        /// a killed process wrote but never synced is then taken for durable.
        #[arg(long)]
        unsafe_trust_page_cache: bool,
        /// UNSAFE: tell followers the commit point as soon as a majority has the entries, the
        /// leader's own still unsynced among them, instead of only what the leader's disk holds:
        /// a follower may apply an entry a crash of the leader takes back.
        #[arg(long)]
        unsafe_tell_unsynced_commit: bool,
        /// Write and fsync each of the leader's appends before its replication starts, and a
        /// follower's commit point as soon as it moves, instead of staging them for the next
        /// fsync (the leader's entries with the commit point, a follower's commit point with
        /// its next append; docs/target-db.md). Costs about half the puts/s at 16 and 64
        /// clients; for comparisons only, the durability rules are the same.
        #[arg(long)]
        no_stage_writes: bool,
        /// A file holding the cluster's shared secret (one line; the same file on every node).
        /// Raft messages, /init and /admin/* then need it, so a process that can reach the port
        /// cannot vote or change the cluster. Without it, anything that reaches the port is
        /// trusted as a peer: listen on loopback or a private network only.
        #[arg(long, value_name = "FILE")]
        cluster_token_file: Option<PathBuf>,
    },
    /// Bootstrap the cluster once, through any one node.
    Init {
        #[arg(long, value_parser = host_and_port)]
        addr: String,
        /// ID=ADDR,ID=ADDR,...
        #[arg(long)]
        peers: String,
        /// The cluster token, if the nodes were started with one.
        #[arg(long, value_name = "FILE")]
        cluster_token_file: Option<PathBuf>,
    },
    /// Read and write keys; a write sent to a follower is redirected to the leader.
    Client {
        #[arg(long, value_parser = host_and_port)]
        addr: String,
        /// Identifies the client; with --seq it makes a retried write apply once: give the same
        /// pair again only to retry a write whose outcome you do not know. Default: a new random
        /// id for every invocation, so each one is a client of its own (with a fixed id, a second
        /// write with the same --seq would be taken for a retry of the first and not applied).
        #[arg(long)]
        client_id: Option<u64>,
        /// The write's sequence number within the client (see --client-id).
        #[arg(long, default_value_t = 1)]
        seq: u64,
        #[command(subcommand)]
        op: ClientOp,
    },
    /// Cluster administration.
    Admin {
        #[arg(long, value_parser = host_and_port)]
        addr: String,
        /// The cluster token, if the nodes were started with one.
        #[arg(long, value_name = "FILE")]
        cluster_token_file: Option<PathBuf>,
        #[command(subcommand)]
        op: AdminOp,
    },
}

#[derive(Subcommand)]
enum ClientOp {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    /// Set KEY to NEW if it is OLD (`-` for "absent").
    Cas {
        key: String,
        old: String,
        new: String,
    },
    Delete {
        key: String,
    },
}

#[derive(Subcommand)]
enum AdminOp {
    Status,
    AddLearner {
        id: NodeId,
        learner_addr: String,
    },
    /// Make a learner (added with add-learner, caught up) a voter.
    Promote {
        id: NodeId,
    },
    /// Take a voter out of the cluster.
    Remove {
        id: NodeId,
    },
    /// Make these ids the voters.
    ChangeMembership {
        members: Vec<NodeId>,
    },
    /// Move leadership to another voter (send it to the leader). The leader stops taking
    /// writes, waits until the target has its whole log, and stops its heartbeats; the target
    /// is elected once the voters' lease on the old leader runs out (about a second).
    TransferLeader {
        /// The voter to lead next; without it, the most caught-up one.
        #[arg(long)]
        to: Option<NodeId>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve {
            id,
            data_dir,
            cluster,
            listen,
            snapshot_every,
            segment_bytes,
            heartbeat_ms,
            election_timeout_ms,
            unsafe_no_fsync,
            unsafe_no_dir_fsync,
            unsafe_ignore_fsync_error,
            unsafe_skip_checksum,
            unsafe_trust_page_cache,
            unsafe_tell_unsynced_commit,
            no_stage_writes,
            cluster_token_file,
        } => {
            let token = read_token(cluster_token_file.as_deref())?;
            let settings = serve::RaftSettings {
                snapshot_every,
                heartbeat_ms,
                election_timeout_ms,
                tell_unsynced_commit: unsafe_tell_unsynced_commit,
            };
            // Checked before anything is opened: a bad flag leaves the data directory untouched.
            settings.config()?;
            for (on, name) in [
                (
                    unsafe_no_fsync,
                    "--unsafe-no-fsync: the write-ahead log never fsyncs",
                ),
                (
                    unsafe_no_dir_fsync,
                    "--unsafe-no-dir-fsync: new segments may vanish in a crash",
                ),
                (
                    unsafe_ignore_fsync_error,
                    "--unsafe-ignore-fsync-error: writes are acknowledged after failed fsyncs",
                ),
                (
                    unsafe_skip_checksum,
                    "--unsafe-skip-checksum: recovery trusts damaged records",
                ),
                (
                    unsafe_trust_page_cache,
                    "--unsafe-trust-page-cache: recovery takes unsynced writes for durable",
                ),
                (
                    unsafe_tell_unsynced_commit,
                    "--unsafe-tell-unsynced-commit: followers apply entries the leader has not synced",
                ),
            ] {
                if on {
                    tracing::warn!("UNSAFE {name}; acknowledged writes CAN BE LOST");
                }
            }
            let options = LogOptions {
                wal: WalOptions {
                    segment_bytes,
                    fsync: !unsafe_no_fsync,
                    dir_fsync: !unsafe_no_dir_fsync,
                    verify_checksum: !unsafe_skip_checksum,
                },
                ignore_fsync_error: unsafe_ignore_fsync_error,
                node_id: (!no_stage_writes).then_some(id),
            };
            // Under --unsafe-no-fsync nothing is ever made durable, recovery included.
            if !unsafe_no_fsync && !unsafe_trust_page_cache {
                sync_before_reading(&data_dir)?;
            }
            check_claim(&data_dir, &cluster, id)?;
            if token.is_none() {
                tracing::info!(
                    "no --cluster-token-file: any process that reaches {listen} is trusted as a peer"
                );
            }
            serve(id, &cluster, data_dir, listen, settings, options, token).await
        }
        Command::Init {
            addr,
            peers,
            cluster_token_file,
        } => {
            let client = client_with(cluster_token_file.as_deref())?;
            let peers = parse_peers(&peers)?;
            answered(client.init(&addr, &peers).await)
        }
        Command::Client {
            addr,
            client_id,
            seq,
            op,
        } => client(&addr, client_id.unwrap_or_else(random_client_id), seq, op).await,
        Command::Admin {
            addr,
            cluster_token_file,
            op,
        } => {
            let client = client_with(cluster_token_file.as_deref())?;
            let answer = match op {
                AdminOp::Status => {
                    return answered(client.status(&addr).await);
                }
                AdminOp::AddLearner { id, learner_addr } => {
                    let body = json!({"id": id, "addr": learner_addr});
                    client.post(&addr, "/admin/add-learner", &body).await
                }
                AdminOp::Promote { id } => {
                    client
                        .post(&addr, "/admin/promote", &json!({"id": id}))
                        .await
                }
                AdminOp::Remove { id } => {
                    client
                        .post(&addr, "/admin/remove", &json!({"id": id}))
                        .await
                }
                AdminOp::TransferLeader { to } => {
                    client
                        .post(&addr, "/admin/transfer-leader", &json!({"to": to}))
                        .await
                }
                AdminOp::ChangeMembership { members } => {
                    let body = json!({"members": members});
                    client.post(&addr, "/admin/change-membership", &body).await
                }
            };
            answered(answer)
        }
    }
}

fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>> {
    text.split(',')
        .map(|peer| {
            let (id, addr) = peer
                .split_once('=')
                .with_context(|| format!("`{peer}`: peers are ID=ADDR, as in 1=127.0.0.1:7001"))?;
            Ok((
                id.parse()
                    .with_context(|| format!("`{id}` is not a node id"))?,
                addr.to_owned(),
            ))
        })
        .collect()
}

/// A node's address as HOST:PORT, checked before any request is built from it.
fn host_and_port(text: &str) -> Result<String, String> {
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok()
            && !host.contains(|c: char| c.is_whitespace() || "/?#@".contains(c))
    });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a node address: give HOST:PORT, as in 127.0.0.1:7001"
        ))
    }
}

fn read_token(path: Option<&std::path::Path>) -> Result<Option<ClusterToken>> {
    Ok(path.map(ClusterToken::read).transpose()?)
}
