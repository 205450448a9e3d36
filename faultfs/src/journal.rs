//! What `faultfs explore` records while its workload runs: every operation that changes the
//! file tree or makes something durable, with the inode numbers it touched and the bytes it
//! wrote, and every line the workload printed, in one order. Crash states are built from this
//! record alone, never by running the workload again.
use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::state::Ino;

/// One recorded operation, in inode numbers (a rename or unlink names the inode it moved or
/// removed, so a crash state that dropped an earlier operation still applies it to the right
/// file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// create, mkdir or symlink: a new inode under a new name.
    Create {
        parent: Ino,
        name: String,
        ino: Ino,
        kind: NodeKind,
        /// Permission bits (after the umask).
        mode: u32,
    },
    Link {
        parent: Ino,
        name: String,
        ino: Ino,
    },
    /// unlink or rmdir.
    Remove {
        parent: Ino,
        name: String,
        ino: Ino,
    },
    Rename {
        from_parent: Ino,
        from_name: String,
        to_parent: Ino,
        to_name: String,
        ino: Ino,
    },
    Write {
        ino: Ino,
        offset: u64,
        data: Vec<u8>,
    },
    /// chmod: the new permission bits.
    Chmod {
        ino: Ino,
        mode: u32,
    },
    /// truncate, ftruncate, open(O_TRUNC) or a growing fallocate.
    Resize {
        ino: Ino,
        size: u64,
    },
    /// fsync or fdatasync of a file.
    Fsync {
        ino: Ino,
        data_only: bool,
    },
    FsyncDir {
        ino: Ino,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink { target: String },
}

impl Op {
    /// The call's name as a person reads it in a report.
    pub fn call(&self) -> &'static str {
        match self {
            Op::Create {
                kind: NodeKind::Dir,
                ..
            } => "mkdir",
            Op::Create {
                kind: NodeKind::Symlink { .. },
                ..
            } => "symlink",
            Op::Create { .. } => "create",
            Op::Link { .. } => "link",
            Op::Remove { .. } => "unlink",
            Op::Rename { .. } => "rename",
            Op::Write { .. } => "write",
            Op::Chmod { .. } => "chmod",
            Op::Resize { .. } => "truncate",
            Op::Fsync {
                data_only: true, ..
            } => "fdatasync",
            Op::Fsync { .. } => "fsync",
            Op::FsyncDir { .. } => "fsync (directory)",
        }
    }

    pub fn is_sync(&self) -> bool {
        matches!(self, Op::Fsync { .. } | Op::FsyncDir { .. })
    }
}

/// An operation and the path it acted on when it ran (for reports), or a line of the
/// workload's standard output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    Op { op: Op, path: PathBuf },
    Output { line: String },
}

/// The record being taken: operations come from the FUSE threads; before each is stored, what
/// the workload has printed since the last one is read from its stdout pipe, so a line printed
/// after an fsync returned comes before the next operation.
pub struct Journal {
    inner: Mutex<Inner>,
}

struct Inner {
    entries: Vec<Entry>,
    output: Option<File>,
    partial: Vec<u8>,
}

impl Journal {
    /// `output`: the read end of the workload's stdout pipe. A thread also drains it whenever
    /// it has data, so a workload that prints much between two operations never blocks on a
    /// full pipe; every read happens under the journal's lock, so lines keep their order.
    pub fn new(output: Option<File>) -> io::Result<Arc<Journal>> {
        let watched = match &output {
            Some(pipe) => {
                let flags = rustix::fs::fcntl_getfl(pipe.as_fd())?;
                rustix::fs::fcntl_setfl(pipe.as_fd(), flags | rustix::fs::OFlags::NONBLOCK)?;
                Some(pipe.try_clone()?)
            }
            None => None,
        };
        let journal = Arc::new(Journal {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                output,
                partial: Vec::new(),
            }),
        });
        if let Some(pipe) = watched {
            let journal = Arc::downgrade(&journal);
            std::thread::Builder::new()
                .name("explore-output".into())
                .spawn(move || drain_while_open(&pipe, &journal))?;
        }
        Ok(journal)
    }

    pub fn record(&self, op: Op, path: PathBuf) {
        let mut inner = self.inner.lock().expect("journal poisoned");
        inner.drain_output(false);
        inner.entries.push(Entry::Op { op, path });
    }

    /// Everything recorded, with the rest of the output (the workload has exited, so all it
    /// printed is in the pipe; a process it left behind cannot hold this up).
    pub fn finish(&self) -> Vec<Entry> {
        let mut inner = self.inner.lock().expect("journal poisoned");
        inner.drain_output(true);
        inner.output = None;
        std::mem::take(&mut inner.entries)
    }
}

fn drain_while_open(pipe: &File, journal: &std::sync::Weak<Journal>) {
    use rustix::event::{PollFd, PollFlags, poll};
    loop {
        let mut fds = [PollFd::new(pipe, PollFlags::IN)];
        if poll(&mut fds, None).is_err() {
            return;
        }
        let closed = fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR);
        let Some(journal) = journal.upgrade() else {
            return;
        };
        let mut inner = journal.inner.lock().expect("journal poisoned");
        if inner.output.is_none() {
            return;
        }
        inner.drain_output(false);
        if closed {
            return;
        }
    }
}

impl Inner {
    fn drain_output(&mut self, to_the_end: bool) {
        let Some(pipe) = self.output.as_mut() else {
            return;
        };
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => self.partial.extend_from_slice(&buffer[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.entries.push(Entry::Output { line });
        }
        if to_the_end && !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
            self.entries.push(Entry::Output { line });
        }
    }
}

/// Saves a record as JSON lines, so a crash state can be rebuilt later (`explore --replay`).
pub fn save(entries: &[Entry], path: &Path) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for entry in entries {
        serde_json::to_writer(&mut out, entry)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

pub fn load(path: &Path) -> io::Result<Vec<Entry>> {
    BufReader::new(File::open(path)?)
        .lines()
        .map(|line| {
            serde_json::from_str(&line?)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
        })
        .collect()
}
