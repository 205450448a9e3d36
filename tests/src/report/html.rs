//! One HTML file, no server and no external resources: a torture run's verdict, checks, facts,
//! replay command and faults; the history check's findings in words, each with a link that
//! centres the operations breaking it on the timeline (`timeline`); the window that cannot be
//! linearized as a table; the whole run's throughput and latency over time.
use std::fmt::Write;

use super::{
    markup::escape,
    timeline::{self, Jump},
};
use crate::{
    check::{CheckReport, Verdict},
    history::History,
};

/// One check of a run as the page shows it.
pub struct CheckLine {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    /// When it first failed (the history's clock, ns), for a check that knows: the page links
    /// there on the timeline.
    pub at: Option<u64>,
}

/// What a torture run adds to the history check's page: its overall verdict, every check it
/// made, the facts of the run and the command that replays it.
pub struct RunSummary {
    pub verdict: Verdict,
    /// How many nodes the cluster had: each gets a lane on the timeline.
    pub nodes: u64,
    /// Every check, in the order the run made them.
    pub checks: Vec<CheckLine>,
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
    let jumps = timeline::jumps(report);
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}{}</style></head>\n<body>\n\
         <script>{ON_ERROR}</script>\n",
        escape(title),
        timeline::STYLE
    );
    if let Some(run) = run {
        write_run(&mut page, run, history, &jumps);
    }
    write_summary(&mut page, history, report);
    timeline::write_section(&mut page, history, &jumps, run.map_or(0, |run| run.nodes));
    write_window_table(&mut page, history, report);
    super::over_time::write_section(&mut page, history);
    let _ = write!(
        page,
        "<script>{COPY}</script>\n<script>{}</script>\n</body></html>\n",
        timeline::SCRIPT
    );
    page
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
fn write_run(page: &mut String, run: &RunSummary, history: &History, jumps: &[Jump]) {
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
    for CheckLine {
        name,
        verdict: result,
        detail,
        at,
    } in &run.checks
    {
        let class = match result {
            Verdict::Pass => "check-pass",
            Verdict::Fail => "check-fail",
            Verdict::Unknown => "check-unknown",
            Verdict::NotApplicable => "check-not-applicable",
        };
        // A failing history check links to the first of its findings on the timeline.
        // A failing check links to the first of its findings on the timeline, or to the moment
        // it first failed.
        let shown = match (jumps.iter().position(|jump| jump.check == name), at) {
            _ if *result != Verdict::Fail => String::new(),
            (Some(k), _) => {
                format!(" <a class=\"jump\" href=\"#jump-{k}\">show on the timeline</a>")
            }
            (None, Some(at)) => {
                format!(" <a class=\"jump\" href=\"#at-{at}\">show on the timeline</a>")
            }
            (None, None) => String::new(),
        };
        let _ = writeln!(
            page,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}{shown}</td></tr>",
            escape(name),
            verdict(*result),
            escape(detail)
        );
    }
    page.push_str("</table>\n");
    let _ = writeln!(
        page,
        "<h2>Faults ({})</h2>\n<table class=\"faults\">\n<tr><th>start (s)</th><th>end (s)</th><th>node</th><th>fault</th><th>what was done</th></tr>",
        history.faults.len()
    );
    let seconds = |nanos: u64| format!("{:.1}", nanos as f64 / 1e9);
    for fault in &history.faults {
        let _ = writeln!(
            page,
            "<tr class=\"fault-row\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            seconds(fault.time),
            fault.end.map_or(String::new(), seconds),
            escape(&fault.target),
            escape(&fault.name),
            escape(&fault.description)
        );
    }
    page.push_str("</table>\n");
}

fn write_summary(page: &mut String, history: &History, report: &CheckReport) {
    let lin = &report.linearizability;
    let dur = &report.durability;
    let _ = write!(
        page,
        "<h1>History check: {}</h1>\n<p>{} operations on {} key(s), {} fault(s).</p>\n<ul>\n\
         <li>linearizability: {} ({} keys, {} ms{})</li>\n\
         <li>acknowledged writes lost: {} ({})</li>\n\
         <li>values read that nobody wrote: {} ({})</li>\n\
         <li>clients seeing a key go back in time: {} ({})</li>\n</ul>\n",
        verdict(report.verdict),
        history.operations.len(),
        lin.keys_checked,
        history.faults.len(),
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

const STYLE: &str = "body{font-family:sans-serif;margin:1em}\
.pass{color:#1b7f1b;font-weight:bold}.fail{color:#c62828;font-weight:bold}.unknown{color:#e08a00;font-weight:bold}\
.scroll{overflow-x:auto;border:1px solid #ccc}\
.fault{fill:#ef5350;opacity:.25}.fault-label{font-size:10px;fill:#b71c1c}\
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

// A script error anywhere on the page is recorded on the body (a test checks for it in a
// headless browser); the timeline's script marks the page rendered once it drew.
const ON_ERROR: &str =
    "window.addEventListener('error',function(e){document.body.dataset.error=e.message;});";

const COPY: &str = "var copy=document.getElementById('copy-replay');\
if(copy){copy.addEventListener('click',function(){\
navigator.clipboard.writeText(document.getElementById('replay').textContent);});}";
