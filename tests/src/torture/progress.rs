//! The one-line progress report a run prints every two seconds.
use std::time::Duration;

use crate::history::{LeaderEvent, Line};

/// The one-line progress report of a run: operations so far and the rate since the last line,
/// faults done, the leader and its term as the watcher last saw them.
#[derive(Default)]
pub(super) struct Progress {
    ops: usize,
    at: Duration,
}

impl Progress {
    pub(super) fn line(&mut self, lines: &[Line], now: Duration) -> String {
        let ops = lines
            .iter()
            .filter(|l| matches!(l, Line::Op(e) if e.kind != crate::history::Kind::Invoke))
            .count();
        let faults = lines.iter().filter(|l| matches!(l, Line::Fault(_))).count();
        let leader = lines.iter().rev().find_map(|l| match l {
            Line::Leader(leader) => Some(leader),
            _ => None,
        });
        let leader = match leader {
            Some(LeaderEvent {
                leader: Some(node),
                term,
                ..
            }) => format!(
                "leader n{node}{}",
                term.map_or(String::new(), |t| format!(" (term {t})"))
            ),
            Some(_) => "no leader".to_owned(),
            None => "leader not seen yet".to_owned(),
        };
        let rate = (ops - self.ops) as f64 / (now - self.at).as_secs_f64().max(1e-3);
        (self.ops, self.at) = (ops, now);
        format!(
            "[{:>5.1} s] {ops} operations ({rate:.0}/s), {faults} faults done, {leader}",
            now.as_secs_f64()
        )
    }
}
