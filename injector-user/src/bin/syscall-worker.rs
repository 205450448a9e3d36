//! A process whose syscalls are known exactly: it makes `--fsyncs` fsync calls per thread and no
//! others, so a counter or an injector attached to it can be checked against the truth.
//!
//! Protocol on stdout: `ready` once the file is open, then `done N` with the fsyncs it made.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, Write},
    path::PathBuf,
    sync::{
        Barrier,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Make an exact number of fsync calls, for testing the injector.")]
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
    /// Wait for a line on stdin before the first fsync (lets a tool attach first).
    #[arg(long)]
    wait_for_go: bool,
    /// File to fsync; created, and removed at the end. Default: a file in the temp directory.
    #[arg(long)]
    file: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let path = args.file.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("syscall-worker-{}", std::process::id()))
    });
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let stop = AtomicBool::new(!args.until_stdin_closes);
    let done = AtomicU64::new(0);
    // Threads exist before `ready` (so a caller sees them all) and start their fsyncs together.
    let start = Barrier::new(args.threads as usize + 1);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    fsync_loop(&file, &args, &stop, &done)
                })
            })
            .collect();
        say("ready")?;
        let mut stdin = io::stdin().lock();
        if args.wait_for_go {
            stdin.read_line(&mut String::new())?;
        }
        start.wait();
        if args.until_stdin_closes {
            io::copy(&mut stdin, &mut io::sink())?;
            stop.store(true, Ordering::Relaxed);
        }
        for worker in workers {
            worker.join().expect("fsync thread panicked")?;
        }
        Ok(())
    })?;
    drop(file);
    fs::remove_file(&path).ok();
    say(&format!("done {}", done.load(Ordering::Relaxed)))
}

fn fsync_loop(file: &File, args: &Args, stop: &AtomicBool, done: &AtomicU64) -> io::Result<()> {
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
        file.sync_all()?;
        made += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
}

fn say(line: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
