//! The kinds of fault the nemesis applies: one enum, from which the command line, `--help` and
//! the fault table in docs/torture.md come.
use std::str::FromStr;

use crate::torture::target::Target;

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
    /// A commit point announced before a majority's disks held it: the followers that would
    /// lose the next election cut off, the others cut off from the leader for less than an
    /// election timeout (entries pile up in it); as that heals, its storage stops right after
    /// its next log write (before the fsync; its network runs on), then it loses power while
    /// the followers that kept up are frozen (SIGSTOP) until it and the cut-off ones elect,
    /// and they resume: what they applied must be what the new majority holds.
    StalledLeader,
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

impl Fault {
    /// Why this fault cannot be applied to `target`, if it cannot: it needs the database's own
    /// admin calls or the layout of its files (crash points need only its classes of files).
    pub fn refused_by(self, target: &Target) -> Option<&'static str> {
        if target.is_target_db() || (self == Fault::CrashPoint && !target.file_classes().is_empty())
        {
            return None;
        }
        needs_internals(self)
    }
}

/// Why a fault needs a database's internals, if it does: only target-db's are known.
fn needs_internals(fault: Fault) -> Option<&'static str> {
    match fault {
        Fault::Kill
        | Fault::KillMany
        | Fault::Pause
        | Fault::Partition
        | Fault::PacketLoss
        | Fault::SlowNetwork
        | Fault::FlakyNetwork
        | Fault::PowerLoss
        | Fault::PowerLossAll
        | Fault::DiskError
        | Fault::FsyncError
        | Fault::DiskFull
        | Fault::SlowDisk => None,
        Fault::WalCrash | Fault::WalWriteError | Fault::Bitrot | Fault::Corruption => {
            Some("it knows target-db's log record format and segment names")
        }
        Fault::CrashPoint => {
            Some("crash points need the database's classes of files, which a spec does not give")
        }
        Fault::LeaderTransfer | Fault::Membership => Some("it uses target-db's admin calls"),
        Fault::DeposedLeader => Some("it reads target-db's uncommitted-entry counters"),
        Fault::StalledLeader => Some("it stops target-db's log at a write"),
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
}
