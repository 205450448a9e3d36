//! A power loss: what is unsynced, and which of it survives (dropped, torn, reordered, a
//! prefix, kept) replayed onto the durable state.
use super::*;

impl State {
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
    pub(super) fn replay(&mut self, log: &[Unsynced], survival: &[Survival]) -> io::Result<()> {
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
    pub(super) fn remove_provisional_dirs(&mut self, log: &[Unsynced], survival: &[Survival]) {
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
    pub(super) fn staged_copy(&mut self, ino: Ino) -> io::Result<PathBuf> {
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
}
