//! What `torture run` prints: each seed's verdict and crash points, and the summary.
use tests::{
    check::Verdict,
    torture::{
        TortureReport,
        campaign::{SeedResult, Summary},
    },
};

use crate::word;

/// What a run reached: its storage shape, retried writes, and what its crash points reached and
/// never did.
pub fn print_crash_points(report: &TortureReport) {
    println!(
        "storage: {}; {} writes sent again after an unknown outcome",
        report.storage, report.retries
    );
    let coverage = &report.crash_points;
    if coverage.placed == 0 {
        return;
    }
    println!(
        "crash points: {} reached of {} placed ({} correlated with a majority or all, {} during recovery, {} once recovered, {} crashes of the program alone)",
        coverage.reached,
        coverage.placed,
        coverage.correlated,
        coverage.during_recovery,
        coverage.after_recovery,
        coverage.program_crashes
    );
    if !coverage.covered.is_empty() {
        println!("  reached: {}", coverage.covered.join(", "));
    }
    if !coverage.seen.is_empty() {
        println!("  calls seen (class call): {}", coverage.seen.join(", "));
    }
    if !coverage.never_reached.is_empty() {
        println!(
            "  placed, never reached: {}",
            coverage.never_reached.join(", ")
        );
    }
}

pub fn print_seed(result: &SeedResult) {
    for check in &result.checks {
        println!(
            "{:<8} {:<42} {}",
            word(check.verdict),
            check.name,
            check.detail
        );
    }
    println!(
        "{}: seed {}, {} operations, {} faults; run directory {}",
        word(result.verdict),
        result.seed,
        result.operations,
        result.faults,
        result.run_dir.display()
    );
    println!("replay: {}", result.replay);
}

/// A table of the seeds; `source` says where the summary came from.
pub fn print_summary(summary: &Summary, source: &str) {
    println!();
    println!(
        "{:>8} {:<8} {:>10} {:>7} {:>8}",
        "seed", "verdict", "operations", "faults", "seconds"
    );
    for result in &summary.results {
        println!(
            "{:>8} {:<8} {:>10} {:>7} {:>8.1}",
            result.seed,
            word(result.verdict),
            result.operations,
            result.faults,
            result.seconds
        );
    }
    let passed = summary
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Pass)
        .count();
    println!(
        "{}: {passed} of {} seeds passed; {source}",
        word(summary.verdict()),
        summary.results.len(),
    );
    for result in summary
        .results
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
    {
        println!("replay seed {}: {}", result.seed, result.replay);
    }
}
