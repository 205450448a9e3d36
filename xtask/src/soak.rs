//! `cargo xtask soak faultfs`: a real database (Debian's SQLite) under load on a faultfs mount
//! for a long time, with a power loss every interval (the modes in turn), sampling faultfs's
//! resident memory, open descriptors and volatile store. What faultfs holds must go back to
//! the same level after every power loss: a leak per file created (SQLite's rollback journal
//! is created and deleted by every commit) shows as a line that keeps rising. The database
//! must pass `PRAGMA integrity_check` after every power loss.
use std::{
    fs,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use process_guard::Spawned;
use serde::Serialize;

use crate::cmd;

#[derive(clap::Args)]
pub struct SoakArgs {
    /// What to soak (only `faultfs` so far).
    #[arg(value_enum)]
    what: Soaked,
    /// How long, e.g. 1h, 10m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The time between power losses.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    power_loss_every: Duration,
    /// Print every sample and the verdict as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Soaked {
    Faultfs,
}

/// One look at the faultfs process.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    /// Taken right after a power loss, when nothing is volatile: the samples compared.
    pub after_power_loss: bool,
    pub rss_kib: u64,
    pub open_fds: u64,
    /// Bytes in faultfs's volatile store (/dev/shm).
    pub store_bytes: u64,
}

/// How much the state right after a power loss may rise from the first such state to the
/// last before it counts as a leak: a few descriptors (the kernel's own opens), an allocator
/// that keeps some freed memory, a few MiB of store that the check after the power loss wrote.
const FD_SLACK: u64 = 8;
const RSS_SLACK_KIB: u64 = 16 * 1024;
const STORE_SLACK_BYTES: u64 = 8 << 20;

/// Whether what faultfs holds after each power loss stayed flat, from the first power loss to
/// the last; otherwise what grew.
pub fn leaks(samples: &[Sample]) -> Vec<String> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.after_power_loss).collect();
    let (Some(first), Some(last)) = (after.first(), after.last()) else {
        return Vec::new();
    };
    let mut grew = Vec::new();
    if last.open_fds > first.open_fds + FD_SLACK {
        grew.push(format!(
            "open descriptors {} -> {} after {} power losses",
            first.open_fds,
            last.open_fds,
            after.len()
        ));
    }
    // Memory may settle at up to a quarter above its first level (allocator arenas).
    if last.rss_kib > first.rss_kib + first.rss_kib / 4 + RSS_SLACK_KIB {
        grew.push(format!(
            "resident memory {} KiB -> {} KiB after {} power losses",
            first.rss_kib,
            last.rss_kib,
            after.len()
        ));
    }
    if last.store_bytes > first.store_bytes + STORE_SLACK_BYTES {
        grew.push(format!(
            "volatile store {} B -> {} B after {} power losses",
            first.store_bytes,
            last.store_bytes,
            after.len()
        ));
    }
    grew
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn run(root: &Path, args: &SoakArgs) -> Result<()> {
    let Soaked::Faultfs = args.what;
    ensure!(
        cmd::is_root(),
        "mounting faultfs needs root: run `sudo -E cargo xtask soak faultfs`"
    );
    ensure!(
        args.power_loss_every >= Duration::from_secs(1) && args.duration >= args.power_loss_every,
        "--power-loss-every must be at least 1s and no longer than --duration"
    );
    ensure!(
        Command::new("sqlite3").arg("-version").output().is_ok(),
        "the soak runs Debian's sqlite3: install it (`cargo xtask setup` does)"
    );
    let faultfs = crate::bench_faultfs::build_faultfs(root)?;
    // Ctrl-C ends the soak early, with the mount taken down by its guard: the children run in
    // their own process group, so the terminal's SIGINT reaches this process alone.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("faultfs-soak-")
        .tempdir_in("/var/tmp")?;
    let mount = Mount::new(&faultfs, scratch.path())?;
    let db = mount.mountpoint.join("soak.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB NOT NULL);",
    )?;
    mount.ctl(&["sync"])?;

    let modes = ["drop", "torn", "reorder", "prefix", "keep"];
    let started = Instant::now();
    // Before any load: shown, not compared (faultfs's memory grows to its working size with
    // the first minute of load; the first power loss is the baseline).
    let mut samples = vec![mount.sample(started, false)?];
    let mut writer = Writer::start(&db)?;
    let mut power_losses = 0;
    let mut next_loss = started + args.power_loss_every;
    let mut transactions = 0;
    while started.elapsed() < args.duration && !INTERRUPTED.load(Ordering::SeqCst) {
        transactions += writer.commit_some()?;
        if Instant::now() < next_loss {
            continue;
        }
        next_loss += args.power_loss_every;
        let mode = modes[power_losses % modes.len()];
        writer.stop();
        mount.ctl(&["power-loss", "--mode", mode])?;
        power_losses += 1;
        let integrity = sqlite(&db, "PRAGMA integrity_check;")?;
        ensure!(
            integrity == "ok",
            "after power loss {power_losses} ({mode}) SQLite finds its database damaged: {integrity}"
        );
        let sample = mount.sample(started, true)?;
        eprintln!(
            "[{:>6.0} s] power loss {power_losses} ({mode}), {transactions} transactions so far: \
             faultfs {} KiB resident, {} descriptors, {} B volatile; integrity ok",
            sample.seconds, sample.rss_kib, sample.open_fds, sample.store_bytes
        );
        samples.push(sample);
        samples.push(mount.sample(started, false)?);
        writer = Writer::start(&db)?;
    }
    writer.stop();
    let grew = leaks(&samples);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "power_losses": power_losses,
                "transactions": transactions,
                "interrupted": INTERRUPTED.load(Ordering::SeqCst),
                "samples": samples,
                "leaks": grew,
            }))?
        );
    }
    println!(
        "soak faultfs: {:.0} s, {power_losses} power losses, {transactions} SQLite transactions",
        started.elapsed().as_secs_f64()
    );
    drop(mount);
    if grew.is_empty() {
        println!("flat: what faultfs holds after a power loss did not grow");
        Ok(())
    } else {
        bail!("faultfs grew over the soak: {}", grew.join("; "))
    }
}

