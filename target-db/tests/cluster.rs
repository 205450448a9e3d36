//! A real cluster: target-db processes on loopback, real files, SIGKILL.
//!
//! Why this file is long: every test here needs the same cluster fixture (processes, ports,
//! restarts) and the same wire-level helpers, and each checks one behaviour a user relies on
//! (failover, catch-up, membership, hand-off, refusals, the cluster token).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use target_db_client::{Client, Peers, Status};

const TARGET_DB: &str = env!("CARGO_BIN_EXE_target-db");

struct Cluster {
    /// The nodes' data and logs (`nodeN.log`); kept when a test fails, so its logs can be read.
    dir: Option<tempfile::TempDir>,
    addrs: Vec<String>,
    nodes: Vec<Option<Child>>,
    extra: Vec<String>,
}

/// `count` distinct free ports. Each listener is held until all are chosen: a port let go is
/// free to be handed out again at once, and two nodes of one cluster were once given the same
/// port (one could not listen, and the other got both nodes' messages).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    fn start(size: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs = free_ports(size)
            .into_iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut cluster = Cluster {
            dir: Some(dir),
            addrs,
            nodes: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=size {
            let child = cluster.spawn(id);
            cluster.nodes.push(Some(child));
        }
        cluster
    }

    fn spawn(&self, id: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(format!("node{id}.log")))
            .unwrap();
        Command::new(TARGET_DB)
            .args([
                "serve",
                "--id",
                &id.to_string(),
                "--listen",
                &self.addrs[id - 1],
                "--data-dir",
            ])
            .arg(self.dir().join(format!("node{id}")))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("present until dropped").path()
    }

    fn addr(&self, id: usize) -> &str {
        &self.addrs[id - 1]
    }

    fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id - 1].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn restart(&mut self, id: usize) {
        assert!(self.nodes[id - 1].is_none());
        self.nodes[id - 1] = Some(self.spawn(id));
    }

    async fn init(&self) {
        let all: Vec<usize> = (1..=self.addrs.len()).collect();
        self.init_with(&all).await;
    }

    /// Bootstraps the cluster with only these nodes as voters.
    async fn init_with(&self, ids: &[usize]) {
        let peers: Peers = ids
            .iter()
            .map(|&id| (id as u64, self.addr(id).to_owned()))
            .collect();
        let client = Client::new().timeout(Duration::from_secs(5));
        let answer = eventually("init", || async {
            client.init(self.addr(1), &peers).await.ok()
        })
        .await;
        assert_eq!(answer["initialized"], true, "{answer}");
    }

    /// Waits until the given live nodes agree on one leader; returns it.
    async fn leader(&self, among: &[usize]) -> usize {
        eventually("a leader all nodes agree on", || async {
            let mut leaders = Vec::new();
            for &id in among {
                leaders.push(status(self.addr(id)).await.ok()?.leader?);
            }
            (leaders.windows(2).all(|w| w[0] == w[1]) && among.contains(&(leaders[0] as usize)))
                .then_some(leaders[0] as usize)
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("the failed test's nodes are kept: {}", dir.keep().display());
        }
    }
}

