//! Reading a directory while it changes, on a real mount: every entry not removed meanwhile is
//! returned exactly once (POSIX), as ext4 does. Databases clean old segments this way, and
//! Rust's `fs::remove_dir_all` too.
mod common;

use std::{collections::BTreeSet, fs};

use common::Mounted;

const FILES: usize = 2000;

fn fill(dir: &std::path::Path) {
    fs::create_dir(dir).unwrap();
    for i in 0..FILES {
        fs::write(dir.join(format!("segment-{i:05}")), b"x").unwrap();
    }
}

#[test]
fn unlinking_each_entry_as_it_is_read_removes_them_all() {
    let mounted = Mounted::new(&[]);
    let dir = mounted.path("old");
    fill(&dir);
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
        seen += 1;
    }
    assert_eq!(seen, FILES, "entries returned while unlinking them");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir_all(mounted.path("old")).unwrap();
    assert!(!dir.exists());
    let _ = mounted.unmount();
}

#[test]
fn entries_added_while_reading_never_repeat_or_hide_the_others() {
    let mounted = Mounted::new(&[]);
    let dir = mounted.path("d");
    fill(&dir);
    let mut names = BTreeSet::new();
    for (index, entry) in fs::read_dir(&dir).unwrap().enumerate() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(names.insert(name.clone()), "{name} returned twice");
        if index % 10 == 0 {
            // Sorts before every original name: lands where the reader has been already.
            fs::write(dir.join(format!("a-new-{index:05}")), b"y").unwrap();
        }
    }
    let originals = names.iter().filter(|n| n.starts_with("segment-")).count();
    assert_eq!(originals, FILES, "original entries returned");
    let _ = mounted.unmount();
}

/// A directory renamed into a new directory that takes its old name, then renamed again under
/// it: the durable tree and the live one nest the other way round. A fsync must not follow the
/// durable parents round in a circle (faultfs once overflowed its stack here and the mount died).
#[test]
fn renames_that_nest_directories_both_ways_round_keep_the_mount_alive() {
    let mounted = Mounted::new(&[]);
    let path = |p: &str| mounted.path(p);
    fs::create_dir(path("d2")).unwrap();
    fs::create_dir(path("d1")).unwrap();
    common::fsync_path(&path("d1"));
    fs::rename(path("d1"), path("d2/b")).unwrap();
    fs::create_dir(path("d1")).unwrap();
    fs::create_dir(path("d1/s")).unwrap();
    fs::rename(path("d2/b"), path("d1/s/a")).unwrap();
    common::fsync_path(&path("d1"));
    common::fsync_path(&path("d1/s/a"));
    common::fsync_path(&path(""));
    assert!(path("d1/s/a").is_dir());
    mounted.power_loss(faultfs::power_loss::PowerLossMode::Drop);
    // The mount still answers, and the disk holds a tree a reboot could mount.
    fs::read_dir(path("")).unwrap().for_each(drop);
    fs::write(path("after"), b"ok").unwrap();
    assert_eq!(fs::read(path("after")).unwrap(), b"ok");
    let _ = mounted.unmount();
}

/// A directory renamed into its own former child (a/b renamed to b, then a to b/a): a fsync of
/// the root succeeds, as on ext4 (it once failed with EINVAL, moving a into its own subtree on
/// disk), and the disk then holds the new tree.
#[test]
fn a_directory_moved_under_its_former_child_syncs_like_ext4() {
    let mounted = Mounted::new(&[]);
    let path = |p: &str| mounted.path(p);
    fs::create_dir(path("a")).unwrap();
    fs::create_dir(path("a/b")).unwrap();
    common::fsync_path(&path(""));
    common::fsync_path(&path("a"));
    fs::rename(path("a/b"), path("b")).unwrap();
    fs::rename(path("a"), path("b/a")).unwrap();
    common::fsync_path(&path(""));
    common::fsync_path(&path("b"));
    mounted.power_loss(faultfs::power_loss::PowerLossMode::Drop);
    assert!(mounted.backing.join("b/a").is_dir());
    assert!(!mounted.backing.join("a").exists());
    assert!(path("b/a").is_dir());
    let _ = mounted.unmount();
}
