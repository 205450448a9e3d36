//! The iptables rules that hand a link's packets to our queue: one chain of this process's own
//! (`FAULTLINE-NET-<pid>`) in the mangle table, jumped to from OUTPUT (every packet this host
//! sends, loopback included) and from PREROUTING for packets from other hosts (loopback packets
//! already passed OUTPUT, and must not wait twice). Every change is one `iptables-restore`
//! transaction, so a rule set is never half applied. Rules use `--queue-bypass`: if this
//! process dies, the packets pass untouched until the next `injector net` removes the chain.
use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::{DUPLICATE_MARK, NetError, PacketMatch};

const CHAIN_PREFIX: &str = "FAULTLINE-NET-";

/// Which iptables speaks to the kernel. The legacy tables exist in the kernel whether or not
/// they hold rules, so removing our chain leaves nothing behind; with nf_tables, iptables
/// would leave an empty `mangle` table. Legacy first, then whichever iptables is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    pub command: &'static str,
    restore: &'static str,
}

const TOOLS: [Tool; 3] = [
    Tool {
        command: "iptables-legacy",
        restore: "iptables-legacy-restore",
    },
    Tool {
        command: "iptables-nft",
        restore: "iptables-nft-restore",
    },
    Tool {
        command: "iptables",
        restore: "iptables-restore",
    },
];

pub fn find_tool() -> Result<Tool, NetError> {
    let mut reasons = Vec::new();
    for tool in TOOLS {
        match super::run_tool(tool.command, &["-w", "-t", "mangle", "-S", "OUTPUT"]) {
            Ok(_) => return Ok(tool),
            Err(reason) => reasons.push(format!("{}: {reason}", tool.command)),
        }
    }
    Err(NetError::NoIptables(reasons.join("; ")))
}

