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

/// target-db's own `/status`, for the faults and oracles that know its fields.
pub use super::target::target_db_status as status;
use super::{
    network_shape::Degradation,
    target::{NodePlace, Target},
};

#[derive(Clone)]
pub struct Binaries {
    pub target_db: PathBuf,
    pub faultfs: PathBuf,
    pub injector: PathBuf,
}

impl Binaries {
    /// The tools next to this executable (they are built into the same target directory).
    pub fn beside_me(dir: Option<&Path>) -> Result<Binaries> {
        let dir = match dir {
            Some(dir) => dir.to_owned(),
            None => std::env::current_exe()?
                .parent()
                .context("no parent dir")?
                .to_owned(),
        };
        let binaries = Binaries {
            target_db: dir.join("target-db"),
            faultfs: dir.join("faultfs"),
            injector: dir.join("injector"),
        };
        for binary in [&binaries.target_db, &binaries.faultfs, &binaries.injector] {
            if !binary.exists() {
                bail!(
                    "{} is missing: build the workspace first (cargo xtask torture does)",
                    binary.display()
                );
            }
        }
        Ok(binaries)
    }
}

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
}

/// Packets dropped between two sets of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub from: Vec<usize>,
    pub to: Vec<usize>,
    /// Only packets from `from` to `to` are dropped.
    pub one_way: bool,
    /// 100 cuts the link; less drops that share of the packets.
    pub loss_percent: u32,
}

impl Cut {
    /// One node cut off from all the others, both ways.
    pub fn isolate(node: usize, size: usize) -> Cut {
        Cut {
            from: vec![node],
            to: (1..=size).filter(|&id| id != node).collect(),
            one_way: false,
            loss_percent: 100,
        }
    }
}

/// How often a node snapshots and how large its log segments are, chosen by the seed for each
/// node, so runs reach log rotation, purge and snapshot installs at different rates (one fixed
/// shape never rotated a segment in a 60 s run), and one run meets several shapes. A flag the
/// run passes itself wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StorageShape {
    /// None: the run's own --snapshot-every.
    pub snapshot_every: Option<u64>,
    /// None: the run's own --segment-bytes.
    pub segment_bytes: Option<u64>,
}

/// The smallest log segment a node may get: a few appends each.
const SMALLEST_SEGMENT: u64 = 4 << 10;
/// The shortest snapshot interval a node may get, in entries: a few snapshots a second.
const MOST_FREQUENT_SNAPSHOTS: u64 = 100;

impl StorageShape {
    /// Every node's shape for a run: each drawn by the seed, and one node (unless one drew it
    /// already) with the smallest segments and the most frequent snapshots. A purge deletes
    /// the segments wholly below the snapshot, and an off-by-one there deletes an entry no
    /// snapshot holds only when the entry after the snapshot ends a segment: with segments of
    /// a few entries and a purge every fraction of a second that comes within seconds, with
    /// larger segments or rarer purges once in a run or never (measured on a planted purge
    /// off by one: caught within 30 s of kills on 4 KiB segments and 100-entry snapshots,
    /// never on 4 KiB and 2,000, nor by two default runs with no node of that shape).
    pub fn for_run(seed: u64, nodes: usize, db_flags: &[String]) -> Vec<Self> {
        let mut shapes: Vec<Self> = (1..=nodes)
            .map(|node| Self::for_seed(seed, node, db_flags))
            .collect();
        let compaction_edge = Self {
            snapshot_every: Some(MOST_FREQUENT_SNAPSHOTS),
            segment_bytes: Some(SMALLEST_SEGMENT),
        };
        let all_drawn = shapes
            .iter()
            .all(|shape| shape.segment_bytes.is_some() && shape.snapshot_every.is_some());
        if all_drawn && !shapes.contains(&compaction_edge) && nodes > 0 {
            let mut rng = fault_rules::SplitMix64::new(seed ^ 0x534d_414c_4c53_4547);
            shapes[rng.below(nodes as u64) as usize] = compaction_edge;
        }
        shapes
    }

