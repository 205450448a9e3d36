//! Network partitions and packet loss between sets of endpoints, by dropping IPv4 packets in a
//! tc classifier (TCX) or, where the kernel has no TCX (before 6.6), in cgroup_skb programs at
//! the cgroup v2 root. Either way the links belong to this process: its exit heals the
//! partition.
use std::{net::Ipv4Addr, str::FromStr};

use aya::{
    Ebpf,
    maps::Array,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, LinkOrder, SchedClassifier, TcAttachType,
        tc::TcAttachOptions,
    },
};
use injector_common::{
    MAX_PARTITION_RULES, PARTITION_EGRESS_PROGRAM, PARTITION_INGRESS_PROGRAM, PARTITION_MAP,
    PARTITION_PROGRAM, PartitionRule,
};
use thiserror::Error;

use crate::{InjectorError, ebpf_object, sockets};

#[derive(Debug, Error)]
pub enum PartitionError {
    #[error(
        "`{0}` is not an endpoint: write an IPv4 address, optionally with a port (127.0.0.2 or 127.0.0.2:7002)"
    )]
    BadEndpoint(String),
    #[error("loss `{0}` is not a percentage from 1 to 100 (as in --loss 30%)")]
    BadLoss(String),
    #[error("{0} packet rules needed, at most {MAX_PARTITION_RULES}: name fewer endpoints")]
    TooManyRules(usize),
    #[error("pid:{pid}: {reason}")]
    Pid { pid: String, reason: String },
    #[error(
        "{side} {named} names no IPv4 TCP or UDP endpoint now (a process without sockets?); \
         name addresses, or a process that has sockets"
    )]
    NoEndpoints { side: &'static str, named: String },
}

/// An address, and a port unless any port matches. On one machine, give each node its own
/// loopback address (127.0.0.N): a partition by address then also cuts the node's outgoing
/// connections, whose source ports are ephemeral.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

impl FromStr for Endpoint {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || PartitionError::BadEndpoint(text.to_owned());
        match text.split_once(':') {
            Some((addr, port)) => Ok(Endpoint {
                addr: addr.parse().map_err(|_| bad())?,
                port: Some(port.parse().map_err(|_| bad())?),
            }),
            None => Ok(Endpoint {
                addr: text.parse().map_err(|_| bad())?,
                port: None,
            }),
        }
    }
}

/// `--loss 30%` or `--loss 30`.
pub fn parse_loss(text: &str) -> Result<u32, PartitionError> {
    let number = text.trim_end_matches('%');
    match number.parse::<u32>() {
        Ok(percent) if (1..=100).contains(&percent) => Ok(percent),
        _ => Err(PartitionError::BadLoss(text.to_owned())),
    }
}

/// The packet rules for cutting `from` off `to` (and back, unless one-way).
pub fn packet_rules(
    from: &[Endpoint],
    to: &[Endpoint],
    one_way: bool,
    loss_percent: u32,
) -> Result<Vec<PartitionRule>, PartitionError> {
    let rule = |src: &Endpoint, dst: &Endpoint| PartitionRule {
        active: 1,
        loss_percent,
        src_addr: u32::from_ne_bytes(src.addr.octets()),
        dst_addr: u32::from_ne_bytes(dst.addr.octets()),
        src_port: src.port.unwrap_or(0).to_be(),
        dst_port: dst.port.unwrap_or(0).to_be(),
        _reserved: 0,
    };
    let mut rules = Vec::new();
    for a in from {
        for b in to {
            rules.push(rule(a, b));
            if !one_way {
                rules.push(rule(b, a));
            }
        }
    }
    if rules.len() > MAX_PARTITION_RULES as usize {
        return Err(PartitionError::TooManyRules(rules.len()));
    }
    Ok(rules)
}

/// Where the packets are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// TCX where the kernel has it (6.6 and later), cgroup-skb otherwise.
    Auto,
    /// A tc classifier on the interfaces, attached through TCX: every packet that crosses them.
    Tcx,
    /// cgroup_skb programs at the cgroup v2 root: every packet of every local socket, on any
    /// interface (--interface does not apply).
    CgroupSkb,
}

pub struct Partition {
    ebpf: Ebpf,
    /// The hook in use (never Auto).
    pub hook: Hook,
}

impl Partition {
    /// Attaches the programs where `hook` says; with Auto, TCX first, and cgroup_skb if the
    /// kernel refuses TCX (the reason is logged).
    pub fn attach(
        rules: &[PartitionRule],
        interfaces: &[String],
        hook: Hook,
    ) -> Result<Self, InjectorError> {
        // Checked first, whatever the hook: a named interface that does not exist must not turn
        // into a machine-wide cut through the cgroup fallback.
        if let Some(name) = interfaces.iter().find(|name| !interface_exists(name)) {
            return Err(InjectorError::NoSuchInterface { name: name.clone() });
        }
        let mut ebpf = ebpf_object::load()?;
        write_rules(&mut ebpf, rules)?;
        let hook = match hook {
            Hook::Tcx => {
                attach_tcx(&mut ebpf, interfaces)?;
                Hook::Tcx
            }
            Hook::CgroupSkb => {
                attach_cgroup_skb(&mut ebpf)?;
                Hook::CgroupSkb
            }
            Hook::Auto => match attach_tcx(&mut ebpf, interfaces) {
                Ok(()) => Hook::Tcx,
                Err(refused) => {
                    tracing::info!(
                        "TCX refused ({refused}); dropping packets in cgroup_skb programs at the cgroup v2 root instead"
                    );
                    // A fresh object: nothing of the refused attempt stays attached.
                    ebpf = ebpf_object::load()?;
                    write_rules(&mut ebpf, rules)?;
                    attach_cgroup_skb(&mut ebpf)?;
                    Hook::CgroupSkb
                }
            },
        };
        Ok(Self { ebpf, hook })
    }

