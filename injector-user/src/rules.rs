//! Fault rules for the injector: parsed by `fault-rules`, checked against what this mode can do,
//! and compiled to the kernel's [`KernelRule`] layout.
use fault_rules::{Action, Capabilities, Filter, ParseError, Rule, parse_rule, parse_rule_list};
use injector_common::{ANY_FD, KernelRule, KernelTerm, MAX_RULES, MAX_TERMS, UNLIMITED, action};
use thiserror::Error;

use crate::syscall_names::syscall_number;

#[derive(Debug, Error)]
pub enum RuleError {
    #[error(transparent)]
    Syntax(#[from] ParseError),
    #[error(
        "{rule}: unknown syscall `{op}` (use the kernel's name, as in fsync, pwrite64, openat, sendmsg)"
    )]
    UnknownSyscall { rule: String, op: String },
    #[error(
        "{rule}: no LSM hook sees {op}, so `injector attach` cannot make it fail on any kernel \
         (error() in attach mode works for {hooked}); use `injector run -- COMMAND` (seccomp: \
         any syscall, fsync included) or faultfs for file errors"
    )]
    ErrorHasNoHook {
        rule: String,
        op: String,
        hooked: String,
    },
    #[error(
        "{rule}: in attach mode a path filter applies to calls on an fd ({}); `{op}` takes a \
         path: use `injector run`, whose supervisor reads the path argument, or faultfs",
        FD_SYSCALLS.join(", ")
    )]
    PathNeedsAnFd { rule: String, op: String },
    #[error(
        "{rule}: a dst= filter needs a call with a peer ({peer_calls}), not {op}",
        peer_calls = PEER_SYSCALLS.join(", ")
    )]
    DstNeedsASocketCall { rule: String, op: String },
    #[error("{rule}: dst= takes an IPv4 address and port in attach mode, like 127.0.0.1:7002")]
    DstNotIpv4 { rule: String },
    #[error("{rule}: at most {MAX_TERMS} terms per rule in attach mode")]
    TooManyTerms { rule: String },
    #[error("at most {MAX_RULES} rules at once")]
    TooManyRules,
    #[error("{0}")]
    Refused(String),
    #[error(
        "no fault rules given: pass --fault 'fsync=3*off->1*kill', --faults-file FILE or INJECTOR_FAULTS"
    )]
    NoRules,
    #[error("{rule}: thread names are at most 15 bytes")]
    LongThreadName { rule: String },
    #[error("cannot read the rules file {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message} (expected `faults = [\"RULE\", ...]`)")]
    FileFormat { path: String, message: String },
}

/// What `injector attach` carries out (from the kernel's syscall tracepoint).
pub const ATTACH: Capabilities<'static> = Capabilities {
    tool: "injector attach",
    ops: &[],
    actions: &["off", "kill", "signal", "delay", "pause", "count", "error"],
    filters: &["fd", "thread", "path", "dst"],
};

/// Calls a dst= filter applies to in attach mode: those that name a peer (connect, sendto,
/// sendmsg) and those on a socket fd, whose connected peer counts.
pub const PEER_SYSCALLS: &[&str] = &[
    "connect", "sendto", "sendmsg", "recvfrom", "recvmsg", "write", "writev", "read", "readv",
];

/// An IPv4 address and port as they lie in a `sockaddr_in` (network order), read as the host
/// integers the kernel program compares.
pub fn sockaddr_in_values(peer: &std::net::SocketAddrV4) -> (u32, u32) {
    (
        u32::from_ne_bytes(peer.ip().octets()),
        u32::from(u16::from_ne_bytes(peer.port().to_be_bytes())),
    )
}

/// Syscalls whose first argument is an fd: in attach mode a path filter applies to them, by the
/// file behind that fd (resolved when the fd was made).
pub const FD_SYSCALLS: &[&str] = &[
    "fsync",
    "fdatasync",
    "sync_file_range",
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "read",
    "pread64",
    "readv",
    "preadv",
    "ftruncate",
    "fallocate",
    "sendmsg",
    "sendto",
    "recvmsg",
    "recvfrom",
    "lseek",
    "fstat",
    "close",
];

/// Syscalls error() can fail in attach mode, and the LSM hooks their calls reach (the first one
/// reached delivers the error). fsync and friends reach none: no eBPF route fails them.
const ERROR_HOOKS_BY_SYSCALL: &[(&[&str], &[&str])] = &[
    (
        &[
            "read",
            "pread64",
            "readv",
            "preadv",
            "preadv2",
            "write",
            "pwrite64",
            "writev",
            "pwritev",
            "pwritev2",
            "fallocate",
            "copy_file_range",
            "sendfile",
            "splice",
        ],
        &["file_permission"],
    ),
    (&["open", "openat", "openat2", "creat"], &["file_open"]),
    // 6.2 moved ftruncate from path_truncate to file_truncate; whichever the kernel has.
    (&["ftruncate"], &["file_truncate", "path_truncate"]),
    (&["truncate"], &["path_truncate"]),
    (&["sendmsg", "sendto", "sendmmsg"], &["socket_sendmsg"]),
    (&["recvmsg", "recvfrom", "recvmmsg"], &["socket_recvmsg"]),
    (&["connect"], &["socket_connect"]),
    (&["accept", "accept4"], &["socket_accept"]),
    (&["rename", "renameat", "renameat2"], &["inode_rename"]),
    (&["unlink"], &["inode_unlink"]),
    (&["unlinkat"], &["inode_unlink", "inode_rmdir"]),
    (&["rmdir"], &["inode_rmdir"]),
    (&["mkdir", "mkdirat"], &["inode_mkdir"]),
];

