//! `faultfs explore`: runs a workload once on a fresh faultfs mount, recording every change it
//! makes and every line it prints; then builds each crash state the persistence model allows
//! after each operation (from the record, never by running the workload again) and runs the
//! user's check on it. See `states` for which states, `check` for how one is checked.
mod check;
mod interrupt;
mod record;
mod select;
mod state_id;
pub mod states;
mod summary;

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::{
    journal::{self, Entry, Journal, Op},
    mount::{self, MountOptions},
    state::MetadataMode,
};
use interrupt::{Interrupt, unblock_signals_in_child, watch_signals};
use record::record;
use select::{Selection, select};
use state_id::{parse_state_id, state_id};
use states::{Counts, CrashState, Kept, Plan, Sweep};
pub use summary::{FailingPoint, FailingState, OpSummary, Summary};
use summary::{failing_state, summarise};

#[derive(Debug, Error)]
pub enum ExploreError {
    #[error("--max-states must be at least 1")]
    NoStates,
    #[error("no workload given: put the command after `--`, e.g. `-- ./my-db-test`")]
    NoWorkload,
    #[error(
        "the check command was not found (sh exited 127 on the empty state): {output}\n\
         fix the command or give its full path"
    )]
    CheckNotFound { output: String },
    #[error(
        "the workload `{command}` failed ({status}); explore needs a workload that succeeds \
         when nothing crashes. Its stderr ended with:\n{stderr}"
    )]
    WorkloadFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not start the workload `{command}`: {source}; is it on PATH?")]
    WorkloadNotStarted {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "the check fails on the state the workload left, with nothing lost to a power loss \
         (exit {code}): either the check is wrong, or the program lost what it acknowledged by \
         itself (it was killed before making it durable, or never wrote it). Exploring would \
         blame every crash state for it. The check printed:\n{output}"
    )]
    CheckFailsWithoutCrash { code: String, output: String },
    #[error("the workload made no change to its directory: nothing to explore")]
    NothingRecorded,
    #[error("interrupted")]
    Interrupted,
    #[error(
        "the workload never printed the line `{0}` that --from-line waits for: print it once \
         its set-up is done, on a line of its own"
    )]
    NoSuchLine(String),
    #[error(
        "no crash state `{0}` in this record (ids look like 12:prefix-3, 12:nothing, 12:all-but-2, 12:torn-1-512)"
    )]
    NoSuchState(String),
}

pub struct Options {
    pub workload: Vec<String>,
    pub check: String,
    pub metadata: MetadataMode,
    pub max_states: usize,
    pub seed: u64,
    pub keep: Option<PathBuf>,
    pub check_timeout: Duration,
    /// Only crash points after the workload printed this line are explored (its set-up
    /// before it is not).
    pub from_line: Option<String>,
    /// Progress lines on stderr.
    pub progress: bool,
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn tick(&mut self, explored: usize, tried: usize, total: usize, failing: usize, force: bool) {
        if !self.enabled || (!force && self.last.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.last = Instant::now();
        let rate = explored as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "explore: {tried}/{total} candidate states tried, {explored} distinct checked ({rate:.0}/s), {failing} failing"
        );
    }
}

/// Writes the state and the output file the check reads; returns the output file.
fn lay_out(
    plan: &Plan,
    state: &CrashState,
    pending: &[usize],
    dir: &Path,
    output_file: &Path,
) -> std::io::Result<()> {
    check::materialise(&plan.tree(state, pending), dir)?;
    write_output(plan, state.point, output_file)
}

