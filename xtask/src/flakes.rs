//! `cargo xtask flakes`: runs the test suite again and again under load and names every test
//! that ever failed, with its failure rate and its first message. A flaky test costs a whole CI
//! run, so the way to find one is to run the suite many times on a busy machine, not once.
//!
//! Host runs: every test binary of the workspace (built once), one after another as `cargo
//! test` runs them, each with libtest's own parallelism, while a background writer keeps the
//! disk busy (the shared disk is what made timing assertions fail). VM runs: the injector's
//! kernel-dependent tests in the Debian VMs, every binary even after a failure.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    cmd::cargo,
    code_fingerprint,
    test_group::{self, GroupChild},
    vm::KernelChoice,
    vm_tests,
};

#[derive(clap::Args)]
pub struct FlakesArgs {
    /// How many times to run the host test suite.
    #[arg(long, default_value_t = 10)]
    runs: u32,
    /// How many times to run the VM tests on each Debian kernel (each takes about 8 minutes).
    #[arg(long, default_value_t = 0)]
    vm_runs: u32,
    /// Only tests whose name contains this (passed to each test binary as its filter).
    #[arg(long)]
    filter: Option<String>,
    /// No background disk writer (the suite's own parallelism is still there).
    #[arg(long)]
    no_load: bool,
    /// Print the result as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Continue a campaign that was cut short (the end of a session, a lost machine): FILE is
    /// the tally it left (target/flakes.json, or a copy kept with the docs). Its runs count
    /// toward --runs and --vm-runs. Refused unless it tested the same code: every committed
    /// file but docs/ and Markdown, with nothing uncommitted.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
}

/// A test binary of the workspace: where it is and where cargo would run it.
struct TestBinary {
    /// `package/target`, e.g. `injector-user/attach`.
    name: String,
    executable: PathBuf,
    package_dir: PathBuf,
}

/// What one test did over all runs.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Tally {
    runs: u32,
    failures: u32,
    first_message: Option<String>,
}

/// A campaign's state: the code it tests, the runs done and each test's tally. Written after
/// every run, so it can be continued with --resume.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Campaign {
    /// See `code_fingerprint`.
    code: String,
    host_runs: u32,
    vm_runs: u32,
    /// Runs done before the last --resume (how much of the campaign is not this process's).
    #[serde(default)]
    resumed_runs: u32,
    /// Every test seen, failed or not: a resumed campaign adds to each one's runs.
    tests: BTreeMap<String, Tally>,
}

impl Campaign {
    fn start(root: &Path, resume: Option<&Path>) -> Result<Self> {
        let code = code_fingerprint::of_head(root)?;
        let Some(path) = resume else {
            return Ok(Self {
                code,
                ..Self::default()
            });
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the campaign to resume, {}", path.display()))?;
        let mut earlier: Self = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a campaign tally with the code it tested and every test's runs (written by `cargo xtask flakes` since 2026-12-07); start a new campaign without --resume",
                path.display()
            )
        })?;
        ensure!(
            earlier.code == code,
            "{} tested other code (fingerprint {}; this work tree's is {code}): its runs say nothing about this code. Check out the commit it ran at, or start a new campaign without --resume",
            path.display(),
            earlier.code
        );
        earlier.resumed_runs = earlier.host_runs + earlier.vm_runs;
        Ok(earlier)
    }
}

