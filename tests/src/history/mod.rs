//! Histories: what clients asked for and what they were told, with times.
//!
//! On disk a history is JSON lines, one [`Event`] per line (or a [`FaultEvent`]):
//!
//! ```text
//! {"process":3,"kind":"invoke","f":"put","key":"k1","value":"v7","time":1200}
//! {"process":3,"kind":"ok","f":"put","key":"k1","value":"v7","time":1850}
//! {"process":4,"kind":"invoke","f":"cas","key":"k1","value":["v7","v8"],"time":1900}
//! {"process":4,"kind":"ok","f":"cas","key":"k1","value":["v7","v8"],"matched":false,"time":2300}
//! {"kind":"fault","time":2000,"end":2500,"target":"n2","description":"SIGKILL"}
//! {"kind":"leader","time":2600,"leader":3,"term":4}
//! ```
//!
//! `kind` is `invoke`, then one of `ok`, `fail` (definitely did not take effect) or `info`
//! (outcome unknown: it may take effect at any moment after its invoke, or never); an invoke with
//! no completion is unknown too. `time` is a monotonic clock in nanoseconds. A `get` completion's
//! `value` is what was read (`null`: the key was absent). A `cas` that ran and found another value
//! completes `ok` with `"matched": false`.
mod edn_kv;
pub mod generate;
mod jepsen_etcd;
mod pairing;

use std::{fmt, io::BufRead, path::Path};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use pairing::pair_events;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    Get,
    Put,
    Cas,
    Delete,
    Append,
}

impl Func {
    pub fn is_write(self) -> bool {
        !matches!(self, Func::Get)
    }
}

/// An event's `value`: nothing, one string, or a cas's `[from, to]`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    #[default]
    Nil,
    One(String),
    Pair(String, String),
}

/// One line of a history file: a client's invocation or completion of an operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    pub kind: Kind,
    pub f: Func,
    pub key: String,
    #[serde(default)]
    pub value: Value,
    /// On a `cas` completion: false when the cas ran and found another value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<bool>,
    pub time: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Fault,
}

/// A fault the nemesis applied, drawn on the report's time axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub kind: FaultKind,
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
    pub target: String,
    /// Its kind, as the command line names it (`kill`, `power-loss`, ...), or what the harness
    /// did (`final power loss`); empty in histories written before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaderKind {
    Leader,
}

/// From `time` on, the cluster's leader as the harness saw it: the node that said it leads in
/// the highest term, or none (an election, or no quorum).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderEvent {
    pub kind: LeaderKind,
    pub time: u64,
    pub leader: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Fault(FaultEvent),
    Leader(LeaderEvent),
    Op(Event),
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Args {
    Get,
    Put(String),
    Cas { from: String, to: String },
    Delete,
    Append(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged: it took effect (for a cas: it ran; see `matched`).
    Ok,
    /// Definitely did not take effect.
    Fail,
    /// May have taken effect at any moment after its invoke, or never.
    Unknown,
}

/// An invocation paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: usize,
    pub process: u64,
    pub key: String,
    pub args: Args,
    pub outcome: Outcome,
    /// For an ok get: what was read (`None`: absent).
    pub read: Option<String>,
    /// For an ok cas: whether it found `from` and wrote `to`.
    pub matched: bool,
    pub invoke: u64,
    /// When the completion arrived; `None` when none ever did.
    pub complete: Option<u64>,
}

impl Operation {
    pub fn func(&self) -> Func {
        match self.args {
            Args::Get => Func::Get,
            Args::Put(_) => Func::Put,
            Args::Cas { .. } => Func::Cas,
            Args::Delete => Func::Delete,
            Args::Append(_) => Func::Append,
        }
    }

    /// The end of the window in which the operation could have taken effect.
    pub fn effect_deadline(&self) -> u64 {
        match self.outcome {
            Outcome::Ok => self.complete.unwrap_or(u64::MAX),
            Outcome::Fail | Outcome::Unknown => u64::MAX,
        }
    }

    /// The value this operation leaves in its key when it takes effect, if it writes one.
    pub fn written_value(&self) -> Option<&str> {
        match &self.args {
            Args::Put(value) => Some(value),
            Args::Cas { to, .. } => Some(to),
            _ => None,
        }
    }
}

