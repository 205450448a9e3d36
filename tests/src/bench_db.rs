//! `cargo xtask bench db`: target-db's write throughput and latency with real fsync on the
//! machine's disk, for 1 and 3 nodes, as the number of concurrent clients grows (group commit:
//! entries that arrive together share one fsync).
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::json;
use tokio::sync::Mutex;

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
}

pub async fn run(
    target_db: &Path,
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
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting target-db")?;
            children.push(child);
        }
        let _nodes = Nodes(children);
        let peers: serde_json::Map<String, serde_json::Value> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| ((i + 1).to_string(), json!(a)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = http
                .post(format!("http://{}/init", addrs[0]))
                .json(&peers)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the bench cluster did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = loop {
            let status: serde_json::Value = http
                .get(format!("http://{}/status", addrs[0]))
                .send()
                .await?
                .json()
                .await?;
            if let Some(leader) = status["leader"].as_u64() {
                break addrs[leader as usize - 1].clone();
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader in the bench cluster");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
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
                let body = json!({"client": 1_000_000 + client as u64 * 1000 + nodes as u64, "seq": seq, "op": "put", "key": format!("key{client}-{}", seq % 100), "value": value});
                let sent = Instant::now();
                let ok = http.post(format!("http://{leader}/kv/write")).json(&body).send().await.is_ok_and(|r| r.status().is_success());
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
    let mut latencies = latencies.lock().await.clone();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Measurement {
        nodes,
        clients,
        puts_per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
    })
}
