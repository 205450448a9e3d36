//! etcd 3.4 (Debian's `etcd-server`): one `etcd` per node bootstrapped from its flags, clients
//! through the v3 JSON gateway (keys and values in base64), status from
//! its Raft state in `/debug/vars` and a state digest from `/v3/maintenance/hash`.
use std::{ops::ControlFlow, process::Command, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};

use super::{NodePlace, Outcome, Target, json_answer};
use crate::torture::poll::poll_until;

pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// Entries between two snapshots unless the run gives its own: etcd's default (100,000) would
/// never snapshot in a torture run, and its snapshot, WAL cut and purge paths go untested.
const SNAPSHOT_COUNT: &str = "1000";
/// As the report says it.
pub const STORAGE: &str =
    "etcd's own: a snapshot every 1,000 entries (--snapshot-count, unless a --db-flag gives one)";

fn url(ip: &str, port: u16) -> String {
    format!("http://{ip}:{port}")
}

pub fn start_command(node: &NodePlace, flags: &[String]) -> Command {
    let cluster: Vec<String> = node
        .peers
        .iter()
        .enumerate()
        .map(|(index, ip)| format!("n{}={}", index + 1, url(ip, PEER_PORT)))
        .collect();
    let mut command = Command::new("etcd");
    command
        .args(["--name", &format!("n{}", node.id)])
        .arg("--data-dir")
        .arg(node.data_dir)
        .args(["--listen-client-urls", &url(node.ip, CLIENT_PORT)])
        .args(["--advertise-client-urls", &url(node.ip, CLIENT_PORT)])
        .args(["--listen-peer-urls", &url(node.ip, PEER_PORT)])
        .args(["--initial-advertise-peer-urls", &url(node.ip, PEER_PORT)])
        .args(["--initial-cluster", &cluster.join(",")])
        .args(["--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", "faultline"])
        .args(["--logger", "zap", "--log-outputs", "stderr"]);
    if !flags.iter().any(|f| f.starts_with("--snapshot-count")) {
        command.args(["--snapshot-count", SNAPSHOT_COUNT]);
    }
    command.args(flags);
    command
}

/// etcd bootstraps from its flags: waits until every member answers, and learns each member's
/// id (its status names the leader by id).
pub async fn initialise(
    target: &Target,
    http: &reqwest::Client,
    addrs: &[String],
    settle: Duration,
) -> anyhow::Result<()> {
    let listed = poll_until(settle, Duration::from_millis(200), move || async move {
        let mut missing = Vec::new();
        for (index, addr) in addrs.iter().enumerate() {
            let members = json_answer(
                http.post(format!("http://{addr}/v3/cluster/member/list"))
                    .json(&json!({})),
                Duration::from_secs(1),
            )
            .await;
            let learnt = members
                .as_ref()
                .map_or(0, |answer| learn_members(target, answer));
            if learnt < addrs.len() {
                missing.push(format!("n{} ({addr})", index + 1));
            }
        }
        if missing.is_empty() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(missing)
        }
    })
    .await;
    listed.map_err(|missing| {
        anyhow::anyhow!(
            "etcd members {} did not list all {} members within {} s: see their etcd.log",
            missing.join(", "),
            addrs.len(),
            settle.as_secs()
        )
    })
}

/// Records the id of each member named `n<id>`; returns how many it knows.
fn learn_members(target: &Target, answer: &Value) -> usize {
    let mut members = target.members.lock().expect("members poisoned");
    for member in answer["members"].as_array().into_iter().flatten() {
        let node = member["name"]
            .as_str()
            .and_then(|name| name.strip_prefix('n'))
            .and_then(|id| id.parse::<u64>().ok());
        if let (Some(node), Some(id)) = (node, member["ID"].as_str()) {
            members.insert(id.to_owned(), node);
        }
    }
    members.len()
}

/// proto3 JSON spells 64-bit integers as strings.
fn number(value: &Value) -> Option<u64> {
    value.as_str()?.parse().ok()
}

/// The node its Raft state names by a hex member id, if it is one of ours.
fn node_of(target: &Target, hex_id: &Value) -> Option<u64> {
    let id = u64::from_str_radix(hex_id.as_str()?, 16).ok()?;
    let members = target.members.lock().expect("members poisoned");
    members.get(&id.to_string()).copied()
}

/// From `/debug/vars`' `raft.status`: one consistent copy of the node's Raft state. (The
/// maintenance status is not one: its `raftTerm` is the term of the last applied entry, so a
/// new leader reports the old term until it applies an entry of its own.)
pub async fn status(target: &Target, http: &reqwest::Client, addr: &str) -> Option<Value> {
    let answer = json_answer(
        http.get(format!("http://{addr}/debug/vars")),
        Duration::from_secs(1),
    )
    .await?;
    let raft = &answer["raft.status"];
    Some(json!({
        "state": if raft["raftState"] == "StateLeader" { "Leader" } else { "Follower" },
        "term": raft["term"].as_u64()?,
        "leader": node_of(target, &raft["lead"]),
        "commit_index": raft["commit"].as_u64(),
        "applied_index": raft["applied"].as_u64(),
    }))
}

