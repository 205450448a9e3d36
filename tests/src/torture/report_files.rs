//! The files a run leaves in its directory for a person: the history and the report page.
use anyhow::Result;

use super::{CheckResult, Options, Shared};
use crate::{
    check::{CheckReport, Verdict},
    history::History,
    report::{CheckLine, RunSummary, render_html},
};

/// Facts of the run the report page shows beside those in its options.
pub(super) struct RunFacts<'a> {
    pub(super) storage: &'a str,
    pub(super) ops_per_second: f64,
}

/// Writes the run's history (`history.jsonl`) and its report page (`report.html`).
pub(super) fn write_history_and_page(
    options: &Options,
    history: &History,
    checked: &CheckReport,
    checks: &[CheckResult],
    shared: &Shared,
    facts: RunFacts<'_>,
) -> Result<()> {
    std::fs::write(
        options.run_dir.join("history.jsonl"),
        history.to_json_lines(),
    )?;
    let run_summary = RunSummary {
        verdict: Verdict::all(checks.iter().map(|c| c.verdict)),
        nodes: options.nodes as u64,
        checks: {
            let oracles = shared.oracles.lock().expect("oracles poisoned");
            checks
                .iter()
                .map(|c| CheckLine {
                    name: c.name.clone(),
                    verdict: c.verdict,
                    detail: c.detail.clone(),
                    at: oracles.first_violation_at(&c.name),
                })
                .collect()
        },
        facts: vec![
            ("seed".into(), options.seed.to_string()),
            ("nodes".into(), options.nodes.to_string()),
            (
                "duration".into(),
                format!("{} s", options.duration.as_secs()),
            ),
            (
                "faults".into(),
                match &options.scenario {
                    Some(scenario) => format!("scenario {}", scenario.name()),
                    None => {
                        let names: Vec<String> =
                            options.faults.iter().map(|f| f.name().to_owned()).collect();
                        names.join(", ")
                    }
                },
            ),
            ("storage".into(), facts.storage.to_owned()),
            (
                "metadata model".into(),
                format!("faultfs --metadata {}", options.metadata),
            ),
            ("target".into(), options.target.describe()),
            (
                "operations".into(),
                format!(
                    "{} ({:.0}/s), {} faults",
                    history.operations.len(),
                    facts.ops_per_second,
                    history.faults.len()
                ),
            ),
        ],
        replay: options.replay.clone(),
    };
    std::fs::write(
        options.run_dir.join("report.html"),
        render_html(
            history,
            checked,
            &format!("torture seed {}", options.seed),
            Some(&run_summary),
        ),
    )?;
    Ok(())
}
