//! `cargo xtask torture [ARGS]`: builds everything a torture run needs (release), then runs
//! `torture run ARGS` with the tools next to it; `cargo xtask torture merge DIR...` merges the
//! results of sharded runs.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, ensure};

use crate::{ci::cargo, cmd, ebpf, kernel_fs};

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    // `cargo xtask torture merge DIR...` merges the results of sharded jobs: no cluster.
    if args.first().is_some_and(|a| a == "merge") {
        let status = Command::new(build_torture(root)?).args(args).status()?;
        ensure!(
            status.success(),
            "the merged runs did not all pass ({status})"
        );
        return Ok(());
    }
    ensure!(
        cmd::is_root(),
        "a torture run mounts file systems and loads eBPF: run it as root"
    );
    build_tools(root)?;
    kernel_fs::ensure()?;
    let status = Command::new(root.join("target/release/torture"))
        .arg("run")
        .args(args)
        .status()?;
    ensure!(status.success(), "the torture run did not pass ({status})");
    Ok(())
}

/// The release binaries of every tool a cluster run uses (eBPF object first: the injector
/// embeds it), next to each other in target/release.
pub fn build_tools(root: &Path) -> Result<()> {
    ebpf::build(root)?;
    cmd::run(cargo().current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "target-db",
        "--package",
        "faultfs",
        "--package",
        "injector-user",
        "--package",
        "tests",
        "--bins",
    ]))
}

/// The release torture binary alone, for what needs no cluster (merging, checker benches).
pub fn build_torture(root: &Path) -> Result<PathBuf> {
    cmd::run(cargo().current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "tests",
        "--bin",
        "torture",
    ]))?;
    Ok(root.join("target/release/torture"))
}
