//! Unsynced directory entries in the `prefix` and `reorder` power-loss modes: a prefix of them
//! (in the order they were made) or a random subset survives, chosen by the seed; a rename
//! survives whole or not at all. Real mounts (root).
mod common;

use std::{collections::BTreeSet, fs};

use common::{Mounted, write_file};
use faultfs::power_loss::PowerLossMode;

const FILES: usize = 12;

fn name(i: usize) -> String {
    format!("f{i:02}")
}

/// Creates f00..f11 with their data fsynced but not their directory, loses power, and returns
/// which names are on the disk (after checking each holds its data).
fn survivors(mode: PowerLossMode, seed: u64) -> BTreeSet<usize> {
    let mounted = Mounted::new(&["--seed", &seed.to_string()]);
    for i in 0..FILES {
        let file = write_file(&mounted.path(&name(i)), name(i).as_bytes());
        file.sync_all().unwrap();
    }
    mounted.power_loss(mode);
    let mut kept = BTreeSet::new();
    for i in 0..FILES {
        let on_disk = mounted.backing.join(name(i));
        if on_disk.exists() {
            assert_eq!(fs::read(&on_disk).unwrap(), name(i).as_bytes(), "{mode:?}");
            // The mount serves the disk.
            assert_eq!(
                fs::read(mounted.path(&name(i))).unwrap(),
                name(i).as_bytes()
            );
            kept.insert(i);
        } else {
            assert!(!mounted.path(&name(i)).exists());
        }
    }
    let _ = mounted.unmount();
    kept
}

#[test]
fn prefix_mode_keeps_the_first_entries_made() {
    let mut lengths = BTreeSet::new();
    for seed in 1..=8 {
        let kept = survivors(PowerLossMode::Prefix, seed);
        let prefix: BTreeSet<usize> = (0..kept.len()).collect();
        assert_eq!(kept, prefix, "seed {seed}: not a prefix");
        lengths.insert(kept.len());
    }
    assert!(lengths.len() >= 3, "prefixes of lengths {lengths:?} only");
    assert_eq!(
        survivors(PowerLossMode::Prefix, 3),
        survivors(PowerLossMode::Prefix, 3),
        "the same seed gives the same disk"
    );
}

#[test]
fn reorder_mode_keeps_a_random_subset_of_the_entries() {
    let mut not_a_prefix = 0;
    let mut sets = BTreeSet::new();
    for seed in 1..=6 {
        let kept = survivors(PowerLossMode::Reorder, seed);
        if kept != (0..kept.len()).collect::<BTreeSet<_>>() {
            not_a_prefix += 1;
        }
        sets.insert(kept.into_iter().collect::<Vec<_>>());
    }
    assert!(not_a_prefix > 0, "every reorder kept a prefix");
    assert!(sets.len() > 1, "every seed kept the same entries");
}

#[test]
fn a_rename_over_a_file_survives_whole_or_not_at_all() {
    let mut outcomes = BTreeSet::new();
    for mode in [PowerLossMode::Reorder, PowerLossMode::Prefix] {
        for seed in 1..=6 {
            let mounted = Mounted::with_backing(&["--seed", &seed.to_string()], |backing| {
                fs::write(backing.join("db"), b"old").unwrap();
            });
            let tmp = write_file(&mounted.path("db.tmp"), b"new");
            tmp.sync_all().unwrap();
            drop(tmp);
            fs::rename(mounted.path("db.tmp"), mounted.path("db")).unwrap();
            mounted.power_loss(mode);
            let db = fs::read(mounted.backing.join("db")).expect("db is never missing");
            assert!(db == b"old" || db == b"new", "{mode:?} seed {seed}: {db:?}");
            let tmp_left = mounted.backing.join("db.tmp").exists();
            if tmp_left {
                assert_eq!(fs::read(mounted.backing.join("db.tmp")).unwrap(), b"new");
            }
            outcomes.insert((db, tmp_left));
            let _ = mounted.unmount();
        }
    }
    assert!(
        outcomes.iter().any(|(db, _)| db == b"old") && outcomes.iter().any(|(db, _)| db == b"new"),
        "both sides of the rename were seen: {outcomes:?}"
    );
}
