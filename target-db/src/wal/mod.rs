//! The write-ahead log: segment files `wal-<id>.log` of records `[len][crc32c][payload]`.
//!
//! - An append returns only after the data is fsynced (unless the unsafe switch says otherwise);
//!   callers batch many writes into one append (group commit). Records may also be staged in
//!   memory: the next append writes them first, in the same write and fsync, so the file only
//!   ever holds one unsynced write, and recovery's rule for a torn tail stays the same.
//! - A new segment is followed by an fsync of the directory, so the file itself survives a crash.
//! - Recovery: a torn record at the end of the last segment (a crash mid-append) is cut off and
//!   logged; a bad record anywhere else is corruption, and opening fails with the file and offset.
//! - A segment is sealed (a last record saying the log goes on in the next one) once the next
//!   one is durable and begins with its opening record, so a missing last segment, or one
//!   zeroed or truncated past its opening, is refused at start rather than served as a shorter
//!   log; a gap in the middle is reported, for the owner to refuse unless everything before it
//!   was purged.
mod error;
mod record;
mod space;
mod stats;

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

pub use error::WalError;
use error::io;
pub use record::MAX_PAYLOAD;
use record::{Decoded, decode, encode};
pub use space::is_no_space;
use space::{allocate, no_space_or};
pub use stats::WalStats;

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Unsafe when false: appends are never fsynced.
    pub fsync: bool,
    /// Unsafe when false: new segments are not made durable by a directory fsync.
    pub dir_fsync: bool,
    /// Unsafe when false: recovery trusts records without checking their CRC.
    pub verify_checksum: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            fsync: true,
            dir_fsync: true,
            verify_checksum: true,
        }
    }
}

/// A torn tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes_dropped: u64,
    pub reason: &'static str,
}

/// What opening the log found: every record in order, with the segment it is in.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<(u64, Vec<u8>)>,
    pub torn_tail: Option<TornTail>,
    /// Segment ids on both sides of each gap in the numbering. Purged segments are unlinked
    /// oldest first but with one directory fsync for all, so a power loss may keep an older
    /// one and lose a newer one; only the owner knows whether what precedes a gap was purged.
    pub gaps: Vec<(u64, u64)>,
}

pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    segments: Vec<u64>,
    active: File,
    active_len: u64,
    buffer: Vec<u8>,
    /// Records staged for the next append, encoded.
    staged: Vec<u8>,
    stats: Arc<WalStats>,
    /// Space held back for the few records that must be written even on a full disk (votes,
    /// the commit point): released when the disk fills, taken back when space returns.
    reserve: Option<File>,
}

/// The size of the space reserve: room for about 1,500 vote or commit-point records.
pub const RESERVE_BYTES: u64 = 256 << 10;
const RESERVE_FILE: &str = "space-reserve";

/// The record that closes a segment: the log goes on in the next one. Not JSON, so no caller's
/// record can look like it.
const SEAL: &[u8] = b"\xffsealed: the log continues in the next segment";

/// The record that opens a segment a rotation starts, synced before the full segment is sealed:
/// the successor of a sealed segment begins with it, so one that does not was damaged after it
/// was written (zeroed, truncated, replaced), not torn by a crash.
const OPENING: &[u8] = b"\xffopened: the log continues here from the previous segment";

/// The opening record as it is on disk.
fn opening_record() -> Vec<u8> {
    let mut record = Vec::new();
    encode(OPENING, &mut record);
    record
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("wal-{id:020}.log"))
}