pub fn run(root: &Path, args: &FlakesArgs) -> Result<()> {
    ensure!(
        args.runs > 0 || args.vm_runs > 0,
        "nothing to run: give --runs N or --vm-runs M (at least 1)"
    );
    let mut campaign = Campaign::start(root, args.resume.as_deref())?;
    if args.resume.is_some() {
        eprintln!(
            "flakes: resuming a campaign of {} host and {} VM runs, {} tests seen, {} failures",
            campaign.host_runs,
            campaign.vm_runs,
            campaign.tests.len(),
            failing(&campaign.tests)
        );
    }
    // A missing package fails its tests every run, which would read as flakes (a first
    // campaign on a fresh machine named seven tests that needed chromium, etcd or Redis).
    crate::packages::ensure(crate::packages::RUNTIME, "the tests' tools")?;
    crate::ebpf::build(root)?;
    // As `cargo xtask ci` does before its tests: the injector's tests need tracefs.
    crate::kernel_fs::ensure()?;
    eprintln!("flakes: the tally so far is in {SO_FAR} after every run");
    let binaries = build_host(root)?;
    let signals = test_group::StopOnSignals::install();
    let load = (!args.no_load).then(|| DiskWriter::start(&root.join("target")));
    let started = Instant::now();
    for run in campaign.host_runs + 1..=args.runs {
        let tallies = &mut campaign.tests;
        let failed_before = failing(tallies);
        for binary in &binaries {
            eprintln!("flakes: host run {run}/{}: {}", args.runs, binary.name);
            let binary_started = Instant::now();
            let output = run_binary(binary, args.filter.as_deref())?;
            // Where a run's time goes: the slowest binaries decide how many runs a day holds.
            eprintln!(
                "flakes: host run {run}/{}: {} took {:.0} s",
                args.runs,
                binary.name,
                binary_started.elapsed().as_secs_f64()
            );
            record(tallies, &binary.name, &output);
        }
        eprintln!(
            "flakes: host run {run}/{} done after {:.0} s; {} tests failed in it",
            args.runs,
            started.elapsed().as_secs_f64(),
            failing(tallies) - failed_before
        );
        campaign.host_runs = run;
        // After every run, so an interrupted campaign keeps what it found.
        write_so_far(root, &campaign)?;
    }
    drop(load);
    drop(signals);
    if campaign.vm_runs < args.vm_runs {
        let vm_binaries = vm_tests::build(root)?;
        for run in campaign.vm_runs + 1..=args.vm_runs {
            for kernel in KernelChoice::DEBIANS {
                eprintln!("flakes: VM run {run}/{} on {kernel}", args.vm_runs);
                let outcome = vm_tests::run_on(root, &vm_binaries, &kernel, false)?;
                record(
                    &mut campaign.tests,
                    &format!("vm {kernel}"),
                    &outcome.console,
                );
            }
            campaign.vm_runs = run;
            write_so_far(root, &campaign)?;
        }
    }
    report(&campaign, args)
}

/// Where the tally so far is written after every run.
const SO_FAR: &str = "target/flakes.json";

fn write_so_far(root: &Path, campaign: &Campaign) -> Result<()> {
    let path = root.join(SO_FAR);
    std::fs::write(&path, format!("{:#}", as_json(campaign)))
        .with_context(|| format!("writing {}", path.display()))
}

/// The campaign (for --resume) with a summary on top: the runs, and the tests that ever failed.
fn as_json(campaign: &Campaign) -> serde_json::Value {
    let flaky: Vec<serde_json::Value> = campaign
        .tests
        .iter()
        .filter(|(_, t)| t.failures > 0)
        .map(|(name, tally)| {
            serde_json::json!({
                "test": name,
                "runs": tally.runs,
                "failures": tally.failures,
                "first_message": tally.first_message,
            })
        })
        .collect();
    serde_json::json!({
        "code": campaign.code,
        "host_runs": campaign.host_runs,
        "vm_runs": campaign.vm_runs,
        "resumed_runs": campaign.resumed_runs,
        "tests_seen": campaign.tests.len(),
        "flaky": flaky,
        "tests": campaign.tests,
    })
}

/// Sum of failures so far, to say how many one run added.
fn failing(tallies: &BTreeMap<String, Tally>) -> u32 {
    tallies.values().map(|t| t.failures).sum()
}

