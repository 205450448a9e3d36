//! A whole torture run, as `cargo xtask torture` does it, short: a safe target-db passes under
//! every kind of fault this kernel allows. Needs root (FUSE mounts, eBPF).
mod common;

use std::{process::Output, sync::Mutex};

use common::{
    ScratchDir, assert_checks, build_tools, data_attribute, render_in_chromium,
    render_in_chromium_at, screenshot_in_chromium, torture_run,
};

/// This file's own loopback range: runs of other test files (or a user's) never meet it.
const FIRST_IP: &str = "127.0.21.11";

/// The runs share the nodes' addresses, so one runs at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The run's output, its report, and its directory (kept if the test fails).
fn torture(args: &[&str]) -> (Output, String, ScratchDir) {
    let run_dir = ScratchDir::new();
    let (output, report) = torture_in(run_dir.path(), args);
    (output, report, run_dir)
}

/// A run whose directory (`DIR/run`) outlives it.
fn torture_in(dir: &std::path::Path, args: &[&str]) -> (Output, String) {
    torture_run(&ONE_AT_A_TIME, FIRST_IP, dir, args)
}

#[test]
fn a_safe_database_passes_under_every_fault() {
    build_tools();

    // Every fault this kernel allows (the default list).
    let (output, report, _dir) = torture(&["--seed", "12", "--duration", "8s"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the safe database should pass:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_checks(
        &report,
        "pass",
        &[
            "linearizable",
            "no acknowledged write lost",
            "nodes converge to one state",
            "restarted nodes rejoin and catch up",
        ],
    );
    assert!(
        report.contains("replay: cargo xtask torture --seed 12"),
        "{report}"
    );
}

/// A failing run's report, as a reader opens it in a browser: the verdict, every check the run
/// made with the failing one marked, each fault with its node and time (the final power loss
/// among them), and the replay command. The database never fsyncs, so the final power loss of
/// every node (`drop` for an even seed) loses what it acknowledged.
#[test]
fn a_failing_runs_report_shows_every_check_every_fault_and_the_replay() {
    build_tools();
    let dir = ScratchDir::new();
    let (output, report) = torture_in(
        dir.path(),
        &[
            "--seed",
            "2",
            "--duration",
            "4s",
            "--settle",
            "10s",
            "--faults",
            "kill",
            "--db-flag=--unsafe-no-fsync",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{report}");
    let run = dir.path().join("run");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let dom = render_in_chromium(&run.join("report.html"), dir.path());
    assert!(!dom.contains("data-error"), "a script error happened");
    assert!(dom.contains("Torture run: <span class=\"fail\">FAIL</span>"));
    let checks = json["torture"]["checks"].as_array().unwrap();
    assert!(checks.len() >= 10, "{checks:?}");
    for check in checks {
        let name = check["name"].as_str().unwrap();
        assert!(dom.contains(name), "check {name} is on the page");
    }
    assert!(
        dom.contains("class=\"check-fail\""),
        "the failing check is marked"
    );
    assert!(
        dom.contains("final power loss of every node (drop)"),
        "the fault table names the final power loss"
    );
    let faults = json["torture"]["faults"].as_u64().unwrap() as usize;
    assert!(
        dom.matches("class=\"fault-row\"").count() > faults,
        "every fault of the nemesis and the final power loss has a row"
    );
    assert!(dom.contains("cargo xtask torture --seed 2 --duration 4s --nodes 3 --faults kill"));
    assert_eq!(
        data_attribute(&dom, "nodes"),
        Some("3"),
        "the timeline has a lane for each node"
    );
    assert_eq!(
        data_attribute(&dom, "in-view"),
        Some(json["history_check"]["operations"].to_string().as_str()),
        "the timeline opens on every operation of the run"
    );
    // A failing check that names operations or a moment links to them on the timeline, and
    // the link zooms in there.
    let linkable = [
        "linearizable",
        "no acknowledged write lost",
        "no value from nowhere, no stale read",
        "at most one leader per term",
        "terms and commit index never go back",
        "acknowledged log entries survive restarts",
        "replicas apply the same results",
    ];
    for check in checks {
        let name = check["name"].as_str().unwrap();
        if check["verdict"] != "fail" || !linkable.contains(&name) {
            continue;
        }
        let row = &dom[dom.find(&format!("<td>{name}</td>")).unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        let link = row
            .find("href=\"#")
            .unwrap_or_else(|| panic!("failing check {name} has no link: {row}"));
        let fragment = &row[link + 6..];
        let fragment = &fragment[..fragment.find('"').unwrap()];
        let there = render_in_chromium_at(&run.join("report.html"), fragment, dir.path());
        assert!(!there.contains("data-error"), "a script error happened");
        let in_view: u64 = data_attribute(&there, "in-view").unwrap().parse().unwrap();
        assert!(
            in_view < json["history_check"]["operations"].as_u64().unwrap(),
            "{fragment} zooms in"
        );
    }
    screenshot_in_chromium(&run.join("report.html"), "torture-run-failing", dir.path());
}

/// An odd seed's final power loss is `torn`, and comes while one more write to every key is in
/// flight, each node cut right after its next log write: only a record in flight can be torn.
/// The safe database recovers from it (and from the second power loss that follows a torn
/// log), and the fault names which nodes the cut caught mid-write.
#[test]
fn a_torn_final_power_loss_cuts_writes_in_flight_and_the_safe_database_survives_it() {
    build_tools();
    let (output, report, _dir) = torture(&["--seed", "3", "--duration", "4s", "--faults", "pause"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the safe database should pass:\n{report}\n{stderr}"
    );
    let final_cut = stderr
        .lines()
        .find(|line| line.contains("final power loss of every node (torn)"))
        .unwrap_or_else(|| panic!("no torn final power loss named:\n{stderr}"));
    assert!(
        final_cut.contains("while one more write to every key was in flight"),
        "{final_cut}"
    );
    assert!(
        !final_cut.contains("next log write: none reached it"),
        "the leader appends the write in flight, so its log write is reached: {final_cut}"
    );
}

/// The network faults go through `injector net` on the nodes' own addresses: each is named as
/// it ends (direction, delay, shares), the safe database passes, and no rule is left behind.
#[test]
fn slow_and_flaky_networks_leave_the_safe_database_correct_and_nothing_behind() {
    build_tools();
    let (output, report, _dir) = torture(&[
        "--seed",
        "4",
        "--duration",
        "8s",
        "--faults",
        "slow-network,flaky-network",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the safe database should pass:\n{report}\n{stderr}"
    );
    let named: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("slow network: ") || line.contains("flaky network: "))
        .collect();
    assert!(!named.is_empty(), "no network fault ran:\n{stderr}");
    for tool in ["iptables-legacy", "iptables-nft"] {
        let Ok(listing) = std::process::Command::new(tool)
            .args(["-w", "-t", "mangle", "-S"])
            .output()
        else {
            continue;
        };
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(
            !listing.lines().any(|line| line.contains("127.0.21.")),
            "{tool} still holds rules for this run's nodes:\n{listing}"
        );
    }
}

/// The deposed-leader fault opens its window and aims at it: another node is elected while the
/// old leader is cut off, then the nemesis puts a key through the new leader and reads it from
/// the old one, the read sent after the put was acknowledged, both in the history. The safe
/// database (it confirms its leadership before answering a read) passes.
#[test]
fn a_deposed_leader_is_read_from_once_another_leads_and_the_safe_database_passes() {
    build_tools();
    let dir = ScratchDir::new();
    let (output, report) = torture_in(
        dir.path(),
        &[
            "--seed",
            "3",
            "--duration",
            "12s",
            "--faults",
            "deposed-leader",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the safe database should pass:\n{report}\n{stderr}"
    );
    let aimed = stderr
        .lines()
        .filter(|line| line.contains("deposed-leader done") && line.contains(" elected "))
        .filter(|line| line.contains(", then a read of it from n"))
        .count();
    assert!(aimed > 0, "no deposed leader was read from:\n{stderr}");
    let history = std::fs::read_to_string(dir.path().join("run/history.jsonl")).unwrap();
    let probes: Vec<serde_json::Value> = history
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["process"].as_u64().is_some_and(|p| p >= 1 << 40))
        .collect();
    let read_after_its_put = probes.iter().any(|put| {
        put["kind"] == "ok"
            && put["f"] == "put"
            && probes.iter().any(|get| {
                get["kind"] == "invoke"
                    && get["f"] == "get"
                    && get["key"] == put["key"]
                    && get["time"].as_u64() > put["time"].as_u64()
            })
    });
    assert!(
        read_after_its_put,
        "no probe read followed its acknowledged put: {probes:?}"
    );
}

/// The stalled-leader fault reaches its window on the safe database and the database passes:
/// the leader's storage stops at a log write, a leader is elected without the frozen
/// follower, and that follower had applied nothing past the restarted leader's log (the
/// fault's description gives both indexes).
#[test]
fn a_stalled_leader_loses_power_and_the_safe_database_applies_nothing_it_lost() {
    build_tools();
    let dir = ScratchDir::new();
    let (output, report) = torture_in(
        dir.path(),
        &[
            "--seed",
            "2",
            "--duration",
            "15s",
            "--faults",
            "stalled-leader",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the safe database should pass:\n{report}\n{stderr}"
    );
    let stalled: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("stalled-leader done"))
        .filter(|line| line.contains("storage stopped right after its next log write"))
        .filter(|line| line.contains(" elected "))
        .collect();
    assert!(
        !stalled.is_empty(),
        "no stalled leader lost power:\n{stderr}"
    );
    for line in stalled {
        let applied = index_after(line, "applied up to n");
        let kept = index_after(line, "its log ends at n");
        assert!(
            applied <= kept,
            "a frozen follower applied past the restarted leader's log: {line}"
        );
    }
}

/// The index in `nN INDEX` right after `label` in a fault's description.
fn index_after(line: &str, label: &str) -> u64 {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in {line}"))
        + label.len()..];
    rest.split([' ', ')', ','])
        .nth(1)
        .and_then(|index| index.parse().ok())
        .unwrap_or_else(|| panic!("no index after `{label}` in {line}"))
}
