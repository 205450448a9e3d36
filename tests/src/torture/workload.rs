//! Clients that record every operation they try, with its outcome, in the history format the
//! checkers read. An operation whose outcome the client cannot know (a timeout, a 503) is `info`,
//! and the client then continues as a new process, as in Jepsen: the old operation may still
//! take effect at any time.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use fault_rules::SplitMix64;
use serde_json::{Value, json};

use super::target::{Outcome, Target};
use crate::history::{
    Event, FaultEvent, Func, Kind, LeaderEvent, LeaderKind, Line, Value as HistoryValue,
};

/// Everything that happened, in the order it was recorded.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    lines: Arc<Mutex<Vec<Line>>>,
    /// `target name` of each fault started and not yet ended, for the progress line.
    running: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            lines: Arc::new(Mutex::new(Vec::new())),
            running: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub(super) fn record(&self, event: Event) {
        self.lines
            .lock()
            .expect("recorder poisoned")
            .push(Line::Op(event));
    }

    /// Prints that a fault starts now; [`Recorder::fault_ends`] records it once it is over, so
    /// a person watching sees each fault as it happens.
    pub fn fault_starts(&self, target: impl Into<String>, name: impl Into<String>) -> FaultStart {
        let start = FaultStart {
            time: self.now(),
            target: target.into(),
            name: name.into(),
        };
        let running = format!("{} {}", start.target, start.name);
        eprintln!("[{:>5.1} s] {running} ...", seconds(start.time));
        self.running
            .lock()
            .expect("recorder poisoned")
            .push(running);
        start
    }

    /// Records a fault from its start until now, on `target` (the node it ended up on), and
    /// prints what was done.
    pub fn fault_ends(&self, start: FaultStart, target: String, description: String) {
        let end = self.now();
        let running = format!("{} {}", start.target, start.name);
        let mut still = self.running.lock().expect("recorder poisoned");
        if let Some(at) = still.iter().position(|r| *r == running) {
            still.remove(at);
        }
        drop(still);
        eprintln!(
            "[{:>5.1} s] {target} {} done in {:.1} s: {description}",
            seconds(end),
            start.name,
            seconds(end - start.time)
        );
        self.push_fault(start.time, end, target, start.name, description);
    }

    /// Records and prints a fault from `time` until now, told only once it is over (a named
    /// scenario's step, whose node is known only after it ran).
    pub fn fault_since(&self, time: u64, target: String, name: &str, description: String) {
        let end = self.now();
        eprintln!(
            "[{:>5.1}-{:.1} s] {target} {name}: {description}",
            seconds(time),
            seconds(end)
        );
        self.push_fault(time, end, target, name.to_owned(), description);
    }

    fn push_fault(&self, time: u64, end: u64, target: String, name: String, description: String) {
        let fault = FaultEvent {
            kind: crate::history::FaultKind::Fault,
            time,
            end: Some(end),
            target,
            name,
            description,
        };
        self.lines
            .lock()
            .expect("recorder poisoned")
            .push(Line::Fault(fault));
    }

    pub fn leader(&self, time: u64, leader: Option<u64>, term: Option<u64>) {
        let event = LeaderEvent {
            kind: LeaderKind::Leader,
            time,
            leader,
            term,
        };
        self.lines
            .lock()
            .expect("recorder poisoned")
            .push(Line::Leader(event));
    }

    /// The faults under way, as `target name`.
    pub fn running_faults(&self) -> Vec<String> {
        self.running.lock().expect("recorder poisoned").clone()
    }

    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().expect("recorder poisoned").clone()
    }
}

/// A fault that has started and not yet been recorded.
#[must_use = "a started fault is recorded by Recorder::fault_ends"]
pub struct FaultStart {
    time: u64,
    target: String,
    name: String,
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

pub(super) const TIMEOUT: Duration = Duration::from_millis(1500);
const BACKOFF: Duration = Duration::from_millis(20);

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
fn is_latest_write(latest_writes: &LatestWrites, client: u64, seq: u64) -> bool {
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

#[cfg(test)]
mod double_application {
    use super::*;

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
