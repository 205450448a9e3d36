//! `cargo xtask bench db`: target-db's write throughput and latency with real fsync on the
//! machine's disk, for 1 and 3 nodes, as the number of concurrent clients grows (group commit:
//! entries that arrive together share one fsync); with `--vs etcd`, target-db and etcd side by
//! side, 3 nodes each, one load generator.
use std::{
    ops::ControlFlow,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::json;
use tokio::sync::Mutex;

use target_db_client::{Client, Op, Request};

use crate::torture::{
    poll::poll_until,
    target::{NodePlace, Target, TargetKind, etcd_start_command},
};

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Measurement {
    pub nodes: usize,
    pub clients: usize,
    pub puts_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// How busy the machine's CPUs were while it was measured (0 to 1, all cores).
    pub cpu_busy: f64,
}

impl Measurement {
    /// Throughput and latency percentiles of the writes that succeeded within `seconds`.
    fn of(
        nodes: usize,
        clients: usize,
        mut latencies: Vec<Duration>,
        seconds: f64,
        cpu_busy: f64,
    ) -> Measurement {
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Measurement {
            nodes,
            clients,
            puts_per_second: latencies.len() as f64 / seconds,
            p50_ms: percentile(0.5),
            p99_ms: percentile(0.99),
            max_ms: percentile(1.0),
            cpu_busy,
        }
    }
}

/// The machine's CPU time so far, busy and total, from /proc/stat (in clock ticks).
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    // user nice system idle iowait ...: idle and iowait are not busy.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn busy_since((busy_before, total_before): (u64, u64)) -> f64 {
    let (busy, total) = cpu_ticks();
    (busy - busy_before) as f64 / (total - total_before).max(1) as f64
}

pub async fn run(
    target_db: &Path,
    db_flags: &[String],
    scratch: &Path,
    node_counts: &[usize],
    client_counts: &[usize],
    seconds: u64,
) -> Result<Vec<Measurement>> {
    let http = reqwest::Client::new();
    let mut results = Vec::new();
    for &size in node_counts {
        let addrs: Vec<String> = (1..=size)
            .map(|id| format!("127.0.0.{}:7100", 20 + id))
            .collect();
        let mut children = Vec::new();
        for (index, addr) in addrs.iter().enumerate() {
            let id = index + 1;
            let child = Command::new(target_db)
                .args([
                    "serve",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    addr,
                    "--data-dir",
                ])
                .arg(scratch.join(format!("bench-{size}-node{id}")))
                .args(db_flags)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting target-db")?;
            children.push(child);
        }
        let _nodes = Nodes(children);
        Target::new(TargetKind::TargetDb)
            .initialise(&http, &addrs, Duration::from_secs(20))
            .await
            .context("the bench cluster did not start")?;
        let leader = target_db_leader(&http, &addrs).await?;
        for &clients in client_counts {
            results
                .push(measure(&http, &leader, size, clients, Duration::from_secs(seconds)).await?);
        }
    }
    Ok(results)
}

async fn measure(
    http: &reqwest::Client,
    leader: &str,
    nodes: usize,
    clients: usize,
    length: Duration,
) -> Result<Measurement> {
    let value = "v".repeat(1024);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let cpu = cpu_ticks();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, leader, value, latencies) = (
            http.clone(),
            leader.to_owned(),
            value.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut mine = Vec::new();
            while started.elapsed() < length {
                seq += 1;
                let op = Op::Put {
                    key: format!("key{client}-{}", seq % 100),
                    value: value.clone(),
                };
                let request = Request {
                    client: 1_000_000 + client as u64 * 1000 + nodes as u64,
                    seq,
                    op,
                };
                let sent = Instant::now();
                let ok = Client::with_http(http.clone())
                    .write(&leader, &request)
                    .await
                    .is_ok();
                if ok {
                    mine.push(sent.elapsed());
                }
            }
            latencies.lock().await.extend(mine);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_busy = busy_since(cpu);
    let latencies = latencies.lock().await.clone();
    Ok(Measurement::of(
        nodes, clients, latencies, elapsed, cpu_busy,
    ))
}

/// The keys the side-by-side bench writes to, chosen in turn by every client.
const KEY_SPACE: u64 = 10_000;

/// A 3-node cluster of `system` on loopback, data on `scratch`; stopped when dropped.
pub struct Cluster3 {
    _nodes: Nodes,
    system: TargetKind,
    leader: String,
}

