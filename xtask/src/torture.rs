//! `cargo xtask torture [ARGS]`: builds everything a torture run needs (release), then runs
//! `torture run ARGS` with the tools next to it; `cargo xtask torture merge DIR...` merges the
//! results of sharded runs.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, ensure};

use crate::{
    cmd::{self, cargo},
    ebpf, kernel_fs,
};

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
    if wants_etcd(args) {
        crate::packages::ensure(&["etcd-server"], "torturing etcd (--target etcd)")?;
    }
    crate::packages::ensure(
        &["iptables"],
        "the slow and flaky network faults (injector net)",
    )?;
    build_tools(root)?;
    kernel_fs::ensure()?;
    let status = Command::new(root.join("target/release/torture"))
        .arg("run")
        .args(args)
        .status()?;
    ensure!(status.success(), "the torture run did not pass ({status})");
    Ok(())
}

/// Whether the run's arguments pick etcd as the target (`--target etcd` or `--target=etcd`).
fn wants_etcd(args: &[String]) -> bool {
    args.iter()
        .zip(args.iter().skip(1).chain(std::iter::once(&String::new())))
        .any(|(arg, next)| arg == "--target=etcd" || (arg == "--target" && next == "etcd"))
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

#[cfg(test)]
mod tests {
    use super::wants_etcd;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn etcd_is_installed_only_for_a_run_that_targets_it() {
        assert!(wants_etcd(&args("--seed 1 --target etcd")));
        assert!(wants_etcd(&args("--target=etcd --seed 1")));
        assert!(!wants_etcd(&args("--seed 1 --target target-db")));
        assert!(!wants_etcd(&args("--seed 1 --target")));
        assert!(!wants_etcd(&args("--db-flag=etcd --seed 1")));
    }
}
