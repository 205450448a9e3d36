//! `faultfs explore` on workloads with the classic crash-consistency bugs (ALICE's and
//! CrashMonkey's patterns): each is found, and its correct version passes. Workloads are shell
//! scripts; `sync FILE` is coreutils' fsync of one file or directory.
mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::FAULTFS;
use serde_json::Value;

/// One explore run with its own TMPDIR (where its mount and scratch files live) and --keep
/// directory, so the test can tell that it left nothing behind.
struct Run {
    output: Output,
    json: Value,
    keep: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn code(&self) -> i32 {
        self.output.status.code().expect("exited")
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The 1-based numbers and calls of the crash points with failing states.
    fn failing_calls(&self) -> Vec<String> {
        self.json["failing"]
            .as_array()
            .map(|points| {
                points
                    .iter()
                    .map(|p| p["after"]["call"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn explore(extra: &[&str], check: &str, workload: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let keep = dir.path().join("keep");
    fs::create_dir(&tmp).unwrap();
    let json = dir.path().join("result.json");
    let output = Command::new(FAULTFS)
        .arg("explore")
        .args(extra)
        .arg("--json")
        .arg(&json)
        .arg("--keep")
        .arg(&keep)
        .arg("--check")
        .arg(check)
        .args(["--", "sh", "-c", workload])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_left_nothing(&tmp);
    let json = fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(Value::Null);
    Run {
        output,
        json,
        keep,
        _dir: dir,
    }
}

/// No mount and no scratch directory left in the run's TMPDIR.
fn assert_left_nothing(tmp: &Path) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = tmp.canonicalize().unwrap().display().to_string();
    assert!(
        !mounts.contains(&prefix),
        "explore left a mount under {prefix}:\n{mounts}"
    );
    let left: Vec<_> = fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "explore left {left:?} behind");
}

/// The check of a file replaced by write + rename: before `ready` anything goes; after it the
/// file holds the old or the new text, and the new one once `done` was printed.
const REPLACED: &str = r#"
grep -qx ready "$FAULTLINE_OUTPUT" || exit 0
content=$(cat data) || { echo "data is gone"; exit 1; }
if grep -qx done "$FAULTLINE_OUTPUT"; then
  test "$content" = new || { echo "done was printed but data holds '$content'"; exit 1; }
else
  test "$content" = old || test "$content" = new || { echo "data holds '$content'"; exit 1; }
fi
"#;

const SETUP: &str = "printf old > data && sync data && sync . && echo ready";

#[test]
fn write_and_rename_without_fsync_is_found_and_its_fix_passes() {
    let buggy = explore(
        &[],
        REPLACED,
        &format!("{SETUP} && printf new > tmp && mv tmp data && sync . && echo done"),
    );
    assert_eq!(buggy.code(), 1, "{}\n{}", buggy.stdout(), buggy.stderr());
    assert!(
        buggy.failing_calls().contains(&"rename".to_string()),
        "the crash right after the rename, with its write lost, fails: {}",
        buggy.stdout()
    );
    assert!(
        buggy.stdout().contains("data holds ''"),
        "the check's output is shown: {}",
        buggy.stdout()
    );
    let fixed = explore(
        &[],
        REPLACED,
        &format!("{SETUP} && printf new > tmp && sync tmp && mv tmp data && sync . && echo done"),
    );
    assert_eq!(fixed.code(), 0, "{}\n{}", fixed.stdout(), fixed.stderr());
    assert!(fixed.stdout().contains("every state passed"));
    assert!(fixed.json["states_explored"].as_u64().unwrap() > 5);
}

#[test]
fn a_rename_acknowledged_before_its_directory_is_synced_is_found() {
    let buggy = explore(
        &[],
        REPLACED,
        &format!("{SETUP} && printf new > tmp && sync tmp && mv tmp data && echo done"),
    );
    assert_eq!(buggy.code(), 1, "{}", buggy.stdout());
    let smallest = &buggy.json["failing"][0]["smallest"];
    assert_eq!(
        smallest["lost"], 1,
        "one lost operation is enough: {smallest}"
    );
    assert_eq!(smallest["dropped"][0]["call"], "rename");
}

/// An append-only log: every record acknowledged must be there.
const LOG: &str = r#"
for record in $(cat "$FAULTLINE_OUTPUT"); do
  grep -qx "$record" log 2>/dev/null || { echo "acknowledged $record is missing"; exit 1; }
done
"#;

#[test]
fn an_append_fsynced_without_its_new_directory_entry_is_found() {
    let buggy = explore(
        &[],
        LOG,
        "for i in 1 2 3; do echo r$i >> log && sync log && echo r$i; done",
    );
    assert_eq!(buggy.code(), 1, "{}", buggy.stdout());
    assert!(buggy.stdout().contains("acknowledged r1 is missing"));
    let fixed = explore(
        &[],
        LOG,
        "touch log && sync . && for i in 1 2 3; do echo r$i >> log && sync log && echo r$i; done",
    );
    assert_eq!(fixed.code(), 0, "{}", fixed.stdout());
    // ext4's journal commits the new name with the file's fsync: the buggy version passes there.
    let ext4 = explore(
        &["--metadata", "ext4"],
        LOG,
        "for i in 1 2 3; do echo r$i >> log && sync log && echo r$i; done",
    );
    assert_eq!(ext4.code(), 0, "{}", ext4.stdout());
}

#[test]
fn a_file_synced_in_a_new_directory_that_is_not_is_found() {
    let check = r#"grep -qx done "$FAULTLINE_OUTPUT" || exit 0; test "$(cat d/f)" = x"#;
    let buggy = explore(
        &[],
        check,
        "mkdir d && printf x > d/f && sync d/f && sync d && echo done",
    );
    assert_eq!(buggy.code(), 1, "{}", buggy.stdout());
    let fixed = explore(
        &[],
        check,
        "mkdir d && printf x > d/f && sync d/f && sync d && sync . && echo done",
    );
    assert_eq!(fixed.code(), 0, "{}", fixed.stdout());
}

/// Redo journal: intent in `journal`, applied to `data`, journal removed. Recovery replays a
/// journal that is there; after `done` the data must be new.
const REDO: &str = r#"
grep -qx ready "$FAULTLINE_OUTPUT" || exit 0
if [ -e journal ]; then content=$(cat journal); else content=$(cat data); fi
grep -qx done "$FAULTLINE_OUTPUT" || exit 0
test "$content" = new || { echo "after recovery data holds '$content'"; exit 1; }
"#;

#[test]
fn a_journal_deleted_before_the_data_it_protects_is_synced_is_found() {
    let buggy = explore(
        &[],
        REDO,
        &format!(
            "{SETUP} && printf new > journal && sync journal && sync . \
             && printf new > data && rm journal && sync . && echo done"
        ),
    );
    assert_eq!(buggy.code(), 1, "{}", buggy.stdout());
    // The smallest failing state keeps the truncate of `printf >` and loses the write.
    assert!(
        buggy.stdout().contains("after recovery data holds ''"),
        "{}",
        buggy.stdout()
    );
    let fixed = explore(
        &[],
        REDO,
        &format!(
            "{SETUP} && printf new > journal && sync journal && sync . \
             && printf new > data && sync data && rm journal && sync . && echo done"
        ),
    );
    assert_eq!(fixed.code(), 0, "{}", fixed.stdout());
}

#[test]
fn a_torn_write_is_among_the_states_and_a_failing_state_replays() {
    // One 8 KiB record written and synced: a check that wants it whole or absent fails on the
    // states that keep the first sector or page of it.
    let check = r#"test ! -s rec || test "$(wc -c < rec)" -eq 8192"#;
    let run = explore(
        &[],
        check,
        "head -c 8192 /dev/zero | tr '\\0' x > rec && sync rec && sync .",
    );
    assert_eq!(run.code(), 1, "{}", run.stdout());
    let smallest = &run.json["failing"][0]["smallest"];
    assert!(
        smallest["id"].as_str().unwrap().contains("torn"),
        "{smallest}"
    );
    let kept = PathBuf::from(smallest["kept_at"].as_str().unwrap());
    assert!(kept.starts_with(&run.keep));
    let size = fs::metadata(kept.join("rec")).unwrap().len();
    assert!(size == 512 || size == 4096, "torn at a boundary: {size}");

    let into = run.keep.join("replayed");
    let replay = Command::new(FAULTFS)
        .args(["explore", "--replay"])
        .arg(run.keep.join("journal.jsonl"))
        .args([
            "--state",
            smallest["id"].as_str().unwrap(),
            "--check",
            check,
            "--into",
        ])
        .arg(&into)
        .output()
        .unwrap();
    assert_eq!(replay.status.code(), Some(1), "{replay:?}");
    assert_eq!(fs::metadata(into.join("rec")).unwrap().len(), size);
}

#[test]
fn bad_input_is_refused_with_the_fix_and_nothing_left_mounted() {
    let missing = explore(&[], "no-such-check-command-xyz", "echo hi > f");
    assert_eq!(missing.code(), 2);
    assert!(
        missing.stderr().contains("check command was not found"),
        "{}",
        missing.stderr()
    );

    let failing = explore(&[], "true", "echo partial > f; echo oops >&2; exit 3");
    assert_eq!(failing.code(), 2);
    assert!(
        failing.stderr().contains("failed (exit status: 3)") && failing.stderr().contains("oops"),
        "{}",
        failing.stderr()
    );

    let zero = explore(&["--max-states", "0"], "true", "echo hi > f");
    assert_eq!(zero.code(), 2);
    assert!(zero.stderr().contains("--max-states must be at least 1"));

    let model = explore(&["--metadata", "zfs"], "true", "echo hi > f");
    assert_eq!(model.code(), 2);
    assert!(
        model.stderr().contains("possible values: posix, ext4"),
        "{}",
        model.stderr()
    );

    let strict = explore(&[], "test -e never", "echo hi > f");
    assert_eq!(strict.code(), 2);
    assert!(
        strict
            .stderr()
            .contains("fails on the state the workload left, with nothing lost"),
        "{}",
        strict.stderr()
    );
}

#[test]
fn a_check_that_hangs_is_killed_and_counted_as_failing() {
    let run = explore(
        &["--check-timeout", "1"],
        r#"grep -q done "$FAULTLINE_OUTPUT" || exit 0; test -s f || sleep 600"#,
        "echo data > f && echo done",
    );
    assert_eq!(run.code(), 1, "{}", run.stdout());
    assert_eq!(run.json["failing"][0]["smallest"]["timed_out"], true);
    assert!(run.stdout().contains("killed at the timeout"));
}

/// Modes are part of a state: a file keeps the mode it was made with, and a chmod is durable
/// once the file is fsynced (a database that checks its directory's mode, as PostgreSQL does,
/// starts in every state).
const MODES: &str = r#"
grep -qx ready "$FAULTLINE_OUTPUT" || exit 0
[ "$(stat -c %a d)" = 700 ] || { echo "d has mode $(stat -c %a d)"; exit 1; }
mode=$(stat -c %a d/f)
if grep -qx public "$FAULTLINE_OUTPUT"; then want=644; else want="600 644"; fi
case " $want " in *" $mode "*) ;; *) echo "d/f has mode $mode"; exit 1;; esac
"#;

#[test]
fn modes_are_kept_and_an_unsynced_chmod_can_be_lost() {
    let setup =
        "umask 077 && mkdir d && echo x > d/f && sync d/f && sync d && sync . && echo ready";
    let buggy = explore(
        &[],
        MODES,
        &format!("{setup} && chmod 644 d/f && echo public"),
    );
    assert_eq!(buggy.code(), 1, "{}", buggy.stdout());
    assert!(
        buggy.stdout().contains("d/f has mode 600"),
        "{}",
        buggy.stdout()
    );
    let fixed = explore(
        &[],
        MODES,
        &format!("{setup} && chmod 644 d/f && sync d/f && echo public"),
    );
    assert_eq!(fixed.code(), 0, "{}", fixed.stdout());
}

#[test]
fn ctrl_c_during_the_workload_stops_it_and_unmounts() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut explore = Command::new(FAULTFS)
        .args(["explore", "--check", "true", "--", "sh", "-c"])
        .arg("echo started > f && exec sleep 600")
        .env("TMPDIR", &tmp)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The workload runs once its file is on the mount.
    let started = std::time::Instant::now();
    let file = loop {
        let found = fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|scratch| scratch.path().join("mnt/f"))
            .find(|f| f.exists());
        if let Some(file) = found {
            break file;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the workload never started"
        );
        std::thread::yield_now();
    };
    assert!(file.exists());
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&explore),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = explore.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut explore.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_left_nothing(&tmp);
}
