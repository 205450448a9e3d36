//! The cluster under test: nodes of the target database, each with its data directory on its
//! own faultfs mount and its own loopback address. Every process and mount is torn down by a guard.
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use process_guard::Spawned;
use serde_json::Value;

mod binaries;
mod frozen;
mod storage_shape;
mod wal_damage;

pub use binaries::Binaries;
pub use frozen::Frozen;
pub use storage_shape::StorageShape;
pub use wal_damage::Rot;

/// target-db's own `/status`, for the faults and oracles that know its fields.
pub use super::target::target_db_status as status;
use super::{
    network_shape::{Cut, Degradation},
    target::{NodePlace, Target},
};

pub struct Node {
    pub id: usize,
    pub ip: String,
    pub addr: String,
    pub mountpoint: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    process: Option<Child>,
    mount: Option<Spawned>,
    /// How often the node was started again after its first start (crashes, power losses).
    pub restarts: u32,
    started: bool,
}

impl Node {
    /// The node's own log (its stderr, across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub target: Target,
    binaries: Binaries,
    seed: u64,
    /// Extra flags for every node's start command, such as target-db's unsafe switches.
    db_flags: Vec<String>,
    /// Each node's, by id - 1.
    pub storage_shapes: Vec<StorageShape>,
    /// Rounds of /status polls the oracles have seen, counted by the run's watcher.
    pub status_rounds: Option<tokio::sync::watch::Receiver<u64>>,
    /// What became of the logs the `corruption` fault damaged in the middle.
    pub damaged_logs: DamagedLogs,
}

/// Logs damaged in the middle (a record with another after it flipped): how many the node
/// refused to start on, and what it started on anyway. A log cannot tell that damage from a
/// crash, so a node that starts on it dropped or trusted durable records.
#[derive(Debug, Default)]
pub struct DamagedLogs {
    pub refused: usize,
    pub accepted: Vec<String>,
}

/// What a cluster is made of, besides its programs.
pub struct ClusterSpec {
    pub target: Target,
    pub size: usize,
    /// Each node's faultfs mount gets this plus its id.
    pub seed: u64,
    /// Flags for every node's start command.
    pub db_flags: Vec<String>,
    /// Node 1's loopback address; node N has the Nth from it.
    pub first_ip: std::net::Ipv4Addr,
    /// faultfs's metadata model (`posix` or `ext4`).
    pub metadata: String,
    pub storage_shapes: Vec<StorageShape>,
}

