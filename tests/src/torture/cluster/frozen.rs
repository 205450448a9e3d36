//! Nodes stopped with SIGSTOP: their memory, sockets and unsynced writes kept, their clocks
//! and timers still. The guard continues them when dropped, on an error or a panic too, so no
//! node is left stopped behind a fault that failed halfway.
use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process};

use super::Cluster;

pub struct Frozen {
    pids: Vec<Pid>,
}

impl Frozen {
    /// Stops each of `nodes` that is running (one that is down is left out).
    pub fn stop(cluster: &Cluster, nodes: &[usize]) -> Result<Frozen> {
        let mut frozen = Frozen { pids: Vec::new() };
        for &node in nodes {
            // A node process this harness started and has not reaped, so the pid is still its.
            let Some(pid) = cluster.pid(node) else {
                continue;
            };
            let pid = Pid::from_raw(pid as i32).context("a node's pid is never 0")?;
            kill_process(pid, Signal::STOP)
                .with_context(|| format!("SIGSTOP of n{node} (pid {pid:?})"))?;
            frozen.pids.push(pid);
        }
        Ok(frozen)
    }

    /// Whether no node was running to be stopped.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if let Err(error) = kill_process(pid, Signal::CONT) {
                tracing::warn!(%error, ?pid, "SIGCONT of a frozen node failed");
            }
        }
    }
}
