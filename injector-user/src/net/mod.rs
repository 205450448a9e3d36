//! `injector net`: a slow, lossy, duplicating or reordering link between sets of endpoints.
//! Two mechanisms, one model: the kernel's netem where it has it (`netem.rs`), and on any
//! kernel with NFQUEUE (this CI kernel has no netem) iptables rules that hand the link's
//! packets to a queue this process holds, where a thread gives each packet its verdict at its
//! moment. Pairs not named are never delayed by either.
pub mod engine;
pub mod impairment;
pub mod iptables;
pub mod netem;
pub mod nfqueue;
pub mod schedule;

use std::{
    fmt,
    net::{Ipv4Addr, UdpSocket},
};

use serde::Serialize;
use thiserror::Error;

use crate::partition::Endpoint;
use engine::{Engine, Stats};
use impairment::Impairment;
use iptables::{Firewall, Tool};
use netem::{Netem, NetemStats};
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
    #[error("--mechanism netem: {0}; use --mechanism nfqueue (or auto), which needs no netem")]
    NoNetem(String),
    #[error(
        "another running injector holds netem on {}; stop it, or use --mechanism nfqueue",
        netem::DEVICE
    )]
    NetemHeld,
    #[error(
        "{} already has a {kind} qdisc ({handle}) that somebody configured; netem would replace \
         it, so remove it (`tc qdisc del dev {} root`) or use --mechanism nfqueue",
        netem::DEVICE,
        netem::DEVICE
    )]
    DeviceConfigured { kind: String, handle: String },
    #[error("netem: {0}")]
    Tc(String),
    #[error("cannot mark netem on lo as held: {0}")]
    Owner(#[source] std::io::Error),
    #[error("cannot start the process that removes netem if the injector is killed: {0}")]
    Guardian(#[source] std::io::Error),
}

/// How `injector net` holds packets back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// netem where the kernel has it (and no other injector holds it), NFQUEUE otherwise.
    Auto,
    /// The kernel's netem qdisc on lo, through a prio qdisc and u32 filters.
    Netem,
    /// iptables rules and a netfilter queue this process holds; works without netem.
    Nfqueue,
}

/// What the mechanism counted of the named links' packets.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(untagged)]
pub enum Counts {
    Queue(Stats),
    Netem(NetemStats),
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Counts::Queue(stats) => write!(
                f,
                "{} packets seen, {} delayed, {} lost, {} duplicated, {} reordered",
                stats.seen, stats.delayed, stats.lost, stats.duplicated, stats.reordered
            ),
            Counts::Netem(stats) => write!(
                f,
                "{} packets sent, {} dropped (netem counts no more)",
                stats.sent, stats.dropped
            ),
        }
    }
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

/// The impaired links, in force until dropped.
pub struct NetFault {
    running: Running,
    /// What was removed before starting, left by injectors that no longer run.
    pub swept: Vec<String>,
}

enum Running {
    /// The rules go first when it stops, so no new packet is queued while the engine lets
    /// the held ones go.
    Queue {
        firewall: Firewall,
        engine: Engine,
        tool: Tool,
        queue: u16,
    },
    Netem(Netem),
}

impl NetFault {
    pub fn start(
        links: &[PacketMatch],
        impairment: Impairment,
        seed: u64,
        mechanism: Mechanism,
    ) -> Result<NetFault, NetError> {
        impairment.validate()?;
        for link in links {
            check_local(&link.from)?;
            check_local(&link.to)?;
        }
        match mechanism {
            Mechanism::Netem => return NetFault::start_netem(links, &impairment),
            Mechanism::Auto => match netem::available() {
                Ok(()) => match NetFault::start_netem(links, &impairment) {
                    Err(NetError::NetemHeld | NetError::DeviceConfigured { .. }) => {
                        tracing::info!("netem on lo is not free; using NFQUEUE");
                    }
                    started => return started,
                },
                Err(reason) => tracing::debug!("{reason}; using NFQUEUE"),
            },
            Mechanism::Nfqueue => {}
        }
        let tool = iptables::find_tool()?;
        let swept = iptables::sweep_leftovers(tool)?;
        let socket = bind_free_queue()?;
        let queue = socket.queue();
        let engine = Engine::start(socket, impairment, seed).map_err(NetError::Queue)?;
        let firewall = Firewall::install(tool, queue, links)?;
        Ok(NetFault {
            running: Running::Queue {
                firewall,
                engine,
                tool,
                queue,
            },
            swept,
        })
    }

