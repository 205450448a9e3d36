//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.
use std::{path::Path, time::Instant};

use anyhow::{Context, Result, ensure};

use crate::{
    cmd::{self, cargo},
    ebpf, kernel_fs, mutants, setup, vm_tests, vm_torture,
};

pub fn run(root: &Path, vm_torture: bool) -> Result<()> {
    let started = Instant::now();
    step("set-up", setup::run)?;
    step("format", || {
        cmd::run(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
        ebpf::fmt_check(root)
    })?;
    step("eBPF build", || build_ebpf_twice(root))?;
    step("clippy", || {
        cmd::run(cargo().current_dir(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("planted bugs apply (tests/mutants)", || {
        mutants::check_all(root)
    })?;
    step("kernel file systems", kernel_fs::ensure)?;
    step("tests", || {
        cmd::run(
            cargo()
                .current_dir(root)
                .env("RUST_BACKTRACE", "1")
                .args(["test", "--workspace"]),
        )
    })?;
    step("injector tests in VMs (stock Debian kernels)", || {
        vm_tests::run(root, false)
    })?;
    if vm_torture {
        // A fixed seed: CI checks that this exact run still passes; `cargo xtask vm-torture`
        // without --seed explores.
        step("torture run in a VM (wal-write-error)", || {
            vm_torture::run(root, &["--seed".to_owned(), "5".to_owned()])
        })?;
    }
    eprintln!(
        "ci: all steps passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The second build must be a no-op: if it rewrote the object, every `cargo build` of the user
/// crate would redo work, and a build-ebpf step in a loop would never settle.
fn build_ebpf_twice(root: &Path) -> Result<()> {
    let object = ebpf::build(root)?;
    let first = std::fs::metadata(&object)?.modified()?;
    ebpf::build(root)?;
    let second = std::fs::metadata(&object)?.modified()?;
    ensure!(
        first == second,
        "a second `cargo xtask build-ebpf` with unchanged sources rewrote {}",
        object.display()
    );
    Ok(())
}

fn step(name: &str, body: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("==> {name}");
    let started = Instant::now();
    body().with_context(|| format!("ci step `{name}` failed"))?;
    eprintln!("==> {name}: ok ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
