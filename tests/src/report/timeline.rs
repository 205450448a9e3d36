//! The report's timeline: every operation of the history, one lane per node (its faults, and
//! when it led) and lanes of client operations, drawn by the page's script on a canvas that
//! zooms and pans. The page carries the data as JSON and draws only what is in view, so a long
//! run's full history stays smooth; each finding of the history check gets a "jump to" link
//! that centres the operations that break it.
use std::{collections::BTreeMap, fmt::Write};

use serde::Serialize;
use serde_json::json;

use super::markup::escape;
use crate::{
    check::CheckReport,
    history::{History, Operation, Outcome},
};

/// A window of the timeline a finding points at: the operations that break a check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Jump {
    /// The check it breaks, by the name a torture run's check table uses.
    pub check: &'static str,
    pub label: String,
    pub operations: Vec<usize>,
}

/// Every finding of the history check that names operations, in the order the report lists
/// them (linearizability, lost writes, values from nowhere, stale reads).
pub fn jumps(report: &CheckReport) -> Vec<Jump> {
    let lin = report.linearizability.violations.iter().map(|v| Jump {
        check: "linearizable",
        label: format!("key {}: cannot be linearized", v.key),
        operations: v.window.clone(),
    });
    let dur = &report.durability;
    let lost = dur.lost_writes.iter().map(|f| Jump {
        check: "no acknowledged write lost",
        label: format!("key {}: acknowledged write lost", f.key),
        operations: f.operations.clone(),
    });
    let nowhere = dur.values_from_nowhere.iter().map(|f| Jump {
        check: "no value from nowhere, no stale read",
        label: format!("key {}: value from nowhere", f.key),
        operations: f.operations.clone(),
    });
    let stale = dur.stale_reads.iter().map(|f| Jump {
        check: "no value from nowhere, no stale read",
        label: format!("key {}: stale read", f.key),
        operations: f.operations.clone(),
    });
    lin.chain(lost)
        .chain(nowhere)
        .chain(stale)
        .filter(|jump| !jump.operations.is_empty())
        .collect()
}

/// Client lanes: each process goes to the first lane free since its previous process there
/// ended. A client that gives up on an operation goes on as a new process (as in Jepsen), so a
/// lane per process would be mostly empty; packed, there are about as many lanes as clients.
pub fn pack_lanes(ops: &[Operation], end: u64) -> BTreeMap<u64, usize> {
    let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for op in ops {
        let until = op.complete.unwrap_or(end);
        let span = spans.entry(op.process).or_insert((op.invoke, until));
        span.0 = span.0.min(op.invoke);
        span.1 = span.1.max(until);
    }
    let mut order: Vec<(u64, (u64, u64))> = spans.into_iter().collect();
    order.sort_by_key(|&(process, (first, _))| (first, process));
    let mut free_from: Vec<u64> = Vec::new();
    let mut lanes = BTreeMap::new();
    for (process, (first, last)) in order {
        let lane = match free_from.iter().position(|&free| free < first) {
            Some(lane) => lane,
            None => {
                free_from.push(0);
                free_from.len() - 1
            }
        };
        free_from[lane] = last;
        lanes.insert(process, lane);
    }
    lanes
}

/// The highest node number the faults and leaders name (`n3` -> 3), so each node gets a lane
/// (a history checked on its own says nothing of nodes that neither failed nor led).
fn node_count(history: &History) -> u64 {
    let from_faults = history
        .faults
        .iter()
        .filter_map(|f| f.target.strip_prefix('n')?.parse::<u64>().ok());
    let from_leaders = history.leaders.iter().filter_map(|l| l.leader);
    from_faults.chain(from_leaders).max().unwrap_or(0)
}

/// The page's data: times in ns from the first event (integers: a history of logical times,
/// as Porcupine's tests have, keeps its order; a day in ns is still exact in a double).
fn data(history: &History, jumps: &[Jump], nodes: u64) -> serde_json::Value {
    let times = history
        .operations
        .iter()
        .flat_map(|op| [Some(op.invoke), op.complete])
        .chain(history.faults.iter().flat_map(|f| [Some(f.time), f.end]))
        .chain(history.leaders.iter().map(|l| Some(l.time)))
        .flatten();
    let (start, end) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let (start, end) = if start > end { (0, 1) } else { (start, end) };
    let ns = |t: u64| t.saturating_sub(start) as i64;
    let lanes = pack_lanes(&history.operations, end);
    let ops: Vec<serde_json::Value> = history
        .operations
        .iter()
        .map(|op| {
            let outcome = match op.outcome {
                Outcome::Ok => 0,
                Outcome::Fail => 1,
                Outcome::Unknown => 2,
            };
            json!([
                lanes[&op.process],
                ns(op.invoke),
                op.complete.map_or(-1, ns),
                outcome,
                op.to_string(),
                op.id,
                op.process
            ])
        })
        .collect();
    let faults: Vec<serde_json::Value> = history
        .faults
        .iter()
        .map(|f| {
            json!([
                ns(f.time),
                ns(f.end.unwrap_or(f.time)),
                f.target,
                f.name,
                f.description
            ])
        })
        .collect();
    let leaders: Vec<serde_json::Value> = history
        .leaders
        .iter()
        .map(|l| json!([ns(l.time), l.leader, l.term]))
        .collect();
    json!({
        "origin": start,
        "end": ns(end),
        "nodes": node_count(history).max(nodes),
        "lanes": lanes.values().max().map_or(0, |l| l + 1),
        "ops": ops,
        "faults": faults,
        "leaders": leaders,
        "jumps": jumps,
    })
}