/// The file the check reads the acknowledged lines from.
fn write_output(plan: &Plan, point: usize, output_file: &Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(fs::File::create(output_file)?);
    for line in plan.output(point) {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

pub fn run(options: &Options) -> anyhow::Result<Summary> {
    if options.max_states == 0 {
        return Err(ExploreError::NoStates.into());
    }
    if options.workload.is_empty() {
        return Err(ExploreError::NoWorkload.into());
    }
    let started = Instant::now();
    let interrupt = watch_signals();
    let scratch = tempfile::Builder::new()
        .prefix("faultfs-explore-")
        .tempdir_in(scratch_base())?;
    let state_dir = scratch.path().join("state");
    let output_file = scratch.path().join("output");
    // The check, on whatever state and output were laid out last.
    let run_check = || {
        check::run_check(
            &options.check,
            &state_dir,
            &output_file,
            options.check_timeout,
            &interrupt.running,
        )
    };

    // The empty state (a crash before the workload did anything) first: it also tells whether
    // the check can run at all.
    fs::create_dir(&state_dir)?;
    fs::write(&output_file, "")?;
    let first = run_check()?;
    if first.code == Some(127) {
        return Err(ExploreError::CheckNotFound {
            output: first.output.trim().to_string(),
        }
        .into());
    }

    let entries = record(options, scratch.path(), &interrupt)?;
    let plan = Plan::new(&entries, options.metadata);
    let operations = plan.points.len() - 1;
    if operations == 0 {
        return Err(ExploreError::NothingRecorded.into());
    }
    let syncs = entries
        .iter()
        .filter(|e| matches!(e, Entry::Op { op, .. } if op.is_sync()))
        .count();
    let output_lines = plan.output(operations).len();

    // Nothing lost at the end: the check must pass there, or it would fail everywhere.
    let everything = CrashState {
        point: operations,
        kept: Kept::Prefix(usize::MAX),
        lost: 0,
    };
    let last_pending = plan.pending_at(operations);
    lay_out(&plan, &everything, &last_pending, &state_dir, &output_file)?;
    let last = run_check()?;
    if !last.passed {
        return Err(ExploreError::CheckFailsWithoutCrash {
            code: last
                .code
                .map_or("killed at the timeout".into(), |c| c.to_string()),
            output: last.output,
        }
        .into());
    }

    let mut counts = plan.counts();
    let first_point = match &options.from_line {
        Some(line) => (0..plan.points.len())
            .find(|&point| plan.output(point).iter().any(|printed| printed == line))
            .ok_or_else(|| ExploreError::NoSuchLine(line.clone()))?,
        None => 0,
    };
    for skipped in &mut counts[..first_point] {
        *skipped = Counts::default();
    }
    let (selection, candidate_states) = select(&counts, options.max_states, options.seed);
    let sampled = matches!(selection, Selection::Sample(_));
    let to_try = match &selection {
        Selection::All => candidate_states,
        Selection::Sample(by_point) => by_point.values().map(Vec::len).sum(),
    };
    if options.progress {
        eprintln!(
            "explore: recorded {operations} operations ({syncs} syncs) and {output_lines} output lines; \
             {} crash points, {candidate_states} candidate states under --metadata {}{}",
            plan.points.len(),
            model_name(options.metadata),
            if sampled {
                format!(
                    "; checking a seeded sample of {to_try} (--max-states {})",
                    options.max_states
                )
            } else {
                String::new()
            }
        );
    }
    let points: Vec<usize> = match &selection {
        Selection::All => (first_point..plan.points.len()).collect(),
        Selection::Sample(by_point) => by_point.keys().copied().collect(),
    };
    let mut sweep = Sweep::new(&plan);
    let mut seen = HashSet::new();
    let mut explored = 0;
    let mut duplicates = 0;
    let mut tried = 0;
    // Per failing point: how many states failed, and the one that loses least.
    let mut failing: BTreeMap<usize, (usize, CrashState, check::Verdict)> = BTreeMap::new();
    let mut failing_states = 0;
    let mut progress = Progress {
        enabled: options.progress,
        started: Instant::now(),
        last: Instant::now(),
    };
    for point in points {
        sweep.advance_to(point);
        let pending = sweep.pending();
        let states = plan.states_at(point, &pending);
        let chosen: Vec<&CrashState> = match &selection {
            Selection::All => states.iter().collect(),
            Selection::Sample(by_point) => by_point[&point].iter().map(|&i| &states[i]).collect(),
        };
        for state in chosen {
            if interrupt.asked.load(Ordering::SeqCst) {
                return Err(ExploreError::Interrupted.into());
            }
            tried += 1;
            let tree = plan.tree(state, &pending);
            let key = (tree.digest(), plan.output(point).len());
            if !seen.insert(key) {
                duplicates += 1;
                continue;
            }
            explored += 1;
            check::materialise(&tree, &state_dir)?;
            write_output(&plan, point, &output_file)?;
            let verdict = run_check()?;
            if interrupt.asked.load(Ordering::SeqCst) {
                return Err(ExploreError::Interrupted.into());
            }
            if !verdict.passed {
                failing_states += 1;
                let entry = failing
                    .entry(point)
                    .or_insert_with(|| (0, state.clone(), verdict.clone()));
                entry.0 += 1;
                if state.lost < entry.1.lost {
                    entry.1 = state.clone();
                    entry.2 = verdict;
                }
            }
            progress.tick(explored, tried, to_try, failing_states, false);
        }
    }
    progress.tick(explored, tried, to_try, failing_states, true);

    let keep = match (&options.keep, failing.is_empty()) {
        (Some(dir), _) => {
            fs::create_dir_all(dir)?;
            Some(dir.clone())
        }
        (None, false) => Some(
            tempfile::Builder::new()
                .prefix("faultfs-explore-failures-")
                .tempdir()?
                .keep(),
        ),
        (None, true) => None,
    };
    let journal_path = keep.as_ref().map(|dir| dir.join("journal.jsonl"));
    if let Some(path) = &journal_path {
        journal::save(&entries, path)?;
    }
    let mut points = Vec::new();
    for (point, (count, state, verdict)) in failing {
        let pending = plan.pending_at(point);
        let id = state_id(&state);
        let kept_at = match &keep {
            Some(dir) => {
                let at = dir.join(format!("state-{}", id.replace(':', "-")));
                lay_out(&plan, &state, &pending, &at, &at.with_extension("output"))?;
                Some(at)
            }
            None => None,
        };
        let replay = format!(
            "faultfs explore --replay {} --state {id} --metadata {} --check {}",
            journal_path
                .as_ref()
                .map_or("JOURNAL".into(), |p| shell_quote(&p.display().to_string())),
            model_name(options.metadata),
            shell_quote(&options.check)
        );
        points.push(FailingPoint {
            after: summarise(&plan, point),
            failing_states: count,
            smallest: failing_state(&plan, &state, &pending, verdict, kept_at, replay),
        });
    }
    Ok(Summary {
        model: options.metadata,
        operations,
        syncs,
        output_lines,
        crash_points: plan.points.len(),
        candidate_states,
        states_explored: explored,
        duplicates,
        sampled,
        failing_states,
        failing: points,
        journal: journal_path,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Where the mount and the crash states are built: $TMPDIR when set, else /dev/shm (memory:
/// writing a few thousand small trees there costs a quarter of what it costs on an ext4 disk).
fn scratch_base() -> PathBuf {
    match std::env::var_os("TMPDIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        _ => std::env::temp_dir(),
    }
}

pub fn model_name(model: MetadataMode) -> &'static str {
    match model {
        MetadataMode::Posix => "posix",
        MetadataMode::Ext4 => "ext4",
    }
}

/// `--replay`: rebuilds one state from a saved record into `into` and runs the check on it.
pub fn replay(
    journal_path: &Path,
    id: &str,
    model: MetadataMode,
    check_command: &str,
    into: &Path,
    timeout: Duration,
) -> anyhow::Result<(FailingState, bool)> {
    let entries = journal::load(journal_path)?;
    let plan = Plan::new(&entries, model);
    let (point, kept) = parse_state_id(id).ok_or_else(|| ExploreError::NoSuchState(id.into()))?;
    if point >= plan.points.len() {
        return Err(ExploreError::NoSuchState(id.into()).into());
    }
    let pending = plan.pending_at(point);
    let state = plan
        .states_at(point, &pending)
        .into_iter()
        .find(|s| s.kept == kept)
        .ok_or_else(|| ExploreError::NoSuchState(id.into()))?;
    let output_file = into.with_extension("output");
    lay_out(&plan, &state, &pending, into, &output_file)?;
    let verdict = check::run_check(
        check_command,
        into,
        &output_file,
        timeout,
        &Arc::new(AtomicI32::new(0)),
    )?;
    let passed = verdict.passed;
    let found = failing_state(
        &plan,
        &state,
        &pending,
        verdict,
        Some(into.to_path_buf()),
        String::new(),
    );
    Ok((found, passed))
}

/// Operations of a record, for tests and reports.
pub fn operations(entries: &[Entry]) -> impl Iterator<Item = &Op> {
    entries.iter().filter_map(|entry| match entry {
        Entry::Op { op, .. } => Some(op),
        Entry::Output { .. } => None,
    })
}