/// One SQLite statement list in its own `sqlite3` process; its output.
fn sqlite(db: &Path, sql: &str) -> Result<String> {
    let output = Command::new("sqlite3")
        .arg("-batch")
        .arg(db)
        .arg(sql)
        .process_group(0)
        .output()
        .context("running sqlite3")?;
    ensure!(
        output.status.success(),
        "sqlite3 `{sql}` failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A `sqlite3` process fed transactions on stdin: each commit (rollback journal, FULL sync)
/// creates, syncs and deletes the journal file, and every 200 the oldest rows are deleted, so
/// the database stays small and what grows is faultfs's, not the data's.
struct Writer {
    child: Child,
    sent: u64,
}

impl Writer {
    fn start(db: &Path) -> Result<Self> {
        let child = Command::new("sqlite3")
            .arg("-batch")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting sqlite3")?;
        let mut writer = Self { child, sent: 0 };
        writer.send("PRAGMA synchronous=FULL;\n")?;
        Ok(writer)
    }

    fn send(&mut self, sql: &str) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("sqlite3's stdin")?;
        stdin.write_all(sql.as_bytes()).context("feeding sqlite3")?;
        Ok(())
    }

    /// Sends a few transactions and waits a little, so that the loop can look at the clock.
    fn commit_some(&mut self) -> Result<u64> {
        if let Some(status) = self.child.try_wait()? {
            bail!("sqlite3 exited during the load ({status})");
        }
        for _ in 0..10 {
            self.sent += 1;
            let mut sql =
                String::from("BEGIN; INSERT INTO t(v) VALUES (randomblob(3000)); COMMIT;\n");
            if self.sent.is_multiple_of(200) {
                sql.push_str("DELETE FROM t WHERE id < (SELECT max(id) - 100 FROM t);\n");
            }
            self.send(&sql)?;
        }
        thread::sleep(Duration::from_millis(20));
        Ok(10)
    }

    /// Ends the process at once (a power loss follows: nothing it has not synced counts).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A faultfs mount for the soak, unmounted when dropped (also on an error or Ctrl-C).
struct Mount {
    faultfs: PathBuf,
    mountpoint: PathBuf,
    daemon: Option<Spawned>,
}

impl Mount {
    fn new(faultfs: &Path, scratch: &Path) -> Result<Self> {
        let backing = scratch.join("backing");
        let mountpoint = scratch.join("mnt");
        fs::create_dir(&backing)?;
        fs::create_dir(&mountpoint)?;
        let mut daemon = Spawned::start(
            "faultfs",
            Command::new(faultfs)
                .arg("mount")
                .arg(&backing)
                .arg(&mountpoint)
                .env("RUST_LOG", "error")
                .process_group(0),
        )?;
        ensure!(daemon.read_line()? == "mounted", "faultfs did not mount");
        Ok(Self {
            faultfs: faultfs.to_owned(),
            mountpoint,
            daemon: Some(daemon),
        })
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        let status = Command::new(&self.faultfs)
            .arg("ctl")
            .arg(&self.mountpoint)
            .args(args)
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "faultfs ctl {} failed", args.join(" "));
        Ok(())
    }

    fn sample(&self, started: Instant, after_power_loss: bool) -> Result<Sample> {
        let pid = self.daemon.as_ref().context("faultfs is gone")?.pid();
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in faultfs's /proc status")?;
        let open_fds = fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
        Ok(Sample {
            seconds: started.elapsed().as_secs_f64(),
            after_power_loss,
            rss_kib,
            open_fds,
            store_bytes: store_bytes(pid)?,
        })
    }
}

/// The bytes in the /dev/shm store of the faultfs process `pid` (`faultfs-store-PID-...`).
fn store_bytes(pid: u32) -> Result<u64> {
    let prefix = format!("faultfs-store-{pid}-");
    let mut total = 0;
    for entry in fs::read_dir("/dev/shm")? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for file in fs::read_dir(entry.path())? {
            total += file?.metadata()?.len();
        }
    }
    Ok(total)
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new(&self.faultfs)
            .arg("umount")
            .arg(&self.mountpoint)
            .status();
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(rss_kib: u64, open_fds: u64, store_bytes: u64) -> Sample {
        Sample {
            seconds: 0.0,
            after_power_loss: true,
            rss_kib,
            open_fds,
            store_bytes,
        }
    }

    #[test]
    fn a_flat_run_has_no_leak_and_load_between_power_losses_does_not_count() {
        let mut samples = vec![after(10_000, 12, 0)];
        for _ in 0..30 {
            samples.push(Sample {
                after_power_loss: false,
                ..after(90_000, 400, 50 << 20)
            });
            samples.push(after(11_000, 13, 4096));
        }
        assert_eq!(leaks(&samples), Vec::<String>::new());
    }

    #[test]
    fn memory_that_grows_to_its_working_size_with_the_first_load_is_no_leak() {
        let before_load = Sample {
            after_power_loss: false,
            ..after(4_576, 11, 8 << 10)
        };
        let mut samples = vec![before_load, after(51_000, 10, 0)];
        samples.extend((0..59).map(|i| after(53_000 + i * 20, 8 + i % 3, 2 << 20)));
        assert_eq!(leaks(&samples), Vec::<String>::new());
    }

    #[test]
    fn descriptors_memory_or_store_that_keep_rising_are_named() {
        let samples: Vec<Sample> = (0..30)
            .map(|i| after(10_000 + i * 2_000, 12 + i, i * (1 << 20)))
            .collect();
        let grew = leaks(&samples);
        assert_eq!(grew.len(), 3, "{grew:?}");
        assert!(grew[0].starts_with("open descriptors 12 -> 41"), "{grew:?}");
        assert!(grew[1].starts_with("resident memory"), "{grew:?}");
        assert!(grew[2].starts_with("volatile store"), "{grew:?}");
    }
}