/// The timeline section: tools, jump links, the canvas and its data; `nodes` lanes at least.
pub fn write_section(page: &mut String, history: &History, jumps: &[Jump], nodes: u64) {
    page.push_str(
        "<h2 id=\"timeline-section\">Timeline</h2>\n<p class=\"legend\">\
         <span class=\"swatch ok\"></span>acknowledged \
         <span class=\"swatch failed\"></span>failed (no effect) \
         <span class=\"swatch unknown\"></span>unknown outcome \
         <span class=\"swatch in-window\"></span>breaks a check \
         <span class=\"swatch fault\"></span>fault \
         <span class=\"swatch leads\"></span>leads. \
         One lane per node (its faults, and when it led), then the clients' operations. \
         Scroll to zoom, drag to pan, hover for details.</p>\n\
         <div class=\"tl-tools\"><button type=\"button\" data-zoom=\"fit\">whole run</button> \
         <button type=\"button\" data-zoom=\"in\">zoom in</button> \
         <button type=\"button\" data-zoom=\"out\">zoom out</button> \
         <span id=\"tl-status\"></span></div>\n",
    );
    if !jumps.is_empty() {
        page.push_str("<ol class=\"tl-jumps\">\n");
        for (i, jump) in jumps.iter().enumerate().take(50) {
            let _ = writeln!(
                page,
                "<li><a class=\"jump\" href=\"#jump-{i}\">{}</a> ({} operations)</li>",
                escape(&jump.label),
                jump.operations.len()
            );
        }
        page.push_str("</ol>\n");
    }
    page.push_str(
        "<div class=\"tl-box\"><canvas id=\"timeline\"></canvas>\
         <div id=\"tl-tip\" hidden></div></div>\n",
    );
    // `</` cannot end the script element early once escaped this way; JSON reads it back.
    let json = data(history, jumps, nodes)
        .to_string()
        .replace("</", "<\\/");
    let _ = writeln!(
        page,
        "<script type=\"application/json\" id=\"timeline-data\">{json}</script>"
    );
}

pub const SCRIPT: &str = include_str!("timeline.js");

pub const STYLE: &str = ".tl-box{position:relative;border:1px solid #ccc;max-height:640px;overflow-y:auto}\
#timeline{display:block;width:100%;cursor:grab}\
#tl-tip{position:absolute;background:#fffde7;border:1px solid #999;padding:3px 6px;font-size:12px;\
pointer-events:none;max-width:520px;white-space:pre-wrap}\
.tl-tools{margin:.4em 0}#tl-status{font-size:13px;color:#444;margin-left:1em}\
.swatch.leads{background:#bbdefb}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Args, Operation};

    fn op(id: usize, process: u64, invoke: u64, complete: Option<u64>) -> Operation {
        Operation {
            id,
            process,
            key: "k".into(),
            args: Args::Get,
            outcome: if complete.is_some() {
                Outcome::Ok
            } else {
                Outcome::Unknown
            },
            read: None,
            matched: true,
            invoke,
            complete,
        }
    }

    #[test]
    fn a_process_that_follows_a_given_up_one_shares_its_lane() {
        let ops = [
            op(0, 1, 0, Some(10)),
            op(1, 2, 0, Some(10)),
            // Process 1 gave up at 20 (never completed); process 5 carries on after it.
            op(2, 1, 15, None),
            op(3, 5, 30, Some(40)),
            op(4, 2, 12, Some(50)),
        ];
        let lanes = pack_lanes(&ops, 25);
        assert_eq!(lanes[&1], 0);
        assert_eq!(lanes[&2], 1);
        assert_eq!(lanes[&5], 0, "{lanes:?}");
    }

    #[test]
    fn overlapping_processes_get_lanes_of_their_own() {
        let ops = [
            op(0, 1, 0, Some(10)),
            op(1, 2, 5, Some(10)),
            op(2, 3, 9, Some(12)),
        ];
        let lanes = pack_lanes(&ops, 12);
        let mut used: Vec<usize> = lanes.values().copied().collect();
        used.sort();
        assert_eq!(used, [0, 1, 2]);
    }
}
