//! `injector partition` on real TCP and UDP traffic over loopback, through each hook: TCX and
//! cgroup_skb at the cgroup v2 root. Each scenario uses its own loopback addresses, and each hook
//! its own range (127.0.0.N for TCX, 127.0.1.N for cgroup_skb), because a partition applies to
//! the whole interface (TCX) or machine (cgroup_skb).
mod common;

use std::process::Command;

use common::INJECTOR;
use process_guard::Spawned;
use rustix::process::Signal;
use serde_json::Value;

const PEER: &str = env!("CARGO_BIN_EXE_net-peer");

fn peer(args: &[&str]) -> Spawned {
    Spawned::start("net-peer", Command::new(PEER).args(args)).unwrap()
}

/// One hook and the loopback range its tests use.
#[derive(Clone, Copy)]
struct Net {
    hook: &'static str,
    third_octet: u8,
}

const TCX: Net = Net {
    hook: "tcx",
    third_octet: 0,
};
const CGROUP_SKB: Net = Net {
    hook: "cgroup-skb",
    third_octet: 1,
};

impl Net {
    /// 127.0.X.`last` in this hook's range.
    fn addr(self, last: u8) -> String {
        format!("127.0.{}.{last}", self.third_octet)
    }

    /// Whether this kernel has the hook; if not, says the test is skipped and why, after
    /// checking that asking for it fails cleanly and names the way out.
    fn available(self) -> bool {
        let mechanism = common::probed(match self.hook {
            "tcx" => "tc classifier via TCX",
            _ => "cgroup_skb",
        });
        if mechanism["works"] == true {
            return true;
        }
        let output = Command::new(INJECTOR)
            .args(["partition", "--hook", self.hook, "--between", "127.0.0.1"])
            .args(["--and", "127.0.0.2", "--duration", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("attaching the partition"), "{stderr}");
        // Past the test harness's capture, so the log of a passing run says it too.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: this kernel refuses the {} hook ({}); checked that asking for it fails",
            self.hook,
            mechanism["detail"]
        );
        false
    }

    fn partition(self, args: &[&str]) -> Spawned {
        let mut injector = Spawned::start(
            "injector",
            Command::new(INJECTOR)
                .args(["partition", "--json", "--hook", self.hook])
                .args(args),
        )
        .unwrap();
        let attached: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
        assert_eq!(attached["event"], "attached");
        assert_eq!(attached["hook"], self.hook);
        injector
    }
}

/// Runs a scenario once per hook, each as a test of its own.
macro_rules! through_each_hook {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn tcx() {
                    if super::TCX.available() {
                        super::$scenario(super::TCX);
                    }
                }

                #[test]
                fn cgroup_skb() {
                    if super::CGROUP_SKB.available() {
                        super::$scenario(super::CGROUP_SKB);
                    }
                }
            }
        )*
    };
}

through_each_hook!(
    a_partition_stalls_a_tcp_ping_pong_and_healing_restores_it,
    a_one_way_partition_drops_one_direction_only,
    loss_drops_about_the_percentage_asked,
    a_port_names_one_endpoint,
    a_partition_between_pids_cuts_their_connection_and_nobody_elses,
    killing_the_injector_heals_the_partition,
);

