//! What can go wrong with the log: corruption, a missing segment, a full disk, any other I/O.
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WalError {
    #[error(
        "corrupt write-ahead log: {reason} at offset {offset} of {}; committed entries would be \
         lost, so the node will not start (restore the data directory, or remove the node and \
         let it rejoin empty)",
        file.display()
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    /// A whole segment is gone: what it held (acknowledged entries among it) cannot be known.
    #[error(
        "write-ahead log incomplete: {reason} in {}; acknowledged entries may be lost, so the \
         node will not start (restore the data directory, or remove the node and let it rejoin \
         with an empty one)",
        dir.display()
    )]
    Missing { dir: PathBuf, reason: String },
    /// A write found the disk full. The segment was cut back to where it was, so the log on
    /// disk is exactly what it was before the append; the same append may be tried again.
    #[error("no space left to append to {}; the append was undone and can be retried", path.display())]
    NoSpace { path: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_owned();
    move |source| WalError::Io { what, path, source }
}
