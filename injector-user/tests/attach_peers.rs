//! `dst=IP:PORT` filters in attach mode, on real sockets: the address a call names (sendto),
//! and the connected peer of the socket behind a call's fd, for a connection made before or
//! after the injector attached. Real eBPF, root.
mod common;

use std::{os::unix::process::ExitStatusExt, process::Command};

use common::{assert_refused, attached, remaining_json};
use process_guard::Spawned;

const PEER: &str = env!("CARGO_BIN_EXE_net-peer");

fn listening(mut peer: Spawned) -> (Spawned, String) {
    let address = peer
        .read_line()
        .unwrap()
        .strip_prefix("listening ")
        .unwrap()
        .to_owned();
    (peer, address)
}

/// A UDP receiver that stays up for the whole test (a connected sender would get ECONNREFUSED
/// from a closed port); killed when dropped.
fn udp_counter(listen: &str) -> (Spawned, String) {
    listening(
        Spawned::start(
            "udp-count",
            Command::new(PEER).args(["udp-count", "--listen", listen, "--idle-ms", "60000"]),
        )
        .unwrap(),
    )
}

fn tcp_server(listen: &str) -> (Spawned, String) {
    listening(
        Spawned::start(
            "tcp-server",
            Command::new(PEER).args(["tcp-server", "--listen", listen]),
        )
        .unwrap(),
    )
}

#[test]
fn a_dst_rule_counts_only_the_datagrams_sent_to_that_address() {
    let (to_a, a) = udp_counter("127.0.0.71:0");
    let (to_b, b) = udp_counter("127.0.0.72:0");
    // The senders are the shell's children, started after the injector attached.
    let script = format!(
        "echo ready; read go; {PEER} udp-send --from 127.0.0.73 --to {a} --count 5; \
         {PEER} udp-send --from 127.0.0.73 --to {b} --count 7; echo finished"
    );
    let mut shell = Spawned::start("shell", Command::new("sh").args(["-c", &script])).unwrap();
    assert_eq!(shell.read_line().unwrap(), "ready");
    let rule = format!("sendto(dst={a})=count");
    let mut injector = attached("attach", shell.pid(), &["--follow-forks", "--fault", &rule]);
    shell.send_line("go").unwrap();
    assert_eq!(shell.read_line().unwrap(), "sent 5");
    assert_eq!(shell.read_line().unwrap(), "sent 7");
    assert_eq!(shell.read_line().unwrap(), "finished");
    shell.finish().unwrap();
    let lines = remaining_json(&mut injector);
    injector.finish().unwrap();
    assert_eq!(lines.last().unwrap()["rules"][0]["calls"], 5, "{lines:?}");
    drop((to_a, to_b));
}

/// A UDP socket connected after the injector attached: its sends name no address, so only
/// the peer recorded at connect (the kernel stops the sender there until it is) can match.
#[test]
fn a_socket_connected_after_attaching_is_matched_by_its_peer() {
    let (to_a, a) = udp_counter("127.0.0.78:0");
    let script = format!(
        "echo ready; read go; exec {PEER} udp-send --connect --from 127.0.0.79 --to {a} --count 6"
    );
    let mut sender = Spawned::start("sender", Command::new("sh").args(["-c", &script])).unwrap();
    assert_eq!(sender.read_line().unwrap(), "ready");
    let rule = format!("sendto(dst={a})=count");
    let mut injector = attached("attach", sender.pid(), &["--fault", &rule]);
    sender.send_line("go").unwrap();
    assert_eq!(sender.read_line().unwrap(), "sent 6");
    sender.finish().unwrap();
    let lines = remaining_json(&mut injector);
    injector.finish().unwrap();
    assert_eq!(lines.last().unwrap()["rules"][0]["calls"], 6, "{lines:?}");
    drop(to_a);
}

/// The client connects after the injector attached (the kernel stops it at connect until its
/// peer is known). Rust sends on a TCP stream with sendto(fd, ..., NULL, 0): no address in the
/// call, so the socket's peer counts.
#[test]
fn a_dst_rule_kills_at_the_third_send_to_the_connected_server() {
    let (_server, address) = tcp_server("127.0.0.74:0");
    let script =
        format!("echo ready; read go; exec {PEER} tcp-client --from 127.0.0.75 --to {address}");
    let mut client = Spawned::start("client", Command::new("sh").args(["-c", &script])).unwrap();
    assert_eq!(client.read_line().unwrap(), "ready");
    let rule = format!("sendto(dst={address})=2*off->1*kill");
    let mut injector = attached("attach", client.pid(), &["--fault", &rule]);
    client.send_line("go").unwrap();
    assert_eq!(client.read_line().unwrap(), "connected");
    for ping in 1..=2 {
        client.send_line("send 5000").unwrap();
        assert_eq!(client.read_line().unwrap(), format!("pong {ping}"));
    }
    client.send_line("send 5000").unwrap();
    let (status, _) = client.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let lines = remaining_json(&mut injector);
    injector.finish().unwrap();
    let summary = lines.last().unwrap();
    assert_eq!(summary["rules"][0]["calls"], 3, "{lines:?}");
    assert_eq!(summary["rules"][0]["faults"], 1, "{lines:?}");
}

#[test]
fn a_connection_made_before_attaching_has_its_peer_too() {
    let (_server, address) = tcp_server("127.0.0.76:0");
    let mut client = Spawned::start(
        "client",
        Command::new(PEER).args(["tcp-client", "--from", "127.0.0.77", "--to", &address]),
    )
    .unwrap();
    assert_eq!(client.read_line().unwrap(), "connected");
    let rule = format!("sendto(dst={address})=count");
    let mut injector = attached("attach", client.pid(), &["--fault", &rule]);
    for ping in 1..=4 {
        client.send_line("send 5000").unwrap();
        assert_eq!(client.read_line().unwrap(), format!("pong {ping}"));
    }
    client.close_stdin();
    client.finish().unwrap();
    let lines = remaining_json(&mut injector);
    injector.finish().unwrap();
    assert_eq!(lines.last().unwrap()["rules"][0]["calls"], 4, "{lines:?}");
}

#[test]
fn dst_rules_the_kernel_cannot_check_are_refused_with_the_reason() {
    let mut bystander = common::worker("bystander", &["--until-stdin-closes"]);
    let pid = bystander.pid().to_string();
    assert_refused(
        &["--pid", &pid, "--fault", "fsync(dst=127.0.0.1:7000)=kill"],
        "a dst= filter needs a call with a peer",
    );
    assert_refused(
        &["--pid", &pid, "--fault", "sendto(dst=[::1]:7000)=kill"],
        "dst= takes an IPv4 address and port",
    );
    bystander.close_stdin();
    bystander.finish().unwrap();
}
