//! `injector net`'s netem path, on kernels with netem: the stock Debian kernels of
//! `cargo xtask vm-tests` (this CI kernel has none, so here each test checks that asking for
//! netem is refused with the reason and nothing is installed, and says it skipped). Inside the
//! VMs (FAULTLINE_VM set) a kernel without netem is a failure. Real TCP and UDP round trips over
//! loopback, addresses 127.0.2.50-69; one test at a time, as one injector holds netem on lo.
mod common;

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use common::{
    INJECTOR,
    traffic::{
        Received, ctl, ms, net, net_between, restore, send_400_kilobytes, send_2000_numbered,
        tcp_round_trip, udp_round_trip,
    },
    wait_until,
};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2, last)
}

/// What `injector probe` says `injector net` gets on this kernel.
fn probed_mechanism() -> String {
    common::probe()["net_mechanism"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Whether this kernel has netem; without it, checks that asking for it is refused and that
/// nothing is installed, and says the test skipped.
fn kernel_has_netem(test: &str) -> bool {
    if probed_mechanism() == "netem" {
        return true;
    }
    assert!(
        std::env::var_os("FAULTLINE_VM").is_none(),
        "the VM's kernel must have netem (sch_netem, sch_prio and cls_u32 are loaded at boot)"
    );
    let output = Command::new(INJECTOR)
        .args(["net", "--mechanism", "netem", "--between"])
        .args([addr(68).to_string(), "--and".into(), addr(69).to_string()])
        .args(["--delay", "10ms"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("this kernel has no netem"), "{stderr}");
    assert!(!our_qdisc_is_on_lo());
    println!("{test} ... SKIPPED: this kernel has no netem; checked that asking for it fails");
    false
}

/// A netem test's start: one at a time, and only on a kernel with netem (else it checks the
/// refusal and says it skipped).
fn netem_test(name: &str) -> Option<MutexGuard<'static, ()>> {
    let one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    kernel_has_netem(name).then_some(one)
}

/// Whether lo carries the injector's root qdisc.
fn our_qdisc_is_on_lo() -> bool {
    let output = Command::new("/usr/sbin/tc")
        .args(["qdisc", "show", "dev", "lo"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).contains("fa17:")
}

#[test]
fn auto_picks_what_probe_names_and_nothing_remains_after() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let expected = probed_mechanism();
    let (a, b) = (addr(50), addr(51));
    let (injector, attached) = net_between("auto", a, b, &["--delay", "5ms"]);
    assert_eq!(attached["mechanism"], expected.as_str(), "{attached}");
    assert_eq!(our_qdisc_is_on_lo(), expected == "netem");
    restore(injector);
    assert!(!our_qdisc_is_on_lo());
}

/// How far a loopback round trip strays inside the VMs: TCG emulation makes one take from
/// 0.1 ms to several ms (a first TCP round trip measured 6 ms, the next ones 0.1). The host's
/// NFQUEUE tests hold the issue's ±5 ms; here the point is that netem is the mechanism and
/// delays what was named, only that.
const EMULATION_SLACK_MS: f64 = 10.0;

#[test]
fn netem_delays_the_named_pair_only() {
    let Some(_one) = netem_test("netem_delays_the_named_pair_only") else {
        return;
    };
    let (a, b, c, d) = (addr(52), addr(53), addr(54), addr(55));
    let measure = || {
        [
            udp_round_trip(a, b, 20),
            tcp_round_trip(a, b, 20),
            udp_round_trip(c, d, 20),
            tcp_round_trip(c, d, 20),
        ]
    };
    let before = measure();
    let (injector, attached) = net_between("netem", a, b, &["--delay", "50ms"]);
    assert_eq!(attached["device"], "lo", "{attached}");
    let during = measure();
    let restored = restore(injector);
    let after = measure();
    let said = format!("before {before:?}, with netem {during:?}, after {after:?}");
    for (index, what) in ["UDP", "TCP"].into_iter().enumerate() {
        let baseline = ms(before[index].min(after[index]));
        let added = ms(during[index]) - baseline;
        assert!(
            (100.0 - EMULATION_SLACK_MS..=100.0 + EMULATION_SLACK_MS).contains(&added),
            "{what}: added {added:.2} ms, not 100 (2 x 50 ms); {said}"
        );
        let other = ms(during[index + 2]) - ms(before[index + 2].min(after[index + 2]));
        assert!(
            other < EMULATION_SLACK_MS,
            "{what} between two other addresses: {other:.2} ms slower; {said}"
        );
        assert!(
            ms(after[index]) < EMULATION_SLACK_MS,
            "{what} still slow after restoring; {said}"
        );
    }
    // 20 UDP and 20 TCP round trips, both ways, went through netem.
    assert!(
        restored["packets"]["sent"].as_u64().unwrap() >= 80,
        "{restored}"
    );
    assert!(!our_qdisc_is_on_lo());
}

#[test]
fn netem_one_way_loss_and_duplication_are_what_the_receiver_sees() {
    let Some(_one) = netem_test("netem_one_way_loss_and_duplication_are_what_the_receiver_sees")
    else {
        return;
    };
    let (a, b) = (addr(56), addr(57));
    let before = udp_round_trip(a, b, 20);
    let (injector, _) = net_between("netem", a, b, &["--one-way", "--delay", "30ms"]);
    let during = udp_round_trip(a, b, 20);
    let added = ms(during) - ms(before);
    assert!(
        (30.0 - EMULATION_SLACK_MS..=30.0 + EMULATION_SLACK_MS).contains(&added),
        "one way: added {added:.2} ms, not 30 ({before:?} before, {during:?} with netem)"
    );
    let pid = injector.pid();
    let (code, _, stderr) = ctl(
        pid,
        &[
            "set",
            "--delay",
            "5ms",
            "--loss",
            "20%",
            "--duplicate",
            "10%",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let mut injector = injector;
    let changed: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    assert_eq!(changed["event"], "changed", "{changed}");
    let Received {
        sent,
        passed,
        lost,
        copies,
        ..
    } = send_2000_numbered(a, b);
    let restored = restore(injector);
    let share = Received::share;
    assert!(
        (15.0..=25.0).contains(&share(lost, sent)),
        "lost {lost} of {sent}"
    );
    assert!(
        (6.0..=14.0).contains(&share(copies, passed)),
        "{copies} copies"
    );
    // netem counts its drops: the lost datagrams (and the 20 pings' replies are not named).
    assert!(
        restored["packets"]["dropped"].as_u64().unwrap() >= lost,
        "{restored}"
    );
}

#[test]
fn netem_rate_limits_the_link() {
    let Some(_one) = netem_test("netem_rate_limits_the_link") else {
        return;
    };
    let (a, b) = (addr(58), addr(59));
    let (injector, _) = net_between("netem", a, b, &["--rate", "8mbit"]);
    // netem also counts lo's 14-byte link header: 406 ms.
    let took = send_400_kilobytes(a, b);
    restore(injector);
    assert!(
        (Duration::from_millis(360)..=Duration::from_millis(450)).contains(&took),
        "400 kB at 8 mbit/s took {took:?}, not about 400 ms"
    );
}

#[test]
fn after_kill_9_the_guardian_removes_netem() {
    let Some(_one) = netem_test("after_kill_9_the_guardian_removes_netem") else {
        return;
    };
    let (a, b) = (addr(60), addr(61));
    let (injector, _) = net_between("netem", a, b, &["--delay", "200ms"]);
    assert!(our_qdisc_is_on_lo());
    kill_process(Pid::from_raw(injector.pid() as i32).unwrap(), Signal::KILL).unwrap();
    let (status, _) = injector.wait().unwrap();
    assert!(!status.success());
    wait_until(
        "the guardian removed netem from lo",
        Duration::from_secs(30),
        || !our_qdisc_is_on_lo(),
    );
    let round_trip = udp_round_trip(a, b, 10);
    assert!(ms(round_trip) < 50.0, "still delayed: {round_trip:?}");
    // And lo is free for the next one.
    let (next, attached) = net(
        "netem",
        &[
            "--between",
            "127.0.2.62",
            "--and",
            "127.0.2.63",
            "--delay",
            "1ms",
        ],
    );
    assert_eq!(attached["mechanism"], "netem", "{attached}");
    restore(next);
    assert!(!our_qdisc_is_on_lo());
}
