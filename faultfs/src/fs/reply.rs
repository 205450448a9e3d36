//! The steps the FUSE methods share around the model: a directory's listing, an inode's
//! attributes, the reply for a result, the open flags, the backing file system's statvfs.
use super::*;

/// The entries of directory `ino` now, "." and ".." first.
pub(super) fn list(state: &State, ino: Ino, dir: &Inode) -> Listing {
    let parent = dir.links.first().map_or(ino, |(p, _)| *p);
    let mut listing: Listing = vec![
        (ino, FileType::Directory, ".".into()),
        (parent, FileType::Directory, "..".into()),
    ];
    for (name, &child) in &dir.children {
        let kind = match state.inode(child).map(|c| c.kind) {
            Ok(Kind::Dir) => FileType::Directory,
            Ok(Kind::Symlink) => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        listing.push((child, kind, name.clone()));
    }
    listing
}

/// How a file is opened: the kernel keeps the pages it cached across opens (warm reads never
/// reach faultfs, as on a disk file system; a power loss invalidates them), unless a rule on
/// `read` is active, which must see the reads: the open then drops the file's cached pages.
pub(super) fn keep_cache(shared: &Shared) -> FopenFlags {
    if shared.faults.has_rules_for("read") {
        FopenFlags::empty()
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

pub(super) fn fail(gate: Gate) -> FsResult<()> {
    match gate {
        Gate::Fail(errno) => Err(errno),
        _ => Ok(()),
    }
}

pub(super) fn to_errno(errno: i32) -> Errno {
    Errno::from_i32(errno)
}

pub fn attributes(ino: Ino, inode: &Inode) -> FileAttr {
    let (kind, size, nlink) = match inode.kind {
        Kind::File => (FileType::RegularFile, inode.size, inode.links.len() as u32),
        Kind::Dir => (FileType::Directory, 4096, 2),
        Kind::Symlink => (FileType::Symlink, inode.target.as_os_str().len() as u64, 1),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: inode.atime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.ctime,
        kind,
        perm: inode.mode as u16,
        nlink,
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn reply_entry(
    reply: ReplyEntry,
    shared: &Shared,
    state: &State,
    result: FsResult<Ino>,
) {
    match result.and_then(|ino| Ok((ino, state.inode(ino)?))) {
        Ok((ino, inode)) => {
            shared.looked_up(ino);
            reply.entry(&TTL, &attributes(ino, inode), Generation(state.epoch))
        }
        Err(errno) => reply.error(to_errno(errno)),
    }
}

pub(super) fn reply_empty(reply: ReplyEmpty, result: FsResult<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(to_errno(errno)),
    }
}

pub(super) fn time(value: TimeOrNow) -> SystemTime {
    match value {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

// Extended attributes are not modelled. ENOSYS (answered here without fuser's logged default)
// makes the kernel stop asking: otherwise it asks for security.capability before every write.
impl FaultFs {
    pub(super) fn no_xattrs() -> Errno {
        Errno::ENOSYS
    }
}

/// statvfs of a path.
pub(super) fn statvfs(path: &Path) -> FsResult<rustix::fs::StatVfs> {
    rustix::fs::statvfs(path).map_err(|errno| errno.raw_os_error())
}
