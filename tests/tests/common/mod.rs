//! Helpers shared by the whole-run tests.
#![allow(dead_code)]

use std::{path::Path, process::Command};

/// A test's scratch directory (a run directory, with each node's data and log) that is kept
/// when the test fails: a failure seen once in CI then leaves its evidence, and its path is
/// printed. A passing test removes it.
pub struct ScratchDir(Option<tempfile::TempDir>);

impl ScratchDir {
    pub fn new() -> Self {
        Self(Some(tempfile::tempdir().expect("a scratch directory")))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("present until dropped").path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!(
                "the failed test's directory is kept: {}",
                dir.keep().display()
            );
        }
    }
}

/// The tools a run starts must sit next to the torture binary (one target directory).
pub fn build_tools() {
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--bins",
            "--package",
            "target-db",
            "--package",
            "faultfs",
            "--package",
            "injector-user",
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building target-db, faultfs and injector failed"
    );
}

/// The page as a real browser renders it (Debian's chromium, headless): its DOM after the
/// page's scripts ran.
pub fn render_in_chromium(page: &Path, scratch: &Path) -> String {
    render_in_chromium_at(page, "", scratch)
}

/// The DOM of the page opened at `#fragment` (empty: none), after its scripts ran.
pub fn render_in_chromium_at(page: &Path, fragment: &str, scratch: &Path) -> String {
    let url = format!("file://{}{fragment}", page.display());
    let output = chromium(scratch)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Saves what a reader sees of the page (1400 px wide) as `NAME.png` under the test target's
/// `report-screenshots/`, an artifact CI keeps for a person to look at.
pub fn screenshot_in_chromium(page: &Path, name: &str, scratch: &Path) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join(format!("{name}.png"));
    let output = chromium(scratch)
        .args(["--hide-scrollbars", "--window-size=1400,2400"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium failed: {output:?}");
    assert!(
        png.metadata().unwrap().len() > 0,
        "{} is empty",
        png.display()
    );
    png
}

fn chromium(scratch: &Path) -> Command {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is needed for this test: run `cargo xtask setup` (or apt-get install chromium)"
    );
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("chromium").display()
        ));
    command
}

/// The value of the first `data-NAME="..."` attribute in a rendered DOM.
pub fn data_attribute<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!("data-{name}=\""))? + name.len() + 7;
    let len = dom[start..].find('"')?;
    Some(&dom[start..start + len])
}

/// Asserts that the report table (`torture run`'s stdout) gives each of `checks` the verdict
/// `word` (`pass`, `FAIL`, `n/a`).
pub fn assert_checks(report: &str, word: &str, checks: &[&str]) {
    for check in checks {
        assert!(
            report.lines().any(|line| line
                .strip_prefix(word)
                .is_some_and(|rest| rest.starts_with(char::is_whitespace)
                    && rest.trim_start().starts_with(check))),
            "{check} should be {word}:\n{report}"
        );
    }
}

/// `torture run ARGS` on `first_ip`'s addresses with its run directory in `dir/run`: its output
/// and stdout. Runs of one test file share their addresses, so each holds `turns` while it
/// runs.
pub fn torture_run(
    turns: &std::sync::Mutex<()>,
    first_ip: &str,
    dir: &Path,
    args: &[&str],
) -> (std::process::Output, String) {
    let _turn = turns.lock().unwrap_or_else(|e| e.into_inner());
    let output = Command::new(env!("CARGO_BIN_EXE_torture"))
        .arg("run")
        .args(["--first-ip", first_ip])
        .arg("--run-dir")
        .arg(dir.join("run"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}
