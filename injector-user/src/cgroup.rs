//! `--cgroup PATH`: the tasks of one cgroup v2 as the target, matched in the kernel by cgroup
//! id (the directory's inode number), so processes that join it later are targets too.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// The root of a cgroup v2 hierarchy: every task on the machine, the injector included.
const ROOT_CGROUP_ID: u64 = 1;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "{path}: {source}; pass the directory of a cgroup v2, e.g. /sys/fs/cgroup/unified/my-db"
    )]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a cgroup v2 directory; pass one under the cgroup2 mount (see `grep cgroup2 /proc/mounts`)"
    )]
    NotCgroup2 { path: String },
    #[error(
        "{path} is the root cgroup, which holds every process on the machine; make a cgroup for the processes under test and pass that"
    )]
    Root { path: String },
    #[error("{path} holds the injector itself; run the injector outside the cgroup under test")]
    HoldsInjector { path: String },
    #[error(
        "no cgroup2 file system is mounted (none in /proc/mounts); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoCgroup2Mount,
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on hybrid machines).
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(|source| CgroupError::Unreadable {
            path: "/proc/mounts".into(),
            source,
        })?;
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .ok_or(CgroupError::NoCgroup2Mount)
}

#[derive(Clone, Debug)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl Cgroup {
    pub fn open(path: &Path) -> Result<Cgroup, CgroupError> {
        let shown = path.display().to_string();
        let unreadable = |source| CgroupError::Unreadable {
            path: shown.clone(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        if !metadata.is_dir() || statfs_type(path).map_err(unreadable)? != CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::NotCgroup2 { path: shown });
        }
        let id = metadata.ino();
        if id == ROOT_CGROUP_ID {
            return Err(CgroupError::Root { path: shown });
        }
        let procs = std::fs::read_to_string(path.join("cgroup.procs")).map_err(unreadable)?;
        let me = std::process::id().to_string();
        if procs.lines().any(|pid| pid.trim() == me) {
            return Err(CgroupError::HoldsInjector { path: shown });
        }
        Ok(Cgroup {
            path: path.to_owned(),
            id,
        })
    }
}

fn statfs_type(path: &Path) -> std::io::Result<i64> {
    Ok(rustix::fs::statfs(path)?.f_type)
}
