//! The whole run over time, for the HTML report: operations finished per second by outcome,
//! p50 and p99 latency of the acknowledged ones, with the faults and the leader on the same
//! axis, so a reader sees what each fault did to throughput and latency.
use std::fmt::Write;

use crate::history::{History, LeaderEvent, Outcome};

const LEFT: f64 = 60.0;
const WIDTH: f64 = 1100.0;
const RATE_HEIGHT: f64 = 140.0;
const LATENCY_HEIGHT: f64 = 110.0;
const LEADER_HEIGHT: f64 = 18.0;
const GAP: f64 = 26.0;

/// One time bucket's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    pub ok: u32,
    pub failed: u32,
    pub unknown: u32,
    /// Latencies of the acknowledged operations that finished in the bucket, in ms, sorted.
    pub latencies_ms: Vec<f64>,
}

impl Bucket {
    /// The q-quantile (0..=1) of the latencies, by the nearest-rank method.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.latencies_ms.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.latencies_ms.get(rank - 1).copied()
    }
}

/// Buckets of `width_ns` from `start`; an operation counts in the bucket where it finished
/// (an unknown one where it was given up on, or at its invoke if never).
pub fn buckets(history: &History, start: u64, width_ns: u64, count: usize) -> Vec<Bucket> {
    let mut buckets = vec![Bucket::default(); count];
    for op in &history.operations {
        let at = op.complete.unwrap_or(op.invoke);
        let Some(bucket) = at
            .checked_sub(start)
            .map(|offset| (offset / width_ns) as usize)
            .and_then(|i| buckets.get_mut(i))
        else {
            continue;
        };
        match op.outcome {
            Outcome::Ok => {
                bucket.ok += 1;
                let took = op.complete.unwrap_or(op.invoke) - op.invoke;
                bucket.latencies_ms.push(took as f64 / 1e6);
            }
            Outcome::Fail => bucket.failed += 1,
            Outcome::Unknown => bucket.unknown += 1,
        }
    }
    for bucket in &mut buckets {
        bucket.latencies_ms.sort_by(f64::total_cmp);
    }
    buckets
}

pub fn write_section(page: &mut String, history: &History) {
    // The run's span: the first invoke to the last event.
    let Some((start, end)) = super::markup::time_span(history.operations.iter(), &history.faults)
        .filter(|(start, end)| start < end)
    else {
        return;
    };
    // About one bucket per second, at most 240 of them.
    let seconds = (end - start).div_ceil(1_000_000_000).max(1);
    let width_ns = seconds.div_ceil(240) * 1_000_000_000;
    let count = (end - start).div_ceil(width_ns).max(1) as usize;
    let buckets = buckets(history, start, width_ns, count);
    let x = |t: u64| LEFT + (t.saturating_sub(start)) as f64 / (end - start) as f64 * WIDTH;
    let bar = WIDTH / count as f64;
    let per_second = 1e9 / width_ns as f64;

    // Two rows of fault labels above the charts.
    let rate_top = 44.0;
    let latency_top = rate_top + RATE_HEIGHT + GAP;
    let leader_top = latency_top + LATENCY_HEIGHT + GAP;
    let height = leader_top + LEADER_HEIGHT + 24.0;
    let _ = writeln!(
        page,
        "<h2>The whole run over time</h2>\n<p class=\"legend\">Operations finished per second \
         (<span class=\"swatch ok\"></span>acknowledged <span class=\"swatch failed\"></span>failed \
         <span class=\"swatch unknown\"></span>unknown), latency of acknowledged operations \
         (<span class=\"swatch p50\"></span>p50 <span class=\"swatch p99\"></span>p99), \
         <span class=\"swatch fault\"></span>faults and the leader, on one axis. Buckets of {} s.</p>\n\
         <div class=\"scroll\"><svg class=\"over-time\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{height:.0}\">",
        width_ns / 1_000_000_000,
        LEFT + WIDTH + 20.0
    );
    // Where each label row is free from, so labels never overlap (a fault with no room for
    // its label keeps its band and its hover text).
    let mut free_from = [0.0f64; 2];
    for fault in &history.faults {
        let from = x(fault.time);
        let w = (x(fault.end.unwrap_or(fault.time)) - from).max(2.0);
        let _ = writeln!(
            page,
            "<rect class=\"fault\" x=\"{from:.1}\" y=\"{rate_top}\" width=\"{w:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
            leader_top + LEADER_HEIGHT - rate_top,
            super::markup::escape(&fault.target),
            super::markup::escape(&fault.description)
        );
        let label = fault_label(&fault.target, &fault.name);
        // About 6 px a character at the label's size.
        let needs = label.chars().count() as f64 * 6.0 + 6.0;
        if let Some(row) = free_from.iter().position(|&free| free <= from) {
            free_from[row] = from + needs;
            let _ = writeln!(
                page,
                "<text class=\"fault-label\" x=\"{from:.1}\" y=\"{:.1}\">{}</text>",
                14.0 + row as f64 * 13.0,
                super::markup::escape(&label)
            );
        }
    }

    let max_rate = buckets
        .iter()
        .map(|b| f64::from(b.ok + b.failed + b.unknown) * per_second)
        .fold(1.0, f64::max);
    axis(page, rate_top, RATE_HEIGHT, max_rate, "ops/s");
    for (i, bucket) in buckets.iter().enumerate() {
        let mut y = rate_top + RATE_HEIGHT;
        for (class, n) in [
            ("ok", bucket.ok),
            ("failed", bucket.failed),
            ("unknown", bucket.unknown),
        ] {
            let h = f64::from(n) * per_second / max_rate * RATE_HEIGHT;
            if n == 0 {
                continue;
            }
            y -= h;
            let _ = writeln!(
                page,
                "<rect class=\"rate {class}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{:.0} {class} ops/s at {:.0} s</title></rect>",
                LEFT + bar * i as f64,
                (bar - 1.0).max(1.0),
                f64::from(n) * per_second,
                (i as u64 * width_ns) as f64 / 1e9
            );
        }
    }

    let max_latency = buckets
        .iter()
        .filter_map(|b| b.quantile(0.99))
        .fold(1.0, f64::max);
    axis(page, latency_top, LATENCY_HEIGHT, max_latency, "ms");
    for (class, q) in [("p50", 0.5), ("p99", 0.99)] {
        let points: Vec<String> = buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let value = b.quantile(q)?;
                Some(format!(
                    "{:.1},{:.1}",
                    LEFT + bar * (i as f64 + 0.5),
                    latency_top + LATENCY_HEIGHT - value / max_latency * LATENCY_HEIGHT
                ))
            })
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                page,
                "<polyline class=\"latency {class}\" points=\"{}\"><title>{class} latency</title></polyline>",
                points.join(" ")
            );
        }
    }

    write_leaders(page, &history.leaders, start, end, leader_top, &x);
    page.push_str("</svg></div>\n");
}

