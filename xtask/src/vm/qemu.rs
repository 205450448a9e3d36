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
    // This thread reads qemu's console until it exits, so qemu dies with it: also when xtask
    // is killed by a signal no guard sees (a SIGTERM from CI, say).
    process_guard::killed_with_this_thread(&mut qemu);
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
        None => match emulated_patching_oops(&console) {
            Some(oops) => Err(EmulatorFault { oops }.into()),
            None => bail!(
                "the VM stopped without reporting the command's exit status (see its console output above)"
            ),
        },
    }
}

/// The guest kernel died of a breakpoint its own code patching left behind: TCG's multi-threaded
/// emulation of cross-modifying code let one vCPU run an `int3` that the kernel had already
/// patched away on the other (seen once in CI, in `syscall_trace_enter` while a test enabled a
/// syscall tracepoint). A fault of the emulator, not of the command: worth one more boot.
#[derive(Debug)]
pub struct EmulatorFault {
    pub oops: String,
}

impl std::fmt::Display for EmulatorFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest kernel crashed on a stale code-patching breakpoint ({}), a flaw of qemu's TCG emulation",
            self.oops
        )
    }
}

impl std::error::Error for EmulatorFault {}

/// The console's `Oops: int3` line, if the guest kernel died of one: the kernel never leaves an
/// int3 behind on real hardware, and nothing run in these VMs uses kprobes.
fn emulated_patching_oops(console: &str) -> Option<String> {
    if !console.contains("Kernel panic") {
        return None;
    }
    console
        .lines()
        .find(|line| line.contains("Oops: int3"))
        .map(|line| line.trim().to_owned())
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
                // Our unreaped child's pid, so it cannot have been reused.
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// From the CI run where the 6.12 guest died while a test attached the injector.
    const STALE_INT3: &str = "\
test a_bystander_making_the_same_calls_is_never_touched ... [  138.186522] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[  138.186840] CPU: 0 UID: 0 PID: 438 Comm: syscall-worker Not tainted 6.12.117+deb12-amd64 #1
[  138.186983] RIP: 0010:syscall_trace_enter+0xd6/0x190
[  138.189858] Kernel panic - not syncing: Fatal exception in interrupt
";

    #[test]
    fn a_guest_killed_by_a_stale_patching_breakpoint_is_an_emulator_fault() {
        let oops = emulated_patching_oops(STALE_INT3).unwrap();
        assert!(oops.contains("Oops: int3: 0000 [#1]"), "{oops}");
    }

    #[test]
    fn other_guest_deaths_are_not_blamed_on_the_emulator() {
        let null_pointer =
            "[   12.0] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   12.1] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   12.2] Kernel panic - not syncing: Fatal exception
";
        assert_eq!(emulated_patching_oops(null_pointer), None);
        // A test printing the words without the kernel dying.
        assert_eq!(
            emulated_patching_oops("grep 'Oops: int3' console.log"),
            None
        );
    }
}
