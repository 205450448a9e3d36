//! One HTML file, no server and no external resources: a lane per process, each operation a bar
//! over its interval coloured by result, faults and the leader on the same time axis, the
//! failing window highlighted, the findings in words, and the whole run's throughput and latency
//! over time.
use std::{collections::BTreeSet, fmt::Write};

use crate::{
    check::{CheckReport, Verdict},
    history::{FaultEvent, History, LeaderEvent, Operation, Outcome},
};

/// Beyond this many operations only those around the failure (or the first ones) are drawn, so
/// the page stays quick to open; the page says so.
const MAX_DRAWN: usize = 4000;
const LANE_HEIGHT: f64 = 22.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 40.0;

/// What a torture run adds to the history check's page: its overall verdict, every check it
/// made, the facts of the run and the command that replays it.
pub struct RunSummary {
    pub verdict: Verdict,
    /// (name, verdict, detail) of every check, in the order the run made them.
    pub checks: Vec<(String, Verdict, String)>,
    /// (what, value): seed, nodes, duration, faults, storage, ...
    pub facts: Vec<(String, String)>,
    pub replay: String,
}

pub fn render_html(
    history: &History,
    report: &CheckReport,
    title: &str,
    run: Option<&RunSummary>,
) -> String {
    let window: BTreeSet<usize> = report
        .linearizability
        .violations
        .first()
        .map(|v| v.window.iter().copied().collect())
        .unwrap_or_default();
    let drawn = ops_to_draw(history, &window);
    // Only the faults within the drawn stretch of time, so they share the operations' axis.
    let (first, last) = time_span(drawn.iter().copied(), &[]).unwrap_or((u64::MAX, 0));
    let faults: Vec<FaultEvent> = history
        .faults
        .iter()
        .filter(|f| f.end.unwrap_or(f.time) >= first && f.time <= last)
        .cloned()
        .collect();
    let timeline = Timeline::new(&drawn, &faults);
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n",
        escape(title)
    );
    if let Some(run) = run {
        write_run(&mut page, run, history);
    }
    write_summary(&mut page, history, report, drawn.len());
    timeline.write_svg(&mut page, &drawn, &faults, &history.leaders, &window);
    write_window_table(&mut page, history, report);
    super::over_time::write_section(&mut page, history);
    let _ = write!(page, "<script>{SCRIPT}</script>\n</body></html>\n");
    page
}

/// The earliest and latest moment of these operations and faults, if there is any.
pub(super) fn time_span<'a>(
    ops: impl Iterator<Item = &'a Operation>,
    faults: &[FaultEvent],
) -> Option<(u64, u64)> {
    ops.flat_map(|op| [Some(op.invoke), op.complete])
        .chain(faults.iter().flat_map(|f| [Some(f.time), f.end]))
        .flatten()
        .fold(None, |span, t| match span {
            None => Some((t, t)),
            Some((lo, hi)) => Some((t.min(lo), t.max(hi))),
        })
}

fn ops_to_draw<'a>(history: &'a History, window: &BTreeSet<usize>) -> Vec<&'a Operation> {
    let ops = &history.operations;
    if ops.len() <= MAX_DRAWN {
        return ops.iter().collect();
    }
    // Centre on the failing window when there is one.
    let centre = window.iter().next().copied().unwrap_or(0);
    let start = centre
        .saturating_sub(MAX_DRAWN / 2)
        .min(ops.len() - MAX_DRAWN);
    ops[start..start + MAX_DRAWN].iter().collect()
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "<span class=\"pass\">pass</span>",
        Verdict::Fail => "<span class=\"fail\">FAIL</span>",
        Verdict::Unknown => "<span class=\"unknown\">unknown</span>",
        Verdict::NotApplicable => "<span class=\"unknown\">not applicable</span>",
    }
}

