//! Boots a kernel under qemu (TCG: KVM is not available on these machines), streams the serial
//! console and reads the guest's exit status from it: qemu itself exits 0 whatever happened.
use std::{
    path::Path,
    process::Command,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use process_guard::{ProcessError, Spawned};

use super::initramfs::EXIT_MARKER;

pub struct Boot<'a> {
    pub image: &'a Path,
    pub initramfs: &'a Path,
    /// Mounted writable in the guest at the same path; holds the command's script.
    pub share: &'a Path,
    pub memory: &'a str,
    pub timeout: Duration,
}

pub struct Finished {
    pub status: i32,
    /// Everything the guest printed, kernel messages included.
    pub console: String,
    pub elapsed: Duration,
}

pub fn boot(boot: &Boot<'_>, echo: &mut dyn FnMut(&str)) -> Result<Finished> {
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        boot.memory,
    ])
    .arg("-kernel")
    .arg(boot.image)
    .arg("-initrd")
    .arg(boot.initramfs)
    .arg("-append")
    .arg(format!(
        "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off faultline.share={}",
        boot.share.display()
    ))
    .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
    .args(["-no-reboot", "-nic", "none"])
    .args([
        "-virtfs",
        "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
    ])
    .arg("-virtfs")
    .arg(format!(
        "local,path={},mount_tag=share,security_model=none,multidevs=remap",
        boot.share.display()
    ));
    let mut child = Spawned::start("qemu", &mut qemu).context("is qemu-system-x86 installed?")?;
    let watchdog = Watchdog::arm(child.pid(), boot.timeout);
    let mut console = String::new();
    let mut status = None;
    loop {
        match child.read_line() {
            Ok(line) => {
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(code) = line.strip_prefix(EXIT_MARKER) {
                    status = code.trim().parse().ok();
                } else {
                    echo(line);
                }
                console.push_str(line);
                console.push('\n');
            }
            Err(ProcessError::EndOfOutput { .. }) => break,
            Err(error) => return Err(error.into()),
        }
    }
    let timed_out = watchdog.disarm();
    let _ = child.wait();
    let elapsed = started.elapsed();
    match status {
        Some(status) => Ok(Finished {
            status,
            console,
            elapsed,
        }),
        None if timed_out => bail!(
            "the VM did not finish within {:.0} s and was stopped (raise --timeout if the command needs longer)",
            boot.timeout.as_secs_f64()
        ),
        None => bail!(
            "the VM stopped without reporting the command's exit status (see its console output above)"
        ),
    }
}

/// Kills qemu (by the pid of the child we started) if it outlives the timeout.
struct Watchdog {
    cancel: mpsc::Sender<()>,
    fired: thread::JoinHandle<bool>,
}

impl Watchdog {
    fn arm(pid: u32, timeout: Duration) -> Self {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let fired = thread::spawn(move || {
            if cancelled.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
                // SAFETY: kill has no memory arguments; the pid is our unreaped child's, so it
                // cannot have been reused.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                return true;
            }
            false
        });
        Self { cancel, fired }
    }

    fn disarm(self) -> bool {
        let _ = self.cancel.send(());
        self.fired.join().unwrap_or(false)
    }
}
