//! `torture check` as a user runs it: exit codes, text, and the HTML report opened in a real
//! headless browser (Debian's chromium, installed by `cargo xtask setup`).
use std::{path::Path, process::Command};

use tests::history::generate::exhausting_history;

const TORTURE: &str = env!("CARGO_BIN_EXE_torture");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/linearizability");

fn torture_check(args: &[&str]) -> (i32, String) {
    let output = Command::new(TORTURE)
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().expect("exited normally"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn exit_code_is_zero_only_for_a_pass() {
    let ok = format!("{CORPUS}/kv/c10-ok.txt");
    let bad = format!("{CORPUS}/kv/c10-bad.txt");
    assert_eq!(torture_check(&[&ok]).0, 0);
    let (code, text) = torture_check(&[&bad]);
    assert_eq!(code, 1);
    assert!(text.starts_with("FAIL: 405 operations"), "{text}");
    assert!(text.contains("no order of these"), "{text}");
}

#[test]
fn an_exhausted_budget_exits_with_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, exhausting_history(26).to_json_lines()).unwrap();
    let (code, text) = torture_check(&[path.to_str().unwrap(), "--budget", "200ms"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("undecided within the budget: k"), "{text}");
}

#[test]
fn the_html_report_loads_in_a_headless_browser() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let bad = format!("{CORPUS}/kv/c10-bad.txt");
    let (code, _) = torture_check(&[&bad, "--html", report.to_str().unwrap()]);
    assert_eq!(code, 1);

    let dom = render_in_chromium(&report, dir.path());
    assert!(
        !dom.contains("data-error"),
        "a script error happened on the page"
    );
    assert!(
        dom.contains("data-rendered=\"405\""),
        "every operation is drawn and the page script ran: {}",
        &dom[..dom.len().min(400)]
    );
    assert!(dom.contains("Window that cannot be linearized"));
    assert!(
        dom.contains("class=\"op ok in-window\""),
        "the window is highlighted"
    );
}

fn render_in_chromium(page: &Path, scratch: &Path) -> String {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is needed for this test: run `cargo xtask setup` (or apt-get install chromium)"
    );
    let output = Command::new(chromium)
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
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "chromium failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
