//! `faultfs mount` ends on SIGTERM, SIGINT or SIGHUP and leaves no mount behind, also when a
//! program still has files open in it (a terminal closed, or a supervisor stopping a whole
//! process group, signals the database and faultfs at the same moment).
mod common;

use std::{fs, io::Write, time::Duration};

use common::Mounted;

#[test]
fn a_termination_signal_unmounts_an_idle_mount_and_faultfs_exits_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mut mounted = Mounted::new(&[]);
        mounted.signal(signal);
        common::wait_until("faultfs exits", Duration::from_secs(10), || {
            mounted.exited().is_some()
        });
        assert!(!mounted.is_mounted(), "signal {signal} left the mount");
    }
}

#[test]
fn a_mount_still_in_use_is_detached_and_faultfs_exits_when_the_last_file_closes() {
    let mut mounted = Mounted::new(&[]);
    let mut file = common::write_file(&mounted.path("db"), b"open while faultfs is told to stop");
    mounted.signal(libc::SIGTERM);
    common::wait_until(
        "the busy mount leaves the file tree",
        Duration::from_secs(10),
        || !mounted.is_mounted(),
    );
    // Detached, not gone: the program that had the file open goes on using it.
    assert!(
        mounted.exited().is_none(),
        "faultfs quit while a file was open in it"
    );
    file.write_all(b", and still written").unwrap();
    drop(file);
    common::wait_until("faultfs exits", Duration::from_secs(10), || {
        mounted.exited().is_some()
    });
}

/// faultfs killed with SIGKILL cannot remove its store of volatile content (in /dev/shm): the
/// next mount finds it by the dead owner's pid and start time and removes it.
#[test]
fn the_store_of_a_killed_faultfs_is_removed_by_the_next_mount() {
    let mut killed = Mounted::new(&[]);
    fs::write(killed.path("unsynced"), vec![7u8; 1 << 20]).unwrap();
    let prefix = format!("faultfs-store-{}-", killed.pid());
    let store = fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .expect("the mount's store, named after its pid")
        .path();
    killed.signal(libc::SIGKILL);
    common::wait_until("faultfs died", Duration::from_secs(10), || {
        killed.exited().is_some()
    });
    assert!(store.exists(), "nothing removed it yet");
    let next = Mounted::new(&[]);
    assert!(!store.exists(), "{} left behind", store.display());
    let _ = next.unmount();
    drop(killed);
}
