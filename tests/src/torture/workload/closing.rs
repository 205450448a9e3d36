//! The operations a run makes after its load, outside the workload's clients: the first write
//! after healing, rounds of writes to every key before the final power loss, writes sent again
//! to test de-duplication, and the final read of every key.
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BACKOFF, LatestWrites, Recorder, TIMEOUT, applied_twice, written_value};
use crate::{
    history::{Event, Func, Kind, Line, Value as HistoryValue},
    torture::target::{Outcome, Target},
};

/// The write sent to each node in turn until one answers (the same client and seq, so
/// de-duplication keeps a resent write from applying twice; a target without it is sent the
/// write once). Once an attempt may have applied, the
/// write stays uncertain unless a later attempt is answered.
async fn write_through_any(
    target: &Target,
    client: &reqwest::Client,
    addrs: &[String],
    body: &Value,
) -> Outcome {
    let mut outcome = Outcome::Fail;
    for addr in addrs {
        match target.write(client, addr, body, TIMEOUT).await {
            Outcome::Ok(answer) => return Outcome::Ok(answer),
            Outcome::Unknown if !target.deduplicates() => return Outcome::Unknown,
            Outcome::Unknown => outcome = Outcome::Unknown,
            Outcome::Fail => {}
        }
    }
    outcome
}

/// How long until the cluster takes a write again, polled for up to `limit`. The write is a put
/// of a key the workload never uses, from a client id it never uses, so the history and its
/// checks are not touched.
pub async fn first_write(target: &Target, addrs: &[String], limit: Duration) -> Option<Duration> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut seq = 0u64;
    loop {
        for addr in addrs {
            seq += 1;
            let body = json!({"client": u64::MAX, "seq": seq, "op": "put", "key": "heal-probe", "value": seq.to_string()});
            if let Outcome::Ok(_) = target.write(&http, addr, &body, TIMEOUT).await {
                return Some(started.elapsed());
            }
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(BACKOFF).await;
    }
}

/// Sends again, after the final power loss, the first and the last acknowledged put of each
/// key (each with its own client id, sequence number and value). The first was applied long
/// ago and is inside the snapshots the nodes recovered from: a database that lost its
/// de-duplication state with the restart applies it again, and the key goes back to that old
/// value. The last is its client's latest request, the one de-duplication must recognise
/// exactly (an off-by-one lets it through): applied again, its answer says the key already held
/// its own value. Only a client's latest write is judged by its answer: a database that keeps
/// one request per client (the Raft dissertation's sessions, which assume a client never sends
/// an older request again) answers an older one with the latest one's answer, which may say the
/// key held this value without applying anything; an older write is judged by reading its key
/// back. Not recorded in the history (it must have no effect); returns what was applied again,
/// for "each write applied once".
pub async fn resend_first_and_last_puts(
    target: &Target,
    addrs: &[String],
    lines: &[Line],
    latest_writes: &LatestWrites,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut first: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    let mut last: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for line in lines {
        if let Line::Op(Event {
            kind: Kind::Ok,
            f: Func::Put,
            key,
            value: HistoryValue::One(value),
            ..
        }) = line
        {
            first.entry(key.as_str()).or_insert(value.as_str());
            last.insert(key.as_str(), value.as_str());
        }
    }
    let mut applied_again = Vec::new();
    // A key written once has no later value to go back from.
    let resends = first
        .into_iter()
        .filter(|(key, value)| last.get(key) != Some(value))
        .map(|(key, value)| (key, value, "its first acknowledged write"))
        .collect::<Vec<_>>()
        .into_iter()
        .chain(
            last.into_iter()
                .map(|(key, value)| (key, value, "its last acknowledged write")),
        );
    for (key, value, which) in resends {
        // A workload value is `p{process}-{seq}...`: the process is the client id.
        let Some((client, seq)) = value
            .strip_prefix('p')
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(client, rest)| {
                let seq = rest.split('-').next()?;
                Some((client.parse::<u64>().ok()?, seq.parse::<u64>().ok()?))
            })
        else {
            continue;
        };
        let body = json!({"client": client, "seq": seq, "op": "put", "key": key, "value": value});
        let Outcome::Ok(answer) = write_through_any(target, &http, addrs, &body).await else {
            continue;
        };
        let shown = crate::history::shown(value);
        let sent_again = format!(
            "process {client}'s put of {shown} to {key} (seq {seq}), {which}, sent again after the final power loss, was applied again"
        );
        if is_latest_write(latest_writes, client, seq) && applied_twice(Func::Put, &answer, value) {
            applied_again.push(format!(
                "{sent_again}: its answer says {key} already held {shown}"
            ));
            continue;
        }
        for addr in addrs {
            if let Outcome::Ok(now) = target.read(&http, addr, key, TIMEOUT).await {
                if now.as_str() == Some(value) && which.contains("first") {
                    applied_again.push(format!("{sent_again}: {key} went back to {shown}"));
                }
                break;
            }
        }
    }
    applied_again
}

