//! `cargo xtask bench faultfs`: the same workloads on a plain ext4 directory and through faultfs
//! (backing on that ext4), reported as ratios to ext4.
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::Path,
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, ensure};
use process_guard::Spawned;

use crate::cmd::{self, cargo};

const SEQUENTIAL_BYTES: u64 = 256 << 20;
const WAL_ITERATIONS: u32 = 2000;
const READ_FILE_BYTES: u64 = 64 << 20;
/// A file a database reads again later, opened anew (a table, an SST): larger than the one above.
const REOPENED_FILE_BYTES: u64 = 256 << 20;
const RANDOM_READS: u32 = 50_000;
const RENAMES: u32 = 500;

struct Workload {
    name: &'static str,
    unit: &'static str,
    /// Returns units of work per second.
    run: fn(&Path) -> Result<f64>,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "sequential 4 KiB writes, 256 MiB + fsync",
        unit: "MiB/s",
        run: sequential_writes,
    },
    Workload {
        name: "4 KiB write + fsync loop (WAL)",
        unit: "ops/s",
        run: write_fsync_loop,
    },
    Workload {
        name: "warm 4 KiB random reads",
        unit: "ops/s",
        run: random_reads,
    },
    Workload {
        name: "4 KiB random reads, 256 MiB read once, reopened",
        unit: "ops/s",
        run: random_reads_reopened,
    },
    Workload {
        name: "create + fsync + rename",
        unit: "files/s",
        run: create_fsync_rename,
    },
];

/// faultfs configurations compared, each on its own mount.
const VARIANTS: &[(&str, &[&str])] = &[("faultfs", &[]), ("--direct-writes", &["--direct-writes"])];

/// Runs of each workload per configuration; the median is reported (this VM's disk is noisy).
const ROUNDS: usize = 3;

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "mounting faultfs needs root: run `sudo -E cargo xtask bench faultfs`"
    );
    let faultfs = build_faultfs(root)?;
    // /var/tmp is on the machine's disk (ext4 here), not tmpfs.
    let scratch = tempfile::Builder::new()
        .prefix("faultfs-bench-")
        .tempdir_in("/var/tmp")?;
    let plain = scratch.path().join("ext4");
    fs::create_dir(&plain)?;
    let mut mounts = Vec::new();
    for (index, (_, flags)) in VARIANTS.iter().enumerate() {
        let backing = scratch.path().join(format!("backing-{index}"));
        let mountpoint = scratch.path().join(format!("mnt-{index}"));
        fs::create_dir(&backing)?;
        fs::create_dir(&mountpoint)?;
        let mut daemon = Spawned::start(
            "faultfs",
            Command::new(&faultfs)
                .arg("mount")
                .arg(&backing)
                .arg(&mountpoint)
                .args(*flags)
                .env("RUST_LOG", "error"),
        )?;
        ensure!(daemon.read_line()? == "mounted", "faultfs did not mount");
        mounts.push((mountpoint, daemon));
    }
    let mut directories = vec![plain.clone()];
    directories.extend(mounts.iter().map(|(mountpoint, _)| mountpoint.clone()));
    let measured = measure(&directories);
    for (mountpoint, daemon) in mounts {
        let unmounted = Command::new(&faultfs)
            .arg("umount")
            .arg(&mountpoint)
            .status();
        daemon.finish().ok();
        ensure!(
            unmounted.is_ok_and(|s| s.success()),
            "unmounting the bench mount failed"
        );
    }
    let results = measured?;
    println!("median of {ROUNDS} runs, each configuration in turn within a round");
    print!("{:<42} {:>16}", "workload", "ext4");
    for (name, _) in VARIANTS {
        print!(" {name:>16} {:>6}", "ratio");
    }
    println!();
    for (row, workload) in WORKLOADS.iter().enumerate() {
        let ext4 = results[row][0];
        print!("{:<42} {:>10.0} {:<5}", workload.name, ext4, workload.unit);
        for value in &results[row][1..] {
            print!(
                " {:>10.0} {:<5} {:>5.2}x",
                value,
                workload.unit,
                value / ext4
            );
        }
        println!();
    }
    Ok(())
}

