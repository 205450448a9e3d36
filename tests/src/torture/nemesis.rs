//! Faults applied from outside, chosen by the seed: SIGKILL and restart, SIGSTOP/SIGCONT, a crash
//! at the Nth WAL write or fdatasync (injector), network partitions of named shapes and packet
//! loss (injector), slow and flaky links (injector net), power loss of one node or all (faultfs), a failing disk under one node's
//! write-ahead log (faultfs: fsyncgate then power loss, fsync EIO, ENOSPC), a slow one (faultfs
//! delay on every WAL fdatasync), failing WAL writes (injector error() via BPF LSM).
use std::{
    ops::ControlFlow,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use fault_rules::SplitMix64;
use rustix::process::{Pid, Signal, kill_process};
use tokio::sync::Mutex;

use super::{
    cluster::Cluster,
    crash_points::{self, CrashAttempt, CrashPlan},
    network_shape,
    probe::Probe,
    workload::Recorder,
};

/// What the nemesis did: how many faults, and the crash points it placed.
#[derive(Default)]
pub struct NemesisOutcome {
    pub applied: u64,
    pub crash_points: Vec<CrashAttempt>,
    /// `class call` pairs the nodes were seen making (where crash points could go).
    pub seen: Vec<String>,
}

/// With crash points among the faults, this share of the faults are crash points (the rest are
/// drawn evenly from the other kinds): they are what finds durability bugs.
const CRASH_POINT_PERCENT: u64 = 40;

/// The kinds of fault, each applied to a node the seed picks. This enum is the one list: the
/// command line's names, `--help` and the table in docs/torture.md come from it (clap's kebab-case
/// names; the doc comment of each is its help).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL, then restart.
    Kill,
    /// Two or more nodes (perhaps all: no quorum) SIGKILLed at once, restarted together.
    KillMany,
    /// SIGSTOP for a while, then SIGCONT.
    Pause,
    /// The injector kills the node at its Nth write or fdatasync of the active WAL segment
    /// (tracepoint + SIGKILL from the kernel), then it is restarted.
    WalCrash,
    /// Injector partition of a random shape: the node isolated, a minority with it cut from the
    /// majority, a bridge with it as the only link between two halves, or one way.
    Partition,
    /// 20-60% of the packets between the node and the others dropped for a while.
    PacketLoss,
    /// Injector net: the node's packets to the others, theirs to it, or both, delayed 20-300 ms
    /// or 0.6-2.5 s (past election timeouts), half the time with jitter, for a while.
    SlowNetwork,
    /// Injector net: the node's packets to and from the others 5-20% duplicated and 10-40%
    /// reordered for a while.
    FlakyNetwork,
    /// Kill, faultfs power loss (drop, torn, reorder or prefix), restart.
    PowerLoss,
    /// Every node loses power at once.
    PowerLossAll,
    /// The node's WAL fdatasyncs fail the way Linux fails them (EIO, the dirty pages dropped as
    /// if written), then it loses power; or a follower catching up meets that, or is killed at
    /// its log directory's fsync and restarted with those fsyncs failing, then loses power.
    DiskError,
    /// The node's WAL fdatasyncs fail with EIO (the data stays dirty) for a while; it stops
    /// taking writes, so it is then killed and restarted.
    FsyncError,
    /// The node's file system is full (ENOSPC on every write) for a while; then it is killed
    /// and restarted.
    DiskFull,
    /// Every WAL fdatasync of the node takes 50-500 ms longer for a while.
    SlowDisk,
    /// The node's writes to its active WAL segment fail with EIO for a while (injector error()
    /// through BPF LSM: stock kernels only, e.g. `cargo xtask vm-torture`; not in the default
    /// list), then it is killed and restarted.
    WalWriteError,
    /// faultfs stops the node's storage right after its Nth fsync, fdatasync, write, rename,
    /// create, unlink or truncate on its WAL, snapshot or metadata files, then it, a majority
    /// or all lose power at that moment (sometimes again while it recovers); or the program
    /// alone is SIGKILLed at such a call, and half of those times loses power soon after its
    /// restart. When listed, 40% of the faults are crash points.
    CrashPoint,
    /// Leadership handed to the node, or away from it, by the database's own transfer
    /// (target-db `admin transfer-leader`): elections without a crash.
    LeaderTransfer,
    /// A follower killed inside a WAL fdatasync, the record it was syncing (never acknowledged)
    /// silently corrupted on its disk so only a checksum tells, restarted.
    Bitrot,
    /// A follower stopped and one byte of a durable record in the middle of its log flipped (a
    /// media error); a node that refuses to start, naming the damage, gets the byte back and is
    /// restarted; one that starts must not have lost what it acknowledged.
    Corruption,
    /// A follower removed from the voters for 1-4 s, then added back as a learner, caught up and
    /// promoted, through the database's admin calls.
    Membership,
    /// The leader cut off from the others until they elect another, left running for a while
    /// (a put through the new leader, then a read of that key from the old one: a leader that
    /// does not confirm its leadership answers it stale), killed while cut off (with writes
    /// nobody acknowledged on its disk), restarted once healed: its uncommitted suffix must be
    /// overwritten, never applied.
    DeposedLeader,
}

