//! A child bound with `killed_with_this_thread` dies when the thread that spawned it ends,
//! without any guard running: what keeps a qemu VM from outliving a killed `cargo xtask vm`.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use process_guard::killed_with_this_thread;

/// The state letter of `/proc/PID/stat` (Z once dead and not yet reaped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.chars().next().unwrap()
}

#[test]
fn the_child_dies_when_its_spawning_thread_ends() {
    let spawner = std::thread::spawn(|| {
        let mut command = Command::new("sleep");
        command.arg("600").stdin(Stdio::null());
        killed_with_this_thread(&mut command).spawn().unwrap()
    });
    let mut child = spawner.join().unwrap();
    let pid = child.id();
    // The kernel sends the signal as the thread exits; the child may take a moment to die.
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(pid) != 'Z' && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if state(pid) != 'Z' {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("the child outlived its spawning thread by 10 s");
    }
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the child outlived its spawning thread: {status}"
    );
}
