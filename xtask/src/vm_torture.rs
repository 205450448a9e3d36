//! `cargo xtask vm-torture`: a short torture run inside a VM with a stock Debian kernel, with
//! the fault only such a kernel allows (WAL writes failing through the injector's BPF LSM
//! path) next to the usual ones. Tools are built on the host; the run's directory (histories,
//! logs, report.json, report.html) comes back to target/vm-torture.
use std::{fs, path::Path};

use anyhow::{Result, ensure};

use crate::{
    torture,
    vm::{self, KernelChoice, VmArgs},
};

/// Arguments of `torture run` unless the caller gives its own.
const DEFAULTS: &[&str] = &[
    "--duration",
    "25s",
    "--faults",
    "kill,partition,power-loss,wal-write-error",
    "--settle",
    "60s",
];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    torture::build_tools(root)?;
    let share = root.join("target/vm-torture");
    if share.exists() {
        fs::remove_dir_all(&share)?;
    }
    fs::create_dir_all(&share)?;
    let mut torture_args: Vec<String> = args.to_vec();
    for pair in DEFAULTS.chunks(2) {
        if !args.iter().any(|a| a == pair[0]) {
            torture_args.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    // The cluster's data lives on the guest's own disk (the overlay), not on the 9p share; only
    // the results are copied back.
    let script = format!(
        "{torture} run --run-dir /var/tmp/vm-torture {args}\n\
         status=$?\n\
         cp -r /var/tmp/vm-torture/. \"$FAULTLINE_VM_SHARE/\"\n\
         exit $status",
        torture = root.join("target/release/torture").display(),
        args = torture_args.join(" "),
    );
    let vm_args = VmArgs {
        kernel: KernelChoice::Debian612,
        timeout: 900,
        memory: "3G".to_owned(),
        share: Some(share.clone()),
        env: Vec::new(),
        command: vec!["sh".into(), "-c".into(), script],
    };
    let outcome =
        vm::run_again_after_emulator_fault(root, &vm_args, &mut |line| eprintln!("[vm] {line}"))?;
    eprintln!("vm-torture: run directory copied to {}", share.display());
    ensure!(
        outcome.status == 0,
        "the torture run in the VM did not pass (exit status {})",
        outcome.status
    );
    Ok(())
}