impl Fault {
    /// Every fault, in the order of the enum.
    pub fn all() -> &'static [Fault] {
        <Fault as clap::ValueEnum>::value_variants()
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let names = NAMES.get_or_init(|| {
            Fault::all()
                .iter()
                .map(|fault| fault.possible_value().get_name().to_owned())
                .collect()
        });
        let index = Fault::all()
            .iter()
            .position(|fault| *fault == self)
            .expect("every fault is among all()");
        &names[index]
    }

    /// What it does, for `--help` and docs/torture.md.
    pub fn help(self) -> String {
        self.possible_value()
            .get_help()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// `name: help` for every fault, one a line.
    pub fn catalogue() -> String {
        Fault::all()
            .iter()
            .map(|fault| format!("{}: {}\n", fault.name(), fault.help()))
            .collect()
    }

    fn possible_value(self) -> clap::builder::PossibleValue {
        clap::ValueEnum::to_possible_value(&self).expect("no fault is skipped")
    }

    /// Whether the fault needs BPF LSM in the kernel (`injector probe`).
    pub fn needs_lsm(self) -> bool {
        self == Fault::WalWriteError
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        <Fault as clap::ValueEnum>::from_str(text, false).map_err(|_| {
            let names: Vec<&str> = Fault::all().iter().map(|f| f.name()).collect();
            format!("unknown fault `{text}`: choose from {}", names.join(", "))
        })
    }
}

/// Applies faults until `stop`, each logged in the history with its time and target.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    faults: Vec<Fault>,
    seed: u64,
    recorder: Recorder,
    probe: Probe,
    stop: Arc<AtomicBool>,
) -> Result<NemesisOutcome> {
    let mut rng = SplitMix64::new(seed ^ 0x006e_656d_6573_6973);
    let classes = cluster.lock().await.target.file_classes();
    let mut plan = CrashPlan::new(classes, &mut rng);
    let mut applied = 0;
    if faults.is_empty() {
        return Ok(NemesisOutcome::default());
    }
    if faults.contains(&Fault::CrashPoint) {
        plan.observe(&cluster).await?;
    }
    let others: Vec<Fault> = faults
        .iter()
        .copied()
        .filter(|f| *f != Fault::CrashPoint)
        .collect();
    let mut deck = Deck::default();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let crash = faults.contains(&Fault::CrashPoint)
            && (others.is_empty() || rng.below(100) < CRASH_POINT_PERCENT);
        let fault = if crash {
            Fault::CrashPoint
        } else {
            deck.draw(&others, &mut rng)
        };
        let size = cluster.lock().await.nodes.len() as u64;
        let node = if rng.below(2) == 0 {
            // Half the faults go to the leader: its calls decide what was acknowledged, and
            // losing it forces an election.
            match leader(&cluster).await {
                Some(leader) => leader,
                None => 1 + rng.below(size) as usize,
            }
        } else {
            1 + rng.below(size) as usize
        };
        let start = recorder.fault_starts(format!("n{node}"), fault.name());
        let (node, description) = apply(&cluster, fault, node, &probe, &mut rng, &mut plan).await?;
        tracing::info!(node, %description, "fault");
        recorder.fault_ends(start, format!("n{node}"), description);
        applied += 1;
    }
    Ok(NemesisOutcome {
        applied,
        seen: plan
            .seen
            .iter()
            .map(|(class, call)| format!("{class} {call}"))
            .collect(),
        crash_points: plan.attempts,
    })
}

