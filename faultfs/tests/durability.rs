//! The power-loss model on a real mount: what was made durable survives, nothing else does.
mod common;

use std::{fs, os::unix::fs::FileExt};

use common::{Mounted, fsync_path, write_at, write_file};
use faultfs::{control::Request, power_loss::PowerLossMode};

#[test]
fn unsynced_data_is_lost_and_fsynced_data_kept() {
    let mounted = Mounted::with_backing(&[], |backing| {
        fs::write(backing.join("db"), b"0123456789").unwrap();
    });
    let db = mounted.path("db");
    write_at(&db, 0, b"AB");
    fsync_path(&db);
    write_at(&db, 2, b"CD");
    // Appended bytes and the size they add roll back too.
    write_at(&db, 10, b"-tail");
    assert_eq!(fs::read(&db).unwrap(), b"ABCD456789-tail");

    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::read(&db).unwrap(), b"AB23456789");
    assert_eq!(fs::read(mounted.backing.join("db")).unwrap(), b"AB23456789");
    let _ = mounted.unmount();
}

#[test]
fn a_truncate_is_volatile_until_fsync() {
    let mounted = Mounted::with_backing(&[], |backing| {
        fs::write(backing.join("log"), vec![7u8; 10_000]).unwrap();
    });
    let log = mounted.path("log");
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_eq!(fs::metadata(&log).unwrap().len(), 100);
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::metadata(&log).unwrap().len(), 10_000);

    // Cut, grow again, fsync: the cut bytes come back as zeros, durably.
    let file = fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(100).unwrap();
    file.set_len(200).unwrap();
    file.sync_all().unwrap();
    drop(file);
    mounted.power_loss(PowerLossMode::Drop);
    let data = fs::read(&log).unwrap();
    assert_eq!(data.len(), 200);
    assert!(data[..100].iter().all(|&b| b == 7) && data[100..].iter().all(|&b| b == 0));
    let _ = mounted.unmount();
}

#[test]
fn a_new_file_needs_a_directory_fsync_under_posix_metadata() {
    let mounted = Mounted::new(&[]);
    let file = write_file(&mounted.path("new"), b"data");
    file.sync_all().unwrap();
    drop(file);
    mounted.power_loss(PowerLossMode::Drop);
    assert!(
        !mounted.path("new").exists(),
        "the entry was never made durable"
    );

    let file = write_file(&mounted.path("new"), b"data");
    file.sync_all().unwrap();
    drop(file);
    fsync_path(&mounted.mountpoint);
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::read(mounted.path("new")).unwrap(), b"data");
    let _ = mounted.unmount();
}

#[test]
fn ext4_mode_makes_a_fsynced_files_entry_durable() {
    let mounted = Mounted::new(&["--metadata", "ext4"]);
    fs::create_dir(mounted.path("dir")).unwrap();
    let file = write_file(&mounted.path("dir/new"), b"data");
    file.sync_all().unwrap();
    drop(file);
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::read(mounted.path("dir/new")).unwrap(), b"data");
    let _ = mounted.unmount();
}

#[test]
fn a_rename_is_durable_only_after_the_directory_fsync() {
    let mounted = Mounted::with_backing(&[], |backing| {
        fs::write(backing.join("tmp"), b"new version").unwrap();
        fs::write(backing.join("current"), b"old version").unwrap();
    });
    fs::rename(mounted.path("tmp"), mounted.path("current")).unwrap();
    assert_eq!(fs::read(mounted.path("current")).unwrap(), b"new version");
    mounted.power_loss(PowerLossMode::Drop);
    // Rename over an existing file is atomic: old state entirely.
    assert_eq!(fs::read(mounted.path("current")).unwrap(), b"old version");
    assert_eq!(fs::read(mounted.path("tmp")).unwrap(), b"new version");

    fs::rename(mounted.path("tmp"), mounted.path("current")).unwrap();
    fsync_path(&mounted.mountpoint);
    mounted.power_loss(PowerLossMode::Drop);
    // ... or new state entirely.
    assert_eq!(fs::read(mounted.path("current")).unwrap(), b"new version");
    assert!(!mounted.path("tmp").exists());
    let _ = mounted.unmount();
}

