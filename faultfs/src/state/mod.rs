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
//!
//! This file holds the model's types, loading and reading; `namespace` and `data` change the
//! live state, `durability` and `durable_entries` make it durable, `crash` is the power loss.
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

mod crash;
mod data;
mod durability;
mod durable_entries;
mod namespace;

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
