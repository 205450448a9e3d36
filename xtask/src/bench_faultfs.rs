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

use crate::{ci::cargo, cmd};

const SEQUENTIAL_BYTES: u64 = 256 << 20;
const WAL_ITERATIONS: u32 = 2000;
const READ_FILE_BYTES: u64 = 64 << 20;
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
        name: "create + fsync + rename",
        unit: "files/s",
        run: create_fsync_rename,
    },
];

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "mounting faultfs needs root: run `sudo -E cargo xtask bench faultfs`"
    );
    cmd::run(cargo().current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "faultfs",
    ]))?;
    let faultfs = root.join("target/release/faultfs");
    // /var/tmp is on the machine's disk (ext4 here), not tmpfs.
    let scratch = tempfile::Builder::new()
        .prefix("faultfs-bench-")
        .tempdir_in("/var/tmp")?;
    let (plain, backing, mountpoint) = (
        scratch.path().join("ext4"),
        scratch.path().join("backing"),
        scratch.path().join("mnt"),
    );
    for dir in [&plain, &backing, &mountpoint] {
        fs::create_dir(dir)?;
    }
    let mut daemon = Spawned::start(
        "faultfs",
        Command::new(&faultfs)
            .arg("mount")
            .arg(&backing)
            .arg(&mountpoint)
            .env("RUST_LOG", "error"),
    )?;
    ensure!(daemon.read_line()? == "mounted", "faultfs did not mount");
    let result = measure_all(&plain, &mountpoint);
    let unmounted = Command::new(&faultfs)
        .arg("umount")
        .arg(&mountpoint)
        .status();
    daemon.finish().ok();
    ensure!(
        unmounted.is_ok_and(|s| s.success()),
        "unmounting the bench mount failed"
    );
    result
}

fn measure_all(plain: &Path, mounted: &Path) -> Result<()> {
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "workload", "ext4", "faultfs", "ratio"
    );
    for workload in WORKLOADS {
        let ext4 = (workload.run)(plain).with_context(|| format!("{} on ext4", workload.name))?;
        let faultfs =
            (workload.run)(mounted).with_context(|| format!("{} on faultfs", workload.name))?;
        println!(
            "{:<44} {:>8.0} {:<5} {:>8.0} {:<5} {:>7.2}x",
            workload.name,
            ext4,
            workload.unit,
            faultfs,
            workload.unit,
            faultfs / ext4
        );
    }
    Ok(())
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
    let path = dir.join("reads");
    let mut file = File::create(&path)?;
    let block = vec![0x3c; 1 << 20];
    for _ in 0..READ_FILE_BYTES >> 20 {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    drop(file);
    let file = OpenOptions::new().read(true).open(&path)?;
    let mut buffer = vec![0; 4096];
    // Warm the page cache (this VM evicts cold pages), then time random reads.
    for offset in (0..READ_FILE_BYTES).step_by(4096) {
        file.read_at(&mut buffer, offset)?;
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let started = Instant::now();
    for _ in 0..RANDOM_READS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.read_at(&mut buffer, (state % (READ_FILE_BYTES / 4096)) * 4096)?;
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
