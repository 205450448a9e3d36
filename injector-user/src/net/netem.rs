//! `injector net` through the kernel's own netem qdisc, on kernels that have it (stock
//! distribution kernels do; this CI kernel has neither netem nor prio). Every endpoint is an
//! address of this host, so every named packet leaves through `lo`: a prio qdisc at the root of
//! `lo` sends the named links' packets, picked by u32 filters on addresses and ports, to a netem
//! child, and every other packet to a plain FIFO band, undelayed.
//!
//! One injector holds netem on `lo` at a time, marked by an abstract unix socket it keeps bound
//! (the kernel releases it when the process dies, and it leaves no file). A qdisc outlives the
//! process that installed it, so each injector starts a guardian process that waits for the
//! injector's end of a pipe to close: if the injector died without removing its qdisc (kill -9),
//! the guardian removes it. The next start removes one left by an injector whose guardian died
//! too.
use std::{
    io::{Read, Write},
    os::linux::net::SocketAddrExt,
    os::unix::net::{SocketAddr, UnixListener},
    process::{Child, Command, Stdio},
};

use serde::Serialize;

use super::{MAX_HELD, NetError, PacketMatch, impairment::Impairment};

/// The only device a packet between two addresses of this host leaves through.
pub const DEVICE: &str = "lo";
/// Our handles: the root prio qdisc, its band for the named links, and the netem in that band.
pub const ROOT_HANDLE: &str = "fa17:";
const NETEM_BAND: &str = "fa17:3";
const NETEM_HANDLE: &str = "fa18:";
/// Root qdiscs a device has when nobody configured it; netem only replaces one of these.
const DEFAULT_ROOTS: &[&str] = &["noqueue", "pfifo_fast", "fq_codel", "mq", "fq", "noop"];
/// The abstract socket name held while an injector owns netem on `lo` (per network namespace,
/// as `lo` is).
const OWNER_NAME: &[u8] = b"faultline-netem-lo";
/// The hidden subcommand the guardian runs.
pub const GUARD_COMMAND: &str = "net-guard";

/// What netem tells of the named links' packets.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct NetemStats {
    /// Packets netem let go (copies included).
    pub sent: u64,
    /// Packets netem dropped (the lost share, and any beyond its limit).
    pub dropped: u64,
}

/// netem on `lo` for the named links, removed on drop.
pub struct Netem {
    _owner: UnixListener,
    guardian: Option<Child>,
    /// The u32 filters' priority; an update adds the new set at the other one first, so no
    /// packet of a link named in both passes undelayed.
    filter_priority: u16,
    removed: bool,
}

/// Whether this kernel and host can run netem: the module (or built in) and `tc`.
pub fn available() -> Result<(), String> {
    kernel_has_netem()?;
    tc(&["-V"]).map_err(|reason| format!("no working `tc` (Debian's iproute2): {reason}"))?;
    Ok(())
}

/// Whether this kernel has netem, built in or as a module.
pub fn kernel_has_netem() -> Result<(), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let module_dir = format!("/lib/modules/{}/kernel/net/sched", release.trim());
    let has_module = std::fs::read_dir(&module_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with("sch_netem"))
    });
    if has_module || std::path::Path::new("/sys/module/sch_netem").exists() {
        Ok(())
    } else {
        Err(format!(
            "this kernel has no netem (no sch_netem module in {module_dir} and none loaded)"
        ))
    }
}

impl Netem {
    /// Installs netem for `links`; also returns what it removed of a dead injector's.
    pub fn start(
        links: &[PacketMatch],
        impairment: &Impairment,
    ) -> Result<(Netem, Vec<String>), NetError> {
        available().map_err(NetError::NoNetem)?;
        let owner = own()?.ok_or(NetError::NetemHeld)?;
        let mut swept = Vec::new();
        let (kind, handle) = root_qdisc()?;
        if handle == ROOT_HANDLE {
            tc(&["qdisc", "del", "dev", DEVICE, "root", "handle", ROOT_HANDLE])
                .map_err(NetError::Tc)?;
            swept.push(format!("netem on {DEVICE}"));
        } else if !DEFAULT_ROOTS.contains(&kind.as_str()) {
            return Err(NetError::DeviceConfigured { kind, handle });
        }
        let mut netem = Netem {
            _owner: owner,
            guardian: None,
            filter_priority: 1,
            removed: false,
        };
        // On any failure from here, dropping `netem` removes what was installed.
        // Every priority to the first band: only the filters send a packet to netem's.
        let root = [
            "qdisc",
            "add",
            "dev",
            DEVICE,
            "root",
            "handle",
            ROOT_HANDLE,
            "prio",
            "bands",
            "3",
            "priomap",
        ];
        tc(&[&root[..], &["0"; 16]].concat()).map_err(NetError::Tc)?;
        tc_owned(&netem_qdisc("add", impairment)).map_err(NetError::Tc)?;
        tc_batch(&filters(links, netem.filter_priority)).map_err(NetError::Tc)?;
        netem.guardian = Some(spawn_guardian()?);
        Ok((netem, swept))
    }

