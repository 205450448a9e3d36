//! `faultfs`: mount a directory whose unsynced changes vanish on a simulated power loss.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use faultfs::{
    control::{self, Request},
    explore,
    mount::{self, MountOptions},
    power_loss::PowerLossMode,
    state::MetadataMode,
};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

mod daemon;
mod print;

use daemon::{spawn_daemon, umount};
use print::{print_answer, print_failing_state, print_summary};

#[derive(Parser)]
#[command(
    name = "faultfs",
    version,
    about = "A FUSE file system that keeps unsynced writes volatile, to test crash safety.",
    long_about = "A FUSE file system that keeps unsynced writes volatile, to test crash safety.\n\n\
        The backing directory is the disk. What a program writes through the mount point stays \
        volatile until it is made durable as POSIX requires: file data and size by fsync or \
        fdatasync of the file, directory entries (create, unlink, rename, mkdir, link) by fsync \
        of the parent directory (--metadata posix, the default; --metadata ext4 also makes a \
        file's own entry durable when the file is fsynced, as ext4's journal does). `ctl power-loss` discards everything volatile; \
        so does unmounting or killing faultfs, as a crash would. Fault rules (`ctl fault add`) \
        use the fail crate's syntax: OP[(path=\"GLOB\")]=[P%][N*]ACTION[(ARG)][->...].",
    after_help = "Examples:\n  \
        sudo faultfs mount /var/lib/db-backing /var/lib/db --seed 7 --daemon\n  \
        sudo faultfs ctl /var/lib/db fault add 'fsync(path=\"wal/*\")=2*off->1*error(EIO)'\n  \
        sudo faultfs ctl /var/lib/db power-loss --mode torn\n  \
        sudo faultfs ctl /var/lib/db status\n  \
        sudo faultfs umount /var/lib/db"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve BACKING at MOUNTPOINT (foreground unless --daemon; Ctrl-C or SIGTERM unmounts).
    Mount {
        backing: PathBuf,
        mountpoint: PathBuf,
        /// Seed for every random choice (power-loss modes, rule probabilities).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A TOML file: `seed`, `metadata`, `capacity`, `durable_backing`, `faults = [RULE, ...]`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A fault rule, e.g. 'write(path="wal/*")=10%delay(20)'. Repeatable.
        #[arg(long = "fault")]
        faults: Vec<String>,
        /// When a directory entry becomes durable (see --help).
        #[arg(long, value_enum)]
        metadata: Option<MetadataMode>,
        /// Space limit, e.g. 64M or 2G: writes beyond it fail with ENOSPC.
        #[arg(long)]
        capacity: Option<String>,
        /// Also fsync the backing files (slower; only needed if the real machine may crash).
        #[arg(long)]
        durable_backing: bool,
        /// FUSE request threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Send every write() to faultfs as it happens, so write faults (error, short, delay) and
        /// ENOSPC hit that very write() call. By default the kernel gathers writes in its page
        /// cache (much faster for bulk writes) and they reach faultfs at fsync, close or memory
        /// pressure, where write faults then surface, as with a real page cache.
        #[arg(long)]
        direct_writes: bool,
        /// Write every operation to FILE as JSON lines: time, op, path, offset, length, result,
        /// and whether it made something durable.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Run in the background once mounted; print the daemon's pid.
        #[arg(long)]
        daemon: bool,
        /// With --daemon: where the daemon's log goes.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Control a mounted faultfs; every command answers after it took effect.
    Ctl {
        mountpoint: PathBuf,
        #[command(subcommand)]
        command: CtlCommand,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Unmount (what was not durable is lost, as in a crash).
    Umount { mountpoint: PathBuf },
    /// Run a workload once, then check every crash state it could leave.
    #[command(
        long_about = "Run WORKLOAD once on a fresh faultfs mount (its current directory and \
            $FAULTLINE_DIR), recording every change it makes and every line it prints on stdout. \
            Then, after each recorded operation, build each state a power loss could leave under \
            the persistence model (nothing unsynced kept; each prefix of the unsynced operations; \
            all but one; a pending write torn at a 512-byte sector or 4 KiB page boundary), from \
            the record alone, and run CHECK (with sh) in it. CHECK gets $FAULTLINE_DIR (the \
            state) and $FAULTLINE_OUTPUT (a file with the lines the workload had printed before \
            the crash: what it had acknowledged); exit 0 means the state is consistent. \
            Identical states are checked once. Exit status: 0 every state passed, 1 some failed, \
            2 usage or setup error. Needs root (FUSE).",
        after_help = "Examples:\n  \
            sudo faultfs explore --check 'test \"$(cat data)\" = new || ! grep -q done \"$FAULTLINE_OUTPUT\"' \\\n      \
            -- sh -c 'echo new > tmp && mv tmp data && echo done'\n  \
            sudo faultfs explore --metadata ext4 --max-states 5000 --json out.json \\\n      \
            --check './verify-db .' -- ./load-db --rows 100\n  \
            faultfs explore --replay /tmp/faultfs-explore-failures-x/journal.jsonl --state 12:prefix-3 --check './verify-db .'"
    )]
    Explore {
        /// The consistency check, a shell command run in each crash state.
        #[arg(long)]
        check: String,
        /// The persistence model: which unsynced changes a power loss may keep (see `mount --help`).
        #[arg(long, value_enum, default_value = "posix")]
        metadata: MetadataMode,
        /// At most this many distinct states are checked; when there are more, a seeded sample
        /// (nothing-kept and prefix states get at least half).
        #[arg(long, default_value_t = 10_000)]
        max_states: usize,
        /// Seed of the sample.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Explore only the crash points after the workload printed this line (e.g. `ready`
        /// once its set-up, such as a database's initdb, is done).
        #[arg(long, value_name = "LINE")]
        from_line: Option<String>,
        /// Write the result as JSON to FILE.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Keep the record (journal.jsonl) and each crash point's smallest failing state here
        /// (by default they are kept in a temporary directory only when something fails).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// A check running longer than this (seconds) is killed and counts as failing.
        #[arg(long, default_value_t = 30)]
        check_timeout: u64,
        /// Rebuild one state from a saved record (no workload, no mount) and run the check on it.
        #[arg(long, requires = "state", conflicts_with = "workload")]
        replay: Option<PathBuf>,
        /// With --replay: the state id a report printed (e.g. 12:prefix-3).
        #[arg(long)]
        state: Option<String>,
        /// With --replay: where to write the state (default: a new temporary directory).
        #[arg(long)]
        into: Option<PathBuf>,
        /// The workload command and its arguments.
        #[arg(last = true)]
        workload: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Dirty files and bytes, entries not durable, faults fired.
    Status,
    /// Make everything durable.
    Sync,
    /// Discard everything volatile, as a power cut would; then serve what is on disk.
    PowerLoss {
        #[arg(long, value_enum, default_value = "drop")]
        mode: PowerLossMode,
    },
    /// Fault rules: add RULE, remove ID, list.
    Fault {
        #[command(subcommand)]
        command: FaultCommand,
    },
    /// Change the space limit (0: none).
    Capacity { size: String },
}

