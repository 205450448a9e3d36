//! `torture check` as a user runs it: exit codes, text, and the HTML report opened in a real
//! headless browser (Debian's chromium, installed by `cargo xtask setup`).
mod common;

use std::process::Command;

use common::{data_attribute, render_in_chromium, render_in_chromium_at, screenshot_in_chromium};

use tests::history::generate::{Shape, exhausting_history, linearizable_history};

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
    assert_eq!(
        data_attribute(&dom, "in-view"),
        Some("405"),
        "the timeline opens on the whole history"
    );
    assert!(
        dom.contains("href=\"#jump-0\""),
        "the finding links to the timeline"
    );

    // The link centres the operations that cannot be linearized, outlined.
    let jumped = render_in_chromium_at(&report, "#jump-0", dir.path());
    assert!(!jumped.contains("data-error"), "a script error happened");
    let marked: usize = data_attribute(&jumped, "marked").unwrap().parse().unwrap();
    let in_view: usize = data_attribute(&jumped, "in-view").unwrap().parse().unwrap();
    assert!(marked > 0, "the window's operations are outlined");
    assert!(
        (marked..405).contains(&in_view),
        "zoomed in on them: {in_view} operations in view, {marked} marked"
    );
    screenshot_in_chromium(&report, "history-check-failing", dir.path());
}

/// A history as long as a minute of a busy run is in the page whole, and the timeline draws it
/// (only what is in view is drawn, so the page stays responsive; the draw time is measured in
/// the page, not asserted here).
#[test]
fn the_timeline_holds_a_hundred_thousand_operations() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let shape = Shape {
        clients: 10,
        keys: 20,
        operations: 100_000,
        unknown_percent: 1,
        seed: 7,
    };
    std::fs::write(&history, linearizable_history(shape).to_json_lines()).unwrap();
    let report = dir.path().join("report.html");
    let (code, text) = torture_check(&[
        history.to_str().unwrap(),
        "--html",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let dom = render_in_chromium(&report, dir.path());
    assert!(!dom.contains("data-error"), "a script error happened");
    assert_eq!(data_attribute(&dom, "rendered"), Some("100000"));
    assert_eq!(data_attribute(&dom, "in-view"), Some("100000"));
}

#[test]
fn the_html_report_shows_leaders_throughput_and_latency_over_time() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let mut lines = vec![
        r#"{"kind":"leader","time":0,"leader":1,"term":1}"#.to_owned(),
        r#"{"kind":"fault","time":1000000000,"end":1500000000,"target":"n1","description":"SIGKILL, restarted"}"#.to_owned(),
        r#"{"kind":"leader","time":1200000000,"leader":null}"#.to_owned(),
        r#"{"kind":"leader","time":1400000000,"leader":2,"term":2}"#.to_owned(),
    ];
    // One put per 100 ms for 3 s, each taking 5 ms.
    for i in 0..30u64 {
        let start = i * 100_000_000;
        let value = format!("v{i}");
        lines.push(format!(
            r#"{{"process":1,"kind":"invoke","f":"put","key":"k","value":"{value}","time":{start}}}"#
        ));
        lines.push(format!(
            r#"{{"process":1,"kind":"ok","f":"put","key":"k","value":"{value}","time":{}}}"#,
            start + 5_000_000
        ));
    }
    std::fs::write(&history, lines.join("\n") + "\n").unwrap();
    let report = dir.path().join("report.html");
    let (code, text) = torture_check(&[
        history.to_str().unwrap(),
        "--html",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");

    let dom = render_in_chromium(&report, dir.path());
    assert!(!dom.contains("data-error"), "a script error happened");
    assert!(dom.contains("The whole run over time"));
    assert!(dom.contains("class=\"rate ok\""), "throughput bars");
    assert!(
        dom.contains("class=\"latency p50\""),
        "the p50 latency line"
    );
    assert!(dom.contains("class=\"leader n1\"") && dom.contains("class=\"leader n2\""));
    assert!(
        dom.contains("class=\"leader none\""),
        "the election between them"
    );
    assert!(dom.contains("n2 (term 2)"));
}
