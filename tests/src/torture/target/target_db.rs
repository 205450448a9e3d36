//! The bundled target-db: `target-db serve` per node, `/init` on node 1, its client API through
//! `target-db-client`, and a `/status` that already speaks the harness's words.
use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use target_db_client::{Client, Error, Peers, Request};

use super::{NodePlace, Outcome};
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
    let peers: Peers = (1..).zip(addrs.iter().cloned()).collect();
    let (client, peers) = (&Client::with_http(http.clone()), &peers);
    let accepted = wait_for(settle, Duration::from_millis(100), move || async move {
        client.init(&addrs[0], peers).await.is_ok()
    })
    .await;
    anyhow::ensure!(accepted, "node 1 never accepted /init");
    Ok(())
}

/// The node's /status as JSON (the harness's words are target-db's own), or None if it did not
/// answer within a second.
pub async fn status(http: &reqwest::Client, addr: &str) -> Option<Value> {
    let client = Client::with_http(http.clone()).timeout(Duration::from_secs(1));
    let status = client.status(addr).await.ok()?;
    serde_json::to_value(status).ok()
}

/// A client that sends a request refused by a follower on to the leader it names, once. A write
/// keeps its (client, seq), so the retry can never apply twice.
fn client(http: &reqwest::Client, timeout: Duration) -> Client {
    Client::with_http(http.clone())
        .timeout(timeout)
        .following_leader(1)
}

/// How a failed request ended, for the checkers.
fn outcome_of(error: &Error) -> Outcome {
    if error.not_applied() {
        Outcome::Fail
    } else {
        Outcome::Unknown
    }
}

pub async fn write(http: &reqwest::Client, addr: &str, body: &Value, timeout: Duration) -> Outcome {
    // The workload's words are target-db's request; one it cannot read is refused unsent, as
    // the node would refuse it (400, not applied).
    let Ok(request) = serde_json::from_value::<Request>(body.clone()) else {
        return Outcome::Fail;
    };
    match client(http, timeout).write(addr, &request).await {
        Ok(reply) => Outcome::Ok(serde_json::to_value(reply.response).unwrap_or_default()),
        Err(error) => outcome_of(&error),
    }
}

pub async fn read(http: &reqwest::Client, addr: &str, key: &str, timeout: Duration) -> Outcome {
    match client(http, timeout).read(addr, key).await {
        Ok(reply) => Outcome::Ok(reply.value.map_or(Value::Null, Value::String)),
        Err(error) => outcome_of(&error),
    }
}