/// How long a node with a damaged log gets to refuse to start (it reads its log first).
const REFUSAL_WITHIN: Duration = Duration::from_secs(5);

/// The `corruption` fault on `node`: stop it, flip one byte in the payload of a record that is
/// neither the last nor in a segment's torn tail, start it, and see whether it refuses.
async fn corrupt_mid_log(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rng: &mut SplitMix64,
) -> Result<String> {
    if !cluster.lock().await.running(node) {
        return Ok("corruption skipped: node down".into());
    }
    cluster.lock().await.kill_node(node);
    let pick = rng.next_u64();
    let Some(rot) = cluster.lock().await.rot_wal_middle(node, pick)? else {
        cluster.lock().await.start_node(node)?;
        return Ok(format!(
            "n{node}: corruption skipped: its log has too few records"
        ));
    };
    cluster.lock().await.start_node(node)?;
    let refused = super::poll::poll_until(
        REFUSAL_WITHIN,
        Duration::from_millis(50),
        move || async move {
            match cluster.lock().await.reap(node) {
                Some(status) => ControlFlow::Break(status),
                None => ControlFlow::Continue(()),
            }
        },
    )
    .await
    .ok();
    match refused {
        Some(status) => {
            cluster.lock().await.restore(&rot)?;
            cluster.lock().await.start_node(node)?;
            Ok(format!(
                "n{node}: {}; it refused to start ({status}), the byte was put back, restarted",
                rot.what
            ))
        }
        None => Ok(format!(
            "n{node}: {}; it started on the damaged log (still running after {} s)",
            rot.what,
            REFUSAL_WITHIN.as_secs()
        )),
    }
}

/// The other fault kinds dealt like cards: each kind once, in a seeded order, before any comes
/// again, so a one-minute run meets every kind (drawn independently, a kind was missing from a
/// run about one time in three, and the bug only it exposes went unseen).
#[derive(Default)]
struct Deck {
    left: Vec<Fault>,
}

impl Deck {
    fn draw(&mut self, kinds: &[Fault], rng: &mut SplitMix64) -> Fault {
        if self.left.is_empty() {
            self.left = kinds.to_vec();
            for i in (1..self.left.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.left.swap(i, j);
            }
        }
        self.left.pop().expect("a deck of at least one kind")
    }
}

/// `node` if it does not lead, else the next node round the ring.
pub(super) async fn follower_near(cluster: &Arc<Mutex<Cluster>>, node: usize) -> usize {
    match leader(cluster).await {
        Some(leader) if leader == node => leader % cluster.lock().await.nodes.len() + 1,
        _ => node,
    }
}

/// The node that says it leads, if one does.
async fn leader(cluster: &Arc<Mutex<Cluster>>) -> Option<usize> {
    leading_now(cluster, None).await
}

/// One poll of every node's /status: the first that says it leads, other than `not`.
pub(super) async fn leading_now(
    cluster: &Arc<Mutex<Cluster>>,
    not: Option<usize>,
) -> Option<usize> {
    let (target, addrs): (_, Vec<String>) = {
        let cluster = cluster.lock().await;
        let addrs = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
        (cluster.target.clone(), addrs)
    };
    let client = reqwest::Client::new();
    for (index, addr) in addrs.iter().enumerate() {
        if not != Some(index + 1)
            && let Some(status) = target.status(&client, addr).await
            && super::target::says_it_leads(&status)
        {
            return Some(index + 1);
        }
    }
    None
}