/// The run's verdict, every check, the facts, the replay command (with a copy button) and
/// every fault with its node and time, so a reader sees which check failed and what struck
/// where before it without reading JSON.
fn write_run(page: &mut String, run: &RunSummary, history: &History) {
    let _ = writeln!(page, "<h1>Torture run: {}</h1>", verdict(run.verdict));
    page.push_str("<table class=\"facts\">\n");
    for (what, value) in &run.facts {
        let _ = writeln!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(what),
            escape(value)
        );
    }
    let _ = writeln!(
        page,
        "<tr><th>replay</th><td><code id=\"replay\">{}</code> <button id=\"copy-replay\" \
         type=\"button\">copy</button></td></tr>\n</table>",
        escape(&run.replay)
    );
    page.push_str("<h2>Checks</h2>\n<table class=\"checks\">\n<tr><th>check</th><th>verdict</th><th>detail</th></tr>\n");
    for (name, result, detail) in &run.checks {
        let class = match result {
            Verdict::Pass => "check-pass",
            Verdict::Fail => "check-fail",
            Verdict::Unknown => "check-unknown",
            Verdict::NotApplicable => "check-not-applicable",
        };
        let _ = writeln!(
            page,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            verdict(*result),
            escape(detail)
        );
    }
    page.push_str("</table>\n");
    let _ = writeln!(
        page,
        "<h2>Faults ({})</h2>\n<table class=\"faults\">\n<tr><th>start (s)</th><th>end (s)</th><th>node</th><th>what was done</th></tr>",
        history.faults.len()
    );
    let seconds = |nanos: u64| format!("{:.1}", nanos as f64 / 1e9);
    for fault in &history.faults {
        let _ = writeln!(
            page,
            "<tr class=\"fault-row\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            seconds(fault.time),
            fault.end.map_or(String::new(), seconds),
            escape(&fault.target),
            escape(&fault.description)
        );
    }
    page.push_str("</table>\n");
}

fn write_summary(page: &mut String, history: &History, report: &CheckReport, drawn: usize) {
    let lin = &report.linearizability;
    let dur = &report.durability;
    let _ = write!(
        page,
        "<h1>History check: {}</h1>\n<p>{} operations on {} key(s), {} fault(s).{}</p>\n<ul>\n\
         <li>linearizability: {} ({} keys, {} ms{})</li>\n\
         <li>acknowledged writes lost: {} ({})</li>\n\
         <li>values read that nobody wrote: {} ({})</li>\n\
         <li>clients seeing a key go back in time: {} ({})</li>\n</ul>\n",
        verdict(report.verdict),
        history.operations.len(),
        lin.keys_checked,
        history.faults.len(),
        if drawn < history.operations.len() && !report.linearizability.violations.is_empty() {
            format!(" The timeline shows {drawn} of them, around the failure.")
        } else if drawn < history.operations.len() {
            format!(" The timeline shows the first {drawn} of them.")
        } else {
            String::new()
        },
        verdict(lin.verdict),
        lin.keys_checked,
        lin.elapsed_ms,
        if lin.undecided_keys.is_empty() {
            String::new()
        } else {
            format!(
                ", undecided within budget: {}",
                escape(&lin.undecided_keys.join(", "))
            )
        },
        verdict(if dur.lost_writes.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }),
        dur.lost_writes.len(),
        verdict(if dur.values_from_nowhere.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }),
        dur.values_from_nowhere.len(),
        verdict(if dur.stale_reads.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }),
        dur.stale_reads.len(),
    );
    let findings = lin
        .violations
        .iter()
        .map(|v| &v.explanation)
        .chain(dur.lost_writes.iter().map(|f| &f.explanation))
        .chain(dur.values_from_nowhere.iter().map(|f| &f.explanation))
        .chain(dur.stale_reads.iter().map(|f| &f.explanation));
    page.push_str("<ol class=\"findings\">\n");
    for finding in findings.take(50) {
        let _ = writeln!(page, "<li>{}</li>", escape(finding));
    }
    page.push_str("</ol>\n");
    page.push_str(
        "<p class=\"legend\"><span class=\"swatch ok\"></span>acknowledged \
         <span class=\"swatch failed\"></span>failed (no effect) \
         <span class=\"swatch unknown\"></span>unknown outcome \
         <span class=\"swatch in-window\"></span>in the window that cannot be linearized \
         <span class=\"swatch fault\"></span>fault; the strip below the lanes is the leader. \
         Hover a bar for details.</p>\n",
    );
}

