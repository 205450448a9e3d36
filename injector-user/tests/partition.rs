//! `injector partition` on real TCP and UDP traffic over loopback. Each test uses its own
//! loopback addresses, because a partition applies to the whole interface.
mod common;

use std::process::Command;

use common::INJECTOR;
use process_guard::Spawned;
use serde_json::Value;

const PEER: &str = env!("CARGO_BIN_EXE_net-peer");

fn peer(args: &[&str]) -> Spawned {
    Spawned::start("net-peer", Command::new(PEER).args(args)).unwrap()
}

fn partition(args: &[&str]) -> Spawned {
    let mut injector = Spawned::start(
        "injector",
        Command::new(INJECTOR)
            .args(["partition", "--json"])
            .args(args),
    )
    .unwrap();
    let attached: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    assert_eq!(attached["event"], "attached");
    injector
}

/// Heals by stopping the injector the way a user does (SIGTERM), and checks it says so.
fn heal(mut injector: Spawned) {
    // SAFETY: SIGTERM to the injector we started, still our unreaped child.
    unsafe { libc::kill(injector.pid() as i32, libc::SIGTERM) };
    let healed: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    assert_eq!(healed["event"], "healed");
    injector.finish().unwrap();
}

fn ping(client: &mut Spawned, timeout_ms: u32) -> String {
    client.send_line(&format!("send {timeout_ms}")).unwrap();
    client.read_line().unwrap()
}

fn tcp_pair(server: &str, client: &str) -> (Spawned, Spawned) {
    let mut listener = peer(&["tcp-server", "--listen", &format!("{server}:0")]);
    let address = listener
        .read_line()
        .unwrap()
        .strip_prefix("listening ")
        .unwrap()
        .to_owned();
    let mut connected = peer(&["tcp-client", "--from", client, "--to", &address]);
    assert_eq!(connected.read_line().unwrap(), "connected");
    (listener, connected)
}

#[test]
fn a_partition_stalls_a_tcp_ping_pong_and_healing_restores_it() {
    let (_server, mut client) = tcp_pair("127.0.0.11", "127.0.0.12");
    let (_bystander_server, mut bystander) = tcp_pair("127.0.0.13", "127.0.0.14");
    assert!(ping(&mut client, 5000).starts_with("pong"));

    let injector = partition(&["--between", "127.0.0.11", "--and", "127.0.0.12"]);
    assert!(
        ping(&mut client, 500).starts_with("timeout"),
        "the partition cuts the pair"
    );
    assert!(
        ping(&mut bystander, 5000).starts_with("pong"),
        "other addresses are untouched"
    );
    heal(injector);
    // TCP retransmits what was dropped; the answer comes once its backoff timer fires.
    assert!(
        ping(&mut client, 10_000).starts_with("pong"),
        "healing restores the connection"
    );
}

fn udp_received(from: &str, to: &str, count: u32) -> u64 {
    let mut counter = peer(&[
        "udp-count",
        "--listen",
        &format!("{to}:0"),
        "--idle-ms",
        "500",
    ]);
    let address = counter
        .read_line()
        .unwrap()
        .strip_prefix("listening ")
        .unwrap()
        .to_owned();
    let mut sender = peer(&[
        "udp-send",
        "--from",
        from,
        "--to",
        &address,
        "--count",
        &count.to_string(),
    ]);
    assert_eq!(sender.read_line().unwrap(), format!("sent {count}"));
    sender.finish().unwrap();
    let received = counter.read_line().unwrap();
    counter.finish().unwrap();
    received.strip_prefix("received ").unwrap().parse().unwrap()
}

#[test]
fn a_one_way_partition_drops_one_direction_only() {
    let injector = partition(&[
        "--between",
        "127.0.0.21",
        "--and",
        "127.0.0.22",
        "--one-way",
    ]);
    assert_eq!(udp_received("127.0.0.21", "127.0.0.22", 100), 0);
    assert_eq!(udp_received("127.0.0.22", "127.0.0.21", 100), 100);
    heal(injector);
    assert_eq!(udp_received("127.0.0.21", "127.0.0.22", 100), 100);
}

#[test]
fn loss_drops_about_the_percentage_asked() {
    let injector = partition(&[
        "--between",
        "127.0.0.31",
        "--and",
        "127.0.0.32",
        "--loss",
        "30%",
    ]);
    let received = udp_received("127.0.0.31", "127.0.0.32", 2000);
    heal(injector);
    // 30% of 2000 lost: 1400 expected; 5 standard deviations is about +-100.
    assert!(
        (1300..=1500).contains(&received),
        "received {received} of 2000"
    );
}

#[test]
fn a_port_names_one_endpoint() {
    let mut counter = peer(&["udp-count", "--listen", "127.0.0.41:0", "--idle-ms", "500"]);
    let address = counter
        .read_line()
        .unwrap()
        .strip_prefix("listening ")
        .unwrap()
        .to_owned();
    let injector = partition(&["--between", "127.0.0.42", "--and", &address]);
    let mut sender = peer(&[
        "udp-send",
        "--from",
        "127.0.0.42",
        "--to",
        &address,
        "--count",
        "50",
    ]);
    sender.read_line().unwrap();
    sender.finish().unwrap();
    assert_eq!(counter.read_line().unwrap(), "received 0");
    counter.finish().unwrap();
    heal(injector);
}

#[test]
fn bad_endpoints_exit_with_code_2() {
    let output = Command::new(INJECTOR)
        .args(["partition", "--between", "node1:7001", "--and", "127.0.0.2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`node1:7001` is not an endpoint"),
        "{stderr}"
    );
}

#[test]
fn a_partition_between_pids_cuts_their_connection_and_nobody_elses() {
    // Both pairs on one address, so only the processes' own ports tell them apart.
    let (server, mut client) = tcp_pair("127.0.0.41", "127.0.0.41");
    let (_bystander_server, mut bystander) = tcp_pair("127.0.0.41", "127.0.0.41");
    assert!(ping(&mut client, 5000).starts_with("pong"));

    let injector = partition(&[
        "--between",
        &format!("pid:{}", server.pid()),
        "--and",
        &format!("pid:{}", client.pid()),
    ]);
    assert!(
        ping(&mut client, 500).starts_with("timeout"),
        "the partition cuts the two processes"
    );
    assert!(
        ping(&mut bystander, 5000).starts_with("pong"),
        "other processes on the same address are untouched"
    );
    heal(injector);
    assert!(
        ping(&mut client, 10_000).starts_with("pong"),
        "healing restores the connection"
    );
}

#[test]
fn a_bad_pid_or_one_without_sockets_is_refused() {
    let output = Command::new(INJECTOR)
        .args(["partition", "--between", "pid:1x", "--and", "127.0.0.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pid:1x: not a process id"), "{stderr}");
    // This test process has no IPv4 sockets of its own.
    let me = format!("pid:{}", std::process::id());
    let output = Command::new(INJECTOR)
        .args(["partition", "--between", &me, "--and", "127.0.0.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("names no IPv4 TCP or UDP endpoint"),
        "{stderr}"
    );
}
