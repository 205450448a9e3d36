//! What `torture run` checks before it starts a cluster: free addresses, etcd installed, BPF
//! LSM where a fault needs it, and a run directory it may replace.
use std::path::Path;

use anyhow::{Context, Result, bail};
use tests::torture::{self, campaign, target::Target};

/// Every node's address must be free: a cluster already listening there (another run, a
/// leftover node) would get this run's requests, and partitions by address would cut it too.
pub fn addresses_free(first_ip: std::net::Ipv4Addr, nodes: usize, target: &Target) -> Result<()> {
    for index in 0..nodes {
        let ip = std::net::Ipv4Addr::from(u32::from(first_ip) + index as u32);
        let addr = std::net::SocketAddrV4::new(ip, target.client_port());
        if let Err(error) = std::net::TcpListener::bind(addr) {
            bail!(
                "node {}'s address {addr} is taken ({error}): another cluster (an earlier run's node?) listens there; stop it, or give this run other addresses with --first-ip (e.g. 127.0.1.11)",
                index + 1
            );
        }
    }
    Ok(())
}

/// etcd must be installed: Debian's etcd-server package.
pub fn require_etcd() -> Result<()> {
    match std::process::Command::new("etcd")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        _ => bail!(
            "--target etcd: no working `etcd` on PATH: install Debian's etcd-server \
             (`cargo xtask setup` does, or `apt-get install etcd-server`)"
        ),
    }
}

/// Written into a run directory as it is created, so a later run may replace it even if this
/// one was stopped (Ctrl-C) before it wrote a report or a summary.
const RUN_MARKER: &str = ".faultline-torture-run";

/// Replaces an earlier run's directory, and refuses any other non-empty one, so a mistyped
/// --run-dir never deletes somebody's files.
pub fn clear_earlier_run(dir: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    if entries.next().is_none() {
        return Ok(());
    }
    // The marker, or what runs wrote before there was one.
    let earlier_run = [RUN_MARKER, campaign::SUMMARY_FILE, "report.json", "node1"]
        .iter()
        .any(|name| dir.join(name).exists());
    if !earlier_run {
        bail!(
            "{} is not empty and holds no earlier torture run: choose a new --run-dir (it is \
             created) or empty this one",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))
}

/// Creates the run directory `dir` (emptied by [`clear_earlier_run`]) and marks it as one.
pub fn create_run_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(RUN_MARKER),
        "a torture run's directory: the next run replaces it\n",
    )
    .with_context(|| format!("writing {}", dir.join(RUN_MARKER).display()))
}

pub fn require_lsm(injector: &Path) -> Result<()> {
    if let Some(reason) = torture::lsm::refusal(injector)? {
        bail!(
            "fault wal-write-error needs BPF LSM, which this kernel refuses ({reason}); leave it \
             out of --faults, or run in a VM with a stock kernel: cargo xtask vm-torture"
        );
    }
    Ok(())
}

#[cfg(test)]
mod run_dir {
    use super::*;

    #[test]
    fn a_stopped_runs_directory_is_replaced_and_anyone_elses_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let run = scratch.path().join("run");
        create_run_dir(&run).unwrap();
        // Stopped during its first seed: no summary, no report yet.
        std::fs::create_dir_all(run.join("seed-1/node2")).unwrap();
        clear_earlier_run(&run).unwrap();
        assert!(!run.exists());

        let theirs = scratch.path().join("theirs");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("thesis.tex"), "keep me").unwrap();
        let refused = clear_earlier_run(&theirs).unwrap_err().to_string();
        assert!(
            refused.contains("holds no earlier torture run"),
            "{refused}"
        );
        assert!(theirs.join("thesis.tex").exists());

        clear_earlier_run(&scratch.path().join("absent")).unwrap();
    }
}
