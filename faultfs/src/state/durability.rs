//! What fsync, fdatasync and a directory fsync make durable: a file's data written back to the
//! disk, a directory's entries recorded there; and `sync` of everything.
use super::*;

impl State {
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
    pub(super) fn sync_attributes(&mut self, ino: Ino) -> FsResult<()> {
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

    pub(super) fn write_back(&mut self, ino: Ino) -> FsResult<()> {
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
    pub(super) fn ensure_durable_dir(&mut self, dir: Ino) -> FsResult<()> {
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
    pub(super) fn sync_entry(&mut self, dir: Ino, name: &OsStr) -> FsResult<()> {
        let live = self.inode(dir)?.children.get(name).copied();
        self.set_durable_entry(dir, name, live)?;
        self.forget_entry_records(|d, n| d == dir && n == name);
        self.provisional.remove(&(dir, name.to_owned()));
        Ok(())
    }

    /// Of the unsynced records of entry `dir/name`, keeps the newest alone (the one that made
    /// it what it is live): the older ones are history once it is on the disk, as at a sync,
    /// and replaying them at a power loss would overwrite it.
    pub(super) fn keep_only_the_newest_record(&mut self, dir: Ino, name: &OsStr) {
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
    pub(super) fn forget_entry_records(&mut self, synced: impl Fn(Ino, &OsStr) -> bool) {
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
}
