//! `injector run`: the seccomp supervisor fails exactly the calls the rules name.
mod common;

use std::process::{Command, Output};

use common::{INJECTOR, WORKER};

fn run(rules: &[&str], worker_args: &[&str]) -> Output {
    let mut command = Command::new(INJECTOR);
    command.arg("run");
    for rule in rules {
        command.args(["--fault", rule]);
    }
    command
        .arg("--")
        .arg(WORKER)
        .args(worker_args)
        .output()
        .unwrap()
}

fn results(output: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("fsync_results "))
        .unwrap_or_else(|| panic!("no results in {stdout}"))
        .split(' ')
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_second_fsync_fails_with_eio_and_the_others_succeed() {
    let output = run(
        &["fsync=1*off->1*error(EIO)"],
        &["--fsyncs", "4", "--report-results"],
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(results(&output), ["ok", "EIO", "ok", "ok"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("fault: error(EIO) at fsync call #2"),
        "{stderr}"
    );
}

#[test]
fn counting_is_exact_across_threads() {
    let output = run(
        &["fsync=7*off->1*error(ENOSPC)->off"],
        &["--threads", "4", "--fsyncs", "5", "--report-results"],
    );
    let results = results(&output);
    assert_eq!(results.len(), 20);
    assert_eq!(
        results.iter().filter(|r| *r == "ENOSPC").count(),
        1,
        "{results:?}"
    );
}

#[test]
fn a_path_filter_matches_the_file_behind_the_fd() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal-000001");
    let data = dir.path().join("data");
    let rule = r#"fsync(path="**/wal-*")=error(EIO)"#;
    let on_wal = run(
        &[rule],
        &[
            "--fsyncs",
            "2",
            "--report-results",
            "--file",
            wal.to_str().unwrap(),
        ],
    );
    assert_eq!(results(&on_wal), ["EIO", "EIO"]);
    let on_data = run(
        &[rule],
        &[
            "--fsyncs",
            "2",
            "--report-results",
            "--file",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(results(&on_data), ["ok", "ok"]);
}

#[test]
fn the_commands_exit_code_is_passed_on_and_bad_rules_exit_2() {
    let output = Command::new(INJECTOR)
        .args(["run", "--fault", "fsync=count", "--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    let output = Command::new(INJECTOR)
        .args(["run", "--fault", "fsync=signal(SIGTERM)", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("injector run cannot carry out `signal`"),
        "{stderr}"
    );
}