async fn post(addr: &str, path: &str, body: Value) -> Option<Value> {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .json(&body)
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

async fn status(addr: &str) -> Result<Status, target_db_client::Error> {
    Client::new()
        .timeout(Duration::from_secs(2))
        .status(addr)
        .await
}

async fn get(addr: &str, key: &str) -> Option<Value> {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/kv/get?key={key}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

async fn put(addr: &str, client: u64, seq: u64, key: &str, value: &str) -> Option<Value> {
    post(
        addr,
        "/kv/write",
        json!({"client": client, "seq": seq, "op": "put", "key": key, "value": value}),
    )
    .await
}

/// Retries `attempt` until it gives Some, for up to 30 s: elections and restarts take a while.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_acknowledged_put_survives_killing_the_leader() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.init().await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let answer = put(cluster.addr(leader), 1, 1, "k", "acknowledged")
        .await
        .unwrap();
    assert_eq!(answer["response"]["ok"], true, "{answer}");

    cluster.kill(leader);
    let survivors: Vec<usize> = (1..=3).filter(|&id| id != leader).collect();
    let new_leader = cluster.leader(&survivors).await;
    assert_ne!(new_leader, leader);
    let read = get(cluster.addr(new_leader), "k").await.unwrap();
    assert_eq!(read["value"], "acknowledged", "{read}");

    // The old leader restarts from its own disk and rejoins with the same state.
    cluster.restart(leader);
    let addr = cluster.addr(leader).to_owned();
    let reference = status(cluster.addr(new_leader)).await.unwrap().state_digest;
    eventually("the restarted node to converge", || async {
        (status(&addr).await.ok()?.state_digest == reference).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_follower_that_missed_many_entries_catches_up_through_a_snapshot() {
    catches_up_through_a_snapshot(150, 5).await;
}

/// A state of several MB: the snapshot takes a while to send, receive and install, far longer
/// than the follower's election timeout. The follower must still install it and catch up, not
/// time out every attempt and campaign in vain for ever (it once did: openraft gave each
/// attempt 200 ms, and the bytes went as a JSON array of numbers).
#[tokio::test]
async fn a_follower_catches_up_through_a_snapshot_of_a_large_state() {
    catches_up_through_a_snapshot(200, 16 << 10).await;
}

/// A follower that was down while MBs of large values were written catches up by appends
/// alone (no snapshot): the leader's batches of entries are larger than a web server's usual
/// 2 MB body limit, which once refused them every time.
#[tokio::test]
async fn a_follower_catches_up_on_a_log_of_large_values() {
    let mut cluster = Cluster::start(3, &["--snapshot-every", "1000000"]);
    cluster.init().await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let behind = (1..=3).find(|&id| id != leader).unwrap();
    cluster.kill(behind);
    let value = "v".repeat(16 << 10);
    for seq in 1..=200u64 {
        let answer = put(cluster.addr(leader), 4, seq, &format!("key{seq}"), &value)
            .await
            .unwrap();
        assert_eq!(answer["response"]["ok"], true, "{answer}");
    }
    let reference = status(cluster.addr(leader)).await.unwrap().state_digest;
    cluster.restart(behind);
    let addr = cluster.addr(behind).to_owned();
    let caught_up = eventually("the lagging follower to catch up", || async {
        let status = status(&addr).await.ok()?;
        (status.state_digest == reference).then_some(status)
    })
    .await;
    assert_eq!(caught_up.snapshot_index, None, "{caught_up:?}");
    assert_eq!(caught_up.keys, 200);
}

/// One follower is down while `puts` puts of `value_bytes` each go to distinct keys and the
/// leader snapshots and purges its log; restarted, it reaches the leader's state through a
/// snapshot.
async fn catches_up_through_a_snapshot(puts: u64, value_bytes: usize) {
    let mut cluster = Cluster::start(3, &["--snapshot-every", "20"]);
    cluster.init().await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let behind = (1..=3).find(|&id| id != leader).unwrap();
    cluster.kill(behind);
    let value = "v".repeat(value_bytes);
    for seq in 1..=puts {
        let answer = put(cluster.addr(leader), 2, seq, &format!("key{seq}"), &value)
            .await
            .unwrap();
        assert_eq!(answer["response"]["ok"], true, "{answer}");
    }
    // Snapshots and purges run in the background after the writes.
    let leader_addr = cluster.addr(leader).to_owned();
    let leader_status = eventually("the leader to purge its log past a snapshot", || async {
        let status = status(&leader_addr).await.ok()?;
        (status.purged_index.unwrap_or(0) > puts * 2 / 3).then_some(status)
    })
    .await;

    cluster.restart(behind);
    let addr = cluster.addr(behind).to_owned();
    let reference = leader_status.state_digest;
    let caught_up = eventually("the lagging follower to catch up", || async {
        let status = status(&addr).await.ok()?;
        (status.state_digest == reference).then_some(status)
    })
    .await;
    assert!(
        caught_up.snapshot_index.unwrap_or(0) > 0,
        "it installed a snapshot: {caught_up:?}"
    );
    assert_eq!(caught_up.keys, puts);
}

#[tokio::test]
async fn a_retried_write_is_applied_once_and_a_follower_names_the_leader() {
    let cluster = Cluster::start(3, &[]);
    cluster.init().await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let redirected = put(cluster.addr(follower), 3, 1, "k", "v").await.unwrap();
    assert_eq!(redirected["outcome"], "not-applied", "{redirected}");
    assert_eq!(redirected["leader"], cluster.addr(leader));

    let cas =
        json!({"client": 3, "seq": 2, "op": "cas", "key": "counter", "from": null, "to": "1"});
    let first = post(cluster.addr(leader), "/kv/write", cas.clone())
        .await
        .unwrap();
    let retry = post(cluster.addr(leader), "/kv/write", cas).await.unwrap();
    assert_eq!(
        first["response"], retry["response"],
        "the retry gets the first answer"
    );
    assert_eq!(first["response"]["ok"], true);
    assert_eq!(
        get(cluster.addr(leader), "counter").await.unwrap()["value"],
        "1"
    );
}

#[test]
fn a_data_directory_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node-id"), "2").unwrap();
    let output = Command::new(TARGET_DB)
        .args([
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("holds the data of node 2, not node 1"),
        "{stderr}"
    );
}

/// A heartbeat too slow for the election timeout would have followers campaign after one late
/// heartbeat: refused with both flags named, before the data directory is created.
#[test]
fn a_raft_clock_that_would_start_needless_elections_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = Command::new(TARGET_DB)
        .args(["serve", "--id", "1", "--listen", "127.0.0.1:0"])
        .args(["--heartbeat-ms", "300", "--election-timeout-ms", "500"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--election-timeout-ms 500 is not more than twice --heartbeat-ms 300")
            && stderr.contains("above 600"),
        "{stderr}"
    );
    assert!(!data.exists(), "the data directory was created");
}

#[test]
fn a_data_directory_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let start = |cluster: &str| {
        Command::new(TARGET_DB)
            .args([
                "serve",
                "--id",
                "1",
                "--listen",
                "256.0.0.1:1",
                "--cluster",
                cluster,
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    // The first start records the cluster, then fails on the impossible address.
    let first = start("blue");
    assert!(String::from_utf8_lossy(&first.stderr).contains("listening on 256.0.0.1:1"));
    let second = start("green");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("holds the data of cluster `blue`, not `green`: pass --cluster blue"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cluster")).unwrap(),
        "blue",
        "the refused start changed nothing"
    );
}

/// Log ids of format 1 named the leader's node beside its term; they do not read as format 2,
/// so a directory an older version wrote is refused by name, not reported as a damaged log.
#[test]
fn a_data_directory_of_an_older_log_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Command::new(TARGET_DB)
            .args(["serve", "--id", "1", "--listen", "256.0.0.1:1"])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let first = start();
    assert!(String::from_utf8_lossy(&first.stderr).contains("listening on 256.0.0.1:1"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("log-format")).unwrap(),
        "2"
    );
    // What a version before the marker left: a claimed directory with a log and no format.
    std::fs::remove_file(dir.path().join("log-format")).unwrap();
    let second = start();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("was written by an older target-db (log format 1; this one reads format 2")
            && stderr.contains("start this node with an empty data directory"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("log-format").exists(),
        "the refused start changed nothing"
    );
}

#[tokio::test]
async fn membership_grows_from_three_to_five_voters_and_back() {
    let cluster = Cluster::start(5, &[]);
    cluster.init_with(&[1, 2, 3]).await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let leader_addr = cluster.addr(leader).to_owned();
    assert_eq!(
        put(&leader_addr, 4, 1, "before", "3 voters").await.unwrap()["response"]["ok"],
        true
    );

    for id in [4, 5] {
        let added = post(
            &leader_addr,
            "/admin/add-learner",
            json!({"id": id, "addr": cluster.addr(id)}),
        )
        .await
        .unwrap();
        assert!(added["index"].is_u64(), "{added}");
    }
    // Ids that are not learners or voters are refused, and nothing changes.
    let refused = post(&leader_addr, "/admin/promote", json!({"id": 9}))
        .await
        .unwrap();
    assert_eq!(refused["outcome"], "not-applied", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains('9'),
        "{refused}"
    );
    let refused = post(&leader_addr, "/admin/remove", json!({"id": 9}))
        .await
        .unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("not a voter"),
        "{refused}"
    );
    let promoted = post(&leader_addr, "/admin/promote", json!({"id": 4}))
        .await
        .unwrap();
    assert!(promoted["index"].is_u64(), "{promoted}");
    assert_eq!(status(&leader_addr).await.unwrap().members, [1, 2, 3, 4]);
    let changed = post(
        &leader_addr,
        "/admin/change-membership",
        json!({"members": [1, 2, 3, 4, 5]}),
    )
    .await
    .unwrap();
    assert!(changed["index"].is_u64(), "{changed}");
    let members = status(&leader_addr).await.unwrap().members;
    assert_eq!(members, [1, 2, 3, 4, 5]);
    assert_eq!(
        put(&leader_addr, 4, 2, "during", "5 voters").await.unwrap()["response"]["ok"],
        true
    );
    // The new voters hold the data written before they joined.
    let new_voter = cluster.addr(5).to_owned();
    let reference = status(&leader_addr).await.unwrap().state_digest;
    eventually("node 5 to catch up", || async {
        (status(&new_voter).await.ok()?.state_digest == reference).then_some(())
    })
    .await;

    for id in [5, 4] {
        let leader = cluster.leader(&[1, 2, 3]).await;
        let removed = post(cluster.addr(leader), "/admin/remove", json!({"id": id}))
            .await
            .unwrap();
        assert!(removed["index"].is_u64(), "{removed}");
    }
    let leader = cluster.leader(&[1, 2, 3]).await;
    let answer = put(cluster.addr(leader), 4, 3, "after", "3 voters again")
        .await
        .unwrap();
    assert_eq!(answer["response"]["ok"], true, "{answer}");
    assert_eq!(
        status(cluster.addr(leader)).await.unwrap().members,
        [1, 2, 3]
    );
    assert_eq!(
        get(cluster.addr(leader), "before").await.unwrap()["value"],
        "3 voters"
    );
}

#[tokio::test]
async fn metrics_report_fsync_latency_wal_bytes_and_elections() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    cluster.leader(&[1]).await;
    for seq in 1..=5 {
        put(cluster.addr(1), 5, seq, "k", "v").await.unwrap();
    }
    let text = reqwest::get(format!("http://{}/metrics", cluster.addr(1)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert!(value("targetdb_wal_fsync_seconds_count") >= 5.0, "{text}");
    assert!(value("targetdb_wal_appended_bytes_total") > 0.0);
    assert!(value("targetdb_elections_total") >= 1.0);
    assert!(value("targetdb_is_leader") == 1.0);
    // openraft makes the commit index durable before it applies, so it is never behind.
    assert!(value("targetdb_commit_index") >= 5.0, "{text}");
    assert!(value("targetdb_commit_index") >= value("targetdb_applied_index"));
    assert!(
        text.contains("targetdb_wal_fsync_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
}

/// Sends SIGTERM to a node and waits (up to 30 s) for it to exit; returns whether it exited 0.
fn terminate(child: &mut Child) -> bool {
    // SAFETY: signalling a child this test started and has not reaped yet.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            return exit.success();
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigterm_to_the_leader_hands_leadership_over_before_it_stops() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.init().await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let answer = put(cluster.addr(leader), 1, 1, "k", "before the stop")
        .await
        .unwrap();
    assert_eq!(answer["response"]["ok"], true, "{answer}");

    let mut child = cluster.nodes[leader - 1].take().unwrap();
    assert!(terminate(&mut child), "a clean stop exits 0");
    // It stopped only once another node led: that node says so at once, no election pending.
    let others: Vec<usize> = (1..=3).filter(|&id| id != leader).collect();
    let mut leading = Vec::new();
    for &id in &others {
        let status = status(cluster.addr(id)).await.unwrap();
        if status.leads() {
            leading.push(id);
        }
    }
    assert_eq!(
        leading.len(),
        1,
        "exactly one of {others:?} leads right after the stop"
    );
    let log = std::fs::read_to_string(cluster.dir().join(format!("node{leader}.log"))).unwrap();
    assert!(
        log.contains(&format!("handed leadership to node {}", leading[0])),
        "{log}"
    );
    let read = get(cluster.addr(leading[0]), "k").await.unwrap();
    assert_eq!(read["value"], "before the stop", "{read}");
    let answer = put(cluster.addr(leading[0]), 1, 2, "k", "after the stop")
        .await
        .unwrap();
    assert_eq!(answer["response"]["ok"], true, "{answer}");
}

#[tokio::test]
async fn transfer_leader_moves_leadership_to_the_named_voter() {
    let cluster = Cluster::start(3, &[]);
    cluster.init().await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();

    // Sent to a follower: it names the leader, and nothing moves.
    let answer = post(
        cluster.addr(follower),
        "/admin/transfer-leader",
        json!({"to": follower}),
    )
    .await
    .unwrap();
    assert_eq!(answer["leader_id"], leader as u64, "{answer}");
    // An id that is not a voter is refused with the voters named.
    let answer = post(
        cluster.addr(leader),
        "/admin/transfer-leader",
        json!({"to": 9}),
    )
    .await
    .unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("not a voter"),
        "{answer}"
    );
    assert_eq!(cluster.leader(&[1, 2, 3]).await, leader);

    for round in 0..2u64 {
        let from = cluster.leader(&[1, 2, 3]).await;
        let to = (1..=3).find(|&id| id != from).unwrap();
        let answer = post(
            cluster.addr(from),
            "/admin/transfer-leader",
            json!({"to": to}),
        )
        .await
        .unwrap();
        assert_eq!(answer["leader"], to as u64, "round {round}: {answer}");
        assert_eq!(cluster.leader(&[1, 2, 3]).await, to);
        let written = put(cluster.addr(to), 2, round + 1, "k", "v").await.unwrap();
        assert_eq!(written["response"]["ok"], true, "{written}");
    }
}

#[tokio::test]
async fn malformed_requests_are_refused_with_the_problem_named() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    cluster.leader(&[1]).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/kv/write", cluster.addr(1));
    let cases = [
        (
            client
                .post(&url)
                .json(&json!({"client": 1, "seq": 1, "op": "put", "key": "k"})),
            422,
            "missing field `value`",
        ),
        (
            client.post(&url).body("put k v"),
            415,
            "content-type: application/json",
        ),
        (
            client.get(format!("http://{}/kv/get", cluster.addr(1))),
            400,
            "GET /kv/get?key=KEY",
        ),
        (
            client.get(format!("http://{}/kv/get?key=%FF%FE", cluster.addr(1))),
            400,
            "not UTF-8",
        ),
        (
            client
                .post(format!("http://{}/admin/promote", cluster.addr(1)))
                .json(&json!({"id": "two"})),
            422,
            "id: invalid type",
        ),
    ];
    for (request, code, words) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), code);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["outcome"], "not-applied", "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(words), "{error:?} should say {words:?}");
    }
    // Nothing was written.
    assert_eq!(
        get(cluster.addr(1), "k").await.unwrap()["value"],
        Value::Null
    );
}

/// One address given to two members (a copied --listen, a port handed out twice) sends one
/// node's messages to another: init and add-learner refuse it, and a Raft message that comes
/// back to the node it names as its sender is refused, where openraft's core would stop.
#[tokio::test]
async fn one_address_given_to_two_nodes_is_refused_and_no_node_stops() {
    let cluster = Cluster::start(2, &[]);
    let client = reqwest::Client::new();
    // Posts the body and expects it refused with this code: the reason given.
    let refused = |addr: &str, path: &str, body: Value, code: u16| {
        let request = client.post(format!("http://{addr}{path}")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), code);
            let answer: Value = response.json().await.unwrap();
            answer["error"].as_str().unwrap().to_owned()
        }
    };
    eventually("node 1 to answer", || async {
        status(cluster.addr(1)).await.ok()
    })
    .await;
    let one_address = json!({"1": cluster.addr(1), "2": cluster.addr(1)});
    let error = refused(cluster.addr(1), "/init", one_address, 422).await;
    let named = format!(
        "nodes 1 and 2 are both given the address {}",
        cluster.addr(1)
    );
    assert!(error.contains(&named), "{error:?} should say {named:?}");

    // What node 1 would get from "node 2" at node 1's address: a message sent by node 1.
    let from_itself = json!({
        "vote": {"leader_id": {"term": 1, "voted_for": 1}, "committed": true},
        "prev_log_id": null,
        "entries": [],
        "leader_commit": null
    });
    let error = refused(cluster.addr(1), "/raft/append", from_itself, 409).await;
    assert!(
        error.contains("node 1 got a Raft message from node 1, itself"),
        "{error:?}"
    );

    // Neither was taken in: the two nodes form a cluster, which refuses a third node at the
    // address of the second.
    cluster.init().await;
    let leader = cluster.leader(&[1, 2]).await;
    let third = json!({"id": 3, "addr": cluster.addr(2)});
    let error = refused(cluster.addr(leader), "/admin/add-learner", third, 422).await;
    let named = format!(
        "nodes 2 and 3 are both given the address {}",
        cluster.addr(2)
    );
    assert!(error.contains(&named), "{error:?} should say {named:?}");
    let answer = put(cluster.addr(leader), 1, 1, "k", "v").await.unwrap();
    assert_eq!(answer["response"]["ok"], true, "{answer}");
}