/// Heals by stopping the injector the way a user does (SIGTERM), and checks it says so.
fn heal(mut injector: Spawned) {
    common::signal(injector.pid(), Signal::TERM);
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

fn a_partition_stalls_a_tcp_ping_pong_and_healing_restores_it(net: Net) {
    let (_server, mut client) = tcp_pair(&net.addr(11), &net.addr(12));
    let (_bystander_server, mut bystander) = tcp_pair(&net.addr(13), &net.addr(14));
    assert!(ping(&mut client, 20_000).starts_with("pong"));

    let injector = net.partition(&["--between", &net.addr(11), "--and", &net.addr(12)]);
    assert!(
        ping(&mut client, 500).starts_with("timeout"),
        "the partition cuts the pair"
    );
    assert!(
        ping(&mut bystander, 20_000).starts_with("pong"),
        "other addresses are untouched"
    );
    heal(injector);
    // TCP retransmits what was dropped; the answer comes once its backoff timer fires.
    assert!(
        ping(&mut client, 30_000).starts_with("pong"),
        "healing restores the connection"
    );
}

/// Datagrams that arrive of `count` sent. The counter stops only once the sender is done (its
/// stdin closed then), not after a fixed quiet time that a slow start of the sender could
/// outlast (a loaded VM once counted 0 of 2000 so).
fn udp_received(from: &str, to: &str, count: u32) -> u64 {
    let mut counter = peer(&[
        "udp-count",
        "--listen",
        &format!("{to}:0"),
        "--idle-ms",
        "200",
        "--until-stdin-closes",
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
    counter.close_stdin();
    let received = counter.read_line().unwrap();
    counter.finish().unwrap();
    received.strip_prefix("received ").unwrap().parse().unwrap()
}

fn a_one_way_partition_drops_one_direction_only(net: Net) {
    let (a, b) = (net.addr(21), net.addr(22));
    let injector = net.partition(&["--between", &a, "--and", &b, "--one-way"]);
    assert_eq!(udp_received(&a, &b, 100), 0);
    assert_eq!(udp_received(&b, &a, 100), 100);
    heal(injector);
    assert_eq!(udp_received(&a, &b, 100), 100);
}

/// The programs hang on links this process owns: even kill -9 detaches them.
fn killing_the_injector_heals_the_partition(net: Net) {
    let (a, b) = (net.addr(61), net.addr(62));
    let injector = net.partition(&["--between", &a, "--and", &b]);
    assert_eq!(udp_received(&a, &b, 100), 0);
    common::signal(injector.pid(), Signal::KILL);
    let _ = injector.wait();
    assert_eq!(udp_received(&a, &b, 100), 100);
}

fn loss_drops_about_the_percentage_asked(net: Net) {
    let (a, b) = (net.addr(31), net.addr(32));
    let injector = net.partition(&["--between", &a, "--and", &b, "--loss", "30%"]);
    let received = udp_received(&a, &b, 2000);
    heal(injector);
    // 30% of 2000 lost: 1400 expected; 5 standard deviations is about +-100.
    assert!(
        (1300..=1500).contains(&received),
        "received {received} of 2000"
    );
}

fn a_port_names_one_endpoint(net: Net) {
    let listen = format!("{}:0", net.addr(41));
    let mut counter = peer(&[
        "udp-count",
        "--listen",
        &listen,
        "--idle-ms",
        "200",
        "--until-stdin-closes",
    ]);
    let address = counter
        .read_line()
        .unwrap()
        .strip_prefix("listening ")
        .unwrap()
        .to_owned();
    let injector = net.partition(&["--between", &net.addr(42), "--and", &address]);
    let mut sender = peer(&[
        "udp-send",
        "--from",
        &net.addr(42),
        "--to",
        &address,
        "--count",
        "50",
    ]);
    sender.read_line().unwrap();
    sender.finish().unwrap();
    counter.close_stdin();
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

fn a_partition_between_pids_cuts_their_connection_and_nobody_elses(net: Net) {
    // Both pairs on one address, so only the processes' own ports tell them apart.
    let (server, mut client) = tcp_pair(&net.addr(51), &net.addr(51));
    let (_bystander_server, mut bystander) = tcp_pair(&net.addr(51), &net.addr(51));
    assert!(ping(&mut client, 20_000).starts_with("pong"));

    let injector = net.partition(&[
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
        ping(&mut bystander, 20_000).starts_with("pong"),
        "other processes on the same address are untouched"
    );
    heal(injector);
    assert!(
        ping(&mut client, 30_000).starts_with("pong"),
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
        stderr.contains(&format!("--between {me} names no IPv4 TCP or UDP endpoint")),
        "{stderr}"
    );
}

#[test]
fn an_interface_that_does_not_exist_is_refused_not_replaced() {
    let output = Command::new(INJECTOR)
        .args(["partition", "--between", "127.0.0.1", "--and", "127.0.0.2"])
        .args(["--interface", "nosuch0", "--duration", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no network interface named `nosuch0`"),
        "{stderr}"
    );
}
