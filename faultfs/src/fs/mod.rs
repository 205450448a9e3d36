//! The FUSE side: each request is checked against the fault rules, then carried out on the
//! durability model. Delays and pauses run on their own thread and reply later, so a held
//! operation never blocks the others.
//!
//! Why this file is long: it is the `Filesystem` trait's implementation, one method per FUSE
//! request, which Rust keeps in one impl block; each method is the same few steps (`gated`,
//! the model call, trace, reply). `gate` is the rule decision every request passes, `shared`
//! what the requests share, `reply` the steps they share around the model.
use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use fault_rules::Corruption;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

mod gate;
mod reply;
mod shared;

use reply::*;
pub use shared::Shared;
use shared::*;

use crate::{
    faults::{Decision, Faults, Gate},
    journal::{Journal, NodeKind, Op},
    state::{FsResult, Ino, Inode, Kind, State},
    trace::{Record, Tracer},
};

/// How long the kernel may cache entries and attributes. Between power losses a live inode only
/// changes through the kernel itself, so caching is safe; a power loss gives every surviving
/// file a new inode number and invalidates every cached entry and inode (control.rs).
const TTL: Duration = Duration::from_secs(60);
/// File handles carry the epoch they were opened in (high bits), so a power loss invalidates
/// them all.
const EPOCH_SHIFT: u32 = 40;
/// A punched hole is written as zeros this many bytes at a time.
const PUNCH_CHUNK: u64 = 1 << 20;