/// The README's client commands, run one after another as a user would: each invocation is a
/// client of its own, so a second put is not taken for a retry of the first and dropped.
#[tokio::test]
async fn client_commands_without_ids_each_apply() {
    let cluster = Cluster::start(1, &[]);
    cluster.init().await;
    cluster.leader(&[1]).await;
    let client = |args: &[&str]| {
        let output = Command::new(TARGET_DB)
            .args(["client", "--addr", cluster.addr(1)])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    client(&["put", "a", "1"]);
    client(&["put", "b", "2"]);
    client(&["put", "a", "3"]);
    assert!(client(&["get", "a"]).contains("\"3\""));
    assert!(client(&["get", "b"]).contains("\"2\""));
    // With the same id and seq given, the second is a retry: applied once.
    client(&["--client-id", "7", "--seq", "1", "put", "c", "first"]);
    client(&["--client-id", "7", "--seq", "1", "put", "c", "retry"]);
    assert!(client(&["get", "c"]).contains("\"first\""));
}

/// Starts a node on `data_dir` and waits (up to 20 s) for it to exit; None if it was still
/// running then (it is killed).
fn start_expecting_exit(data_dir: &Path) -> Option<String> {
    let mut child = Command::new(TARGET_DB)
        .args(["serve", "--id", "1", "--segment-bytes", "16384"])
        .args(["--snapshot-every", "1000000", "--listen"])
        .arg(format!("127.0.0.1:{}", free_ports(1)[0]))
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return Some(stderr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    files.sort();
    files
}

/// One node (16 KiB segments, no snapshots) acknowledges 1,500 puts and stops; each damage that
/// takes acknowledged entries with it makes the next start fail, naming what is missing, where
/// a node serving on would have answered reads without them.
#[tokio::test]
async fn a_log_with_acknowledged_entries_missing_is_refused_with_the_damage_named() {
    let mut cluster = Cluster::start(
        1,
        &["--segment-bytes", "16384", "--snapshot-every", "1000000"],
    );
    cluster.init().await;
    cluster.leader(&[1]).await;
    for i in 0..1500 {
        let answer = put(cluster.addr(1), 7, i + 1, &format!("k{i}"), "v").await;
        let ok = answer.as_ref().map(|a| a["response"]["ok"] == true);
        assert_eq!(ok, Some(true), "{answer:?}");
    }
    assert!(terminate(cluster.nodes[0].as_mut().unwrap()));
    cluster.nodes[0] = None;
    let original = cluster.dir().join("node1");
    let wal_of = |dir: &Path| dir.join("wal");
    // What is done, the damage, what the refusal must say.
    type Damage = (&'static str, fn(&Path), &'static str);
    let cases: [Damage; 5] = [
        (
            "the last segment deleted",
            |wal| std::fs::remove_file(segments(wal).pop().unwrap()).unwrap(),
            "was sealed when",
        ),
        (
            "the last segment zeroed",
            |wal| {
                let last = segments(wal).pop().unwrap();
                let len = std::fs::metadata(&last).unwrap().len();
                std::fs::write(&last, vec![0u8; len as usize]).unwrap();
            },
            "was sealed, which a rotation does only once",
        ),
        (
            "a middle segment deleted",
            |wal| {
                let all = segments(wal);
                std::fs::remove_file(&all[all.len() / 2]).unwrap();
            },
            "the segments between are missing",
        ),
        (
            "the first segment deleted",
            |wal| std::fs::remove_file(&segments(wal)[0]).unwrap(),
            "are missing",
        ),
        (
            "the whole log deleted",
            |wal| std::fs::remove_dir_all(wal).unwrap(),
            "its write-ahead log",
        ),
    ];
    assert!(
        segments(&wal_of(&original)).len() > 10,
        "the log spans many segments"
    );
    for (what, damage, expected) in cases {
        let copy = cluster.dir().join(what.replace(' ', "-"));
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&original)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(copied.success());
        damage(&wal_of(&copy));
        let stderr = start_expecting_exit(&copy)
            .unwrap_or_else(|| panic!("{what}: the node started and served"));
        assert!(
            stderr.contains(expected) && stderr.contains("will not start"),
            "{what}: {stderr}"
        );
    }
    // The undamaged directory still starts and serves every acknowledged put.
    cluster.restart(1);
    cluster.leader(&[1]).await;
    let last = eventually("the last put read back", || get(cluster.addr(1), "k1499")).await;
    assert_eq!(last["value"], "v", "{last}");
}

/// A log purged past the snapshot on disk (a purge made durable before the snapshot it relied
/// on) holds the entries in neither: the node refuses to start and says so, instead of failing
/// later in openraft's words.
#[tokio::test]
async fn a_log_purged_past_its_snapshot_is_refused_with_both_indexes_named() {
    let mut cluster = Cluster::start(1, &["--snapshot-every", "100"]);
    cluster.init().await;
    cluster.leader(&[1]).await;
    for i in 0..300 {
        let answer = put(cluster.addr(1), 7, i + 1, &format!("k{i}"), "v").await;
        let ok = answer.as_ref().map(|a| a["response"]["ok"] == true);
        assert_eq!(ok, Some(true), "{answer:?}");
    }
    assert!(terminate(cluster.nodes[0].as_mut().unwrap()));
    cluster.nodes[0] = None;
    let dir = cluster.dir().join("node1");
    std::fs::remove_file(dir.join("state/snapshot.json")).unwrap();
    let stderr = start_expecting_exit(&dir).expect("the node started and served");
    assert!(
        stderr.contains("was purged up to index")
            && stderr.contains("covers nothing")
            && stderr.contains("will not start"),
        "{stderr}"
    );
}

#[test]
fn an_address_that_is_not_host_and_port_is_refused_with_the_form_named() {
    for addr in [
        "not an addr",
        "127.0.0.1",
        "host:port",
        "http://127.0.0.1:7001",
    ] {
        let output = Command::new(TARGET_DB)
            .args(["client", "--addr", addr, "get", "k"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{addr}: {stderr}");
        assert!(stderr.contains("give HOST:PORT"), "{addr}: {stderr}");
    }
}

#[tokio::test]
async fn with_a_cluster_token_only_its_holders_reach_the_raft_and_admin_routes() {
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "k9-shared-cluster-secret\n").unwrap();
    let token_arg = token.to_str().unwrap();
    let cluster = Cluster::start(3, &["--cluster-token-file", token_arg]);
    let addr = cluster.addr(1).to_owned();
    let peers: Vec<String> = (1..=3)
        .map(|id| format!("{id}={}", cluster.addr(id)))
        .collect();

    // Without the token, /init is refused and says what is missing.
    let refused = eventually("an answer to /init", || {
        post(&addr, "/init", json!({"1": addr.clone()}))
    })
    .await;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("x-cluster-token"), "{refused}");

    // With it, the CLI initialises the cluster, the nodes elect a leader among themselves (their
    // votes carry the token) and a client, which needs no token, writes.
    let init = Command::new(TARGET_DB)
        .args(["init", "--addr", &addr, "--peers", &peers.join(",")])
        .args(["--cluster-token-file", token_arg])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let leader = cluster.leader(&[1, 2, 3]).await;
    let answer = eventually("a put", || put(cluster.addr(leader), 7, 1, "k", "v")).await;
    assert_eq!(answer["response"]["ok"], true, "{answer}");

    // A forged vote for a far-future term, without the token or with a wrong one, is refused
    // before Raft sees it: no node's term jumps.
    let forged = json!({"vote": {"leader_id": {"term": 999_999, "voted_for": 9}, "committed": false}, "last_log_id": null});
    for header in [None, Some("a-guess")] {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/raft/vote", cluster.addr(leader)))
            .json(&forged);
        if let Some(guess) = header {
            request = request.header("x-cluster-token", guess);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);
    }
    for id in 1..=3 {
        let term = status(cluster.addr(id)).await.unwrap().term;
        assert!(term < 999_999, "n{id} took the forged term");
    }
}
