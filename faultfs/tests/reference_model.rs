//! faultfs against the reference model (`faultfs::reference`), an independent statement of what
//! POSIX promises survives a power loss: seeded random operations (create, write, pwrite,
//! truncate, rename, link, unlink, mkdir, rmdir, fsync, fdatasync, chmod, chown) go to a real
//! mount and to the model; each must succeed on both or fail on both, the mount must show the
//! model's live tree, and after each power loss the disk and the mount must hold exactly the
//! model's durable tree (`drop`) or its live tree (`keep`): contents, sizes, link counts,
//! modes and owners. The other modes choose what survives at random and are checked against a
//! plain directory in `namespace_differential.rs` and `differential.rs`.
//!
//! 10,000 operations of seed 7 by default; `FAULTFS_REFERENCE_OPERATIONS=100000` and
//! `FAULTFS_REFERENCE_SEED=N` for a longer hunt.
mod common;

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{FileExt, MetadataExt, PermissionsExt, chown},
    path::{Path, PathBuf},
};

use common::Mounted;
use fault_rules::SplitMix64;
use faultfs::{
    power_loss::PowerLossMode,
    reference::{Attributes, Model, Seen},
};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn random_path(rng: &mut SplitMix64) -> PathBuf {
    let depth = 1 + rng.below(2);
    (0..depth)
        .map(|_| NAMES[rng.below(NAMES.len() as u64) as usize])
        .collect()
}

fn bytes(rng: &mut SplitMix64, serial: usize) -> Vec<u8> {
    let len = 1 + rng.below(6000) as usize;
    (0..len).map(|i| (serial + i) as u8).collect()
}

/// One random operation, on the mount and on the model; the two outcomes and what it was.
fn step(
    root: &Path,
    model: &mut Model,
    rng: &mut SplitMix64,
    serial: usize,
) -> (String, bool, bool) {
    let one = random_path(rng);
    let other = random_path(rng);
    let at = |path: &Path| root.join(path);
    let (what, real, modelled): (String, io::Result<()>, bool) = match rng.below(16) {
        0..=2 => {
            let data = bytes(rng, serial);
            let offset = rng.below(20_000) as usize;
            let real = OpenOptions::new()
                .write(true)
                .open(at(&one))
                .and_then(|file| file.write_all_at(&data, offset as u64));
            let modelled = model.write(&one, offset, &data).is_ok();
            (
                format!("pwrite {} bytes at {offset}", data.len()),
                real,
                modelled,
            )
        }
        3..=4 => {
            let real = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(at(&one))
                .map(drop);
            ("create".into(), real, model.create(&one).is_ok())
        }
        5 => {
            let len = rng.below(12_000) as usize;
            let real = OpenOptions::new()
                .write(true)
                .open(at(&one))
                .and_then(|file| file.set_len(len as u64));
            (
                format!("truncate to {len}"),
                real,
                model.truncate(&one, len).is_ok(),
            )
        }
        6 => (
            "mkdir".into(),
            fs::create_dir(at(&one)),
            model.mkdir(&one).is_ok(),
        ),
        7 => (
            "rmdir".into(),
            fs::remove_dir(at(&one)),
            model.rmdir(&one).is_ok(),
        ),
        8 => (
            "unlink".into(),
            fs::remove_file(at(&one)),
            model.unlink(&one).is_ok(),
        ),
        9 => {
            // Files only: the model leaves directory renames out (see faultfs::reference).
            if fs::symlink_metadata(at(&one)).is_ok_and(|m| m.is_dir()) {
                return (
                    format!("rename of directory {} skipped", one.display()),
                    true,
                    true,
                );
            }
            let real = fs::rename(at(&one), at(&other));
            ("rename".into(), real, model.rename(&one, &other).is_ok())
        }
        10 => (
            "link".into(),
            fs::hard_link(at(&one), at(&other)),
            model.link(&one, &other).is_ok(),
        ),
        11 => {
            let mode = [0o600, 0o640, 0o644, 0o700, 0o755][rng.below(5) as usize];
            let real = fs::set_permissions(at(&one), fs::Permissions::from_mode(mode));
            let modelled = attributes_of(model, &one).is_some_and(|current| {
                model
                    .set_attributes(&one, Attributes { mode, ..current })
                    .is_ok()
            });
            (format!("chmod {mode:o}"), real, modelled)
        }
        12 => {
            let (uid, gid) = (1000 + rng.below(3) as u32, 1000 + rng.below(3) as u32);
            let real = chown(at(&one), Some(uid), Some(gid));
            let modelled = attributes_of(model, &one).is_some_and(|current| {
                model
                    .set_attributes(
                        &one,
                        Attributes {
                            uid,
                            gid,
                            ..current
                        },
                    )
                    .is_ok()
            });
            (format!("chown {uid}:{gid}"), real, modelled)
        }
        13 => {
            let real = File::open(at(&one)).and_then(|file| file.sync_data());
            ("fdatasync".into(), real, model.fsync(&one).is_ok())
        }
        14 => {
            let real = File::open(at(&one)).and_then(|file| file.sync_all());
            ("fsync".into(), real, model.fsync(&one).is_ok())
        }
        _ => {
            let parent = one.parent().unwrap_or(Path::new("")).to_owned();
            let real = File::open(at(&parent)).and_then(|dir| dir.sync_all());
            (
                format!("fsync of directory {}", parent.display()),
                real,
                model.fsync(&parent).is_ok(),
            )
        }
    };
    (
        format!("{what} {} {}", one.display(), other.display()),
        real.is_ok(),
        modelled,
    )
}