fn report(campaign: &Campaign, args: &FlakesArgs) -> Result<()> {
    let tallies = &campaign.tests;
    let flaky: Vec<(&String, &Tally)> = tallies.iter().filter(|(_, t)| t.failures > 0).collect();
    if args.json {
        println!("{:#}", as_json(campaign));
    } else {
        let resumed = if campaign.resumed_runs > 0 {
            format!(" ({} of the runs before --resume)", campaign.resumed_runs)
        } else {
            String::new()
        };
        println!(
            "flakes: {} host runs, {} VM runs per kernel{resumed}, code {}, {} tests seen, {} ever failed",
            campaign.host_runs,
            campaign.vm_runs,
            campaign.code,
            tallies.len(),
            flaky.len()
        );
        for (name, tally) in &flaky {
            println!(
                "  {name}: failed {} of {} runs ({:.0}%): {}",
                tally.failures,
                tally.runs,
                100.0 * f64::from(tally.failures) / f64::from(tally.runs),
                tally.first_message.as_deref().unwrap_or("(no message)")
            );
        }
    }
    if flaky.is_empty() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// Every test binary of the workspace (unit and integration tests), built once.
fn build_host(root: &Path) -> Result<Vec<TestBinary>> {
    let output = cargo()
        .current_dir(root)
        .args(["test", "--workspace", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    ensure!(output.status.success(), "building the test binaries failed");
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(executable), Some(manifest)) = (
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if message["profile"]["test"] != true {
            continue;
        }
        let package_dir = Path::new(manifest)
            .parent()
            .context("a manifest path with no directory")?
            .to_path_buf();
        let package = package_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = message["target"]["name"].as_str().unwrap_or("?");
        binaries.push(TestBinary {
            name: format!("{package}/{target}"),
            executable: executable.into(),
            package_dir,
        });
    }
    ensure!(!binaries.is_empty(), "cargo reported no test binaries");
    Ok(binaries)
}

/// A test binary that runs longer than this is counted as one failure of the binary as a
/// whole (a hang), and killed.
const BINARY_TIMEOUT: Duration = Duration::from_secs(900);

/// Runs one test binary as `cargo test` would (from its package's directory) and returns
/// what it printed; a hang is killed and reported in the output.
fn run_binary(binary: &TestBinary, filter: Option<&str>) -> Result<String> {
    // One file for stdout and stderr, so a full pipe can never block the binary.
    let log = tempfile::tempfile().context("a temporary file for a test binary's output")?;
    let mut command = Command::new(&binary.executable);
    command
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .env("RUST_BACKTRACE", "0")
        .args(["--color", "never"])
        .args(filter)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    // The group's guard needs this process to live; a SIGTERM to `xtask flakes` alone (from a
    // script, not Ctrl-C to the whole group) would otherwise leave the binary running.
    process_guard::killed_with_this_thread(&mut command);
    let mut child = GroupChild::spawn(&mut command)?;
    let deadline = Instant::now() + BINARY_TIMEOUT;
    let finished = loop {
        if child.exited()? {
            break true;
        }
        if test_group::stop_asked() {
            eprintln!(
                "flakes: stopping: {} and what its tests started get SIGTERM (SIGKILL after {} s)",
                binary.name,
                test_group::TEARDOWN_GRACE.as_secs()
            );
            drop(child);
            bail!("stopped by a signal; the runs finished before are in {SO_FAR}");
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // What its tests started and left behind goes with it.
    drop(child);
    let mut text = String::new();
    let mut log = log;
    std::io::Seek::rewind(&mut log)?;
    log.read_to_string(&mut text)?;
    if !finished {
        text.push_str(&format!(
            "\ntest {HUNG_BINARY} ... FAILED\n---- {HUNG_BINARY} stdout ----\nthe test binary ran longer than {} s and was killed\n",
            BINARY_TIMEOUT.as_secs()
        ));
    }
    Ok(text)
}

/// The name a hang of a whole binary is recorded under.
const HUNG_BINARY: &str = "(the whole binary: hung)";

/// Adds one run of a binary (its libtest output) to the tallies, as `binary::test`.
fn record(tallies: &mut BTreeMap<String, Tally>, binary: &str, output: &str) {
    let outcomes = parse_libtest(output);
    for (test, outcome) in outcomes {
        let tally = tallies.entry(format!("{binary}::{test}")).or_default();
        tally.runs += 1;
        if let Err(message) = outcome {
            tally.failures += 1;
            tally.first_message.get_or_insert(message);
        }
    }
}

/// Each test's outcome in libtest's text output: Ok, or Err with the first line of its panic
/// message (from the `---- NAME stdout ----` section).
fn parse_libtest(output: &str) -> Vec<(String, Result<(), String>)> {
    let mut outcomes = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, verdict)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        match verdict.trim() {
            "ok" => outcomes.push((name.to_owned(), Ok(()))),
            "FAILED" => {
                let message = failure_message(output, name);
                outcomes.push((name.to_owned(), Err(message)));
            }
            _ => {}
        }
    }
    outcomes
}

fn failure_message(output: &str, test: &str) -> String {
    let header = format!("---- {test} stdout ----");
    let Some(start) = output.find(&header) else {
        return "(no output)".to_owned();
    };
    let section = &output[start + header.len()..];
    let section = section.split("\n---- ").next().unwrap_or(section);
    // The panic line (where) and the lines after it up to the hint (what): the assertion.
    let lines: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.contains("panicked at") && !line.contains("longer than"))
        .take_while(|line| !line.starts_with("note: run with"))
        .filter(|line| !line.trim().is_empty())
        .take(3)
        .collect();
    let message = lines.join(" ").trim().to_owned();
    let message = if message.is_empty() {
        section.trim().lines().next().unwrap_or("").to_owned()
    } else {
        message.chars().take(400).collect()
    };
    // A torture run's report, printed in the assertion, says which checks failed and which
    // faults struck: the panic's first lines hold only its options.
    let kept = |is_wanted: fn(&str) -> bool| -> Vec<String> {
        section
            .lines()
            .map(str::trim)
            .filter(|line| is_wanted(line))
            .take(3)
            .map(|line| line.chars().take(200).collect())
            .collect()
    };
    let failed_checks = kept(|line| line.starts_with("FAIL ") || line.starts_with("torture: "));
    let faults = kept(|line| line.starts_with('[') && line.contains(" s] fault "));
    std::iter::once(message)
        .chain(failed_checks)
        .chain(faults)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A background writer that keeps the disk busy: 8 MiB written and fsynced at a time, in a
/// file that is cut back to nothing every 256 MiB, until dropped.
struct DiskWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl DiskWriter {
    fn start(dir: &Path) -> Self {
        let path = dir.join(format!("flakes-disk-load-{}", std::process::id()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let path = path.clone();
            std::thread::spawn(move || {
                if let Err(error) = write_until(&path, &stop) {
                    eprintln!("flakes: the background disk writer stopped: {error}");
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
            path,
        }
    }
}

fn write_until(path: &Path, stop: &AtomicBool) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    // Unlinked at once: the blocks go when the file is closed, also when the campaign is
    // killed (Ctrl-C left 100-250 MB files behind before).
    std::fs::remove_file(path)?;
    let chunk = vec![0x5a_u8; 8 << 20];
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        file.write_all(&chunk)?;
        file.sync_all()?;
        written += chunk.len() as u64;
        if written >= 256 << 20 {
            file.set_len(0)?;
            std::io::Seek::rewind(&mut file)?;
            written = 0;
        }
    }
    Ok(())
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\nrunning 3 tests\ntest a::fast ... ok\ntest slow_one ... FAILED\ntest b ... ignored\n\nfailures:\n\n---- slow_one stdout ----\nsome log line\n\nthread 'slow_one' panicked at injector-user/tests/attach.rs:105:5:\nonly the 2nd was delayed: [436715, 202700, 9528]\nnote: run with `RUST_BACKTRACE=1`\n\n\nfailures:\n    slow_one\n\ntest result: FAILED. 1 passed; 1 failed; 1 ignored;\n";

    #[test]
    fn a_torture_runs_failed_checks_and_faults_are_kept_with_the_message() {
        let output = OUTPUT.replace(
            "only the 2nd was delayed: [436715, 202700, 9528]\n",
            "must fail the run: storage: as given\n4 writes sent again\npass     linearizable   5 keys\nFAIL     nodes converge to one state   after 30 s: digests differ\n[  1.5-2.5 s] fault n2: killed in a WAL fdatasync\n",
        );
        let message = failure_message(&output, "slow_one");
        assert!(
            message.contains("FAIL     nodes converge to one state   after 30 s: digests differ"),
            "{message}"
        );
        assert!(
            message.contains("[  1.5-2.5 s] fault n2: killed in a WAL fdatasync"),
            "{message}"
        );
        assert!(!message.contains("pass     linearizable"), "{message}");
        let output = OUTPUT.replace(
            "only the 2nd was delayed: [436715, 202700, 9528]\n",
            "snapshot-install-crash:\n\ntorture run: seed 5\nstorage: as given\ntorture: n1 did not compact its log\n",
        );
        let message = failure_message(&output, "slow_one");
        assert!(
            message.contains("torture: n1 did not compact its log"),
            "a run that could not be made says why: {message}"
        );
    }

    #[test]
    fn each_test_is_tallied_with_its_first_failure_message() {
        let mut tallies = BTreeMap::new();
        record(&mut tallies, "injector-user/attach", OUTPUT);
        record(
            &mut tallies,
            "injector-user/attach",
            &OUTPUT.replace("slow_one ... FAILED", "slow_one ... ok"),
        );
        let slow = &tallies["injector-user/attach::slow_one"];
        assert_eq!((slow.runs, slow.failures), (2, 1));
        let message = slow.first_message.as_deref().unwrap();
        assert!(
            message.contains("attach.rs:105:5") && message.contains("only the 2nd was delayed"),
            "{message}"
        );
        let fast = &tallies["injector-user/attach::a::fast"];
        assert_eq!((fast.runs, fast.failures), (2, 0));
        assert!(
            !tallies.contains_key("injector-user/attach::b"),
            "an ignored test is not a run"
        );
    }

    /// Runs git in `dir` as a throwaway identity; panics unless it succeeds.
    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    /// A git repository with one code file and one doc, committed.
    fn repository() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("lib.rs"), "fn a() {}\n").unwrap();
        std::fs::write(dir.path().join("docs/flaky-tests.md"), "none\n").unwrap();
        commit_all(dir.path());
        dir
    }

    fn commit_all(dir: &Path) {
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "next"]);
    }

    #[test]
    fn a_campaign_resumes_after_a_docs_change_and_never_on_other_code() {
        let repo = repository();
        let mut campaign = Campaign::start(repo.path(), None).unwrap();
        record(&mut campaign.tests, "injector-user/attach", OUTPUT);
        campaign.host_runs = 7;
        let tally = repo.path().join("campaign.json");
        std::fs::write(&tally, format!("{:#}", as_json(&campaign))).unwrap();
        // The tally itself (and prose) may be committed between the two halves.
        std::fs::rename(&tally, repo.path().join("docs/campaign.json")).unwrap();
        let tally = repo.path().join("docs/campaign.json");
        std::fs::write(repo.path().join("docs/flaky-tests.md"), "7 runs\n").unwrap();
        commit_all(repo.path());

        let resumed = Campaign::start(repo.path(), Some(&tally)).unwrap();
        assert_eq!((resumed.host_runs, resumed.resumed_runs), (7, 7));
        let slow = &resumed.tests["injector-user/attach::slow_one"];
        assert_eq!((slow.runs, slow.failures), (1, 1));
        assert_eq!(resumed.tests.len(), 2);

        std::fs::write(repo.path().join("lib.rs"), "fn b() {}\n").unwrap();
        let error = Campaign::start(repo.path(), Some(&tally)).unwrap_err();
        assert!(
            format!("{error:#}").contains("uncommitted code (lib.rs)"),
            "{error:#}"
        );
        commit_all(repo.path());
        let error = Campaign::start(repo.path(), Some(&tally)).unwrap_err();
        assert!(
            format!("{error:#}").contains("tested other code"),
            "{error:#}"
        );
    }

    #[test]
    fn a_tally_without_the_tests_is_refused_with_the_fix() {
        let repo = repository();
        let old = repo.path().join("docs/old.json");
        std::fs::write(
            &old,
            r#"{"host_runs": 8, "vm_runs": 0, "tests_seen": 401, "flaky": []}"#,
        )
        .unwrap();
        let error = Campaign::start(repo.path(), Some(&old)).unwrap_err();
        assert!(
            format!("{error:#}").contains("start a new campaign without --resume"),
            "{error:#}"
        );
    }

    #[test]
    fn a_hung_binary_counts_as_a_failure_of_the_binary() {
        let mut tallies = BTreeMap::new();
        let output = format!(
            "test {HUNG_BINARY} ... FAILED\n---- {HUNG_BINARY} stdout ----\nthe test binary ran longer than 900 s and was killed\n"
        );
        record(&mut tallies, "tests/torture_run", &output);
        let hung = &tallies[&format!("tests/torture_run::{HUNG_BINARY}")];
        assert_eq!(hung.failures, 1);
        assert!(
            hung.first_message.as_deref().unwrap().contains("900 s"),
            "{:?}",
            hung.first_message
        );
    }
}
