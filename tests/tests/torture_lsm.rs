//! The wal-write-error fault makes a node's WAL writes fail through the injector's BPF LSM
//! path, which only stock kernels allow. On a kernel that refuses LSM the run must be refused
//! before any node starts, with the way out (`cargo xtask vm-torture`); where LSM works (inside
//! `cargo xtask vm`) a short run with that fault must pass. Needs root.
mod common;

use std::process::Command;

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");

#[test]
fn wal_write_errors_run_where_the_kernel_allows_lsm_and_are_refused_up_front_elsewhere() {
    common::build_tools();
    let injector = std::path::Path::new(TORTURE).with_file_name("injector");
    let run_dir = tempfile::tempdir().unwrap();
    let output = Command::new(TORTURE)
        .args([
            "run",
            "--seed",
            "3",
            "--duration",
            "4s",
            "--faults",
            "wal-write-error",
        ])
        .arg("--run-dir")
        .arg(run_dir.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let refusal = tests::torture::lsm::refusal(&injector).unwrap();
    if refusal.is_none() {
        assert!(output.status.success(), "{stderr}");
        let history = std::fs::read_to_string(run_dir.path().join("run/history.jsonl")).unwrap();
        assert!(
            history.contains("fail with EIO"),
            "no wal-write-error fault was applied"
        );
    } else {
        assert!(!output.status.success());
        assert!(
            stderr.contains("needs BPF LSM, which this kernel refuses"),
            "{stderr}"
        );
        assert!(stderr.contains("cargo xtask vm-torture"), "{stderr}");
        assert!(
            !run_dir.path().join("run").exists(),
            "a refused run must not have started anything"
        );
    }
}
