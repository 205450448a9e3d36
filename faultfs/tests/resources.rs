//! faultfs under a long-running database: what the kernel forgets, faultfs lets go of. Real
//! mounts (root).
mod common;

use std::{fs, io::Write, time::Duration};

use common::{Mounted, fsync_path, wait_until};
use faultfs::{control::Request, power_loss::PowerLossMode};

/// SQLite's rollback journal: a file created, written, fsynced and unlinked for every commit.
/// Each one once kept two descriptors and a store file in faultfs until the next power loss,
/// so a database ran out of descriptors after some thousands of commits, and the power loss
/// itself then failed with "Too many open files".
#[test]
fn files_created_and_unlinked_by_the_thousand_hold_no_descriptors() {
    const COMMITS: usize = 5000;
    let mounted = Mounted::new(&[]);
    let before = mounted.open_descriptors();
    let journal = mounted.path("db-journal");
    for commit in 0..COMMITS {
        let mut file = fs::File::create(&journal).unwrap();
        file.write_all(format!("commit {commit}").as_bytes())
            .unwrap();
        file.sync_all().unwrap();
        drop(file);
        fs::remove_file(&journal).unwrap();
    }
    // The kernel sends its forgets on its own schedule, soon after the last close.
    wait_until(
        "faultfs let go of the unlinked files' descriptors",
        Duration::from_secs(20),
        || mounted.open_descriptors() < before + 50,
    );
    // Their live copies go too. (Their fsynced content stays staged while an unsynced create
    // could still bring a name back at a power loss: the directory was never fsynced.)
    let status = mounted.ctl(Request::Status);
    assert!(
        status["status"]["live_copies"].as_u64().unwrap() < 50,
        "{status}"
    );
    mounted.power_loss(PowerLossMode::Drop);
    fs::write(mounted.path("after"), b"ok").unwrap();
    let _ = mounted.unmount();
}

/// A durable file unlinked (the unlink not synced) and closed: faultfs may drop what it held
/// for it, but a power loss must still bring the name back with its durable content.
#[test]
fn a_forgotten_file_whose_unlink_was_not_synced_comes_back_after_a_power_loss() {
    let mounted = Mounted::new(&[]);
    let mut file = fs::File::create(mounted.path("wal")).unwrap();
    file.write_all(b"durable").unwrap();
    file.sync_all().unwrap();
    fsync_path(&mounted.path(""));
    file.write_all(b" and not").unwrap();
    drop(file);
    fs::remove_file(mounted.path("wal")).unwrap();
    // Unlinked files the kernel has forgotten go; this one's name is on the disk still.
    for i in 0..200 {
        let other = mounted.path(&format!("tmp{i}"));
        fs::write(&other, b"x").unwrap();
        fs::remove_file(&other).unwrap();
    }
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::read(mounted.path("wal")).unwrap(), b"durable");
    let _ = mounted.unmount();
}

/// A database with thousands of files open keeps as many live copies open in faultfs: faultfs
/// raises its soft limit on open files to the hard one, so it runs out after the program does.
#[test]
fn faultfs_raises_its_open_file_limit_to_the_hard_limit() {
    let mounted = Mounted::launched_by(&["prlimit", "--nofile=256:"]);
    let limits = fs::read_to_string(format!("/proc/{}/limits", mounted.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft and hard: {line}");
    assert_ne!(numbers[0], "256", "{line}");
    let _ = mounted.unmount();
}
