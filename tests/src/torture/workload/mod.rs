//! Clients that record every operation they try, with its outcome, in the history format the
//! checkers read. An operation whose outcome the client cannot know (a timeout, a 503) is `info`,
//! and the client then continues as a new process, as in Jepsen: the old operation may still
//! take effect at any time.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fault_rules::SplitMix64;
use serde_json::{Value, json};

use super::target::{Outcome, Target};
use crate::history::{Event, Func, Kind, Value as HistoryValue};

mod closing;
mod recorder;

pub use closing::{final_reads, final_writes, first_write, resend_first_and_last_puts};
pub use recorder::{FaultStart, Recorder};

pub(crate) const TIMEOUT: Duration = Duration::from_millis(1500);
pub(crate) const BACKOFF: Duration = Duration::from_millis(20);

pub struct Workload {
    pub target: Target,
    pub clients: u64,
    pub keys: u64,
    pub seed: u64,
    /// Counts requests sent again after an unknown outcome.
    pub retries: Arc<std::sync::atomic::AtomicU64>,
    /// Writes whose answer shows they were applied twice (see `applied_twice`).
    pub doubles: Arc<std::sync::Mutex<Vec<String>>>,
    /// Each client id's latest write, by its sequence number.
    pub latest_writes: LatestWrites,
}

/// Client id -> the sequence number of the last write it sent.
pub type LatestWrites = Arc<std::sync::Mutex<std::collections::BTreeMap<u64, u64>>>;

/// Whether a write's answer shows it took effect twice: every value the workload writes is
/// unique, so a put or cas whose answer says the key held *its own* value before it was applied
/// after an earlier application of the same request (a retry the database did not recognise).
fn applied_twice(f: Func, answer: &Value, written: &str) -> bool {
    matches!(f, Func::Put | Func::Cas) && answer["previous"].as_str() == Some(written)
}

/// The value process `process` writes with sequence number `seq`: unique (`p3-16`), and one
/// write in four padded to 600 B-6 KiB. Real values are often kilobytes, and a record that
/// spans disk sectors and pages is what a power loss can tear: with only short values every
/// log record fits in one sector, which a disk writes whole, and a torn log tail never
/// happens. The padding is a function of (seed, process, seq), so a cas can name an earlier
/// value exactly.
pub fn written_value(seed: u64, process: u64, seq: u64) -> String {
    let mut rng = SplitMix64::new(seed ^ process.rotate_left(32) ^ seq.wrapping_mul(0x2545_f491));
    let mut value = format!("p{process}-{seq}");
    if rng.below(4) == 0 {
        let pad = 600 + rng.below(5_600) as usize;
        value.push('-');
        value.extend(std::iter::repeat_n('x', pad));
    }
    value
}

/// The history event that completes `process`'s operation `f` on `key` (invoked with `input`):
/// `ok` with what a read returned or what a cas matched, `fail`, or `info` when the outcome is
/// unknown.
pub(super) fn completion(
    process: u64,
    f: Func,
    key: String,
    input: HistoryValue,
    outcome: Outcome,
    time: u64,
) -> Event {
    let (kind, value, matched) = match outcome {
        Outcome::Ok(answer) => match f {
            Func::Get => (
                Kind::Ok,
                answer
                    .as_str()
                    .map_or(HistoryValue::Nil, |v| HistoryValue::One(v.to_owned())),
                None,
            ),
            Func::Cas => (Kind::Ok, input, Some(answer["ok"] == true)),
            _ => (Kind::Ok, input, None),
        },
        Outcome::Fail => (Kind::Fail, input, None),
        Outcome::Unknown => (Kind::Info, input, None),
    };
    Event {
        process,
        kind,
        f,
        key,
        value,
        matched,
        time,
    }
}

/// How many times a write with an unknown outcome is sent again (when the seed retries it).
const RETRIES: usize = 3;

