//! `cargo xtask mutants`: proves the torture harness on planted bugs. Each patch under
//! `tests/mutants/` is a realistic bug of a class real Raft and WAL databases have shipped,
//! applied to a scratch copy of target-db and built; the default torture run then runs on fixed
//! seeds until one fails. A mutant no seed catches is a bug the harness misses.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    cmd::{self, cargo},
    kernel_fs, torture,
};

#[derive(clap::Args)]
pub struct MutantsArgs {
    /// Only these mutants (file names under tests/mutants without .patch), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run only this many mutants, spread evenly over the list (CI's quick sample).
    #[arg(long)]
    sample: Option<usize>,
    /// The seeds to try, in order, until one catches the mutant.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    seeds: Vec<u64>,
    /// Each torture run's length.
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Extra arguments for every `torture run` (e.g. --faults crash-point), after `--`.
    #[arg(last = true)]
    torture_args: Vec<String>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Only check that each patch applies to the current tree and changes what it names (no
    /// build, no run, no root; CI runs this so a stale patch is caught at once).
    #[arg(long)]
    check: bool,
}

/// One mutant's result.
#[derive(serde::Serialize)]
struct Outcome {
    mutant: String,
    /// caught, missed or undecided (a run that could not decide is not a catch).
    verdict: &'static str,
    /// The seed that caught it.
    seed: Option<u64>,
    /// The checks that failed in that run.
    failed_checks: Vec<String>,
    /// Seconds of torture runs until it was caught (all seeds' runs when it was not).
    seconds: f64,
    replay: Option<String>,
}

/// Loopback addresses of the mutant clusters: apart from the default runs' and the tests'.
const FIRST_IP: &str = "127.0.7.11";

pub fn run(root: &Path, args: &MutantsArgs) -> Result<()> {
    let mutants = select(root, args)?;
    if args.check {
        return check(root, &mutants);
    }
    ensure!(
        cmd::is_root(),
        "torture runs mount file systems and load eBPF: run as root"
    );
    ensure!(!args.seeds.is_empty(), "--seeds: give at least one seed");
    torture::build_tools(root)?;
    kernel_fs::ensure()?;
    let scratch = root.join("target/mutants");
    // The harness and tools as they are now, copied: a rebuild during a long run does not change
    // the harness halfway through the list.
    let tools = scratch.join("tools");
    std::fs::create_dir_all(&tools)?;
    for tool in ["torture", "faultfs", "injector"] {
        std::fs::copy(root.join("target/release").join(tool), tools.join(tool))?;
    }
    let mut outcomes = Vec::new();
    for (name, patch) in &mutants {
        eprintln!("mutants: {name}: building");
        let bin_dir = build_mutant(root, &scratch, name, patch)?;
        let outcome = hunt(&scratch, name, &bin_dir, args)?;
        eprintln!(
            "mutants: {name}: {}{}",
            outcome.verdict,
            outcome
                .seed
                .map(|s| format!(" by seed {s} after {:.0} s", outcome.seconds))
                .unwrap_or_default()
        );
        outcomes.push(outcome);
    }
    report(&outcomes, args.json)
}

/// Every mutant in `tests/mutants/` applies and changes target-db (a CI step).
pub fn check_all(root: &Path) -> Result<()> {
    check(root, &list(root)?)
}

fn check(root: &Path, mutants: &[(String, PathBuf)]) -> Result<()> {
    let work = root.join("target/mutants/check");
    for (name, patch) in mutants {
        patched_copy(root, &work, name, patch)?;
    }
    std::fs::remove_dir_all(&work)?;
    eprintln!(
        "mutants: all {} patches apply and change target-db",
        mutants.len()
    );
    Ok(())
}

/// The mutants `--only` and `--sample` choose.
fn select(root: &Path, args: &MutantsArgs) -> Result<Vec<(String, PathBuf)>> {
    let mut mutants = list(root)?;
    if !args.only.is_empty() {
        for name in &args.only {
            ensure!(
                mutants.iter().any(|(n, _)| n == name),
                "no mutant `{name}` in tests/mutants (there are: {})",
                mutants
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        mutants.retain(|(name, _)| args.only.contains(name));
    }
    if let Some(count) = args.sample {
        ensure!(count > 0, "--sample 0 runs nothing: give at least 1");
        let step = (mutants.len() as f64 / count as f64).max(1.0);
        mutants = (0..count.min(mutants.len()))
            .map(|i| mutants[(i as f64 * step) as usize].clone())
            .collect();
    }
    Ok(mutants)
}

/// Every `tests/mutants/*.patch`, by name, sorted.
fn list(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = root.join("tests/mutants");
    let mut mutants: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "patch"))
        .map(|path| {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, path)
        })
        .collect();
    mutants.sort();
    ensure!(!mutants.is_empty(), "no patches in {}", dir.display());
    Ok(mutants)
}

/// A copy of the workspace's tracked files with the patch applied, built (release) into a
/// target directory shared by all mutants, so only target-db is compiled again; returns a
/// directory with the mutant target-db next to the real faultfs and injector.
fn build_mutant(root: &Path, scratch: &Path, name: &str, patch: &Path) -> Result<PathBuf> {
    let work = scratch.join("work");
    patched_copy(root, &work, name, patch)?;
    cmd::run(
        cargo()
            .current_dir(&work)
            .env("CARGO_TARGET_DIR", scratch.join("target"))
            .args(["build", "--quiet", "--release", "--package", "target-db"]),
    )
    .with_context(|| format!("building mutant {name}"))?;
    let bin_dir = scratch.join("bin").join(name);
    std::fs::create_dir_all(&bin_dir)?;
    std::fs::copy(
        scratch.join("target/release/target-db"),
        bin_dir.join("target-db"),
    )?;
    for tool in ["faultfs", "injector"] {
        std::fs::copy(scratch.join("tools").join(tool), bin_dir.join(tool))?;
    }
    Ok(bin_dir)
}