impl Cluster {
    pub fn start(run_dir: &Path, binaries: Binaries, spec: ClusterSpec) -> Result<Cluster> {
        let ClusterSpec {
            target,
            size,
            seed,
            db_flags,
            first_ip,
            metadata,
            storage_shapes,
        } = spec;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            target,
            binaries,
            seed,
            db_flags,
            storage_shapes,
            status_rounds: None,
            damaged_logs: DamagedLogs::default(),
        };
        for id in 1..=size {
            let dir = run_dir.join(format!("node{id}"));
            let backing = dir.join("backing");
            let mountpoint = dir.join("mnt");
            fs::create_dir_all(&backing)?;
            fs::create_dir_all(&mountpoint)?;
            let mount_log = File::create(dir.join("faultfs.log"))?;
            let mut mount = Spawned::start_logging(
                "faultfs",
                Command::new(&cluster.binaries.faultfs)
                    .arg("mount")
                    .arg(&backing)
                    .arg(&mountpoint)
                    .args(["--seed", &(seed + id as u64).to_string()])
                    .args(["--metadata", &metadata])
                    .arg("--trace")
                    .arg(dir.join("trace.jsonl"))
                    .env("RUST_LOG", "warn"),
                mount_log,
            )?;
            if mount.read_line()? != "mounted" {
                bail!("faultfs did not mount {}", mountpoint.display());
            }
            if cluster.target.data_dir_made_by_installer() {
                make_data_dir_durably(&mountpoint.join("db"))?;
            }
            let ip = std::net::Ipv4Addr::from(u32::from(first_ip) + id as u32 - 1).to_string();
            cluster.nodes.push(Node {
                id,
                addr: format!("{ip}:{}", cluster.target.client_port()),
                ip,
                data_dir: mountpoint.join("db"),
                mountpoint,
                log: dir.join(format!("{}.log", cluster.target.name())),
                process: None,
                mount: Some(mount),
                restarts: 0,
                started: false,
            });
        }
        for id in 1..=size {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id - 1]
    }

    pub fn start_node(&mut self, id: usize) -> Result<()> {
        if self.running(id) && self.reap(id).is_none() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[id - 1].log)?;
        let mut flags = self.storage_shapes[id - 1].flags();
        flags.extend(self.db_flags.iter().cloned());
        let peers: Vec<String> = self.nodes.iter().map(|n| n.ip.clone()).collect();
        let node = &mut self.nodes[id - 1];
        let place = NodePlace {
            id,
            ip: &node.ip,
            data_dir: &node.data_dir,
            peers: &peers,
        };
        let child = self
            .target
            .start_command(&self.binaries.target_db, &place, &flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} node {id}", self.target.name()))?;
        node.process = Some(child);
        if node.started {
            node.restarts += 1;
        }
        node.started = true;
        Ok(())
    }

    /// SIGKILL, then start again (a node whose WAL failed takes writes only after a restart).
    pub fn restart_node(&mut self, id: usize) -> Result<()> {
        self.kill_node(id);
        self.start_node(id)
    }

    /// Whether the node's process has exited (a fault killed it); if so it counts as down.
    pub fn reap(&mut self, id: usize) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[id - 1];
        let status = node.process.as_mut()?.try_wait().ok()??;
        node.process = None;
        Some(status)
    }

    pub fn kill_node(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id - 1].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&self, id: usize) -> bool {
        self.nodes[id - 1].process.is_some()
    }

    pub fn pid(&self, id: usize) -> Option<u32> {
        self.nodes[id - 1].process.as_ref().map(Child::id)
    }

    /// Power loss of one node: kill it, drop its unsynced state, restart it.
    pub fn power_loss(&mut self, id: usize, mode: &str) -> Result<()> {
        self.lose_power(id, mode)?;
        self.start_node(id)
    }

    /// The node killed and its unsynced state lost in `mode`; it stays down. Returns the
    /// files (relative to its mount) a write was torn in, which its recovery will meet.
    pub fn lose_power(&mut self, id: usize, mode: &str) -> Result<Vec<String>> {
        self.kill_node(id);
        let output = self
            .faultfs_ctl(id)
            .args(["--json", "power-loss", "--mode", mode])
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            bail!("faultfs power-loss on node {id} failed");
        }
        let answer: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("faultfs power-loss on node {id}: answer is not JSON"))?;
        Ok(answer["torn"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `faultfs ctl` on the node's mount, for the caller to add the command to.
    fn faultfs_ctl(&self, id: usize) -> Command {
        let mut command = Command::new(&self.binaries.faultfs);
        command.arg("ctl").arg(&self.node(id).mountpoint);
        command
    }

    /// Adds a fault rule to a node's faultfs mount; returns the rule's id for `remove_fault`.
    pub fn add_fault(&self, id: usize, rule: &str) -> Result<u64> {
        let output = self
            .faultfs_ctl(id)
            .args(["--json", "fault", "add", rule])
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            bail!("faultfs fault add `{rule}` on node {id} failed");
        }
        let answer: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("faultfs fault add on node {id}: answer is not JSON"))?;
        answer["id"]
            .as_u64()
            .with_context(|| format!("faultfs fault add on node {id}: no rule id in {answer}"))
    }

    /// The node's faultfs status (`faultfs ctl --json status`): its rules with their call
    /// counts, and the crash point its storage stopped at (`crashed`, null if none).
    pub fn faultfs_status(&self, id: usize) -> Result<Value> {
        let output = self
            .faultfs_ctl(id)
            .args(["--json", "status"])
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            bail!("faultfs status on node {id} failed");
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("faultfs status on node {id}: answer is not JSON"))
    }

    pub fn remove_fault(&self, id: usize, rule_id: u64) -> Result<()> {
        let status = self
            .faultfs_ctl(id)
            .args(["fault", "remove", &rule_id.to_string()])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("faultfs fault remove {rule_id} on node {id} failed");
        }
        Ok(())
    }

    /// The fd through which the node appends to its newest WAL segment, as /proc shows it.
    pub fn wal_fd(&self, id: usize) -> Option<u32> {
        let pid = self.pid(id)?;
        let wal_dir = self.node(id).mountpoint.join("db/wal");
        let mut newest: Option<(std::ffi::OsString, u32)> = None;
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
                continue;
            };
            let Some(fd) = entry.file_name().to_str().and_then(|f| f.parse().ok()) else {
                continue;
            };
            if dir == wal_dir
                && newest
                    .as_ref()
                    .is_none_or(|(best, _)| name > best.as_os_str())
            {
                newest = Some((name.to_owned(), fd));
            }
        }
        newest.map(|(_, fd)| fd)
    }

    /// `injector attach` of one fault rule to a node for `duration`.
    pub fn attach_command(&self, id: usize, rule: &str, duration: Duration) -> Command {
        let mut command = Command::new(&self.binaries.injector);
        command
            .args(["attach", "--pid", &self.pid(id).unwrap_or(0).to_string()])
            .args(["--fault", rule])
            .args(["--duration", &format!("{}ms", duration.as_millis())])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// The nodes' addresses, comma-separated, as the injector takes them.
    fn ips(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|&id| self.node(id).ip.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `injector partition` applying `cut` between the nodes' addresses for `duration`.
    pub fn partition_command(&self, cut: &Cut, duration: Duration) -> Command {
        let ips = |ids: &[usize]| self.ips(ids);
        let mut command = Command::new(&self.binaries.injector);
        command
            .args([
                "partition",
                "--between",
                &ips(&cut.from),
                "--and",
                &ips(&cut.to),
            ])
            .args(["--duration", &format!("{}ms", duration.as_millis())])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if cut.one_way {
            command.arg("--one-way");
        }
        if cut.loss_percent < 100 {
            command.args(["--loss", &format!("{}%", cut.loss_percent)]);
        }
        command
    }

    /// `injector net` degrading `link` between the nodes' addresses for `duration`.
    pub fn net_command(&self, link: &Degradation, duration: Duration) -> Command {
        let ips = |ids: &[usize]| self.ips(ids);
        let mut command = Command::new(&self.binaries.injector);
        command
            .args([
                "net",
                "--between",
                &ips(&link.from),
                "--and",
                &ips(&link.to),
            ])
            .args(&link.args)
            .args(["--duration", &format!("{}ms", duration.as_millis())])
            .stdout(Stdio::null());
        if link.one_way {
            command.arg("--one-way");
        }
        command
    }

    /// Nodes whose process exited on its own after its last start (every fault restarts the
    /// nodes it stopped), each with its exit status and the last error its log shows: a node
    /// that refuses to start after a crash says why here.
    pub fn exited_by_themselves(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for id in 1..=self.nodes.len() {
            let was_started = self.nodes[id - 1].started && self.running(id);
            let Some(status) = self.reap(id).filter(|_| was_started) else {
                continue;
            };
            let log = fs::read_to_string(&self.nodes[id - 1].log).unwrap_or_default();
            let error = log
                .lines()
                .rev()
                .find(|line| self.target.is_fatal(line))
                .unwrap_or("no error in its log");
            exited.push(format!("n{id} exited ({status}): {error}"));
        }
        exited
    }

    /// Lines of the node logs that show a panic.
    pub fn panics(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|node| {
                fs::read_to_string(&node.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| self.target.is_panic(line))
                    .map(|line| format!("node {}: {line}", node.id))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() {
            self.kill_node(id);
        }
        for node in &mut self.nodes {
            let _ = Command::new(&self.binaries.faultfs)
                .arg("umount")
                .arg(&node.mountpoint)
                .status();
            if let Some(mount) = node.mount.take() {
                let _ = mount.finish();
            }
        }
    }
}

/// The data directory an installer makes before a database's first start (0700, as etcd
/// wants it), with its entry fsynced into the mount's root: durable, as on a real machine
/// where it was made long before.
fn make_data_dir_durably(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let parent = dir.parent().context("a data directory has a parent")?;
    File::open(parent)
        .and_then(|root| root.sync_all())
        .with_context(|| format!("fsyncing {}", parent.display()))
}

/// `cut` made for up to `duration`, in effect when this returns (see `partition_in_effect`);
/// dropping the guard heals it.
pub async fn cut_in_effect(
    cluster: &std::sync::Arc<tokio::sync::Mutex<Cluster>>,
    cut: &Cut,
    duration: Duration,
) -> Result<Spawned> {
    let command = cluster.lock().await.partition_command(cut, duration);
    tokio::task::spawn_blocking(move || partition_in_effect(command)).await?
}

/// Starts an `injector partition` command and returns once the injector says the cut is in
/// effect (attaching takes a good part of a second on a busy machine, which a fault timed from
/// the start would count as partitioned). Dropping the guard ends the injector, which heals the
/// cut. Blocks: call it from a blocking task.
fn partition_in_effect(mut command: Command) -> Result<Spawned> {
    command.arg("--json");
    let mut injector = Spawned::start_capturing_stderr("injector partition", &mut command)?;
    let attached = injector
        .read_line()
        .ok()
        .and_then(|line| serde_json::from_str::<Value>(&line).ok())
        .is_some_and(|event| event["event"] == "attached");
    if !attached {
        let (status, stderr) = injector.wait()?;
        bail!("injector partition failed ({status}): {}", stderr.trim());
    }
    Ok(injector)
}