/// A value as a report shows it: quoted, and a long one cut to its start and its length, so a
/// kilobyte value does not bury the operation it belongs to.
pub fn shown(value: &str) -> String {
    const LONGEST: usize = 40;
    if value.chars().count() <= LONGEST {
        return format!("{value:?}");
    }
    let start: String = value.chars().take(16).collect();
    format!("{start:?}... ({} bytes)", value.len())
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |value: &Option<String>| match value {
            Some(value) => shown(value),
            None => "absent".to_owned(),
        };
        let key = &self.key;
        match &self.args {
            Args::Get => write!(f, "get({key})")?,
            Args::Put(value) => write!(f, "put({key}, {})", shown(value))?,
            Args::Cas { from, to } => write!(f, "cas({key}, {} -> {})", shown(from), shown(to))?,
            Args::Delete => write!(f, "delete({key})")?,
            Args::Append(value) => write!(f, "append({key}, {})", shown(value))?,
        }
        match (self.outcome, &self.args) {
            (Outcome::Ok, Args::Get) => write!(f, " = {}", show(&self.read)),
            (Outcome::Ok, Args::Cas { .. }) if !self.matched => write!(f, " = no match"),
            (Outcome::Ok, _) => write!(f, " = ok"),
            (Outcome::Fail, _) => write!(f, " = failed"),
            (Outcome::Unknown, _) => write!(f, " = unknown"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub operations: Vec<Operation>,
    pub faults: Vec<FaultEvent>,
    /// Leader changes, in time order (torture runs record them; imported histories have none).
    pub leaders: Vec<LeaderEvent>,
}

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error(
        "{0}: unknown history format; pass --format faultline (JSON lines), jepsen-etcd or edn-kv"
    )]
    UnknownFormat(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Faultline's JSON lines.
    Faultline,
    /// Jepsen etcd logs (`INFO  jepsen.util - P :TYPE :F VALUE`), one register.
    JepsenEtcd,
    /// EDN maps, one per line (`{:process 0, :type :invoke, :f :get, :key "1", :value nil}`).
    EdnKv,
}

impl Format {
    /// Guesses the format from the first non-empty line.
    pub fn detect(first_line: &str) -> Option<Format> {
        let line = first_line.trim_start();
        if line.starts_with('{') && line.contains(":process") {
            Some(Format::EdnKv)
        } else if line.starts_with('{') {
            Some(Format::Faultline)
        } else if line.contains("jepsen.util") {
            Some(Format::JepsenEtcd)
        } else {
            None
        }
    }
}

impl History {
    pub fn load(path: &Path, format: Option<Format>) -> Result<History, HistoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let format = match format {
            Some(format) => format,
            None => text
                .lines()
                .find(|line| !line.trim().is_empty())
                .and_then(Format::detect)
                .ok_or_else(|| HistoryError::UnknownFormat(path.display().to_string()))?,
        };
        Self::parse(&text, format)
    }

    pub fn parse(text: &str, format: Format) -> Result<History, HistoryError> {
        match format {
            Format::Faultline => Self::parse_json_lines(text.as_bytes()),
            Format::JepsenEtcd => jepsen_etcd::parse(text),
            Format::EdnKv => edn_kv::parse(text),
        }
    }

    pub fn parse_json_lines(reader: impl BufRead) -> Result<History, HistoryError> {
        let mut events = Vec::new();
        let mut faults = Vec::new();
        let mut leaders = Vec::new();
        for (index, line) in reader.lines().enumerate() {
            let line_no = index + 1;
            let line = line.map_err(|e| HistoryError::Parse {
                line: line_no,
                message: e.to_string(),
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(&line) {
                Ok(Line::Op(event)) => events.push((line_no, event)),
                Ok(Line::Fault(fault)) => faults.push(fault),
                Ok(Line::Leader(leader)) => leaders.push(leader),
                Err(e) => {
                    return Err(HistoryError::Parse {
                        line: line_no,
                        message: format!("not a history event ({e}): {line}"),
                    });
                }
            }
        }
        let mut history = pair_events(events)?;
        history.faults = faults;
        history.leaders = leaders;
        Ok(history)
    }

    /// The history as JSON lines, events in time order.
    pub fn to_json_lines(&self) -> String {
        let mut lines: Vec<(u64, String)> = Vec::new();
        for op in &self.operations {
            for event in pairing::events_of(op) {
                lines.push((
                    event.time,
                    serde_json::to_string(&event).expect("serialisable"),
                ));
            }
        }
        for fault in &self.faults {
            lines.push((
                fault.time,
                serde_json::to_string(fault).expect("serialisable"),
            ));
        }
        for leader in &self.leaders {
            lines.push((
                leader.time,
                serde_json::to_string(leader).expect("serialisable"),
            ));
        }
        lines.sort_by_key(|(time, _)| *time);
        lines.into_iter().map(|(_, line)| line + "\n").collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_value_is_shown_by_its_start_and_length() {
        assert_eq!(super::shown("p3-16"), "\"p3-16\"");
        let long = format!("p3-16-{}", "x".repeat(3000));
        assert_eq!(super::shown(&long), "\"p3-16-xxxxxxxxxx\"... (3006 bytes)");
    }
}
