//! Owners and modes on the disk: what a user creates is theirs on the disk, and a chown or
//! chmod made durable by fsync survives a power loss, as on a real file system. Real mounts,
//! run as root; the user is played with setpriv.
mod common;

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::Command,
};

use common::{Mounted, fsync_path};
use faultfs::power_loss::PowerLossMode;

const USER: u32 = 4321;

#[test]
fn a_chown_and_chmod_made_durable_by_fsync_survive_a_power_loss() {
    let mounted = Mounted::new(&[]);
    let db = mounted.path("postgresql.conf");
    fs::write(&db, b"port = 5432").unwrap();
    fsync_path(&db);
    fsync_path(&mounted.path(""));
    std::os::unix::fs::chown(&db, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
    fsync_path(&db);
    // Not made durable: lost with the power.
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    mounted.power_loss(PowerLossMode::Drop);
    for meta in [
        fs::metadata(mounted.backing.join("postgresql.conf")).unwrap(),
        fs::metadata(&db).unwrap(),
    ] {
        assert_eq!((meta.uid(), meta.gid()), (USER, USER));
        assert_eq!(meta.mode() & 0o7777, 0o600);
    }
    let _ = mounted.unmount();
}

/// A user's file with the setuid bit is setuid to that user on the disk, never to root: the
/// backing directory has no nosuid mount to protect it.
#[test]
fn a_users_setuid_file_is_never_root_owned_on_the_disk() {
    let mounted = Mounted::new(&[]);
    let public = mounted.path("pub");
    fs::create_dir(&public).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o1777)).unwrap();
    let mine = public.join("mine");
    let status = Command::new("setpriv")
        .args(["--reuid", &USER.to_string(), "--regid", &USER.to_string()])
        .args(["--clear-groups", "sh", "-c"])
        .arg(format!("echo data > {0} && chmod 4755 {0}", mine.display()))
        .status()
        .unwrap();
    assert!(status.success());
    mounted.ctl(faultfs::control::Request::Sync);
    let on_disk = fs::metadata(mounted.backing.join("pub/mine")).unwrap();
    assert_eq!((on_disk.uid(), on_disk.gid()), (USER, USER));
    assert_eq!(on_disk.mode() & 0o7777, 0o4755);
    let _ = mounted.unmount();
}

/// The same for a directory (a database's data directory handed to its user, `chmod 700`):
/// the directory's own fsync makes its owner and mode durable. faultfs once made only its
/// entries durable there, and the directory came back root-owned (found by
/// `reference_model.rs`).
#[test]
fn a_directorys_chown_and_chmod_survive_a_power_loss_once_it_is_fsynced() {
    let mounted = Mounted::new(&[]);
    let data = mounted.path("data");
    fs::create_dir(&data).unwrap();
    fsync_path(&mounted.path(""));
    std::os::unix::fs::chown(&data, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    fsync_path(&data);
    mounted.power_loss(PowerLossMode::Drop);
    for meta in [
        fs::metadata(mounted.backing.join("data")).unwrap(),
        fs::metadata(&data).unwrap(),
    ] {
        assert_eq!((meta.uid(), meta.gid()), (USER, USER));
        assert_eq!(meta.mode() & 0o7777, 0o700);
    }
    let _ = mounted.unmount();
}

/// A power loss in `keep` mode keeps every unsynced change, a chmod and a chown too.
#[test]
fn a_keep_power_loss_keeps_an_unsynced_chmod_and_chown() {
    let mounted = Mounted::new(&[]);
    let file = mounted.path("f");
    fs::write(&file, b"x").unwrap();
    fsync_path(&file);
    fsync_path(&mounted.path(""));
    std::os::unix::fs::chown(&file, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    mounted.power_loss(PowerLossMode::Keep);
    let meta = fs::metadata(mounted.backing.join("f")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (USER, USER, 0o640)
    );
    let _ = mounted.unmount();
}
