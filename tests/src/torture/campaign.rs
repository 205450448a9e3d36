//! Many seeds in one job: seed ranges and shards of them for a CI matrix. (The `summary.json`
//! each job writes, and merging those, live in `crate::results`.)
use std::{fmt, str::FromStr};

use thiserror::Error;

pub use crate::results::{SUMMARY_FILE, SeedResult, Summary, SummaryError};

#[derive(Debug, Error)]
pub enum CampaignError {
    #[error("`{0}` is not a seed range: write FIRST..LAST, e.g. 1..200 (both included)")]
    BadRange(String),
    #[error("`{0}` is not a shard: write INDEX/COUNT with 1 <= INDEX <= COUNT, e.g. 3/8")]
    BadShard(String),
    #[error("shard {shard} of seeds {range} holds no seed: use fewer shards or more seeds")]
    EmptyShard { shard: Shard, range: SeedRange },
    #[error(transparent)]
    Summary(#[from] SummaryError),
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
}