#[derive(Subcommand)]
enum FaultCommand {
    Add { rule: String },
    Remove { id: u64 },
    List,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    seed: Option<u64>,
    metadata: Option<MetadataMode>,
    capacity: Option<String>,
    durable_backing: Option<bool>,
    #[serde(default)]
    faults: Vec<String>,
}

fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = digits
        .parse()
        .with_context(|| format!("`{text}` is not a size like 64M, 2G or 4096"))?;
    let factor = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => bail!("`{text}` has an unknown unit: use K, M, G or T"),
    };
    number
        .checked_mul(factor)
        .with_context(|| format!("`{text}` is more bytes than fit in 64 bits (16 EiB)"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // explore prints its own progress; a mount's log lines would only interleave with it.
    let level = match cli.command {
        Command::Explore { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Mount {
            backing,
            mountpoint,
            seed,
            config,
            faults,
            metadata,
            capacity,
            durable_backing,
            threads,
            direct_writes,
            trace,
            daemon,
            log,
        } => {
            let file: ConfigFile = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    toml::from_str(&text).with_context(|| {
                        format!("{} is not a valid faultfs config", path.display())
                    })?
                }
                None => ConfigFile::default(),
            };
            let capacity = capacity
                .or(file.capacity)
                .map(|c| parse_size(&c))
                .transpose()?
                .unwrap_or(0);
            let mut all_faults = file.faults;
            all_faults.extend(faults);
            let options = MountOptions {
                backing,
                mountpoint,
                seed: if seed != 0 {
                    seed
                } else {
                    file.seed.unwrap_or(0)
                },
                metadata: metadata.or(file.metadata).unwrap_or(MetadataMode::Posix),
                capacity,
                durable_backing: durable_backing || file.durable_backing.unwrap_or(false),
                faults: all_faults,
                threads,
                writeback_cache: !direct_writes,
                trace,
            };
            // Rules are checked before anything is mounted.
            let check = faultfs::faults::Faults::new(0);
            for rule in &options.faults {
                check.add(rule)?;
            }
            if daemon {
                mount::validate(&options)?;
                return spawn_daemon(log);
            }
            mount::serve(options, || println!("mounted"))
        }
        Command::Ctl {
            mountpoint,
            command,
            json,
        } => {
            let request = match command {
                CtlCommand::Status => Request::Status,
                CtlCommand::Sync => Request::Sync,
                CtlCommand::PowerLoss { mode } => Request::PowerLoss { mode },
                CtlCommand::Fault {
                    command: FaultCommand::Add { rule },
                } => Request::FaultAdd { rule },
                CtlCommand::Fault {
                    command: FaultCommand::Remove { id },
                } => Request::FaultRemove { id },
                CtlCommand::Fault {
                    command: FaultCommand::List,
                } => Request::FaultList,
                CtlCommand::Capacity { size } => Request::Capacity {
                    bytes: parse_size(&size)?,
                },
            };
            let answer = control::call(&mountpoint, &request)?;
            if json {
                println!("{answer}");
            } else {
                print_answer(&answer);
            }
            Ok(())
        }
        Command::Umount { mountpoint } => umount(&mountpoint),
        Command::Explore {
            check,
            metadata,
            max_states,
            seed,
            from_line,
            json,
            keep,
            check_timeout,
            replay,
            state,
            into,
            workload,
        } => {
            let timeout = std::time::Duration::from_secs(check_timeout);
            if let (Some(journal), Some(state)) = (replay, state) {
                let into = match into {
                    Some(dir) => dir,
                    None => tempfile::Builder::new()
                        .prefix("faultfs-replay-")
                        .tempdir()?
                        .keep(),
                };
                let (found, passed) =
                    explore::replay(&journal, &state, metadata, &check, &into, timeout)?;
                print_failing_state(&found);
                println!("check {}", if passed { "passed" } else { "FAILED" });
                std::process::exit(if passed { 0 } else { 1 });
            }
            let options = explore::Options {
                workload,
                check,
                metadata,
                max_states,
                seed,
                keep,
                from_line,
                check_timeout: timeout,
                progress: true,
            };
            let summary = match explore::run(&options) {
                Ok(summary) => summary,
                Err(error) => {
                    eprintln!("faultfs explore: {error:#}");
                    std::process::exit(2);
                }
            };
            if let Some(path) = &json {
                std::fs::write(path, serde_json::to_string_pretty(&summary)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print_summary(&summary);
            std::process::exit(if summary.failing.is_empty() { 0 } else { 1 });
        }
    }
}