fn write_window_table(page: &mut String, history: &History, report: &CheckReport) {
    let Some(violation) = report.linearizability.violations.first() else {
        return;
    };
    let _ = write!(
        page,
        "<h2>Window that cannot be linearized (key {})</h2>\n<table>\n<tr><th>op</th><th>process</th><th>operation</th><th>invoked</th><th>returned</th></tr>\n",
        escape(&violation.key)
    );
    for &id in &violation.window {
        let op = &history.operations[id];
        let stuck = if id == violation.stuck_at {
            " class=\"stuck\""
        } else {
            ""
        };
        let _ = writeln!(
            page,
            "<tr{stuck}><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            op.process,
            escape(&op.to_string()),
            op.invoke,
            op.complete.map_or("never".to_owned(), |t| t.to_string()),
        );
    }
    page.push_str("</table>\n");
}

struct Timeline {
    start: u64,
    end: u64,
    width: f64,
    lanes: Vec<u64>,
}

impl Timeline {
    fn new(ops: &[&Operation], faults: &[FaultEvent]) -> Self {
        let (start, end) = time_span(ops.iter().copied(), faults)
            .map_or((0, 1), |(start, end)| (start, end.max(start + 1)));
        let lanes: BTreeSet<u64> = ops.iter().map(|op| op.process).collect();
        let width = (ops.len() as f64 * 12.0).clamp(1200.0, 30000.0);
        Self {
            start,
            end,
            width,
            lanes: lanes.into_iter().collect(),
        }
    }

    fn x(&self, time: u64) -> f64 {
        LEFT + (time.saturating_sub(self.start)) as f64 / (self.end - self.start) as f64
            * self.width
    }

    fn lane_y(&self, process: u64) -> f64 {
        let index = self.lanes.binary_search(&process).unwrap_or(0);
        TOP + LANE_HEIGHT * (index as f64 + 1.0)
    }

