//! The durability model. The backing directory is the disk: it always holds exactly the durable
//! state. Everything a program changes lives in the live state (an in-memory namespace plus a
//! private store of file contents) until POSIX says it is durable:
//!
//! - a file's data and size: after fsync/fdatasync of that file;
//! - a directory entry: after fsync of its directory (`--metadata ext4` also makes a file's own
//!   entry durable when the file is fsynced, as ext4's journal does).
//!
//! Each inode remembers both its live names and its durable names, so a rename, a hard link or
//! an unlink becomes durable per directory, as on a real file system.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ffi::{OsStr, OsString},
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::Serialize;

use crate::ranges::RangeSet;

pub type Ino = u64;
pub const ROOT: Ino = 1;
pub type Errno = i32;
pub type FsResult<T> = Result<T, Errno>;

pub fn errno(error: io::Error) -> Errno {
    error.raw_os_error().unwrap_or(libc::EIO)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// When a file's own directory entry becomes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetadataMode {
    /// Only an fsync of the parent directory makes an entry durable: all POSIX promises, so
    /// the strictest (the default; `strict` is its old name).
    #[value(alias = "strict")]
    #[serde(alias = "strict")]
    Posix,
    /// An fsync of a file also makes its entry (and its parents' entries) durable, like ext4.
    Ext4,
}

pub struct Inode {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Live names: (parent, name). A directory has one; an unlinked open file none.
    pub links: Vec<(Ino, OsString)>,
    pub children: BTreeMap<OsString, Ino>,
    pub target: PathBuf,
    pub size: u64,
    /// The live content once modified; until then it equals the durable content.
    live: Option<File>,
    /// Durable names, mirrored in the backing directory.
    pub durable_links: Vec<(Ino, OsString)>,
    pub durable_children: BTreeMap<OsString, Ino>,
    /// Durable content of a file that has no durable name (fsynced but not yet linked).
    staged: Option<PathBuf>,
    dirty: RangeSet,
    size_dirty: bool,
    /// Mode or owner changed since they were last made durable (at the next fsync).
    attributes_dirty: bool,
    /// The open durable file and its size, so an fsync costs no open() or needless truncate.
    /// Dropped whenever the inode's durable names change.
    durable_file: Option<(PathBuf, File, u64)>,
}

impl Inode {
    fn new(kind: Kind, mode: u32, uid: u32, gid: u32) -> Self {
        let now = SystemTime::now();
        Self {
            kind,
            mode,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            links: Vec::new(),
            children: BTreeMap::new(),
            target: PathBuf::new(),
            size: 0,
            live: None,
            durable_links: Vec::new(),
            durable_children: BTreeMap::new(),
            staged: None,
            dirty: RangeSet::default(),
            size_dirty: false,
            attributes_dirty: false,
            durable_file: None,
        }
    }

    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.size_dirty
    }
}

/// An operation not yet durable, kept so a power loss can let a chosen subset survive.
#[derive(Clone, Debug)]
pub enum Unsynced {
    Write {
        ino: Ino,
        offset: u64,
        data: Vec<u8>,
    },
    Truncate {
        ino: Ino,
        size: u64,
    },
    /// Directory entries one namespace operation set, all or none: `(dir, name, inode)`, no
    /// inode for a removed entry. A rename is one record, so it survives whole or not at all.
    Entries {
        changes: Vec<EntryChange>,
    },
}

pub type EntryChange = (Ino, OsString, Option<Ino>);

impl Unsynced {
    /// The file whose data the operation changes (none for directory entries).
    /// Whether the record needs inode `ino` at a power loss (its data, or an entry naming it).
    fn mentions(&self, ino: Ino) -> bool {
        match self {
            Unsynced::Entries { changes } => changes.iter().any(|(_, _, i)| *i == Some(ino)),
            _ => self.data_ino() == Some(ino),
        }
    }

    pub fn data_ino(&self) -> Option<Ino> {
        match self {
            Unsynced::Write { ino, .. } | Unsynced::Truncate { ino, .. } => Some(*ino),
            Unsynced::Entries { .. } => None,
        }
    }
}

/// What survives of one unsynced operation at a power loss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Survival {
    Dropped,
    Whole,
    /// Byte ranges of a write's data (relative to its offset) that reached the disk.
    Parts(Vec<(u64, u64)>),
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub dirty_files: usize,
    pub dirty_bytes: u64,
    pub unsynced_operations: usize,
    pub entries_not_durable: usize,
    pub epoch: u64,
    /// Files whose content faultfs holds a live copy of (a descriptor and a store file each).
    pub live_copies: usize,
}

pub struct State {
    backing: PathBuf,
    store: PathBuf,
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    /// Durable directories whose move is under way, waiting for their new place to be vacated
    /// (`remove_durable_entry`).
    moving: Vec<Ino>,
    log: Vec<Unsynced>,
    /// Under `--metadata posix`, the entries `(dir, name) -> directory` on the disk only
    /// because the directory itself was synced (its entries need a place there): POSIX does not
    /// make a directory's own entry durable until its parent is synced, so a power loss takes
    /// each one away again unless its own record survives.
    provisional: HashMap<(Ino, OsString), Ino>,
    /// True while a power loss replays the surviving records: a file one record takes the
    /// name from may get one again from a later record, whatever its live names are now.
    replaying: bool,
    /// How many records in `log` are directory entries (to skip looking when there are none).
    entry_records: usize,
    pub metadata: MetadataMode,
    pub durable_backing: bool,
    /// Bumped by every power loss; file handles from an older epoch fail with EIO.
    pub epoch: u64,
}

