//! The thread that holds queued packets until their moment: it reads each packet the kernel
//! queues, asks the schedule for its fate, and gives the verdict when that moment comes. On
//! stop it lets every held packet go at once, so stopping never loses what was in flight.
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rustix::{
    event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll},
    fd::OwnedFd,
    io::Errno,
};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::{
    DUPLICATE_MARK,
    impairment::Impairment,
    nfqueue::QueueSocket,
    schedule::{Fate, Schedule},
};

/// What happened to the packets so far; read while the engine runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub seen: AtomicU64,
    pub delayed: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Stats {
    pub seen: u64,
    pub delayed: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        Stats {
            seen: self.seen.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
        }
    }
}

pub struct Engine {
    /// Rung after each command is queued; the thread sleeps in poll on the queue and on it.
    doorbell: OwnedFd,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<io::Result<()>>>,
    counters: Arc<Counters>,
}

enum Command {
    Set(Impairment, mpsc::Sender<io::Result<()>>),
    Stop,
}

/// A packet the kernel holds for us, until `at`; ties go in arrival order.
struct Held {
    at: u64,
    order: u64,
    id: u32,
    bytes: Option<Vec<u8>>,
    duplicate: bool,
}

impl Held {
    fn key(&self) -> (u64, u64) {
        (self.at, self.order)
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl Engine {
    pub fn start(queue: QueueSocket, impairment: Impairment, seed: u64) -> io::Result<Engine> {
        let doorbell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let doorbell_seen = doorbell.try_clone()?;
        let (commands, commands_seen) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let mut worker = Worker {
            queue,
            schedule: Schedule::new(impairment.clone(), seed),
            duplicates: None,
            counters: counters.clone(),
            origin: Instant::now(),
            held: BinaryHeap::new(),
            order: 0,
        };
        worker.prepare_for(&impairment)?;
        let thread = std::thread::Builder::new()
            .name("net-delay".into())
            .spawn(move || worker.run(doorbell_seen, commands_seen))?;
        Ok(Engine {
            doorbell,
            commands,
            thread: Some(thread),
            counters,
        })
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Gives packets from now on this impairment (validated by the caller); returns once the
    /// thread uses it.
    pub fn set(&self, impairment: Impairment) -> io::Result<()> {
        let (reply, replied) = mpsc::channel();
        self.send(Command::Set(impairment, reply))?;
        replied
            .recv()
            .map_err(|_| io::Error::other("the packet delay thread has stopped"))?
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| io::Error::other("the packet delay thread has stopped"))?;
        rustix::io::write(&self.doorbell, &1u64.to_ne_bytes())?;
        Ok(())
    }

    /// Whether the thread has ended on its own (an error the kernel gave it): from then on
    /// the queue is closed and the rules' bypass lets every packet through untouched.
    pub fn has_failed(&self) -> bool {
        self.thread.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Lets every held packet go and waits for the thread; the error it ended with, if any.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // A thread that already ended has dropped its receiver; join says why it ended.
        let _ = self.send(Command::Stop);
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the packet delay thread panicked")))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!("stopping the packet delay thread: {error}");
        }
    }
}

/// A raw socket that sends copies; its mark lets them past our own rules, or each copy would
/// be queued and copied again.
fn duplicate_sender() -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )?;
    socket.set_mark(DUPLICATE_MARK)?;
    Ok(socket)
}

struct Worker {
    queue: QueueSocket,
    schedule: Schedule,
    duplicates: Option<Socket>,
    counters: Arc<Counters>,
    origin: Instant,
    held: BinaryHeap<Reverse<Held>>,
    order: u64,
}

impl Worker {
    fn run(mut self, doorbell: OwnedFd, commands: mpsc::Receiver<Command>) -> io::Result<()> {
        let result = self.serve(&doorbell, &commands);
        // Whatever ended the loop, nothing stays held: the kernel drops every packet still
        // queued when the socket closes. The rules are gone by now, so what was queued last,
        // read or not, goes on at once.
        let released = self.release(u64::MAX).and_then(|()| self.pass_unread());
        result.and(released)
    }