pub struct FaultFs {
    shared: Arc<Shared>,
    writeback_cache: bool,
}

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        if self.writeback_cache
            && config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            tracing::warn!("this kernel has no FUSE writeback cache; writes go through one by one");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.shared.lock();
        let result = state.lookup(parent.0, name);
        reply_entry(reply, &self.shared, &state, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.shared.lock();
        match state.inode(ino.0) {
            Ok(inode) => reply.attr(&TTL, &attributes(ino.0, inode)),
            Err(errno) => reply.error(to_errno(errno)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        let body = move |shared: &Shared, gate: Gate| {
            let mut state = shared.lock();
            let result = fail(gate)
                .and_then(|()| fh.map_or(Ok(()), |fh| Shared::check_handle(&state, fh)))
                .and_then(|()| {
                    if let Some(size) = size {
                        let growth = size.saturating_sub(state.inode(ino)?.size);
                        shared.check_capacity(&state, growth)?;
                        state.truncate(ino, size)?;
                    }
                    state.set_attributes(ino, mode, (uid, gid), (atime.map(time), mtime.map(time)))
                });
            let op = if size.is_some() {
                "truncate"
            } else {
                "setattr"
            };
            shared.trace(&state, op, ino, None, (size, None), &result, false);
            if let (Ok(()), Some(size)) = (&result, size) {
                shared.record(&state, ino, None, || Op::Resize { ino, size });
            }
            if let (Ok(()), Some(mode)) = (&result, mode) {
                shared.record(&state, ino, None, || Op::Chmod {
                    ino,
                    mode: mode & 0o7777,
                });
            }
            match result.and_then(|()| state.inode(ino)) {
                Ok(inode) => reply.attr(&TTL, &attributes(ino, inode)),
                Err(errno) => reply.error(to_errno(errno)),
            }
        };
        if size.is_some() {
            self.gated(req.pid(), "truncate", ino, None, body);
        } else {
            body(&self.shared, Gate::Proceed);
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.shared.lock();
        match state.inode(ino.0) {
            Ok(inode) if inode.kind == Kind::Symlink => {
                reply.data(inode.target.as_os_str().as_encoded_bytes())
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(errno) => reply.error(to_errno(errno)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let owner = (req.uid(), req.gid());
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "mkdir",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let node = NewNode {
                    parent: parent.0,
                    name: &name,
                    kind: Kind::Dir,
                    mode: mode & !umask,
                    owner,
                    target: None,
                };
                let result = shared.create_node(&mut state, gate, "mkdir", node);
                reply_entry(reply, shared, &state, result);
            },
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let owner = (req.uid(), req.gid());
        let (name, target) = (link_name.to_owned(), target.to_owned());
        self.gated(
            req.pid(),
            "symlink",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let node = NewNode {
                    parent: parent.0,
                    name: &name,
                    kind: Kind::Symlink,
                    mode: 0o777,
                    owner,
                    target: Some(&target),
                };
                let result = shared.create_node(&mut state, gate, "symlink", node);
                reply_entry(reply, shared, &state, result);
            },
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "unlink",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let removed = state.lookup(parent.0, &name).ok();
                let result = fail(gate).and_then(|()| state.unlink(parent.0, &name));
                if let (Ok(()), Some(ino)) = (&result, removed) {
                    shared.record(&state, parent.0, Some(&name), || Op::Remove {
                        parent: parent.0,
                        name: name.to_string_lossy().into_owned(),
                        ino,
                    });
                }
                let traced = (None, None);
                shared.trace(
                    &state,
                    "unlink",
                    parent.0,
                    Some(&name),
                    traced,
                    &result,
                    false,
                );
                reply_empty(reply, result);
            },
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "rmdir",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let removed = state.lookup(parent.0, &name).ok();
                let result = fail(gate).and_then(|()| state.rmdir(parent.0, &name));
                if let (Ok(()), Some(ino)) = (&result, removed) {
                    shared.record(&state, parent.0, Some(&name), || Op::Remove {
                        parent: parent.0,
                        name: name.to_string_lossy().into_owned(),
                        ino,
                    });
                }
                shared.trace(
                    &state,
                    "rmdir",
                    parent.0,
                    Some(&name),
                    (None, None),
                    &result,
                    false,
                );
                reply_empty(reply, result);
            },
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (name, newname): (OsString, OsString) = (name.to_owned(), newname.to_owned());
        self.gated(
            req.pid(),
            "rename",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let moved = state.lookup(parent.0, &name).ok();
                let result = fail(gate).and_then(|()| {
                    state.rename(parent.0, &name, newparent.0, &newname, no_replace)
                });
                if let (Ok(()), Some(ino)) = (&result, moved) {
                    shared.record(&state, parent.0, Some(&name), || Op::Rename {
                        from_parent: parent.0,
                        from_name: name.to_string_lossy().into_owned(),
                        to_parent: newparent.0,
                        to_name: newname.to_string_lossy().into_owned(),
                        ino,
                    });
                }
                let traced = (None, None);
                shared.trace(
                    &state,
                    "rename",
                    parent.0,
                    Some(&name),
                    traced,
                    &result,
                    false,
                );
                reply_empty(reply, result);
            },
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = newname.to_owned();
        self.gated(
            req.pid(),
            "link",
            newparent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let result = fail(gate)
                    .and_then(|()| state.link(ino.0, newparent.0, &name))
                    .map(|()| ino.0);
                shared.trace(
                    &state,
                    "link",
                    newparent.0,
                    Some(&name),
                    (None, None),
                    &result,
                    false,
                );
                if result.is_ok() {
                    shared.record(&state, newparent.0, Some(&name), || Op::Link {
                        parent: newparent.0,
                        name: name.to_string_lossy().into_owned(),
                        ino: ino.0,
                    });
                }
                reply_entry(reply, shared, &state, result);
            },
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.gated(req.pid(), "open", ino.0, None, move |shared, gate| {
            let state = shared.lock();
            match fail(gate).and_then(|()| state.inode(ino.0).map(drop)) {
                Ok(()) => reply.opened(shared.new_handle(state.epoch), keep_cache(shared)),
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let owner = (req.uid(), req.gid());
        let name = name.to_owned();
        self.gated(
            req.pid(),
            "create",
            parent.0,
            Some(&name.clone()),
            move |shared, gate| {
                let mut state = shared.lock();
                let node = NewNode {
                    parent: parent.0,
                    name: &name,
                    kind: Kind::File,
                    mode: mode & !umask,
                    owner,
                    target: None,
                };
                let result = shared.create_node(&mut state, gate, "create", node);
                let result = result.and_then(|ino| Ok((ino, state.inode(ino)?)));
                match result {
                    Ok((ino, inode)) => {
                        shared.looked_up(ino);
                        reply.created(
                            &TTL,
                            &attributes(ino, inode),
                            Generation(state.epoch),
                            shared.new_handle(state.epoch),
                            keep_cache(shared),
                        )
                    }
                    Err(errno) => reply.error(to_errno(errno)),
                }
            },
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.gated(req.pid(), "read", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| state.read(ino.0, offset, size));
            let length = result.as_ref().ok().map(|data| data.len() as u64);
            shared.trace(
                &state,
                "read",
                ino.0,
                None,
                (Some(offset), length),
                &result,
                false,
            );
            drop(state);
            match result {
                Ok(mut data) => {
                    match gate {
                        Gate::Corrupt(Corruption::Zero) => data.fill(0),
                        Gate::Corrupt(Corruption::Flip) if !data.is_empty() => {
                            let middle = data.len() / 2;
                            data[middle] ^= 0x01;
                        }
                        _ => {}
                    }
                    reply.data(&data);
                }
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut data = data.to_vec();
        self.gated(req.pid(), "write", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            if let Gate::Short(bytes) = gate {
                data.truncate(bytes as usize);
            }
            let result = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| {
                    let end = offset + data.len() as u64;
                    let growth = end.saturating_sub(state.inode(ino.0)?.size);
                    shared.check_capacity(&state, growth)?;
                    let recorded = shared.journal.as_ref().map(|_| data.clone());
                    let written = state.write(ino.0, offset, data)?;
                    if let Some(data) = recorded {
                        shared.record(&state, ino.0, None, || Op::Write {
                            ino: ino.0,
                            offset,
                            data,
                        });
                    }
                    Ok(written)
                });
            let length = result.as_ref().ok().map(|&n| n as u64);
            shared.trace(
                &state,
                "write",
                ino.0,
                None,
                (Some(offset), length),
                &result,
                false,
            );
            match result {
                Ok(written) => reply.written(written as u32),
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.gated(req.pid(), "flush", ino.0, None, move |shared, gate| {
            let state = shared.lock();
            reply_empty(
                reply,
                fail(gate).and_then(|()| Shared::check_handle(&state, fh)),
            );
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = if datasync { "fdatasync" } else { "fsync" };
        self.gated(req.pid(), op, ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = Shared::check_handle(&state, fh).and_then(|()| match gate {
                Gate::Fail(errno) => Err(errno),
                Gate::Lose => Ok(()),
                Gate::Fsyncgate => state.mark_clean(ino.0).and(Err(libc::EIO)),
                _ => state.fsync(ino.0),
            });
            let durable = !matches!(gate, Gate::Lose);
            shared.trace(&state, op, ino.0, None, (None, None), &result, durable);
            if result.is_ok() && durable {
                shared.record(&state, ino.0, None, || Op::Fsync {
                    ino: ino.0,
                    data_only: datasync,
                });
            }
            reply_empty(reply, result);
        });
    }

    /// A regular file is always ready, as on a disk file system (answered here so fuser does
    /// not log every poll as unimplemented).
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        let ready = fuser::PollEvents::POLLIN
            | fuser::PollEvents::POLLOUT
            | fuser::PollEvents::POLLRDNORM
            | fuser::PollEvents::POLLWRNORM;
        reply.poll(events & ready);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let state = self.shared.lock();
        match state.inode(ino.0) {
            Ok(inode) if inode.kind == Kind::Dir => {
                reply.opened(self.shared.new_handle(state.epoch), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(errno) => reply.error(to_errno(errno)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.gated(req.pid(), "readdir", ino.0, None, move |shared, gate| {
            let state = shared.lock();
            let entries = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| state.inode(ino.0));
            let dir = match entries {
                Ok(dir) => dir,
                Err(errno) => return reply.error(to_errno(errno)),
            };
            let mut listings = shared.listings.lock().expect("listings poisoned");
            let listing = match listings.get(&fh.0) {
                Some(listing) if offset != 0 => listing.clone(),
                _ => {
                    let listing = Arc::new(list(&state, ino.0, dir));
                    listings.insert(fh.0, listing.clone());
                    listing
                }
            };
            drop(listings);
            for (index, (child, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*child), index as u64 + 1, *kind, name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared
            .listings
            .lock()
            .expect("listings poisoned")
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.gated(req.pid(), "fsync", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = Shared::check_handle(&state, fh).and_then(|()| match gate {
                Gate::Fail(errno) => Err(errno),
                Gate::Lose | Gate::Fsyncgate => Ok(()),
                _ => state.fsync(ino.0),
            });
            let durable = matches!(gate, Gate::Proceed);
            if result.is_ok() && durable {
                shared.record(&state, ino.0, None, || Op::FsyncDir { ino: ino.0 });
            }
            shared.trace(
                &state,
                "fsyncdir",
                ino.0,
                None,
                (None, None),
                &result,
                durable,
            );
            reply_empty(reply, result);
        });
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.gated(req.pid(), "statfs", ino.0, None, move |shared, gate| {
            if let Gate::Fail(errno) = gate {
                return reply.error(to_errno(errno));
            }
            let state = shared.lock();
            let path = PathBuf::from(state.statfs_path());
            let used = state.used_bytes();
            drop(state);
            match statvfs(&path) {
                Ok(mut stat) => {
                    let capacity = shared.capacity.load(Ordering::Relaxed);
                    if capacity != 0 {
                        let block = stat.f_frsize.max(1);
                        stat.f_blocks = capacity / block;
                        stat.f_bfree = capacity.saturating_sub(used) / block;
                        stat.f_bavail = stat.f_bfree;
                    }
                    reply.statfs(
                        stat.f_blocks,
                        stat.f_bfree,
                        stat.f_bavail,
                        stat.f_files,
                        stat.f_ffree,
                        stat.f_bsize as u32,
                        stat.f_namemax as u32,
                        stat.f_frsize as u32,
                    )
                }
                Err(errno) => reply.error(to_errno(errno)),
            }
        });
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Self::no_xattrs());
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Self::no_xattrs());
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Self::no_xattrs());
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Self::no_xattrs());
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.gated(req.pid(), "fallocate", ino.0, None, move |shared, gate| {
            let mut state = shared.lock();
            let result = fail(gate)
                .and_then(|()| Shared::check_handle(&state, fh))
                .and_then(|()| {
                    let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
                    let size = state.inode(ino.0)?.size;
                    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                    if mode == punch {
                        // Reads as zeros afterwards, like ext4's hole: an unsynced write of
                        // zeros here, a page at a time.
                        let mut at = offset;
                        while at < end.min(size) {
                            let chunk = (end.min(size) - at).min(PUNCH_CHUNK);
                            state.write(ino.0, at, vec![0; chunk as usize])?;
                            shared.record(&state, ino.0, None, || Op::Write {
                                ino: ino.0,
                                offset: at,
                                data: vec![0; chunk as usize],
                            });
                            at += chunk;
                        }
                        return Ok(());
                    }
                    if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                        return Err(libc::EOPNOTSUPP);
                    }
                    if mode & libc::FALLOC_FL_KEEP_SIZE != 0 || end <= size {
                        return Ok(());
                    }
                    shared.check_capacity(&state, end - size)?;
                    state.truncate(ino.0, end)?;
                    shared.record(&state, ino.0, None, || Op::Resize {
                        ino: ino.0,
                        size: end,
                    });
                    Ok(())
                });
            let range = (Some(offset), Some(length));
            shared.trace(&state, "fallocate", ino.0, None, range, &result, false);
            reply_empty(reply, result);
        });
    }
}
