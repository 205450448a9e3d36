//! `cargo xtask vm`: runs a command inside a qemu VM booted with a stock Debian kernel, for what
//! the CI machines' kernel refuses (BPF LSM, fmod_ret, fentry). The guest sees the host's tree
//! read-only under a throw-away overlay, so host-built binaries run unchanged.
mod cpio;
mod initramfs;
mod kernel;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use clap::Args;

pub use kernel::KernelChoice;

use crate::{cmd, packages};

/// Debian packages a VM run needs on the host.
pub const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "xz-utils", "zstd"];

/// Environment variables the command inherits from the host.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "CARGO_TERM_COLOR",
];

#[derive(Args)]
pub struct VmArgs {
    /// debian-6.1, debian-6.12, or a Debian linux-image .deb (or the directory it was unpacked
    /// into). Debian kernels are downloaded from the package registry once and cached in
    /// target/vm.
    #[arg(long, default_value = "debian-6.12")]
    pub kernel: KernelChoice,
    /// Stop the VM after this many seconds (TCG emulation: expect programs to run 5-20x slower).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Guest memory, in qemu's syntax.
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// A host directory the guest can write (mounted at the same path); files the command puts
    /// there stay on the host. Also in the guest's FAULTLINE_VM_SHARE. Default: a temporary one.
    #[arg(long)]
    pub share: Option<PathBuf>,
    /// Extra environment for the command, KEY=VALUE (PATH, HOME, RUST_LOG and RUST_BACKTRACE
    /// are passed already).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The command and its arguments, run as root in the host's current directory.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// What a finished VM run reports.
pub struct Outcome {
    pub status: i32,
    pub console: String,
}

/// The CLI: the command's output streams to stderr; the exit status is the command's.
pub fn cli(root: &Path, args: &VmArgs) -> Result<i32> {
    let outcome = run(root, args, &mut |line| eprintln!("{line}"))?;
    Ok(outcome.status)
}

pub fn run(root: &Path, args: &VmArgs, echo: &mut dyn FnMut(&str)) -> Result<Outcome> {
    ensure!(
        cmd::is_root(),
        "`cargo xtask vm` downloads packages and shares the host's / with the guest: run it as root"
    );
    packages::ensure(PACKAGES, "running VMs")?;
    let cache = root.join("target/vm");
    fs::create_dir_all(&cache)?;
    let kernel = kernel::prepare(&cache, &args.kernel)
        .with_context(|| format!("preparing kernel {}", args.kernel))?;
    let initramfs = kernel.cache.join("faultline-initramfs.cpio");
    initramfs::build(&kernel.modules, &initramfs)?;

    let temporary;
    let share = match &args.share {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            fs::canonicalize(dir)?
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("share-")
                .tempdir_in(&cache)?;
            temporary.path().to_path_buf()
        }
    };
    let cwd = std::env::current_dir()?;
    fs::write(
        share.join("run.sh"),
        script(&cwd, &share, &args.kernel, &args.env, &args.command),
    )?;
    eprintln!(
        "vm: booting {} ({}) for: {}",
        args.kernel,
        kernel.image.display(),
        args.command.join(" ")
    );
    let boot = qemu::Boot {
        image: &kernel.image,
        initramfs: &initramfs,
        share: &share,
        memory: &args.memory,
        timeout: Duration::from_secs(args.timeout),
    };
    let finished = qemu::boot(&boot, echo)?;
    eprintln!(
        "vm: {} exited with status {} after {:.1} s",
        args.kernel,
        finished.status,
        finished.elapsed.as_secs_f64()
    );
    Ok(Outcome {
        status: finished.status,
        console: finished.console,
    })
}

/// As `run`, for CI's test steps: a guest that died of the emulator's code-patching flaw (see
/// qemu::EmulatorFault) is booted once more, and the log says so. Its tests start over from
/// the first, so nothing a test checks is skipped.
pub fn run_again_after_emulator_fault(
    root: &Path,
    args: &VmArgs,
    echo: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    match run(root, args, echo) {
        Err(error) if error.downcast_ref::<qemu::EmulatorFault>().is_some() => {
            eprintln!("vm: {error:#}; booting {} once more", args.kernel);
            run(root, args, echo)
        }
        other => other,
    }
}

/// The guest's shell script: the host's working directory and environment, then the command.
fn script(
    cwd: &Path,
    share: &Path,
    kernel: &KernelChoice,
    env: &[String],
    command: &[String],
) -> String {
    let mut lines = vec![
        "# written by cargo xtask vm".to_owned(),
        format!("cd {} || exit 125", quote(&cwd.to_string_lossy())),
    ];
    for name in PASSED_ENV {
        if let Ok(value) = std::env::var(name) {
            lines.push(format!("export {name}={}", quote(&value)));
        }
    }
    lines.push(format!(
        "export FAULTLINE_VM={}",
        quote(&kernel.to_string())
    ));
    lines.push(format!(
        "export FAULTLINE_VM_SHARE={}",
        quote(&share.to_string_lossy())
    ));
    for pair in env {
        if let Some((key, value)) = pair.split_once('=') {
            lines.push(format!("export {key}={}", quote(value)));
        }
    }
    let words: Vec<String> = command.iter().map(|word| quote(word)).collect();
    lines.push(words.join(" "));
    lines.join("\n") + "\n"
}

/// Single-quotes a word for sh.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_every_word() {
        let text = script(
            Path::new("/work/it's"),
            Path::new("/share"),
            &KernelChoice::Debian61,
            &["A=b c".to_owned()],
            &["echo".to_owned(), "a b".to_owned(), "$HOME".to_owned()],
        );
        assert!(text.contains(r"cd '/work/it'\''s' || exit 125"), "{text}");
        assert!(text.contains("export A='b c'"), "{text}");
        assert!(text.contains("export FAULTLINE_VM='debian-6.1'"), "{text}");
        assert!(text.ends_with("'echo' 'a b' '$HOME'\n"), "{text}");
    }
}