fn segment_id(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

impl Wal {
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        crate::data_dir::create_dir_durably(dir).map_err(io("creating", dir))?;
        let mut segments: Vec<u64> = fs::read_dir(dir)
            .map_err(io("listing", dir))?
            .filter_map(|entry| segment_id(&entry.ok()?.file_name().to_string_lossy()))
            .collect();
        segments.sort_unstable();
        let mut recovered = Recovered {
            gaps: segments
                .windows(2)
                .filter(|pair| pair[1] != pair[0] + 1)
                .map(|pair| (pair[0], pair[1]))
                .collect(),
            ..Recovered::default()
        };
        // The segment that ends the log: the newest one holding anything. Only empty ones may
        // follow it when a rotation had made the next segment durable, and the seal it was
        // appending when the power went may be torn. Records are appended to a full segment
        // only after the last one's fsync, so a torn record there can only be that seal: a
        // torn tail, cut like the last segment's.
        let last_holding_anything = segments
            .iter()
            .rposition(|&id| holds_records(&segment_path(dir, id)));
        // The segment just read, if it was sealed: its successor must begin with its opening.
        // (After a gap in the numbering the successor is gone, and the gap is the owner's.)
        let mut sealed_before: Option<u64> = None;
        for (position, &id) in segments.iter().enumerate() {
            let last = position + 1 == segments.len();
            let ends_the_log = last_holding_anything.is_none_or(|end| position >= end);
            if sealed_before.is_some_and(|sealed| sealed + 1 == id) {
                check_opening(dir, id)?;
            }
            let sealed = recover_segment(dir, id, ends_the_log, &options, &mut recovered)?;
            sealed_before = sealed.then_some(id);
            if last && sealed {
                return Err(WalError::Missing {
                    dir: dir.to_owned(),
                    reason: format!(
                        "{} was sealed when {} was started, but that segment is missing",
                        segment_file_name(id),
                        segment_file_name(id + 1)
                    ),
                });
            }
        }
        let mut wal = match segments.last() {
            Some(&id) => {
                let path = segment_path(dir, id);
                let active = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io("opening", &path))?;
                let active_len = active
                    .metadata()
                    .map_err(io("reading the size of", &path))?
                    .len();
                Wal {
                    dir: dir.to_owned(),
                    options,
                    segments,
                    active,
                    active_len,
                    buffer: Vec::new(),
                    staged: Vec::new(),
                    stats: Arc::default(),
                    reserve: None,
                }
            }
            None => {
                let (active, path) = create_segment(dir, 1)?;
                let wal = Wal {
                    dir: dir.to_owned(),
                    options,
                    segments: vec![1],
                    active,
                    active_len: 0,
                    buffer: Vec::new(),
                    staged: Vec::new(),
                    stats: Arc::default(),
                    reserve: None,
                };
                wal.sync_dir(&path)?;
                wal
            }
        };
        wal.buffer.reserve(64 << 10);
        if let Err(error) = wal.restore_reserve() {
            tracing::warn!(%error, "no space reserve: on a full disk even votes will wait for space");
        }
        Ok((wal, recovered))
    }

    /// Frees the space reserve for records that must be written on a full disk; false if there
    /// was none left to free.
    pub fn release_reserve(&mut self) -> bool {
        let Some(reserve) = self.reserve.take() else {
            return false;
        };
        let freed = reserve.set_len(0).is_ok();
        tracing::warn!(bytes = RESERVE_BYTES, "released the space reserve");
        freed
    }

    /// Takes the space reserve back (allocated for real, not a sparse file); NoSpace while the
    /// disk is still too full for it.
    pub fn restore_reserve(&mut self) -> Result<(), WalError> {
        if self.reserve.is_some() {
            return Ok(());
        }
        let path = self.dir.join(RESERVE_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| no_space_or(e, "creating", &path))?;
        if let Err(error) = allocate(&file, RESERVE_BYTES) {
            let _ = file.set_len(0);
            return Err(no_space_or(error, "allocating", &path));
        }
        self.reserve = Some(file);
        Ok(())
    }

    /// Counters for /metrics, shared with whoever serves them.
    pub fn stats(&self) -> Arc<WalStats> {
        self.stats.clone()
    }

    /// The segment new records go to.
    pub fn active_segment(&self) -> u64 {
        *self
            .segments
            .last()
            .expect("there is always an active segment")
    }

    pub fn segments(&self) -> &[u64] {
        &self.segments
    }

    /// Bytes in all segments (for metrics).
    pub fn bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|&id| fs::metadata(segment_path(&self.dir, id)).ok())
            .map(|meta| meta.len())
            .sum()
    }

    /// Keeps the records for the next append, which writes them ahead of its own. Nothing
    /// reaches the file until then: a crash loses them.
    pub fn stage(&mut self, payloads: &[&[u8]]) {
        for payload in payloads {
            encode(payload, &mut self.staged);
        }
    }

    /// Whether records wait for the next append.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Writes the staged records, then these, and returns once they are durable (one write and
    /// one fsync for all of them). If the disk is full, the staged records stay staged.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<(), WalError> {
        self.buffer.clear();
        for payload in payloads {
            encode(payload, &mut self.buffer);
        }
        let staged = self.staged.len();
        self.buffer.splice(0..0, self.staged.drain(..));
        let path = segment_path(&self.dir, self.active_segment());
        if let Err(error) = self.active.write_all(&self.buffer) {
            if !is_no_space(&error) {
                return Err(io("appending to", &path)(error));
            }
            // Part of the buffer may be in the file: cut it off, so what is on disk is what was
            // acknowledged before, and nothing half-written can be mistaken for a torn tail.
            self.active
                .set_len(self.active_len)
                .map_err(io("cutting a failed append off", &path))?;
            self.staged = self.buffer[..staged].to_vec();
            return Err(WalError::NoSpace { path });
        }
        self.active_len += self.buffer.len() as u64;
        self.stats.record_append(self.buffer.len() as u64);
        if self.options.fsync {
            let started = Instant::now();
            self.active.sync_data().map_err(io("fsync of", &path))?;
            self.stats.record_fsync(started.elapsed());
        }
        Ok(())
    }

    /// Whether the active segment is full; the owner rotates, so it can write what each segment
    /// must start with (the current vote) as the first record.
    pub fn needs_rotation(&self) -> bool {
        self.active_len >= self.options.segment_bytes
    }

    /// Starts the next segment with its opening record, made durable by a directory fsync, then
    /// seals the active one. In that order: a crash between the two leaves an unsealed segment
    /// and a next one holding no more than its opening, both fine; a sealed segment can then only
    /// lack its successor, or a successor that begins with its opening, if the disk lost it.
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        let id = self.active_segment() + 1;
        let (file, path, len) = next_segment(&self.dir, id, self.options.fsync)?;
        self.sync_dir(&path)?;
        // On failure the old segment stays the active one, and the new one, holding only its
        // opening, stays too: a failed fsync does not mean the seal is not on disk, and a sealed
        // segment without its successor would stop every later start. Recovery reads a last
        // segment holding only its opening as the end of the log; the next rotation takes it
        // over.
        self.append(&[SEAL])?;
        self.active = file;
        self.active_len = len;
        self.segments.push(id);
        Ok(id)
    }

    /// Deletes the segments before `id` (never the active one), then fsyncs the directory.
    pub fn remove_segments_before(&mut self, id: u64) -> Result<usize, WalError> {
        let limit = id.min(self.active_segment());
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .copied()
            .filter(|&s| s < limit)
            .collect();
        for &segment in &doomed {
            let path = segment_path(&self.dir, segment);
            fs::remove_file(&path).map_err(io("removing", &path))?;
        }
        self.segments.retain(|s| *s >= limit);
        if !doomed.is_empty() {
            self.sync_dir(&self.dir.clone())?;
        }
        Ok(doomed.len())
    }

    fn sync_dir(&self, because_of: &Path) -> Result<(), WalError> {
        if !self.options.dir_fsync {
            return Ok(());
        }
        let _ = because_of;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("fsync of directory", &self.dir))
    }
}

