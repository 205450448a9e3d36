//! `cargo xtask setup`: installs every system package and tool the build and the tests need.
use anyhow::Result;

use crate::{packages, toolchain};

pub fn run() -> Result<()> {
    let toolchain = toolchain::ensure()?;
    packages::ensure(packages::RUNTIME, "tools the tests use")?;
    packages::ensure(crate::vm::PACKAGES, "running the VM tests")?;
    eprintln!(
        "set-up complete: eBPF toolchain = {}, bpf-linker {}",
        toolchain.describe(),
        toolchain::BPF_LINKER_VERSION
    );
    Ok(())
}
