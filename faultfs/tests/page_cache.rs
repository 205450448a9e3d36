//! The kernel's page cache in front of faultfs: a file read once is served from the cache when
//! it is opened again (warm reads never reach faultfs, as on a disk file system), and a rule on
//! `read` still sees every read: an open made while one is active drops the cached pages.
mod common;

use std::{fs, io::Read};

use common::Mounted;

const SIZE: usize = 1 << 20;

/// The `read` operations faultfs has served so far, from its trace.
fn reads_served(trace: &std::path::Path) -> usize {
    fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("\"op\":\"read\""))
        .count()
}

fn read_all(path: &std::path::Path) -> Vec<u8> {
    let mut data = Vec::new();
    fs::File::open(path)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    data
}

#[test]
fn a_file_read_once_is_served_from_the_page_cache_until_a_read_rule_needs_the_reads() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let original: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let mounted = Mounted::with_backing(&["--trace", trace.to_str().unwrap()], |backing| {
        fs::write(backing.join("table"), &original).unwrap();
    });
    let table = mounted.path("table");
    assert_eq!(read_all(&table), original);
    let cold = reads_served(&trace);
    assert!(cold > 0, "the first read reaches faultfs");
    assert_eq!(read_all(&table), original);
    assert_eq!(
        reads_served(&trace),
        cold,
        "a second open reads from the page cache"
    );

    mounted.add_fault(r#"read(path="table")=corrupt(flip)"#);
    let corrupted = read_all(&table);
    assert!(
        reads_served(&trace) > cold,
        "with a read rule the reads reach faultfs again"
    );
    assert_ne!(
        corrupted, original,
        "and the rule corrupts what they return"
    );
    let _ = mounted.unmount();
}
