//! One pass over a recorded run, point by point, with the operations still pending at each, and
//! where a pending write can be torn.
use super::*;

/// Walks the points in order, keeping the pending operations as a set, so that counting or
/// visiting every point costs one pass over the record.
pub struct Sweep<'a> {
    plan: &'a Plan,
    point: usize,
    pending: std::collections::BTreeSet<usize>,
    naming: std::collections::BTreeSet<usize>,
    tears: usize,
    /// The point at which each operation stops being pending.
    ends: BTreeMap<usize, Vec<usize>>,
}

impl<'a> Sweep<'a> {
    pub fn new(plan: &'a Plan) -> Sweep<'a> {
        Sweep {
            plan,
            point: 0,
            pending: Default::default(),
            naming: Default::default(),
            tears: 0,
            ends: BTreeMap::new(),
        }
    }

    /// Moves forward to `point` (never back).
    pub fn advance_to(&mut self, point: usize) {
        while self.point < point {
            // Operation `self.point` has run: it is pending from the next point on.
            let op = self.point;
            self.point += 1;
            let info = &self.plan.ops[op];
            if info.changes && info.durable_after.is_none_or(|at| at >= self.point) {
                self.pending.insert(op);
                if info.naming {
                    self.naming.insert(op);
                }
                if let Some((offset, length)) = info.write {
                    self.tears += tear_points(offset, length).len();
                }
                if let Some(at) = info.durable_after {
                    self.ends.entry(at + 1).or_default().push(op);
                }
            }
            if let Some(done) = self.ends.remove(&self.point) {
                for op in done {
                    self.pending.remove(&op);
                    self.naming.remove(&op);
                    if let Some((offset, length)) = self.plan.ops[op].write {
                        self.tears -= tear_points(offset, length).len();
                    }
                }
            }
        }
    }

    pub fn pending(&self) -> Vec<usize> {
        self.pending.iter().copied().collect()
    }

    pub(super) fn counts(&self) -> Counts {
        let count = self.pending.len();
        let last = self.pending.last();
        let last_naming = self.naming.last();
        let not_naming_before_last = (count - self.naming.len())
            .saturating_sub(usize::from(last.is_some() && last != last_naming));
        let all_but =
            not_naming_before_last + usize::from(last_naming.is_some() && last_naming != last);
        Counts {
            primary: 1 + count,
            secondary: all_but + self.tears,
        }
    }
}

/// Where a write of `length` bytes at `offset` can be torn: after its first and before its last
/// sector and page boundary (bytes kept, each strictly inside the write).
pub(super) fn tear_points(offset: u64, length: usize) -> Vec<usize> {
    let end = offset + length as u64;
    let mut cuts = Vec::new();
    for unit in [512u64, 4096] {
        let first = (offset / unit + 1) * unit;
        let last = (end - 1) / unit * unit;
        for at in [first, last] {
            if at > offset && at < end {
                cuts.push((at - offset) as usize);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}