    fn start_netem(links: &[PacketMatch], impairment: &Impairment) -> Result<NetFault, NetError> {
        let (netem, swept) = Netem::start(links, impairment)?;
        Ok(NetFault {
            running: Running::Netem(netem),
            swept,
        })
    }

    /// The mechanism in force (never `Auto`).
    pub fn mechanism(&self) -> Mechanism {
        match self.running {
            Running::Queue { .. } => Mechanism::Nfqueue,
            Running::Netem(_) => Mechanism::Netem,
        }
    }

    /// Where it is in force, for the `attached` line: the NFQUEUE's number, iptables and chain,
    /// or netem's device and qdisc.
    pub fn whereabouts(&self) -> serde_json::Value {
        match &self.running {
            Running::Queue {
                firewall,
                tool,
                queue,
                ..
            } => serde_json::json!({
                "iptables": tool.command,
                "queue": queue,
                "chain": firewall.chain(),
            }),
            Running::Netem(_) => serde_json::json!({
                "device": netem::DEVICE,
                "qdisc": netem::ROOT_HANDLE,
            }),
        }
    }

    /// The same, for a person.
    pub fn describe(&self) -> String {
        match &self.running {
            Running::Queue {
                firewall,
                tool,
                queue,
                ..
            } => format!(
                "NFQUEUE {queue} via {}, chain {}",
                tool.command,
                firewall.chain()
            ),
            Running::Netem(_) => {
                format!("netem on {}, qdisc {}", netem::DEVICE, netem::ROOT_HANDLE)
            }
        }
    }

    pub fn update(&mut self, links: &[PacketMatch]) -> Result<(), NetError> {
        match &mut self.running {
            Running::Queue { firewall, .. } => firewall.update(links),
            Running::Netem(netem) => netem.update(links),
        }
    }

    pub fn stats(&self) -> Result<Counts, NetError> {
        match &self.running {
            Running::Queue { engine, .. } => Ok(Counts::Queue(engine.stats())),
            Running::Netem(netem) => netem.stats().map(Counts::Netem),
        }
    }

    /// Changes what is done to packets from now on; held packets keep their moment.
    pub fn set(&self, impairment: Impairment) -> Result<(), NetError> {
        impairment.validate()?;
        match &self.running {
            Running::Queue { engine, .. } => engine.set(impairment).map_err(NetError::Queue),
            Running::Netem(netem) => netem.set(&impairment),
        }
    }

    /// Whether the packet thread stopped on its own; `stop` then says why.
    pub fn has_failed(&self) -> bool {
        match &self.running {
            Running::Queue { engine, .. } => engine.has_failed(),
            Running::Netem(_) => false,
        }
    }

    /// Removes the rules, then lets every held packet go (netem drops what it holds, as its
    /// own removal does); the last counts, or the engine's error if it had one.
    pub fn stop(self) -> Result<Counts, NetError> {
        match self.running {
            Running::Queue {
                firewall,
                mut engine,
                ..
            } => {
                drop(firewall);
                engine.stop().map_err(NetError::Queue)?;
                Ok(Counts::Queue(engine.stats()))
            }
            Running::Netem(netem) => netem.stop().map(Counts::Netem),
        }
    }
}

/// Runs a network tool (iptables, tc): its stdout, or why it failed (its stderr).
fn run_tool(command: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(command)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
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

/// For `injector probe`: the mechanism `--mechanism auto` gets on this kernel, with why.
pub fn probe_mechanism() -> (Mechanism, String) {
    match netem::available() {
        Ok(()) => (Mechanism::Netem, "the kernel has netem".into()),
        Err(reason) => (Mechanism::Nfqueue, reason),
    }
}

/// For `injector probe`: whether a queue can be held and which iptables would install rules.
pub fn probe() -> Result<Tool, String> {
    let tool = iptables::find_tool().map_err(|error| error.to_string())?;
    bind_free_queue().map_err(|error| error.to_string())?;
    Ok(tool)
}
