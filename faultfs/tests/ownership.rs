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
