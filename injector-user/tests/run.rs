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

/// Runs the injector and waits up to 120 s for it (emulated VMs are slow); a hang fails the test instead of stalling
/// the suite (the child is killed).
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(INJECTOR)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("injector {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_command_that_cannot_be_executed_is_refused_even_when_write_is_trapped() {
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "not a program").unwrap();
    let cases = [
        (
            "no-such-command-anywhere".to_owned(),
            "no such command in PATH",
        ),
        (
            dir.path().join("missing").display().to_string(),
            "No such file or directory",
        ),
        (
            not_executable.display().to_string(),
            "not an executable file",
        ),
    ];
    for (command, reason) in cases {
        let output = run_bounded(&["run", "--fault", "write=count", "--", &command]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("starting {command}: {reason}")),
            "{command}: {stderr}"
        );
    }
}