fn attributes_of(model: &Model, path: &Path) -> Option<Attributes> {
    model.live_tree().get(path).and_then(|seen| seen.attributes)
}

/// Every name under `root` as the model describes one.
fn observed(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut found = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in fs::read_dir(root.join(&relative)).unwrap() {
            let path = relative.join(entry.unwrap().file_name());
            let metadata = fs::symlink_metadata(root.join(&path)).unwrap();
            let is_dir = metadata.is_dir();
            if is_dir {
                pending.push(path.clone());
            }
            let seen = Seen {
                content: (!is_dir).then(|| fs::read(root.join(&path)).unwrap()),
                links: if is_dir { 1 } else { metadata.nlink() },
                attributes: Some(Attributes {
                    mode: metadata.mode() & 0o7777,
                    uid: metadata.uid(),
                    gid: metadata.gid(),
                }),
            };
            found.insert(path, seen);
        }
    }
    found
}

/// The names where what is there differs from what the model expects (attributes the model
/// does not know are not compared), described for a failure message.
fn differences(expected: &BTreeMap<PathBuf, Seen>, found: &BTreeMap<PathBuf, Seen>) -> Vec<String> {
    let mut differ = Vec::new();
    for path in expected.keys().chain(found.keys()) {
        let describe = |seen: Option<&Seen>| match seen {
            None => "absent".to_owned(),
            Some(seen) => format!(
                "{} links {} {:?}",
                match &seen.content {
                    None => "dir".to_owned(),
                    Some(content) => format!("{} bytes", content.len()),
                },
                seen.links,
                seen.attributes
            ),
        };
        let (want, got) = (expected.get(path), found.get(path));
        let same = match (want, got) {
            (Some(want), Some(got)) => {
                want.content == got.content
                    && want.links == got.links
                    && (want.attributes.is_none() || want.attributes == got.attributes)
            }
            (None, None) => true,
            _ => false,
        };
        if !same
            && !differ
                .iter()
                .any(|d: &String| d.starts_with(&format!("{} ", path.display())))
        {
            differ.push(format!(
                "{} expected {}, found {}",
                path.display(),
                describe(want),
                describe(got)
            ));
        }
    }
    differ
}

