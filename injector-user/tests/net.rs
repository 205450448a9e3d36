//! `injector net`'s NFQUEUE path (what this CI kernel, without netem, gets) on real TCP and
//! UDP traffic over loopback: the delay it adds to round trips, on the named pair only; loss,
//! duplication, reordering and rate as a receiver sees them; nothing left in iptables after it
//! stops, or after kill -9 and the next start. Each test has its own addresses in 127.0.2.N,
//! since the rules match by address. `net_netem.rs` checks the netem path.
mod common;

use std::{net::Ipv4Addr, process::Command, time::Duration};

use common::{
    INJECTOR,
    traffic::{
        Received, ctl, ms, numbered_datagrams, restore, send_400_kilobytes, send_2000_numbered,
        tcp_round_trip, udp_round_trip,
    },
};
use process_guard::Spawned;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2, last)
}

/// These tests are of the NFQUEUE path, whatever else the kernel offers.
fn net_between(from: Ipv4Addr, to: Ipv4Addr, args: &[&str]) -> (Spawned, Value) {
    common::traffic::net_between("nfqueue", from, to, args)
}

/// Every line of every table iptables lists that names one of our chains.
fn leftover_rules() -> Vec<String> {
    ["iptables-legacy", "iptables-nft"]
        .iter()
        .filter_map(|tool| {
            Command::new(tool)
                .args(["-w", "-t", "mangle", "-S"])
                .output()
                .ok()
        })
        .flat_map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|line| line.contains("FAULTLINE-NET-"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn our_rules(chain: &str) -> Vec<String> {
    leftover_rules()
        .into_iter()
        .filter(|line| line.contains(chain))
        .collect()
}

#[test]
fn a_delay_adds_twice_its_time_to_round_trips_on_the_named_pair_only() {
    let (a, b, c, d) = (addr(2), addr(3), addr(4), addr(5));
    let before = [
        udp_round_trip(a, b, 20),
        tcp_round_trip(a, b, 20),
        udp_round_trip(c, d, 20),
    ];
    let (injector, attached) = net_between(a, b, &["--delay", "50ms"]);
    let chain = attached["chain"].as_str().unwrap().to_owned();
    assert!(!our_rules(&chain).is_empty(), "no rules while attached");
    let during = [
        udp_round_trip(a, b, 20),
        tcp_round_trip(a, b, 20),
        udp_round_trip(c, d, 50),
        tcp_round_trip(c, d, 50),
    ];
    let restored = restore(injector);
    let after = udp_round_trip(a, b, 20);

    for (what, before, during) in [("UDP", before[0], during[0]), ("TCP", before[1], during[1])] {
        let added = ms(during) - ms(before);
        assert!(
            (95.0..=105.0).contains(&added),
            "{what} round trip {:.2} ms with the fault, {:.2} ms before: added {added:.2} ms, not 100 ± 5",
            ms(during),
            ms(before)
        );
    }
    for (what, during) in [("UDP", during[2]), ("TCP", during[3])] {
        assert!(
            ms(during) - ms(before[2]) < 1.0,
            "{what} between two other addresses took {:.2} ms (before {:.2} ms)",
            ms(during),
            ms(before[2])
        );
    }
    assert!(
        ms(after) < ms(before[0]) + 5.0,
        "still slow after restoring: {:.2} ms",
        ms(after)
    );
    assert!(
        restored["packets"]["delayed"].as_u64().unwrap() >= 80,
        "{restored}"
    );
    assert_eq!(our_rules(&chain), Vec::<String>::new());
}

#[test]
fn one_way_delays_only_the_packets_from_between_to_and() {
    let (a, b) = (addr(6), addr(7));
    let before = udp_round_trip(a, b, 20);
    let (injector, _) = net_between(a, b, &["--one-way", "--delay", "30ms"]);
    let during = udp_round_trip(a, b, 20);
    let restored = restore(injector);
    let added = ms(during) - ms(before);
    assert!(
        (25.0..=35.0).contains(&added),
        "added {added:.2} ms, not 30 ± 5"
    );
    // 20 pings and the closing datagram, and no reply.
    assert_eq!(restored["packets"]["seen"], 21, "{restored}");
}

#[test]
fn loss_duplication_and_reordering_are_what_the_receiver_sees() {
    let (a, b) = (addr(8), addr(9));
    let (injector, _) = net_between(
        a,
        b,
        &[
            "--one-way",
            "--delay",
            "5ms",
            "--loss",
            "20%",
            "--duplicate",
            "10%",
            "--reorder",
            "30%",
            "--seed",
            "3",
        ],
    );
    let Received {
        sent,
        arrived,
        passed,
        lost,
        copies,
    } = send_2000_numbered(a, b);
    let restored = restore(injector);
    let packets = &restored["packets"];
    // What the engine says it did is exactly what arrived.
    assert_eq!(packets["seen"], sent, "{restored}");
    assert_eq!(packets["lost"], lost, "{restored}");
    assert_eq!(packets["duplicated"], copies, "{restored}");
    // And each share is near what was asked (binomial, 2000 packets: a few points).
    let share = Received::share;
    assert!((15.0..=25.0).contains(&share(lost, sent)), "lost {lost}");
    assert!(
        (6.0..=14.0).contains(&share(copies, passed)),
        "{copies} copies"
    );
    let overtaken = arrived.windows(2).filter(|pair| pair[1] < pair[0]).count();
    assert!(
        overtaken > 100,
        "only {overtaken} datagrams arrived after a later one"
    );
    let reordered = packets["reordered"].as_u64().unwrap();
    assert!(
        (22.0..=38.0).contains(&share(reordered, passed)),
        "{reordered} reordered"
    );
}

#[test]
fn a_rate_limits_the_link_to_that_many_bits_per_second() {
    let (a, b) = (addr(10), addr(11));
    let (injector, _) = net_between(a, b, &["--rate", "8mbit"]);
    let took = send_400_kilobytes(a, b);
    restore(injector);
    assert!(
        (Duration::from_millis(360)..=Duration::from_millis(440)).contains(&took),
        "400 kB at 8 mbit/s took {took:?}, not 400 ms"
    );
}

#[test]
fn after_kill_9_the_rules_let_packets_pass_and_the_next_start_removes_them() {
    let (a, b, c, d) = (addr(12), addr(13), addr(14), addr(15));
    let (injector, attached) = net_between(a, b, &["--delay", "200ms"]);
    let chain = attached["chain"].as_str().unwrap().to_owned();
    kill_process(Pid::from_raw(injector.pid() as i32).unwrap(), Signal::KILL).unwrap();
    let (status, _) = injector.wait().unwrap();
    assert!(!status.success());
    assert!(!our_rules(&chain).is_empty(), "kill -9 cannot remove rules");
    let round_trip = udp_round_trip(a, b, 10);
    assert!(
        ms(round_trip) < 50.0,
        "with the injector gone its rules must let packets pass: {round_trip:?}"
    );
    let (next, attached) = net_between(c, d, &["--delay", "1ms"]);
    assert_eq!(our_rules(&chain), Vec::<String>::new());
    assert_ne!(attached["chain"], chain);
    restore(next);
    assert_eq!(our_rules(&chain), Vec::<String>::new());
}

#[test]
fn bad_input_is_refused_with_the_reason_and_nothing_is_installed() {
    let pair = ["--between", "127.0.2.20", "--and", "127.0.2.21"];
    for (extra, says) in [
        (vec!["--delay", "61s"], "over 60 s"),
        (vec!["--rate", "0mbit"], "would stop the link"),
        (vec!["--loss", "101%"], "percentage from 0 to 100"),
        (vec!["--duplicate=-3"], "percentage from 0 to 100"),
        (vec!["--jitter", "5ms"], "--jitter needs --delay"),
        (vec!["--reorder", "5%"], "--reorder needs --delay"),
        (vec![], "nothing to do"),
    ] {
        let output = Command::new(INJECTOR)
            .args(["net"])
            .args(pair)
            .args(&extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
    let output = Command::new(INJECTOR)
        .args(["net", "--between", "192.0.2.1", "--and", "127.0.2.21"])
        .args(["--delay", "10ms"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("192.0.2.1 is not an address of this host"),
        "{stderr}"
    );
    let output = Command::new(INJECTOR)
        .args(["net", "--between", "127.0.2.300", "--and", "127.0.2.21"])
        .args(["--delay", "10ms"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not an endpoint"));
    assert!(
        !leftover_rules()
            .iter()
            .any(|rule| rule.contains("127.0.2.20/32") || rule.contains("127.0.2.21/32")),
        "{:?}",
        leftover_rules()
    );
}

#[test]
fn ctl_changes_a_running_net_from_the_next_packet_on() {
    let (a, b) = (addr(22), addr(23));
    let before = udp_round_trip(a, b, 10);
    let (mut injector, attached) = net_between(a, b, &["--one-way", "--delay", "10ms"]);
    let pid = attached["pid"].as_u64().unwrap() as u32;
    let first = ms(udp_round_trip(a, b, 10)) - ms(before);
    assert!(
        (5.0..=15.0).contains(&first),
        "added {first:.2} ms, not 10 ± 5"
    );

    let (code, answer, stderr) = ctl(pid, &["set", "--delay", "40ms"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(answer["impairment"]["delay"], 40.0, "{answer}");
    let changed: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    assert_eq!(changed["event"], "changed");
    let second = ms(udp_round_trip(a, b, 10)) - ms(before);
    assert!(
        (35.0..=45.0).contains(&second),
        "added {second:.2} ms, not 40 ± 5"
    );

    // Refused before it reaches the injector, and nothing changes.
    let (code, _, stderr) = ctl(pid, &["set", "--jitter", "5ms"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--jitter needs --delay"), "{stderr}");
    let (code, answer, _) = ctl(pid, &["list"]);
    assert_eq!(code, Some(0));
    assert_eq!(answer["impairment"]["delay"], 40.0, "{answer}");
    assert!(
        answer["packets"]["delayed"].as_u64().unwrap() >= 20,
        "{answer}"
    );

    // Duplication needs whole copies of packets, which the queue starts taking now.
    let (code, _, stderr) = ctl(pid, &["set", "--duplicate", "50%"]);
    assert_eq!(code, Some(0), "{stderr}");
    injector.read_line().unwrap();
    let (arrived, _) = numbered_datagrams(
        a,
        b,
        400,
        512,
        Duration::from_micros(200),
        Duration::from_millis(300),
    );
    let copies = arrived.len() - 400;
    assert!(
        (140..=260).contains(&copies),
        "{copies} copies of 400 at 50%"
    );
    restore(injector);
}
