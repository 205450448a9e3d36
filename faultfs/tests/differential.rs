//! fsx-style: random operations on many files, through faultfs and on a plain directory, must
//! give identical results; after a full sync, a power loss loses nothing.
mod common;

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::FileExt,
    path::Path,
};

use common::Mounted;
use fault_rules::SplitMix64;
use faultfs::{control::Request, power_loss::PowerLossMode};

const FILES: u64 = 8;
const OPERATIONS: usize = 3000;
const MAX_SIZE: u64 = 256 * 1024;

fn name(rng: &mut SplitMix64) -> String {
    format!("f{}", rng.below(FILES))
}

/// Applies one random operation to `root`; returns what a program would observe.
fn step(root: &Path, rng: &mut SplitMix64) -> String {
    let path = root.join(name(rng));
    match rng.below(10) {
        0..=3 => {
            let offset = rng.below(MAX_SIZE);
            let len = 1 + rng.below(16 * 1024);
            let byte = rng.below(256) as u8;
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            file.write_all_at(&vec![byte; len as usize], offset)
                .unwrap();
            format!("write {offset} {len}")
        }
        4..=5 => {
            let offset = rng.below(MAX_SIZE);
            let len = rng.below(32 * 1024);
            match fs::File::open(&path) {
                Ok(file) => {
                    let mut buffer = vec![0; len as usize];
                    let read = file.read_at(&mut buffer, offset).unwrap();
                    format!("read {offset} {read} {:x}", checksum(&buffer[..read]))
                }
                Err(error) => format!("read error {:?}", error.kind()),
            }
        }
        6 => {
            let size = rng.below(MAX_SIZE);
            match OpenOptions::new().write(true).open(&path) {
                Ok(file) => {
                    file.set_len(size).unwrap();
                    format!("truncate {size}")
                }
                Err(error) => format!("truncate error {:?}", error.kind()),
            }
        }
        7 => {
            let to = root.join(name(rng));
            format!("rename {:?}", fs::rename(&path, &to).map_err(|e| e.kind()))
        }
        8 => format!("unlink {:?}", fs::remove_file(&path).map_err(|e| e.kind())),
        _ => match fs::File::open(&path) {
            Ok(file) => format!("fsync {:?}", file.sync_all().map_err(|e| e.kind())),
            Err(error) => format!("fsync error {:?}", error.kind()),
        },
    }
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn contents(root: &Path) -> Vec<(String, u64, u64)> {
    let mut files: Vec<(String, u64, u64)> = fs::read_dir(root)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let data = fs::read(entry.path()).unwrap();
            (
                entry.file_name().into_string().unwrap(),
                data.len() as u64,
                checksum(&data),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn random_operations_match_a_plain_directory_and_survive_power_loss_after_sync() {
    let reference = tempfile::tempdir().unwrap();
    let mounted = Mounted::new(&[]);
    let (mut rng_reference, mut rng_mounted) = (SplitMix64::new(99), SplitMix64::new(99));
    for index in 0..OPERATIONS {
        let expected = step(reference.path(), &mut rng_reference);
        let got = step(&mounted.mountpoint, &mut rng_mounted);
        assert_eq!(got, expected, "operation {index} differs");
    }
    assert_eq!(contents(&mounted.mountpoint), contents(reference.path()));

    mounted.ctl(Request::Sync);
    mounted.power_loss(PowerLossMode::Torn);
    assert_eq!(
        contents(&mounted.mountpoint),
        contents(reference.path()),
        "nothing is lost after a full sync, whatever the power-loss mode"
    );
    let _ = mounted.unmount();
}

#[test]
fn the_same_seed_gives_the_same_disk_and_another_seed_another() {
    fn disk_after_torn_power_loss(seed: &str) -> Vec<u8> {
        let mounted = Mounted::with_backing(&["--seed", seed], |b| {
            fs::write(b.join("db"), vec![0u8; 64 * 1024]).unwrap();
        });
        let file = OpenOptions::new()
            .write(true)
            .open(mounted.path("db"))
            .unwrap();
        for i in 0..16u64 {
            file.write_all_at(&vec![i as u8 + 1; 4096 + 512], i * 4096)
                .unwrap();
        }
        drop(file);
        mounted.power_loss(PowerLossMode::Torn);
        let disk = fs::read(mounted.backing.join("db")).unwrap();
        let _ = mounted.unmount();
        disk
    }
    let a = disk_after_torn_power_loss("5");
    assert_eq!(a, disk_after_torn_power_loss("5"));
    assert_ne!(a, disk_after_torn_power_loss("6"));
    assert_ne!(a, vec![0u8; 64 * 1024], "some torn pages survived");
}

#[test]
fn a_torn_append_loses_part_of_what_it_appended_not_only_what_was_on_disk() {
    // A log: 2 KiB made durable, then a 1 KiB record appended and not synced. The kernel
    // writes the page back from offset 0, so the write faultfs sees starts with 2 KiB the disk
    // holds already; a torn power loss must cut the record itself (at 2560, the one sector
    // boundary inside it), not spend its cut on the unchanged bytes.
    let mounted = Mounted::new(&["--seed", "11"]);
    let (mut dropped, mut torn, mut whole) = (0, 0, 0);
    for round in 0..40 {
        let name = format!("log{round}");
        let file = common::write_file(&mounted.path(&name), &[1u8; 2048]);
        file.sync_all().unwrap();
        common::fsync_path(&mounted.mountpoint);
        file.write_all_at(&[2u8; 1024], 2048).unwrap();
        drop(file);
        let answer = mounted.power_loss(PowerLossMode::Torn);
        let disk = fs::read(mounted.backing.join(&name)).unwrap();
        // What a harness reads to know that recovery will meet a torn record, and where.
        let torn_files: Vec<&str> = answer["torn"]
            .as_array()
            .map(|files| files.iter().filter_map(|f| f.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            torn_files,
            if disk.len() == 2560 {
                vec![name.as_str()]
            } else {
                vec![]
            },
            "the answer names the file a write was torn in, and only when one was"
        );
        assert!(
            disk[..2048].iter().all(|&b| b == 1),
            "the synced part is intact"
        );
        match disk.len() {
            2048 => dropped += 1,
            2560 => torn += 1,
            3072 => whole += 1,
            other => panic!("a torn write kept {other} bytes: not at the record's sector"),
        }
        assert!(disk[2048..].iter().all(|&b| b == 2));
    }
    // The newest write that can be torn always is: a torn power loss that kept or dropped the
    // record whole would test nothing a drop or prefix power loss does not.
    assert_eq!(
        (torn, dropped, whole),
        (40, 0, 0),
        "{torn} torn, {dropped} dropped, {whole} whole of 40"
    );
    let _ = mounted.unmount();
}
