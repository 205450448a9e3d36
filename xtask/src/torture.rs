//! `cargo xtask torture [ARGS]`: builds everything a torture run needs (release), then runs
//! `torture run ARGS` with the tools next to it.
use std::{path::Path, process::Command};

use anyhow::{Result, ensure};

use crate::{ci::cargo, cmd, ebpf, kernel_fs};

pub fn run(root: &Path, args: &[String]) -> Result<()> {
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
