//! Which unsynced operations survive a power loss, by mode. Every choice comes from the seed, so
//! the same seed and the same operations give the same disk.
use fault_rules::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::state::{Survival, Unsynced};

pub const PAGE: u64 = 4096;
pub const SECTOR: u64 = 512;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PowerLossMode {
    /// Nothing unsynced survives.
    #[default]
    Drop,
    /// The newest unsynced write that changes bytes on both sides of a 512-byte sector
    /// boundary is cut at one such boundary: its tail is lost. Every other unsynced write keeps
    /// a random subset of its 4 KiB pages, and a kept page may be cut at a sector boundary
    /// inside the bytes the write changes. Unsynced truncates and directory entries are lost.
    Torn,
    /// A random subset of the unsynced operations (writes, truncates, directory entries)
    /// survives, not necessarily a prefix; a rename survives whole or not at all.
    Reorder,
    /// A random prefix of the unsynced operations (writes, truncates, directory entries, in
    /// the order they were made) survives.
    Prefix,
    /// Every unsynced operation survives: the disk a crash of the program alone leaves (its
    /// writes live on in the kernel's page cache). At a crash point, the state right after the
    /// crashing call, which a power loss rarely keeps: a file truncated for an in-place rewrite
    /// and not written yet, a rename done before the data it points to.
    Keep,
}

/// `unchanged[i]`: how many leading bytes of the i-th operation, a write, equal what the disk
/// holds already (0 if not a write or not known).
pub fn plan(
    mode: PowerLossMode,
    log: &[Unsynced],
    unchanged: &[u64],
    rng: &mut SplitMix64,
) -> Vec<Survival> {
    match mode {
        PowerLossMode::Drop => vec![Survival::Dropped; log.len()],
        PowerLossMode::Keep => vec![Survival::Whole; log.len()],
        PowerLossMode::Prefix => {
            let kept = rng.below(log.len() as u64 + 1) as usize;
            (0..log.len())
                .map(|i| {
                    if i < kept {
                        Survival::Whole
                    } else {
                        Survival::Dropped
                    }
                })
                .collect()
        }
        PowerLossMode::Reorder => log
            .iter()
            .map(|_| {
                if rng.percent(50) {
                    Survival::Whole
                } else {
                    Survival::Dropped
                }
            })
            .collect(),
        PowerLossMode::Torn => {
            let changed = |index: usize| match &log[index] {
                Unsynced::Write { offset, data, .. } => {
                    let same = unchanged.get(index).copied().unwrap_or(0);
                    Some((
                        offset + same.min(data.len() as u64),
                        offset + data.len() as u64,
                    ))
                }
                Unsynced::Truncate { .. } | Unsynced::Entries { .. } => None,
            };
            // A torn power loss that happens to keep or drop every write whole tears nothing,
            // and the bug class it is there for (a torn record left in the log) goes untested.
            let newest_tearable = (0..log.len())
                .rev()
                .find(|&index| changed(index).is_some_and(|(from, to)| !cuts(from, to).is_empty()));
            (0..log.len())
                .map(|index| match (&log[index], changed(index)) {
                    (Unsynced::Write { offset, data, .. }, Some((from, to))) => {
                        if Some(index) == newest_tearable {
                            let options = cuts(from, to);
                            let cut = options[rng.below(options.len() as u64) as usize];
                            Survival::Parts(vec![(0, cut - offset)])
                        } else {
                            torn_parts(*offset, data.len() as u64, from - offset, rng)
                        }
                    }
                    _ => Survival::Dropped,
                })
                .collect()
        }
    }
}

/// The sector boundaries strictly inside the changed bytes `from..to` of a file: where a
/// power loss can cut a write that the disk writes a sector at a time.
fn cuts(from: u64, to: u64) -> Vec<u64> {
    (from / SECTOR + 1..to.div_ceil(SECTOR))
        .map(|sector| sector * SECTOR)
        .collect()
}