/// The LSM hooks through which error() reaches calls of `op`, None if it has none.
pub fn error_hooks(op: &str) -> Option<&'static [&'static str]> {
    ERROR_HOOKS_BY_SYSCALL
        .iter()
        .find(|(syscalls, _)| syscalls.contains(&op))
        .map(|(_, hooks)| *hooks)
}

/// The rule's path filter, if it has one.
pub fn path_filter(rule: &Rule) -> Option<&fault_rules::Glob> {
    rule.filters.iter().find_map(|f| match f {
        Filter::Path(glob) => Some(glob),
        _ => None,
    })
}

/// True if the rule can fire error().
pub fn has_error_action(rule: &Rule) -> bool {
    rule.chain
        .terms()
        .iter()
        .any(|t| matches!(t.action, Action::Error(_)))
}

/// What `injector run` carries out (a seccomp supervisor decides each call).
pub const RUN: Capabilities<'static> = Capabilities {
    tool: "injector run",
    ops: &[],
    actions: &["off", "error", "delay", "count", "kill"],
    filters: &["fd", "path"],
};

/// Gathers rules from `--fault` flags, a TOML file (`faults = [...]`) and `INJECTOR_FAULTS`.
pub fn gather(
    flags: &[String],
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for text in flags {
        rules.push(parse_rule(text)?);
    }
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::File {
            path: shown.clone(),
            source,
        })?;
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| RuleError::FileFormat {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
        let faults = table
            .get("faults")
            .and_then(|f| f.as_array())
            .ok_or_else(|| RuleError::FileFormat {
                path: shown.clone(),
                message: "no `faults` list".into(),
            })?;
        for fault in faults {
            let text = fault.as_str().ok_or_else(|| RuleError::FileFormat {
                path: shown.clone(),
                message: format!("{fault} is not a string"),
            })?;
            rules.push(parse_rule(text)?);
        }
    }
    if let Some(env) = env {
        rules.extend(parse_rule_list(env)?);
    }
    if rules.len() > MAX_RULES as usize {
        return Err(RuleError::TooManyRules);
    }
    Ok(rules)
}

/// The syscall number of a rule's operation.
pub fn syscall_of(rule: &Rule) -> Result<u32, RuleError> {
    syscall_number(&rule.op).ok_or_else(|| RuleError::UnknownSyscall {
        rule: rule.text.clone(),
        op: rule.op.clone(),
    })
}

/// Checks a rule for `injector attach` and compiles it for the kernel.
pub fn compile_for_attach(rule: &Rule, seed: u64) -> Result<KernelRule, RuleError> {
    let syscall_nr = syscall_of(rule)?;
    if has_error_action(rule) && error_hooks(&rule.op).is_none() {
        let hooked: Vec<&str> = ERROR_HOOKS_BY_SYSCALL
            .iter()
            .flat_map(|(syscalls, _)| syscalls.iter().copied())
            .collect();
        return Err(RuleError::ErrorHasNoHook {
            rule: rule.text.clone(),
            op: rule.op.clone(),
            hooked: hooked.join(", "),
        });
    }
    let by_path = rule.filters.iter().any(|f| matches!(f, Filter::Path(_)));
    if by_path && !FD_SYSCALLS.contains(&rule.op.as_str()) {
        return Err(RuleError::PathNeedsAnFd {
            rule: rule.text.clone(),
            op: rule.op.clone(),
        });
    }
    rule.validate_actions_and_filters(&ATTACH)?;
    let terms = rule.chain.terms();
    if terms.len() > MAX_TERMS {
        return Err(RuleError::TooManyTerms {
            rule: rule.text.clone(),
        });
    }
    let mut compiled = KernelRule {
        active: 1,
        syscall_nr,
        fd: ANY_FD,
        by_path: u32::from(by_path),
        term_count: terms.len() as u32,
        seed,
        ..KernelRule::default()
    };
    for filter in &rule.filters {
        match filter {
            Filter::Fd(fd) => compiled.fd = i64::from(*fd),
            Filter::Dst(std::net::SocketAddr::V4(peer)) => {
                if !PEER_SYSCALLS.contains(&rule.op.as_str()) {
                    return Err(RuleError::DstNeedsASocketCall {
                        rule: rule.text.clone(),
                        op: rule.op.clone(),
                    });
                }
                compiled.by_dst = 1;
                (compiled.dst_addr, compiled.dst_port) = sockaddr_in_values(peer);
            }
            Filter::Dst(std::net::SocketAddr::V6(_)) => {
                return Err(RuleError::DstNotIpv4 {
                    rule: rule.text.clone(),
                });
            }
            Filter::Thread(name) => {
                if name.len() > 15 {
                    return Err(RuleError::LongThreadName {
                        rule: rule.text.clone(),
                    });
                }
                compiled.has_comm = 1;
                compiled.comm[..name.len()].copy_from_slice(name.as_bytes());
            }
            _ => {}
        }
    }
    for (slot, term) in compiled.terms.iter_mut().zip(terms) {
        let (kind, arg) = match term.action {
            Action::Kill => (action::KILL, 0),
            Action::Signal(signal) => (action::SIGNAL, signal as u64),
            Action::Delay(_) | Action::Pause => (action::STOP, 0),
            Action::Count => (action::COUNT, 0),
            Action::Error(errno) => (action::ERROR, errno as u64),
            _ => (action::OFF, 0),
        };
        *slot = KernelTerm {
            percent: term.percent.map_or(100, u32::from),
            action: kind,
            count: term.count.unwrap_or(UNLIMITED),
            arg,
        };
    }
    Ok(compiled)
}
