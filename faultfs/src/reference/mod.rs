//! A reference model of what POSIX promises survives a power loss, written apart from the file
//! system (`state/`) to check it: a pure, in-memory tree with no FUSE, no disk and no root.
//! A file's data, size, mode and owner become durable when the file is fsynced; a directory's
//! entries (all of them, as they are now) when the directory is fsynced; a name is on the disk
//! after a power loss only if every directory on its path is reachable through durable entries
//! from the root. A power loss that drops everything unsynced leaves exactly the durable tree;
//! one that keeps everything leaves the live tree.
//!
//! This is faultfs's `--metadata posix` (the default): an fsync of a new directory makes its
//! entries durable but not its own entry in its parent (ext4's journal would; POSIX does not
//! promise it). One exception, faultfs's own limit, is stated here so that the comparison
//! holds: when the durable entry of the new directory's name still holds another file or
//! directory (the old one removed, a new one made under its name, neither synced in the
//! parent), the directory's fsync makes its entry durable, since faultfs's disk has one place
//! per name.
//!
//! Directory renames are not modelled: a directory renamed with only one of its two parents
//! synced would be durable under both names, which no real file system allows, and what
//! faultfs then keeps is its own choice (tested against ext4 in `tests/namespace_differential.rs`).
use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
};

type Id = u64;
const ROOT: Id = 0;

/// A file's mode and owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug)]
struct Inode {
    is_dir: bool,
    data: Vec<u8>,
    durable_data: Vec<u8>,
    attributes: Attributes,
    durable_attributes: Attributes,
    /// False once a chmod or chown is not yet synced: POSIX does not say whether it reaches the
    /// disk with the file's entry, so the attributes are then not compared.
    attributes_known: bool,
    entries: BTreeMap<String, Id>,
    durable_entries: BTreeMap<String, Id>,
}

impl Inode {
    fn new(is_dir: bool, attributes: Attributes) -> Self {
        Self {
            is_dir,
            data: Vec::new(),
            durable_data: Vec::new(),
            attributes,
            durable_attributes: attributes,
            attributes_known: true,
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
        }
    }
}

/// What a name shows: a directory, or a file's bytes and link count; its attributes when the
/// model knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub content: Option<Vec<u8>>,
    pub links: u64,
    pub attributes: Option<Attributes>,
}

/// Why the model refuses an operation (the file system must refuse it too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    NotFound,
    Exists,
    NotADirectory,
    IsADirectory,
    NotEmpty,
    /// Outside what the model covers (a directory rename).
    NotModelled,
}

pub type Outcome = Result<(), Refused>;

#[derive(Clone, Debug)]
pub struct Model {
    inodes: BTreeMap<Id, Inode>,
    next: Id,
    /// The attributes a new file or directory gets (mode after the umask, the caller's owner).
    file_attributes: Attributes,
    dir_attributes: Attributes,
}