impl Cluster3 {
    /// `db_flags`: more flags for each target-db node (ignored for etcd).
    pub async fn start(
        system: TargetKind,
        target_db: &Path,
        db_flags: &[String],
        scratch: &Path,
    ) -> Result<Cluster3> {
        let http = reqwest::Client::new();
        match system {
            TargetKind::TargetDb => {
                let addrs: Vec<String> = (1..=3)
                    .map(|id| format!("127.0.0.{}:7200", 40 + id))
                    .collect();
                let mut children = Vec::new();
                for (index, addr) in addrs.iter().enumerate() {
                    let id = index + 1;
                    children.push(
                        Command::new(target_db)
                            .args([
                                "serve",
                                "--id",
                                &id.to_string(),
                                "--listen",
                                addr,
                                "--data-dir",
                            ])
                            .arg(scratch.join(format!("target-db-node{id}")))
                            .args(db_flags)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .context("starting target-db")?,
                    );
                }
                let nodes = Nodes(children);
                Target::new(TargetKind::TargetDb)
                    .initialise(&http, &addrs, Duration::from_secs(20))
                    .await?;
                let leader = target_db_leader(&http, &addrs).await?;
                Ok(Cluster3 {
                    _nodes: nodes,
                    system,
                    leader,
                })
            }
            TargetKind::Etcd => {
                let ips: Vec<String> = (1..=3).map(|id| format!("127.0.0.{}", 50 + id)).collect();
                let mut children = Vec::new();
                for (index, ip) in ips.iter().enumerate() {
                    let data_dir = scratch.join(format!("etcd-node{}", index + 1));
                    let place = NodePlace {
                        id: index + 1,
                        ip,
                        data_dir: &data_dir,
                        peers: &ips,
                    };
                    // etcd's own default snapshot interval, not the torture's short one.
                    let flags = ["--snapshot-count".to_owned(), "100000".to_owned()];
                    children.push(
                        etcd_start_command(&place, &flags)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .context("starting etcd (Debian's etcd-server; cargo xtask setup installs it)")?,
                    );
                }
                let nodes = Nodes(children);
                let addrs: Vec<String> = ips.iter().map(|ip| format!("{ip}:2379")).collect();
                let leader = etcd_leader(&http, &addrs).await?;
                Ok(Cluster3 {
                    _nodes: nodes,
                    system,
                    leader,
                })
            }
        }
    }

    /// One put of `value` to `key`; whether it was acknowledged.
    async fn put(
        &self,
        http: &reqwest::Client,
        client: u64,
        seq: u64,
        key: &str,
        value: &str,
    ) -> bool {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let leader = &self.leader;
        match self.system {
            TargetKind::TargetDb => {
                let op = Op::Put {
                    key: key.to_owned(),
                    value: value.to_owned(),
                };
                let request = Request { client, seq, op };
                let nodes = Client::with_http(http.clone());
                nodes.write(leader, &request).await.is_ok()
            }
            TargetKind::Etcd => {
                let body = json!({"key": STANDARD.encode(key), "value": STANDARD.encode(value)});
                match http
                    .post(format!("http://{leader}/v3/kv/put"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => response
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|answer| answer.get("error").is_none()),
                    _ => false,
                }
            }
        }
    }
}

/// The address of the node target-db's nodes say leads, polled for up to 30 s.
async fn target_db_leader(http: &reqwest::Client, addrs: &[String]) -> Result<String> {
    let nodes = &Client::with_http(http.clone()).timeout(Duration::from_secs(1));
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async move {
            for addr in addrs {
                if let Ok(status) = nodes.status(addr).await
                    && let Some(leader) = status.leader
                {
                    return ControlFlow::Break(addrs[leader as usize - 1].clone());
                }
            }
            ControlFlow::Continue(())
        },
    )
    .await
    .map_err(|()| anyhow::anyhow!("no leader in the bench cluster within 30 s"))
}

/// The address of the etcd member whose maintenance status names itself the leader, polled
/// for up to 30 s.
async fn etcd_leader(http: &reqwest::Client, addrs: &[String]) -> Result<String> {
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async move {
            for addr in addrs {
                let answer = http
                    .post(format!("http://{addr}/v3/maintenance/status"))
                    .json(&json!({}))
                    .send()
                    .await;
                if let Ok(response) = answer
                    && let Ok(status) = response.json::<serde_json::Value>().await
                    && status["leader"].is_string()
                    && status["leader"] == status["header"]["member_id"]
                {
                    return ControlFlow::Break(addr.clone());
                }
            }
            ControlFlow::Continue(())
        },
    )
    .await
    .map_err(|()| anyhow::anyhow!("no leader in the bench cluster within 30 s"))
}

