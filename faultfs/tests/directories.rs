//! Reading a directory while it changes, on a real mount: every entry not removed meanwhile is
//! returned exactly once (POSIX), as ext4 does. Databases clean old segments this way, and
//! Rust's `fs::remove_dir_all` too.
mod common;

use std::{collections::BTreeSet, fs};

use common::Mounted;

const FILES: usize = 2000;

fn fill(dir: &std::path::Path) {
    fs::create_dir(dir).unwrap();
    for i in 0..FILES {
        fs::write(dir.join(format!("segment-{i:05}")), b"x").unwrap();
    }
}

#[test]
fn unlinking_each_entry_as_it_is_read_removes_them_all() {
    let mounted = Mounted::new(&[]);
    let dir = mounted.path("old");
    fill(&dir);
    let mut seen = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
        seen += 1;
    }
    assert_eq!(seen, FILES, "entries returned while unlinking them");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir_all(mounted.path("old")).unwrap();
    assert!(!dir.exists());
    let _ = mounted.unmount();
}

#[test]
fn entries_added_while_reading_never_repeat_or_hide_the_others() {
    let mounted = Mounted::new(&[]);
    let dir = mounted.path("d");
    fill(&dir);
    let mut names = BTreeSet::new();
    for (index, entry) in fs::read_dir(&dir).unwrap().enumerate() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(names.insert(name.clone()), "{name} returned twice");
        if index % 10 == 0 {
            // Sorts before every original name: lands where the reader has been already.
            fs::write(dir.join(format!("a-new-{index:05}")), b"y").unwrap();
        }
    }
    let originals = names.iter().filter(|n| n.starts_with("segment-")).count();
    assert_eq!(originals, FILES, "original entries returned");
    let _ = mounted.unmount();
}
