//! Each database's classes of files, by globs on a node's faultfs mount: where crash points go.
/// A class of a node's files, by a glob relative to its faultfs mount.
#[derive(Clone, Copy, Debug)]
pub struct FileClass {
    pub name: &'static str,
    pub glob: &'static str,
}

/// target-db's data directory (`db/` on each mount): its log segments (and their directory),
/// its snapshot (and its directory), and what sits at the top (marker files; a call on the
/// wal/ or state/ directory itself, such as its fsync, also counts here).
pub const TARGET_DB_CLASSES: &[FileClass] = &[
    FileClass {
        name: "wal",
        glob: "db/wal/**",
    },
    FileClass {
        name: "snapshot",
        glob: "db/state/**",
    },
    FileClass {
        name: "metadata",
        glob: "db/*",
    },
];

/// etcd's data directory: its WAL (`member/wal`), its snapshots and bbolt database
/// (`member/snap`), and what sits in `member/` (calls on those two directories themselves).
pub const ETCD_CLASSES: &[FileClass] = &[
    FileClass {
        name: "wal",
        glob: "db/member/wal/**",
    },
    FileClass {
        name: "snapshot",
        glob: "db/member/snap/**",
    },
    FileClass {
        name: "metadata",
        glob: "db/member/*",
    },
];
