//! delay and pause on processes other than the attached pid (`--follow-forks`, `--cgroup`): each
//! stopped process is continued on time, when its pause rule goes, and by the guard when the
//! injector is killed.
mod common;

use std::{process::Command, time::Duration};

use common::{INJECTOR, TestCgroup, done_count, process_state, stop, wait_until, worker};
use process_guard::Spawned;
use rustix::process::Signal;
use serde_json::Value;

/// `injector attach --json --cgroup PATH --fault RULE`, returned once attached.
fn attached_to_cgroup(cgroup: &TestCgroup, rule: &str) -> Spawned {
    let mut injector = Spawned::start(
        "injector",
        Command::new(INJECTOR)
            .args(["attach", "--json", "--cgroup"])
            .arg(&cgroup.0)
            .args(["--fault", rule]),
    )
    .unwrap();
    let line: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    assert_eq!(line["event"], "attached", "{line}");
    injector
}

/// Two workers making 4 fsyncs each, in `cgroup`, both paused at their first fsync.
fn two_paused_workers(cgroup: &TestCgroup) -> (Spawned, Spawned, Spawned) {
    let mut first = worker("first", &["--fsyncs", "4", "--wait-for-go"]);
    let mut second = worker("second", &["--fsyncs", "4", "--wait-for-go"]);
    cgroup.add(first.pid());
    cgroup.add(second.pid());
    let injector = attached_to_cgroup(cgroup, "fsync=pause");
    first.send_line("go").unwrap();
    second.send_line("go").unwrap();
    for pid in [first.pid(), second.pid()] {
        wait_until(
            &format!("the pause stops pid {pid}"),
            Duration::from_secs(60),
            || process_state(pid) == Some('T'),
        );
    }
    (injector, first, second)
}

fn both_finish_all_four_fsyncs(mut first: Spawned, mut second: Spawned) {
    assert_eq!(done_count(&first.read_line().unwrap()), 4);
    assert_eq!(done_count(&second.read_line().unwrap()), 4);
    first.finish().unwrap();
    second.finish().unwrap();
}

#[test]
fn killing_the_injector_continues_every_process_of_the_cgroup_it_paused() {
    let cgroup = TestCgroup::new("guard");
    let (injector, first, second) = two_paused_workers(&cgroup);
    common::signal(injector.pid(), Signal::KILL);
    // Only the guard can continue them now; had the programs stayed attached, their next
    // fsync would stop them again.
    both_finish_all_four_fsyncs(first, second);
    drop(injector);
}

#[test]
fn removing_a_pause_continues_every_process_it_holds() {
    let cgroup = TestCgroup::new("unpause");
    let (injector, first, second) = two_paused_workers(&cgroup);
    let removed = Command::new(INJECTOR)
        .args(["ctl", "--cgroup"])
        .arg(&cgroup.0)
        .args(["remove", "0"])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");
    both_finish_all_four_fsyncs(first, second);
    stop(injector);
}

#[test]
fn follow_forks_delays_a_child_for_as_long_as_the_rule_says() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "echo ready; read go; {} --fsyncs 3 --time-fsyncs --file {}/data; echo child-exit $?",
        common::WORKER,
        dir.path().display()
    );
    let mut shell = Spawned::start("shell", Command::new("sh").args(["-c", &script])).unwrap();
    assert_eq!(shell.read_line().unwrap(), "ready");
    let injector = common::attached(
        "attach",
        shell.pid(),
        &["--follow-forks", "--fault", "fsync=2*off->1*delay(200)"],
    );
    shell.send_line("go").unwrap();
    let timings = loop {
        let line = shell.read_line().unwrap();
        if let Some(timings) = line.strip_prefix("fsync_us ") {
            break timings.to_owned();
        }
    };
    let stalls_ms: Vec<f64> = timings
        .split(' ')
        .map(|us| us.parse::<f64>().unwrap() / 1000.0)
        .collect();
    assert_eq!(stalls_ms.len(), 3, "{timings}");
    assert!(
        (200.0..400.0).contains(&stalls_ms[2]),
        "the third fsync stalled {} ms",
        stalls_ms[2]
    );
    assert!(stalls_ms[..2].iter().all(|&ms| ms < 200.0), "{timings}");
    assert_eq!(shell.read_line().unwrap(), "done 3");
    assert_eq!(shell.read_line().unwrap(), "child-exit 0");
    shell.finish().unwrap();
    injector.finish().unwrap();
}
