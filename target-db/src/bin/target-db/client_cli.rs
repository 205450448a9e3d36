//! `target-db client` and `target-db admin`: requests through target-db-client, the answer or
//! the refusal printed as JSON.
use anyhow::{Result, bail};
use serde::Serialize;
use target_db_client::Client;

use super::{ClientOp, read_token};
use target_db::types::{Op, Request};

/// A client that sends the cluster token read from `path`, if given.
pub fn client_with(token_file: Option<&std::path::Path>) -> Result<Client> {
    let client = Client::new();
    Ok(match read_token(token_file)? {
        Some(token) => client.token(token.text())?,
        None => client,
    })
}

/// Prints a node's answer, or its refusal (and exits non-zero with the reason).
pub fn answered(answer: Result<impl Serialize, target_db_client::Error>) -> Result<()> {
    match answer {
        Ok(answer) => {
            print(&answer);
            Ok(())
        }
        Err(target_db_client::Error::Refused { refusal, .. }) => {
            print(&refusal);
            bail!("{}", refusal.error)
        }
        Err(error) => Err(error.into()),
    }
}

fn print(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A client id no earlier invocation is likely to have used: the clock's nanoseconds mixed
/// with the pid.
pub fn random_client_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut id = nanos ^ (u64::from(std::process::id()) << 40);
    // SplitMix64's finaliser, so ids of invocations close in time differ in every bit.
    id = (id ^ (id >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    id = (id ^ (id >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    id ^ (id >> 31)
}

pub async fn client(addr: &str, client: u64, seq: u64, op: ClientOp) -> Result<()> {
    // A follower answers with the leader's address: try there (twice at most).
    let nodes = Client::new().following_leader(2);
    let op = match op {
        // Keys are sent as they are: the CLI is for simple keys (letters, digits, -_.).
        ClientOp::Get { key } => return answered(nodes.read(addr, &key).await),
        ClientOp::Put { key, value } => Op::Put { key, value },
        ClientOp::Cas { key, old, new } => Op::Cas {
            key,
            from: (old != "-").then_some(old),
            to: new,
        },
        ClientOp::Delete { key } => Op::Delete { key },
    };
    answered(nodes.write(addr, &Request { client, seq, op }).await)
}
