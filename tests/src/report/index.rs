//! The index page of a campaign (`torture run --seeds`): the campaign's verdict, then one row a
//! seed with its verdict, the checks it failed, its numbers, a link to its own report and its
//! replay command, failing seeds first.
use std::{fmt::Write, path::Path};

use super::markup::escape;
use crate::{check::Verdict, results::Summary};

/// The page for `summary`, written in `dir`: each seed's report is linked relative to it when
/// it lies below, so the directory can be copied (a CI artifact) with its links intact.
pub fn render_index(summary: &Summary, dir: &Path) -> String {
    let mut page = String::new();
    let verdict = summary.verdict();
    let count = |v: Verdict| summary.results.iter().filter(|r| r.verdict == v).count();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Torture campaign</title>\n\
         <style>{STYLE}</style></head>\n<body>\n<h1>Torture campaign: <span class=\"{}\">{}</span></h1>\n\
         <p>{} seeds: {} passed, {} failed, {} undecided.</p>\n<table>\n\
         <tr><th>seed</th><th>verdict</th><th>checks not passed</th><th>operations</th>\
         <th>faults</th><th>seconds</th><th>report</th><th>replay</th></tr>\n",
        class(verdict),
        word(verdict),
        summary.results.len(),
        count(Verdict::Pass) + count(Verdict::NotApplicable),
        count(Verdict::Fail),
        count(Verdict::Unknown),
    );
    let mut rows: Vec<_> = summary.results.iter().collect();
    // Failing seeds first, then undecided, then passing; by seed within each.
    rows.sort_by_key(|r| {
        let rank = match r.verdict {
            Verdict::Fail => 0,
            Verdict::Unknown => 1,
            Verdict::Pass | Verdict::NotApplicable => 2,
        };
        (rank, r.seed)
    });
    for result in rows {
        let not_passed: Vec<String> = result
            .checks
            .iter()
            .filter(|c| !matches!(c.verdict, Verdict::Pass | Verdict::NotApplicable))
            .map(|c| escape(&c.name))
            .collect();
        let report = result.run_dir.join("report.html");
        let href = report.strip_prefix(dir).unwrap_or(&report);
        let _ = writeln!(
            page,
            "<tr class=\"seed-row\"><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{:.0}</td><td><a href=\"{}\">report</a></td><td><code>{}</code></td></tr>",
            result.seed,
            class(result.verdict),
            word(result.verdict),
            not_passed.join("<br>"),
            result.operations,
            result.faults,
            result.seconds,
            escape(&href.display().to_string()),
            escape(&result.replay)
        );
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

fn word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::Unknown => "unknown",
        Verdict::NotApplicable => "n/a",
    }
}

fn class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass | Verdict::NotApplicable => "pass",
        Verdict::Fail => "fail",
        Verdict::Unknown => "unknown",
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}\
.pass{color:#1b7f1b;font-weight:bold}.fail{color:#c62828;font-weight:bold}.unknown{color:#e08a00;font-weight:bold}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;vertical-align:top}";

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::results::{CheckResult, SeedResult};

    fn result(seed: u64, verdict: Verdict, run_dir: &str) -> SeedResult {
        SeedResult {
            seed,
            verdict,
            checks: vec![CheckResult {
                name: "linearizable <&>".into(),
                verdict,
                detail: String::new(),
            }],
            operations: 10,
            faults: 2,
            seconds: 3.0,
            run_dir: PathBuf::from(run_dir),
            replay: format!("cargo xtask torture --seed {seed}"),
        }
    }

    #[test]
    fn failing_seeds_come_first_with_their_checks_and_links_below_the_campaign() {
        let summary = Summary {
            results: vec![
                result(1, Verdict::Pass, "/c/seed-1"),
                result(2, Verdict::Fail, "/c/seed-2"),
                result(3, Verdict::Pass, "/elsewhere/seed-3"),
            ],
        };
        let page = render_index(&summary, Path::new("/c"));
        assert!(page.contains("Torture campaign: <span class=\"fail\">FAIL</span>"));
        assert!(page.contains("3 seeds: 2 passed, 1 failed, 0 undecided"));
        let first = page.find("<tr class=\"seed-row\"><td>2</td>").unwrap();
        let second = page.find("<tr class=\"seed-row\"><td>1</td>").unwrap();
        assert!(first < second, "the failing seed is listed first");
        assert!(page.contains("href=\"seed-2/report.html\""));
        assert!(page.contains("href=\"/elsewhere/seed-3/report.html\""));
        assert!(
            page.contains("linearizable &lt;&amp;&gt;"),
            "names are escaped"
        );
    }
}
