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

/// Three directories renamed round in a circle (through a spare name, as a program must): a
/// fsync of their parent moves all three on the disk at once. Each move waits for its place to
/// be vacated, so faultfs once chased that circle until its stack overflowed.
#[test]
fn directories_renamed_round_in_a_circle_sync_in_one_step() {
    let mounted = Mounted::new(&[]);
    let path = |p: &str| mounted.path(p);
    for name in ["x", "y", "z"] {
        fs::create_dir(path(name)).unwrap();
        fs::write(path(&format!("{name}/file")), name).unwrap();
    }
    mounted.ctl(faultfs::control::Request::Sync);
    fs::rename(path("x"), path("spare")).unwrap();
    fs::rename(path("y"), path("x")).unwrap();
    fs::rename(path("z"), path("y")).unwrap();
    fs::rename(path("spare"), path("z")).unwrap();
    common::fsync_path(&path(""));
    mounted.power_loss(faultfs::power_loss::PowerLossMode::Drop);
    for (name, was) in [("x", "y"), ("y", "z"), ("z", "x")] {
        let file = format!("{name}/file");
        assert_eq!(
            fs::read_to_string(mounted.backing.join(&file)).unwrap(),
            was
        );
        assert_eq!(fs::read_to_string(path(&file)).unwrap(), was);
    }
    let names: BTreeSet<String> = fs::read_dir(&mounted.backing)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["x".into(), "y".into(), "z".into()]));
    let _ = mounted.unmount();
}

/// A file renamed to another directory, and only the new directory synced, is durable under
/// both names: after a power loss the disk holds one file with two links, and the mount must
/// serve it as one file (a write through one name seen through the other, two links), not as
/// two that share their disk blocks unknown to the kernel.
#[test]
fn a_file_durable_under_two_names_after_a_power_loss_is_one_file() {
    use std::os::unix::fs::MetadataExt;
    let mounted = Mounted::new(&[]);
    let path = |p: &str| mounted.path(p);
    fs::create_dir(path("a")).unwrap();
    fs::create_dir(path("b")).unwrap();
    fs::write(path("a/f"), b"first").unwrap();
    mounted.ctl(faultfs::control::Request::Sync);
    fs::rename(path("a/f"), path("b/f")).unwrap();
    common::fsync_path(&path("b"));
    mounted.power_loss(faultfs::power_loss::PowerLossMode::Drop);
    assert_eq!(
        fs::metadata(mounted.backing.join("a/f")).unwrap().ino(),
        fs::metadata(mounted.backing.join("b/f")).unwrap().ino(),
        "the disk holds one file under both names"
    );
    assert_eq!(fs::metadata(path("a/f")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(path("a/f")).unwrap().ino(),
        fs::metadata(path("b/f")).unwrap().ino()
    );
    fs::write(path("b/f"), b"second").unwrap();
    assert_eq!(fs::read(path("a/f")).unwrap(), b"second");
    let _ = mounted.unmount();
}

/// The link count follows links, renames and unlinks, down to 0 for a file still open after its
/// last name is gone, as fstat on ext4 does. (faultfs's attributes said at least 1; the kernel's
/// cached count hides that here, so the 0 is the kernel's, the 2 and 3 are faultfs's.)
#[test]
fn the_link_count_follows_links_renames_and_unlinks_down_to_zero() {
    use std::os::unix::fs::MetadataExt;
    let mounted = Mounted::new(&[]);
    let path = |p: &str| mounted.path(p);
    let file = fs::File::create(path("a")).unwrap();
    fs::hard_link(path("a"), path("b")).unwrap();
    assert_eq!(file.metadata().unwrap().nlink(), 2);
    fs::rename(path("b"), path("c")).unwrap();
    // Two names of one file: POSIX says the rename does nothing.
    fs::rename(path("a"), path("c")).unwrap();
    assert_eq!(file.metadata().unwrap().nlink(), 2);
    fs::hard_link(path("c"), path("d")).unwrap();
    assert_eq!(file.metadata().unwrap().nlink(), 3);
    for name in ["c", "d", "a"] {
        fs::remove_file(path(name)).unwrap();
    }
    assert_eq!(file.metadata().unwrap().nlink(), 0);
    drop(file);
    let _ = mounted.unmount();
}

/// Two directories trade places through a spare name, and one of them goes under a new
/// directory made at the other's old name: making that new directory durable needs the very
/// entry being replaced, a circle faultfs once chased until its stack overflowed.
#[test]
fn a_directory_swap_through_a_new_directory_syncs_in_one_step() {
    let mounted = Mounted::new(&[]);
    let path = |p: &str| mounted.path(p);
    for name in ["x", "z"] {
        fs::create_dir(path(name)).unwrap();
        fs::write(path(&format!("{name}/file")), name).unwrap();
    }
    mounted.ctl(faultfs::control::Request::Sync);
    fs::rename(path("x"), path("spare")).unwrap();
    fs::rename(path("z"), path("x")).unwrap();
    fs::create_dir(path("z")).unwrap();
    fs::rename(path("spare"), path("z/z")).unwrap();
    common::fsync_path(&path(""));
    common::fsync_path(&path("z"));
    mounted.power_loss(faultfs::power_loss::PowerLossMode::Drop);
    for (file, was) in [("x/file", "z"), ("z/z/file", "x")] {
        assert_eq!(fs::read_to_string(mounted.backing.join(file)).unwrap(), was);
        assert_eq!(fs::read_to_string(path(file)).unwrap(), was);
    }
    let _ = mounted.unmount();
}