impl State {
    /// Serves `backing` as it is on disk; `store` is a private, empty directory for live data.
    pub fn load(backing: &Path, store: &Path, metadata: MetadataMode) -> io::Result<State> {
        let mut state = State {
            backing: backing.to_owned(),
            store: store.to_owned(),
            inodes: HashMap::new(),
            next_ino: ROOT + 1,
            moving: Vec::new(),
            log: Vec::new(),
            provisional: HashMap::new(),
            replaying: false,
            entry_records: 0,
            metadata,
            durable_backing: false,
            epoch: 0,
        };
        state.rebuild_from_backing()?;
        Ok(state)
    }

    fn rebuild_from_backing(&mut self) -> io::Result<()> {
        self.inodes.clear();
        self.log.clear();
        self.provisional.clear();
        self.entry_records = 0;
        let meta = fs::metadata(&self.backing)?;
        let mut root = Inode::new(Kind::Dir, meta.mode() & 0o7777, meta.uid(), meta.gid());
        root.mtime = meta.modified()?;
        self.inodes.insert(ROOT, root);
        let mut pending: VecDeque<(Ino, PathBuf)> = VecDeque::from([(ROOT, self.backing.clone())]);
        // A file durable under two names (renamed, and both directories synced apart) is one
        // file with two links on the disk: one inode here too, or a write through one name
        // would show through the other without the kernel knowing.
        let mut linked: HashMap<u64, Ino> = HashMap::new();
        while let Some((dir, path)) = pending.pop_front() {
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let meta = fs::symlink_metadata(entry.path())?;
                let name = entry.file_name();
                if meta.is_file()
                    && meta.nlink() > 1
                    && let Some(&ino) = linked.get(&meta.ino())
                {
                    let inode = self.inodes.get_mut(&ino).expect("linked inodes are loaded");
                    inode.links.push((dir, name.clone()));
                    inode.durable_links.push((dir, name.clone()));
                    let parent = self.inodes.get_mut(&dir).expect("parent loaded first");
                    parent.children.insert(name.clone(), ino);
                    parent.durable_children.insert(name, ino);
                    continue;
                }
                let kind = if meta.is_dir() {
                    Kind::Dir
                } else if meta.file_type().is_symlink() {
                    Kind::Symlink
                } else if meta.is_file() {
                    Kind::File
                } else {
                    continue;
                };
                let ino = self.next_ino;
                self.next_ino += 1;
                let mut inode = Inode::new(kind, meta.mode() & 0o7777, meta.uid(), meta.gid());
                inode.mtime = meta.modified()?;
                inode.atime = meta.accessed()?;
                inode.size = if kind == Kind::File { meta.len() } else { 0 };
                if kind == Kind::Symlink {
                    inode.target = fs::read_link(entry.path())?;
                }
                inode.links.push((dir, name.clone()));
                inode.durable_links.push((dir, name.clone()));
                self.inodes.insert(ino, inode);
                if kind == Kind::File && meta.nlink() > 1 {
                    linked.insert(meta.ino(), ino);
                }
                let parent = self.inodes.get_mut(&dir).expect("parent loaded first");
                parent.children.insert(name.clone(), ino);
                parent.durable_children.insert(name, ino);
                if kind == Kind::Dir {
                    pending.push_back((ino, entry.path()));
                }
            }
        }
        Ok(())
    }

    // Inodes only disappear at a power loss: anything still referring to one is from before it,
    // and gets EIO like a handle on a device that went away.
    pub fn inode(&self, ino: Ino) -> FsResult<&Inode> {
        self.inodes.get(&ino).ok_or(libc::EIO)
    }

    fn inode_mut(&mut self, ino: Ino) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(libc::EIO)
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Ino> {
        let dir = self.inode(parent)?;
        if dir.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        dir.children.get(name).copied().ok_or(libc::ENOENT)
    }

    /// The inode's live path relative to the mount (its first name), for fault rules and logs.
    pub fn path_of(&self, ino: Ino) -> PathBuf {
        let mut parts = Vec::new();
        let mut current = ino;
        while let Some((parent, name)) = self.inodes.get(&current).and_then(|i| i.links.first()) {
            parts.push(name.clone());
            current = *parent;
        }
        parts.iter().rev().collect()
    }

    fn durable_path(&self, ino: Ino) -> Option<PathBuf> {
        if ino == ROOT {
            return Some(self.backing.clone());
        }
        let (parent, name) = self.inodes.get(&ino)?.durable_links.first()?;
        Some(self.durable_path(*parent)?.join(name))
    }

    /// Where the inode's durable content is, if it has any.
    fn durable_content(&self, ino: Ino) -> Option<PathBuf> {
        self.durable_path(ino)
            .or_else(|| self.inodes.get(&ino)?.staged.clone())
    }

    // ---- live namespace ----

    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        owner: (u32, u32),
        target: Option<&Path>,
    ) -> FsResult<Ino> {
        match self.lookup(parent, name) {
            Ok(_) => return Err(libc::EEXIST),
            Err(libc::ENOENT) => {}
            Err(other) => return Err(other),
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut inode = Inode::new(kind, mode & 0o7777, owner.0, owner.1);
        if kind == Kind::File {
            inode.live = Some(self.new_store_file(ino)?);
        }
        if let Some(target) = target {
            inode.target = target.to_owned();
        }
        inode.links.push((parent, name.to_owned()));
        self.inodes.insert(ino, inode);
        let dir = self.inode_mut(parent)?;
        dir.children.insert(name.to_owned(), ino);
        dir.mtime = SystemTime::now();
        self.log_entries(vec![(parent, name.to_owned(), Some(ino))]);
        Ok(ino)
    }

    fn log_entries(&mut self, changes: Vec<EntryChange>) {
        self.log.push(Unsynced::Entries { changes });
        self.entry_records += 1;
    }

    fn new_store_file(&self, ino: Ino) -> FsResult<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.store.join(format!("live-{ino}")))
            .map_err(errno)
    }

    /// The kernel holds no reference to `ino` any more. A file with no live name can never be
    /// reached again: its live content (a descriptor and a store file) and its cached durable
    /// descriptor go, and so does the inode, with its staged content, unless a power loss may
    /// still need it (a durable name whose unlink is not synced, or an unsynced record).
    pub fn forgotten(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        if ino == ROOT || inode.kind == Kind::Dir || !inode.links.is_empty() {
            return;
        }
        inode.live = None;
        inode.durable_file = None;
        let needed = !inode.durable_links.is_empty();
        let _ = fs::remove_file(self.store.join(format!("live-{ino}")));
        if needed || self.log.iter().any(|op| op.mentions(ino)) {
            return;
        }
        if let Some(staged) = self.inodes.remove(&ino).and_then(|inode| inode.staged) {
            let _ = fs::remove_file(staged);
        }
    }

    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        if self.inode(ino)?.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        self.detach_live(parent, name, ino)?;
        self.log_entries(vec![(parent, name.to_owned(), None)]);
        Ok(())
    }

    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        let dir = self.inode(ino)?;
        if dir.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        if !dir.children.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.detach_live(parent, name, ino)?;
        self.log_entries(vec![(parent, name.to_owned(), None)]);
        Ok(())
    }

    fn detach_live(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> FsResult<()> {
        let dir = self.inode_mut(parent)?;
        dir.children.remove(name);
        dir.mtime = SystemTime::now();
        let inode = self.inode_mut(ino)?;
        inode
            .links
            .retain(|(p, n)| !(*p == parent && n.as_os_str() == name));
        inode.ctime = SystemTime::now();
        Ok(())
    }

    pub fn link(&mut self, ino: Ino, parent: Ino, name: &OsStr) -> FsResult<()> {
        if self.inode(ino)?.kind == Kind::Dir {
            return Err(libc::EPERM);
        }
        if self.lookup(parent, name).is_ok() {
            return Err(libc::EEXIST);
        }
        self.inode_mut(parent)?
            .children
            .insert(name.to_owned(), ino);
        self.inode_mut(ino)?.links.push((parent, name.to_owned()));
        self.log_entries(vec![(parent, name.to_owned(), Some(ino))]);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        if self.inode(new_parent)?.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let moving_dir = self.inode(ino)?.kind == Kind::Dir;
        if moving_dir && self.is_ancestor(ino, new_parent) {
            return Err(libc::EINVAL);
        }
        if let Ok(existing) = self.lookup(new_parent, new_name) {
            if existing == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            let existing_inode = self.inode(existing)?;
            match (moving_dir, existing_inode.kind == Kind::Dir) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !existing_inode.children.is_empty() => {
                    return Err(libc::ENOTEMPTY);
                }
                _ => {}
            }
            self.detach_live(new_parent, new_name, existing)?;
        }
        self.detach_live(parent, name, ino)?;
        self.inode_mut(new_parent)?
            .children
            .insert(new_name.to_owned(), ino);
        self.inode_mut(ino)?
            .links
            .push((new_parent, new_name.to_owned()));
        self.log_entries(vec![
            (parent, name.to_owned(), None),
            (new_parent, new_name.to_owned(), Some(ino)),
        ]);
        Ok(())
    }

    fn is_ancestor(&self, ancestor: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.inodes.get(&ino).and_then(|i| i.links.first()) {
                Some((parent, _)) => ino = *parent,
                None => return false,
            }
        }
    }

    // ---- file data ----

    fn live_file(&mut self, ino: Ino) -> FsResult<&File> {
        if self.inode(ino)?.kind != Kind::File {
            return Err(libc::EISDIR);
        }
        if self.inode(ino)?.live.is_none() {
            let file = self.new_store_file(ino)?;
            if let Some(source) = self.durable_content(ino) {
                let mut from = File::open(&source).map_err(errno)?;
                let mut to = &file;
                io::copy(&mut from, &mut to).map_err(errno)?;
            }
            self.inode_mut(ino)?.live = Some(file);
        }
        Ok(self.inode(ino)?.live.as_ref().expect("just set"))
    }

    pub fn read(&mut self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.kind != Kind::File {
            return Err(libc::EISDIR);
        }
        let end = inode.size.min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buffer = vec![0; (end - offset) as usize];
        let read = match &inode.live {
            Some(file) => read_fully(file, &mut buffer, offset),
            None => match self.durable_content(ino) {
                Some(path) => read_fully(&File::open(path).map_err(errno)?, &mut buffer, offset),
                None => Ok(0),
            },
        }
        .map_err(errno)?;
        // A durable file shorter than the size reads as zeros past its end (a hole).
        debug_assert!(read <= buffer.len());
        Ok(buffer)
    }

    /// Takes the data by value: it is kept as the unsynced operation without another copy.
    pub fn write(&mut self, ino: Ino, offset: u64, data: Vec<u8>) -> FsResult<usize> {
        self.live_file(ino)?
            .write_all_at(&data, offset)
            .map_err(errno)?;
        let end = offset + data.len() as u64;
        let inode = self.inode_mut(ino)?;
        inode.dirty.insert(offset, end);
        if end > inode.size {
            inode.size = end;
            inode.size_dirty = true;
        }
        inode.mtime = SystemTime::now();
        let written = data.len();
        self.log.push(Unsynced::Write { ino, offset, data });
        Ok(written)
    }

    pub fn truncate(&mut self, ino: Ino, size: u64) -> FsResult<()> {
        self.live_file(ino)?.set_len(size).map_err(errno)?;
        let inode = self.inode_mut(ino)?;
        if size < inode.size {
            // The cut bytes read as zeros if the file grows again; they must reach the disk so.
            inode.dirty.insert(size, inode.size);
        }
        inode.size = size;
        inode.size_dirty = true;
        inode.mtime = SystemTime::now();
        self.log.push(Unsynced::Truncate { ino, size });
        Ok(())
    }

    pub fn set_attributes(
        &mut self,
        ino: Ino,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        times: (Option<SystemTime>, Option<SystemTime>),
    ) -> FsResult<()> {
        let inode = self.inode_mut(ino)?;
        inode.attributes_dirty |= mode.is_some() || owner.0.is_some() || owner.1.is_some();
        if let Some(mode) = mode {
            inode.mode = mode & 0o7777;
        }
        if let Some(uid) = owner.0 {
            inode.uid = uid;
        }
        if let Some(gid) = owner.1 {
            inode.gid = gid;
        }
        if let Some(atime) = times.0 {
            inode.atime = atime;
        }
        if let Some(mtime) = times.1 {
            inode.mtime = mtime;
        }
        inode.ctime = SystemTime::now();
        Ok(())
    }

    // ---- durability ----

    /// fsync/fdatasync of a file: its data and size become durable (and, in ext4 mode, its
    /// entry). For a directory: its entries become durable.
    pub fn fsync(&mut self, ino: Ino) -> FsResult<()> {
        match self.inode(ino)?.kind {
            Kind::Dir => {
                self.sync_dir(ino)?;
                return self.sync_attributes(ino);
            }
            Kind::Symlink => return Ok(()),
            Kind::File => {}
        }
        if self.inode(ino)?.is_dirty() {
            self.write_back(ino)?;
        }
        self.sync_attributes(ino)?;
        if self.metadata == MetadataMode::Ext4
            && let Some((parent, name)) = self.inode(ino)?.links.first().cloned()
        {
            self.sync_entry(parent, &name)?;
        }
        Ok(())
    }

    /// Writes every unsynced chmod and chown to the disk, for a power loss that keeps
    /// everything (a file not on the disk yet gets its attributes when it is created there).
    pub fn sync_all_attributes(&mut self) -> FsResult<()> {
        let dirty: Vec<Ino> = self
            .inodes
            .iter()
            .filter(|(_, inode)| inode.attributes_dirty)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in dirty {
            self.sync_attributes(ino)?;
        }
        Ok(())
    }

    /// A chmod or chown becomes durable with the file's (or directory's) fsync, as with the
    /// inode's other metadata.
    fn sync_attributes(&mut self, ino: Ino) -> FsResult<()> {
        let inode = self.inode(ino)?;
        if !inode.attributes_dirty {
            return Ok(());
        }
        let (kind, uid, gid, mode) = (inode.kind, inode.uid, inode.gid, inode.mode);
        if let Some(path) = self.durable_content(ino) {
            set_owner_and_mode(&path, kind, (uid, gid), mode)?;
        }
        self.inode_mut(ino)?.attributes_dirty = false;
        Ok(())
    }

    fn write_back(&mut self, ino: Ino) -> FsResult<()> {
        let target_path = match self.durable_path(ino) {
            Some(path) => path,
            None => {
                let staged = self.store.join(format!("staged-{ino}"));
                self.inode_mut(ino)?.staged = Some(staged.clone());
                staged
            }
        };
        let cached =
            matches!(&self.inode(ino)?.durable_file, Some((path, ..)) if *path == target_path);
        if !cached {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&target_path)
                .map_err(errno)?;
            let size = file.metadata().map_err(errno)?.len();
            self.inode_mut(ino)?.durable_file = Some((target_path, file, size));
        }
        let inode = self.inode(ino)?;
        let (_, target, durable_size) = inode.durable_file.as_ref().expect("just cached");
        let live = inode.live.as_ref().expect("a dirty file has live content");
        let ranges = inode.dirty.clipped(inode.size);
        // Sized to the largest range (capped), not a fixed megabyte zeroed on every fsync.
        let largest = ranges.iter().map(|(s, e)| e - s).max().unwrap_or(0);
        let mut buffer = vec![0u8; largest.min(1 << 20) as usize];
        for (start, end) in ranges {
            let mut at = start;
            while at < end {
                let chunk = (end - at).min(buffer.len() as u64) as usize;
                let read = read_fully(live, &mut buffer[..chunk], at).map_err(errno)?;
                target.write_all_at(&buffer[..read], at).map_err(errno)?;
                at += chunk as u64;
            }
        }
        if *durable_size != inode.size {
            target.set_len(inode.size).map_err(errno)?;
        }
        if self.durable_backing {
            target.sync_all().map_err(errno)?;
        }
        let size = inode.size;
        if let Some((_, _, durable_size)) = self.inode_mut(ino)?.durable_file.as_mut() {
            *durable_size = size;
        }
        self.mark_clean(ino)
    }

    /// Forgets the file's unsynced changes without writing them (fsyncgate): the live content
    /// keeps them until a power loss, but no later fsync will write them.
    pub fn mark_clean(&mut self, ino: Ino) -> FsResult<()> {
        let inode = self.inode_mut(ino)?;
        inode.dirty.clear();
        inode.size_dirty = false;
        self.log.retain(|op| op.data_ino() != Some(ino));
        Ok(())
    }

    pub fn sync_dir(&mut self, dir: Ino) -> FsResult<()> {
        self.ensure_durable_dir(dir)?;
        let inode = self.inode(dir)?;
        let mut names: Vec<OsString> = inode.children.keys().cloned().collect();
        names.extend(inode.durable_children.keys().cloned());
        names.sort();
        names.dedup();
        for name in names {
            let live = self.inode(dir)?.children.get(&name).copied();
            self.set_durable_entry(dir, &name, live)?;
        }
        self.forget_entry_records(|d, _| d == dir);
        self.provisional.retain(|(d, _), _| *d != dir);
        if self.durable_backing
            && let Some(path) = self.durable_path(dir)
        {
            File::open(path).and_then(|d| d.sync_all()).map_err(errno)?;
        }
        Ok(())
    }

    /// A directory that is itself not durable yet gets its own entry made durable first, so its
    /// entries have somewhere to live on disk. Under `--metadata ext4` that is what the file
    /// system does; under `posix` the entry is provisional: its unsynced record stays, and a
    /// power loss that does not keep that record removes the directory again. (Not where the
    /// durable entry of that name holds another file or directory still: the new directory
    /// then takes its place for good, as under ext4, since the disk has one place per name.)
    fn ensure_durable_dir(&mut self, dir: Ino) -> FsResult<()> {
        if dir == ROOT || !self.inode(dir)?.durable_links.is_empty() {
            return Ok(());
        }
        let Some((parent, name)) = self.inode(dir)?.links.first().cloned() else {
            return Err(libc::ENOENT);
        };
        self.ensure_durable_dir(parent)?;
        match self.metadata {
            MetadataMode::Ext4 => self.sync_entry(parent, &name),
            MetadataMode::Posix => {
                let key = (parent, name);
                let occupied = self.inode(parent)?.durable_children.contains_key(&key.1)
                    && !self.provisional.contains_key(&key);
                if occupied {
                    return self.sync_entry(parent, &key.1);
                }
                self.set_durable_entry(parent, &key.1, Some(dir))?;
                self.keep_only_the_newest_record(parent, &key.1);
                self.provisional.insert(key, dir);
                Ok(())
            }
        }
    }

    /// Makes the durable entry `dir/name` equal to the live one; the unsynced records of that
    /// entry are then history.
    fn sync_entry(&mut self, dir: Ino, name: &OsStr) -> FsResult<()> {
        let live = self.inode(dir)?.children.get(name).copied();
        self.set_durable_entry(dir, name, live)?;
        self.forget_entry_records(|d, n| d == dir && n == name);
        self.provisional.remove(&(dir, name.to_owned()));
        Ok(())
    }

    /// Of the unsynced records of entry `dir/name`, keeps the newest alone (the one that made
    /// it what it is live): the older ones are history once it is on the disk, as at a sync,
    /// and replaying them at a power loss would overwrite it.
    fn keep_only_the_newest_record(&mut self, dir: Ino, name: &OsStr) {
        let newest = self.log.iter().rposition(|op| {
            matches!(op, Unsynced::Entries { changes }
                if changes.iter().any(|(d, n, _)| *d == dir && n == name))
        });
        let Some(newest) = newest else {
            return;
        };
        for op in &mut self.log[..newest] {
            if let Unsynced::Entries { changes } = op {
                changes.retain(|(d, n, _)| !(*d == dir && n == name));
            }
        }
        self.log
            .retain(|op| !matches!(op, Unsynced::Entries { changes } if changes.is_empty()));
        self.entry_records = self
            .log
            .iter()
            .filter(|op| matches!(op, Unsynced::Entries { .. }))
            .count();
    }

    /// Drops the unsynced records of entries that are durable now.
    fn forget_entry_records(&mut self, synced: impl Fn(Ino, &OsStr) -> bool) {
        if self.entry_records == 0 {
            return;
        }
        self.log.retain_mut(|op| match op {
            Unsynced::Entries { changes } => {
                changes.retain(|(d, n, _)| !synced(*d, n));
                !changes.is_empty()
            }
            _ => true,
        });
        self.entry_records = self
            .log
            .iter()
            .filter(|op| matches!(op, Unsynced::Entries { .. }))
            .count();
    }

    /// Makes the durable entry `dir/name` point at `live` (or removes it).
    fn set_durable_entry(&mut self, dir: Ino, name: &OsStr, live: Option<Ino>) -> FsResult<()> {
        self.ensure_durable_dir(dir)?;
        let durable = self.inode(dir)?.durable_children.get(name).copied();
        if live == durable {
            return Ok(());
        }
        if let Some(old) = durable {
            self.remove_durable_entry(dir, name, old)?;
        }
        if let Some(new) = live {
            self.add_durable_entry(dir, name, new)?;
        }
        Ok(())
    }

    fn remove_durable_entry(&mut self, dir: Ino, name: &OsStr, old: Ino) -> FsResult<()> {
        self.inode_mut(old)?.durable_file = None;
        let path = self.durable_path(dir).ok_or(libc::EIO)?.join(name);
        let kind = self.inode(old)?.kind;
        let still_live_elsewhere = self
            .inode(old)?
            .links
            .iter()
            .find(|(p, n)| !(*p == dir && n.as_os_str() == name))
            .cloned();
        if kind == Kind::Dir {
            // A directory has one durable place: a renamed directory moves there in one step.
            if let Some((new_parent, new_name)) = still_live_elsewhere {
                // Under way from here on: a chain of moves that comes back to it (directories
                // renamed round in a circle) makes it step aside instead of going round again.
                self.moving.push(old);
                let moved = self.move_durable_dir(old, (new_parent, new_name), (dir, name), &path);
                self.moving.pop();
                if moved? {
                    return Ok(());
                }
            }
            // Gone from the live tree, or its new place can only become durable through the
            // very entry being replaced: it leaves the disk, its files' durable content is
            // staged, and it comes back when its new place is synced. (It may have stepped
            // aside meanwhile, and something else taken `dir/name`.)
            let (from_parent, from_name) = self
                .inode(old)?
                .durable_links
                .first()
                .cloned()
                .unwrap_or((dir, name.to_owned()));
            let current = self
                .durable_path(from_parent)
                .ok_or(libc::EIO)?
                .join(&from_name);
            self.forget_durable_subtree(old)?;
            fs::remove_dir_all(&current).map_err(errno)?;
            self.inode_mut(from_parent)?
                .durable_children
                .remove(&from_name);
            self.inode_mut(old)?.durable_links.clear();
            return Ok(());
        } else {
            let replaying = self.replaying;
            let inode = self.inode_mut(old)?;
            inode
                .durable_links
                .retain(|(p, n)| !(*p == dir && n.as_os_str() == name));
            let orphaned = inode.durable_links.is_empty() && kind == Kind::File;
            if orphaned && (still_live_elsewhere.is_some() || replaying) && inode.staged.is_none() {
                // Its durable content must outlive this name for when another name is synced.
                let staged = self.store.join(format!("staged-{old}"));
                fs::copy(&path, &staged).map_err(errno)?;
                self.inode_mut(old)?.staged = Some(staged);
            }
            fs::remove_file(&path).map_err(errno)?;
        }
        self.inode_mut(dir)?.durable_children.remove(name);
        if kind == Kind::Dir {
            self.inode_mut(old)?.durable_links.clear();
        }
        Ok(())
    }

    /// Moves durable directory `old`, now at `replaced` (`path` on disk), to its live place
    /// `to` on the disk, vacating that first; false if `to` can only become durable through
    /// `replaced` itself.
    fn move_durable_dir(
        &mut self,
        old: Ino,
        to: (Ino, OsString),
        replaced: (Ino, &OsStr),
        path: &Path,
    ) -> FsResult<bool> {
        let (new_parent, new_name) = to;
        if !self.can_move_dir_under(new_parent, replaced.0, replaced.1, path)? {
            return Ok(false);
        }
        if let Some(occupant) = self
            .inode(new_parent)?
            .durable_children
            .get(&new_name)
            .copied()
            .filter(|&occupant| occupant != old)
        {
            if self.moving.contains(&occupant) {
                // Directories renamed round in a circle (x to y, y to z, z to x): the first
                // one moved steps aside, and takes its place last.
                self.step_aside(occupant)?;
            } else {
                self.remove_durable_entry(new_parent, &new_name, occupant)?;
            }
        }
        // Where it is now: it may have stepped aside meanwhile.
        let (from_parent, from_name, from) = self.durable_place(old)?;
        let new_path = self
            .durable_path(new_parent)
            .ok_or(libc::EIO)?
            .join(&new_name);
        fs::rename(&from, &new_path).map_err(errno)?;
        self.inode_mut(from_parent)?
            .durable_children
            .remove(&from_name);
        self.inode_mut(new_parent)?
            .durable_children
            .insert(new_name.clone(), old);
        self.inode_mut(old)?.durable_links = vec![(new_parent, new_name)];
        Ok(true)
    }

    /// Where a durable directory is on disk: its durable parent, name and path.
    fn durable_place(&self, dir: Ino) -> FsResult<(Ino, OsString, PathBuf)> {
        let (parent, name) = self
            .inode(dir)?
            .durable_links
            .first()
            .cloned()
            .ok_or(libc::EIO)?;
        let path = self.durable_path(parent).ok_or(libc::EIO)?.join(&name);
        Ok((parent, name, path))
    }

    /// Moves a durable directory to a free name in its durable parent, for the moment it takes
    /// to move the others of a circle of renames (all within one call, so no power loss sees it).
    fn step_aside(&mut self, dir_ino: Ino) -> FsResult<()> {
        let (parent, name, path) = self.durable_place(dir_ino)?;
        let aside: OsString = format!(".faultfs-aside-{dir_ino}").into();
        fs::rename(&path, path.with_file_name(&aside)).map_err(errno)?;
        let parent_inode = self.inode_mut(parent)?;
        parent_inode.durable_children.remove(&name);
        parent_inode.durable_children.insert(aside.clone(), dir_ino);
        self.inode_mut(dir_ino)?.durable_links = vec![(parent, aside)];
        Ok(())
    }

    /// Makes `new_parent` durable somewhere outside `moving` (the durable path of the directory
    /// that moves under it, now at `dir/name`), unless that goes round in a circle; false then.
    /// Two renames can nest the durable and the live trees the other way round: the new parent
    /// may only become durable through `dir/name` itself (d1 renamed to d2/b, a new d1/s made,
    /// d2/b renamed to d1/s/a, then d1 synced), or sit inside `moving` on disk (a/b renamed
    /// to b, then a to b/a), and must move out of it first.
    fn can_move_dir_under(
        &mut self,
        new_parent: Ino,
        dir: Ino,
        name: &OsStr,
        moving: &Path,
    ) -> FsResult<bool> {
        if self.needs_entry(new_parent, dir, name) {
            return Ok(false);
        }
        self.ensure_durable_dir(new_parent)?;
        if !self
            .durable_path(new_parent)
            .ok_or(libc::EIO)?
            .starts_with(moving)
        {
            return Ok(true);
        }
        let Some((up, up_name)) = self.inode(new_parent)?.links.first().cloned() else {
            return Ok(false);
        };
        if self.needs_entry(up, dir, name) {
            return Ok(false);
        }
        self.sync_entry(up, &up_name)?;
        Ok(!self
            .durable_path(new_parent)
            .ok_or(libc::EIO)?
            .starts_with(moving))
    }

    /// Whether making `from` durable needs the durable entry `dir/name` to be its live one:
    /// a directory on the way up from `from` to the first durable one is live at `dir/name`.
    fn needs_entry(&self, from: Ino, dir: Ino, name: &OsStr) -> bool {
        let mut current = from;
        // Live links form a tree; the bound only guards against a bug looping forever.
        for _ in 0..=self.inodes.len() {
            let Some(inode) = self.inodes.get(&current) else {
                return false;
            };
            if current == ROOT || !inode.durable_links.is_empty() {
                return false;
            }
            let Some((parent, link)) = inode.links.first() else {
                return false;
            };
            if *parent == dir && link == name {
                return true;
            }
            current = *parent;
        }
        true
    }

    /// Before a durable directory disappears from disk: its files that are still live keep
    /// their durable content in staging, and nothing under it stays recorded as durable.
    fn forget_durable_subtree(&mut self, dir: Ino) -> FsResult<()> {
        let entries: Vec<(OsString, Ino)> = self
            .inode(dir)?
            .durable_children
            .iter()
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let dir_path = self.durable_path(dir).ok_or(libc::EIO)?;
        for (name, child) in entries {
            if self.inode(child)?.kind == Kind::Dir {
                self.forget_durable_subtree(child)?;
                self.inode_mut(child)?.durable_links.clear();
                continue;
            }
            let inode = self.inode_mut(child)?;
            inode.durable_file = None;
            inode
                .durable_links
                .retain(|(p, n)| !(*p == dir && *n == name));
            if inode.durable_links.is_empty()
                && inode.kind == Kind::File
                && !inode.links.is_empty()
                && inode.staged.is_none()
            {
                let staged = self.store.join(format!("staged-{child}"));
                fs::copy(dir_path.join(&name), &staged).map_err(errno)?;
                self.inode_mut(child)?.staged = Some(staged);
            }
        }
        self.inode_mut(dir)?.durable_children.clear();
        Ok(())
    }

    fn add_durable_entry(&mut self, dir: Ino, name: &OsStr, new: Ino) -> FsResult<()> {
        self.inode_mut(new)?.durable_file = None;
        let path = self.durable_path(dir).ok_or(libc::EIO)?.join(name);
        let inode = self.inode(new)?;
        let (kind, mode, owner) = (inode.kind, inode.mode, (inode.uid, inode.gid));
        match inode.kind {
            Kind::Dir => {
                let mut moved = false;
                if let Some((old_parent, old_name)) = inode.durable_links.first().cloned() {
                    let old_path = self
                        .durable_path(old_parent)
                        .ok_or(libc::EIO)?
                        .join(&old_name);
                    // `dir` may sit inside the directory that moves into it, on disk.
                    if self.can_move_dir_under(dir, old_parent, &old_name, &old_path)? {
                        let path = self.durable_path(dir).ok_or(libc::EIO)?.join(name);
                        fs::rename(&old_path, &path).map_err(errno)?;
                        moved = true;
                    } else {
                        self.forget_durable_subtree(new)?;
                        fs::remove_dir_all(&old_path).map_err(errno)?;
                    }
                    self.inode_mut(old_parent)?
                        .durable_children
                        .remove(&old_name);
                    self.inode_mut(new)?.durable_links.clear();
                }
                if !moved {
                    let path = self.durable_path(dir).ok_or(libc::EIO)?.join(name);
                    fs::create_dir(&path).map_err(errno)?;
                    set_owner_and_mode(&path, kind, owner, mode)?;
                }
            }
            Kind::File => {
                if let Some(existing) = self.durable_path(new) {
                    fs::hard_link(existing, &path).map_err(errno)?;
                } else if let Some(staged) = self.inode_mut(new)?.staged.take() {
                    if fs::rename(&staged, &path).is_err() {
                        fs::copy(&staged, &path).map_err(errno)?;
                        fs::remove_file(&staged).ok();
                    }
                    set_owner_and_mode(&path, kind, owner, mode)?;
                } else {
                    File::create(&path).map_err(errno)?;
                    set_owner_and_mode(&path, kind, owner, mode)?;
                }
            }
            Kind::Symlink => {
                symlink(&inode.target, &path).map_err(errno)?;
                set_owner_and_mode(&path, kind, owner, mode)?;
            }
        }
        self.inode_mut(new)?
            .durable_links
            .push((dir, name.to_owned()));
        self.inode_mut(dir)?
            .durable_children
            .insert(name.to_owned(), new);
        Ok(())
    }

    /// Makes everything durable: every live directory's entries, then every file's data.
    pub fn sync_all(&mut self) -> FsResult<()> {
        let mut dirs = VecDeque::from([ROOT]);
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop_front() {
            self.sync_dir(dir)?;
            self.sync_attributes(dir)?;
            for &child in self.inode(dir)?.children.values() {
                match self.inode(child)?.kind {
                    Kind::Dir => dirs.push_back(child),
                    Kind::File => files.push(child),
                    Kind::Symlink => {}
                }
            }
        }
        for file in files {
            if self.inode(file)?.is_dirty() {
                self.write_back(file)?;
            }
            self.sync_attributes(file)?;
        }
        self.provisional.clear();
        Ok(())
    }

    pub fn inode_numbers(&self) -> Vec<Ino> {
        self.inodes.keys().copied().collect()
    }

    /// Every live directory entry, as (parent, name): what the kernel may have cached.
    pub fn live_entries(&self) -> Vec<(Ino, OsString)> {
        self.inodes
            .iter()
            .flat_map(|(&ino, inode)| inode.children.keys().map(move |name| (ino, name.clone())))
            .collect()
    }

    pub fn unsynced(&self) -> &[Unsynced] {
        &self.log
    }

    /// For each unsynced operation, how many leading bytes of a write equal what the disk
    /// holds (0 for other operations): what a torn write may keep or lose without changing
    /// anything.
    pub fn unchanged_prefixes(&self) -> Vec<u64> {
        self.log
            .iter()
            .map(|op| match op {
                Unsynced::Write { ino, offset, data } => self
                    .durable_content(*ino)
                    .map_or(0, |path| same_prefix(&path, *offset, data)),
                _ => 0,
            })
            .collect()
    }

    /// Power loss: the chosen unsynced operations (or parts of writes) reach the disk in the
    /// order they were made, everything else volatile is gone, and the mount serves what is on
    /// disk, as after a reboot.
    pub fn power_loss(&mut self, survival: &[Survival]) -> io::Result<()> {
        let log = std::mem::take(&mut self.log);
        self.replaying = true;
        let replayed = self.replay(&log, survival);
        self.replaying = false;
        replayed?;
        self.remove_provisional_dirs(&log, survival);
        for entry in fs::read_dir(&self.store)? {
            fs::remove_file(entry?.path())?;
        }
        self.epoch += 1;
        self.rebuild_from_backing()
    }

    /// Puts what survives of the unsynced records on the disk, in their order.
    fn replay(&mut self, log: &[Unsynced], survival: &[Survival]) -> io::Result<()> {
        for (op, fate) in log.iter().zip(survival) {
            if *fate == Survival::Dropped {
                continue;
            }
            if let Unsynced::Entries { changes } = op {
                for (dir, name, target) in changes {
                    // The disk is rebuilt from the backing directory below, so an entry that
                    // cannot be placed (its directory gone for good) is simply not there.
                    if let Err(error) = self.set_durable_entry(*dir, name, *target) {
                        tracing::debug!(error, ?name, "an unsynced entry could not survive");
                    }
                }
                continue;
            }
            let Some(ino) = op.data_ino().filter(|ino| self.inodes.contains_key(ino)) else {
                continue;
            };
            // A file with no durable name yet keeps what survives in its staged copy: an entry
            // later in the log (a rename, a link) may still give it one. If none does, the
            // copy goes with the store below.
            let path = match self.durable_path(ino) {
                Some(path) => path,
                None => self.staged_copy(ino)?,
            };
            let file = OpenOptions::new().write(true).open(&path)?;
            match (op, fate) {
                (Unsynced::Write { offset, data, .. }, Survival::Whole) => {
                    file.write_all_at(data, *offset)?;
                }
                (Unsynced::Write { offset, data, .. }, Survival::Parts(parts)) => {
                    for &(start, end) in parts {
                        file.write_all_at(&data[start as usize..end as usize], offset + start)?;
                    }
                }
                (Unsynced::Truncate { size, .. }, _) => file.set_len(*size)?,
                _ => unreachable!("entries and dropped operations are handled above"),
            }
        }
        Ok(())
    }

    /// At a power loss, after the surviving records are on the disk: each directory that is
    /// there only provisionally (`provisional`), and whose own entry no surviving record made,
    /// leaves the disk with everything in it, as if its entry had never been written.
    fn remove_provisional_dirs(&mut self, log: &[Unsynced], survival: &[Survival]) {
        let provisional: Vec<((Ino, OsString), Ino)> = self.provisional.drain().collect();
        for ((parent, name), dir) in provisional {
            let kept = log.iter().zip(survival).any(|(op, fate)| {
                *fate != Survival::Dropped
                    && matches!(op, Unsynced::Entries { changes }
                        if changes.iter().any(|(d, n, i)| *d == parent && *n == name && *i == Some(dir)))
            });
            let still_there = self
                .inodes
                .get(&parent)
                .is_some_and(|p| p.durable_children.get(&name) == Some(&dir));
            if kept || !still_there {
                continue;
            }
            // Gone already if a provisional directory above it went first.
            if let Some(path) = self.durable_path(parent).map(|p| p.join(&name))
                && path.exists()
                && let Err(error) = fs::remove_dir_all(&path)
            {
                tracing::warn!(%error, path = %path.display(), "a provisional directory stayed");
            }
        }
    }

    /// The staged copy of a file's durable content (created empty if it has none).
    fn staged_copy(&mut self, ino: Ino) -> io::Result<PathBuf> {
        if let Some(staged) = self.inodes.get(&ino).and_then(|i| i.staged.clone()) {
            return Ok(staged);
        }
        let staged = self.store.join(format!("staged-{ino}"));
        File::create(&staged)?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.staged = Some(staged.clone());
        }
        Ok(staged)
    }

    pub fn status(&self) -> Status {
        let mut status = Status {
            unsynced_operations: self.log.len(),
            epoch: self.epoch,
            ..Status::default()
        };
        for inode in self.inodes.values() {
            status.live_copies += usize::from(inode.live.is_some());
            if inode.kind == Kind::File && inode.is_dirty() {
                status.dirty_files += 1;
                status.dirty_bytes += inode.dirty.bytes();
            }
            if inode.kind == Kind::Dir {
                let differing = inode
                    .children
                    .iter()
                    .filter(|(n, i)| inode.durable_children.get(*n) != Some(i))
                    .count()
                    + inode
                        .durable_children
                        .keys()
                        .filter(|n| !inode.children.contains_key(*n))
                        .count();
                status.entries_not_durable += differing;
            }
        }
        status
    }

    /// Bytes held: live sizes of all files, for the capacity limit.
    pub fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter(|i| i.kind == Kind::File)
            .map(|i| i.size)
            .sum()
    }

    pub fn statfs_path(&self) -> &Path {
        &self.backing
    }
}

/// The owner and mode of an inode on the disk: a file a user made is theirs there too (a
/// setuid bit on it is then theirs, not root's), and a chown or chmod survives a power loss.
/// The owner first: a chown clears setuid and setgid bits.
fn set_owner_and_mode(path: &Path, kind: Kind, owner: (u32, u32), mode: u32) -> FsResult<()> {
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(errno)?;
    if kind == Kind::Symlink {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(errno)
}

/// How many leading bytes of `data` the file at `path` holds at `offset` already.
fn same_prefix(path: &Path, offset: u64, data: &[u8]) -> u64 {
    let mut on_disk = vec![0u8; data.len()];
    let read = File::open(path)
        .and_then(|file| read_fully(&file, &mut on_disk, offset))
        .unwrap_or(0);
    on_disk[..read]
        .iter()
        .zip(data)
        .take_while(|(disk, new)| disk == new)
        .count() as u64
}

fn read_fully(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        match file.read_at(&mut buffer[done..], offset + done as u64)? {
            0 => break,
            read => done += read,
        }
    }
    Ok(done)
}
