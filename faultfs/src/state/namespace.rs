//! The live namespace: names made, removed, linked and renamed, each change logged as unsynced
//! until its directory is synced.
use super::*;

impl State {
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

    pub(super) fn log_entries(&mut self, changes: Vec<EntryChange>) {
        self.log.push(Unsynced::Entries { changes });
        self.entry_records += 1;
    }

    pub(super) fn new_store_file(&self, ino: Ino) -> FsResult<File> {
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

    pub(super) fn detach_live(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> FsResult<()> {
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

    pub(super) fn is_ancestor(&self, ancestor: Ino, mut ino: Ino) -> bool {
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
}
