//! `faultfs explore` on Debian's PostgreSQL: initdb, a server, a table and three committed
//! inserts, each printed once committed; the check starts the server on the crash state and
//! looks for every acknowledged row. PostgreSQL documents
//! (https://www.postgresql.org/docs/current/wal-async-commit.html) that with
//! `synchronous_commit=on` (the default) a committed transaction survives a crash, and that with
//! `off` the most recent ones may be lost. A sample of the states after the set-up
//! (`--from-line ready`: initdb alone records thousands of operations) is checked, under
//! `--metadata ext4`: PostgreSQL never fsyncs the directory of a new relation file, relying on
//! the file system to commit the name with the file's fsync, as ext4 and XFS do (under `posix`
//! a table's file can vanish, see the README).
mod common;

use std::process::{Command, Output};

use common::FAULTFS;

/// Ends with a fast (clean) shutdown, so that what a crash state loses is the power loss's
/// doing, not the workload's.
const WORKLOAD: &str = r#"
set -e
mkdir pg && chown postgres pg && chmod 700 pg && sync .
runuser -u postgres -- "$PGBIN/initdb" -D pg -A trust -U postgres >/dev/null 2>&1
runuser -u postgres -- "$PGBIN/pg_ctl" -D pg -w -l /dev/null \
  -o "-k /tmp -c listen_addresses= -c port=$PORT -c shared_buffers=1MB -c synchronous_commit=$COMMIT $OPTIONS" start >/dev/null
echo ready
sql() { runuser -u postgres -- psql -h /tmp -p "$PORT" -U postgres -qAt -c "$1"; }
sql "CREATE TABLE t(k int primary key)" >/dev/null
echo created
for i in 1 2 3; do sql "INSERT INTO t VALUES($i)" >/dev/null; echo $i; done
runuser -u postgres -- "$PGBIN/pg_ctl" -D pg -m fast stop >/dev/null
"#;

const CHECK: &str = r#"
grep -qx created "$FAULTLINE_OUTPUT" || exit 0
chown -R postgres pg
log=/tmp/faultfs-explore-check-$CHECK_PORT.log
runuser -u postgres -- "$PGBIN/pg_ctl" -D pg -w -t 60 -l "$log" \
  -o "-k /tmp -c listen_addresses= -c port=$CHECK_PORT" start >/dev/null \
  || { echo "postgres did not start:"; tail -5 "$log"; exit 1; }
# A fast stop, not an immediate one: an immediate stop leaves the server's shared memory
# segments in /dev/shm for its next start to clean, and this state is never started again.
trap 'runuser -u postgres -- "$PGBIN/pg_ctl" -D pg -m fast stop >/dev/null 2>&1; rm -f "$log"' EXIT
for i in $(grep -x '[0-9]*' "$FAULTLINE_OUTPUT"); do
  n=$(runuser -u postgres -- psql -h /tmp -p "$CHECK_PORT" -U postgres -qAt -c "SELECT count(*) FROM t WHERE k=$i")
  [ "$n" = 1 ] || { echo "acknowledged row $i is missing"; exit 1; }
done
"#;

/// `from_line`: the workload's line the sampled crash points start after; `options`: more of
/// the server's settings.
fn explore(commit: &str, port: u16, from_line: &str, options: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(FAULTFS)
        .args(["explore", "--from-line", from_line, "--max-states", "60"])
        .args(["--metadata", "ext4"])
        .arg("--keep")
        .arg(dir.path())
        .args(["--check", CHECK, "--", "sh", "-c", WORKLOAD])
        .env("PGBIN", common::postgres_bin_dir())
        .env("COMMIT", commit)
        .env("OPTIONS", options)
        .env("PORT", port.to_string())
        .env("CHECK_PORT", (port + 1).to_string())
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "explore itself failed: {output:?}"
    );
    output
}

#[test]
fn synchronous_commit_on_keeps_every_acknowledged_row() {
    let output = explore("on", 5491, "ready", "");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("every state passed"), "{stdout}");
}

/// With `off`, the WAL writer flushes commits within `wal_writer_delay` (200 ms by default), and
/// how many crash points fall in that window depends on the machine's speed: on a loaded one a
/// sample of 57 states held none of them (`cargo xtask flakes`, 2026-12-07). With the longest
/// delay (10 s) nothing flushes the acknowledged rows before the shutdown does, and the sample
/// starts once the first row is acknowledged: 12 of 56 states lost rows in each of three runs.
#[test]
fn synchronous_commit_off_loses_acknowledged_rows() {
    let output = explore("off", 5493, "1", "-c wal_writer_delay=10s");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("is missing"), "{stdout}");
}
