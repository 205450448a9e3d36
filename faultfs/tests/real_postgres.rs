//! PostgreSQL (Debian's `postgresql`) on a faultfs mount, through power losses. PostgreSQL
//! documents (https://www.postgresql.org/docs/current/wal-async-commit.html) that a commit
//! acknowledged with `synchronous_commit=on` survives a crash, and that with it off the most
//! recent commits (up to three times `wal_writer_delay`) may be lost, the database staying
//! consistent. Both show through faultfs (`--metadata ext4`, the file system Debian installs it
//! on): the server is killed with all its processes, the mount loses its unsynced data, and the
//! server recovers from what is left. Under `--metadata posix` a table created before a
//! checkpoint is lost: PostgreSQL never fsyncs the directory of a new relation file, and relies
//! on the file's own fsync making its name durable, which ext4 and XFS do and POSIX does not
//! promise. The server runs as the `postgres` user, on a Unix socket of its own, no TCP port.
mod common;

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::Mounted;
use faultfs::{control::Request, power_loss::PowerLossMode};
use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};

const ROWS_PER_ROUND: u32 = 10;

const EXT4: [&str; 2] = ["--metadata", "ext4"];

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        assert!(output.status.success(), "the postgres user exists");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

/// A command run as the `postgres` user (the server refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    command
}

/// A database cluster in `MNT/pg`, created and made durable (`ctl sync`) before any test step.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: tempfile::TempDir,
}

