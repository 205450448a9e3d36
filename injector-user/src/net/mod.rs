//! `injector net`: a slow, lossy, duplicating or reordering link between sets of endpoints,
//! on any kernel with NFQUEUE (this CI kernel has no netem): iptables rules hand the link's
//! packets to a queue this process holds, and a thread gives each packet its verdict at its
//! moment. Pairs not named never reach the queue.
pub mod engine;
pub mod impairment;
pub mod iptables;
pub mod nfqueue;
pub mod schedule;

use std::net::{Ipv4Addr, UdpSocket};

use thiserror::Error;

use crate::partition::Endpoint;
use engine::{Engine, Stats};
use impairment::Impairment;
use iptables::{Firewall, Tool};
use nfqueue::QueueSocket;

/// The mark of the copies we send ourselves, so our own rules let them pass.
pub const DUPLICATE_MARK: u32 = 0xfa17_0001;

/// Queue numbers tried, from the first; another process may hold one.
const QUEUES: std::ops::Range<u16> = 47000..47064;

/// Packets held at once; beyond this the kernel drops new ones (as netem's limit does).
const MAX_HELD: u32 = 200_000;

#[derive(Debug, Error)]
pub enum NetError {
    #[error("`{0}` is not a duration: write one like 50ms, 1.5s or 0.05 (seconds)")]
    BadDuration(String),
    #[error(
        "{option} {value} is over 60 s: a longer wait is a cut, which `injector partition` makes"
    )]
    DelayTooLong { option: &'static str, value: String },
    #[error("`{0}` is not a percentage from 0 to 100 (as in 5% or 0.5)")]
    BadPercent(String),
    #[error("`{0}` is not a rate: write one like 1mbit, 500kbit or 2mbps (bytes)")]
    BadRate(String),
    #[error("a rate of {0} would stop the link; to cut it, use `injector partition`")]
    ZeroRate(String),
    #[error("{option} needs --delay: {reason}")]
    Needs {
        option: &'static str,
        reason: &'static str,
    },
    #[error("nothing to do: name at least one of --delay, --loss, --duplicate, --reorder, --rate")]
    NothingAsked,
    #[error(
        "{0} is not an address of this host (see `ip -br addr`): the injector only sees packets \
         this host sends or receives"
    )]
    NotLocal(Ipv4Addr),
    #[error(
        "no working iptables ({0}); install Debian's `iptables` package (the kernel needs the \
         NFQUEUE target, CONFIG_NETFILTER_XT_TARGET_NFQUEUE)"
    )]
    NoIptables(String),
    #[error("{command} refused the rules: {reason}\n{script}")]
    Iptables {
        command: String,
        reason: String,
        script: String,
    },
    #[error(
        "cannot hold a netfilter queue: {0} (needs root, and a kernel with NFQUEUE, \
         CONFIG_NETFILTER_NETLINK_QUEUE)"
    )]
    Queue(#[source] std::io::Error),
    #[error("every netfilter queue from {} to {} is held by another process", QUEUES.start, QUEUES.end - 1)]
    NoFreeQueue,
}

/// Packets from `from` to `to` (one direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMatch {
    pub from: Endpoint,
    pub to: Endpoint,
}

/// Every pair of `from` and `to`, both ways unless `one_way`.
pub fn links(from: &[Endpoint], to: &[Endpoint], one_way: bool) -> Vec<PacketMatch> {
    let mut links = Vec::new();
    for a in from {
        for b in to {
            links.push(PacketMatch { from: *a, to: *b });
            if !one_way {
                links.push(PacketMatch { from: *b, to: *a });
            }
        }
    }
    links
}

/// Refuses an address no interface of this host has: no packet of it would ever pass here.
pub fn check_local(endpoint: &Endpoint) -> Result<(), NetError> {
    match UdpSocket::bind((endpoint.addr, 0)) {
        Ok(_) => Ok(()),
        Err(_) => Err(NetError::NotLocal(endpoint.addr)),
    }
}

/// The impaired links, in force until dropped. The rules go first, so no new packet is queued
/// while the engine lets the held ones go.
pub struct NetFault {
    firewall: Firewall,
    engine: Engine,
    pub tool: Tool,
    pub queue: u16,
    /// Chains of dead injectors removed before starting.
    pub swept: Vec<String>,
}

impl NetFault {
    pub fn start(
        links: &[PacketMatch],
        impairment: Impairment,
        seed: u64,
    ) -> Result<NetFault, NetError> {
        impairment.validate()?;
        for link in links {
            check_local(&link.from)?;
            check_local(&link.to)?;
        }
        let tool = iptables::find_tool()?;
        let swept = iptables::sweep_leftovers(tool)?;
        let socket = bind_free_queue()?;
        let queue = socket.queue();
        let engine = Engine::start(socket, impairment, seed).map_err(NetError::Queue)?;
        let firewall = Firewall::install(tool, queue, links)?;
        Ok(NetFault {
            firewall,
            engine,
            tool,
            queue,
            swept,
        })
    }

    pub fn update(&mut self, links: &[PacketMatch]) -> Result<(), NetError> {
        self.firewall.update(links)
    }

    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// Changes what is done to packets from now on; held packets keep their moment.
    pub fn set(&self, impairment: Impairment) -> Result<(), NetError> {
        impairment.validate()?;
        self.engine.set(impairment).map_err(NetError::Queue)
    }

    /// Whether the packet thread stopped on its own; `stop` then says why.
    pub fn has_failed(&self) -> bool {
        self.engine.has_failed()
    }

    pub fn chain(&self) -> &str {
        self.firewall.chain()
    }

    /// Removes the rules, then lets every held packet go; the engine's error, if it had one.
    pub fn stop(self) -> Result<Stats, NetError> {
        let NetFault {
            firewall,
            mut engine,
            ..
        } = self;
        drop(firewall);
        engine.stop().map_err(NetError::Queue)?;
        Ok(engine.stats())
    }
}

fn bind_free_queue() -> Result<QueueSocket, NetError> {
    // The kernel answers EPERM both for a queue another process holds and for a caller
    // without CAP_NET_ADMIN.
    let mut refusal = None;
    for queue in QUEUES {
        match QueueSocket::bind(queue, false, MAX_HELD) {
            Ok(socket) => return Ok(socket),
            Err(error) if error.raw_os_error() == Some(libc::EPERM) => refusal = Some(error),
            Err(error) => return Err(NetError::Queue(error)),
        }
    }
    match refusal {
        Some(error) if !rustix::process::geteuid().is_root() => Err(NetError::Queue(error)),
        _ => Err(NetError::NoFreeQueue),
    }
}

/// For `injector probe`: whether a queue can be held and which iptables would install rules.
pub fn probe() -> Result<Tool, String> {
    let tool = iptables::find_tool().map_err(|error| error.to_string())?;
    bind_free_queue().map_err(|error| error.to_string())?;
    Ok(tool)
}
