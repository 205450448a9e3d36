//! Network partitions and packet loss between sets of endpoints, by dropping IPv4 packets in a
//! tc classifier (TCX). The links belong to this process: its exit heals the partition.
use std::{net::Ipv4Addr, str::FromStr};

use aya::{
    Ebpf,
    maps::Array,
    programs::{SchedClassifier, TcAttachType},
};
use injector_common::{MAX_PARTITION_RULES, PARTITION_MAP, PARTITION_PROGRAM, PartitionRule};
use thiserror::Error;

use crate::{InjectorError, ebpf_object};

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

pub struct Partition {
    _ebpf: Ebpf,
}

impl Partition {
    /// Attaches the classifier on each interface. On `lo` every packet passes egress, so one
    /// hook sees it once; elsewhere both directions are hooked.
    pub fn attach(rules: &[PartitionRule], interfaces: &[String]) -> Result<Self, InjectorError> {
        let mut ebpf = ebpf_object::load()?;
        {
            let map = ebpf.map_mut(PARTITION_MAP).ok_or(InjectorError::Missing {
                kind: "map",
                name: PARTITION_MAP,
            })?;
            let mut table: Array<_, PartitionRule> =
                Array::try_from(map).map_err(|source| InjectorError::Map {
                    name: PARTITION_MAP,
                    source,
                })?;
            for (index, rule) in rules.iter().enumerate() {
                table
                    .set(index as u32, rule, 0)
                    .map_err(|source| InjectorError::Map {
                        name: PARTITION_MAP,
                        source,
                    })?;
            }
        }
        let program: &mut SchedClassifier = ebpf
            .program_mut(PARTITION_PROGRAM)
            .ok_or(InjectorError::Missing {
                kind: "program",
                name: PARTITION_PROGRAM,
            })?
            .try_into()
            .map_err(|source| InjectorError::Program {
                name: PARTITION_PROGRAM,
                source,
            })?;
        program.load().map_err(|source| InjectorError::Program {
            name: PARTITION_PROGRAM,
            source,
        })?;
        for interface in interfaces {
            let hooks: &[TcAttachType] = if interface == "lo" {
                &[TcAttachType::Egress]
            } else {
                &[TcAttachType::Egress, TcAttachType::Ingress]
            };
            for hook in hooks {
                program
                    .attach(interface, *hook)
                    .map_err(|source| InjectorError::Program {
                        name: PARTITION_PROGRAM,
                        source,
                    })?;
            }
        }
        Ok(Self { _ebpf: ebpf })
    }
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
