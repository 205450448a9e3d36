//! A process whose syscalls are known exactly, so a counter or an injector attached to it can be
//! checked against the truth. Modes:
//! - `--fsyncs N [--threads T]`: N fsync calls per thread and no other fsyncs;
//! - `--until-stdin-closes`: fsync in a loop until stdin is closed (a busy bystander);
//! - `--records N`: append N log records, each one write() then one fsync(), keeping the file.
//!
//! Protocol on stdout: `ready` once set up, then (for fsync modes) `done N` with the fsyncs made,
//! and with `--time-fsyncs` a line `fsync_us A B C ...`.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, Write},
    path::PathBuf,
    sync::{
        Barrier, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Make an exact number of syscalls, for testing the injector.")]
struct Args {
    /// fsync calls to make per thread.
    #[arg(long, default_value_t = 1)]
    fsyncs: u64,
    /// Threads making fsync calls at the same time.
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Instead of --fsyncs calls, call fsync in a loop until stdin is closed.
    #[arg(long, conflicts_with = "fsyncs")]
    until_stdin_closes: bool,
    /// Instead: append N log records (`record I` lines), each with one write and one fsync, and
    /// keep the file.
    #[arg(long, conflicts_with_all = ["fsyncs", "until_stdin_closes"])]
    records: Option<u64>,
    /// Instead: write 1 byte to /dev/null N times and print `ns_per_call X` (for benchmarks).
    #[arg(long, conflicts_with_all = ["fsyncs", "until_stdin_closes", "records"])]
    null_writes: Option<u64>,
    /// Wait for a line on stdin before the first call (lets a tool attach first).
    #[arg(long)]
    wait_for_go: bool,
    /// Also print how long each fsync took, in microseconds.
    #[arg(long)]
    time_fsyncs: bool,
    /// Do not stop at a failed fsync: print each result at the end, `fsync_results ok EIO ...`.
    #[arg(long)]
    report_results: bool,
    /// File to use; created. Removed at the end except with --records. Default: a nameless file
    /// in the temp dir.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Instead of --file: this fd, open already (inherited from the parent), kept at the end.
    #[arg(long, conflicts_with = "file")]
    inherited_fd: Option<i32>,
}

fn create(path: &std::path::Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (file, path) = match args.inherited_fd {
        Some(fd) => {
            use std::os::fd::FromRawFd;
            // SAFETY: the caller promises fd is an open file this process owns from now on.
            (unsafe { File::from_raw_fd(fd) }, None)
        }
        None => match &args.file {
            Some(path) => (create(path)?, Some(path.clone())),
            None => {
                // Unlinked at once: tests kill workers (that is their job), and a killed
                // worker must not leave a file behind in the temp dir.
                let path =
                    std::env::temp_dir().join(format!("syscall-worker-{}", std::process::id()));
                let file = create(&path)?;
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                (file, None)
            }
        },
    };
    if let Some(writes) = args.null_writes {
        let null = OpenOptions::new().write(true).open("/dev/null")?;
        say("ready")?;
        wait_for_go(&args)?;
        return null_writes(&null, writes);
    }
    if let Some(records) = args.records {
        say("ready")?;
        wait_for_go(&args)?;
        return write_records(&file, records);
    }
    let stop = AtomicBool::new(!args.until_stdin_closes);
    let done = AtomicU64::new(0);
    let latencies = Mutex::new(Vec::new());
    let results = Mutex::new(Vec::new());
    // Threads exist before `ready` (so a caller sees them all) and start their fsyncs together.
    let start = Barrier::new(args.threads as usize + 1);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    fsync_loop(&file, &args, &stop, &done, (&latencies, &results))
                })
            })
            .collect();
        say("ready")?;
        wait_for_go(&args)?;
        start.wait();
        if args.until_stdin_closes {
            io::copy(&mut io::stdin().lock(), &mut io::sink())?;
            stop.store(true, Ordering::Relaxed);
        }
        for worker in workers {
            worker.join().expect("fsync thread panicked")?;
        }
        Ok(())
    })?;
    drop(file);
    if let Some(path) = &path {
        fs::remove_file(path).ok();
    }
    if args.report_results {
        let results = results.into_inner().expect("not poisoned");
        say(&format!("fsync_results {}", results.join(" ")))?;
    }
    if args.time_fsyncs {
        let latencies = latencies.into_inner().expect("not poisoned");
        let list: Vec<String> = latencies.iter().map(u128::to_string).collect();
        say(&format!("fsync_us {}", list.join(" ")))?;
    }
    say(&format!("done {}", done.load(Ordering::Relaxed)))
}

fn wait_for_go(args: &Args) -> Result<()> {
    if args.wait_for_go {
        io::stdin().lock().read_line(&mut String::new())?;
    }
    Ok(())
}

fn null_writes(mut null: &File, writes: u64) -> Result<()> {
    let started = Instant::now();
    for _ in 0..writes {
        null.write_all(b"x")?;
    }
    let per_call = started.elapsed().as_nanos() as f64 / writes as f64;
    say(&format!("ns_per_call {per_call:.1}"))
}

fn write_records(mut file: &File, records: u64) -> Result<()> {
    for record in 0..records {
        file.write_all(format!("record {record}\n").as_bytes())?;
        file.sync_all()?;
    }
    say(&format!("done {records}"))
}

fn fsync_loop(
    file: &File,
    args: &Args,
    stop: &AtomicBool,
    done: &AtomicU64,
    (latencies, results): (&Mutex<Vec<u128>>, &Mutex<Vec<String>>),
) -> io::Result<()> {
    let mut made = 0;
    loop {
        let finished = if args.until_stdin_closes {
            stop.load(Ordering::Relaxed)
        } else {
            made == args.fsyncs
        };
        if finished {
            return Ok(());
        }
        let started = Instant::now();
        let result = file.sync_all();
        if args.report_results {
            let text = match &result {
                Ok(()) => "ok".to_owned(),
                Err(error) => errno_name(error),
            };
            results.lock().expect("not poisoned").push(text);
        } else {
            result?;
        }
        if args.time_fsyncs {
            let took = started.elapsed().as_micros();
            latencies.lock().expect("not poisoned").push(took);
        }
        made += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
}

fn errno_name(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EIO) => "EIO".into(),
        Some(libc::ENOSPC) => "ENOSPC".into(),
        Some(code) => format!("errno{code}"),
        None => error.to_string(),
    }
}

fn say(line: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
