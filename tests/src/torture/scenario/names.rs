//! The scenarios by name: the one list the command line, `--help` and the docs take them from.
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Kill the leader while clients write; restart it; nothing acknowledged may be lost.
    LeaderFailureDataConsistency,
    /// Isolate one follower: the majority keeps serving, the follower catches up after.
    PartitionMinority,
    /// Isolate the leader: the majority elects another; the old leader must not commit alone.
    PartitionMajority,
    /// Kill a follower long enough for the log to be purged past it; it rejoins from a snapshot.
    NodeRejoin,
    /// Every node loses power at once (torn writes), then all restart.
    PowerLossAll,
    /// Five nodes: two followers killed, then a third, so no quorum is left (writes must fail or
    /// stay unknown), then all restarted.
    MultipleFailures,
    /// The leader cut off, then killed while entries it accepted cannot commit; after healing
    /// they must not appear (no phantom, no duplicate).
    UncommittedEntries,
    /// The leader killed four times in a row; each time it is restarted as soon as another node
    /// is elected, and that one is the next to die.
    RapidLeaderChanges,
    /// The leader and a follower killed at the same moment (3 nodes: no quorum), both restarted.
    ConcurrentFailures,
    /// The leader cut off (a new one is elected), then the new leader cut off as the old one
    /// comes back: two nodes have each believed they lead; one history must come out.
    SplitBrainRecovery,
    /// The leader's disk made slow so many writes are in flight, then the leader killed.
    LeaderFailureUnderLoad,
    /// A follower killed, its unsynced state lost to a power loss while it is down, restarted:
    /// it recovers from its own disk and catches up.
    FollowerRecovery,
    /// A follower down long enough to need a snapshot, restarted; once caught up, it loses power,
    /// so it must recover from the snapshot it installed.
    SnapshotAfterFailure,
    /// The leader loses power in torn mode mid-append: the torn tail of its WAL is cut at restart.
    TornWalTail,
    /// The leader's WAL fdatasyncs fail as Linux fails them (EIO, dirty pages dropped), then it
    /// loses power.
    Fsyncgate,
    /// A follower killed inside a WAL fdatasync (injector), the record it was syncing silently
    /// corrupted (a put's key changed, the record still parses), then restarted: only the CRC
    /// tells the damage, so a database that skips it diverges.
    WalBitrot,
    /// A follower down until the leader's log is purged past it, so it catches up from a
    /// snapshot; its storage stops as it renames the received snapshot into place, and it loses
    /// power: the log it had must still be there (the snapshot never made it to disk).
    SnapshotInstallCrash,
    /// A follower killed as it fsyncs its log's directory in a rotation, so the new log file is
    /// named in the page cache only; restarted with its directory fsyncs failing, it catches
    /// up, then loses power: what it recovered and relied on must have been made durable.
    KilledMidRotation,
}

pub const NAMES: &[&str] = &[
    "leader-failure-data-consistency",
    "partition-minority",
    "partition-majority",
    "node-rejoin",
    "power-loss-all",
    "multiple-failures",
    "uncommitted-entries",
    "rapid-leader-changes",
    "concurrent-failures",
    "split-brain-recovery",
    "leader-failure-under-load",
    "follower-recovery",
    "snapshot-after-failure",
    "torn-wal-tail",
    "fsyncgate",
    "wal-bitrot",
    "snapshot-install-crash",
    "killed-mid-rotation",
];

const ALL: [Scenario; 18] = [
    Scenario::LeaderFailureDataConsistency,
    Scenario::PartitionMinority,
    Scenario::PartitionMajority,
    Scenario::NodeRejoin,
    Scenario::PowerLossAll,
    Scenario::MultipleFailures,
    Scenario::UncommittedEntries,
    Scenario::RapidLeaderChanges,
    Scenario::ConcurrentFailures,
    Scenario::SplitBrainRecovery,
    Scenario::LeaderFailureUnderLoad,
    Scenario::FollowerRecovery,
    Scenario::SnapshotAfterFailure,
    Scenario::TornWalTail,
    Scenario::Fsyncgate,
    Scenario::WalBitrot,
    Scenario::SnapshotInstallCrash,
    Scenario::KilledMidRotation,
];

impl Scenario {
    pub fn name(self) -> &'static str {
        NAMES[ALL
            .iter()
            .position(|&s| s == self)
            .expect("every scenario is in ALL")]
    }

    /// Why the script works only on target-db, if it does: it reads target-db's log records or
    /// its status's compaction fields.
    pub fn needs_target_db(self) -> Option<&'static str> {
        match self {
            Scenario::WalBitrot => Some("it rewrites a record in target-db's log format"),
            Scenario::SnapshotInstallCrash => {
                Some("it waits for target-db's status to say the log was compacted")
            }
            _ => None,
        }
    }

    /// The smallest cluster the script makes sense on.
    pub fn min_nodes(self) -> usize {
        if self == Scenario::MultipleFailures {
            5
        } else {
            3
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .position(|&name| name == text)
            .map(|i| ALL[i])
            .ok_or_else(|| {
                format!(
                    "unknown scenario `{text}`: choose from {}",
                    NAMES.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_its_scenario_and_back() {
        assert_eq!(NAMES.len(), ALL.len());
        for name in NAMES {
            assert_eq!(name.parse::<Scenario>().unwrap().name(), *name);
        }
        let error = "leader-flap".parse::<Scenario>().unwrap_err();
        assert!(error.contains("fsyncgate"), "{error}");
    }
}
