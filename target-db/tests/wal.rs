//! The write-ahead log on real files: recovery, torn tails, corruption, segments.
use std::{fs, os::unix::fs::FileExt, path::Path};

use target_db::wal::{Wal, WalError, WalOptions};

fn record(i: usize) -> Vec<u8> {
    format!("entry {i} {}", "x".repeat(i % 50)).into_bytes()
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        ..WalOptions::default()
    }
}

fn write_records(dir: &Path, count: usize, options: WalOptions) {
    let (mut wal, _) = Wal::open(dir, options).unwrap();
    for i in 0..count {
        wal.append(&[&record(i)]).unwrap();
        if wal.needs_rotation() {
            wal.rotate().unwrap();
        }
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    files.sort();
    files
}

#[test]
fn thousands_of_records_across_segments_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 5000, small_segments());
    let (wal, recovered) = Wal::open(dir.path(), small_segments()).unwrap();
    assert!(
        wal.segments().len() > 10,
        "{} segments",
        wal.segments().len()
    );
    assert!(recovered.torn_tail.is_none());
    let payloads: Vec<Vec<u8>> = recovered.records.into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, (0..5000).map(record).collect::<Vec<_>>());
}

#[test]
fn a_group_of_records_is_one_append() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let group: Vec<Vec<u8>> = (0..100).map(record).collect();
    let refs: Vec<&[u8]> = group.iter().map(Vec::as_slice).collect();
    wal.append(&refs).unwrap();
    drop(wal);
    let (_, recovered) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(recovered.records.len(), 100);
}

#[test]
fn a_torn_tail_is_cut_off_and_logged() {
    for tail in [
        &b"\x20\x00"[..],
        &b"\x10\x00\x00\x00\xde\xad\xbe\xef\x01\x02"[..],
        &[0u8; 4096][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 10, WalOptions::default());
        let file = segment_files(dir.path()).pop().unwrap();
        let good_length = fs::metadata(&file).unwrap().len();
        let handle = fs::OpenOptions::new().append(true).open(&file).unwrap();
        handle.write_all_at(tail, good_length).unwrap();
        drop(handle);

        let (_, recovered) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(recovered.records.len(), 10, "tail {tail:?}");
        let torn = recovered.torn_tail.expect("the torn tail is reported");
        assert_eq!(torn.offset, good_length);
        assert_eq!(torn.bytes_dropped, tail.len() as u64);
        assert_eq!(
            fs::metadata(&file).unwrap().len(),
            good_length,
            "cut off on disk"
        );
        let (_, again) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert!(again.torn_tail.is_none());
    }
}

/// A rotation creates the next segment (made durable), then appends the seal to the full one.
/// A power loss before the seal's fsync can tear the seal, leaving a torn record in a segment
/// that is not the last, followed by an empty one: nothing after the last synced record was
/// acknowledged, so it is a torn tail like any other, not corruption.
#[test]
fn a_torn_seal_before_a_next_segment_holding_only_its_opening_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    let mut written = 0;
    while !wal.needs_rotation() {
        wal.append(&[&record(written)]).unwrap();
        written += 1;
    }
    let full = segment_files(dir.path()).pop().unwrap();
    let before_seal = fs::metadata(&full).unwrap().len();
    wal.rotate().unwrap();
    drop(wal);
    let sealed_length = fs::metadata(&full).unwrap().len();
    assert!(sealed_length > before_seal + 1, "the seal was appended");
    // The seal torn: only its first byte reached the disk.
    fs::OpenOptions::new()
        .write(true)
        .open(&full)
        .unwrap()
        .set_len(before_seal + 1)
        .unwrap();
    let next = segment_files(dir.path()).pop().unwrap();
    assert_ne!(next, full);
    let opening = fs::metadata(&next).unwrap().len();
    assert!(
        opening > 0 && opening < 100,
        "the next segment holds only its opening record: {opening} bytes"
    );

    let (mut wal, recovered) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(recovered.records.len(), written);
    let torn = recovered.torn_tail.expect("the torn seal is reported");
    assert_eq!((torn.file, torn.offset), (full.clone(), before_seal));
    assert_eq!(fs::metadata(&full).unwrap().len(), before_seal);
    // The log goes on in the empty segment, and a restart finds everything.
    wal.append(&[b"after"]).unwrap();
    drop(wal);
    let (_, again) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(again.records.len(), written + 1);
    assert!(again.torn_tail.is_none());
}

#[test]
fn corruption_before_the_tail_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10, WalOptions::default());
    let file = segment_files(dir.path()).pop().unwrap();
    // Records 0, 1, 2 occupy 8 + len bytes each; damage the payload of record 3.
    let offset: u64 = (0..3).map(|i| 8 + record(i).len() as u64).sum();
    let handle = fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.write_all_at(b"X", offset + 10).unwrap();
    drop(handle);
    let error = Wal::open(dir.path(), WalOptions::default())
        .err()
        .expect("refused");
    match &error {
        WalError::Corrupt {
            file: f,
            offset: o,
            reason,
        } => {
            assert_eq!((f, *o, *reason), (&file, offset, "a checksum mismatch"));
        }
        other => panic!("{other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&format!("at offset {offset} of {}", file.display())),
        "{message}"
    );
    // Nothing was cut: the damaged log is left for a person to look at.
    assert!(fs::metadata(&file).unwrap().len() > offset + 100);
}