/// One closed-loop measurement: `clients` clients each put a 1 KiB value, wait for the answer and
/// put the next, over the key space in turn; the first `warm_up` is not counted.
pub async fn measure_closed_loop(
    cluster: &Arc<Cluster3>,
    clients: usize,
    warm_up: Duration,
    length: Duration,
    round: u64,
) -> Result<Measurement> {
    let http = reqwest::Client::new();
    let value = Arc::new("v".repeat(1024));
    let started = Instant::now();
    let counted_from = started + warm_up;
    let until = counted_from + length;
    let mut tasks = Vec::new();
    for client in 0..clients as u64 {
        let (http, value, cluster) = (http.clone(), value.clone(), cluster.clone());
        // Unique per client and round: target-db's sessions never see a sequence go back.
        let id = 10_000_000 + round * 100_000 + clients as u64 * 1_000 + client;
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut latencies = Vec::new();
            let mut key = client * 7_919;
            while Instant::now() < until {
                seq += 1;
                key = (key + 1) % KEY_SPACE;
                let sent = Instant::now();
                let ok = cluster
                    .put(&http, id, seq, &format!("key{key}"), &value)
                    .await;
                if ok && sent >= counted_from {
                    latencies.push(sent.elapsed());
                }
            }
            latencies
        }));
    }
    tokio::time::sleep_until(counted_from.into()).await;
    let cpu = cpu_ticks();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let cpu_busy = busy_since(cpu);
    Ok(Measurement::of(
        3,
        clients,
        latencies,
        length.as_secs_f64(),
        cpu_busy,
    ))
}

/// One row of the side-by-side table: medians over the repetitions.
#[derive(Debug, serde::Serialize)]
pub struct VersusRow {
    pub clients: usize,
    pub target_db_ops_per_s: f64,
    pub target_db_p99_ms: f64,
    pub etcd_ops_per_s: f64,
    pub etcd_p99_ms: f64,
}

/// target-db and etcd, 3 nodes each on this disk, driven by one load generator: for each
/// repetition, each client count, each system in turn (interleaved, so a slow moment of the
/// machine hits both), then the medians.
pub async fn versus_etcd(
    target_db: &Path,
    db_flags: &[String],
    scratch: &Path,
    client_counts: &[usize],
    repetitions: usize,
    warm_up: Duration,
    length: Duration,
) -> Result<Vec<VersusRow>> {
    let ours = Arc::new(Cluster3::start(TargetKind::TargetDb, target_db, db_flags, scratch).await?);
    let etcd = Arc::new(Cluster3::start(TargetKind::Etcd, target_db, &[], scratch).await?);
    let mut samples: Vec<(TargetKind, usize, Measurement)> = Vec::new();
    let mut round = 0;
    for repetition in 0..repetitions {
        for &clients in client_counts {
            for cluster in [&ours, &etcd] {
                round += 1;
                let m = measure_closed_loop(cluster, clients, warm_up, length, round).await?;
                eprintln!(
                    "bench db: repetition {}/{repetitions}, {} with {clients} clients: {:.0} puts/s, p99 {:.1} ms, max {:.1} ms, CPUs {:.0}% busy",
                    repetition + 1,
                    cluster.system.name(),
                    m.puts_per_second,
                    m.p99_ms,
                    m.max_ms,
                    m.cpu_busy * 100.0
                );
                samples.push((cluster.system, clients, m));
            }
        }
    }
    let median = |system: TargetKind, clients: usize, of: fn(&Measurement) -> f64| {
        let mut values: Vec<f64> = samples
            .iter()
            .filter(|(s, c, _)| *s == system && *c == clients)
            .map(|(_, _, m)| of(m))
            .collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(client_counts
        .iter()
        .map(|&clients| VersusRow {
            clients,
            target_db_ops_per_s: median(TargetKind::TargetDb, clients, |m| m.puts_per_second),
            target_db_p99_ms: median(TargetKind::TargetDb, clients, |m| m.p99_ms),
            etcd_ops_per_s: median(TargetKind::Etcd, clients, |m| m.puts_per_second),
            etcd_p99_ms: median(TargetKind::Etcd, clients, |m| m.p99_ms),
        })
        .collect())
}