    fn for_seed(seed: u64, node: usize, db_flags: &[String]) -> Self {
        let mut rng = fault_rules::SplitMix64::new(
            seed ^ 0x0053_544f_5241_4745 ^ (node as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let snapshot_every = [MOST_FREQUENT_SNAPSHOTS, 500, 2000][rng.below(3) as usize];
        // 4 KiB segments hold a few appends each: a purge or a rotation lands on a segment's
        // edge often, where off-by-one and missing-sync bugs in compaction live.
        let segment_bytes = [SMALLEST_SEGMENT, 16 << 10, 64 << 10, 1 << 20][rng.below(4) as usize];
        let given = |flag: &str| db_flags.iter().any(|f| f.starts_with(flag));
        Self {
            snapshot_every: (!given("--snapshot-every")).then_some(snapshot_every),
            segment_bytes: (!given("--segment-bytes")).then_some(segment_bytes),
        }
    }

    /// No shape of the harness's: the target keeps its own (these flags are target-db's).
    pub fn theirs() -> Self {
        Self {
            snapshot_every: None,
            segment_bytes: None,
        }
    }

    /// The shape the named scenarios were written for: a snapshot every 500 entries, one large
    /// segment (unless the run gives its own flags).
    pub fn fixed(db_flags: &[String]) -> Self {
        let given = |flag: &str| db_flags.iter().any(|f| f.starts_with(flag));
        Self {
            snapshot_every: (!given("--snapshot-every")).then_some(500),
            segment_bytes: None,
        }
    }

    fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(every) = self.snapshot_every {
            flags.extend(["--snapshot-every".to_owned(), every.to_string()]);
        }
        if let Some(bytes) = self.segment_bytes {
            flags.extend(["--segment-bytes".to_owned(), bytes.to_string()]);
        }
        flags
    }

    /// Every node's shape, as the run's first lines say it.
    pub fn describe_all(shapes: &[StorageShape]) -> String {
        let first = shapes[0].describe();
        if shapes.iter().all(|shape| shape.describe() == first) {
            return first;
        }
        shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| format!("n{}: {}", i + 1, shape.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// As the run's first line says it.
    pub fn describe(&self) -> String {
        let every = self
            .snapshot_every
            .map_or("as given".to_owned(), |n| format!("every {n} entries"));
        let bytes = self
            .segment_bytes
            .map_or("as given or target-db's default".to_owned(), |b| {
                format!("{} KiB", b >> 10)
            });
        format!("snapshots {every}, log segments {bytes}")
    }
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

    /// Silent media corruption of the record at the end of a stopped node's write-ahead log,
    /// if that record holds a put: the put's key is changed, so the record still parses and
    /// only its CRC tells. Meant for a node killed inside the fdatasync of that record, so the
    /// record was never acknowledged: a database that checks CRCs cuts it as a torn tail (the
    /// leader sends it again); one that does not applies a write of a key nobody wrote.
    /// Written through the node's mount and fsynced, so it is the durable state. Returns what
    /// was done, or None when the last record holds no put.
    pub fn rot_wal_tail(&mut self, id: usize) -> Result<Option<String>> {
        anyhow::ensure!(!self.running(id), "rot_wal_tail needs node {id} stopped");
        let wal = self.node(id).data_dir.join("wal");
        let segment = fs::read_dir(&wal)
            .with_context(|| format!("listing {}", wal.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("wal-") && name.ends_with(".log")
            })
            .max()
            .with_context(|| format!("no WAL segment in {}", wal.display()))?;
        let mut data = fs::read(&segment)?;
        let Some(key_at) = put_key_in_last_record(&data) else {
            return Ok(None);
        };
        let was = data[key_at];
        data[key_at] = if was == b'q' { b'z' } else { b'q' };
        let mut file = fs::OpenOptions::new().write(true).open(&segment)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(key_at as u64))?;
        std::io::Write::write_all(&mut file, &data[key_at..=key_at])?;
        file.sync_all()?;
        Ok(Some(format!(
            "{}: the key of a put in the last record rotted ({}.. -> {}..)",
            segment.file_name().unwrap_or_default().to_string_lossy(),
            char::from(was),
            char::from(data[key_at]),
        )))
    }

    /// Media damage in the middle of a stopped node's write-ahead log: one payload byte of a
    /// record (`pick` chooses which, never the very last one, which a crash could have torn)
    /// flipped, written through the mount and fsynced. None if the log has under 3 records.
    pub fn rot_wal_middle(&mut self, id: usize, pick: u64) -> Result<Option<Rot>> {
        anyhow::ensure!(!self.running(id), "rot_wal_middle needs node {id} stopped");
        let wal = self.node(id).data_dir.join("wal");
        let mut segments: Vec<PathBuf> = fs::read_dir(&wal)
            .with_context(|| format!("listing {}", wal.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("wal-") && name.ends_with(".log")
            })
            .collect();
        segments.sort();
        let mut payloads = Vec::new();
        for segment in &segments {
            let data = fs::read(segment)?;
            for range in record_payloads(&data) {
                payloads.push((segment.clone(), range));
            }
        }
        if payloads.len() < 3 {
            return Ok(None);
        }
        let (segment, range) = payloads[(pick % (payloads.len() as u64 - 1)) as usize].clone();
        let at = range.start + (pick >> 32) as usize % range.len();
        let mut byte = [0u8];
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at as u64))?;
        std::io::Read::read_exact(&mut file, &mut byte)?;
        let original = byte[0];
        byte[0] ^= 0x20;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at as u64))?;
        std::io::Write::write_all(&mut file, &byte)?;
        file.sync_all()?;
        let name = segment.file_name().unwrap_or_default().to_string_lossy();
        Ok(Some(Rot {
            what: format!("one byte of a durable record in its log flipped ({name}, offset {at})"),
            file: segment,
            offset: at as u64,
            original,
        }))
    }

    /// Puts back the byte `rot_wal_middle` flipped.
    pub fn restore(&self, rot: &Rot) -> Result<()> {
        let mut file = fs::OpenOptions::new().write(true).open(&rot.file)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(rot.offset))?;
        std::io::Write::write_all(&mut file, &[rot.original])?;
        file.sync_all()?;
        Ok(())
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

