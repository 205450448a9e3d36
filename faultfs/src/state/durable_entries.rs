//! The durable namespace on the disk: setting, removing and moving one directory entry there,
//! per directory, as a directory fsync commits it.
use super::*;

impl State {
    /// Makes the durable entry `dir/name` point at `live` (or removes it).
    pub(super) fn set_durable_entry(
        &mut self,
        dir: Ino,
        name: &OsStr,
        live: Option<Ino>,
    ) -> FsResult<()> {
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

    pub(super) fn remove_durable_entry(
        &mut self,
        dir: Ino,
        name: &OsStr,
        old: Ino,
    ) -> FsResult<()> {
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
    pub(super) fn move_durable_dir(
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
    pub(super) fn durable_place(&self, dir: Ino) -> FsResult<(Ino, OsString, PathBuf)> {
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
    pub(super) fn step_aside(&mut self, dir_ino: Ino) -> FsResult<()> {
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
    pub(super) fn can_move_dir_under(
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
    pub(super) fn needs_entry(&self, from: Ino, dir: Ino, name: &OsStr) -> bool {
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
    pub(super) fn forget_durable_subtree(&mut self, dir: Ino) -> FsResult<()> {
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

    pub(super) fn add_durable_entry(&mut self, dir: Ino, name: &OsStr, new: Ino) -> FsResult<()> {
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
}
