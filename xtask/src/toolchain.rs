//! Finding (or installing) a Rust toolchain that can build `core` for `bpfel-unknown-none`, and
//! the bpf-linker that links the result.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use crate::{cmd, packages};

pub const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// A toolchain able to compile the eBPF crate. Both need `rust-src`, because `core` is built
/// from source for the BPF target.
#[derive(Clone, Debug)]
pub enum EbpfToolchain {
    /// `cargo +nightly` from rustup, with the rust-src component.
    RustupNightly,
    /// Debian's `rustc-web`/`cargo-web` + `rust-web-src`, unlocked with RUSTC_BOOTSTRAP=1.
    Debian { cargo: PathBuf, rustc: PathBuf },
}

impl EbpfToolchain {
    /// A `cargo` command for this toolchain, scrubbed of the variables the outer `cargo xtask`
    /// set, which would otherwise point the inner build at the host toolchain.
    pub fn cargo(&self) -> Command {
        let mut command = match self {
            EbpfToolchain::RustupNightly => {
                let mut command = Command::new("cargo");
                command.arg("+nightly");
                command
            }
            EbpfToolchain::Debian { cargo, rustc } => {
                let mut command = Command::new(cargo);
                command.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
                command
            }
        };
        for var in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            command.env_remove(var);
        }
        if matches!(self, EbpfToolchain::RustupNightly) {
            command.env_remove("RUSTC");
        }
        command
    }

    pub fn describe(&self) -> String {
        match self {
            EbpfToolchain::RustupNightly => "rustup nightly with rust-src".into(),
            EbpfToolchain::Debian { rustc, .. } => {
                let version = cmd::probe_stdout(Command::new(rustc).arg("--version"))
                    .unwrap_or_else(|| "unknown version".into());
                format!("Debian {version} + rust-web-src (RUSTC_BOOTSTRAP=1)")
            }
        }
    }
}

/// The first usable toolchain, preferring rustup nightly (the aya project's usual path).
pub fn detect() -> Option<EbpfToolchain> {
    if let Some(sysroot) = cmd::probe_stdout(
        Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]),
    ) && has_rust_src(Path::new(&sysroot))
    {
        return Some(EbpfToolchain::RustupNightly);
    }
    let rustc = PathBuf::from("/usr/bin/rustc");
    let cargo = PathBuf::from("/usr/bin/cargo");
    if rustc.exists() && cargo.exists() && has_rust_src(Path::new("/usr")) {
        return Some(EbpfToolchain::Debian { cargo, rustc });
    }
    None
}

fn has_rust_src(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

/// Finds a toolchain and bpf-linker, installing what is missing (as root), or stops with a
/// one-line error that says what to run.
pub fn ensure() -> Result<EbpfToolchain> {
    let toolchain = match detect() {
        Some(toolchain) => toolchain,
        None => {
            packages::ensure(
                packages::DEBIAN_RUST,
                "a Rust toolchain with rust-src for the BPF target",
            )?;
            let Some(toolchain) = detect() else {
                bail!(
                    "no Rust toolchain with rust-src found even after installing {}: \
                     check that /usr/lib/rustlib/src/rust/library exists",
                    packages::DEBIAN_RUST.join(" ")
                );
            };
            toolchain
        }
    };
    ensure_bpf_linker()?;
    Ok(toolchain)
}

fn bpf_linker_version() -> Option<String> {
    cmd::probe_stdout(Command::new("bpf-linker").arg("--version"))
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_version().is_some_and(|v| v.ends_with(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    packages::ensure(packages::BPF_LINKER_BUILD, "building bpf-linker")?;
    eprintln!("installing bpf-linker {BPF_LINKER_VERSION} (about 2 minutes, once)");
    cmd::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .args(["install", "--locked", "bpf-linker", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args(["--no-default-features", "--features", "llvm-22"]),
    )?;
    match bpf_linker_version() {
        Some(version) if version.ends_with(BPF_LINKER_VERSION) => Ok(()),
        _ => bail!(
            "bpf-linker was installed but `bpf-linker --version` does not report {BPF_LINKER_VERSION}: \
             put ~/.cargo/bin on PATH (export PATH=\"$HOME/.cargo/bin:$PATH\")"
        ),
    }
}
