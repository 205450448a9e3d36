//! SQLite (Debian's `sqlite3`) on a faultfs mount, through power losses. SQLite documents
//! (https://sqlite.org/pragma.html#pragma_synchronous) that a committed transaction survives a
//! power loss in WAL mode with `synchronous=FULL`; that in rollback-journal (DELETE) mode FULL
//! may lose the last commit if the power goes right after it, because the journal's deletion,
//! which commits, is made durable only by EXTRA's directory fsync; and that with OFF commits
//! may be lost. All three show through faultfs: a committed row lost or a damaged file under a
//! durable setting would be a false fault; a row kept that the documentation says may go would
//! mean faultfs does not model volatile data. (ALICE, OSDI'14, reported the DELETE-mode loss.)
//! Each transaction is its own `sqlite3` process, acknowledged when it exits with success.
mod common;

use std::{path::Path, process::Command};

use common::Mounted;
use faultfs::{control::Request, power_loss::PowerLossMode};

const ROWS: u32 = 12;

/// Which fsync of a run of `ROWS` transactions the power goes after: the first few one by one
/// (the first commits), then spread over the rest (each transaction makes several).
/// (WAL mode makes one per transaction.)
const CRASH_AT_FSYNC: [usize; 8] = [1, 2, 3, 4, 5, 7, 9, 12];

/// The settings SQLite documents as durable: (journal_mode, synchronous).
const DURABLE: [(&str, &str); 2] = [("wal", "FULL"), ("delete", "EXTRA")];

fn sqlite(db: &Path, sql: &str) -> Result<String, String> {
    let output = Command::new("sqlite3")
        .arg("-batch")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 runs (Debian package sqlite3, installed by `cargo xtask setup`)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// A database with one table, made durable as a whole (`ctl sync`): the tests are about the
/// transactions that follow, not about the file's creation.
fn create(mounted: &Mounted, journal: &str) -> std::path::PathBuf {
    let db = mounted.path("app.db");
    sqlite(
        &db,
        &format!("PRAGMA journal_mode={journal}; CREATE TABLE t(v INTEGER NOT NULL);"),
    )
    .unwrap();
    mounted.ctl(Request::Sync);
    db
}

fn insert(db: &Path, synchronous: &str, value: u32) -> Result<String, String> {
    sqlite(
        db,
        &format!("PRAGMA synchronous={synchronous}; INSERT INTO t(v) VALUES ({value});"),
    )
}

/// The rows after recovery, once `PRAGMA integrity_check` says the file is sound.
fn rows_after_recovery(db: &Path) -> Vec<u32> {
    assert_eq!(sqlite(db, "PRAGMA integrity_check;").unwrap(), "ok");
    let listed = sqlite(db, "SELECT v FROM t ORDER BY v;").unwrap();
    listed.lines().map(|line| line.parse().unwrap()).collect()
}

#[test]
fn every_committed_transaction_survives_a_power_loss_in_every_mode() {
    let modes = [
        PowerLossMode::Drop,
        PowerLossMode::Torn,
        PowerLossMode::Reorder,
        PowerLossMode::Prefix,
    ];
    for (journal, synchronous) in DURABLE {
        for mode in modes {
            let mounted = Mounted::new(&[]);
            let db = create(&mounted, journal);
            for value in 1..=ROWS {
                insert(&db, synchronous, value).unwrap();
            }
            mounted.power_loss(mode);
            assert_eq!(
                rows_after_recovery(&db),
                (1..=ROWS).collect::<Vec<_>>(),
                "journal_mode={journal}, synchronous={synchronous}, power loss {mode:?}"
            );
            let _ = mounted.unmount();
        }
    }
}

/// The power goes right after one of the fsyncs a run of transactions makes (every one of them
/// in turn, a different loss mode each time): the file is sound, every acknowledged transaction
/// is there, and at most the one in flight besides (its commit may have been durable before
/// the process saw the failure).
#[test]
fn a_crash_right_after_any_fsync_keeps_a_sound_file_and_every_acknowledged_row() {
    let modes = [
        PowerLossMode::Drop,
        PowerLossMode::Torn,
        PowerLossMode::Reorder,
        PowerLossMode::Prefix,
        PowerLossMode::Keep,
    ];
    for (journal, synchronous) in DURABLE {
        for (turn, crash_at) in CRASH_AT_FSYNC.into_iter().enumerate() {
            let mode = modes[turn % modes.len()];
            let mounted = Mounted::new(&[]);
            let db = create(&mounted, journal);
            let rule = match crash_at {
                1 => r#"fsync(path="**")=1*crash"#.to_owned(),
                n => format!(r#"fsync(path="**")={}*off->1*crash"#, n - 1),
            };
            mounted.ctl(Request::FaultAdd { rule });
            let mut acknowledged = 0;
            for value in 1..=ROWS {
                if insert(&db, synchronous, value).is_err() {
                    break;
                }
                acknowledged = value;
            }
            let status = mounted.ctl(Request::Status);
            assert!(
                !status["crashed"].is_null(),
                "the crash point (fsync #{crash_at}) was reached: {status}"
            );
            mounted.power_loss(mode);
            let rows = rows_after_recovery(&db);
            let context = format!(
                "journal_mode={journal}, synchronous={synchronous}, crash after fsync \
                 #{crash_at}, power loss {mode:?}: \
                 {acknowledged} acknowledged, found {rows:?}"
            );
            assert!(
                rows == (1..=acknowledged).collect::<Vec<_>>()
                    || rows == (1..=acknowledged + 1).collect::<Vec<_>>(),
                "{context}"
            );
            let _ = mounted.unmount();
        }
    }
}

/// In DELETE mode a transaction commits when its journal is deleted, and FULL does not fsync
/// the directory after that: the power going right after the commit brings the journal back,
/// and the next open rolls the last transaction back, as SQLite documents for FULL (EXTRA is
/// the fix). The earlier ones stay: each next transaction's journal, fsynced, took the place
/// of the deleted one.
#[test]
fn in_delete_mode_full_loses_the_last_commit_to_a_power_loss_right_after_it() {
    let mounted = Mounted::new(&[]);
    let db = create(&mounted, "delete");
    for value in 1..=ROWS {
        insert(&db, "FULL", value).unwrap();
    }
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(rows_after_recovery(&db), (1..ROWS).collect::<Vec<_>>());
    let _ = mounted.unmount();
}

/// `synchronous=OFF` never syncs: SQLite documents that a power loss may then lose committed
/// transactions, and on faultfs a `drop` loses every one of them.
#[test]
fn without_synchronous_commits_a_power_loss_loses_the_committed_rows() {
    let mounted = Mounted::new(&[]);
    let db = create(&mounted, "wal");
    for value in 1..=ROWS {
        insert(&db, "OFF", value).unwrap();
    }
    assert_eq!(rows_after_recovery(&db).len(), ROWS as usize);
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(rows_after_recovery(&db), Vec::<u32>::new());
    let _ = mounted.unmount();
}