/// Whether (client, seq) is the last write its client sent; a client the workload did not run
/// (a final write's) sent only that one.
pub(super) fn is_latest_write(latest_writes: &LatestWrites, client: u64, seq: u64) -> bool {
    latest_writes
        .lock()
        .expect("latest writes poisoned")
        .get(&client)
        .is_none_or(|&latest| latest == seq)
}

/// The value of a final write: unique, and 16 KiB, so its log record covers whole pages that
/// no later append touches again. A write-back error loses whole pages (Linux marks them clean
/// unwritten; a later write to a page writes all of it again), so only such pages stay lost
/// when a database goes on after a failed fsync.
fn final_value(seed: u64, process: u64) -> String {
    let mut value = written_value(seed, process, 1);
    value.push('-');
    value.extend(std::iter::repeat_n('f', 16 << 10));
    value
}

/// Writes a new value to every key once the cluster is healed, each recorded in the history
/// (process `first_process` + key index, seq 1): the writes acknowledged last before the final
/// power loss, which nothing written later can make durable by accident. Tries each node in
/// turn (the same client and seq, so de-duplication keeps a resent write from applying
/// twice). Returns how many were acknowledged.
pub async fn final_writes(
    target: &Target,
    addrs: &[String],
    keys: u64,
    seed: u64,
    recorder: &Recorder,
    first_process: u64,
) -> u64 {
    let http = reqwest::Client::new();
    let mut acknowledged = 0;
    for key_index in 0..keys {
        let key = format!("k{key_index}");
        let process = first_process + key_index;
        let value = final_value(seed, process);
        let body = json!({"client": process, "seq": 1, "op": "put", "key": key, "value": value});
        let input = HistoryValue::One(value);
        recorder.record(Event {
            process,
            kind: Kind::Invoke,
            f: Func::Put,
            key: key.clone(),
            value: input.clone(),
            matched: None,
            time: recorder.now(),
        });
        let kind = match write_through_any(target, &http, addrs, &body).await {
            Outcome::Ok(_) => {
                acknowledged += 1;
                Kind::Ok
            }
            Outcome::Fail => Kind::Fail,
            Outcome::Unknown => Kind::Info,
        };
        recorder.record(Event {
            process,
            kind,
            f: Func::Put,
            key,
            value: input,
            matched: None,
            time: recorder.now(),
        });
    }
    acknowledged
}

/// Reads every key once at the end, after healing: the final state the durability checks use.
pub async fn final_reads(
    target: &Target,
    addrs: &[String],
    keys: u64,
    recorder: &Recorder,
    first_process: u64,
) -> bool {
    let http = reqwest::Client::new();
    let mut all = true;
    for key_index in 0..keys {
        let key = format!("k{key_index}");
        let process = first_process + key_index;
        recorder.record(Event {
            process,
            kind: Kind::Invoke,
            f: Func::Get,
            key: key.clone(),
            value: HistoryValue::Nil,
            matched: None,
            time: recorder.now(),
        });
        let mut outcome = Outcome::Unknown;
        for addr in addrs {
            outcome = target.read(&http, addr, &key, TIMEOUT).await;
            if matches!(outcome, Outcome::Ok(_)) {
                break;
            }
        }
        let time = recorder.now();
        match outcome {
            Outcome::Ok(value) => recorder.record(Event {
                process,
                kind: Kind::Ok,
                f: Func::Get,
                key,
                time,
                matched: None,
                value: value
                    .as_str()
                    .map_or(HistoryValue::Nil, |v| HistoryValue::One(v.to_owned())),
            }),
            _ => {
                all = false;
                recorder.record(Event {
                    process,
                    kind: Kind::Info,
                    f: Func::Get,
                    key,
                    time,
                    value: HistoryValue::Nil,
                    matched: None,
                });
            }
        }
    }
    all
}
