//! Network peers with known traffic, for testing partitions: a TCP echo server and a client that
//! pings on command, a UDP counter and a UDP sender. Prints what it saw on stdout.
use std::{
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "TCP/UDP peers for testing network partitions.")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Prints `listening ADDR`, then answers each `ping N` line with `pong N`.
    TcpServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Connects from --from (address) to --to; for each stdin line `send MS`, sends `ping N`
    /// and prints `pong N` if the answer comes within MS milliseconds, else `timeout N`.
    TcpClient {
        #[arg(long)]
        from: std::net::IpAddr,
        #[arg(long)]
        to: SocketAddr,
    },
    /// Prints `listening ADDR`, counts datagrams until none came for --idle-ms, prints
    /// `received N`. With --until-stdin-closes the idle time counts only from when stdin
    /// closes (the caller's sign that every sender is done), so a slow start of the sender
    /// never ends the count early.
    UdpCount {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 500)]
        idle_ms: u64,
        #[arg(long)]
        until_stdin_closes: bool,
    },
    /// Sends --count datagrams from --from to --to, then prints `sent N`.
    UdpSend {
        #[arg(long)]
        from: std::net::IpAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u64,
        /// connect() to --to first and send without an address (send, not sendto's address).
        #[arg(long)]
        connect: bool,
    },
}

fn say(line: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().mode {
        Mode::TcpServer { listen } => {
            let listener = TcpListener::bind(listen)?;
            say(&format!("listening {}", listener.local_addr()?))?;
            let (stream, _) = listener.accept()?;
            let mut writer = stream.try_clone()?;
            for line in BufReader::new(stream).lines() {
                let line = line?;
                if let Some(n) = line.strip_prefix("ping ") {
                    // One write, one segment: a test can count the calls.
                    writer.write_all(format!("pong {n}\n").as_bytes())?;
                }
            }
            Ok(())
        }
        Mode::TcpClient { from, to } => {
            let stream = connect_from(from, to)?;
            say("connected")?;
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            let mut sequence = 0u64;
            for command in io::stdin().lock().lines() {
                let command = command?;
                let Some(ms) = command.strip_prefix("send ") else {
                    continue;
                };
                let timeout = Duration::from_millis(ms.parse()?);
                sequence += 1;
                writer.write_all(format!("ping {sequence}\n").as_bytes())?;
                let deadline = Instant::now() + timeout;
                let answer = loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break format!("timeout {sequence}");
                    }
                    reader.get_ref().set_read_timeout(Some(left))?;
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        // Answers to earlier pings that timed out arrive late: skip them.
                        Ok(_) if line.trim() == format!("pong {sequence}") => {
                            break line.trim().to_owned();
                        }
                        Ok(0) => break "closed".to_owned(),
                        Ok(_) => continue,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            break format!("timeout {sequence}");
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                say(&answer)?;
            }
            Ok(())
        }
        Mode::UdpCount {
            listen,
            idle_ms,
            until_stdin_closes,
        } => {
            let socket = UdpSocket::bind(listen)?;
            grow_receive_buffer(&socket);
            say(&format!("listening {}", socket.local_addr()?))?;
            let idle = Duration::from_millis(idle_ms);
            let mut received = 0u64;
            let mut buffer = [0u8; 2048];
            if until_stdin_closes {
                let (closed_tx, closed) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
                    let _ = closed_tx.send(());
                });
                // Keep reading meanwhile, so a burst never overflows the socket's buffer.
                socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                while closed.try_recv().is_err() {
                    if socket.recv(&mut buffer).is_ok() {
                        received += 1;
                    }
                }
            }
            socket.set_read_timeout(Some(idle))?;
            while socket.recv(&mut buffer).is_ok() {
                received += 1;
            }
            say(&format!("received {received}"))
        }
        Mode::UdpSend {
            from,
            to,
            count,
            connect,
        } => {
            let socket = UdpSocket::bind(SocketAddr::new(from, 0))?;
            if connect {
                socket.connect(to)?;
            }
            for n in 0..count {
                let datagram = format!("datagram {n}");
                if connect {
                    socket.send(datagram.as_bytes())?;
                } else {
                    socket.send_to(datagram.as_bytes(), to)?;
                }
            }
            say(&format!("sent {count}"))
        }
    }
}

/// A TCP connection from address `from` (any port), so its packets carry that source address.
fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, connect, socket_with};
    let (std::net::IpAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        anyhow::bail!("IPv4 only")
    };
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socket")?;
    bind(&fd, &std::net::SocketAddrV4::new(from, 0)).with_context(|| format!("bind {from}"))?;
    connect(&fd, &to).with_context(|| format!("connect {to}"))?;
    Ok(TcpStream::from(fd))
}

/// Room for every datagram of a burst, so only the partition drops them.
fn grow_receive_buffer(socket: &UdpSocket) {
    // SO_RCVBUFFORCE needs root; without it the default buffer stays (the tests run as root).
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, 16 << 20);
}