/// The parts of a write at `offset` of `len` bytes that reach the disk: whole pages (aligned in
/// the file) kept or lost at random, and a kept page possibly cut after a random sector. The
/// cut falls inside the bytes the write changes (past its first `unchanged` bytes): the kernel
/// writes back whole pages, so a small append arrives as a page whose start is on the disk
/// already, and a cut there would tear nothing.
fn torn_parts(offset: u64, len: u64, unchanged: u64, rng: &mut SplitMix64) -> Survival {
    let end = offset + len;
    let mut parts: Vec<(u64, u64)> = Vec::new();
    let mut page = offset / PAGE * PAGE;
    while page < end {
        let (from, to) = (page.max(offset), (page + PAGE).min(end));
        page += PAGE;
        if !rng.percent(50) {
            continue;
        }
        let page_start = page - PAGE;
        let mut kept_to = to;
        let changed_from = from.max(offset + unchanged);
        if changed_from < to && rng.percent(50) {
            // Cut at a sector boundary (aligned in the file) strictly inside the changed span.
            let first = (changed_from - page_start) / SECTOR + 1;
            let last = (to - page_start).div_ceil(SECTOR) - 1;
            if first <= last {
                kept_to = page_start + (first + rng.below(last - first + 1)) * SECTOR;
            }
        }
        let part = (from - offset, kept_to - offset);
        match parts.last_mut() {
            Some(last) if last.1 == part.0 => last.1 = part.1,
            _ => parts.push(part),
        }
    }
    match parts.as_slice() {
        [] => Survival::Dropped,
        [(0, whole)] if *whole == len => Survival::Whole,
        _ => Survival::Parts(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(offset: u64, len: usize) -> Unsynced {
        Unsynced::Write {
            ino: 2,
            offset,
            data: vec![1; len],
        }
    }

    #[test]
    fn torn_writes_keep_page_or_sector_aligned_parts_only() {
        let log: Vec<Unsynced> = (0..50).map(|i| write(i * 1000 + 100, 20_000)).collect();
        let plan = plan(PowerLossMode::Torn, &log, &[], &mut SplitMix64::new(3));
        let mut saw_parts = false;
        for (op, fate) in log.iter().zip(&plan) {
            let Unsynced::Write { offset, data, .. } = op else {
                unreachable!()
            };
            if let Survival::Parts(parts) = fate {
                saw_parts = true;
                for &(start, end) in parts {
                    assert!(start < end && end <= data.len() as u64);
                    // Every cut is at the write's own edges or at a sector boundary in the file.
                    for edge in [offset + start, offset + end] {
                        let at_edge = edge == *offset || edge == offset + data.len() as u64;
                        assert!(at_edge || edge % SECTOR == 0, "cut at {edge}");
                    }
                }
            }
        }
        assert!(saw_parts);
    }

    #[test]
    fn plans_are_deterministic_per_seed_and_differ_across_seeds() {
        let log: Vec<Unsynced> = (0..40).map(|i| write(i * 4096, 8192)).collect();
        for mode in [
            PowerLossMode::Torn,
            PowerLossMode::Reorder,
            PowerLossMode::Prefix,
        ] {
            let a = plan(mode, &log, &[], &mut SplitMix64::new(7));
            let b = plan(mode, &log, &[], &mut SplitMix64::new(7));
            let c = plan(mode, &log, &[], &mut SplitMix64::new(8));
            assert_eq!(a, b, "{mode:?}");
            assert_ne!(a, c, "{mode:?}");
        }
        let prefix = plan(PowerLossMode::Prefix, &log, &[], &mut SplitMix64::new(7));
        let kept = prefix.iter().take_while(|f| **f == Survival::Whole).count();
        assert!(prefix[kept..].iter().all(|f| *f == Survival::Dropped));
    }

    /// The parts kept of one write of `len` bytes at offset 0 whose first `unchanged` bytes
    /// are on the disk already, for every torn plan of 400 seeds that cut it.
    fn torn_cuts(len: usize, unchanged: u64) -> Vec<Vec<(u64, u64)>> {
        let log = vec![write(0, len)];
        (0..400)
            .filter_map(|seed| {
                match &plan(
                    PowerLossMode::Torn,
                    &log,
                    &[unchanged],
                    &mut SplitMix64::new(seed),
                )[0]
                {
                    Survival::Parts(parts) => Some(parts.clone()),
                    _ => None,
                }
            })
            .collect()
    }

    #[test]
    fn a_torn_append_is_cut_inside_what_it_appended() {
        // A 100-byte record appended at 3900: the kernel sends the page from 0, whose first
        // 3900 bytes are on the disk already. 3900..4000 lies inside one sector (3584..4096),
        // which a disk writes whole: the page is kept whole or lost, never cut.
        assert_eq!(torn_cuts(4000, 3900), Vec::<Vec<(u64, u64)>>::new());
        // 2000 bytes on disk, 2096 changed: every cut lands at a sector boundary past 2000.
        let cuts = torn_cuts(4096, 2000);
        for parts in &cuts {
            assert_eq!(parts.len(), 1, "{parts:?}");
            assert!([2048, 2560, 3072, 3584].contains(&parts[0].1), "{parts:?}");
        }
        assert_eq!(cuts.len(), 400, "the newest tearable write is always torn");
    }

    #[test]
    fn only_the_newest_tearable_write_is_always_torn() {
        // The newest write lies inside one sector: the one before it is the one torn.
        let log = vec![write(0, 3000), write(3100, 100)];
        for seed in 0..100 {
            let fates = plan(
                PowerLossMode::Torn,
                &log,
                &[0, 0],
                &mut SplitMix64::new(seed),
            );
            let Survival::Parts(parts) = &fates[0] else {
                panic!("seed {seed}: the 3000-byte write was not torn: {fates:?}");
            };
            assert_eq!(parts.len(), 1);
            assert!(
                [512, 1024, 1536, 2048, 2560].contains(&parts[0].1),
                "{parts:?}"
            );
            assert!(matches!(fates[1], Survival::Whole | Survival::Dropped));
        }
    }
}