impl Model {
    pub fn new(file_attributes: Attributes, dir_attributes: Attributes) -> Self {
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT, Inode::new(true, dir_attributes));
        Self {
            inodes,
            next: ROOT + 1,
            file_attributes,
            dir_attributes,
        }
    }

    fn inode(&self, id: Id) -> &Inode {
        &self.inodes[&id]
    }

    fn inode_mut(&mut self, id: Id) -> &mut Inode {
        self.inodes.get_mut(&id).expect("a live id")
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent_of(&self, path: &Path) -> Result<(Id, String), Refused> {
        let names: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let (last, parents) = names.split_last().ok_or(Refused::Exists)?;
        let mut dir = ROOT;
        for name in parents {
            let next = *self.inode(dir).entries.get(name).ok_or(Refused::NotFound)?;
            if !self.inode(next).is_dir {
                return Err(Refused::NotADirectory);
            }
            dir = next;
        }
        Ok((dir, last.clone()))
    }

    fn lookup(&self, path: &Path) -> Result<Id, Refused> {
        if path
            .components()
            .all(|c| !matches!(c, Component::Normal(_)))
        {
            return Ok(ROOT);
        }
        let (dir, name) = self.parent_of(path)?;
        self.inode(dir)
            .entries
            .get(&name)
            .copied()
            .ok_or(Refused::NotFound)
    }

    fn add(&mut self, inode: Inode) -> Id {
        let id = self.next;
        self.next += 1;
        self.inodes.insert(id, inode);
        id
    }

    /// open(O_CREAT | O_TRUNC | O_WRONLY).
    pub fn create(&mut self, path: &Path) -> Outcome {
        let (dir, name) = self.parent_of(path)?;
        match self.inode(dir).entries.get(&name).copied() {
            Some(id) if self.inode(id).is_dir => Err(Refused::IsADirectory),
            Some(id) => {
                self.inode_mut(id).data.clear();
                Ok(())
            }
            None => {
                let id = self.add(Inode::new(false, self.file_attributes));
                self.inode_mut(dir).entries.insert(name, id);
                Ok(())
            }
        }
    }

    pub fn write(&mut self, path: &Path, offset: usize, bytes: &[u8]) -> Outcome {
        let id = self.file(path)?;
        let data = &mut self.inode_mut(id).data;
        if data.len() < offset + bytes.len() {
            data.resize(offset + bytes.len(), 0);
        }
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    pub fn truncate(&mut self, path: &Path, len: usize) -> Outcome {
        let id = self.file(path)?;
        self.inode_mut(id).data.resize(len, 0);
        Ok(())
    }

    fn file(&self, path: &Path) -> Result<Id, Refused> {
        let id = self.lookup(path)?;
        if self.inode(id).is_dir {
            return Err(Refused::IsADirectory);
        }
        Ok(id)
    }

    pub fn mkdir(&mut self, path: &Path) -> Outcome {
        let (dir, name) = self.parent_of(path)?;
        if self.inode(dir).entries.contains_key(&name) {
            return Err(Refused::Exists);
        }
        let id = self.add(Inode::new(true, self.dir_attributes));
        self.inode_mut(dir).entries.insert(name, id);
        Ok(())
    }

    pub fn unlink(&mut self, path: &Path) -> Outcome {
        let (dir, name) = self.parent_of(path)?;
        let id = self.file(path)?;
        debug_assert!(self.inode(dir).entries[&name] == id);
        self.inode_mut(dir).entries.remove(&name);
        Ok(())
    }

    pub fn rmdir(&mut self, path: &Path) -> Outcome {
        let (dir, name) = self.parent_of(path)?;
        let id = self.lookup(path)?;
        if !self.inode(id).is_dir {
            return Err(Refused::NotADirectory);
        }
        if !self.inode(id).entries.is_empty() {
            return Err(Refused::NotEmpty);
        }
        self.inode_mut(dir).entries.remove(&name);
        Ok(())
    }

    /// rename(2) of a file, over a file or to a new name.
    pub fn rename(&mut self, from: &Path, to: &Path) -> Outcome {
        let id = self.lookup(from)?;
        if self.inode(id).is_dir {
            return Err(Refused::NotModelled);
        }
        let (from_dir, from_name) = self.parent_of(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        match self.inode(to_dir).entries.get(&to_name).copied() {
            Some(there) if self.inode(there).is_dir => return Err(Refused::IsADirectory),
            Some(there) if there == id => return Ok(()),
            _ => {}
        }
        self.inode_mut(from_dir).entries.remove(&from_name);
        self.inode_mut(to_dir).entries.insert(to_name, id);
        Ok(())
    }

    /// link(2): a second name for a file.
    pub fn link(&mut self, from: &Path, to: &Path) -> Outcome {
        let id = self.file(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        if self.inode(to_dir).entries.contains_key(&to_name) {
            return Err(Refused::Exists);
        }
        self.inode_mut(to_dir).entries.insert(to_name, id);
        Ok(())
    }

    pub fn set_attributes(&mut self, path: &Path, attributes: Attributes) -> Outcome {
        let id = self.lookup(path)?;
        let inode = self.inode_mut(id);
        inode.attributes = attributes;
        if inode.durable_attributes != attributes {
            inode.attributes_known = false;
        }
        Ok(())
    }

    /// fsync(2) (or fdatasync) of a file or a directory.
    pub fn fsync(&mut self, path: &Path) -> Outcome {
        let id = self.lookup(path)?;
        if self.inode(id).is_dir {
            self.take_the_place_of_an_older_entry(id);
        }
        let inode = self.inode_mut(id);
        if inode.is_dir {
            inode.durable_entries = inode.entries.clone();
        } else {
            inode.durable_data = inode.data.clone();
        }
        inode.durable_attributes = inode.attributes;
        inode.attributes_known = true;
        Ok(())
    }

    /// faultfs's limit above: a directory whose name's durable entry holds another inode gets
    /// its entry made durable when it is fsynced.
    fn take_the_place_of_an_older_entry(&mut self, dir: Id) {
        let live_parent = self.inodes.iter().find_map(|(&parent, inode)| {
            inode
                .entries
                .iter()
                .find(|&(_, &id)| id == dir)
                .map(|(name, _)| (parent, name.clone()))
        });
        if let Some((parent, name)) = live_parent {
            let durable = self.inode(parent).durable_entries.get(&name).copied();
            if durable.is_some_and(|other| other != dir) {
                self.inode_mut(parent).durable_entries.insert(name, dir);
            }
        }
    }

    /// A power loss that keeps nothing unsynced: the durable tree is all there is.
    pub fn power_loss_dropping_everything(&mut self) {
        for inode in self.inodes.values_mut() {
            inode.entries = inode.durable_entries.clone();
            inode.data = inode.durable_data.clone();
            inode.attributes = inode.durable_attributes;
        }
    }

    /// A power loss that keeps everything (as if each change had reached the disk).
    pub fn power_loss_keeping_everything(&mut self) {
        for inode in self.inodes.values_mut() {
            inode.durable_entries = inode.entries.clone();
            inode.durable_data = inode.data.clone();
            inode.durable_attributes = inode.attributes;
            inode.attributes_known = true;
        }
    }

    /// After a power loss, the attributes the disk shows for a name whose unsynced chmod or
    /// chown the model could not decide: it takes them as they are from now on.
    pub fn adopt_attributes(&mut self, path: &Path, found: Attributes) {
        if let Ok(id) = self.lookup(path) {
            let inode = self.inode_mut(id);
            if !inode.attributes_known {
                inode.attributes = found;
                inode.durable_attributes = found;
                inode.attributes_known = true;
            }
        }
    }

    /// Every name a program sees now (the root not included).
    pub fn live_tree(&self) -> BTreeMap<PathBuf, Seen> {
        self.tree(|inode| &inode.entries, |inode| &inode.data, false)
    }

    /// Every name a power loss that drops all that is unsynced leaves on the disk.
    pub fn durable_tree(&self) -> BTreeMap<PathBuf, Seen> {
        self.tree(
            |inode| &inode.durable_entries,
            |inode| &inode.durable_data,
            true,
        )
    }

    fn tree(
        &self,
        entries: impl Fn(&Inode) -> &BTreeMap<String, Id>,
        data: impl Fn(&Inode) -> &Vec<u8>,
        durable: bool,
    ) -> BTreeMap<PathBuf, Seen> {
        let mut names: Vec<(PathBuf, Id)> = Vec::new();
        let mut pending = vec![(PathBuf::new(), ROOT)];
        while let Some((path, dir)) = pending.pop() {
            for (name, &id) in entries(self.inode(dir)) {
                let child = path.join(name);
                if self.inode(id).is_dir {
                    pending.push((child.clone(), id));
                }
                names.push((child, id));
            }
        }
        let links = |id: Id| names.iter().filter(|(_, other)| *other == id).count() as u64;
        names
            .iter()
            .map(|(path, id)| {
                let inode = self.inode(*id);
                let attributes = if durable {
                    inode.attributes_known.then_some(inode.durable_attributes)
                } else {
                    Some(inode.attributes)
                };
                let seen = Seen {
                    content: (!inode.is_dir).then(|| data(inode).clone()),
                    links: if inode.is_dir { 1 } else { links(*id) },
                    attributes,
                };
                (path.clone(), seen)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
