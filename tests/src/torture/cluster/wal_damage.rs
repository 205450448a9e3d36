//! Damage to a stopped node's write-ahead log, made through its mount and fsynced so it is the
//! durable state: a rotted key in the last record, a flipped byte in the middle, and putting
//! the byte back.
use std::{fs, path::PathBuf};

use anyhow::{Context, Result};

use super::Cluster;

impl Cluster {
    /// Silent media corruption of the record at the end of a stopped node's write-ahead log,
    /// if that record holds a put: the put's key is changed, so the record still parses and
    /// only its CRC tells. Meant for a node killed inside the fdatasync of that record, so the
    /// record was never acknowledged: a database that checks CRCs cuts it as a torn tail (the
    /// leader sends it again); one that does not applies a write of a key nobody wrote.
    /// Written through the node's mount and fsynced, so it is the durable state. Returns what
    /// was done, or None when the last record holds no put.
    pub fn rot_wal_tail(&mut self, id: usize) -> Result<Option<String>> {
        anyhow::ensure!(!self.running(id), "rot_wal_tail needs node {id} stopped");
        let wal = self.node(id).data_dir.join("wal");
        let segment = fs::read_dir(&wal)
            .with_context(|| format!("listing {}", wal.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("wal-") && name.ends_with(".log")
            })
            .max()
            .with_context(|| format!("no WAL segment in {}", wal.display()))?;
        let mut data = fs::read(&segment)?;
        let Some(key_at) = put_key_in_last_record(&data) else {
            return Ok(None);
        };
        let was = data[key_at];
        data[key_at] = if was == b'q' { b'z' } else { b'q' };
        let mut file = fs::OpenOptions::new().write(true).open(&segment)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(key_at as u64))?;
        std::io::Write::write_all(&mut file, &data[key_at..=key_at])?;
        file.sync_all()?;
        Ok(Some(format!(
            "{}: the key of a put in the last record rotted ({}.. -> {}..)",
            segment.file_name().unwrap_or_default().to_string_lossy(),
            char::from(was),
            char::from(data[key_at]),
        )))
    }

    /// Media damage in the middle of a stopped node's write-ahead log: one payload byte of a
    /// record (`pick` chooses which, never the last of its segment, which a crash could have
    /// torn) flipped, written through the mount and fsynced. None if no segment holds two
    /// records.
    pub fn rot_wal_middle(&mut self, id: usize, pick: u64) -> Result<Option<Rot>> {
        anyhow::ensure!(!self.running(id), "rot_wal_middle needs node {id} stopped");
        let wal = self.node(id).data_dir.join("wal");
        let mut segments: Vec<PathBuf> = fs::read_dir(&wal)
            .with_context(|| format!("listing {}", wal.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("wal-") && name.ends_with(".log")
            })
            .collect();
        segments.sort();
        // Only records with another after them in their segment: a crash tears at most the
        // last one, so damage to any other is damage any recovery must refuse. Half the time
        // only the last segment's: there a recovery must tell damage from a torn tail, the
        // rule a recovery most often gets wrong, and older segments outnumber it.
        let mut payloads = Vec::new();
        let mut in_the_last = 0;
        for segment in &segments {
            let data = fs::read(segment)?;
            let records = records_before_the_last(&data);
            in_the_last = records.len();
            payloads.extend(records.into_iter().map(|range| (segment.clone(), range)));
        }
        if pick & (1 << 20) != 0 && in_the_last > 0 {
            payloads.drain(..payloads.len() - in_the_last);
        }
        if payloads.is_empty() {
            return Ok(None);
        }
        let (segment, range) = payloads[(pick % payloads.len() as u64) as usize].clone();
        let at = range.start + (pick >> 32) as usize % range.len();
        let mut byte = [0u8];
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at as u64))?;
        std::io::Read::read_exact(&mut file, &mut byte)?;
        let original = byte[0];
        byte[0] ^= 0x20;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at as u64))?;
        std::io::Write::write_all(&mut file, &byte)?;
        file.sync_all()?;
        let name = segment.file_name().unwrap_or_default().to_string_lossy();
        Ok(Some(Rot {
            what: format!("one byte of a durable record in its log flipped ({name}, offset {at})"),
            file: segment,
            offset: at as u64,
            original,
        }))
    }

    /// Puts back the byte `rot_wal_middle` flipped.
    pub fn restore(&self, rot: &Rot) -> Result<()> {
        let mut file = fs::OpenOptions::new().write(true).open(&rot.file)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(rot.offset))?;
        std::io::Write::write_all(&mut file, &[rot.original])?;
        file.sync_all()?;
        Ok(())
    }
}

/// A byte of a node's log that a fault changed, to put back.
pub struct Rot {
    pub what: String,
    file: PathBuf,
    offset: u64,
    original: u8,
}

/// The payload ranges of target-db's `[len u32][crc32c u32][payload]` records, up to the first
/// that does not fit.
fn record_payloads(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut payloads = Vec::new();
    while offset + 8 <= data.len() {
        let len =
            u32::from_le_bytes(data[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || offset + 8 + len > data.len() {
            break;
        }
        payloads.push(offset + 8..offset + 8 + len);
        offset += 8 + len;
    }
    payloads
}

/// The payload ranges of every record of a segment but its last.
fn records_before_the_last(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut records = record_payloads(data);
    records.pop();
    records
}

/// Walks target-db's `[len u32][crc32c u32][payload]` records; if the last one holds a put,
/// returns the offset of the first byte of its last put's key. A put, because a rotted key then
/// holds a value for good; a cas or delete of a key nobody wrote changes nothing.
fn put_key_in_last_record(data: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""op":"put","key":""#;
    let payload = record_payloads(data).pop()?;
    data[payload.clone()]
        .windows(KEY.len())
        .rposition(|window| window == KEY)
        .map(|at| payload.start + at + KEY.len())
        .filter(|&at| at < payload.end)
}

#[cfg(test)]
mod tests {
    use super::{put_key_in_last_record, records_before_the_last};

    fn record(payload: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload.as_bytes());
    }

    #[test]
    fn finds_a_put_only_in_the_last_record() {
        let mut data = Vec::new();
        record(r#"{"Vote":1}"#, &mut data);
        record(
            r#"[{"op":"put","key":"k1"},{"op":"put","key":"k2"},{"op":"delete","key":"k3"}]"#,
            &mut data,
        );
        let key_at = put_key_in_last_record(&data).unwrap();
        assert_eq!(&data[key_at..key_at + 2], b"k2");
        record(r#"{"Committed":7}"#, &mut data);
        assert_eq!(put_key_in_last_record(&data), None);
        assert_eq!(put_key_in_last_record(&data[..18]), None);
    }

    /// Damage to a segment's last record could be a crash's torn tail; only the others are
    /// damage a recovery must refuse.
    #[test]
    fn damage_goes_only_to_records_with_another_after_them() {
        let mut data = Vec::new();
        record(r#"{"Vote":1}"#, &mut data);
        assert!(records_before_the_last(&data).is_empty());
        record(r#"{"Committed":7}"#, &mut data);
        record(r#"{"Truncate":9}"#, &mut data);
        let ranges = records_before_the_last(&data);
        let payloads: Vec<&[u8]> = ranges.iter().map(|r| &data[r.clone()]).collect();
        assert_eq!(payloads, [&br#"{"Vote":1}"#[..], br#"{"Committed":7}"#]);
    }
}