    fn write_svg(
        &self,
        page: &mut String,
        ops: &[&Operation],
        faults: &[FaultEvent],
        leaders: &[LeaderEvent],
        window: &BTreeSet<usize>,
    ) {
        let height = TOP + LANE_HEIGHT * (self.lanes.len() as f64 + 2.0);
        let right = LEFT + self.width + 20.0;
        let _ = writeln!(
            page,
            "<div class=\"scroll\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{right:.0}\" height=\"{height:.0}\">"
        );
        // Failing window band behind everything.
        let in_window: Vec<&&Operation> = ops.iter().filter(|op| window.contains(&op.id)).collect();
        if let (Some(from), Some(to)) = (
            in_window.iter().map(|op| op.invoke).min(),
            in_window
                .iter()
                .map(|op| op.complete.unwrap_or(self.end))
                .max(),
        ) {
            let _ = writeln!(
                page,
                "<rect class=\"window-band\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\"><title>the window that cannot be linearized</title></rect>",
                self.x(from),
                (self.x(to) - self.x(from)).max(2.0),
                height - TOP
            );
        }
        for (lane, process) in self.lanes.iter().enumerate() {
            let y = TOP + LANE_HEIGHT * (lane as f64 + 1.0);
            let _ = writeln!(
                page,
                "<text class=\"lane\" x=\"4\" y=\"{:.1}\">process {process}</text>",
                y + LANE_HEIGHT * 0.65
            );
        }
        let _ = writeln!(
            page,
            "<text class=\"lane\" x=\"4\" y=\"{:.1}\">faults</text>",
            TOP - 6.0
        );
        for fault in faults {
            let x = self.x(fault.time);
            let w = (self.x(fault.end.unwrap_or(fault.time)) - x).max(2.0);
            let _ = writeln!(
                page,
                "<rect class=\"fault\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
                TOP - 18.0,
                height - TOP + 18.0,
                escape(&fault.target),
                escape(&fault.description)
            );
        }
        for op in ops {
            let x = self.x(op.invoke);
            let end = op.complete.unwrap_or(self.end);
            let w = (self.x(end) - x).max(2.0);
            let y = self.lane_y(op.process) + 3.0;
            let class = match op.outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "failed",
                Outcome::Unknown => "unknown",
            };
            let marked = if window.contains(&op.id) {
                " in-window"
            } else {
                ""
            };
            let _ = writeln!(
                page,
                "<rect class=\"op {class}{marked}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\"><title>#{} process {}: {} [{} .. {}]</title></rect>",
                LANE_HEIGHT - 6.0,
                op.id,
                op.process,
                escape(&op.to_string()),
                op.invoke,
                op.complete.map_or("never".to_owned(), |t| t.to_string())
            );
            // About 6 px per character at this font size: label only what fits in the bar.
            let fits = ((w - 6.0) / 6.0) as usize;
            if fits >= 8 {
                let label: String = op.to_string().chars().take(fits).collect();
                let _ = writeln!(
                    page,
                    "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    x + 3.0,
                    y + LANE_HEIGHT * 0.5,
                    escape(&label)
                );
            }
        }
        // The leader below the lanes, on the same axis, so a failure can be read against it.
        let leader_top = TOP + LANE_HEIGHT * (self.lanes.len() as f64 + 1.0) + 2.0;
        super::over_time::write_leaders(page, leaders, self.start, self.end, leader_top, &|t| {
            self.x(t)
        });
        page.push_str("</svg></div>\n");
    }
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}\
.pass{color:#1b7f1b;font-weight:bold}.fail{color:#c62828;font-weight:bold}.unknown{color:#e08a00;font-weight:bold}\
.scroll{overflow-x:auto;border:1px solid #ccc}\
.op.ok{fill:#66bb6a}.op.failed{fill:#bdbdbd}.op.unknown{fill:#ffb74d}\
.op.in-window{stroke:#c62828;stroke-width:2}\
.window-band{fill:#ffcdd2;opacity:.6}.fault{fill:#ef5350;opacity:.25}\
.lane{font-size:11px;fill:#333}.label{font-size:10px;fill:#111;pointer-events:none}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}\
tr.stuck{background:#ffcdd2}tr.check-fail{background:#ffebee}tr.check-unknown{background:#fff3e0}\
table.facts th{text-align:left}\
.swatch{display:inline-block;width:14px;height:10px;margin:0 4px 0 10px;border:1px solid #999}\
.swatch.ok{background:#66bb6a}.swatch.failed{background:#bdbdbd}.swatch.unknown{background:#ffb74d}\
.swatch.in-window{border:2px solid #c62828}.swatch.fault{background:#ef5350;opacity:.4}\
.rate.ok{fill:#66bb6a}.rate.failed{fill:#bdbdbd}.rate.unknown{fill:#ffb74d}\
.latency{fill:none;stroke-width:1.5}.latency.p50{stroke:#1e88e5}.latency.p99{stroke:#8e24aa}\
.swatch.p50{background:#1e88e5}.swatch.p99{background:#8e24aa}.axis{stroke:#999}\
.leader{opacity:.55}.leader.none{fill:#eeeeee}.leader.n1{fill:#90caf9}.leader.n2{fill:#ce93d8}\
.leader.n3{fill:#a5d6a7}.leader.n4{fill:#ffe082}.leader.n5{fill:#ffab91}.leader.n6{fill:#80deea}\
.leader.n7{fill:#b0bec5}.leader.n8{fill:#f48fb1}";

// Marks the page as fully rendered (a test checks this in a headless browser); a script error
// anywhere leaves the mark unset and records the error instead.
const SCRIPT: &str = "window.addEventListener('error',function(e){document.body.dataset.error=e.message;});\
var copy=document.getElementById('copy-replay');\
if(copy){copy.addEventListener('click',function(){\
navigator.clipboard.writeText(document.getElementById('replay').textContent);});}\
document.body.dataset.rendered=String(document.querySelectorAll('rect.op').length);";
