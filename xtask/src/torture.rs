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
    ]))?;
    kernel_fs::ensure()?;
    let status = Command::new(root.join("target/release/torture"))
        .arg("run")
        .args(args)
        .status()?;
    ensure!(status.success(), "the torture run did not pass ({status})");
    Ok(())
}
