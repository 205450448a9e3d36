//! `injector partition`: cut or degrade the network between sets of endpoints until Ctrl-C,
//! SIGTERM or --duration; exiting heals it.
use std::time::Duration;

use anyhow::{Context, Result};
use injector_common::PartitionRule;
use injector_user::{
    InjectorError,
    partition::{Endpoint, Hook, Partition, PartitionError, endpoints_of_pid, packet_rules},
};
use serde_json::json;

use super::{StopSignals, emit_json};

pub struct Options {
    pub between: Vec<String>,
    pub and: Vec<String>,
    pub one_way: bool,
    pub loss: u32,
    pub interfaces: Vec<String>,
    pub hook: Hook,
    pub duration: Option<Duration>,
    pub json: bool,
}

/// How often the sockets of `pid:N` endpoints are looked up again (new connections).
pub(super) const PID_REFRESH: Duration = Duration::from_millis(200);

/// `IP`, `IP:PORT` or `pid:N` (every IPv4 TCP/UDP endpoint that process's sockets have now).
pub(super) fn endpoints(texts: &[String]) -> Result<Vec<Endpoint>, InjectorError> {
    let mut found = Vec::new();
    for text in texts.iter().flat_map(|text| text.split(',')).map(str::trim) {
        match text.strip_prefix("pid:") {
            Some(pid) => {
                let pid = pid.parse::<u32>().map_err(|_| PartitionError::Pid {
                    pid: pid.to_owned(),
                    reason: "not a process id (write pid:4242)".into(),
                })?;
                found.extend(endpoints_of_pid(pid)?);
            }
            None => found.push(text.parse().map_err(InjectorError::Partition)?),
        }
    }
    Ok(found)
}

/// Both sides' endpoints now; a side that names none is refused.
pub(super) fn both_sides(
    between: &[String],
    and: &[String],
) -> Result<(Vec<Endpoint>, Vec<Endpoint>), InjectorError> {
    let from = endpoints(between)?;
    let to = endpoints(and)?;
    for (side, found, named) in [("--between", &from, between), ("--and", &to, and)] {
        if found.is_empty() {
            return Err(PartitionError::NoEndpoints {
                side,
                named: named.join(","),
            }
            .into());
        }
    }
    Ok((from, to))
}

/// Whether any endpoint is a process, whose sockets are looked up again while it runs.
pub(super) fn names_a_process(between: &[String], and: &[String]) -> bool {
    between.iter().chain(and).any(|text| text.contains("pid:"))
}

fn rules_now(options: &Options) -> Result<Vec<PartitionRule>, InjectorError> {
    let (from, to) = both_sides(&options.between, &options.and)?;
    Ok(packet_rules(&from, &to, options.one_way, options.loss)?)
}

pub async fn partition(options: Options) -> Result<()> {
    let mut stop_signals = StopSignals::listen()?;
    let mut rules = rules_now(&options)?;
    let by_pid = names_a_process(&options.between, &options.and);
    let mut partition = Partition::attach(&rules, &options.interfaces, options.hook).with_context(
        || match options.hook {
            Hook::CgroupSkb => "attaching the partition at the cgroup v2 root".to_owned(),
            _ => format!(
                "attaching the partition on {}",
                options.interfaces.join(", ")
            ),
        },
    )?;
    let description = format!(
        "{} {} {}{}",
        options.between.join(","),
        if options.one_way { "->" } else { "<->" },
        options.and.join(","),
        if options.loss < 100 {
            format!(" ({}% loss)", options.loss)
        } else {
            String::new()
        }
    );
    if options.json {
        emit_json(&json!({
            "event": "attached",
            "partition": description,
            "rules": rules.len(),
            "hook": partition.hook,
        }))?;
    } else {
        let hook = match partition.hook {
            Hook::CgroupSkb => "cgroup_skb at the cgroup v2 root".to_owned(),
            _ => format!("TCX on {}", options.interfaces.join(", ")),
        };
        eprintln!("partitioned {description} ({hook}); Ctrl-C heals");
    }
    let deadline = super::until(options.duration);
    tokio::pin!(deadline);
    let mut refresh = tokio::time::interval(PID_REFRESH);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            () = stop_signals.recv() => break,
            _ = refresh.tick(), if by_pid => {
                // A process that exited, or one with no sockets for a moment, keeps its last cut.
                if let Ok(now) = rules_now(&options)
                    && now != rules
                {
                    partition.update(&now)?;
                    rules = now;
                }
            }
        }
    }
    if options.json {
        emit_json(&json!({"event": "healed", "partition": description}))?;
    } else {
        eprintln!("healed {description}");
    }
    Ok(())
}