/// The segment `id` for a rotation, begun with its opening record and synced (unless `fsync`
/// is off), with its length: new, or the one an earlier rotation that failed to seal its
/// predecessor left behind (empty, or holding only its opening, which stays: the seal may be
/// on disk even though its fsync failed).
fn next_segment(dir: &Path, id: u64, fsync: bool) -> Result<(File, PathBuf, u64), WalError> {
    let path = segment_path(dir, id);
    let opening = opening_record();
    let reopen = |path: &Path| {
        OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io("opening", path))
    };
    let mut file = match fs::read(&path) {
        Ok(data) if data == opening => return Ok((reopen(&path)?, path, data.len() as u64)),
        Ok(data) if data.is_empty() => reopen(&path)?,
        _ => create_segment(dir, id)?.0,
    };
    if let Err(error) = file.write_all(&opening) {
        // Left empty, so the next rotation takes it over.
        let _ = file.set_len(0);
        return Err(no_space_or(error, "beginning", &path));
    }
    if fsync {
        file.sync_data().map_err(io("fsync of", &path))?;
    }
    Ok((file, path, opening.len() as u64))
}

/// Whether a segment holds records beyond its opening (unreadable counts as holding some).
fn holds_records(path: &Path) -> bool {
    let opening_len = opening_record().len() as u64;
    match fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => false,
        Ok(meta) if meta.len() == opening_len => {
            fs::read(path).map_or(true, |data| data != opening_record())
        }
        _ => true,
    }
}