    /// Filters for a new set of links; the old set goes once the new one is in force.
    pub fn update(&mut self, links: &[PacketMatch]) -> Result<(), NetError> {
        let next = 3 - self.filter_priority;
        tc_batch(&filters(links, next)).map_err(NetError::Tc)?;
        let old = self.filter_priority.to_string();
        tc(&[
            "filter",
            "del",
            "dev",
            DEVICE,
            "parent",
            ROOT_HANDLE,
            "protocol",
            "ip",
            "prio",
            &old,
        ])
        .map_err(NetError::Tc)?;
        self.filter_priority = next;
        Ok(())
    }

    /// netem's change keeps the packets it holds, each with its moment.
    pub fn set(&self, impairment: &Impairment) -> Result<(), NetError> {
        tc_owned(&netem_qdisc("change", impairment))
            .map(drop)
            .map_err(NetError::Tc)
    }

    pub fn stats(&self) -> Result<NetemStats, NetError> {
        let listing = tc(&["-s", "-j", "qdisc", "show", "dev", DEVICE]).map_err(NetError::Tc)?;
        netem_stats(&listing).ok_or_else(|| {
            NetError::Tc(format!(
                "the netem qdisc {NETEM_HANDLE} is gone from {DEVICE}: {listing}"
            ))
        })
    }

    /// Removes the qdisc (held packets are dropped with it, as netem's own removal does) and
    /// returns the last counts.
    pub fn stop(mut self) -> Result<NetemStats, NetError> {
        let stats = self.stats();
        self.remove()?;
        stats
    }

    fn remove(&mut self) -> Result<(), NetError> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        remove_ours()
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        if let Err(error) = self.remove() {
            tracing::error!("removing netem from {DEVICE}: {error}");
        }
        if let Some(mut guardian) = self.guardian.take() {
            // Closing its pipe tells it we are done; the qdisc is gone, so it leaves at once.
            drop(guardian.stdin.take());
            let _ = guardian.wait();
        }
    }
}

/// `tc qdisc VERB` of our netem child with the impairment's options.
fn netem_qdisc(verb: &str, impairment: &Impairment) -> Vec<String> {
    let mut command: Vec<String> = [
        "qdisc",
        verb,
        "dev",
        DEVICE,
        "parent",
        NETEM_BAND,
        "handle",
        NETEM_HANDLE,
        "netem",
    ]
    .map(str::to_owned)
    .into();
    command.extend(netem_options(impairment));
    command
}

/// netem's options for an impairment. Every one is named, so a `change` resets what is no
/// longer asked (netem keeps a rate that is not named).
fn netem_options(impairment: &Impairment) -> Vec<String> {
    let mut options = vec![
        "limit".to_owned(),
        MAX_HELD.to_string(),
        "delay".into(),
        format!("{}us", impairment.delay.as_micros()),
    ];
    if !impairment.jitter.is_zero() {
        options.push(format!("{}us", impairment.jitter.as_micros()));
    }
    options.extend([
        "loss".into(),
        "random".into(),
        impairment.loss.to_string(),
        "duplicate".into(),
        impairment.duplicate.to_string(),
        "reorder".into(),
        impairment.reorder.to_string(),
        "rate".into(),
        format!("{}bit", impairment.rate_bits_per_second.unwrap_or(0)),
    ]);
    options
}

/// One u32 filter per link, as a `tc -batch` script.
fn filters(links: &[PacketMatch], priority: u16) -> String {
    let mut script = String::new();
    for link in links {
        script.push_str(&format!(
            "filter add dev {DEVICE} parent {ROOT_HANDLE} protocol ip prio {priority} u32 \
             match ip src {}/32 match ip dst {}/32",
            link.from.addr, link.to.addr
        ));
        // u32 finds ports 20 bytes into the IP header, which holds for packets without IP
        // options: every TCP and UDP packet a database sends over loopback.
        if let Some(port) = link.from.port {
            script.push_str(&format!(" match ip sport {port} 0xffff"));
        }
        if let Some(port) = link.to.port {
            script.push_str(&format!(" match ip dport {port} 0xffff"));
        }
        script.push_str(&format!(" flowid {NETEM_BAND}\n"));
    }
    script
}

