//! File contents in the live state: reads, writes, truncation and attributes, kept in the
//! private store until the file is synced.
use super::*;

impl State {
    pub(super) fn live_file(&mut self, ino: Ino) -> FsResult<&File> {
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
}
