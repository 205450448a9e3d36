//! What runs found, as the runner writes it and the reports read it: each check's verdict, each
//! seed's result, and a job's `summary.json` (merged across the jobs of a CI matrix). Nothing
//! here depends on how a run is made.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::check::Verdict;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Error)]
pub enum SummaryError {
    #[error("no {file} in {dir}: merge takes the run directories of `torture run` jobs")]
    NoSummary { file: &'static str, dir: PathBuf },
    #[error("{file} in {dir} is not a torture summary: {reason}")]
    BadSummary {
        file: &'static str,
        dir: PathBuf,
        reason: String,
    },
    #[error(
        "seed {seed} is in both {first} and {second}: did two shards overlap? Merge each job's \
         directory once"
    )]
    DuplicateSeed {
        seed: u64,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One seed's run, as a job reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub verdict: Verdict,
    pub checks: Vec<CheckResult>,
    pub operations: usize,
    pub faults: usize,
    pub seconds: f64,
    pub run_dir: PathBuf,
    /// The command that replays this seed.
    pub replay: String,
}

/// What one job (or a merge of jobs) found, seed by seed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub results: Vec<SeedResult>,
}

pub const SUMMARY_FILE: &str = "summary.json";

impl Summary {
    /// Every seed passed: pass; any failed: fail; else unknown. An empty summary is unknown.
    pub fn verdict(&self) -> Verdict {
        if self.results.is_empty() {
            return Verdict::Unknown;
        }
        Verdict::all(self.results.iter().map(|r| r.verdict))
    }

    pub fn write(&self, dir: &Path) -> Result<(), SummaryError> {
        let path = dir.join(SUMMARY_FILE);
        let text = serde_json::to_string_pretty(self).expect("a summary serialises");
        std::fs::write(&path, text).map_err(|source| SummaryError::Write { path, source })
    }

    pub fn read(dir: &Path) -> Result<Summary, SummaryError> {
        let text = std::fs::read_to_string(dir.join(SUMMARY_FILE)).map_err(|_| {
            SummaryError::NoSummary {
                file: SUMMARY_FILE,
                dir: dir.to_owned(),
            }
        })?;
        serde_json::from_str(&text).map_err(|error| SummaryError::BadSummary {
            file: SUMMARY_FILE,
            dir: dir.to_owned(),
            reason: error.to_string(),
        })
    }

    /// The summaries of several jobs as one, by seed; a seed found twice is refused.
    pub fn merge(dirs: &[PathBuf]) -> Result<Summary, SummaryError> {
        let mut merged: Vec<(SeedResult, PathBuf)> = Vec::new();
        for dir in dirs {
            for result in Summary::read(dir)?.results {
                if let Some((_, first)) = merged.iter().find(|(r, _)| r.seed == result.seed) {
                    return Err(SummaryError::DuplicateSeed {
                        seed: result.seed,
                        first: first.clone(),
                        second: dir.clone(),
                    });
                }
                merged.push((result, dir.clone()));
            }
        }
        merged.sort_by_key(|(r, _)| r.seed);
        Ok(Summary {
            results: merged.into_iter().map(|(r, _)| r).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(seed: u64, verdict: Verdict) -> SeedResult {
        SeedResult {
            seed,
            verdict,
            checks: vec![],
            operations: 1,
            faults: 1,
            seconds: 1.0,
            run_dir: PathBuf::from("/nowhere"),
            replay: format!("replay {seed}"),
        }
    }

    #[test]
    fn merge_orders_by_seed_refuses_overlaps_and_combines_verdicts() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        Summary {
            results: vec![result(3, Verdict::Pass), result(1, Verdict::Pass)],
        }
        .write(a.path())
        .unwrap();
        Summary {
            results: vec![result(2, Verdict::Unknown)],
        }
        .write(b.path())
        .unwrap();
        let dirs = [a.path().to_owned(), b.path().to_owned()];
        let merged = Summary::merge(&dirs).unwrap();
        let order: Vec<u64> = merged.results.iter().map(|r| r.seed).collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(merged.verdict(), Verdict::Unknown);

        let overlap = Summary::merge(&[a.path().to_owned(), a.path().to_owned()]).unwrap_err();
        assert!(
            overlap.to_string().contains("seed 3 is in both"),
            "{overlap}"
        );
        let empty = tempfile::tempdir().unwrap();
        let missing = Summary::merge(&[empty.path().to_owned()]).unwrap_err();
        assert!(missing.to_string().contains("no summary.json"), "{missing}");
        assert_eq!(Summary::default().verdict(), Verdict::Unknown);
    }
}
