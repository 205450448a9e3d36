//! `injector partition`: cut or degrade the network between sets of endpoints until Ctrl-C,
//! SIGTERM or --duration; exiting heals it.
use std::time::Duration;

use anyhow::{Context, Result};
use injector_user::{
    InjectorError,
    partition::{Endpoint, Partition, packet_rules},
};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use super::emit_json;

pub struct Options {
    pub between: Vec<String>,
    pub and: Vec<String>,
    pub one_way: bool,
    pub loss: u32,
    pub interfaces: Vec<String>,
    pub duration: Option<Duration>,
    pub json: bool,
}

fn endpoints(texts: &[String]) -> Result<Vec<Endpoint>, InjectorError> {
    texts
        .iter()
        .flat_map(|text| text.split(','))
        .map(|text| text.trim().parse().map_err(InjectorError::Partition))
        .collect()
}

pub async fn partition(options: Options) -> Result<()> {
    let from = endpoints(&options.between)?;
    let to = endpoints(&options.and)?;
    let rules = packet_rules(&from, &to, options.one_way, options.loss)
        .map_err(InjectorError::Partition)?;
    let _partition = Partition::attach(&rules, &options.interfaces).with_context(|| {
        format!(
            "attaching the partition on {}",
            options.interfaces.join(", ")
        )
    })?;
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
        emit_json(&json!({"event": "attached", "partition": description, "rules": rules.len()}))?;
    } else {
        eprintln!("partitioned {description}; Ctrl-C heals");
    }
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        () = async { match options.duration { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    if options.json {
        emit_json(&json!({"event": "healed", "partition": description}))?;
    } else {
        eprintln!("healed {description}");
    }
    Ok(())
}
