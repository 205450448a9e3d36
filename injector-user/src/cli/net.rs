//! `injector net`: slow down, lose, copy or reorder the packets between sets of endpoints until
//! Ctrl-C, SIGTERM or --duration; stopping lets every held packet go and removes every rule.
//! `injector ctl --net PID set ...` changes it while it runs.
use std::time::Duration;

use anyhow::{Context, Result};
use injector_user::{
    InjectorError,
    net::{
        Mechanism, NetError, NetFault, PacketMatch,
        impairment::{Impairment, Percent, parse_delay, parse_percent, parse_rate},
        links,
    },
};
use serde_json::json;

use super::{
    StopSignals,
    control::{self, Addressee, Request},
    emit_json,
    partition::{PID_REFRESH, both_sides, names_a_process},
};

/// What `injector net` and `injector ctl --net PID set` do to packets.
#[derive(clap::Args, Clone, Debug)]
pub struct ImpairmentArgs {
    /// Hold each packet this long (each direction), at most 60 s: 50ms, 1s.
    #[arg(long, value_parser = parse_delay)]
    delay: Option<Duration>,
    /// Vary each packet's delay uniformly by up to this much either way (needs --delay);
    /// packets can overtake each other, as with netem.
    #[arg(long, value_parser = parse_delay)]
    jitter: Option<Duration>,
    /// Drop this share of packets: 5%.
    #[arg(long, value_parser = parse_percent)]
    loss: Option<Percent>,
    /// Send this share of packets twice: 1%.
    #[arg(long, value_parser = parse_percent)]
    duplicate: Option<Percent>,
    /// Send this share of packets at once, ahead of the delayed ones (needs --delay): 10%.
    #[arg(long, value_parser = parse_percent)]
    reorder: Option<Percent>,
    /// Let the link carry at most this rate, tc's units: 1mbit, 500kbit, 2mbps (bytes).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u64>,
}

impl ImpairmentArgs {
    /// What is not named is not done.
    pub fn impairment(&self) -> Impairment {
        Impairment {
            delay: self.delay.unwrap_or_default(),
            jitter: self.jitter.unwrap_or_default(),
            loss: self.loss.unwrap_or_default(),
            duplicate: self.duplicate.unwrap_or_default(),
            reorder: self.reorder.unwrap_or_default(),
            rate_bits_per_second: self.rate,
        }
    }
}

/// How often the packet thread is checked: if it fails, packets pass untouched (the rules'
/// bypass), and the user must hear of it.
const HEALTH_CHECK: Duration = Duration::from_millis(500);

pub struct Options {
    pub between: Vec<String>,
    pub and: Vec<String>,
    pub one_way: bool,
    pub impairment: Impairment,
    pub seed: u64,
    pub mechanism: Mechanism,
    pub duration: Option<Duration>,
    pub json: bool,
}

fn links_now(options: &Options) -> Result<Vec<PacketMatch>, InjectorError> {
    let (from, to) = both_sides(&options.between, &options.and)?;
    Ok(links(&from, &to, options.one_way))
}

pub async fn net(options: Options) -> Result<()> {
    // Checked before any endpoint is looked up, so a typo is named first.
    options.impairment.validate()?;
    let mut stop_signals = StopSignals::listen()?;
    let mut links = links_now(&options)?;
    let by_pid = names_a_process(&options.between, &options.and);
    let fault = NetFault::start(
        &links,
        options.impairment.clone(),
        options.seed,
        options.mechanism,
    )
    .context("starting the network fault")?;
    for leftover in &fault.swept {
        tracing::info!("removed {leftover}, left by an injector that no longer runs");
    }
    // Listening before "attached" is said, so a `ctl --net` sent on that word finds the socket.
    let control = control::Listener::bind(&Addressee::net(std::process::id()))?;
    let description = format!(
        "{} {} {}: {}",
        options.between.join(","),
        if options.one_way { "->" } else { "<->" },
        options.and.join(","),
        options.impairment.describe(),
    );
    if options.json {
        let mut attached = json!({
            "event": "attached",
            "net": description,
            "impairment": options.impairment,
            "mechanism": fault.mechanism(),
            "pid": std::process::id(),
            "links": links.len(),
        });
        if let (Some(line), serde_json::Value::Object(whereabouts)) =
            (attached.as_object_mut(), fault.whereabouts())
        {
            line.extend(whereabouts);
        }
        emit_json(&attached)?;
    } else {
        eprintln!(
            "attached: {description} ({}); Ctrl-C restores it",
            fault.describe()
        );
    }
    let (requests, mut pending) = tokio::sync::mpsc::channel::<control::Call>(16);
    let mut impairment = options.impairment.clone();
    let mut fault = Some(fault);
    let deadline = super::until(options.duration);
    tokio::pin!(deadline);
    let mut refresh = tokio::time::interval(PID_REFRESH);
    let mut health = tokio::time::interval(HEALTH_CHECK);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = health.tick() => {
                if fault.as_ref().expect("running").has_failed() {
                    // Removes the rules and says what the thread ended with.
                    let error = match fault.take().expect("running").stop() {
                        Err(error) => anyhow::anyhow!(error),
                        Ok(_) => anyhow::anyhow!("the packet thread stopped"),
                    };
                    return Err(error.context(format!("{description} no longer in force")));
                }
            }
            () = stop_signals.recv() => break,
            accepted = control.socket.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(control::serve_client(stream, requests.clone()));
                }
            }
            Some((request, reply)) = pending.recv() => {
                let running = fault.as_ref().expect("running");
                let answer = match request {
                    Request::List => match running.stats() {
                        Ok(counts) => json!({
                            "net": description,
                            "impairment": impairment,
                            "packets": counts,
                        }),
                        Err(error) => json!({"error": error.to_string()}),
                    },
                    Request::Set { impairment: new } => match running.set(new.clone()) {
                        Ok(()) => {
                            let said = new.describe();
                            if options.json {
                                emit_json(&json!({"event": "changed", "impairment": new}))?;
                            } else {
                                eprintln!("changed: {said}");
                            }
                            impairment = new;
                            json!({"impairment": impairment})
                        }
                        Err(error) => json!({"error": error.to_string()}),
                    },
                    Request::Add { .. } | Request::Remove { .. } => json!({
                        "error": "an injector net takes `list` and `set`; add and remove change an attach's rules"
                    }),
                };
                let _ = reply.send(answer);
            }
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
        eprintln!("restored {description}: {stats}");
    }
    Ok(())
}
