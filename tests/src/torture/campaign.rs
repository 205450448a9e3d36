//! Many seeds in one job, and many jobs in one verdict: seed ranges, shards of them for a CI
//! matrix, the `summary.json` each job writes, and merging those summaries.
use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{check::Verdict, torture::CheckResult};

#[derive(Debug, Error)]
pub enum CampaignError {
    #[error("`{0}` is not a seed range: write FIRST..LAST, e.g. 1..200 (both included)")]
    BadRange(String),
    #[error("`{0}` is not a shard: write INDEX/COUNT with 1 <= INDEX <= COUNT, e.g. 3/8")]
    BadShard(String),
    #[error("shard {shard} of seeds {range} holds no seed: use fewer shards or more seeds")]
    EmptyShard { shard: Shard, range: SeedRange },
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

/// Seeds FIRST..LAST, both included (`1..200` is 200 seeds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedRange {
    pub first: u64,
    pub last: u64,
}

impl FromStr for SeedRange {
    type Err = CampaignError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || CampaignError::BadRange(text.to_owned());
        let (first, last) = text.split_once("..").ok_or_else(bad)?;
        let last = last.strip_prefix('=').unwrap_or(last);
        let first: u64 = first.trim().parse().map_err(|_| bad())?;
        let last: u64 = last.trim().parse().map_err(|_| bad())?;
        if first > last {
            return Err(bad());
        }
        Ok(SeedRange { first, last })
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.first, self.last)
    }
}

/// Job INDEX of COUNT (1-based): it takes every COUNT-th seed of the range, starting at the
/// INDEX-th, so shards are disjoint, cover the range, and differ in size by one at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };
}

impl FromStr for Shard {
    type Err = CampaignError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || CampaignError::BadShard(text.to_owned());
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The seeds of `range` that belong to `shard`.
pub fn seeds(range: SeedRange, shard: Shard) -> Result<Vec<u64>, CampaignError> {
    let seeds: Vec<u64> = (range.first..=range.last)
        .filter(|seed| (seed - range.first) % shard.count == shard.index - 1)
        .collect();
    if seeds.is_empty() {
        return Err(CampaignError::EmptyShard { shard, range });
    }
    Ok(seeds)
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

    pub fn write(&self, dir: &Path) -> Result<(), CampaignError> {
        let path = dir.join(SUMMARY_FILE);
        let text = serde_json::to_string_pretty(self).expect("a summary serialises");
        std::fs::write(&path, text).map_err(|source| CampaignError::Write { path, source })
    }

    pub fn read(dir: &Path) -> Result<Summary, CampaignError> {
        let text = std::fs::read_to_string(dir.join(SUMMARY_FILE)).map_err(|_| {
            CampaignError::NoSummary {
                file: SUMMARY_FILE,
                dir: dir.to_owned(),
            }
        })?;
        serde_json::from_str(&text).map_err(|error| CampaignError::BadSummary {
            file: SUMMARY_FILE,
            dir: dir.to_owned(),
            reason: error.to_string(),
        })
    }

    /// The summaries of several jobs as one, by seed; a seed found twice is refused.
    pub fn merge(dirs: &[PathBuf]) -> Result<Summary, CampaignError> {
        let mut merged: Vec<(SeedResult, PathBuf)> = Vec::new();
        for dir in dirs {
            for result in Summary::read(dir)?.results {
                if let Some((_, first)) = merged.iter().find(|(r, _)| r.seed == result.seed) {
                    return Err(CampaignError::DuplicateSeed {
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

    #[test]
    fn shards_are_disjoint_and_cover_the_range() {
        let range: SeedRange = "1..200".parse().unwrap();
        let mut all: Vec<u64> = (1..=8)
            .flat_map(|i| seeds(range, Shard { index: i, count: 8 }).unwrap())
            .collect();
        let sizes: Vec<usize> = (1..=8)
            .map(|i| seeds(range, Shard { index: i, count: 8 }).unwrap().len())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<_>>());
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        assert_eq!(
            seeds(range, "3/8".parse().unwrap()).unwrap()[..3],
            [3, 11, 19]
        );
    }

    #[test]
    fn bad_ranges_and_shards_name_the_fix() {
        assert_eq!("5..=7".parse::<SeedRange>().unwrap().last, 7);
        for bad in ["7..5", "1-200", "a..b", "12"] {
            let error = bad.parse::<SeedRange>().unwrap_err().to_string();
            assert!(error.contains("FIRST..LAST"), "{error}");
        }
        for bad in ["0/8", "9/8", "3", "x/y"] {
            let error = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(error.contains("INDEX/COUNT"), "{error}");
        }
        let empty = seeds("1..2".parse().unwrap(), "3/4".parse().unwrap()).unwrap_err();
        assert!(empty.to_string().contains("holds no seed"), "{empty}");
    }

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