/// A fault's label over the charts: its node and kind (`n2 power-loss`).
fn fault_label(target: &str, name: &str) -> String {
    if name.is_empty() {
        format!("{target} fault")
    } else {
        format!("{target} {name}")
    }
}

fn axis(page: &mut String, top: f64, height: f64, max: f64, unit: &str) {
    let _ = writeln!(
        page,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
         <text class=\"lane\" x=\"4\" y=\"{:.1}\">{max:.0} {unit}</text>\
         <text class=\"lane\" x=\"4\" y=\"{:.1}\">0</text>",
        top + height,
        LEFT + WIDTH,
        top + height,
        top + 10.0,
        top + height
    );
}

/// A strip with one segment per leader (none: an election or no quorum), and a line where
/// leadership changed.
pub fn write_leaders(
    page: &mut String,
    leaders: &[LeaderEvent],
    start: u64,
    end: u64,
    top: f64,
    x: &dyn Fn(u64) -> f64,
) {
    let _ = writeln!(
        page,
        "<text class=\"lane\" x=\"4\" y=\"{:.1}\">leader</text>",
        top + LEADER_HEIGHT * 0.7
    );
    for (i, change) in leaders.iter().enumerate() {
        let until = leaders.get(i + 1).map_or(end, |next| next.time);
        if until < start || change.time > end {
            continue;
        }
        let from = x(change.time.max(start));
        let w = (x(until.min(end)) - from).max(1.0);
        let (class, label) = match (change.leader, change.term) {
            (Some(id), Some(term)) => (
                format!("leader n{}", (id - 1) % 8 + 1),
                format!("n{id} (term {term})"),
            ),
            (Some(id), None) => (format!("leader n{}", (id - 1) % 8 + 1), format!("n{id}")),
            (None, _) => ("leader none".to_owned(), "no leader".to_owned()),
        };
        let _ = writeln!(
            page,
            "<rect class=\"{class}\" x=\"{from:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"{LEADER_HEIGHT}\"><title>{label} from {:.2} s</title></rect>",
            change.time.saturating_sub(start) as f64 / 1e9
        );
        if w > label.len() as f64 * 6.0 + 6.0 {
            let _ = writeln!(
                page,
                "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
                from + 3.0,
                top + LEADER_HEIGHT * 0.7
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Args, Operation};

    fn op(id: usize, invoke_ms: u64, took_ms: u64, outcome: Outcome) -> Operation {
        Operation {
            id,
            process: 1,
            key: "k".into(),
            args: Args::Get,
            outcome,
            read: None,
            matched: false,
            invoke: invoke_ms * 1_000_000,
            complete: (outcome != Outcome::Unknown).then_some((invoke_ms + took_ms) * 1_000_000),
        }
    }

    #[test]
    fn operations_count_where_they_finish_with_their_latency() {
        let history = History {
            operations: vec![
                op(0, 100, 10, Outcome::Ok),
                op(1, 900, 200, Outcome::Ok),
                op(2, 1200, 5, Outcome::Fail),
                op(3, 1500, 0, Outcome::Unknown),
                op(4, 1600, 30, Outcome::Ok),
            ],
            ..History::default()
        };
        let buckets = buckets(&history, 0, 1_000_000_000, 2);
        assert_eq!(
            (buckets[0].ok, buckets[0].failed, buckets[0].unknown),
            (1, 0, 0)
        );
        assert_eq!(
            (buckets[1].ok, buckets[1].failed, buckets[1].unknown),
            (2, 1, 1)
        );
        assert_eq!(buckets[1].latencies_ms, vec![30.0, 200.0]);
        assert_eq!(buckets[1].quantile(0.5), Some(30.0));
        assert_eq!(buckets[1].quantile(0.99), Some(200.0));
        assert_eq!(Bucket::default().quantile(0.5), None);
    }
}