/// Runs the clients until `stop`; returns the number of operations tried.
pub async fn run(
    workload: Workload,
    addrs: Vec<String>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut tasks = Vec::new();
    for client_index in 0..workload.clients {
        let (addrs, recorder, stop) = (addrs.clone(), recorder.clone(), stop.clone());
        let retries = workload.retries.clone();
        let doubles = workload.doubles.clone();
        let latest_writes = workload.latest_writes.clone();
        let keys = workload.keys;
        let target = workload.target.clone();
        let clients = workload.clients;
        let workload_seed = workload.seed;
        let mut rng = SplitMix64::new(workload.seed ^ (client_index + 1).wrapping_mul(0x9e37_79b9));
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut process = client_index;
            let mut seq = 0u64;
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{}", rng.below(keys));
                let addr = &addrs[rng.below(addrs.len() as u64) as usize];
                seq += 1;
                let value = written_value(workload_seed, process, seq);
                let (f, input, body) = match rng.below(10) {
                    0..=3 => (Func::Get, HistoryValue::Nil, Value::Null),
                    4..=6 => (
                        Func::Put,
                        HistoryValue::One(value.clone()),
                        json!({"client": process, "seq": seq, "op": "put", "key": key, "value": value}),
                    ),
                    7..=8 => {
                        // Compare against a value this client might have seen: its own last one.
                        let from = written_value(workload_seed, process, seq.saturating_sub(1 + rng.below(3)));
                        (
                            Func::Cas,
                            HistoryValue::Pair(from.clone(), value.clone()),
                            json!({"client": process, "seq": seq, "op": "cas", "key": key, "from": from, "to": value}),
                        )
                    }
                    _ => (Func::Delete, HistoryValue::Nil, json!({"client": process, "seq": seq, "op": "delete", "key": key})),
                };
                if f != Func::Get {
                    latest_writes.lock().expect("latest writes poisoned").insert(process, seq);
                }
                let invoke = Event { process, kind: Kind::Invoke, f, key: key.clone(), value: input.clone(), matched: None, time: recorder.now() };
                recorder.record(invoke);
                // A quarter of the writes wait only 100-400 ms, as impatient clients do: a write
                // slowed by a fault then times out while it may still apply, and is sent again.
                let timeout = if rng.below(4) == 0 { Duration::from_millis(100 + rng.below(301)) } else { TIMEOUT };
                let mut outcome = if f == Func::Get { target.read(&http, addr, &key, TIMEOUT).await } else { target.write(&http, addr, &body, timeout).await };
                // After an unknown outcome, a client often sends the same request (same client
                // id and seq) again, through another node: only the database's de-duplication
                // keeps it from applying twice. An answer settles the operation; a refusal does
                // not (the first request may still apply).
                if matches!(outcome, Outcome::Unknown) && f != Func::Get && target.deduplicates() && rng.below(2) == 0 {
                    // A third of them come back only after 1-3 s, as a client that reconnects
                    // does: by then nodes have restarted and taken or installed snapshots, so
                    // the retry meets de-duplication state rebuilt from disk, not in memory.
                    let first_wait = if rng.below(3) == 0 { Duration::from_millis(1000 + rng.below(2001)) } else { BACKOFF };
                    for attempt in 0..RETRIES {
                        tokio::time::sleep(if attempt == 0 { first_wait } else { BACKOFF }).await;
                        let other = &addrs[rng.below(addrs.len() as u64) as usize];
                        retries.fetch_add(1, Ordering::Relaxed);
                        if let Outcome::Ok(answer) = target.write(&http, other, &body, TIMEOUT).await {
                            outcome = Outcome::Ok(answer);
                            break;
                        }
                    }
                }
                let time = recorder.now();
                if let Outcome::Ok(answer) = &outcome
                    && applied_twice(f, answer, &value)
                {
                    doubles.lock().expect("doubles poisoned").push(format!(
                        "process {process}'s {f:?} of {shown} to {key} (seq {seq}) answered that {key} already held {shown}: the request was applied twice", shown = crate::history::shown(&value)
                    ));
                }
                let completion = completion(process, f, key, input, outcome, time);
                if completion.kind == Kind::Info {
                    recorder.record(completion);
                    // The old request may still land: go on as a new process and client id.
                    process += clients;
                    seq = 0;
                    done += 1;
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                let failed = completion.kind == Kind::Fail;
                recorder.record(completion);
                done += 1;
                if failed {
                    // A node that is down refuses at once: do not spin on it.
                    tokio::time::sleep(BACKOFF).await;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    total
}

#[cfg(test)]
mod double_application {
    use super::{closing::is_latest_write, *};

    #[test]
    fn only_a_clients_latest_write_is_judged_by_its_answer() {
        let latest = LatestWrites::default();
        latest.lock().unwrap().insert(3, 9);
        assert!(is_latest_write(&latest, 3, 9));
        // An older request may get the answer of seq 9 from a database that keeps one per client.
        assert!(!is_latest_write(&latest, 3, 4));
        // A final write's client sent that one write only.
        assert!(is_latest_write(&latest, 2_000_003, 1));
    }

    #[test]
    fn a_write_that_found_its_own_value_was_applied_twice() {
        let answer = json!({"ok": true, "previous": "p1-7"});
        assert!(applied_twice(Func::Put, &answer, "p1-7"));
        assert!(!applied_twice(Func::Put, &answer, "p1-8"));
        // A cas that found its own new value failed its compare: its first application won.
        let failed_cas = json!({"ok": false, "previous": "p2-3"});
        assert!(applied_twice(Func::Cas, &failed_cas, "p2-3"));
        assert!(!applied_twice(Func::Delete, &answer, "p1-7"));
        assert!(!applied_twice(
            Func::Put,
            &json!({"ok": true, "previous": null}),
            "p1-7"
        ));
    }
}

#[cfg(test)]
mod written_values {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn values_are_unique_repeatable_and_some_span_several_sectors() {
        let mut seen = HashSet::new();
        let mut long = 0;
        for process in 0..20 {
            for seq in 0..200 {
                let value = written_value(7, process, seq);
                assert_eq!(
                    value,
                    written_value(7, process, seq),
                    "a cas names it again"
                );
                assert!(value.starts_with(&format!("p{process}-{seq}")));
                if value.len() > 512 {
                    long += 1;
                }
                assert!(seen.insert(value), "p{process}-{seq} written twice");
            }
        }
        // One in four, give or take: enough multi-sector records for a power loss to tear.
        assert!(
            (700..1300).contains(&long),
            "{long} of 4000 values span sectors"
        );
    }
}