/// A byte of a node's log that a fault changed, to put back.
pub struct Rot {
    pub what: String,
    file: PathBuf,
    offset: u64,
    original: u8,
}

/// The payload ranges of target-db's `[len u32][crc32c u32][payload]` records, up to the first
/// that does not fit.
fn record_payloads(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut payloads = Vec::new();
    while offset + 8 <= data.len() {
        let len =
            u32::from_le_bytes(data[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || offset + 8 + len > data.len() {
            break;
        }
        payloads.push(offset + 8..offset + 8 + len);
        offset += 8 + len;
    }
    payloads
}

/// Walks target-db's `[len u32][crc32c u32][payload]` records; if the last one holds a put,
/// returns the offset of the first byte of its last put's key. A put, because a rotted key then
/// holds a value for good; a cas or delete of a key nobody wrote changes nothing.
fn put_key_in_last_record(data: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""op":"put","key":""#;
    let payload = record_payloads(data).pop()?;
    data[payload.clone()]
        .windows(KEY.len())
        .rposition(|window| window == KEY)
        .map(|at| payload.start + at + KEY.len())
        .filter(|&at| at < payload.end)
}

/// Starts an `injector partition` command and returns once the injector says the cut is in
/// effect (attaching takes a good part of a second on a busy machine, which a fault timed from
/// the start would count as partitioned). Dropping the guard ends the injector, which heals the
/// cut. Blocks: call it from a blocking task.
pub fn partition_in_effect(mut command: Command) -> Result<Spawned> {
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

#[cfg(test)]
mod tests {
    use super::{MOST_FREQUENT_SNAPSHOTS, SMALLEST_SEGMENT, StorageShape, put_key_in_last_record};

    #[test]
    fn every_run_has_a_node_at_the_compaction_edge_unless_the_run_sets_the_shape() {
        for seed in 0..200 {
            let shapes = StorageShape::for_run(seed, 3, &[]);
            assert!(
                shapes
                    .iter()
                    .any(|s| s.segment_bytes == Some(SMALLEST_SEGMENT)
                        && s.snapshot_every == Some(MOST_FREQUENT_SNAPSHOTS)),
                "seed {seed}: {}",
                StorageShape::describe_all(&shapes)
            );
            assert_eq!(shapes, StorageShape::for_run(seed, 3, &[]), "seed {seed}");
        }
        let given = ["--segment-bytes=1048576".to_owned()];
        for seed in 0..50 {
            let shapes = StorageShape::for_run(seed, 3, &given);
            assert!(
                shapes.iter().all(|s| s.segment_bytes.is_none()),
                "seed {seed}"
            );
        }
        // Not every node: the other shapes are met too.
        assert!((0..50).any(|seed| {
            StorageShape::for_run(seed, 3, &[])
                .iter()
                .any(|s| s.segment_bytes != Some(SMALLEST_SEGMENT))
        }));
    }

    fn record(payload: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload.as_bytes());
    }

    #[test]
    fn finds_a_put_only_in_the_last_record() {
        let mut data = Vec::new();
        record(r#"{"Vote":1}"#, &mut data);
        record(
            r#"[{"op":"put","key":"k1"},{"op":"put","key":"k2"},{"op":"delete","key":"k3"}]"#,
            &mut data,
        );
        let key_at = put_key_in_last_record(&data).unwrap();
        assert_eq!(&data[key_at..key_at + 2], b"k2");
        record(r#"{"Committed":7}"#, &mut data);
        assert_eq!(put_key_in_last_record(&data), None);
        assert_eq!(put_key_in_last_record(&data[..18]), None);
    }
}