/// A fresh copy of the workspace's tracked files in `work`, with the patch applied.
fn patched_copy(root: &Path, work: &Path, name: &str, patch: &Path) -> Result<()> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    let files = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z"])
        .output()
        .context("listing the workspace's files with git")?;
    ensure!(files.status.success(), "git ls-files failed");
    for file in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let relative = Path::new(std::str::from_utf8(file)?);
        let (from, to) = (root.join(relative), work.join(relative));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if from.exists() {
            std::fs::copy(&from, &to)?;
        }
    }
    // The copy lies inside the workspace's repository: run from there, `git apply` would take
    // paths from the repository's root, skip every file outside the copy, and still succeed.
    // Stopping git's search for a repository above the copy makes it patch the copy.
    let ceiling = work.parent().unwrap_or(work);
    let applied = Command::new("git")
        .current_dir(work)
        .env("GIT_CEILING_DIRECTORIES", ceiling)
        .args(["apply", "--whitespace=nowarn"])
        .arg(patch)
        .status()
        .context("git apply")?;
    if !applied.success() {
        bail!(
            "mutant {name}: {} does not apply to this tree; rewrite it against the current target-db",
            patch.display()
        );
    }
    ensure_changed(root, work, name, patch)
}

/// Fails unless every file the patch names now differs from the workspace's: a mutant that
/// did not change target-db would be reported as missed.
fn ensure_changed(root: &Path, work: &Path, name: &str, patch: &Path) -> Result<()> {
    let text = std::fs::read_to_string(patch)?;
    let files: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("+++ b/"))
        .collect();
    ensure!(
        !files.is_empty(),
        "mutant {name}: {} patches no file",
        patch.display()
    );
    for file in files {
        let (before, after) = (
            std::fs::read(root.join(file))?,
            std::fs::read(work.join(file))?,
        );
        ensure!(
            before != after,
            "mutant {name}: applying {} left {file} unchanged",
            patch.display()
        );
    }
    Ok(())
}

/// Runs the torture on each seed until one fails.
fn hunt(scratch: &Path, name: &str, bin_dir: &Path, args: &MutantsArgs) -> Result<Outcome> {
    let started = Instant::now();
    let mut undecided = false;
    for &seed in &args.seeds {
        let run_dir = scratch.join("runs").join(format!("{name}-seed-{seed}"));
        let mut torture = Command::new(scratch.join("tools/torture"));
        torture.arg("run");
        // Arguments after `--` may name their own range.
        if !args
            .torture_args
            .iter()
            .any(|a| a.starts_with("--first-ip"))
        {
            torture.args(["--first-ip", FIRST_IP]);
        }
        let output = torture
            .args(["--seed", &seed.to_string(), "--duration", &args.duration])
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--run-dir")
            .arg(&run_dir)
            .args(&args.torture_args)
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("running the torture for mutant {name}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        match output.status.code() {
            Some(0) => continue,
            Some(1) => {
                return Ok(Outcome {
                    mutant: name.to_owned(),
                    verdict: "caught",
                    seed: Some(seed),
                    failed_checks: text
                        .lines()
                        .filter(|l| l.starts_with("FAIL "))
                        .map(|l| l.trim_start_matches("FAIL").trim().to_owned())
                        .collect(),
                    seconds: started.elapsed().as_secs_f64(),
                    replay: text
                        .lines()
                        .find_map(|l| l.strip_prefix("replay: "))
                        .map(str::to_owned),
                });
            }
            Some(3) => undecided = true,
            other => bail!(
                "the torture run for mutant {name}, seed {seed}, could not run ({other:?}); see {}",
                run_dir.display()
            ),
        }
    }
    Ok(Outcome {
        mutant: name.to_owned(),
        verdict: if undecided { "undecided" } else { "missed" },
        seed: None,
        failed_checks: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
        replay: None,
    })
}

fn report(outcomes: &[Outcome], json: bool) -> Result<()> {
    let caught: Vec<&Outcome> = outcomes.iter().filter(|o| o.verdict == "caught").collect();
    let mut times: Vec<f64> = caught.iter().map(|o| o.seconds).collect();
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied();
    if json {
        let value = serde_json::json!({
            "mutants": outcomes,
            "caught": caught.len(),
            "total": outcomes.len(),
            "median_seconds_to_detection": median,
        });
        println!("{value:#}");
    } else {
        println!(
            "{:<34} {:<10} {:>5} {:>8}  failed checks",
            "mutant", "verdict", "seed", "seconds"
        );
        for outcome in outcomes {
            println!(
                "{:<34} {:<10} {:>5} {:>8.0}  {}",
                outcome.mutant,
                outcome.verdict,
                outcome.seed.map_or("-".to_owned(), |s| s.to_string()),
                outcome.seconds,
                outcome
                    .failed_checks
                    .iter()
                    .map(|c| c.split("  ").next().unwrap_or(c).trim())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        println!(
            "mutation score: {} of {} caught; median time to detection {}",
            caught.len(),
            outcomes.len(),
            median.map_or("-".to_owned(), |m| format!("{m:.0} s"))
        );
    }
    if caught.len() == outcomes.len() {
        Ok(())
    } else {
        bail!(
            "{} of {} mutants were not caught",
            outcomes.len() - caught.len(),
            outcomes.len()
        )
    }
}