/// Applies `fault` aimed at `node`; returns the node it hit (a fault meant for a follower
/// picks the follower nearest `node`) and what was done.
async fn apply(
    cluster: &Arc<Mutex<Cluster>>,
    fault: Fault,
    node: usize,
    probe: &Probe,
    rng: &mut SplitMix64,
    plan: &mut CrashPlan,
) -> Result<(usize, String)> {
    match fault {
        Fault::Bitrot => {
            // A follower: the leader's damaged record could be one it already sent.
            let target = follower_near(cluster, node).await;
            let what = super::scenario::rot_an_unacknowledged_record(cluster, target, 5).await?;
            Ok((target, format!("n{target} {what}")))
        }
        Fault::Corruption => {
            let target = follower_near(cluster, node).await;
            Ok((target, corrupt_mid_log(cluster, target, rng).await?))
        }
        Fault::Membership => {
            let target = follower_near(cluster, node).await;
            let out_for = Duration::from_millis(1000 + rng.below(3000));
            let what = super::membership::remove_and_add_back(cluster, target, out_for).await?;
            Ok((target, what))
        }
        Fault::DeposedLeader => {
            let hold = Duration::from_millis(500 + rng.below(1500));
            super::deposed_leader::apply(cluster, node, hold, probe, rng).await
        }
        _ => Ok((node, apply_to(cluster, fault, node, rng, plan).await?)),
    }
}

