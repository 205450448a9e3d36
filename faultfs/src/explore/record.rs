//! The one run of the workload, on a fresh mount, whose record every crash state is built from.
use super::*;

/// Runs the workload on a fresh mount and returns what it did.
pub(super) fn record(
    options: &Options,
    scratch: &Path,
    interrupt: &Interrupt,
) -> anyhow::Result<Vec<Entry>> {
    let backing = scratch.join("backing");
    let mountpoint = scratch.join("mnt");
    fs::create_dir(&backing)?;
    fs::create_dir(&mountpoint)?;
    let (reader, writer) = std::io::pipe()?;
    let journal = Journal::new(Some(fs::File::from(std::os::fd::OwnedFd::from(reader))))?;
    let mount_options = MountOptions {
        backing,
        mountpoint: mountpoint.clone(),
        seed: options.seed,
        metadata: options.metadata,
        capacity: 0,
        durable_backing: false,
        faults: Vec::new(),
        threads: 2,
        // Every write() reaches faultfs as it is made, so the record has the program's order.
        writeback_cache: false,
        trace: None,
    };
    let mounted = mount::serve_in_background(&mount_options, journal.clone())?;
    let stderr_path = scratch.join("workload.stderr");
    let command_line = options
        .workload
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = Command::new(&options.workload[0]);
    command
        .args(&options.workload[1..])
        .current_dir(&mountpoint)
        .env("FAULTLINE_DIR", &mountpoint)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(fs::File::create(&stderr_path)?)
        .process_group(0);
    unblock_signals_in_child(&mut command);
    let mut child = command
        .spawn()
        .map_err(|source| ExploreError::WorkloadNotStarted {
            command: command_line.clone(),
            source,
        })?;
    drop(command);
    let group = rustix::process::Pid::from_child(&child);
    interrupt
        .running
        .store(group.as_raw_nonzero().get(), Ordering::SeqCst);
    check::wait_exited_unreaped(group)?;
    interrupt.running.store(0, Ordering::SeqCst);
    // What it left running in its group would hold the mount busy. The leader is not reaped
    // yet, so the group's id cannot belong to anyone else.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let status = child.wait()?;
    let entries = journal.finish();
    drop(mounted);
    if interrupt.asked.load(Ordering::SeqCst) {
        return Err(ExploreError::Interrupted.into());
    }
    if !status.success() {
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(ExploreError::WorkloadFailed {
            command: command_line,
            status: status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
        .into());
    }
    Ok(entries)
}
