//! A data directory belongs to one node of one cluster for life: the first start records both,
//! and a later start with another node id or cluster name is refused before anything is read.
use std::{fs, io::Write, path::Path};

use thiserror::Error;

use crate::types::NodeId;

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error(
        "{dir} holds the data of node {found}, not node {wanted}: use that id, or another data directory"
    )]
    OtherNode {
        dir: String,
        found: String,
        wanted: NodeId,
    },
    #[error(
        "{dir} holds the data of cluster `{found}`, not `{wanted}`: pass --cluster {found}, or use another data directory"
    )]
    OtherCluster {
        dir: String,
        found: String,
        wanted: String,
    },
    #[error(
        "{dir} holds the data of node {id}, but its write-ahead log ({dir}/wal) is gone: its \
         votes and acknowledged entries are lost, so it will not start (restore the directory, \
         or remove the node from the cluster and let it rejoin with an empty one)"
    )]
    LogMissing { dir: String, id: NodeId },
    #[error(
        "{dir} was written by an older target-db (log format {found}; this one reads format \
         {LOG_FORMAT}, where a log id names its leader by term alone, as Raft has one leader per \
         term): start this node with an empty data directory, or run the older version"
    )]
    OtherFormat { dir: String, found: String },
    #[error(
        "fsync of {path} before recovery failed: {source}. An earlier process's writes may be \
         in the page cache only, never on the disk, so this node will not read them as \
         durable; check the disk, then start the node again"
    )]
    NotDurable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {dir}: {source}")]
    Io {
        what: &'static str,
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// The format of the log and snapshots in a data directory. Format 2: openraft's
/// `single-term-leader` log ids (a term and an index); format 1 (no marker) named the leader's
/// node too, and its records do not read as format 2.
pub const LOG_FORMAT: &str = "2";

fn io_error(dir: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> DataDirError {
    let dir = dir.display().to_string();
    move |source| DataDirError::Io { what, dir, source }
}

/// Creates `dir` and its missing parents, each new one made durable by an fsync of its parent:
/// POSIX makes a new directory's name durable only with its parent's fsync (ext4 does it with
/// the directory's own, which POSIX does not promise), and a power loss would otherwise take
/// the whole directory with everything synced in it. The parent of `dir` itself is synced
/// even when `dir` exists, in case an earlier start crashed between the two.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.is_dir() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for new in missing.iter().rev() {
        match fs::create_dir(new) {
            // Made meanwhile by another process: fine if it is a directory.
            Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists || !new.is_dir() => {
                return Err(error);
            }
            _ => sync_parent(new)?,
        }
    }
    if missing.is_empty() {
        sync_parent(dir)?;
    }
    Ok(())
}

fn sync_parent(dir: &Path) -> std::io::Result<()> {
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(parent)?.sync_all()
}

/// Makes everything in `dir` durable before recovery reads it: every file and directory,
/// fsynced. A process killed between its write and its fsync leaves the write in the page
/// cache, where the next process reads it as if it were on disk; a node that then vouches for
/// it (a follower telling its leader its log matches) loses what it vouched for in a power
/// loss, or in the failed fsync that drops those pages (fsyncgate). PostgreSQL fsyncs its
/// data directory at the start of crash recovery for the same reason. If an fsync fails, the
/// page cache may hold writes the disk lost, so the node refuses to start.
pub fn sync_before_reading(dir: &Path) -> Result<(), DataDirError> {
    let not_durable = |path: &Path| {
        let path = path.display().to_string();
        move |source| DataDirError::NotDurable { path, source }
    };
    if !dir.exists() {
        return Ok(());
    }
    let mut directories = vec![dir.to_owned()];
    while let Some(directory) = directories.pop() {
        for entry in fs::read_dir(&directory).map_err(not_durable(&directory))? {
            let entry = entry.map_err(not_durable(&directory))?;
            let kind = entry.file_type().map_err(not_durable(&entry.path()))?;
            if kind.is_dir() {
                directories.push(entry.path());
            } else if kind.is_file() {
                let path = entry.path();
                fs::File::open(&path)
                    .and_then(|file| file.sync_all())
                    .map_err(not_durable(&path))?;
            }
        }
        // After its files: a name is durable once its directory is synced.
        fs::File::open(&directory)
            .and_then(|handle| handle.sync_all())
            .map_err(not_durable(&directory))?;
    }
    Ok(())
}

/// Refuses a directory of another node or cluster, and one this node used before whose log is
/// gone; called before anything in it is read or created.
pub fn check_claim(dir: &Path, cluster: &str, id: NodeId) -> Result<(), DataDirError> {
    let shown = dir.display().to_string();
    let io = |what| io_error(dir, what);
    create_dir_durably(dir).map_err(io("creating"))?;
    let claimed = read_marker(dir, "node-id").map_err(io("reading node-id in"))?;
    if let Some(found) = &claimed
        && *found != id.to_string()
    {
        return Err(DataDirError::OtherNode {
            dir: shown,
            found: found.clone(),
            wanted: id,
        });
    }
    if let Some(found) = read_marker(dir, "cluster").map_err(io("reading cluster in"))?
        && found != cluster
    {
        return Err(DataDirError::OtherCluster {
            dir: shown,
            found,
            wanted: cluster.to_owned(),
        });
    }
    // The claim is recorded only once the log exists (see `record_claim`).
    if claimed.is_some() {
        if !dir.join("wal").exists() {
            return Err(DataDirError::LogMissing { dir: shown, id });
        }
        let format = read_marker(dir, "log-format").map_err(io("reading log-format in"))?;
        if format.as_deref() != Some(LOG_FORMAT) {
            return Err(DataDirError::OtherFormat {
                dir: shown,
                found: format.unwrap_or_else(|| "1".to_owned()),
            });
        }
    }
    Ok(())
}

/// Records that the directory is this node's, once its log exists.
pub fn record_claim(dir: &Path, cluster: &str, id: NodeId) -> Result<(), DataDirError> {
    let io = |what| io_error(dir, what);
    write_marker(dir, "log-format", LOG_FORMAT).map_err(io("recording the log format in"))?;
    write_marker(dir, "cluster", cluster).map_err(io("recording the cluster in"))?;
    write_marker(dir, "node-id", &id.to_string()).map_err(io("recording the node id in"))
}

fn read_marker(dir: &Path, name: &str) -> std::io::Result<Option<String>> {
    match fs::read_to_string(dir.join(name)) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Writes a marker file unless it already says `value`. Its contents must be durable before its
/// name is: a torture run with power loss found nodes refusing to start over an empty node-id.
fn write_marker(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    if read_marker(dir, name)?.as_deref() == Some(value) {
        return Ok(());
    }
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&temporary)?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parents_and_refuses_a_file_in_the_way() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b/c");
        create_dir_durably(&nested).unwrap();
        assert!(nested.is_dir());
        // Again: nothing to create, the parent synced once more.
        create_dir_durably(&nested).unwrap();
        let file = root.path().join("file");
        fs::write(&file, b"x").unwrap();
        for inside_or_at in [file.join("d"), file] {
            let error = create_dir_durably(&inside_or_at).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists, "{error}");
        }
    }
}