fn restore(tool: Tool, script: &str) -> Result<(), NetError> {
    let failed = |reason: String| NetError::Iptables {
        command: format!("{} --noflush", tool.restore),
        reason,
        script: script.to_owned(),
    };
    let mut child = Command::new(tool.restore)
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| failed(error.to_string()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(|error| failed(error.to_string()))?;
    let output = child
        .wait_with_output()
        .map_err(|error| failed(error.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

/// The lines of our chain: copies we send ourselves pass, then each link goes to the queue.
pub fn chain_rules(chain: &str, links: &[PacketMatch], queue: u16) -> Vec<String> {
    let mut rules = vec![format!(
        "-A {chain} -m mark --mark {DUPLICATE_MARK:#x} -j RETURN"
    )];
    let target = format!("-j NFQUEUE --queue-num {queue} --queue-bypass");
    for link in links {
        let addresses = format!("-s {}/32 -d {}/32", link.from.addr, link.to.addr);
        if link.from.port.is_none() && link.to.port.is_none() {
            rules.push(format!("-A {chain} {addresses} {target}"));
            continue;
        }
        let ports = [("--sport", link.from.port), ("--dport", link.to.port)]
            .iter()
            .filter_map(|(flag, port)| port.map(|port| format!(" {flag} {port}")))
            .collect::<String>();
        for protocol in ["tcp", "udp"] {
            rules.push(format!(
                "-A {chain} -p {protocol} {addresses}{ports} {target}"
            ));
        }
    }
    rules
}

fn jumps(chain: &str) -> [String; 2] {
    [
        format!("OUTPUT -j {chain}"),
        format!("PREROUTING ! -i lo -j {chain}"),
    ]
}

/// This process's chain, removed (with the jumps to it) when dropped.
pub struct Firewall {
    tool: Tool,
    chain: String,
    queue: u16,
}

impl Firewall {
    pub fn install(tool: Tool, queue: u16, links: &[PacketMatch]) -> Result<Firewall, NetError> {
        let chain = format!("{CHAIN_PREFIX}{}", std::process::id());
        let mut script = format!("*mangle\n:{chain} - [0:0]\n-F {chain}\n");
        for rule in chain_rules(&chain, links, queue) {
            script.push_str(&rule);
            script.push('\n');
        }
        for jump in jumps(&chain) {
            script.push_str(&format!("-I {jump}\n"));
        }
        script.push_str("COMMIT\n");
        restore(tool, &script)?;
        Ok(Firewall { tool, chain, queue })
    }

    /// Replaces the links in one transaction (for pid: endpoints whose sockets changed).
    pub fn update(&mut self, links: &[PacketMatch]) -> Result<(), NetError> {
        let mut script = format!("*mangle\n-F {}\n", self.chain);
        for rule in chain_rules(&self.chain, links, self.queue) {
            script.push_str(&rule);
            script.push('\n');
        }
        script.push_str("COMMIT\n");
        restore(self.tool, &script)
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(error) = remove_chain(self.tool, &self.chain) {
            tracing::error!(
                "{error}; remove it by hand: {}",
                removal_hint(self.tool, &self.chain)
            );
        }
    }
}

fn removal_hint(tool: Tool, chain: &str) -> String {
    format!(
        "{c} -t mangle -D OUTPUT -j {chain}; {c} -t mangle -D PREROUTING ! -i lo -j {chain}; \
         {c} -t mangle -F {chain}; {c} -t mangle -X {chain}",
        c = tool.command
    )
}

/// The mangle table's rules, as `iptables -S` prints them.
fn mangle_rules(tool: Tool) -> Result<String, NetError> {
    super::run_tool(tool.command, &["-w", "-t", "mangle", "-S"]).map_err(|reason| {
        NetError::Iptables {
            command: format!("{} -t mangle -S", tool.command),
            reason,
            script: String::new(),
        }
    })
}

/// Removes a chain and every jump to it that exists now, in one transaction.
fn remove_chain(tool: Tool, chain: &str) -> Result<(), NetError> {
    let listing = mangle_rules(tool)?;
    restore(tool, &removal_script(&listing, chain))
}

/// `-D` for each jump to `chain` the listing shows, then the chain itself.
fn removal_script(listing: &str, chain: &str) -> String {
    let mut script = String::from("*mangle\n");
    for line in listing.lines() {
        if let Some(rule) = line.strip_prefix("-A ")
            && rule.ends_with(&format!("-j {chain}"))
            && !rule.starts_with(&format!("{chain} "))
        {
            script.push_str(&format!("-D {rule}\n"));
        }
    }
    if listing.lines().any(|line| line == format!("-N {chain}")) {
        script.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    script.push_str("COMMIT\n");
    script
}

/// Chains left by `injector net` processes that no longer run (killed with -9, or the machine
/// lost power); their rules pass packets untouched (--queue-bypass), but are removed here.
/// Returns the chains removed.
pub fn sweep_leftovers(tool: Tool) -> Result<Vec<String>, NetError> {
    let listing = mangle_rules(tool)?;
    let mut removed = Vec::new();
    for chain in leftover_chains(&listing, injector_runs) {
        restore(tool, &removal_script(&listing, &chain))?;
        removed.push(chain);
    }
    Ok(removed)
}

fn leftover_chains(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.strip_prefix("-N "))
        .filter(|chain| {
            chain
                .strip_prefix(CHAIN_PREFIX)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !alive(pid))
        })
        .map(str::to_owned)
        .collect()
}

/// Whether `pid` is a running injector (a reused pid of another program does not count).
fn injector_runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("injector"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(from: &str, to: &str) -> PacketMatch {
        PacketMatch {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
        }
    }

    #[test]
    fn links_by_address_match_every_protocol_and_by_port_tcp_and_udp() {
        let rules = chain_rules(
            "FAULTLINE-NET-9",
            &[
                link("127.0.0.2", "127.0.0.3"),
                link("127.0.0.3:7003", "127.0.0.2"),
            ],
            47001,
        );
        assert_eq!(
            rules,
            [
                "-A FAULTLINE-NET-9 -m mark --mark 0xfa170001 -j RETURN",
                "-A FAULTLINE-NET-9 -s 127.0.0.2/32 -d 127.0.0.3/32 -j NFQUEUE --queue-num 47001 --queue-bypass",
                "-A FAULTLINE-NET-9 -p tcp -s 127.0.0.3/32 -d 127.0.0.2/32 --sport 7003 -j NFQUEUE --queue-num 47001 --queue-bypass",
                "-A FAULTLINE-NET-9 -p udp -s 127.0.0.3/32 -d 127.0.0.2/32 --sport 7003 -j NFQUEUE --queue-num 47001 --queue-bypass",
            ]
        );
    }

    #[test]
    fn removal_takes_the_jumps_to_the_chain_and_nothing_else() {
        let listing = "-P OUTPUT ACCEPT\n-N FAULTLINE-NET-9\n-N OTHER\n\
                       -A PREROUTING ! -i lo -j FAULTLINE-NET-9\n-A OUTPUT -j OTHER\n\
                       -A OUTPUT -j FAULTLINE-NET-9\n\
                       -A FAULTLINE-NET-9 -m mark --mark 0xfa170001 -j RETURN\n";
        assert_eq!(
            removal_script(listing, "FAULTLINE-NET-9"),
            "*mangle\n-D PREROUTING ! -i lo -j FAULTLINE-NET-9\n-D OUTPUT -j FAULTLINE-NET-9\n\
             -F FAULTLINE-NET-9\n-X FAULTLINE-NET-9\nCOMMIT\n"
        );
    }

    #[test]
    fn only_chains_of_injectors_that_no_longer_run_are_leftovers() {
        let listing = "-N FAULTLINE-NET-10\n-N FAULTLINE-NET-11\n-N FAULTLINE-NET-x\n-N MINE\n";
        assert_eq!(
            leftover_chains(listing, |pid| pid == 11),
            ["FAULTLINE-NET-10"]
        );
    }
}
