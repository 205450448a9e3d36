//! The bundled target-db: `target-db serve` per node, `/init` on node 1, JSON over HTTP, and a
//! `/status` that already speaks the harness's words.
use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use serde_json::Value;

use super::{NodePlace, Outcome, json_answer};
use crate::torture::poll::wait_for;

pub const PORT: u16 = 7000;

pub fn start_command(program: &Path, node: &NodePlace, flags: &[String]) -> Command {
    let mut command = Command::new(program);
    command
        .args(["serve", "--id", &node.id.to_string()])
        .args(["--listen", &format!("{}:{PORT}", node.ip)])
        .arg("--data-dir")
        .arg(node.data_dir)
        .args(flags);
    command
}

pub async fn initialise(
    http: &reqwest::Client,
    addrs: &[String],
    settle: Duration,
) -> anyhow::Result<()> {
    let peers: BTreeMap<String, &String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| ((i + 1).to_string(), a))
        .collect();
    let peers = &peers;
    let accepted = wait_for(settle, Duration::from_millis(100), move || async move {
        let answer = http
            .post(format!("http://{}/init", addrs[0]))
            .json(&peers)
            .send()
            .await;
        answer.is_ok_and(|response| response.status().is_success())
    })
    .await;
    anyhow::ensure!(accepted, "node 1 never accepted /init");
    Ok(())
}

pub async fn status(http: &reqwest::Client, addr: &str) -> Option<Value> {
    json_answer(
        http.get(format!("http://{addr}/status")),
        Duration::from_secs(1),
    )
    .await
}

/// Sends a request to `addr` and follows one redirect to the leader. A write keeps its
/// (client, seq), so the retry can never apply twice. On success, the node's answer.
async fn call(
    addr: &str,
    timeout: Duration,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Outcome {
    let mut target = addr.to_owned();
    for _ in 0..2 {
        let response = match build(&target).timeout(timeout).send().await {
            Ok(response) => response,
            // Refused: the request never reached a node, so it definitely did not apply.
            Err(error) if error.is_connect() => return Outcome::Fail,
            Err(_) => return Outcome::Unknown,
        };
        let status = response.status();
        let Ok(answer) = response.json::<Value>().await else {
            return Outcome::Unknown;
        };
        if status.is_success() {
            return Outcome::Ok(answer);
        }
        if answer["outcome"] != "not-applied" {
            return Outcome::Unknown;
        }
        match answer["leader"].as_str() {
            Some(leader) => target = leader.to_owned(),
            None => return Outcome::Fail,
        }
    }
    Outcome::Fail
}

pub async fn write(http: &reqwest::Client, addr: &str, body: &Value, timeout: Duration) -> Outcome {
    match call(addr, timeout, |target| {
        http.post(format!("http://{target}/kv/write")).json(body)
    })
    .await
    {
        Outcome::Ok(answer) => Outcome::Ok(answer["response"].clone()),
        other => other,
    }
}

pub async fn read(http: &reqwest::Client, addr: &str, key: &str, timeout: Duration) -> Outcome {
    match call(addr, timeout, |target| {
        http.get(format!("http://{target}/kv/get?key={key}"))
    })
    .await
    {
        Outcome::Ok(answer) => Outcome::Ok(answer["value"].clone()),
        other => other,
    }
}
