//! Mounting the kernel file systems the tools need when the machine did not mount them at boot.
//! Not bpffs: nothing here pins BPF objects (every program and link lives as long as the
//! process holding it), and mounting it makes the kernel add its `progs.debug`/`maps.debug`
//! iterators, which would outlive every run.
use std::{fs, path::Path};

use anyhow::{Context, Result, bail};

use crate::cmd;

struct KernelFs {
    fstype: &'static str,
    target: &'static str,
    why: &'static str,
}

const NEEDED: &[KernelFs] = &[KernelFs {
    fstype: "tracefs",
    target: "/sys/kernel/tracing",
    why: "syscall tracepoints",
}];

pub fn ensure() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    for needed in NEEDED {
        let mounted = mounts.lines().any(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(needed.target) && fields.next() == Some(needed.fstype)
        });
        if mounted {
            continue;
        }
        if !cmd::is_root() {
            bail!(
                "{} is not mounted on {} (needed for {}): run `sudo mount -t {} {} {}`",
                needed.fstype,
                needed.target,
                needed.why,
                needed.fstype,
                needed.fstype,
                needed.target
            );
        }
        mount(needed)
            .with_context(|| format!("mounting {} on {}", needed.fstype, needed.target))?;
        eprintln!("mounted {} on {}", needed.fstype, needed.target);
    }
    Ok(())
}

fn mount(fs: &KernelFs) -> Result<()> {
    fs::create_dir_all(Path::new(fs.target)).ok();
    rustix::mount::mount(
        fs.fstype,
        fs.target,
        fs.fstype,
        rustix::mount::MountFlags::empty(),
        None,
    )?;
    Ok(())
}
