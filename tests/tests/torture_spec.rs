//! `torture run --target-spec FILE.toml`: a database the harness knows only from a spec file,
//! with a client program of the user's. The shipped example (Redis, one node) passes, and a
//! spec that cannot work stops the run with the reason, everything torn down. Needs root.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::Mutex,
};

use common::{assert_checks, build_tools, torture_run};

/// This file's own loopback range: runs of other test files (or a user's) never meet it.
const FIRST_IP: &str = "127.0.27.11";

/// The runs share the nodes' addresses, so one runs at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// A run of `spec` in `dir/run`; returns its output and stdout.
fn torture(dir: &Path, spec: &Path, args: &[&str]) -> (Output, String) {
    let spec = spec.to_str().unwrap();
    let args = [&["--target-spec", spec, "--nodes", "1"], args].concat();
    torture_run(&ONE_AT_A_TIME, FIRST_IP, dir, &args)
}

/// Whether anything is still mounted under `dir` (a run must unmount all it mounted).
fn mounted_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|line| line.split(' ').nth(1).is_some_and(|m| m.starts_with(&dir)))
        .map(str::to_owned)
        .collect()
}

/// Redis with `appendfsync always` promises that what it answered is on disk: on ext4's rules
/// it keeps that promise through kills, power losses and disk faults, and the checks it cannot
/// answer (no digest, no indexes, no request ids) say so rather than pass.
#[test]
fn the_redis_example_passes_and_says_what_it_cannot_check() {
    build_tools();
    let dir = tempfile::tempdir().unwrap();
    let (output, report) = torture(
        dir.path(),
        &example("redis.toml"),
        &["--seed", "1", "--duration", "8s", "--metadata", "ext4"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{report}\n{stderr}");
    assert_checks(
        &report,
        "pass",
        &[
            "linearizable",
            "no acknowledged write lost",
            "serves after a power loss of every node",
        ],
    );
    assert_checks(
        &report,
        "n/a",
        &["nodes converge to one state", "each write applied once"],
    );
    assert!(
        report
            .lines()
            .filter(|l| l.starts_with("n/a"))
            .all(|l| l.contains("not applicable: ")),
        "each n/a says why:\n{report}"
    );
    assert!(stderr.contains("power loss"), "{stderr}");
    assert!(mounted_under(dir.path()).is_empty());
}

fn spec_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("db.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_node_that_never_becomes_ready_is_named_with_its_log() {
    build_tools();
    let dir = tempfile::tempdir().unwrap();
    // It runs, but never listens.
    let spec = spec_file(
        dir.path(),
        "name = \"mute\"\nclient_port = 6399\nstart = \"sleep 600\"\nlog = \"*\"\nclient = \"cat\"\n",
    );
    let (output, _) = torture(
        dir.path(),
        &spec,
        &["--seed", "1", "--duration", "2s", "--settle", "2s"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("n1 (127.0.27.11:6399) of mute never became ready within 2 s")
            && stderr.contains("node1/mute.log"),
        "{stderr}"
    );
    assert!(mounted_under(dir.path()).is_empty(), "the mount is left");
}

#[test]
fn a_spec_or_client_program_that_makes_no_sense_stops_the_run() {
    build_tools();
    let dir = tempfile::tempdir().unwrap();
    let missing = spec_file(
        dir.path(),
        "name = \"x\"\nclient_port = 6399\nlog = \"*\"\nclient = \"cat\"\n",
    );
    let (output, _) = torture(dir.path(), &missing, &["--seed", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing field `start`"), "{stderr}");

    // A "database" that only listens, and a client program that answers every request with
    // a word instead of a JSON reply.
    let nonsense = spec_file(
        dir.path(),
        "name = \"listener\"\nclient_port = 6399\n\
         start = \"python3 -m http.server --bind {ip} 6399\"\nlog = \"*\"\n\
         client = \"sh -c 'while read line; do echo nonsense; done'\"\n",
    );
    let (output, _) = torture(
        dir.path(),
        &nonsense,
        &["--seed", "1", "--duration", "4s", "--faults", "none"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("answered")
            && stderr.contains("\"nonsense\"")
            && stderr.contains("not one JSON object a line"),
        "{stderr}"
    );
    assert!(mounted_under(dir.path()).is_empty(), "the mount is left");
}
