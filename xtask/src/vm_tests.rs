//! The injector's kernel-dependent tests inside VMs with stock Debian kernels, for what this
//! machine's kernel refuses (BPF LSM) and for the oldest kernel users run it on.
//!
//! Which tests run where: Debian 12's 6.1, the oldest supported kernel and the most different
//! from the host's, runs every kernel-facing test. Debian 13's 6.12 sits between 6.1 and the
//! host's kernel (which runs all of them but the LSM ones in the host test step), so there only
//! what the host cannot check runs: the LSM error() tests. The TCX partitions run on the host's
//! kernel, and their refusal on 6.1; the netem path of `injector net`, which the host lacks
//! too, is proven on 6.1 only. That keeps CI under 40 minutes on a machine whose emulation is
//! slow (2026-12-05: the 6.1 VM took 664 s, the 6.12 partitions alone 165 s);
//! `cargo xtask vm-tests --every-test` runs the whole set on both.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::{
    cmd::cargo,
    vm::{self, KernelChoice, VmArgs},
};

/// Test targets of injector-user that must pass in the VM: the error() tests (which, inside a
/// VM, with FAULTLINE_VM set, fail rather than check the refusal when the kernel refuses LSM)
/// and the injector's other kernel-facing tests, since users run it on stock kernels.
/// `partition` runs its cgroup_skb half everywhere; Debian's 6.1 has no TCX, so there its TCX
/// half checks the clean refusal and says it skipped. `net_netem` is `injector net` through
/// netem, which this machine's kernel lacks.
const TESTS: &[&str] = &[
    "attach_errors",
    "attach",
    "attach_paths",
    "attach_peers",
    "attach_stops",
    "count",
    "ctl",
    "run",
    "partition",
    "net_netem",
];
/// TCG emulation: a test that takes 1 s here takes 10-20 s there.
const TIMEOUT_SECONDS: u64 = 900;
/// What the 6.12 VM runs (see the module's comment).
const ONLY_WHAT_THE_HOST_CANNOT: &[&str] = &["attach_errors"];
/// One test binary; the slowest (attach, partition) take 150-200 s in the VM.
const BINARY_TIMEOUT_SECONDS: u64 = 300;

pub fn run(root: &Path, every_test: bool) -> Result<()> {
    let binaries = build(root)?;
    // One kernel after the other: each emulated guest keeps both host cores busy, so two side
    // by side take as long and time out tests that measure progress.
    for kernel in KernelChoice::DEBIANS {
        let chosen: Vec<PathBuf> = if every_test || kernel == KernelChoice::Debian61 {
            binaries.clone()
        } else {
            binaries
                .iter()
                .filter(|binary| ONLY_WHAT_THE_HOST_CANNOT.contains(&test_name(binary)))
                .cloned()
                .collect()
        };
        let outcome = run_on(root, &chosen, &kernel, true)?;
        check(&kernel, &outcome, chosen.len())?;
    }
    Ok(())
}

/// The test target a binary was built from: `attach_errors-0123abcd` is `attach_errors`.
fn test_name(binary: &Path) -> &str {
    let file = binary
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    file.rsplit_once('-').map_or(file, |(name, _hash)| name)
}

/// A VM's run passed: exit status 0, every binary a clean pass, and nothing skipped but the
/// TCX partition tests on a kernel without TCX.
fn check(kernel: &KernelChoice, outcome: &vm::Outcome, binaries: usize) -> Result<()> {
    ensure!(
        outcome.status == 0,
        "the injector's tests failed in the VM with {kernel} (exit status {})",
        outcome.status
    );
    let passed = all_passed(&outcome.console, binaries)
        .with_context(|| format!("the injector's tests in the VM with {kernel}"))?;
    let skipped: Vec<&str> = outcome
        .console
        .lines()
        .filter(|line| line.contains("SKIPPED: "))
        .collect();
    ensure!(
        skipped
            .iter()
            .all(|line| line.contains("refuses the tcx hook")),
        "tests skipped in the VM with {kernel}: {skipped:?}"
    );
    eprintln!(
        "vm tests: {kernel}: {passed} tests passed; {} of them (TCX partitions) checked the kernel's refusal instead",
        skipped.len()
    );
    Ok(())
}

/// Runs every test binary in one VM with `kernel`, echoing the console; with `stop_at_failure`
/// the first failing binary ends the run, else every binary runs.
pub fn run_on(
    root: &Path,
    binaries: &[PathBuf],
    kernel: &KernelChoice,
    stop_at_failure: bool,
) -> Result<vm::Outcome> {
    let injector = root.join("target/debug/injector");
    let mut script = vec![format!("{} probe", injector.display())];
    if stop_at_failure {
        script.insert(0, "set -e".to_owned());
    }
    for binary in binaries {
        let line = bounded(binary, BINARY_TIMEOUT_SECONDS);
        script.push(if stop_at_failure {
            line
        } else {
            // A subshell: the failure's `exit` ends only this binary's line.
            format!("( {line} ) || echo \"BINARY FAILED: {}\"", binary.display())
        });
    }
    let args = VmArgs {
        kernel: kernel.clone(),
        timeout: TIMEOUT_SECONDS,
        memory: "2G".to_owned(),
        share: None,
        env: Vec::new(),
        command: vec!["sh".into(), "-c".into(), script.join("\n")],
    };
    vm::run_again_after_emulator_fault(root, &args, &mut |line| eprintln!("[{kernel}] {line}"))
}

