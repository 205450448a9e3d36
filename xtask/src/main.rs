//! Faultline's build tasks, in the style of the aya project's xtask.
mod bench;
mod bench_explore;
mod bench_faultfs;
mod bench_injector;
mod bench_net;
mod bench_torture;
mod ci;
mod cmd;
mod code_fingerprint;
mod demo;
mod ebpf;
mod flakes;
mod kernel_fs;
#[cfg(test)]
mod module_graph;
mod mutants;
mod packages;
mod setup;
mod soak;
mod test_group;
mod toolchain;
mod torture;
mod vm;
mod vm_tests;
mod vm_torture;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Faultline's build tasks. Run as root on Debian 12: missing packages and tools are installed."
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every Debian package and tool the build and tests need (idempotent).
    Setup,
    /// Compile the eBPF programs (injector-ebpf) to where injector-user embeds them.
    ///
    /// Uses rustup nightly with rust-src if present, else Debian's rustc-web + rust-web-src with
    /// RUSTC_BOOTSTRAP=1; needs bpf-linker 0.13.0. A second run with unchanged sources does nothing.
    BuildEbpf,
    /// What CI runs: set-up, format check, eBPF build, clippy -D warnings, all tests, the
    /// injector's LSM tests in VMs (Debian 6.1 and 6.12) and a short torture run in a VM.
    Ci {
        /// Leave out the torture run in the VM (about 70 s).
        #[arg(long)]
        skip_vm_torture: bool,
    },
    /// Find flaky tests: run the host test suite N times (and the VM tests M times per Debian
    /// kernel) under load (the suite's own parallelism plus a background disk writer) and name
    /// each test that ever failed, with its failure rate and first message. Exit 1 if any did.
    ///
    /// Example: cargo xtask flakes --runs 10 --filter delay
    Flakes(flakes::FlakesArgs),
    /// Prove the torture harness on planted bugs: apply each tests/mutants/*.patch to a scratch
    /// copy of target-db, build it, run the default torture on the seeds until one fails, and
    /// print caught/missed, the failing checks and the time to detection. Fails if any is missed.
    ///
    /// Example: cargo xtask mutants --only vote-not-synced --seeds 1,2 --duration 60s
    Mutants(mutants::MutantsArgs),
    /// Count a live process's syscalls with the injector and check the count is exact.
    Demo,
    /// The main job: a target-db cluster on faultfs under load and faults, checked. Arguments go
    /// to `torture run` (see `target/release/torture run --help`), e.g. --seed 7 --duration 60s
    /// or --seeds 1..200 --shard 3/8 --junit out.xml; `torture merge DIR...` merges shards.
    Torture {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure a speed goal in a release build (goals live here, not in timed tests).
    Bench {
        #[arg(value_enum)]
        what: bench::Bench,
        /// With `db`: side by side with etcd (Debian's etcd-server, installed by the command),
        /// 3 nodes each, 1/16/64 clients, 3 interleaved repetitions, medians and ratios.
        #[arg(long, value_parser = ["etcd"])]
        vs: Option<String>,
        /// With `db --vs etcd`: also write the rows as JSON here.
        #[arg(long, requires = "vs")]
        json: Option<std::path::PathBuf>,
        /// With `db`: one more flag for every target-db node (repeatable), e.g. to compare
        /// Raft clocks: --db-flag=--heartbeat-ms=250 --db-flag=--election-timeout-ms=1000.
        #[arg(long = "db-flag", allow_hyphen_values = true)]
        db_flags: Vec<String>,
    },
    /// Soak faultfs: Debian's SQLite under load on a faultfs mount with a power loss every
    /// interval (each mode in turn), faultfs's resident memory, descriptors and volatile store
    /// sampled; fails if they grow from one power loss to the next or SQLite finds its database
    /// damaged. Ctrl-C ends it early with the mount taken down.
    ///
    /// Example: cargo xtask soak faultfs --duration 1h --power-loss-every 60s
    Soak(soak::SoakArgs),
    /// Run a command inside a qemu VM with a stock Debian kernel (for what this kernel refuses:
    /// BPF LSM, fmod_ret, fentry). The guest sees the host's / read-only under a throw-away
    /// overlay, so host-built binaries run unchanged; the exit status is the command's.
    ///
    /// Example: cargo xtask vm --kernel debian-6.1 -- target/debug/injector probe
    Vm(vm::VmArgs),
    /// The injector's kernel-dependent tests in VMs with Debian's kernels, as `cargo xtask ci`
    /// runs them: every one on 6.1 (Debian 12's, the oldest supported), and on 6.12 those the
    /// host cannot run (error() through BPF LSM, partitions with TCX). Fails if any test was
    /// skipped there (the TCX half of the partition tests excepted on 6.1, which checks the
    /// clean refusal instead).
    VmTests {
        /// Every kernel-facing test on both kernels (about 20 minutes).
        #[arg(long)]
        every_test: bool,
    },
    /// A short torture run (25 s, 3 nodes) inside a VM with Debian's 6.12 kernel, with the
    /// fault only a stock kernel allows (wal-write-error: WAL writes fail with EIO through the
    /// injector's BPF LSM path). Arguments go to `torture run`; results come back to
    /// target/vm-torture.
    VmTorture {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => ebpf::build(&root).map(drop),
        Task::Ci { skip_vm_torture } => ci::run(&root, !skip_vm_torture),
        Task::Demo => demo::run(&root),
        Task::Flakes(args) => flakes::run(&root, &args),
        Task::Mutants(args) => mutants::run(&root, &args),
        Task::Bench {
            what,
            vs,
            json,
            db_flags,
        } => bench::run(&root, what, vs.as_deref(), json.as_deref(), &db_flags),
        Task::Soak(args) => soak::run(&root, &args),
        Task::Torture { args } => torture::run(&root, &args),
        Task::VmTests { every_test } => {
            ebpf::build(&root)?;
            vm_tests::run(&root, every_test)
        }
        Task::VmTorture { args } => vm_torture::run(&root, &args),
        Task::Vm(args) => {
            let status = vm::cli(&root, &args)?;
            std::process::exit(status);
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