/// The kind and handle of `lo`'s root qdisc.
fn root_qdisc() -> Result<(String, String), NetError> {
    let listing = tc(&["-j", "qdisc", "show", "dev", DEVICE, "root"]).map_err(NetError::Tc)?;
    let parsed: serde_json::Value = serde_json::from_str(&listing)
        .map_err(|error| NetError::Tc(format!("unreadable `tc -j qdisc show`: {error}")))?;
    let root = &parsed[0];
    Ok((
        root["kind"].as_str().unwrap_or_default().to_owned(),
        root["handle"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn netem_stats(listing: &str) -> Option<NetemStats> {
    let parsed: serde_json::Value = serde_json::from_str(listing).ok()?;
    let netem = parsed
        .as_array()?
        .iter()
        .find(|qdisc| qdisc["kind"] == "netem" && qdisc["handle"] == NETEM_HANDLE)?;
    Some(NetemStats {
        sent: netem["packets"].as_u64()?,
        dropped: netem["drops"].as_u64().unwrap_or(0),
    })
}

/// Removes our root qdisc from `lo` if it is there.
fn remove_ours() -> Result<(), NetError> {
    let (_, handle) = root_qdisc()?;
    if handle == ROOT_HANDLE {
        tc(&["qdisc", "del", "dev", DEVICE, "root", "handle", ROOT_HANDLE])
            .map_err(NetError::Tc)?;
    }
    Ok(())
}

/// Takes ownership of netem on `lo`; `None` while a live injector holds it.
fn own() -> Result<Option<UnixListener>, NetError> {
    let name = SocketAddr::from_abstract_name(OWNER_NAME).map_err(NetError::Owner)?;
    match UnixListener::bind_addr(&name) {
        Ok(listener) => Ok(Some(listener)),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
        Err(error) => Err(NetError::Owner(error)),
    }
}

fn spawn_guardian() -> Result<Child, NetError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(NetError::Guardian)?;
    Command::new(exe)
        .arg(GUARD_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C meant for the injector does not end it first.
        .process_group(0)
        .spawn()
        .map_err(NetError::Guardian)
}

/// The guardian's whole life: wait until the injector's end of the pipe closes, then remove
/// netem from `lo` unless another live injector owns it by then.
pub fn guard() -> Result<(), NetError> {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while stdin.read(&mut sink).map_err(NetError::Guardian)? > 0 {}
    match own()? {
        Some(_owner) => remove_ours(),
        None => Ok(()),
    }
}

fn tc(args: &[&str]) -> Result<String, String> {
    super::run_tool(tc_path(), args)
        .map_err(|reason| format!("`tc {}` failed: {reason}", args.join(" ")))
}

fn tc_owned(args: &[String]) -> Result<String, String> {
    tc(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs a `tc -batch` script; it stops at its first failing line.
fn tc_batch(script: &str) -> Result<(), String> {
    if script.is_empty() {
        return Ok(());
    }
    let mut child = Command::new(tc_path())
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| error.to_string())?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|error| error.to_string())?;
    let output = child
        .wait_with_output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`tc -batch` failed: {}\n{script}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `sudo` keeps /usr/sbin on PATH, a plain root shell may not.
fn tc_path() -> &'static str {
    if std::path::Path::new("/usr/sbin/tc").exists() {
        "/usr/sbin/tc"
    } else {
        "tc"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::net::impairment::Percent;
    use crate::partition::Endpoint;

    #[test]
    fn every_option_is_named_so_a_change_resets_what_is_no_longer_asked() {
        let options = netem_options(&Impairment {
            delay: Duration::from_millis(50),
            ..Impairment::default()
        });
        assert_eq!(
            options.join(" "),
            "limit 200000 delay 50000us loss random 0% duplicate 0% reorder 0% rate 0bit"
        );
        let options = netem_options(&Impairment {
            delay: Duration::from_millis(5),
            jitter: Duration::from_micros(1500),
            loss: Percent(20.0),
            duplicate: Percent(0.5),
            reorder: Percent(30.0),
            rate_bits_per_second: Some(8_000_000),
        });
        assert_eq!(
            options.join(" "),
            "limit 200000 delay 5000us 1500us loss random 20% duplicate 0.5% reorder 30% rate 8000000bit"
        );
    }

    #[test]
    fn a_filter_names_the_ports_it_was_given() {
        let link = PacketMatch {
            from: Endpoint {
                addr: "127.0.0.2".parse().unwrap(),
                port: None,
            },
            to: Endpoint {
                addr: "127.0.0.3".parse().unwrap(),
                port: Some(7003),
            },
        };
        assert_eq!(
            filters(&[link], 2),
            "filter add dev lo parent fa17: protocol ip prio 2 u32 match ip src 127.0.0.2/32 \
             match ip dst 127.0.0.3/32 match ip dport 7003 0xffff flowid fa17:3\n"
        );
    }

    #[test]
    fn netem_counts_are_read_from_tc_json() {
        let listing = r#"[{"kind":"prio","handle":"fa17:","root":true,"packets":9,"drops":0},
            {"kind":"netem","handle":"fa18:","parent":"fa17:3","bytes":1200,"packets":12,"drops":3}]"#;
        assert_eq!(
            netem_stats(listing),
            Some(NetemStats {
                sent: 12,
                dropped: 3
            })
        );
        assert_eq!(netem_stats("[]"), None);
    }
}