    /// Copies whole packets (and opens the socket that sends copies) only while duplicating.
    fn prepare_for(&mut self, impairment: &Impairment) -> io::Result<()> {
        let duplicating = !impairment.duplicate.is_zero();
        if duplicating && self.duplicates.is_none() {
            self.duplicates = Some(duplicate_sender()?);
        }
        if duplicating != self.queue.copies_packets() {
            self.queue.set_copy_packets(duplicating)?;
        }
        Ok(())
    }

    fn serve(&mut self, doorbell: &OwnedFd, commands: &mpsc::Receiver<Command>) -> io::Result<()> {
        loop {
            let now = self.now();
            self.release(now)?;
            let timeout = self.held.peek().map(|Reverse(next)| {
                let wait = Duration::from_nanos(next.at.saturating_sub(now));
                Timespec {
                    tv_sec: wait.as_secs() as _,
                    tv_nsec: wait.subsec_nanos() as _,
                }
            });
            let mut fds = [
                PollFd::new(&self.queue, PollFlags::IN),
                PollFd::new(doorbell, PollFlags::IN),
            ];
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
            if fds[1].revents().contains(PollFlags::IN) {
                let mut count = [0; 8];
                let _ = rustix::io::read(doorbell, &mut count);
                while let Ok(command) = commands.try_recv() {
                    match command {
                        Command::Stop => return Ok(()),
                        Command::Set(impairment, reply) => {
                            let prepared = self.prepare_for(&impairment);
                            if prepared.is_ok() {
                                self.schedule.set_impairment(impairment);
                            }
                            let _ = reply.send(prepared);
                        }
                    }
                }
            }
            for packet in self.queue.receive()? {
                self.counters.seen.fetch_add(1, Ordering::Relaxed);
                let arrived = self.now();
                match self.schedule.decide(arrived, packet.length) {
                    Fate::Drop => {
                        self.counters.lost.fetch_add(1, Ordering::Relaxed);
                        self.queue.drop_packet(packet.id)?;
                    }
                    Fate::Pass {
                        at,
                        reordered,
                        duplicate,
                    } => {
                        if reordered {
                            self.counters.reordered.fetch_add(1, Ordering::Relaxed);
                        } else if at > arrived {
                            self.counters.delayed.fetch_add(1, Ordering::Relaxed);
                        }
                        self.order += 1;
                        self.held.push(Reverse(Held {
                            at,
                            order: self.order,
                            id: packet.id,
                            // Packets queued before a switch to whole copies carry headers
                            // only: those are not copied.
                            bytes: packet
                                .bytes
                                .filter(|bytes| duplicate && bytes.len() == packet.length),
                            duplicate,
                        }));
                    }
                }
            }
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn pass_unread(&mut self) -> io::Result<()> {
        for packet in self.queue.receive()? {
            self.counters.seen.fetch_add(1, Ordering::Relaxed);
            self.queue.accept(packet.id)?;
        }
        Ok(())
    }

    /// Gives the verdict of every packet due by `now`.
    fn release(&mut self, now: u64) -> io::Result<()> {
        while self.held.peek().is_some_and(|Reverse(next)| next.at <= now) {
            let Some(Reverse(packet)) = self.held.pop() else {
                break;
            };
            self.queue.accept(packet.id)?;
            if packet.duplicate
                && let (Some(sender), Some(bytes)) = (&self.duplicates, &packet.bytes)
                && send_copy(sender, bytes).is_ok()
            {
                self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Sends an IPv4 packet as it is, header included, to its own destination.
fn send_copy(sender: &Socket, packet: &[u8]) -> io::Result<()> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return Err(io::Error::other("not an IPv4 packet"));
    }
    let destination = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    sender.send_to(packet, &SocketAddrV4::new(destination, 0).into())?;
    Ok(())
}