/// The release faultfs binary, built.
pub fn build_faultfs(root: &Path) -> Result<std::path::PathBuf> {
    cmd::run(cargo().current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "faultfs",
    ]))?;
    Ok(root.join("target/release/faultfs"))
}

/// For each workload, the median rate in each directory. Rounds interleave the directories so
/// that slow phases of the disk hit every configuration alike.
fn measure(directories: &[std::path::PathBuf]) -> Result<Vec<Vec<f64>>> {
    WORKLOADS
        .iter()
        .map(|workload| {
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); directories.len()];
            for _ in 0..ROUNDS {
                for (dir, samples) in directories.iter().zip(&mut samples) {
                    let rate = (workload.run)(dir)
                        .with_context(|| format!("{} in {}", workload.name, dir.display()))?;
                    samples.push(rate);
                }
            }
            Ok(samples
                .into_iter()
                .map(|mut s| {
                    s.sort_by(f64::total_cmp);
                    s[s.len() / 2]
                })
                .collect())
        })
        .collect()
}

fn sequential_writes(dir: &Path) -> Result<f64> {
    let path = dir.join("sequential");
    let block = vec![0x5a; 4096];
    let started = Instant::now();
    let mut file = File::create(&path)?;
    for _ in 0..SEQUENTIAL_BYTES / 4096 {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    fs::remove_file(&path)?;
    Ok((SEQUENTIAL_BYTES >> 20) as f64 / seconds)
}

fn write_fsync_loop(dir: &Path) -> Result<f64> {
    let path = dir.join("wal");
    let record = vec![0xa5; 4096];
    let mut file = File::create(&path)?;
    let started = Instant::now();
    for _ in 0..WAL_ITERATIONS {
        file.write_all(&record)?;
        file.sync_data()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    fs::remove_file(&path)?;
    Ok(f64::from(WAL_ITERATIONS) / seconds)
}

fn random_reads(dir: &Path) -> Result<f64> {
    timed_random_reads(dir, READ_FILE_BYTES, false)
}

/// The read once happens through another open: a file system that drops its cache at every
/// open serves all of these from its own process, not from the page cache.
fn random_reads_reopened(dir: &Path) -> Result<f64> {
    timed_random_reads(dir, REOPENED_FILE_BYTES, true)
}

fn timed_random_reads(dir: &Path, bytes: u64, reopen: bool) -> Result<f64> {
    let path = dir.join("reads");
    let mut file = File::create(&path)?;
    let block = vec![0x3c; 1 << 20];
    for _ in 0..bytes >> 20 {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    drop(file);
    let mut file = OpenOptions::new().read(true).open(&path)?;
    let mut buffer = vec![0; 4096];
    // Warm the page cache (this VM evicts cold pages), then time random reads.
    for offset in (0..bytes).step_by(4096) {
        file.read_at(&mut buffer, offset)?;
    }
    if reopen {
        drop(file);
        file = OpenOptions::new().read(true).open(&path)?;
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let started = Instant::now();
    for _ in 0..RANDOM_READS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.read_at(&mut buffer, (state % (bytes / 4096)) * 4096)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    fs::remove_file(&path)?;
    Ok(f64::from(RANDOM_READS) / seconds)
}

fn create_fsync_rename(dir: &Path) -> Result<f64> {
    let started = Instant::now();
    for i in 0..RENAMES {
        let temporary = dir.join(format!("file-{i}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(b"small file contents")?;
        file.sync_all()?;
        fs::rename(&temporary, dir.join(format!("file-{i}")))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    for i in 0..RENAMES {
        fs::remove_file(dir.join(format!("file-{i}")))?;
    }
    Ok(f64::from(RENAMES) / seconds)
}
