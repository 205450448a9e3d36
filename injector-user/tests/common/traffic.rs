//! Traffic with known timing for `injector net`'s tests: round trips over real TCP and UDP on
//! loopback, numbered datagrams, and the injector driven over its JSON lines.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use process_guard::Spawned;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use super::INJECTOR;

/// Starts `injector net --json --mechanism MECHANISM ARGS` and returns once it says the fault is in force.
pub fn net(mechanism: &str, args: &[&str]) -> (Spawned, Value) {
    let mut injector = Spawned::start(
        "injector",
        Command::new(INJECTOR)
            .args(["net", "--json", "--mechanism", mechanism])
            .args(args),
    )
    .unwrap();
    let line = injector.read_line().unwrap();
    let attached: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
    assert_eq!(attached["event"], "attached", "{attached}");
    (injector, attached)
}

/// `injector net --between FROM --and TO ARGS`, once in force.
pub fn net_between(
    mechanism: &str,
    from: Ipv4Addr,
    to: Ipv4Addr,
    args: &[&str],
) -> (Spawned, Value) {
    let (from, to) = (from.to_string(), to.to_string());
    let mut all = vec!["--between", &from, "--and", &to];
    all.extend_from_slice(args);
    net(mechanism, &all)
}

/// Stops it as a user does (SIGTERM) and returns its `restored` event.
pub fn restore(mut injector: Spawned) -> Value {
    kill_process(Pid::from_raw(injector.pid() as i32).unwrap(), Signal::TERM).unwrap();
    let restored: Value = serde_json::from_str(&injector.read_line().unwrap()).unwrap();
    assert_eq!(restored["event"], "restored", "{restored}");
    injector.finish().unwrap();
    restored
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Median UDP round trip from `from` to an echo on `to`, over `count` round trips.
pub fn udp_round_trip(from: Ipv4Addr, to: Ipv4Addr, count: usize) -> Duration {
    let echo = UdpSocket::bind((to, 0)).unwrap();
    let target = echo.local_addr().unwrap();
    let echo_thread = std::thread::spawn(move || {
        let mut buffer = [0; 64];
        loop {
            let (length, peer) = echo.recv_from(&mut buffer).unwrap();
            if &buffer[..length] == b"bye" {
                return;
            }
            echo.send_to(&buffer[..length], peer).unwrap();
        }
    });
    let client = UdpSocket::bind((from, 0)).unwrap();
    let mut buffer = [0; 64];
    let times = (0..count)
        .map(|_| {
            let start = Instant::now();
            client.send_to(b"ping", target).unwrap();
            client.recv_from(&mut buffer).unwrap();
            start.elapsed()
        })
        .collect();
    client.send_to(b"bye", target).unwrap();
    echo_thread.join().unwrap();
    median(times)
}

/// Median TCP round trip (one byte each way, no Nagle) over one connection.
pub fn tcp_round_trip(from: Ipv4Addr, to: Ipv4Addr, count: usize) -> Duration {
    let listener = TcpListener::bind((to, 0)).unwrap();
    let target = listener.local_addr().unwrap();
    let echo_thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        let mut byte = [0; 1];
        while stream.read(&mut byte).unwrap() == 1 {
            stream.write_all(&byte).unwrap();
        }
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&target.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    let mut byte = [0; 1];
    let times = (0..count)
        .map(|_| {
            let start = Instant::now();
            stream.write_all(b"x").unwrap();
            stream.read_exact(&mut byte).unwrap();
            start.elapsed()
        })
        .collect();
    drop(stream);
    echo_thread.join().unwrap();
    median(times)
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One-way numbered datagrams from `from` to `to`, `gap` apart; returns the sequence numbers in
/// the order they arrived (a copy arrives twice), after `quiet` without a datagram.
pub fn numbered_datagrams(
    from: Ipv4Addr,
    to: Ipv4Addr,
    count: u32,
    size: usize,
    gap: Duration,
    quiet: Duration,
) -> (Vec<u32>, Duration) {
    let receiver = UdpSocket::bind((to, 0)).unwrap();
    // Room for every datagram sent: on a busy machine this thread may not run for a while, and
    // the default buffer (about 100 datagrams of 1 KB) would drop what the link delivered.
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&receiver, 16 << 20).unwrap();
    receiver.set_read_timeout(Some(quiet)).unwrap();
    let target = receiver.local_addr().unwrap();
    let sender = UdpSocket::bind((from, 0)).unwrap();
    let sending = std::thread::spawn(move || {
        let mut payload = vec![0; size];
        for number in 0..count {
            payload[..4].copy_from_slice(&number.to_be_bytes());
            sender.send_to(&payload, target).unwrap();
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
    });
    let mut arrived = Vec::new();
    let mut buffer = vec![0; size.max(4)];
    let (mut first, mut last) = (None, Instant::now());
    while let Ok(length) = receiver.recv(&mut buffer) {
        assert_eq!(length, size);
        first.get_or_insert_with(Instant::now);
        last = Instant::now();
        arrived.push(u32::from_be_bytes(buffer[..4].try_into().unwrap()));
    }
    sending.join().unwrap();
    (arrived, last - first.unwrap_or(last))
}

pub fn ctl(pid: u32, args: &[&str]) -> (Option<i32>, Value, String) {
    let output = Command::new(INJECTOR)
        .args(["ctl", "--net", &pid.to_string()])
        .args(args)
        .output()
        .unwrap();
    let answer = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), answer, stderr)
}

/// 400 datagrams of 972 bytes (1000-byte IP packets: 1 ms each at 8 mbit/s) sent at once from
/// `from` to `to`; how long they took to arrive, all of them.
pub fn send_400_kilobytes(from: Ipv4Addr, to: Ipv4Addr) -> Duration {
    let (arrived, took) = numbered_datagrams(
        from,
        to,
        400,
        972,
        Duration::ZERO,
        Duration::from_millis(500),
    );
    assert_eq!(
        arrived.len(),
        400,
        "datagrams lost on a link with only a rate"
    );
    took
}

/// What a receiver saw of 2,000 numbered 64-byte datagrams sent 0.1 ms apart.
pub struct Received {
    pub sent: u64,
    /// Sequence numbers in the order they arrived (a copy arrives twice).
    pub arrived: Vec<u32>,
    /// Distinct datagrams that arrived.
    pub passed: u64,
    pub lost: u64,
    pub copies: u64,
}

impl Received {
    /// A count as a percentage of another.
    pub fn share(n: u64, of: u64) -> f64 {
        n as f64 / of as f64 * 100.0
    }
}

pub fn send_2000_numbered(from: Ipv4Addr, to: Ipv4Addr) -> Received {
    let sent = 2000;
    let (arrived, _) = numbered_datagrams(
        from,
        to,
        sent,
        64,
        Duration::from_micros(100),
        Duration::from_millis(500),
    );
    let mut distinct = arrived.clone();
    distinct.sort();
    distinct.dedup();
    let passed = distinct.len() as u64;
    Received {
        sent: sent.into(),
        copies: arrived.len() as u64 - passed,
        lost: u64::from(sent) - passed,
        arrived,
        passed,
    }
}
