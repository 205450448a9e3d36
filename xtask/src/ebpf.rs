//! `cargo xtask build-ebpf`: compiles `injector-ebpf` where `injector-user` embeds it from.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::{cmd, toolchain};

/// Must match `OBJECT` in injector-user/build.rs, which embeds this file.
pub const OBJECT: &str = "target/ebpf/bpfel-unknown-none/release/injector-ebpf";

/// Builds the eBPF object and returns its path. Cargo's own fingerprints make a second build
/// with unchanged sources a no-op that leaves the object (and so the user crate) untouched.
pub fn build(root: &Path) -> Result<PathBuf> {
    let toolchain = toolchain::ensure()?;
    eprintln!("building injector-ebpf with {}", toolchain.describe());
    cmd::run(
        toolchain
            .cargo()
            .current_dir(root.join("injector-ebpf"))
            .args(["build", "--release", "--target-dir"])
            .arg(root.join("target/ebpf")),
    )?;
    let object = root.join(OBJECT);
    let size = std::fs::metadata(&object)?.len();
    eprintln!("eBPF object: {} ({size} bytes)", object.display());
    Ok(object)
}

/// `cargo fmt --check` for the eBPF crate, which is outside the host workspace.
pub fn fmt_check(root: &Path) -> Result<()> {
    cmd::run(
        Command::new("cargo")
            .args(["fmt", "--check", "--manifest-path"])
            .arg(root.join("injector-ebpf/Cargo.toml")),
    )
}
