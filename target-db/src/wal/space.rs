//! Disk space for the log: blocks allocated ahead (so a full disk shows at allocation, not in the
//! middle of an append), and telling a full disk from other write errors.
use std::{fs::File, io::Write, path::Path};

use super::{WalError, io};

pub(super) fn no_space_or(error: std::io::Error, what: &'static str, path: &Path) -> WalError {
    if is_no_space(&error) {
        WalError::NoSpace {
            path: path.to_owned(),
        }
    } else {
        io(what, path)(error)
    }
}

/// Gives the file `len` bytes of real blocks, so freeing them later really frees space.
pub(super) fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => return Ok(()),
        Err(errno) if errno != rustix::io::Errno::OPNOTSUPP => return Err(errno.into()),
        Err(_) => {}
    }
    // A file system without fallocate (some FUSE ones): write the zeros out.
    let zeros = vec![0u8; 64 << 10];
    let mut written = 0;
    let mut writer = file;
    while written < len {
        let n = zeros.len().min((len - written) as usize);
        writer.write_all(&zeros[..n])?;
        written += n as u64;
    }
    file.sync_data()
}

/// A full disk (or quota): the one write error that says nothing about what is already on disk.
pub fn is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}
