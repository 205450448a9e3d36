//! `injector ctl`: rules changed while attached, acknowledged after they took effect.
mod common;

use std::{os::unix::process::ExitStatusExt, process::Command, time::Duration};

use common::{INJECTOR, attached, done_count, process_state, stop, wait_until, worker};
use serde_json::Value;

fn ctl(pid: u32, args: &[&str]) -> (Option<i32>, Value, String) {
    let output = Command::new(INJECTOR)
        .args(["ctl", "--pid", &pid.to_string()])
        .args(args)
        .output()
        .unwrap();
    let answer = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (
        output.status.code(),
        answer,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn removing_a_pause_rule_continues_the_process() {
    let mut target = worker("target", &["--fsyncs", "3", "--wait-for-go"]);
    let pid = target.pid();
    let injector = attached("attach", pid, &["--fault", "fsync=pause"]);
    target.send_line("go").unwrap();
    wait_until(
        "the pause stops the target",
        Duration::from_secs(60),
        || process_state(pid) == Some('T'),
    );

    let (code, listed, stderr) = ctl(pid, &["list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(listed["rules"][0]["id"], 0);
    assert_eq!(listed["rules"][0]["faults"], 1, "{listed}");
    let (code, removed, _) = ctl(pid, &["remove", "0"]);
    assert_eq!((code, removed["removed"].as_u64()), (Some(0), Some(0)));
    // Continued, and without the rule no later fsync pauses it.
    assert_eq!(done_count(&target.read_line().unwrap()), 3);
    target.finish().unwrap();
    injector.finish().unwrap();
}

#[test]
fn a_rule_added_while_attached_fires_at_its_call() {
    let mut target = worker("target", &["--fsyncs", "5", "--wait-for-go"]);
    let pid = target.pid();
    let injector = attached("attach", pid, &["--fault", "write(fd=999)=count"]);
    let (code, added, stderr) = ctl(pid, &["add", "fsync=2*off->1*kill"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(added["id"], 1);
    let (code, _, stderr) = ctl(pid, &["remove", "7"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no rule with id 7"), "{stderr}");

    target.send_line("go").unwrap();
    let (status, _) = target.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed at the 3rd fsync"
    );
    injector.finish().unwrap();
}

#[test]
fn a_bad_rule_is_refused_and_changes_nothing() {
    let target = worker("target", &["--until-stdin-closes", "--threads", "0"]);
    let pid = target.pid();
    let injector = attached("attach", pid, &["--fault", "fsync=count"]);
    let (code, _, stderr) = ctl(pid, &["add", "fsync=error(EIO)"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("use `injector run"), "{stderr}");
    let (_, listed, _) = ctl(pid, &["list"]);
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1, "{listed}");
    stop(injector);
    drop(target);
}

#[test]
fn a_control_client_that_says_nothing_does_not_hold_up_another() {
    let target = worker("target", &["--until-stdin-closes", "--threads", "0"]);
    let pid = target.pid();
    let injector = attached("attach", pid, &["--fault", "fsync=count"]);
    let socket = format!("/run/faultline-injector/{pid}.sock");
    let idle = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let (answered, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = answered.send(ctl(pid, &["list"]));
    });
    // A bound, not a pause: the list answers in milliseconds unless it waits behind the idle
    // client, which would be for good.
    let (code, listed, stderr) = answer
        .recv_timeout(Duration::from_secs(5))
        .expect("ctl list waited behind a client that said nothing");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1, "{listed}");
    drop(idle);
    stop(injector);
    drop(target);
}
