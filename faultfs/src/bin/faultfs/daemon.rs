//! `faultfs mount --daemon` (the same command run again in a new session, returning once it has
//! mounted) and `faultfs umount`.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context, Result, bail};
use faultfs::mount;

/// Runs this same command without --daemon in a new session and returns once it has mounted.
pub fn spawn_daemon(log: Option<PathBuf>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "mounted" {
        let status = child.wait()?;
        bail!("the faultfs daemon failed to mount ({status}); run without --daemon to see why");
    }
    println!("{}", child.id());
    Ok(())
}

pub fn umount(mountpoint: &std::path::Path) -> Result<()> {
    let path = mountpoint
        .canonicalize()
        .with_context(|| format!("{} does not exist", mountpoint.display()))?;
    match mount::mounted_at(&path) {
        Some(fstype) if fstype.starts_with("fuse") => {}
        Some(fstype) => bail!(
            "{} is a {fstype} mount, not faultfs: refusing to unmount it",
            path.display()
        ),
        None => bail!("nothing is mounted at {}", path.display()),
    }
    // EBUSY can be transient: a process that forks copies every open descriptor until it execs.
    for attempt in 0.. {
        let Err(error) = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::empty()) else {
            break;
        };
        if error != rustix::io::Errno::BUSY {
            bail!("unmounting {}: {error}", path.display());
        }
        if attempt == 20 {
            bail!(
                "{} is busy: a process still has files open there (see `fuser -vm {}`)",
                path.display(),
                path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}
