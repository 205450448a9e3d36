//! The run's record: every operation, fault and change of leader, in the order it happened, as
//! the history's lines; it also prints each fault as it starts and ends.
use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::history::{Event, FaultEvent, LeaderEvent, LeaderKind, Line};

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

    pub(in crate::torture) fn record(&self, event: Event) {
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
