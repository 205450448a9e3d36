//! Bad input: a clear error naming the problem and the fix, and nothing half-mounted.
mod common;

use std::{fs, path::Path, process::Command};

use common::{FAULTFS, Mounted};
use rustix::{
    event::{PollFd, PollFlags, Timespec, poll},
    process::{Pid, PidfdFlags, pidfd_open},
};

fn mount_fails(backing: &Path, mountpoint: &Path, extra: &[&str]) -> String {
    let output = Command::new(FAULTFS)
        .arg("mount")
        .arg(backing)
        .arg(mountpoint)
        .args(extra)
        .output()
        .unwrap();
    assert!(!output.status.success(), "mount should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn not_mounted(path: &Path) -> bool {
    faultfs::mount::mounted_at(&path.canonicalize().unwrap()).is_none()
}

#[test]
fn an_unknown_rule_is_refused_before_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let (backing, mountpoint) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mountpoint).unwrap();
    let stderr = mount_fails(&backing, &mountpoint, &["--fault", "fsync=bogus"]);
    assert!(
        stderr.contains("unknown action `bogus`; actions are: off, error(ERRNO)"),
        "{stderr}"
    );
    let stderr = mount_fails(&backing, &mountpoint, &["--fault", "sendmsg=error(EIO)"]);
    assert!(
        stderr.contains("faultfs cannot fault `sendmsg`"),
        "{stderr}"
    );
    assert!(not_mounted(&mountpoint));
}

#[test]
fn a_missing_backing_directory_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("m");
    fs::create_dir(&mountpoint).unwrap();
    let stderr = mount_fails(&dir.path().join("nope"), &mountpoint, &[]);
    assert!(
        stderr.contains("does not exist: create it first (mkdir -p"),
        "{stderr}"
    );
    assert!(not_mounted(&mountpoint));
}

#[test]
fn a_mountpoint_in_use_and_a_backing_in_use_are_refused() {
    let mounted = Mounted::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (other_backing, other_mountpoint) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&other_backing).unwrap();
    fs::create_dir(&other_mountpoint).unwrap();

    let stderr = mount_fails(&other_backing, &mounted.mountpoint, &[]);
    assert!(
        stderr.contains("is already a mount point (fuse"),
        "{stderr}"
    );
    assert!(stderr.contains("unmount it first"), "{stderr}");
    let stderr = mount_fails(&mounted.backing, &other_mountpoint, &[]);
    assert!(
        stderr.contains("is already served by another faultfs"),
        "{stderr}"
    );
    assert!(not_mounted(&other_mountpoint));
    let stderr = mount_fails(&mounted.backing, &mounted.backing.join("inside"), &[]);
    assert!(
        stderr.contains("does not exist") || stderr.contains("overlap"),
        "{stderr}"
    );
    let _ = mounted.unmount();
}

#[test]
fn ctl_without_a_mount_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(FAULTFS)
        .arg("ctl")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no faultfs is serving"), "{stderr}");
    assert!(stderr.contains("faultfs mount BACKING"), "{stderr}");
}

#[test]
fn the_daemon_mode_prints_its_pid_and_unmounts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (backing, mountpoint) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mountpoint).unwrap();
    let output = Command::new(FAULTFS)
        .arg("mount")
        .arg(&backing)
        .arg(&mountpoint)
        .arg("--daemon")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let pid: i32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(!not_mounted(&mountpoint));
    let status = Command::new(FAULTFS)
        .arg("umount")
        .arg(&mountpoint)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(not_mounted(&mountpoint));
    // The daemon exits by itself once unmounted; it is our child's child, so poll its pidfd.
    // (If it is already gone, there is no pid to open.)
    let daemon = Pid::from_raw(pid).expect("a daemon's pid is never 0");
    if let Ok(pidfd) = pidfd_open(daemon, PidfdFlags::empty()) {
        let within = Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        let ready = poll(&mut [PollFd::new(&pidfd, PollFlags::IN)], Some(&within));
        assert_eq!(ready, Ok(1), "the daemon did not exit after unmount");
    }
}

#[test]
fn a_capacity_beyond_64_bits_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let (backing, mountpoint) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mountpoint).unwrap();
    let stderr = mount_fails(&backing, &mountpoint, &["--capacity", "99999999999T"]);
    assert!(
        stderr.contains("`99999999999T` is more bytes than fit in 64 bits"),
        "{stderr}"
    );
    assert!(not_mounted(&mountpoint));
    let mounted = Mounted::new(&[]);
    let output = Command::new(FAULTFS)
        .args(["ctl"])
        .arg(&mounted.mountpoint)
        .args(["capacity", "20000000T"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("more bytes than fit in 64 bits"),
        "{stderr}"
    );
    let _ = mounted.unmount();
}
