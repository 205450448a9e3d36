//! `cargo xtask bench net`: how precisely `injector net --delay` holds packets. One-way UDP
//! latencies at 1,000, 10,000 and 20,000 packets/s, timed in this one process (sender and receiver
//! share a clock), with and without a one-way 50 ms delay; TCP round trips with the delay both
//! ways; and round trips between two addresses not named, while the fault is in force.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use process_guard::Spawned;

use crate::{cmd, packages};

const DELAY_MS: f64 = 50.0;
const SECONDS_PER_RATE: u64 = 2;
const ROUND_TRIPS: usize = 200;

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 3, last)
}

pub fn run(root: &Path) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "iptables and NFQUEUE need root: run `sudo -E cargo xtask bench net`"
    );
    packages::ensure(&["iptables"], "injector net")?;
    let injector = crate::bench_injector::build_release(root)?.join("injector");
    let (a, b, c, d) = (addr(2), addr(3), addr(4), addr(5));

    println!("one-way UDP latency {a} -> {b}, {SECONDS_PER_RATE} s per row (ms):");
    println!(
        "{:>9} {:>12} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "pkt/s", "fault", "received", "p50", "p99", "p50 - asked", "p99 - asked"
    );
    for rate in [1_000, 10_000, 20_000] {
        let plain = one_way_latencies(a, b, rate)?;
        print_row(rate, "none", &plain, 0.0);
        let fault = start(&injector, &[a, b], &["--one-way", "--delay", "50ms"])?;
        let delayed = one_way_latencies(a, b, rate)?;
        stop(fault)?;
        print_row(rate, "delay 50ms", &delayed, DELAY_MS);
    }

    println!(
        "\nTCP round trips, {ROUND_TRIPS} each (ms), fault: --delay 50ms between {a} and {b}:"
    );
    let before = tcp_round_trips(a, b)?;
    let fault = start(&injector, &[a, b], &["--delay", "50ms"])?;
    let during = tcp_round_trips(a, b)?;
    let bystander = tcp_round_trips(c, d)?;
    stop(fault)?;
    let bystander_before = tcp_round_trips(c, d)?;
    println!("{:<34} {:>9} {:>9}", "", "p50", "p99");
    for (what, samples) in [
        (format!("{a} <-> {b}, no fault"), &before),
        (format!("{a} <-> {b}, delay 50ms"), &during),
        (format!("{c} <-> {d}, no fault"), &bystander_before),
        (format!("{c} <-> {d}, during the fault"), &bystander),
    ] {
        println!(
            "{what:<34} {:>9.3} {:>9.3}",
            percentile(samples, 0.5),
            percentile(samples, 0.99)
        );
    }
    println!(
        "\nadded to a round trip: {:.3} ms at the median (asked: 100); between the pair not \
         named: {:+.3} ms",
        percentile(&during, 0.5) - percentile(&before, 0.5),
        percentile(&bystander, 0.5) - percentile(&bystander_before, 0.5)
    );
    Ok(())
}

fn print_row(rate: u32, fault: &str, latencies: &Latencies, asked: f64) {
    let p50 = percentile(&latencies.ms, 0.5);
    let p99 = percentile(&latencies.ms, 0.99);
    let (off50, off99) = if asked > 0.0 {
        (
            format!("{:+.3}", p50 - asked),
            format!("{:+.3}", p99 - asked),
        )
    } else {
        (String::new(), String::new())
    };
    println!(
        "{rate:>9} {fault:>12} {:>9} {p50:>9.3} {p99:>9.3} {off50:>12} {off99:>12}",
        format!("{}/{}", latencies.ms.len(), latencies.sent),
    );
}

fn start(injector: &PathBuf, pair: &[Ipv4Addr; 2], args: &[&str]) -> Result<Spawned> {
    let mut fault = Spawned::start(
        "injector net",
        Command::new(injector)
            .args(["net", "--json", "--between"])
            .arg(pair[0].to_string())
            .arg("--and")
            .arg(pair[1].to_string())
            .args(args),
    )?;
    let line = fault.read_line()?;
    ensure!(line.contains("\"attached\""), "injector net said {line}");
    Ok(fault)
}

fn stop(mut fault: Spawned) -> Result<()> {
    // The injector this function's caller started, still our unreaped child.
    if let Some(pid) = rustix::process::Pid::from_raw(fault.pid() as i32) {
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    }
    fault.read_line()?;
    fault.finish()?;
    Ok(())
}

struct Latencies {
    sent: usize,
    ms: Vec<f64>,
}

/// Datagrams from `from` to `to` at `rate` per second (sent in 1 ms bursts), each stamped
/// with its send time on this process's clock.
fn one_way_latencies(from: Ipv4Addr, to: Ipv4Addr, rate: u32) -> Result<Latencies> {
    let receiver = UdpSocket::bind((to, 0))?;
    receiver.set_read_timeout(Some(Duration::from_millis(500)))?;
    let target = receiver.local_addr()?;
    let origin = Instant::now();
    let per_ms = (rate / 1000).max(1) as usize;
    let total = per_ms * 1000 * SECONDS_PER_RATE as usize;
    let sender = UdpSocket::bind((from, 0))?;
    // A held packet still counts against its sender's buffer (as in netem's queue): at 10,000
    // packets/s, 50 ms of them overflow the default and the sender would block, which would be
    // measured as delay. The measure is the injector's, so the buffer is made large enough.
    rustix::net::sockopt::set_socket_send_buffer_size_force(&sender, 32 << 20)?;
    let sending = std::thread::spawn(move || -> std::io::Result<()> {
        let start = Instant::now();
        for burst in 0..(total / per_ms) {
            let due = start + Duration::from_millis(burst as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for _ in 0..per_ms {
                let stamp = origin.elapsed().as_nanos() as u64;
                sender.send_to(&stamp.to_be_bytes(), target)?;
            }
        }
        Ok(())
    });
    let mut ms = Vec::with_capacity(total);
    let mut buffer = [0; 8];
    while let Ok(8) = receiver.recv(&mut buffer) {
        let sent = u64::from_be_bytes(buffer);
        let now = origin.elapsed().as_nanos() as u64;
        ms.push(now.saturating_sub(sent) as f64 / 1e6);
    }
    sending
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    ensure!(!ms.is_empty(), "no datagram arrived");
    Ok(Latencies { sent: total, ms })
}

fn tcp_round_trips(from: Ipv4Addr, to: Ipv4Addr) -> Result<Vec<f64>> {
    let listener = TcpListener::bind((to, 0))?;
    let target: SocketAddr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut byte = [0; 1];
        while stream.read(&mut byte)? == 1 {
            stream.write_all(&byte)?;
        }
        Ok(())
    });
    // Bound to `from` first, so the connection runs between the two named addresses.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect(&target.into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    let mut byte = [0; 1];
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        stream.write_all(b"x")?;
        stream.read_exact(&mut byte)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    drop(stream);
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo panicked"))?
        .context("TCP echo")?;
    Ok(times)
}

fn percentile(samples: &[f64], share: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * share).round() as usize]
}
