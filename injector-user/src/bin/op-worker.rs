//! A process that makes one named syscall per line read on stdin and answers `ok` or the errno's
//! name, so a test can check exactly which of a target's calls an injector failed.
//!
//! Set-up, before `ready`: a file DIR/data (opened read-write), DIR/a (renamed to DIR/b and back
//! by `rename`), a connected UDP socket and a TCP listener on 127.0.0.1. Ops: write, pwrite64,
//! pread64, openat, fsync, ftruncate, rename, unlinkat, mkdir, sendto, sendmsg, connect.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::fs::FileExt,
    path::PathBuf,
};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Make one named syscall per stdin line and print its result, for testing the injector."
)]
struct Args {
    /// Directory for the worker's files (must exist).
    #[arg(long)]
    dir: PathBuf,
}

struct Worker {
    dir: PathBuf,
    data: File,
    renamed: bool,
    udp: UdpSocket,
    _peer: UdpSocket,
    listener: TcpListener,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(args.dir.join("data"))
        .with_context(|| format!("creating {}", args.dir.join("data").display()))?;
    fs::write(args.dir.join("a"), "a")?;
    let peer = UdpSocket::bind("127.0.0.1:0")?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    udp.connect(peer.local_addr()?)?;
    let mut worker = Worker {
        dir: args.dir,
        data,
        renamed: false,
        udp,
        _peer: peer,
        listener: TcpListener::bind("127.0.0.1:0")?,
    };
    say("ready")?;
    for line in io::stdin().lock().lines() {
        let op = line?;
        let answer = match worker.run(op.trim()) {
            Ok(()) => "ok".to_owned(),
            Err(error) => name_of(&error),
        };
        say(&answer)?;
    }
    Ok(())
}

impl Worker {
    fn run(&mut self, op: &str) -> io::Result<()> {
        match op {
            "write" => (&self.data).write(b"x").map(drop),
            "pwrite64" => self.data.write_at(b"y", 0).map(drop),
            "pread64" => self.data.read_at(&mut [0; 1], 0).map(drop),
            "openat" => File::open(self.dir.join("data")).map(drop),
            "fsync" => self.data.sync_all(),
            "ftruncate" => self.data.set_len(0),
            "rename" => {
                let (from, to) = if self.renamed { ("b", "a") } else { ("a", "b") };
                fs::rename(self.dir.join(from), self.dir.join(to))?;
                self.renamed = !self.renamed;
                Ok(())
            }
            "mkdir" => fs::create_dir(self.dir.join("sub")),
            // std's remove_dir is unlinkat(AT_REMOVEDIR).
            "unlinkat" => fs::remove_dir(self.dir.join("sub")),
            "sendto" => self.udp.send(b"x").map(drop),
            "sendmsg" => sendmsg(&self.udp),
            "connect" => TcpStream::connect(self.listener.local_addr()?).map(drop),
            other => Err(io::Error::other(format!("unknown op `{other}`"))),
        }
    }
}

fn sendmsg(socket: &UdpSocket) -> io::Result<()> {
    let byte = [b'm'];
    rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(&byte)],
        &mut rustix::net::SendAncillaryBuffer::default(),
        rustix::net::SendFlags::empty(),
    )?;
    Ok(())
}

fn name_of(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => fault_rules::errno_name(code)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("errno{code}")),
        None => error.to_string(),
    }
}

fn say(line: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