/// Refuses the successor of a sealed segment unless it begins with its opening record: the
/// rotation synced that record before the seal, so without it the segment was zeroed,
/// truncated or replaced after it was written, and the entries acknowledged in it are gone.
/// Checked before recovery cuts anything, so a refused log is left as it was found.
fn check_opening(dir: &Path, id: u64) -> Result<(), WalError> {
    let path = segment_path(dir, id);
    let data = fs::read(&path).map_err(io("reading", &path))?;
    if matches!(decode(&data, 0, true), Decoded::Record { payload, .. } if payload == OPENING) {
        return Ok(());
    }
    let what = if data.is_empty() {
        "is empty".to_owned()
    } else if data.iter().all(|&b| b == 0) {
        format!("holds {} zero bytes", data.len())
    } else {
        format!("holds {} bytes that do not begin with it", data.len())
    };
    Err(WalError::Missing {
        dir: dir.to_owned(),
        reason: format!(
            "{} was sealed, which a rotation does only once {} begins with its opening record on              disk, but {} {what}: it was zeroed, truncated or replaced since",
            segment_file_name(id - 1),
            segment_file_name(id),
            segment_file_name(id),
        ),
    })
}

fn create_segment(dir: &Path, id: u64) -> Result<(File, PathBuf), WalError> {
    let path = segment_path(dir, id);
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map(|file| (file, path.clone()))
        .map_err(|e| no_space_or(e, "creating", &path))
}

pub fn segment_file_name(id: u64) -> String {
    format!("wal-{id:020}.log")
}

/// Reads one segment's records into `recovered`; true if it ends with the seal. `last`: no
/// later segment holds anything, so a torn record at its end is a torn tail, cut off.
fn recover_segment(
    dir: &Path,
    id: u64,
    last: bool,
    options: &WalOptions,
    recovered: &mut Recovered,
) -> Result<bool, WalError> {
    let path = segment_path(dir, id);
    let data = fs::read(&path).map_err(io("reading", &path))?;
    let mut offset = 0;
    let mut sealed = false;
    loop {
        match decode(&data, offset, options.verify_checksum) {
            Decoded::Record { .. } if sealed => {
                return Err(WalError::Corrupt {
                    file: path,
                    offset: offset as u64,
                    reason: "a record after the segment's seal",
                });
            }
            Decoded::Record { payload, next } => {
                if payload == SEAL {
                    sealed = true;
                } else if payload == OPENING && offset == 0 {
                    // Where the segment begins: no record of the caller's.
                } else {
                    recovered.records.push((id, payload.to_vec()));
                }
                offset = next;
            }
            Decoded::End => return Ok(sealed),
            Decoded::Bad { reason } => {
                if !last || valid_record_after(&data, offset) {
                    return Err(WalError::Corrupt {
                        file: path,
                        offset: offset as u64,
                        reason,
                    });
                }
                // A crash mid-append: nothing after it was ever acknowledged.
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io("opening", &path))?;
                file.set_len(offset as u64)
                    .map_err(io("truncating", &path))?;
                file.sync_all().map_err(io("fsync of", &path))?;
                let torn = TornTail {
                    file: path,
                    offset: offset as u64,
                    bytes_dropped: (data.len() - offset) as u64,
                    reason,
                };
                tracing::warn!(file = %torn.file.display(), offset, bytes = torn.bytes_dropped, reason, "cut a torn record off the end of the write-ahead log");
                recovered.torn_tail = Some(torn);
                return Ok(sealed);
            }
        }
    }
}

/// Whether a valid record follows a bad one: then the bad one is not a torn tail but damage in
/// the middle of the log. Always checks CRCs, even when recovery is told not to trust them:
/// otherwise any garbage would look like a record and every torn tail like corruption.
fn valid_record_after(data: &[u8], bad: usize) -> bool {
    (bad + 1..data.len()).any(|start| matches!(decode(data, start, true), Decoded::Record { .. }))
}