#[test]
fn a_cross_directory_rename_needs_both_directories_synced() {
    let mounted = Mounted::with_backing(&[], |backing| {
        fs::create_dir(backing.join("a")).unwrap();
        fs::create_dir(backing.join("b")).unwrap();
        fs::write(backing.join("a/f"), b"payload").unwrap();
    });
    fs::rename(mounted.path("a/f"), mounted.path("b/f")).unwrap();
    fsync_path(&mounted.path("b"));
    mounted.power_loss(PowerLossMode::Drop);
    // Only the new directory was synced: the file has both names, with its data.
    assert_eq!(fs::read(mounted.path("a/f")).unwrap(), b"payload");
    assert_eq!(fs::read(mounted.path("b/f")).unwrap(), b"payload");

    fs::rename(mounted.path("a/f"), mounted.path("b/g")).unwrap();
    fsync_path(&mounted.path("a"));
    mounted.power_loss(PowerLossMode::Drop);
    assert!(!mounted.path("a/f").exists());
    assert!(!mounted.path("b/g").exists());
    assert_eq!(fs::read(mounted.path("b/f")).unwrap(), b"payload");
    let _ = mounted.unmount();
}

#[test]
fn old_file_handles_fail_after_a_power_loss() {
    let mounted = Mounted::with_backing(&[], |backing| {
        fs::write(backing.join("db"), b"durable").unwrap();
    });
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mounted.path("db"))
        .unwrap();
    mounted.power_loss(PowerLossMode::Drop);
    let mut buffer = [0u8; 4];
    let error = file.read_at(&mut buffer, 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    // With the kernel's page cache in between, a write lands there and the error comes back at
    // the next fsync, as for any file whose device went away.
    let failed = file.write_at(b"x", 0).and_then(|_| file.sync_all());
    assert_eq!(failed.unwrap_err().raw_os_error(), Some(libc::EIO));
    drop(file);
    // A new open sees the disk as after a reboot.
    assert_eq!(fs::read(mounted.path("db")).unwrap(), b"durable");
    let _ = mounted.unmount();
}

#[test]
fn with_direct_writes_an_old_handle_fails_at_the_write_itself() {
    let mounted = Mounted::with_backing(&["--direct-writes"], |backing| {
        fs::write(backing.join("db"), b"durable").unwrap();
    });
    let file = fs::OpenOptions::new()
        .write(true)
        .open(mounted.path("db"))
        .unwrap();
    mounted.power_loss(PowerLossMode::Drop);
    let error = file.write_at(b"x", 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    drop(file);
    let _ = mounted.unmount();
}

#[test]
fn sync_makes_everything_durable() {
    let mounted = Mounted::new(&[]);
    fs::create_dir_all(mounted.path("x/y")).unwrap();
    write_file(&mounted.path("x/y/z"), b"deep");
    write_file(&mounted.path("top"), b"top");
    mounted.ctl(Request::Sync);
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::read(mounted.path("x/y/z")).unwrap(), b"deep");
    assert_eq!(fs::read(mounted.path("top")).unwrap(), b"top");
    let _ = mounted.unmount();
}

#[test]
fn unmounting_loses_what_was_volatile_like_a_crash() {
    let mounted = Mounted::with_backing(&[], |backing| {
        fs::write(backing.join("db"), b"durable").unwrap();
    });
    write_at(&mounted.path("db"), 0, b"VOLATILE");
    write_file(&mounted.path("never-synced"), b"x");
    let backing = mounted.backing.clone();
    let status = mounted.ctl(Request::Status);
    assert_eq!(status["status"]["dirty_files"], 2, "{status}");
    assert_eq!(status["status"]["entries_not_durable"], 1, "{status}");
    let _kept = mounted.unmount();
    assert_eq!(fs::read(backing.join("db")).unwrap(), b"durable");
    assert!(!backing.join("never-synced").exists());
}