/// The hash of the node's whole backend, taken between two statuses at one applied index (a
/// node still applying gives none).
pub async fn digest(http: &reqwest::Client, addr: &str) -> Option<(u64, String)> {
    let applied = || async {
        let answer = json_answer(
            http.post(format!("http://{addr}/v3/maintenance/status"))
                .json(&json!({})),
            Duration::from_secs(1),
        )
        .await?;
        number(&answer["raftAppliedIndex"])
    };
    let before = applied().await?;
    let hash = json_answer(
        http.post(format!("http://{addr}/v3/maintenance/hash"))
            .json(&json!({})),
        Duration::from_secs(2),
    )
    .await?;
    let after = applied().await?;
    (before == after).then(|| (after, hash["hash"].to_string()))
}

/// One request to the gateway: the answer on success; a refused connection never reached etcd
/// (Fail); anything after the request may have gone out is Unknown, except for reads, which
/// change nothing and so fail outright.
async fn call(request: reqwest::RequestBuilder, timeout: Duration, read: bool) -> Outcome {
    let response = match request.timeout(timeout).send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => return Outcome::Fail,
        Err(_) if read => return Outcome::Fail,
        Err(_) => return Outcome::Unknown,
    };
    let success = response.status().is_success();
    match response.json::<Value>().await {
        Ok(answer) if success => Outcome::Ok(answer),
        _ if read => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

fn encoded(text: &str) -> String {
    BASE64.encode(text)
}

fn decoded(value: &Value) -> Value {
    value
        .as_str()
        .and_then(|text| BASE64.decode(text).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map_or(Value::Null, Value::String)
}

pub async fn write(http: &reqwest::Client, addr: &str, body: &Value, timeout: Duration) -> Outcome {
    let text = |field: &str| body[field].as_str().unwrap_or_default();
    let key = encoded(text("key"));
    let (path, request) = match text("op") {
        "put" => (
            "kv/put",
            json!({"key": key, "value": encoded(text("value")), "prev_kv": true}),
        ),
        "cas" => (
            "kv/txn",
            json!({
                "compare": [{"key": key, "target": "VALUE", "result": "EQUAL", "value": encoded(text("from"))}],
                "success": [{"request_put": {"key": key, "value": encoded(text("to"))}}],
            }),
        ),
        "delete" => ("kv/deleterange", json!({"key": key})),
        other => unreachable!("the workload writes put, cas or delete, not {other:?}"),
    };
    let request = http.post(format!("http://{addr}/v3/{path}")).json(&request);
    match call(request, timeout, false).await {
        Outcome::Ok(answer) => Outcome::Ok(json!({
            "previous": decoded(&answer["prev_kv"]["value"]),
            // proto3 JSON leaves out a false `succeeded`.
            "ok": answer["succeeded"] == true,
        })),
        other => other,
    }
}

pub async fn read(http: &reqwest::Client, addr: &str, key: &str, timeout: Duration) -> Outcome {
    let request = http
        .post(format!("http://{addr}/v3/kv/range"))
        .json(&json!({"key": encoded(key)}));
    match call(request, timeout, true).await {
        Outcome::Ok(answer) => Outcome::Ok(decoded(&answer["kvs"][0]["value"])),
        other => other,
    }
}

/// A Go panic, or zap's panic level.
pub fn is_panic(line: &str) -> bool {
    line.starts_with("panic:") || line.contains(r#""level":"panic""#)
}

pub fn is_fatal(line: &str) -> bool {
    is_panic(line) || line.contains(r#""level":"fatal""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_base64_and_an_absent_one_is_null() {
        assert_eq!(
            decoded(&Value::String(encoded("p3-16-xx"))),
            json!("p3-16-xx")
        );
        assert_eq!(decoded(&Value::Null), Value::Null);
    }

    #[test]
    fn a_hex_raft_id_names_the_member_of_that_decimal_id() {
        let target = Target::new(super::super::TargetKind::Etcd);
        learn_members(&target, &json!({"members": [{"ID": "255", "name": "n3"}]}));
        assert_eq!(node_of(&target, &json!("ff")), Some(3));
        assert_eq!(node_of(&target, &json!("0")), None);
    }

    #[test]
    fn every_member_named_n_id_is_learnt() {
        let target = Target::new(super::super::TargetKind::Etcd);
        let answer = json!({"members": [
            {"ID": "111", "name": "n1"}, {"ID": "222", "name": "n2"}, {"ID": "333", "name": ""}
        ]});
        assert_eq!(learn_members(&target, &answer), 2);
        assert_eq!(target.members.lock().unwrap().get("222"), Some(&2));
    }
}
