//! Puts a crash state on the disk and runs the user's check on it.
use std::{
    collections::HashMap,
    fs,
    io::{self, Read},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

use super::states::{Node, Tree};

/// Writes `tree` into `dir` (made empty first): directories, files, symlinks, and hard links
/// for names that share a file.
pub fn materialise(tree: &Tree, dir: &Path) -> io::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    let mut written: HashMap<u64, PathBuf> = HashMap::new();
    // Directories get their modes last, deepest first, so a read-only one is filled first.
    let mut directories = Vec::new();
    for (path, ino, node) in tree.walk() {
        let at = dir.join(&path);
        match node {
            Node::Dir(_) => {
                fs::create_dir(&at)?;
                if let Some(mode) = tree.mode(ino) {
                    directories.push((at, mode));
                }
            }
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &at)?,
            Node::File(bytes) => match written.get(&ino) {
                Some(first) => fs::hard_link(first, &at)?,
                None => {
                    fs::write(&at, bytes)?;
                    if let Some(mode) = tree.mode(ino) {
                        fs::set_permissions(&at, fs::Permissions::from_mode(mode))?;
                    }
                    written.insert(ino, at);
                }
            },
        }
    }
    for (at, mode) in directories.into_iter().rev() {
        fs::set_permissions(&at, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Returns once our child `pid` has exited, without reaping it: until it is reaped its pid,
/// and the process group named after it, cannot be given to another process, so what is left
/// of the group can be killed without touching anyone else's.
pub fn wait_exited_unreaped(pid: rustix::process::Pid) -> io::Result<()> {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// How a check ended.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub passed: bool,
    /// The exit code, or None when it was killed (timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
    /// What it printed (stdout and stderr together), its first 4 KiB.
    pub output: String,
}

const OUTPUT_LIMIT: usize = 4096;

/// Runs the check as `sh -c CHECK` in `dir`, with FAULTLINE_DIR and FAULTLINE_OUTPUT set; it
/// runs in its own process group, killed whole at the timeout. `running` holds that group while
/// it runs, so Ctrl-C can stop it.
pub fn run_check(
    check: &str,
    dir: &Path,
    output_file: &Path,
    timeout: Duration,
    running: &Arc<AtomicI32>,
) -> io::Result<Verdict> {
    let log = tempfile::tempfile()?;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(check)
        .current_dir(dir)
        .env("FAULTLINE_DIR", dir)
        .env("FAULTLINE_OUTPUT", output_file)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .process_group(0);
    super::unblock_signals_in_child(&mut command);
    let mut child = command.spawn()?;
    let group = rustix::process::Pid::from_child(&child);
    running.store(group.as_raw_nonzero().get(), Ordering::SeqCst);
    let (done, exited) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done.send(wait_exited_unreaped(group));
    });
    let waited = exited.recv_timeout(timeout);
    let timed_out = waited.is_err();
    // Whatever it left running in its group goes with it (and, at the timeout, the check).
    // The check itself is not reaped yet, so the group's id is still ours.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    running.store(0, Ordering::SeqCst);
    let _ = waiter.join();
    let status = child.wait()?;
    if let Ok(waited) = waited {
        waited?;
    }
    let status = (!timed_out).then_some(status);
    let mut text = Vec::new();
    let mut log = log;
    use std::io::Seek;
    log.seek(io::SeekFrom::Start(0))?;
    log.take(OUTPUT_LIMIT as u64).read_to_end(&mut text)?;
    let code = status.and_then(|s| s.code());
    Ok(Verdict {
        passed: code == Some(0),
        code,
        timed_out,
        output: String::from_utf8_lossy(&text).into_owned(),
    })
}
