//! Which crash states are checked when there are more than `--max-states`: a seeded sample that
//! gives the primary states at least half the budget.
use std::collections::{BTreeMap, HashSet};

use fault_rules::SplitMix64;

use super::states::Counts;

/// Which states are checked: all of them, or (when there are more than `--max-states`) a
/// seeded sample by point, of indexes into `Plan::states_at`.
pub(super) enum Selection {
    All,
    Sample(BTreeMap<usize, Vec<usize>>),
}

/// `k` distinct numbers below `n` (Floyd's algorithm), for k <= n.
pub(super) fn sample_indexes(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut chosen = HashSet::with_capacity(k);
    for j in n - k..n {
        let t = rng.below(j as u64 + 1) as usize;
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// All states when they fit in `max_states`; otherwise a seeded sample that gives the primary
/// states (nothing kept, prefixes) at least half the budget.
pub(super) fn select(counts: &[Counts], max_states: usize, seed: u64) -> (Selection, usize) {
    let primary: usize = counts.iter().map(|c| c.primary).sum();
    let secondary: usize = counts.iter().map(|c| c.secondary).sum();
    let total = primary + secondary;
    if total <= max_states {
        return (Selection::All, total);
    }
    let secondary_budget = secondary.min(max_states - primary.min(max_states / 2));
    let primary_budget = primary.min(max_states - secondary_budget);
    let mut rng = SplitMix64::new(seed);
    let mut by_point: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (budget, of_kind, offset) in [
        (
            primary_budget,
            counts.iter().map(|c| c.primary).collect::<Vec<_>>(),
            false,
        ),
        (
            secondary_budget,
            counts.iter().map(|c| c.secondary).collect(),
            true,
        ),
    ] {
        let mut starts = Vec::with_capacity(of_kind.len());
        let mut sum = 0;
        for count in &of_kind {
            starts.push(sum);
            sum += count;
        }
        for global in sample_indexes(sum, budget, &mut rng) {
            let point = starts.partition_point(|&start| start <= global) - 1;
            let local = global - starts[point];
            let index = if offset {
                counts[point].primary + local
            } else {
                local
            };
            by_point.entry(point).or_default().push(index);
        }
    }
    for indexes in by_point.values_mut() {
        indexes.sort_unstable();
    }
    (Selection::Sample(by_point), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_stays_within_the_budget_and_each_point_s_states() {
        let counts: Vec<Counts> = (0..50)
            .map(|i| Counts {
                primary: 1 + i,
                secondary: 2 * i,
            })
            .collect();
        let total: usize = counts.iter().map(|c| c.primary + c.secondary).sum();
        let (selection, candidates) = select(&counts, total, 1);
        assert_eq!(candidates, total);
        assert!(matches!(selection, Selection::All));
        let (selection, _) = select(&counts, 300, 1);
        let Selection::Sample(by_point) = selection else {
            panic!("300 of {total} must be a sample");
        };
        let chosen: usize = by_point.values().map(Vec::len).sum();
        assert_eq!(chosen, 300);
        let primary: usize = by_point
            .iter()
            .map(|(point, indexes)| {
                indexes
                    .iter()
                    .filter(|&&i| i < counts[*point].primary)
                    .count()
            })
            .sum();
        assert!(
            primary >= 150,
            "nothing-kept and prefix states get half: {primary}"
        );
        for (point, indexes) in &by_point {
            let all = counts[*point].primary + counts[*point].secondary;
            assert!(indexes.iter().all(|&i| i < all));
            assert!(indexes.windows(2).all(|w| w[0] < w[1]), "distinct");
        }
    }
}
