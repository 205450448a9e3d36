//! Debian packages: which the project needs, which are missing, and installing them.
use std::{process::Command, sync::Once};

use anyhow::{Result, bail};

use crate::cmd;

/// Debian's Rust 1.96 with the standard library's source, for building `core` for the BPF target.
pub const DEBIAN_RUST: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];
/// What `cargo install bpf-linker --features llvm-22` links against.
pub const BPF_LINKER_BUILD: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "libxml2-dev",
];
/// Tools the tests and the demo use at run time (sqlite3 and postgresql: the real databases
/// the faultfs tests take through power losses).
pub const RUNTIME: &[&str] = &[
    "iproute2",
    // `injector net`: its rules hand a link's packets to the NFQUEUE it holds.
    "iptables",
    "fuse3",
    "util-linux",
    "procps",
    "chromium",
    "sqlite3",
    "postgresql",
    // `torture --target etcd`, and the tests that run it.
    "etcd-server",
    // The example target spec (examples/redis.toml) and its client program.
    "redis-server",
    "python3",
];

pub fn missing(packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|package| !is_installed(package))
        .map(|package| package.to_string())
        .collect()
}

fn is_installed(package: &str) -> bool {
    cmd::probe_stdout(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.ends_with("install ok installed"))
}

/// Installs whatever of `packages` is missing; as non-root, stops with the command to run.
pub fn ensure(packages: &[&str], why: &str) -> Result<()> {
    let missing = missing(packages);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !cmd::is_root() {
        bail!(
            "missing Debian packages ({why}): {list}. Run `sudo apt-get install -y {list}` or `sudo cargo xtask setup`"
        );
    }
    eprintln!("installing Debian packages ({why}): {list}");
    refresh_package_lists()?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Package lists on a fresh machine may be stale or absent: refresh them, once per run.
pub fn refresh_package_lists() -> Result<()> {
    static REFRESHED: Once = Once::new();
    let mut result = Ok(());
    REFRESHED.call_once(|| result = cmd::run(Command::new("apt-get").args(["update", "-qq"])));
    result
}
