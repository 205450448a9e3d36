//! `injector net`: slow down, lose, copy or reorder the packets between sets of endpoints until
//! Ctrl-C, SIGTERM or --duration; stopping lets every held packet go and removes every rule.
use std::time::Duration;

use anyhow::{Context, Result};
use injector_user::{
    InjectorError,
    net::{NetError, NetFault, PacketMatch, impairment::Impairment, links},
    partition::PartitionError,
};
use serde_json::json;

use super::{StopSignals, emit_json, partition::endpoints};

pub struct Options {
    pub between: Vec<String>,
    pub and: Vec<String>,
    pub one_way: bool,
    pub impairment: Impairment,
    pub seed: u64,
    pub duration: Option<Duration>,
    pub json: bool,
}

/// How often the sockets of `pid:N` endpoints are looked up again (new connections).
const PID_REFRESH: Duration = Duration::from_millis(200);

fn links_now(options: &Options) -> Result<Vec<PacketMatch>, InjectorError> {
    let from = endpoints(&options.between)?;
    let to = endpoints(&options.and)?;
    for (side, found, named) in [
        ("--between", &from, &options.between),
        ("--and", &to, &options.and),
    ] {
        if found.is_empty() {
            return Err(PartitionError::NoEndpoints {
                side,
                named: named.join(","),
            }
            .into());
        }
    }
    Ok(links(&from, &to, options.one_way))
}

pub async fn net(options: Options) -> Result<()> {
    // Checked before any endpoint is looked up, so a typo is named first.
    options.impairment.validate()?;
    let mut stop_signals = StopSignals::listen()?;
    let mut links = links_now(&options)?;
    let by_pid = options
        .between
        .iter()
        .chain(&options.and)
        .any(|text| text.contains("pid:"));
    let fault = NetFault::start(&links, options.impairment.clone(), options.seed)
        .context("starting the network fault")?;
    for chain in &fault.swept {
        tracing::info!("removed {chain}, left by an injector that no longer runs");
    }
    let description = format!(
        "{} {} {}: {}",
        options.between.join(","),
        if options.one_way { "->" } else { "<->" },
        options.and.join(","),
        options.impairment.describe(),
    );
    if options.json {
        emit_json(&json!({
            "event": "attached",
            "net": description,
            "impairment": options.impairment,
            "mechanism": "nfqueue",
            "iptables": fault.tool.command,
            "queue": fault.queue,
            "chain": fault.chain(),
            "links": links.len(),
        }))?;
    } else {
        eprintln!(
            "attached: {description} (NFQUEUE {} via {}, chain {}); Ctrl-C restores it",
            fault.queue,
            fault.tool.command,
            fault.chain()
        );
    }
    let mut fault = Some(fault);
    let deadline = async {
        match options.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut refresh = tokio::time::interval(PID_REFRESH);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            () = stop_signals.recv() => break,
            _ = refresh.tick(), if by_pid => {
                // A process that exited, or one with no sockets for a moment, keeps its links.
                if let Ok(now) = links_now(&options)
                    && now != links
                {
                    fault.as_mut().expect("running").update(&now)?;
                    links = now;
                }
            }
        }
    }
    let stats = fault
        .take()
        .expect("running")
        .stop()
        .map_err(|error: NetError| anyhow::anyhow!(error))?;
    if options.json {
        emit_json(&json!({"event": "restored", "net": description, "packets": stats}))?;
    } else {
        eprintln!(
            "restored {description}: {} packets seen, {} delayed, {} lost, {} duplicated, {} reordered",
            stats.seen, stats.delayed, stats.lost, stats.duplicated, stats.reordered
        );
    }
    Ok(())
}