impl Cluster {
    fn create(mounted: &Mounted) -> Cluster {
        let (uid, gid) = postgres_ids();
        // The postgres user must reach the mount: its temporary parent is root's, mode 0700.
        let parent = mounted.mountpoint.parent().unwrap();
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
        let home = mounted.path("pg");
        fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        let socket_dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(socket_dir.path(), Some(uid), Some(gid)).unwrap();
        let bin = common::postgres_bin_dir();
        let data = home.join("data");
        let output = as_postgres(&bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        mounted.ctl(Request::Sync);
        Cluster {
            bin,
            data,
            socket_dir,
        }
    }

    fn start(&self, settings: &[&str]) -> Server {
        let mut command = as_postgres(&self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(self.socket_dir.path())
            .args(["-c", "listen_addresses="]);
        for setting in settings {
            command.args(["-c", setting]);
        }
        // Its own process group: the postmaster and every backend it forks die together.
        command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = Server {
            postmaster: command.spawn().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL accepted no connection within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn ready(&self) -> bool {
        Command::new("pg_isready")
            .arg("-q")
            .arg("-h")
            .arg(self.socket_dir.path())
            .status()
            .unwrap()
            .success()
    }

    /// Runs each statement as its own transaction (one `psql` session); the output of the
    /// last. Panics if any fails: every one returned is acknowledged.
    fn sql(&self, statements: &[String]) -> String {
        self.try_sql(statements)
            .unwrap_or_else(|error| panic!("psql: {error}"))
    }

    /// `sql`, with the error psql printed.
    fn try_sql(&self, statements: &[String]) -> Result<String, String> {
        let mut command = Command::new("psql");
        command.arg("-h").arg(self.socket_dir.path()).args([
            "-U",
            "postgres",
            "-qAt",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        for statement in statements {
            command.args(["-c", statement]);
        }
        let output = command.output().unwrap();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    fn rows(&self) -> Vec<u32> {
        self.sql(&["SELECT v FROM t ORDER BY v".to_owned()])
            .lines()
            .map(|line| line.parse().unwrap())
            .collect()
    }
}

fn inserts(values: std::ops::RangeInclusive<u32>) -> Vec<String> {
    values
        .map(|value| format!("INSERT INTO t VALUES ({value})"))
        .collect()
}

/// The server's whole process group; killed with SIGKILL when crashed or dropped.
struct Server {
    postmaster: Child,
}

impl Server {
    /// Every process of the server killed at once, as a power loss would, and gone before
    /// the call returns (so none writes after the mount lost its unsynced data).
    fn crash(mut self) {
        self.kill_all();
    }

    fn kill_all(&mut self) {
        // The process group of our own child, which it leads (process_group(0)) and which we
        // have not reaped yet, so the id is not reused.
        let group = Pid::from_raw(self.postmaster.id() as i32).expect("a child's pid is never 0");
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.postmaster.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Until no process of the group is left.
        while test_kill_process_group(group).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.postmaster.try_wait().ok().flatten().is_none() {
            self.kill_all();
        }
    }
}

#[test]
fn every_synchronously_committed_row_survives_power_losses_in_every_mode() {
    let mounted = Mounted::new(&EXT4);
    let cluster = Cluster::create(&mounted);
    let server = cluster.start(&["synchronous_commit=on"]);
    cluster.sql(&["CREATE TABLE t(v integer NOT NULL)".to_owned()]);
    let mut server = Some(server);
    let mut written = 0;
    for mode in [
        PowerLossMode::Drop,
        PowerLossMode::Torn,
        PowerLossMode::Reorder,
        PowerLossMode::Prefix,
    ] {
        let mut round = inserts(written + 1..=written + ROWS_PER_ROUND);
        // Redo then starts after the table's creation: its file must be on the disk by itself.
        round.insert(ROWS_PER_ROUND as usize / 2, "CHECKPOINT".to_owned());
        cluster.sql(&round);
        written += ROWS_PER_ROUND;
        server.take().unwrap().crash();
        mounted.power_loss(mode);
        server = Some(cluster.start(&["synchronous_commit=on"]));
        assert_eq!(
            cluster.rows(),
            (1..=written).collect::<Vec<_>>(),
            "after a power loss ({mode:?})"
        );
    }
    drop(server);
    let _ = mounted.unmount();
}

/// With `synchronous_commit=off` a commit returns before its WAL is flushed; the WAL writer
/// flushes only whole pages until `wal_writer_delay` (here 10 s) has passed, so the page that
/// holds the last commits is still unsynced when the power goes a moment later. Those commits
/// are lost, never an earlier one without a later one, and the database recovers.
#[test]
fn asynchronous_commits_made_just_before_a_power_loss_are_lost_the_rest_kept() {
    let mounted = Mounted::new(&EXT4);
    let cluster = Cluster::create(&mounted);
    let settings = ["synchronous_commit=off", "wal_writer_delay=10s"];
    let server = cluster.start(&settings);
    let mut setup = vec!["CREATE TABLE t(v integer NOT NULL)".to_owned()];
    setup.extend(inserts(1..=ROWS_PER_ROUND));
    setup.push("CHECKPOINT".to_owned());
    cluster.sql(&setup);
    cluster.sql(&inserts(ROWS_PER_ROUND + 1..=3 * ROWS_PER_ROUND));
    server.crash();
    mounted.power_loss(PowerLossMode::Drop);
    let _server = cluster.start(&settings);
    let rows = cluster.rows();
    assert!(
        rows.len() >= ROWS_PER_ROUND as usize && rows.len() < 3 * ROWS_PER_ROUND as usize,
        "the checkpointed rows kept, the last commits lost: {rows:?}"
    );
    assert_eq!(
        rows,
        (1..=rows.len() as u32).collect::<Vec<_>>(),
        "what was lost is a suffix of the commits"
    );
}

/// Under POSIX's promise (a new name is durable once its directory is fsynced), the file of a
/// table created and checkpointed is gone after a power loss: the checkpoint fsynced the file
/// but not `base/DB/`, and recovery, which starts at the checkpoint, does not create it again.
/// What a user of a file system with only POSIX's guarantee would meet.
#[test]
fn under_posix_metadata_a_table_created_before_a_checkpoint_loses_its_file() {
    let mounted = Mounted::new(&["--metadata", "posix"]);
    let cluster = Cluster::create(&mounted);
    let settings = ["synchronous_commit=on"];
    let server = cluster.start(&settings);
    let mut statements = vec!["CREATE TABLE t(v integer NOT NULL)".to_owned()];
    statements.extend(inserts(1..=ROWS_PER_ROUND));
    statements.push("CHECKPOINT".to_owned());
    cluster.sql(&statements);
    server.crash();
    mounted.power_loss(PowerLossMode::Drop);
    let _server = cluster.start(&settings);
    let error = cluster
        .try_sql(&["SELECT count(*) FROM t".to_owned()])
        .expect_err("the table's file is gone");
    assert!(
        error.contains("could not open file") && error.contains("No such file or directory"),
        "{error}"
    );
}
