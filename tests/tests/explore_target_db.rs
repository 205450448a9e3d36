//! `faultfs explore` on one target-db node (tests/explore/target-db-*.sh): the safe database
//! passes every crash state of a small workload, and each durability switch a crash state can
//! expose is found. (`--unsafe-ignore-fsync-error` needs a failing fsync and
//! `--unsafe-skip-checksum` a garbled sector; explore's states have neither, so the torture
//! tests cover those two.) Needs root (FUSE). Each test listens on its own loopback address.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Once,
};

static BUILD: Once = Once::new();

fn tool(name: &str) -> PathBuf {
    BUILD.call_once(common::build_tools);
    Path::new(env!("CARGO_BIN_EXE_torture"))
        .parent()
        .unwrap()
        .join(name)
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("explore")
        .join(name)
        .display()
        .to_string()
}

fn explore(address: &str, unsafe_switch: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(tool("faultfs"))
        .arg("explore")
        .arg("--keep")
        .arg(dir.path())
        .args(extra)
        .args(["--check", &format!("sh {}", script("target-db-check.sh"))])
        .args(["--", "sh", &script("target-db-workload.sh")])
        .env("DB", tool("target-db"))
        .env("ADDR", format!("{address}:7000"))
        .env("UNSAFE", unsafe_switch)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "explore itself failed: {output:?}"
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_safe_database_passes_every_crash_state() {
    let output = explore("127.0.31.11", "", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("every state passed the check"));
}

#[test]
fn a_wal_that_never_fsyncs_is_found() {
    let output = explore("127.0.31.12", "--unsafe-no-fsync", &["--max-states", "80"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("data/wal/"), "{}", stdout(&output));
}

#[test]
fn a_wal_segment_created_without_a_directory_fsync_is_found() {
    let output = explore(
        "127.0.31.13",
        "--unsafe-no-dir-fsync",
        &["--max-states", "80"],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("create data/wal/wal-"),
        "the segment's unsynced name is what is lost: {text}"
    );
}
