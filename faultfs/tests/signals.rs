//! `faultfs mount` ends on SIGTERM, SIGINT or SIGHUP and leaves no mount behind, also when a
//! program still has files open in it (a terminal closed, or a supervisor stopping a whole
//! process group, signals the database and faultfs at the same moment).
mod common;

use std::{io::Write, time::Duration};

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