    /// Replaces the rules (the endpoints of a process changed) while attached.
    pub fn update(&mut self, rules: &[PartitionRule]) -> Result<(), InjectorError> {
        write_rules(&mut self.ebpf, rules)
    }
}

fn interface_exists(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && name != "."
        && name != ".."
        && std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The classifier on each interface. On `lo` every packet passes egress, so one hook sees it
/// once; elsewhere both directions are hooked.
fn attach_tcx(ebpf: &mut Ebpf, interfaces: &[String]) -> Result<(), InjectorError> {
    let failed = |source| InjectorError::Program {
        name: PARTITION_PROGRAM,
        source,
    };
    let program: &mut SchedClassifier = ebpf_object::program_mut(ebpf, PARTITION_PROGRAM)?;
    program.load().map_err(failed)?;
    for interface in interfaces {
        let hooks: &[TcAttachType] = if interface == "lo" {
            &[TcAttachType::Egress]
        } else {
            &[TcAttachType::Egress, TcAttachType::Ingress]
        };
        for hook in hooks {
            // TCX only: aya falls back to a netlink filter on older kernels, which would
            // outlive a killed injector.
            program
                .attach_with_options(
                    interface,
                    *hook,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// The egress and ingress programs at the cgroup v2 root, by bpf_link (owned by this process),
/// alongside whatever else is attached there. The mode is "single" because the kernel refuses
/// attach flags on a cgroup link (EINVAL), and a link never replaces another program anyway.
fn attach_cgroup_skb(ebpf: &mut Ebpf) -> Result<(), InjectorError> {
    let root = crate::cgroup::cgroup2_root().map_err(InjectorError::from)?;
    let root = std::fs::File::open(&root).map_err(|source| InjectorError::CgroupRoot {
        path: root.clone(),
        source,
    })?;
    for (name, attach_type) in [
        (PARTITION_EGRESS_PROGRAM, CgroupSkbAttachType::Egress),
        (PARTITION_INGRESS_PROGRAM, CgroupSkbAttachType::Ingress),
    ] {
        let failed = |source| InjectorError::Program { name, source };
        let program: &mut CgroupSkb = ebpf_object::program_mut(ebpf, name)?;
        program.load().map_err(failed)?;
        program
            .attach(&root, attach_type, CgroupAttachMode::Single)
            .map_err(failed)?;
    }
    Ok(())
}

/// Writes the rules, then an inactive one after them: the classifier stops at the first.
fn write_rules(ebpf: &mut Ebpf, rules: &[PartitionRule]) -> Result<(), InjectorError> {
    let map = ebpf.map_mut(PARTITION_MAP).ok_or(InjectorError::Missing {
        kind: "map",
        name: PARTITION_MAP,
    })?;
    let mut table: Array<_, PartitionRule> =
        Array::try_from(map).map_err(InjectorError::map(PARTITION_MAP))?;
    let end = PartitionRule::default();
    let slots = rules
        .iter()
        .chain((rules.len() < MAX_PARTITION_RULES as usize).then_some(&end));
    for (index, rule) in slots.enumerate() {
        table
            .set(index as u32, rule, 0)
            .map_err(InjectorError::map(PARTITION_MAP))?;
    }
    Ok(())
}

/// The IPv4 TCP and UDP endpoints the process's sockets are bound to now. Sockets bound to
/// the wildcard address are left out: the packets of their connections carry the concrete
/// address, which the accepted or connected sockets have.
pub fn endpoints_of_pid(pid: u32) -> Result<Vec<Endpoint>, PartitionError> {
    let failed = |reason: String| PartitionError::Pid {
        pid: pid.to_string(),
        reason,
    };
    let sockets = sockets::ProcessSockets::open(pid)
        .and_then(|process| process.all())
        .map_err(|e| failed(format!("{e}; is it running, and are you root?")))?;
    let mut endpoints: Vec<Endpoint> = sockets
        .into_iter()
        .filter(|socket| !socket.local.ip().is_unspecified())
        .map(|socket| Endpoint {
            addr: *socket.local.ip(),
            port: Some(socket.local.port()),
        })
        .collect();
    endpoints.sort_by_key(|e| (e.addr, e.port));
    endpoints.dedup();
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_rules() {
        let a: Endpoint = "127.0.0.2:7002".parse().unwrap();
        assert_eq!(a.port, Some(7002));
        let b: Endpoint = "127.0.0.3".parse().unwrap();
        assert_eq!(b.port, None);
        assert!("localhost:1".parse::<Endpoint>().is_err());
        assert_eq!(packet_rules(&[a], &[b, b], false, 100).unwrap().len(), 4);
        assert_eq!(packet_rules(&[a], &[b], true, 100).unwrap().len(), 1);
        assert_eq!(parse_loss("30%").unwrap(), 30);
        assert!(parse_loss("0").is_err() && parse_loss("101%").is_err());
    }
}