#[test]
fn the_disk_after_a_power_loss_is_what_the_reference_model_says_survives() {
    let operations: usize = std::env::var("FAULTFS_REFERENCE_OPERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("FAULTFS_REFERENCE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    let mounted = Mounted::new(&["--seed", &seed.to_string()]);
    // What a new file and directory get here: the caller's owner, the mode after its umask.
    let probe = mounted.path("probe");
    fs::write(&probe, b"").unwrap();
    let file_meta = fs::metadata(&probe).unwrap();
    fs::remove_file(&probe).unwrap();
    let attributes = |meta: &fs::Metadata| Attributes {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    };
    let dir_attributes = {
        fs::create_dir(&probe).unwrap();
        let meta = fs::metadata(&probe).unwrap();
        fs::remove_dir(&probe).unwrap();
        attributes(&meta)
    };
    // The probes were never synced, so the disk starts empty, as the model does.
    mounted.power_loss(PowerLossMode::Drop);
    let mut model = Model::new(attributes(&file_meta), dir_attributes);
    let mut rng = SplitMix64::new(seed);
    let mut power_losses = 0;
    // What happened, for a failure: the operations on the names that differ.
    let mut history: Vec<String> = Vec::new();
    let related = |history: &[String], differ: &[String]| -> Vec<String> {
        let names: Vec<&str> = differ.iter().filter_map(|d| d.split(' ').next()).collect();
        history
            .iter()
            .filter(|op| {
                op.contains("power loss")
                    || op.contains("fsync of directory")
                    || names.iter().any(|name| {
                        op.split(' ')
                            .any(|word| word == *name || name.starts_with(&format!("{word}/")))
                    })
            })
            .cloned()
            .collect()
    };
    // Every operation, written out when a check fails (the message names the file).
    let saved = |history: &[String]| -> String {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reference_model-history.txt");
        fs::write(&path, history.join("\n")).unwrap();
        format!("every operation: {}", path.display())
    };
    for serial in 0..operations {
        let (op, real, modelled) = step(&mounted.path(""), &mut model, &mut rng, serial);
        history.push(format!(
            "{serial}: {op} -> {}",
            if real { "ok" } else { "refused" }
        ));
        assert_eq!(
            real,
            modelled,
            "operation {serial}: {op}: faultfs {} it, the model {} it",
            if real { "did" } else { "refused" },
            if modelled { "did" } else { "refused" },
        );
        if serial % 500 == 499 {
            let differ = differences(&model.live_tree(), &observed(&mounted.path("")));
            assert!(
                differ.is_empty(),
                "after operation {serial}, live: {differ:#?}\n{:#?}\n{}",
                related(&history, &differ),
                saved(&history)
            );
        }
        if serial % 250 == 249 {
            let keep = rng.below(3) == 0;
            if keep {
                mounted.power_loss(PowerLossMode::Keep);
                model.power_loss_keeping_everything();
            } else {
                mounted.power_loss(PowerLossMode::Drop);
                model.power_loss_dropping_everything();
            }
            power_losses += 1;
            let mode = if keep { "keep" } else { "drop" };
            history.push(format!("{serial}: power loss ({mode})"));

            let expected = model.durable_tree();
            let on_disk = differences(&expected, &observed(&mounted.backing));
            assert!(
                on_disk.is_empty(),
                "after a power loss ({mode}) at operation {serial}, the disk: {on_disk:#?}\n{:#?}\n{}",
                related(&history, &on_disk),
                saved(&history)
            );
            let shown = observed(&mounted.path(""));
            let mount = differences(&expected, &shown);
            assert!(
                mount.is_empty(),
                "after a power loss ({mode}) at operation {serial}, the mount: {mount:#?}\n{:#?}\n{}",
                related(&history, &mount),
                saved(&history)
            );
            for (path, seen) in &shown {
                if let Some(found) = seen.attributes {
                    model.adopt_attributes(path, found);
                }
            }
        }
    }
    assert!(power_losses >= operations / 250, "{power_losses}");
}
