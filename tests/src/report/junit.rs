//! JUnit XML, which CI systems (GitLab, Jenkins, GitHub test reporters) read: one test case per
//! seed. A failed check is a `<failure>`; an undecided one an `<error>`, so it never reads as a
//! pass.
use std::fmt::Write;

use crate::{check::Verdict, results::Summary};

pub fn render_junit(summary: &Summary) -> String {
    let count = |verdict| {
        summary
            .results
            .iter()
            .filter(|r| r.verdict == verdict)
            .count()
    };
    let seconds: f64 = summary.results.iter().map(|r| r.seconds).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let totals = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{seconds:.3}\"",
        summary.results.len(),
        count(Verdict::Fail),
        count(Verdict::Unknown),
    );
    let _ = writeln!(xml, "<testsuites name=\"faultline-torture\" {totals}>");
    let _ = writeln!(xml, "  <testsuite name=\"torture\" {totals}>");
    for result in &summary.results {
        let _ = writeln!(
            xml,
            "    <testcase classname=\"torture\" name=\"seed {}\" time=\"{:.3}\">",
            result.seed, result.seconds
        );
        let not_passed: Vec<String> = result
            .checks
            .iter()
            .filter(|c| !matches!(c.verdict, Verdict::Pass | Verdict::NotApplicable))
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        let element = match result.verdict {
            Verdict::Pass | Verdict::NotApplicable => None,
            Verdict::Fail => Some("failure"),
            Verdict::Unknown => Some("error"),
        };
        if let Some(element) = element {
            let message = not_passed
                .first()
                .cloned()
                .unwrap_or_else(|| "the run did not pass".into());
            let _ = writeln!(
                xml,
                "      <{element} message=\"{}\">{}</{element}>",
                escape(&message),
                escape(&not_passed.join("\n"))
            );
        }
        let _ = writeln!(
            xml,
            "      <system-out>{}</system-out>",
            escape(&format!(
                "{} operations, {} faults\nrun directory: {}\nreplay: {}",
                result.operations,
                result.faults,
                result.run_dir.display(),
                result.replay
            ))
        );
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn escape(text: &str) -> String {
    text.chars()
        .filter(|&c| c == '\n' || c == '\t' || c >= ' ')
        .fold(String::with_capacity(text.len()), |mut out, c| {
            match c {
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '&' => out.push_str("&amp;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c => out.push(c),
            }
            out
        })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::results::{CheckResult, SeedResult};

    fn result(seed: u64, verdict: Verdict, detail: &str) -> SeedResult {
        SeedResult {
            seed,
            verdict,
            checks: vec![CheckResult {
                name: "linearizable".into(),
                verdict,
                detail: detail.into(),
            }],
            operations: 10,
            faults: 2,
            seconds: 1.5,
            run_dir: PathBuf::from("/var/tmp/run"),
            replay: format!("cargo xtask torture --seed {seed}"),
        }
    }

    #[test]
    fn failures_and_undecided_seeds_are_not_passes_and_text_is_escaped() {
        let summary = Summary {
            results: vec![
                result(1, Verdict::Pass, "ok"),
                result(2, Verdict::Fail, "read <\"x\"> & lost\u{1}"),
                result(3, Verdict::Unknown, "budget"),
            ],
        };
        let xml = render_junit(&summary);
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<failure message=\"linearizable: read &lt;&quot;x&quot;&gt; &amp; lost\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"linearizable: budget\">"),
            "{xml}"
        );
        assert!(
            xml.contains("replay: cargo xtask torture --seed 2"),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert_eq!(xml.matches("</testcase>").count(), 3);
        assert!(!xml.contains('\u{1}'));
    }
}