/// The faults that strike the node they are aimed at (crash points and kill-many take others
/// with it, and say so).
async fn apply_to(
    cluster: &Arc<Mutex<Cluster>>,
    fault: Fault,
    node: usize,
    rng: &mut SplitMix64,
    plan: &mut CrashPlan,
) -> Result<String> {
    let hold = Duration::from_millis(500 + rng.below(1500));
    let log = cluster.lock().await.target.log_glob();
    match fault {
        Fault::CrashPoint => crash_points::crash_point(cluster, node, plan, rng).await,
        Fault::LeaderTransfer => transfer_leadership(cluster, node).await,
        Fault::Bitrot | Fault::Corruption | Fault::Membership | Fault::DeposedLeader => {
            unreachable!("aimed at its node by `apply`")
        }
        Fault::Kill => {
            cluster.lock().await.kill_node(node);
            tokio::time::sleep(hold).await;
            cluster.lock().await.start_node(node)?;
            Ok(format!("SIGKILL, restarted after {} ms", hold.as_millis()))
        }
        Fault::KillMany => {
            let size = cluster.lock().await.nodes.len();
            let count = (2 + rng.below((size as u64 - 1).max(1)) as usize).min(size);
            // `node` and the next ones round the ring: a seeded choice of `count` nodes.
            let victims: Vec<usize> = (0..count).map(|i| 1 + (node - 1 + i) % size).collect();
            {
                let mut cluster = cluster.lock().await;
                for &id in &victims {
                    cluster.kill_node(id);
                }
            }
            tokio::time::sleep(hold).await;
            let mut cluster = cluster.lock().await;
            for &id in &victims {
                cluster.start_node(id)?;
            }
            let names: Vec<String> = victims.iter().map(|id| format!("n{id}")).collect();
            let quorum = if count > size / 2 { ", no quorum" } else { "" };
            Ok(format!(
                "{} SIGKILLed together{quorum}, restarted after {} ms",
                names.join(" "),
                hold.as_millis()
            ))
        }
        Fault::Pause => {
            let Some(pid) = cluster.lock().await.pid(node) else {
                return Ok("pause skipped: node down".into());
            };
            // A node process this harness started and has not reaped, so the pid is still its.
            let pid = Pid::from_raw(pid as i32).context("a node's pid is never 0")?;
            kill_process(pid, Signal::STOP)?;
            tokio::time::sleep(hold).await;
            kill_process(pid, Signal::CONT)?;
            Ok(format!("SIGSTOP for {} ms", hold.as_millis()))
        }
        Fault::WalCrash => wal_crash(cluster, node, hold, rng).await,
        Fault::Partition | Fault::PacketLoss => {
            let size = cluster.lock().await.nodes.len();
            let (cut, description) = if fault == Fault::Partition {
                network_shape::random_cut(size, node, rng)
            } else {
                network_shape::lossy_link(size, node, 20 + rng.below(41) as u32)
            };
            let mut command = cluster.lock().await.partition_command(&cut, hold);
            let status = tokio::task::spawn_blocking(move || command.status()).await??;
            if !status.success() {
                bail!("injector partition failed: {status}");
            }
            Ok(format!("{description} for {} ms", hold.as_millis()))
        }
        Fault::SlowNetwork | Fault::FlakyNetwork => {
            let size = cluster.lock().await.nodes.len();
            let (link, description) = if fault == Fault::SlowNetwork {
                network_shape::slow_link(size, node, rng)
            } else {
                network_shape::flaky_link(size, node, rng)
            };
            let hold = hold.max(link.at_least);
            let mut command = cluster.lock().await.net_command(&link, hold);
            let output = tokio::task::spawn_blocking(move || command.output()).await??;
            if !output.status.success() {
                bail!(
                    "injector net failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Ok(format!("{description} for {} ms", hold.as_millis()))
        }
        Fault::FsyncError | Fault::DiskFull => {
            let (rule, what) = if fault == Fault::FsyncError {
                (
                    format!(r#"fdatasync(path="{log}")=error(EIO)"#),
                    "WAL fdatasync fails with EIO",
                )
            } else {
                (
                    r#"write(path="db/**")=error(ENOSPC)"#.to_owned(),
                    "disk full (ENOSPC)",
                )
            };
            with_fault_rule(cluster, node, &rule, hold).await?;
            cluster.lock().await.restart_node(node)?;
            Ok(format!(
                "{what} for {} ms, then SIGKILL, restarted",
                hold.as_millis()
            ))
        }
        Fault::PowerLoss => {
            let mode = ["drop", "torn", "reorder", "prefix"][rng.below(4) as usize];
            cluster.lock().await.power_loss(node, mode)?;
            Ok(format!("power loss ({mode}), restarted"))
        }
        Fault::DiskError => {
            // Linux reports a writeback error once: the next fsync succeeds, with the data gone.
            // A third of the time that, a third a disk that keeps failing for the whole hold,
            // a third the error once while a follower catches up: there what a database
            // acknowledged after a retried fsync is what its leader counts on, and Raft does
            // not hide a follower's loss from the oracles the way it hides the leader's.
            let variant = rng.below(3);
            if variant == 2 {
                return disk_error_while_catching_up(cluster, node, hold, rng).await;
            }
            // The one failure comes at once (the WAL fdatasyncs all the time), and the power
            // loss a moment after: what a retried fsync lost is gone for good only until a
            // snapshot covers it, a fraction of a second under load.
            let (rule, how, hold) = if variant == 0 {
                (
                    format!(r#"fdatasync(path="{log}")=1*fsyncgate"#),
                    "once, later ones succeed".to_owned(),
                    hold / 8,
                )
            } else {
                (
                    format!(r#"fdatasync(path="{log}")=fsyncgate"#),
                    format!("for {} ms", hold.as_millis()),
                    hold,
                )
            };
            with_fault_rule(cluster, node, &rule, hold).await?;
            cluster.lock().await.power_loss(node, "drop")?;
            Ok(format!(
                "WAL fdatasync fails (fsyncgate: EIO, dirty pages dropped) {how}; after {} ms power loss (drop), restarted",
                hold.as_millis()
            ))
        }
        Fault::SlowDisk => {
            let delay = 50 + rng.below(451);
            let rule = format!(r#"fdatasync(path="{log}")=delay({delay})"#);
            with_fault_rule(cluster, node, &rule, hold).await?;
            Ok(format!(
                "WAL fdatasync {delay} ms slower for {} ms",
                hold.as_millis()
            ))
        }
        Fault::WalWriteError => {
            let Some(rule) = attach_to_wal(cluster, node, hold, |fd| {
                format!("write(fd={fd})=error(EIO)")
            })
            .await?
            else {
                return Ok("wal-write-error skipped: node down".into());
            };
            cluster.lock().await.restart_node(node)?;
            Ok(format!(
                "WAL writes fail with EIO by `{rule}` for {} ms (injector, BPF LSM), then SIGKILL, restarted",
                hold.as_millis()
            ))
        }
        Fault::PowerLossAll => {
            let mode = ["drop", "torn", "reorder", "prefix"][rng.below(4) as usize];
            let mut cluster = cluster.lock().await;
            let size = cluster.nodes.len();
            for id in 1..=size {
                cluster.kill_node(id);
            }
            for id in 1..=size {
                cluster.power_loss(id, mode)?;
            }
            Ok(format!("power loss of every node ({mode}), restarted"))
        }
    }
}

/// Asks the leader to hand leadership to `node` (to the next node if `node` leads).
async fn transfer_leadership(cluster: &Arc<Mutex<Cluster>>, node: usize) -> Result<String> {
    let Some(leader) = leader(cluster).await else {
        return Ok("leader transfer skipped: no leader".into());
    };
    let (addr, size) = {
        let cluster = cluster.lock().await;
        (cluster.nodes[leader - 1].addr.clone(), cluster.nodes.len())
    };
    let to = if node == leader {
        leader % size + 1
    } else {
        node
    };
    let started = std::time::Instant::now();
    let answer = target_db_client::Client::new()
        .timeout(Duration::from_secs(12))
        .post(
            &addr,
            "/admin/transfer-leader",
            &serde_json::json!({"to": to}),
        )
        .await;
    Ok(match answer {
        Ok(answer) if answer["leader"].as_u64() == Some(to as u64) => format!(
            "leadership moved from n{leader} to n{to} (admin transfer-leader, {} ms)",
            started.elapsed().as_millis()
        ),
        Ok(answer) => format!("leader transfer n{leader} -> n{to} refused: {answer}"),
        Err(error) => format!("leader transfer n{leader} -> n{to}: {error}"),
    })
}

/// A crash point: `injector attach` kills the node at its Nth write or fdatasync of the
/// active WAL segment; a write never happens, an fdatasync completes before the death.
async fn wal_crash(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    rng: &mut SplitMix64,
) -> Result<String> {
    let call = ["write", "fdatasync"][rng.below(2) as usize];
    let skipped = rng.below(20);
    let Some(rule) = attach_to_wal(cluster, node, hold, |fd| {
        format!("{call}(fd={fd})={skipped}*off->1*kill")
    })
    .await?
    else {
        return Ok("wal-crash skipped: node down".into());
    };
    let mut cluster = cluster.lock().await;
    let Some(exit) = cluster.reap(node) else {
        return Ok(format!(
            "`{rule}` (injector): the node made fewer than {} such calls in {} ms",
            skipped + 1,
            hold.as_millis()
        ));
    };
    cluster.start_node(node)?;
    Ok(format!(
        "killed at WAL {call} #{} by `{rule}` (injector, {exit}), restarted",
        skipped + 1
    ))
}

/// `injector attach` of the rule `rule_for(fd)` for `hold`, where fd is the one through which the
/// node appends to its active WAL segment. Returns the rule, or None if the node is down.
pub(super) async fn attach_to_wal(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    rule_for: impl FnOnce(u32) -> String,
) -> Result<Option<String>> {
    let attach = {
        let cluster = cluster.lock().await;
        cluster.wal_fd(node).map(|fd| {
            let rule = rule_for(fd);
            let command = cluster.attach_command(node, &rule, hold);
            (rule, command)
        })
    };
    let Some((rule, mut command)) = attach else {
        return Ok(None);
    };
    let status = tokio::task::spawn_blocking(move || command.status()).await??;
    if !status.success() {
        bail!("injector attach `{rule}` failed: {status}");
    }
    Ok(Some(rule))
}

/// A follower stopped for a while, then started with one of its first log fdatasyncs failing
/// the way Linux fails them (EIO, the dirty pages dropped): catching up, it appends entries by
/// the hundred, so the pages lost are whole ones that no later append writes again. A database
/// that retries the fsync and goes on has acknowledged entries that are not on its disk, which
/// the power loss that follows exposes. Or, half the time, a follower killed mid-rotation and
/// restarted with its log directory's fsyncs failing: one that trusts the page cache's
/// directory loses the new log file it went on appending to.
async fn disk_error_while_catching_up(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    hold: Duration,
    rng: &mut SplitMix64,
) -> Result<String> {
    let follower = follower_near(cluster, node).await;
    if !cluster.lock().await.running(follower) {
        return Ok(format!(
            "n{follower}: disk error while catching up skipped: node down"
        ));
    }
    // Short enough that the leader still has the entries in its log (no snapshot is sent).
    let behind = Duration::from_millis(400 + rng.below(500));
    let skip = 1 + rng.below(3);
    let (log, log_dir) = {
        let cluster = cluster.lock().await;
        (cluster.target.log_glob(), cluster.target.log_dir())
    };
    // Half the time the kill is aimed at the fsync of the log's directory, if one comes within
    // a second: a rotation's new log file is then in the page cache's directory, not the
    // disk's. The restarted node must make what it finds durable before it relies on it; while
    // it catches up, its directory fsyncs fail, so the next rotation cannot make that name
    // durable by chance, and the power loss at the end takes whatever it was not made to sync.
    let aimed = if rng.below(2) == 0 {
        let rule = format!(r#"fsync(path="{log_dir}")=kill"#);
        super::crash_points::kill_at(cluster, follower, &rule, Duration::from_secs(1)).await?
    } else {
        None
    };
    let (how, rule, failing) = if aimed.is_some() {
        (
            "killed at its log directory's fsync",
            format!(r#"fsync(path="{log_dir}")=error(EIO)"#),
            "its log directory's fsyncs failing (EIO)".to_owned(),
        )
    } else {
        (
            "killed",
            format!(r#"fdatasync(path="{log}")={skip}*off->1*fsyncgate"#),
            format!(
                "its WAL fdatasync #{} failing once (fsyncgate: EIO, dirty pages dropped)",
                skip + 1
            ),
        )
    };
    cluster.lock().await.kill_node(follower);
    tokio::time::sleep(behind).await;
    let rule_id = {
        let mut cluster = cluster.lock().await;
        let rule_id = cluster.add_fault(follower, &rule)?;
        cluster.start_node(follower)?;
        rule_id
    };
    tokio::time::sleep(hold).await;
    let mut cluster = cluster.lock().await;
    cluster.remove_fault(follower, rule_id)?;
    cluster.power_loss(follower, "drop")?;
    Ok(format!(
        "n{follower} {how}, restarted {} ms later with {failing} while it caught up; after {} ms power loss (drop), restarted",
        behind.as_millis(),
        hold.as_millis()
    ))
}

/// A faultfs rule on the node's mount for `hold`, then removed.
pub(super) async fn with_fault_rule(
    cluster: &Arc<Mutex<Cluster>>,
    node: usize,
    rule: &str,
    hold: Duration,
) -> Result<()> {
    let rule_id = cluster.lock().await.add_fault(node, rule)?;
    tokio::time::sleep(hold).await;
    cluster.lock().await.remove_fault(node, rule_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_is_named_as_it_is_parsed() {
        for &fault in Fault::all() {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
            assert!(!fault.help().is_empty(), "{} has no help", fault.name());
        }
        assert_eq!(Fault::DiskError.name(), "disk-error");
        assert_eq!(Fault::PowerLossAll.name(), "power-loss-all");
    }

    /// The fault table of docs/torture.md names every fault and nothing else.
    #[test]
    fn the_fault_table_in_the_docs_lists_every_fault() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/torture.md"));
        let table = readme
            .split("| fault | what happens to the node, from outside |")
            .nth(1)
            .expect("docs/torture.md has the fault table");
        let mut listed: Vec<&str> = table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
            .collect();
        let mut names: Vec<&str> = Fault::all().iter().map(|f| f.name()).collect();
        listed.sort_unstable();
        names.sort_unstable();
        assert_eq!(listed, names);
    }

    #[test]
    fn the_deck_deals_every_kind_before_repeating_one() {
        let kinds = [Fault::Kill, Fault::Pause, Fault::Bitrot, Fault::DiskError];
        let mut deck = Deck::default();
        let mut rng = SplitMix64::new(5);
        for _ in 0..3 {
            let mut dealt: Vec<Fault> = (0..kinds.len())
                .map(|_| deck.draw(&kinds, &mut rng))
                .collect();
            dealt.sort_by_key(|f| format!("{f:?}"));
            let mut all = kinds.to_vec();
            all.sort_by_key(|f| format!("{f:?}"));
            assert_eq!(dealt, all);
        }
    }
}
