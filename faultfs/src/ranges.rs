//! A set of byte ranges: the parts of a file written since it was last made durable.
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive); ranges never overlap or touch.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .filter(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, clipped to `limit` (a file's size).
    pub fn clipped(&self, limit: u64) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .filter(|&(&s, _)| s < limit)
            .map(|(&s, &e)| (s, e.min(limit)))
            .collect()
    }

    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let mut set = RangeSet::default();
        set.insert(10, 20);
        set.insert(30, 40);
        set.insert(20, 30);
        assert_eq!(set.clipped(u64::MAX), vec![(10, 40)]);
        set.insert(0, 5);
        set.insert(35, 50);
        assert_eq!(set.clipped(45), vec![(0, 5), (10, 45)]);
        assert_eq!(set.bytes(), 45);
    }
}
