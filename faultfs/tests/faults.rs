//! Each fault action on a real mount.
//!
//! Why this file is long: one test per action of a file-operation rule (error, delay, pause,
//! corrupt, torn write, kill, crash point), each a few lines on one real mount; durability,
//! directories and signals have files of their own.
mod common;

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{Mounted, fsync_path, write_file};
use faultfs::{control::Request, power_loss::PowerLossMode};

fn errno_of(result: std::io::Result<impl Sized>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

#[test]
fn error_fires_on_the_nth_matching_call_only() {
    let mounted = Mounted::new(&[]);
    fs::create_dir(mounted.path("wal")).unwrap();
    let wal = write_file(&mounted.path("wal/000001.log"), b"record");
    let other = write_file(&mounted.path("data"), b"x");
    mounted.add_fault(r#"fsync(path="wal/*")=2*off->1*error(EIO)"#);
    wal.sync_all().unwrap();
    other.sync_all().unwrap();
    wal.sync_all().unwrap();
    assert_eq!(
        errno_of(wal.sync_all()),
        Some(libc::EIO),
        "the 3rd fsync of a WAL file"
    );
    wal.sync_all().unwrap();
    other.sync_all().unwrap();
    let list = mounted.ctl(Request::FaultList);
    assert_eq!(list["faults"][0]["fired"], 1, "{list}");
    assert_eq!(list["faults"][0]["calls"], 4, "{list}");
    drop((wal, other));
    let _ = mounted.unmount();
}

type FallibleCall<'a> = Box<dyn Fn() -> std::io::Result<()> + 'a>;

#[test]
fn errors_on_namespace_operations() {
    let mounted = Mounted::new(&[]);
    write_file(&mounted.path("exists"), b"x");
    fs::create_dir(mounted.path("dir")).unwrap();
    let cases: Vec<(&str, FallibleCall)> = vec![
        (
            "create",
            Box::new(|| fs::File::create(mounted.path("new")).map(drop)),
        ),
        (
            "open",
            Box::new(|| fs::File::open(mounted.path("exists")).map(drop)),
        ),
        ("mkdir", Box::new(|| fs::create_dir(mounted.path("newdir")))),
        (
            "unlink",
            Box::new(|| fs::remove_file(mounted.path("exists"))),
        ),
        (
            "rename",
            Box::new(|| fs::rename(mounted.path("exists"), mounted.path("moved"))),
        ),
        (
            "readdir",
            Box::new(|| {
                fs::read_dir(mounted.path("dir"))?
                    .collect::<std::io::Result<Vec<_>>>()
                    .map(drop)
            }),
        ),
        (
            "truncate",
            Box::new(|| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(mounted.path("exists"))?
                    .set_len(0)
            }),
        ),
    ];
    for (op, call) in cases {
        let id = mounted.add_fault(&format!("{op}=1*error(EACCES)"));
        assert_eq!(errno_of(call()), Some(libc::EACCES), "{op} fails once");
        mounted.ctl(Request::FaultRemove { id });
    }
    let _ = mounted.unmount();
}

#[test]
fn delay_holds_the_call_without_blocking_others() {
    let mounted = Mounted::new(&[]);
    let slow = write_file(&mounted.path("slow"), b"");
    mounted.add_fault(r#"fsync(path="slow")=delay(400)"#);
    let started = Instant::now();
    let (done, finished) = mpsc::channel();
    let slow_path = mounted.path("slow");
    let held = std::thread::spawn(move || {
        fs::File::open(slow_path).unwrap().sync_all().unwrap();
        done.send(Instant::now()).unwrap();
    });
    // Another file's fsync is not held behind it.
    write_file(&mounted.path("fast"), b"x").sync_all().unwrap();
    let fast_done = Instant::now();
    let slow_done = finished.recv().unwrap();
    held.join().unwrap();
    assert!(slow_done - started >= Duration::from_millis(400));
    assert!(fast_done < slow_done, "the fast fsync finished first");
    drop(slow);
    let _ = mounted.unmount();
}

/// An fsync of `db` held by `rule` (added now) on its own thread: the rule's id, and where the
/// fsync's success arrives once it returns. Returns once faultfs holds the call.
fn hold_an_fsync(mounted: &Mounted, rule: &str) -> (u64, mpsc::Receiver<bool>) {
    write_file(&mounted.path("db"), b"x");
    let id = mounted.add_fault(rule);
    let (done, finished) = mpsc::channel();
    let path = mounted.path("db");
    std::thread::spawn(move || {
        let result = fs::File::open(path).unwrap().sync_all();
        done.send(result.is_ok()).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while mounted.ctl(Request::FaultList)["faults"][0]["fired"] != 1 {
        assert!(Instant::now() < deadline, "the fsync never reached faultfs");
        std::thread::yield_now();
    }
    (id, finished)
}

/// A delay of an hour, removed as soon as its call is held: the call goes on at once (it once
/// waited out the whole delay, and the mount could not be unmounted meanwhile).
#[test]
fn removing_a_delay_rule_releases_the_calls_it_holds() {
    let mounted = Mounted::new(&[]);
    let (id, finished) = hold_an_fsync(&mounted, "fsync=delay(3600000)");
    mounted.ctl(Request::FaultRemove { id });
    assert!(
        finished.recv_timeout(Duration::from_secs(30)).unwrap(),
        "the released fsync succeeds"
    );
    let _ = mounted.unmount();
}

#[test]
fn pause_holds_until_the_rule_is_removed() {
    let mounted = Mounted::new(&[]);
    let (id, finished) = hold_an_fsync(&mounted, "fsync=pause");
    assert!(
        finished.try_recv().is_err(),
        "still held while the rule exists"
    );
    mounted.ctl(Request::FaultRemove { id });
    assert!(
        finished.recv().unwrap(),
        "completes once the rule is removed"
    );
    let _ = mounted.unmount();
}

#[test]
fn short_write_stores_and_returns_fewer_bytes() {
    let mounted = Mounted::new(&["--direct-writes"]);
    let mut file = write_file(&mounted.path("f"), b"");
    mounted.add_fault("write=1*short(10)");
    assert_eq!(file.write(&[b'a'; 100]).unwrap(), 10);
    drop(file);
    assert_eq!(fs::read(mounted.path("f")).unwrap(), vec![b'a'; 10]);
    let _ = mounted.unmount();
}

#[test]
fn lose_acknowledges_fsync_but_keeps_nothing() {
    let mounted = Mounted::with_backing(&[], |b| fs::write(b.join("db"), b"old").unwrap());
    mounted.add_fault("fsync=lose");
    let file = write_file(&mounted.path("db"), b"new");
    file.sync_all().unwrap();
    drop(file);
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(
        fs::read(mounted.path("db")).unwrap(),
        b"old",
        "a lying disk"
    );
    let _ = mounted.unmount();
}

#[test]
fn fsyncgate_fails_once_then_a_retry_succeeds_without_the_data() {
    let mounted = Mounted::with_backing(&[], |b| fs::write(b.join("db"), b"old").unwrap());
    mounted.add_fault("fsync=1*fsyncgate");
    let file = write_file(&mounted.path("db"), b"new");
    assert_eq!(errno_of(file.sync_all()), Some(libc::EIO));
    file.sync_all().unwrap();
    drop(file);
    // The page cache still shows the data, as on Linux ...
    assert_eq!(fs::read(mounted.path("db")).unwrap(), b"new");
    mounted.power_loss(PowerLossMode::Drop);
    // ... but it never reached the disk.
    assert_eq!(fs::read(mounted.path("db")).unwrap(), b"old");
    let _ = mounted.unmount();
}

#[test]
fn corrupt_flips_or_zeroes_what_is_read() {
    let mounted = Mounted::with_backing(&[], |b| fs::write(b.join("db"), [0x55u8; 64]).unwrap());
    let id = mounted.add_fault("read=1*corrupt(flip)");
    let mut flipped = Vec::new();
    fs::File::open(mounted.path("db"))
        .unwrap()
        .read_to_end(&mut flipped)
        .unwrap();
    let differing = flipped.iter().filter(|&&b| b != 0x55).count();
    assert_eq!(differing, 1, "exactly one byte differs");
    assert_eq!(
        (flipped.iter().find(|&&b| b != 0x55).unwrap() ^ 0x55).count_ones(),
        1,
        "by one bit"
    );
    mounted.ctl(Request::FaultRemove { id });
    mounted.add_fault("read=1*corrupt(zero)");
    assert!(
        fs::read(mounted.path("db"))
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        fs::read(mounted.path("db")).unwrap(),
        [0x55u8; 64],
        "silent and transient"
    );
    let _ = mounted.unmount();
}

#[test]
fn capacity_returns_enospc_once_full() {
    let mounted = Mounted::new(&["--capacity", "1M", "--direct-writes"]);
    let mut file = write_file(&mounted.path("big"), b"");
    let chunk = vec![1u8; 64 * 1024];
    let mut written = 0;
    let error = loop {
        match file.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(error) => break error,
        }
        assert!(written <= 1 << 20, "wrote past the capacity");
    };
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(written, 1 << 20);
    drop(file);
    let _ = mounted.unmount();
}

#[test]
fn capacity_through_the_page_cache_fails_by_fsync() {
    let mounted = Mounted::new(&["--capacity", "1M"]);
    let mut file = write_file(&mounted.path("big"), b"");
    let result = file
        .write_all(&vec![1u8; 2 << 20])
        .and_then(|()| file.sync_all());
    assert_eq!(errno_of(result), Some(libc::ENOSPC));
    drop(file);
    let _ = mounted.unmount();
}

#[test]
fn a_bad_rule_is_refused_with_the_fix_and_changes_nothing() {
    let mounted = Mounted::new(&[]);
    let output = std::process::Command::new(common::FAULTFS)
        .args(["ctl"])
        .arg(&mounted.mountpoint)
        .args(["fault", "add", "fsync=error(EIOX)"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`EIOX` is not an errno name"), "{stderr}");
    let error = faultfs::control::call(
        &mounted.mountpoint,
        &Request::FaultAdd {
            rule: "write=short(5)->lose".into(),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("`lose` only applies to fsync and fdatasync"),
        "{error}"
    );
    assert_eq!(
        mounted.ctl(Request::FaultList)["faults"],
        serde_json::json!([])
    );
    fsync_path(&mounted.mountpoint);
    let _ = mounted.unmount();
}

#[test]
fn rules_and_settings_from_a_config_file_apply_from_mount_time() {
    let config = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        config.path(),
        "seed = 3\nmetadata = \"ext4\"\nfaults = ['fsync(path=\"wal/*\")=1*error(EDQUOT)']\n",
    )
    .unwrap();
    let mounted = Mounted::new(&["--config", config.path().to_str().unwrap()]);
    fs::create_dir(mounted.path("wal")).unwrap();
    let wal = write_file(&mounted.path("wal/1"), b"x");
    assert_eq!(errno_of(wal.sync_all()), Some(libc::EDQUOT));
    wal.sync_all().unwrap();
    drop(wal);
    // ext4 metadata mode from the file: the fsynced file's entry is durable.
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::read(mounted.path("wal/1")).unwrap(), b"x");
    let _ = mounted.unmount();
}

/// A punched hole reads back as zeros and keeps the size, as on ext4 (faultfs once answered
/// EOPNOTSUPP), and like any write it is volatile until fsync.
#[test]
fn a_punched_hole_reads_as_zeros_and_is_volatile_until_fsync() {
    let mounted = Mounted::new(&[]);
    let file = write_file(&mounted.path("db"), &[9u8; 8192]);
    file.sync_all().unwrap();
    fsync_path(&mounted.path(""));
    use rustix::fs::FallocateFlags;
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(&file, punch, 4096, 4096).unwrap();
    let mut expected = vec![9u8; 4096];
    expected.extend([0u8; 4096]);
    assert_eq!(fs::read(mounted.path("db")).unwrap(), expected);
    drop(file);
    mounted.power_loss(PowerLossMode::Drop);
    assert_eq!(fs::read(mounted.path("db")).unwrap(), vec![9u8; 8192]);
    let _ = mounted.unmount();
}

#[test]
fn the_trace_records_each_operation_with_its_result_and_durability() {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let mounted = Mounted::new(&["--direct-writes", "--trace", trace.path().to_str().unwrap()]);
    fs::create_dir(mounted.path("wal")).unwrap();
    let mut wal = write_file(&mounted.path("wal/1"), b"");
    wal.write_all(b"0123456789").unwrap();
    wal.sync_all().unwrap();
    mounted.add_fault("fsync=1*error(EIO)");
    assert_eq!(errno_of(wal.sync_all()), Some(libc::EIO));
    drop(wal);
    fs::rename(mounted.path("wal/1"), mounted.path("wal/2")).unwrap();
    fs::hard_link(mounted.path("wal/2"), mounted.path("wal/3")).unwrap();
    std::os::unix::fs::symlink("2", mounted.path("wal/current")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(mounted.path("wal/3"))
        .unwrap()
        .set_len(4)
        .unwrap();
    fs::set_permissions(mounted.path("wal/3"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(mounted.path("wal/2")).unwrap();
    fs::create_dir(mounted.path("old")).unwrap();
    fs::remove_dir(mounted.path("old")).unwrap();
    let _ = mounted.unmount();

    let lines: Vec<serde_json::Value> = fs::read_to_string(trace.path())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |op: &str| {
        lines
            .iter()
            .filter(move |l| l["op"] == op)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(find("mkdir")[0]["path"], "wal");
    assert_eq!(find("create")[0]["path"], "wal/1");
    let write = &find("write")[0];
    assert_eq!(
        (write["offset"].as_u64(), write["length"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(write["durable"], false);
    let fsyncs = find("fsync");
    assert_eq!(fsyncs[0]["result"], "ok");
    assert_eq!(fsyncs[0]["durable"], true);
    assert_eq!(fsyncs[1]["result"], "EIO");
    assert_eq!(fsyncs[1]["durable"], false);
    assert_eq!(find("rename")[0]["path"], "wal/1");
    assert_eq!(find("unlink")[0]["path"], "wal/2");
    assert_eq!(find("link")[0]["path"], "wal/3");
    assert_eq!(find("symlink")[0]["path"], "wal/current");
    assert_eq!(find("truncate")[0]["offset"], 4);
    // An operation on a file is traced under its first name (wal/3 is its second).
    assert_eq!(find("setattr")[0]["path"], "wal/2");
    assert_eq!(find("rmdir")[0]["path"], "old");
    let times: Vec<u64> = lines
        .iter()
        .map(|l| l["time_ns"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
}

/// A crash point: the 2nd fsync of a WAL file completes, then the mount stops; nothing the
/// program does after it (a write, a rename, a new file) reaches the disk, and the power loss
/// that follows keeps exactly what was durable at that fsync.
#[test]
fn crash_stops_the_mount_right_after_the_chosen_call_until_a_power_loss() {
    let mounted = Mounted::new(&[]);
    fs::create_dir(mounted.path("wal")).unwrap();
    fsync_path(&mounted.path("wal"));
    fsync_path(&mounted.path(""));
    mounted.add_fault(r#"fsync(path="wal/*")=1*off->1*crash"#);
    let mut wal = write_file(&mounted.path("wal/1.log"), b"one;");
    fsync_path(&mounted.path("wal"));
    wal.sync_all().unwrap();
    wal.write_all(b"two;").unwrap();
    let status = mounted.ctl(Request::Status);
    assert!(status["crashed"].is_null(), "{status}");
    // The crash point: this fsync succeeds and makes "two;" durable ...
    wal.sync_all().unwrap();
    let status = mounted.ctl(Request::Status);
    assert_eq!(status["crashed"]["op"], "fsync", "{status}");
    assert_eq!(status["crashed"]["path"], "wal/1.log", "{status}");
    // ... and from then on every change fails: the disk is gone. (A write may still land in the
    // kernel's page cache, the writeback cache being on; its fsync fails.)
    let _ = wal.write_all(b"three;");
    assert_eq!(errno_of(wal.sync_all()), Some(libc::EIO));
    assert_eq!(
        errno_of(fs::write(mounted.path("other"), b"x")),
        Some(libc::EIO)
    );
    drop(wal);
    mounted.power_loss(PowerLossMode::Drop);
    let status = mounted.ctl(Request::Status);
    assert!(
        status["crashed"].is_null(),
        "a power loss ends the crash: {status}"
    );
    assert_eq!(fs::read(mounted.path("wal/1.log")).unwrap(), b"one;two;");
    assert!(!mounted.path("other").exists());
    // The mount works again.
    fs::write(mounted.path("after"), b"ok").unwrap();
    assert_eq!(fs::read(mounted.path("after")).unwrap(), b"ok");
    let _ = mounted.unmount();
}

/// The state a program's own crash leaves at a crash point: `keep` makes every unsynced
/// operation up to the crashing call durable (data, a new name, the truncate), and nothing
/// after it. Here, a state file rewritten in place is caught truncated and not yet written: the
/// disk holds it empty, which `drop` (the old file) and `torn` (unsynced truncates lost) never show.
#[test]
fn keep_at_a_crash_point_leaves_every_unsynced_operation_up_to_the_crashing_call() {
    let mounted = Mounted::with_backing(&[], |backing| {
        fs::write(backing.join("state"), b"old state").unwrap();
    });
    mounted.add_fault(r#"truncate(path="state")=1*crash"#);
    write_file(&mounted.path("journal"), b"unsynced");
    let rewrite = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(mounted.path("state"));
    let status = mounted.ctl(Request::Status);
    assert_eq!(status["crashed"]["op"], "truncate", "{status}");
    assert_eq!(status["crashed"]["path"], "state", "{status}");
    if let Ok(mut rewrite) = rewrite {
        let _ = rewrite.write_all(b"new state");
        assert_eq!(errno_of(rewrite.sync_all()), Some(libc::EIO));
    }
    let answer = mounted.power_loss(PowerLossMode::Keep);
    assert_eq!(
        answer["survived"], answer["unsynced_operations"],
        "{answer}"
    );
    assert_eq!(fs::read(mounted.backing.join("state")).unwrap(), b"");
    assert_eq!(
        fs::read(mounted.backing.join("journal")).unwrap(),
        b"unsynced"
    );
    assert_eq!(fs::read(mounted.path("state")).unwrap(), b"");
    let _ = mounted.unmount();
}

/// A program crash at a call: the program that creates `next` dies at that create, which is
/// never made, while what it wrote before (unsynced, in the page cache) stays, as after
/// `kill -9` with the machine up. Only that process is touched: the test process, on the same
/// mount, goes on, and once the rule is gone the same create works.
/// `kill -9` of a program whose fsync faultfs holds: it dies at once, not when the hold ends
/// (the kernel's interrupt request reaches faultfs, which fuser cannot answer).
#[test]
fn a_program_held_by_a_delay_or_a_pause_dies_at_once_when_killed() {
    for rule in ["fsync=delay(3600000)", "fsync=pause"] {
        let mounted = Mounted::new(&[]);
        let id = mounted.add_fault(rule);
        let mut program = std::process::Command::new("dd")
            .args(["if=/dev/zero", "of=held", "bs=512", "count=1", "conv=fsync"])
            .current_dir(&mounted.mountpoint)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while mounted.ctl(Request::FaultList)["faults"][0]["fired"] != 1 {
            assert!(
                Instant::now() < deadline,
                "{rule}: the fsync never reached faultfs"
            );
            std::thread::yield_now();
        }
        program.kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(exit) = program.try_wait().unwrap() {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "{rule}: the killed program still waits in its fsync"
            );
            std::thread::yield_now();
        };
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&exit),
            Some(libc::SIGKILL),
            "{rule}: {exit}"
        );
        // The rule goes on holding other calls: only the dead caller's call was let go.
        assert_eq!(mounted.ctl(Request::FaultList)["faults"][0]["id"], id);
        mounted.ctl(Request::FaultRemove { id });
        let _ = mounted.unmount();
    }
}

#[test]
fn kill_ends_the_calling_program_at_the_call_and_keeps_what_it_wrote() {
    let mounted = Mounted::new(&[]);
    let rule = mounted.add_fault(r#"create(path="next")=kill"#);
    fs::write(mounted.path("bystander"), b"the test process writes too").unwrap();
    let mut program = std::process::Command::new("sh")
        .current_dir(&mounted.mountpoint)
        .args(["-c", "printf sealed > current; : > next; echo survived"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = program.id();
    let mut printed = String::new();
    program
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    let exit = program.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(libc::SIGKILL),
        "{exit}"
    );
    assert_eq!(printed, "", "the program went no further than the call");
    assert!(!mounted.path("next").exists(), "the call was not made");
    assert_eq!(fs::read(mounted.path("current")).unwrap(), b"sealed");
    let status = mounted.ctl(Request::Status);
    assert_eq!(status["killed"]["count"], 1, "{status}");
    assert_eq!(status["killed"]["last"]["op"], "create", "{status}");
    assert_eq!(status["killed"]["last"]["path"], "next", "{status}");
    assert_eq!(status["killed"]["last"]["pid"], pid, "{status}");
    assert_eq!(
        fs::read(mounted.path("bystander")).unwrap(),
        b"the test process writes too"
    );
    mounted.ctl(Request::FaultRemove { id: rule });
    fs::write(mounted.path("next"), b"made").unwrap();
    // No power loss came: the unsynced data is what a crash of the program alone leaves.
    let answer = mounted.power_loss(PowerLossMode::Keep);
    assert!(answer["unsynced_operations"].as_u64() > Some(0), "{answer}");
    assert_eq!(fs::read(mounted.path("current")).unwrap(), b"sealed");
    let _ = mounted.unmount();
}

#[test]
fn kill_is_refused_on_reads_and_writes_which_the_page_cache_makes() {
    let mounted = Mounted::new(&[]);
    let error = faultfs::control::call(
        &mounted.mountpoint,
        &Request::FaultAdd {
            rule: "write=kill".into(),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("`kill` only applies to fsync, fdatasync,")
            && error.contains("kill it at the fsync after them"),
        "{error}"
    );
    assert_eq!(
        mounted.ctl(Request::FaultList)["faults"],
        serde_json::json!([])
    );
    let _ = mounted.unmount();
}

#[test]
fn a_control_client_that_says_nothing_does_not_hold_up_another() {
    let mounted = Mounted::new(&[]);
    let idle =
        std::os::unix::net::UnixStream::connect(faultfs::control::socket_path(&mounted.mountpoint))
            .unwrap();
    let (answered, answer) = mpsc::channel();
    let mountpoint = mounted.mountpoint.clone();
    std::thread::spawn(move || {
        let _ = answered.send(faultfs::control::call(&mountpoint, &Request::Status));
    });
    // A bound, not a pause: a served request answers in milliseconds; a stalled one never.
    let status = answer
        .recv_timeout(Duration::from_secs(10))
        .expect("status waited behind the idle client")
        .unwrap();
    assert_eq!(status["power_losses"], 0);
    drop(idle);
}

/// symlink and link change the namespace like create and rename, so they pass the same gate: a
/// rule can fail them, and after a crash point they fail with EIO like every other change (the
/// disk is gone; before, they still went through and their names survived into the page cache).
#[test]
fn symlink_and_link_obey_the_rules_and_a_crash_point() {
    let mounted = Mounted::new(&[]);
    fs::write(mounted.path("data"), b"x").unwrap();
    mounted.add_fault(r#"symlink(path="soft-*")=1*error(EACCES)"#);
    let symlink = |name: &str| std::os::unix::fs::symlink("data", mounted.path(name));
    assert_eq!(errno_of(symlink("soft-1")), Some(libc::EACCES));
    symlink("soft-2").unwrap();
    assert_eq!(fs::read(mounted.path("soft-2")).unwrap(), b"x");
    mounted.add_fault(r#"link(path="hard-*")=1*error(EACCES)"#);
    let link = |name: &str| fs::hard_link(mounted.path("data"), mounted.path(name));
    assert_eq!(errno_of(link("hard-1")), Some(libc::EACCES));
    link("hard-2").unwrap();
    assert_eq!(fs::read(mounted.path("hard-2")).unwrap(), b"x");

    mounted.add_fault(r#"fsync(path="data")=1*crash"#);
    fs::File::open(mounted.path("data"))
        .unwrap()
        .sync_all()
        .unwrap();
    let status = mounted.ctl(Request::Status);
    assert_eq!(status["crashed"]["path"], "data", "{status}");
    assert_eq!(errno_of(symlink("soft-3")), Some(libc::EIO));
    assert_eq!(errno_of(link("hard-3")), Some(libc::EIO));
    assert!(!mounted.path("soft-3").exists() && !mounted.path("hard-3").exists());
    let _ = mounted.unmount();
}
