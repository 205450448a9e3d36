//! A client of the nemesis's own: a fault that opens a window where a bug shows (a deposed
//! leader still answering, say) sends the operations that expose it inside that window, instead
//! of waiting for the workload's random clients to land there. Each operation goes into the
//! history like a workload client's, so the same checkers judge it.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde_json::json;

use super::{
    target::{Outcome, Target},
    workload::{LatestWrites, Recorder, TIMEOUT, completion, written_value},
};
use crate::history::{Event, Func, Kind, Value as HistoryValue};

/// Process ids of probes start here, far past the workload's (client index plus a multiple of
/// the client count, growing by one multiple per unknown outcome).
const FIRST_PROCESS: u64 = 1 << 40;

#[derive(Clone)]
pub struct Probe {
    pub target: Target,
    pub recorder: Recorder,
    pub latest_writes: LatestWrites,
    pub seed: u64,
    /// The workload's keys are `k0` up to this.
    pub keys: u64,
    next_process: Arc<AtomicU64>,
}

impl Probe {
    pub fn new(
        target: Target,
        recorder: Recorder,
        latest_writes: LatestWrites,
        seed: u64,
        keys: u64,
    ) -> Probe {
        Probe {
            target,
            recorder,
            latest_writes,
            seed,
            keys,
            next_process: Arc::new(AtomicU64::new(FIRST_PROCESS)),
        }
    }

    /// Puts a fresh value to `key` through the node at `addr`, as a new process (and client
    /// id); whether it was acknowledged.
    pub async fn put(&self, http: &reqwest::Client, addr: &str, key: &str) -> bool {
        let process = self.next_process.fetch_add(1, Ordering::Relaxed);
        let seq = 1;
        let value = written_value(self.seed, process, seq);
        let body = json!({"client": process, "seq": seq, "op": "put", "key": key, "value": value});
        self.latest_writes
            .lock()
            .expect("latest writes poisoned")
            .insert(process, seq);
        let input = HistoryValue::One(value);
        self.invoke(process, Func::Put, key, input.clone());
        let outcome = self.target.write(http, addr, &body, TIMEOUT).await;
        let acknowledged = matches!(outcome, Outcome::Ok(_));
        self.complete(process, Func::Put, key, input, outcome);
        acknowledged
    }

    /// Reads `key` from the node at `addr`, as a new process.
    pub async fn get(&self, http: &reqwest::Client, addr: &str, key: &str) {
        let process = self.next_process.fetch_add(1, Ordering::Relaxed);
        self.invoke(process, Func::Get, key, HistoryValue::Nil);
        let outcome = self.target.read(http, addr, key, TIMEOUT).await;
        self.complete(process, Func::Get, key, HistoryValue::Nil, outcome);
    }

    fn invoke(&self, process: u64, f: Func, key: &str, value: HistoryValue) {
        self.recorder.record(Event {
            process,
            kind: Kind::Invoke,
            f,
            key: key.to_owned(),
            value,
            matched: None,
            time: self.recorder.now(),
        });
    }

    fn complete(&self, process: u64, f: Func, key: &str, input: HistoryValue, outcome: Outcome) {
        let event = completion(
            process,
            f,
            key.to_owned(),
            input,
            outcome,
            self.recorder.now(),
        );
        self.recorder.record(event);
    }
}