/// A file created in a directory, written, and renamed over a durable file elsewhere, whose
/// first directory is then synced (which records that the name left it): a power loss that
/// keeps every unsynced operation keeps the rename and the data it carried. faultfs once wrote
/// the data nowhere, because the file had no durable name at that point of the replay, and the
/// renamed file came back empty (found by `reference_model.rs`).
#[test]
fn a_file_renamed_after_its_old_directory_was_synced_keeps_its_data_in_a_keep_power_loss() {
    let mounted = Mounted::new(&[]);
    fs::create_dir(mounted.path("c")).unwrap();
    fs::create_dir(mounted.path("d")).unwrap();
    fs::write(mounted.path("c/f"), b"old").unwrap();
    for durable in ["c/f", "c", "d", ""] {
        fsync_path(&mounted.path(durable));
    }
    fs::write(mounted.path("d/g"), b"new content").unwrap();
    fs::rename(mounted.path("d/g"), mounted.path("c/f")).unwrap();
    fsync_path(&mounted.path("d"));
    mounted.power_loss(PowerLossMode::Keep);
    assert_eq!(fs::read(mounted.path("c/f")).unwrap(), b"new content");
    assert_eq!(
        fs::read(mounted.backing.join("c/f")).unwrap(),
        b"new content"
    );
    let _ = mounted.unmount();
}

/// A durable file renamed away and back, then a `keep` power loss: the file keeps its synced
/// data. faultfs once replayed the first rename by deleting the file's only durable copy (it
/// had no other live name at the time of the power loss), and the second rename brought back
/// an empty file (found by `reference_model.rs`).
#[test]
fn a_file_renamed_away_and_back_keeps_its_data_in_a_keep_power_loss() {
    let mounted = Mounted::new(&[]);
    fs::create_dir(mounted.path("a")).unwrap();
    fs::write(mounted.path("a/f"), b"synced data").unwrap();
    for durable in ["a/f", "a", ""] {
        fsync_path(&mounted.path(durable));
    }
    fs::rename(mounted.path("a/f"), mounted.path("a/g")).unwrap();
    fs::rename(mounted.path("a/g"), mounted.path("a/f")).unwrap();
    mounted.power_loss(PowerLossMode::Keep);
    assert_eq!(fs::read(mounted.path("a/f")).unwrap(), b"synced data");
    let _ = mounted.unmount();
}

/// POSIX makes a new directory's entry durable only when its parent is fsynced; an fsync of
/// the directory itself makes what is in it durable, not its own name. Under `--metadata posix`
/// (the default) a power loss takes such a directory away with everything in it; under `ext4`
/// (whose journal commits the new entry with the directory) it stays.
#[test]
fn a_new_directory_fsynced_but_not_its_parent_is_lost_under_posix_and_kept_under_ext4() {
    for (flags, kept) in [(&[][..], false), (&["--metadata", "ext4"][..], true)] {
        let mounted = Mounted::new(flags);
        fs::create_dir(mounted.path("data")).unwrap();
        write_file(&mounted.path("data/table"), b"rows");
        fsync_path(&mounted.path("data/table"));
        fsync_path(&mounted.path("data"));
        mounted.power_loss(PowerLossMode::Drop);
        assert_eq!(mounted.path("data/table").exists(), kept, "{flags:?}");
        assert_eq!(mounted.backing.join("data").exists(), kept, "{flags:?}");
        // Once the parent is synced too, it survives under both.
        fs::create_dir_all(mounted.path("data")).unwrap();
        write_file(&mounted.path("data/table"), b"rows");
        fsync_path(&mounted.path("data/table"));
        fsync_path(&mounted.path("data"));
        fsync_path(&mounted.path(""));
        mounted.power_loss(PowerLossMode::Drop);
        assert_eq!(
            fs::read(mounted.path("data/table")).unwrap(),
            b"rows",
            "{flags:?}"
        );
        let _ = mounted.unmount();
    }
}
