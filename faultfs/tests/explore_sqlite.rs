//! `faultfs explore` on Debian's `sqlite3`: every crash state of a run of committed inserts is
//! checked, and the verdicts match what SQLite documents
//! (https://sqlite.org/pragma.html#pragma_synchronous): WAL with `synchronous=FULL` and the
//! rollback journal (DELETE) with `EXTRA` keep every acknowledged commit; WAL with `NORMAL` may
//! lose commits to a power loss; DELETE with `FULL` may lose the last one, because deleting the
//! journal commits and only EXTRA fsyncs its directory afterwards. A durable setting failing
//! would be a false alarm; a documented loss not found would mean explore misses real states.
mod common;

use std::process::{Command, Output};

use common::FAULTFS;

/// One `sqlite3` process runs all the statements and prints each row's key once its insert has
/// committed. It writes straight into explore's pipe, line-buffered, so each print is in the pipe
/// before its next file operation: a filter process in between (it once ran through `grep`) can
/// be scheduled late under load, and a print that arrives after the final checkpoint's fsync
/// hides every loss. The `wal`/`delete` line of `PRAGMA journal_mode` is not a number, so the
/// check ignores it.
const WORKLOAD: &str = r#"
set -e
{ echo "PRAGMA journal_mode=$MODE; PRAGMA synchronous=$SYNC; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT); SELECT 'created';"
  for i in 1 2 3 4 5; do echo "INSERT INTO t VALUES($i, 'v$i'); SELECT $i;"; done
} | stdbuf -oL sqlite3 -batch db
"#;

/// Each transaction in its own `sqlite3` process, acknowledged when it exits.
const WORKLOAD_PER_PROCESS: &str = r#"
set -e
sqlite3 -batch db "PRAGMA journal_mode=$MODE; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);" > /dev/null
echo created
for i in 1 2 3 4 5; do
  sqlite3 -batch db "PRAGMA synchronous=$SYNC; INSERT INTO t VALUES($i, 'v$i');"
  echo $i
done
"#;

/// The database opens, passes its integrity check and holds every acknowledged row.
const CHECK: &str = r#"
grep -qx created "$FAULTLINE_OUTPUT" || exit 0
r=$(sqlite3 -batch db 'PRAGMA integrity_check' 2>&1) || { echo "sqlite3 cannot open it: $r"; exit 1; }
[ "$r" = ok ] || { echo "integrity_check: $r"; exit 1; }
for i in $(grep -x '[0-9]*' "$FAULTLINE_OUTPUT"); do
  v=$(sqlite3 -batch db "SELECT v FROM t WHERE k=$i")
  [ "$v" = "v$i" ] || { echo "acknowledged row $i is missing"; exit 1; }
done
"#;

fn explore(workload: &str, mode: &str, sync: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(FAULTFS)
        .arg("explore")
        .arg("--keep")
        .arg(dir.path())
        .args(["--check", CHECK, "--", "sh", "-c", workload])
        .env("MODE", mode)
        .env("SYNC", sync)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "explore itself failed: {stdout}\n{stderr}"
    );
    output
}

fn verdict(output: &Output) -> (i32, String) {
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn wal_with_synchronous_full_keeps_every_commit_and_normal_does_not() {
    let (code, stdout) = verdict(&explore(WORKLOAD, "WAL", "FULL"));
    assert_eq!(code, 0, "a documented durable setting failed:\n{stdout}");
    let (code, stdout) = verdict(&explore(WORKLOAD, "WAL", "NORMAL"));
    assert_eq!(code, 1, "WAL with NORMAL loses commits:\n{stdout}");
    assert!(stdout.contains("acknowledged row 1 is missing"), "{stdout}");
    assert!(stdout.contains("write db-wal"), "{stdout}");
}

#[test]
fn a_rollback_journal_needs_synchronous_extra_to_keep_the_last_commit() {
    let (code, stdout) = verdict(&explore(WORKLOAD_PER_PROCESS, "DELETE", "EXTRA"));
    assert_eq!(code, 0, "a documented durable setting failed:\n{stdout}");
    let (code, stdout) = verdict(&explore(WORKLOAD_PER_PROCESS, "DELETE", "FULL"));
    assert_eq!(code, 1, "DELETE with FULL loses the last commit:\n{stdout}");
    assert!(
        stdout.contains("dropped #") && stdout.contains("unlink db-journal"),
        "the journal's unsynced deletion is what is lost:\n{stdout}"
    );
}