/// The guest's command for one test binary. A hung test (a process left stopped, say) fails
/// its binary by name after `limit_seconds`, with every process's state printed, instead of
/// silently using up the whole VM's time. --foreground: only the test binary is killed, so the
/// processes it was waiting on are still there to be listed.
fn bounded(binary: &Path, limit_seconds: u64) -> String {
    let name = binary
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "timeout --foreground -k 10 {limit_seconds} {binary} --test-threads 1 --color never || {{ \
         status=$?; \
         if [ $status -eq 124 ] || [ $status -eq 137 ]; then \
         echo \"TIMED OUT: test binary {name} ran longer than {limit_seconds} s; processes:\"; \
         ps -eo pid,ppid,stat,wchan:24,args; \
         fi; exit $status; }}",
        binary = binary.display()
    )
}

/// The test binaries, built on the host (the guest runs them from the shared tree).
pub fn build(root: &Path) -> Result<Vec<PathBuf>> {
    let mut command = cargo();
    command
        .current_dir(root)
        .args(["test", "--package", "injector-user", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"]);
    for test in TESTS {
        command.args(["--test", test]);
    }
    let output = command.output().context("building the VM test binaries")?;
    ensure!(
        output.status.success(),
        "building the VM test binaries failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["profile"]["test"] == true
            && TESTS.contains(&message["target"]["name"].as_str().unwrap_or_default());
        if let (true, Some(path)) = (is_test, message["executable"].as_str()) {
            binaries.push(PathBuf::from(path));
        }
    }
    ensure!(
        binaries.len() == TESTS.len(),
        "expected test binaries for {TESTS:?}, cargo reported {binaries:?}"
    );
    // The binaries find the injector through CARGO_BIN_EXE_*, built by the same command.
    ensure!(
        root.join("target/debug/injector").exists(),
        "no target/debug/injector"
    );
    Ok(binaries)
}

/// Every binary reported `test result: ok` with nothing ignored or filtered: a run where tests
/// were skipped must not count as a pass. Returns how many tests passed.
fn all_passed(console: &str, binaries: usize) -> Result<u64> {
    let results: Vec<&str> = console
        .lines()
        .filter(|line| line.starts_with("test result:"))
        .collect();
    ensure!(
        results.len() == binaries,
        "{binaries} test binaries ran but {} reported a result",
        results.len()
    );
    let mut passed = 0;
    for result in results {
        ensure!(
            result.starts_with("test result: ok.")
                && result.contains(" 0 failed;")
                && result.contains(" 0 ignored;")
                && result.contains(" 0 filtered out;"),
            "not a clean pass: {result}"
        );
        let count = result
            .trim_start_matches("test result: ok.")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .context("no passed count")?;
        ensure!(count > 0, "a test binary ran no tests: {result}");
        passed += count;
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_named_by_its_test_target_without_the_hash() {
        let name = test_name(Path::new("/t/debug/deps/attach_errors-01b58b8b2bb1fe59"));
        assert_eq!(name, "attach_errors");
        assert_eq!(test_name(Path::new("/t/debug/deps/attach-ab12")), "attach");
    }

    #[test]
    fn only_a_clean_pass_of_every_binary_counts() {
        let ok = "test result: ok. 6 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 5.0s";
        assert_eq!(all_passed(ok, 1).unwrap(), 6);
        let ignored = ok.replace(" 0 ignored;", " 1 ignored;");
        assert!(all_passed(&ignored, 1).is_err());
        let empty = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out;";
        assert!(all_passed(empty, 1).is_err());
        assert!(all_passed(ok, 2).is_err(), "a binary that never reported");
    }

    #[test]
    fn a_hung_test_binary_fails_by_name_and_shows_the_processes() {
        // The orphaned child comes to this process, which reaps it at the end.
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("attach_paths-0123");
        let child_pid = dir.path().join("child-pid");
        // Stands in for a test binary that never finishes, waiting on a child (a stopped target,
        // say) that outlives it; it ignores the test arguments.
        let script = format!(
            "#!/bin/sh\nsleep 61 > /dev/null 2>&1 &\necho $! > {}\nwait\n",
            child_pid.display()
        );
        std::fs::write(&binary, script).unwrap();
        std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let output = std::process::Command::new("sh")
            .args(["-c", &bounded(&binary, 1)])
            .output()
            .unwrap();
        let child: i32 = std::fs::read_to_string(&child_pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The sleep this test's script started, now a child of this process.
        let child = rustix::process::Pid::from_raw(child).expect("a child's pid is never 0");
        let _ = rustix::process::kill_process(child, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(124), "{stdout}");
        assert!(
            stdout.contains("TIMED OUT: test binary attach_paths-0123 ran longer than 1 s"),
            "{stdout}"
        );
        assert!(stdout.contains("sleep 61"), "the process table: {stdout}");
    }

    #[test]
    fn a_failing_test_binary_keeps_its_exit_status() {
        let output = std::process::Command::new("sh")
            .args(["-c", &bounded(Path::new("/bin/false"), 5)])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(!String::from_utf8_lossy(&output.stdout).contains("TIMED OUT"));
    }
}