#[test]
fn a_bad_record_in_an_older_segment_is_corruption_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 2000, small_segments());
    let first = segment_files(dir.path()).remove(0);
    let length = fs::metadata(&first).unwrap().len();
    let handle = fs::OpenOptions::new().write(true).open(&first).unwrap();
    handle.write_all_at(b"\xff", length - 1).unwrap();
    drop(handle);
    assert!(matches!(
        Wal::open(dir.path(), small_segments()),
        Err(WalError::Corrupt { .. })
    ));
}

#[test]
fn the_unsafe_switch_trusts_records_without_their_checksum() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10, WalOptions::default());
    let file = segment_files(dir.path()).pop().unwrap();
    let handle = fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.write_all_at(b"X", 12).unwrap();
    drop(handle);
    let unsafe_options = WalOptions {
        verify_checksum: false,
        ..WalOptions::default()
    };
    let (_, recovered) = Wal::open(dir.path(), unsafe_options).unwrap();
    assert_eq!(recovered.records.len(), 10);
    assert_ne!(
        recovered.records[0].1,
        record(0),
        "the damaged record is served as if it were fine"
    );
}

#[test]
fn the_log_holds_a_space_reserve_for_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let reserve = dir.path().join("space-reserve");
    let allocated = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().blocks() * 512
    };
    // Real blocks, not a sparse file: freeing them must really free space.
    assert!(allocated(&reserve) >= target_db::wal::RESERVE_BYTES);
    assert!(wal.release_reserve());
    assert_eq!(allocated(&reserve), 0);
    assert!(!wal.release_reserve(), "nothing left to release");
    wal.restore_reserve().unwrap();
    assert!(allocated(&reserve) >= target_db::wal::RESERVE_BYTES);
}

#[test]
fn old_segments_can_be_removed_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 2000, small_segments());
    let (mut wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    let active = wal.active_segment();
    let removed = wal.remove_segments_before(active + 100).unwrap();
    assert_eq!(wal.segments(), &[active]);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(removed > 0);
}

#[test]
fn a_missing_segment_is_refused_at_the_end_and_reported_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 2000, small_segments());
    let files = segment_files(dir.path());
    let middle = files[files.len() / 2].clone();
    let moved = dir.path().join("moved");
    fs::rename(&middle, &moved).unwrap();
    // The WAL cannot know whether the missing segment was purged: it names the gap for the
    // log store, which refuses it unless everything before it was purged.
    let (_, recovered) = Wal::open(dir.path(), small_segments()).unwrap();
    let id = |path: &Path| -> u64 {
        let name = path.file_name().unwrap().to_string_lossy();
        name.trim_start_matches("wal-")
            .trim_end_matches(".log")
            .parse()
            .unwrap()
    };
    assert_eq!(recovered.gaps, vec![(id(&middle) - 1, id(&middle) + 1)]);
    fs::rename(&moved, &middle).unwrap();
    let last = files.last().unwrap();
    fs::remove_file(last).unwrap();
    match Wal::open(dir.path(), small_segments()) {
        Err(WalError::Missing { reason, .. }) => {
            let name = last.file_name().unwrap().to_string_lossy();
            assert!(
                reason.contains(&*name) && reason.contains("sealed"),
                "{reason}"
            )
        }
        other => panic!("a missing last segment was not refused: {:?}", other.err()),
    }
}

/// The successor of a sealed segment began with its opening record, on disk, before the seal
/// was written: found zeroed or emptied (a disk or a person, never a crash), it held
/// acknowledged records that are gone. Refused, naming both segments, and left as found (not
/// cut as a torn tail).
#[test]
fn a_zeroed_or_emptied_segment_after_a_sealed_one_is_refused_and_left_as_found() {
    for damage in ["zeroed", "emptied"] {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 500, small_segments());
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{} segments", files.len());
        let (sealed, last) = (&files[files.len() - 2], &files[files.len() - 1]);
        let len = fs::metadata(last).unwrap().len();
        assert!(len > 100, "the last segment holds records: {len} bytes");
        match damage {
            "zeroed" => fs::write(last, vec![0u8; len as usize]).unwrap(),
            _ => fs::write(last, b"").unwrap(),
        }
        let found = fs::read(last).unwrap();
        match Wal::open(dir.path(), small_segments()) {
            Err(WalError::Missing { reason, .. }) => {
                let name = |path: &Path| path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    reason.contains(&name(sealed))
                        && reason.contains(&name(last))
                        && reason.contains("was sealed"),
                    "{damage}: {reason}"
                );
            }
            other => panic!("{damage}: the log was opened: {:?}", other.err()),
        }
        assert_eq!(fs::read(last).unwrap(), found, "{damage}: left as found");
    }
}

#[test]
fn a_crash_between_starting_a_segment_and_sealing_the_last_one_recovers() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), 10, small_segments());
    // The next segment created and made durable, the crash before the old one was sealed.
    let next = segment_files(dir.path()).len() + 1;
    fs::File::create(dir.path().join(format!("wal-{next:020}.log"))).unwrap();
    let (wal, recovered) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(recovered.records.len(), 10);
    assert_eq!(wal.active_segment(), next as u64);
}
