//! `injector`: observe and break a running process's syscalls from outside it, with eBPF.
mod cli;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use injector_user::{InjectorError, rules::RuleError};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "injector",
    version,
    about = "Observe and break a running process's syscalls from outside it, with eBPF.",
    long_about = "Observe and break a running process's syscalls from outside it, with eBPF.\n\n\
        The target needs no change and no restart: programs are attached in the kernel and \
        filter on the target's process id, so no other process is ever touched. Needs root.\n\n\
        Fault rules use the fail crate's syntax: SYSCALL[(fd=N, thread=NAME)]=[P%][N*]ACTION[(ARG)][->...], \
        e.g. 'fsync=3*off->1*kill' (the 4th fsync kills the process). Exit code 2: bad input.",
    after_help = "Examples:\n  \
        sudo injector count --pid 4242\n  \
        sudo injector attach --pid 4242 --seed 9 --fault 'fsync=3*off->1*kill'\n  \
        sudo injector attach --pid 4242 --fault 'write=10%delay(200)' --duration 30s --json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The two sets of endpoints a network fault stands between.
#[derive(clap::Args)]
struct Sides {
    /// One side: IP, IP:PORT or pid:N, comma-separated, e.g. 127.0.0.2 or pid:4242.
    #[arg(long, required = true)]
    between: Vec<String>,
    /// The other side, e.g. 127.0.0.3,127.0.0.4.
    #[arg(long, required = true)]
    and: Vec<String>,
    /// Only the packets going from --between to --and.
    #[arg(long)]
    one_way: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Count a process's syscalls by name, exactly, until it exits, Ctrl-C or --duration.
    ///
    /// Counting happens in the kernel at syscall entry (tp_btf/sys_enter), for every thread of
    /// the process; children it forks are separate processes and are not counted.
    Count {
        /// Process id of the target (its thread-group id; see `pgrep`).
        #[arg(long)]
        pid: u32,
        /// Stop after this long: `10s`, `500ms`, `2m`, or a number of seconds.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// JSON lines on stdout: an `attached` event once counting has started, then `counts`.
        #[arg(long)]
        json: bool,
    },
    /// Apply fault rules to a running process until it exits, Ctrl-C or --duration.
    ///
    /// Actions, at syscall entry in the kernel: kill (SIGKILL: a write never happens; an fsync
    /// still completes before death), signal(SIG), delay(MS) and pause (SIGSTOP from the kernel,
    /// SIGCONT from the injector after MS or when it exits: the WHOLE process stalls, all its
    /// threads), count (observe), error(ERRNO): the call fails with ERRNO and does nothing
    /// (through BPF LSM hooks, on kernels that allow them: see `injector probe`; for reads,
    /// writes, opens, truncates, renames, unlinks, mkdir, sendmsg/sendto, recvmsg/recvfrom,
    /// connect and accept; fsync has no hook: use `injector run` or faultfs). Filters: fd=N,
    /// thread=NAME, path=GLOB (the file behind the call's fd; the target is stopped for a
    /// moment at each new fd while it is classified), dst=IP:PORT (the address connect, sendto
    /// or sendmsg names, else the connected peer of the socket behind the fd: sendmsg(dst=
    /// 127.0.0.1:7002)=error(ECONNRESET)). Counting is exact ("the 3rd fsync"), and
    /// probabilities are keyed by --seed: the same seed and the same calls fire the same faults.
    Attach {
        /// The process to inject into (all its threads).
        #[arg(long, required_unless_present = "cgroup", conflicts_with = "cgroup")]
        pid: Option<u32>,
        /// Instead of --pid: every task in this cgroup v2 directory (e.g.
        /// /sys/fs/cgroup/unified/my-db), including processes that join it later; counting is
        /// per rule across all of them; delay and pause stop the one process that made the
        /// call. Path filters cover the fds its processes have at attach and those made or
        /// inherited later (not those a process brings when it joins). Runs until Ctrl-C or
        /// --duration.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// A fault rule; repeatable. Also read from INJECTOR_FAULTS ("rule;rule").
        #[arg(long = "fault")]
        faults: Vec<String>,
        /// A TOML file with `faults = ["RULE", ...]`.
        #[arg(long)]
        faults_file: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// JSON lines: `attached`, one `fault` per fired fault, then `summary`.
        #[arg(long)]
        json: bool,
        /// Also apply the rules to every process the target starts from now on (and those
        /// start, and so on); counting is per rule across all of them; delay and pause stop the
        /// one process that made the call; a child is stopped for a moment out of fork while
        /// the fds it inherited are classified for path filters.
        #[arg(long)]
        follow_forks: bool,
    },
    /// Run COMMAND with fault rules applied by a seccomp supervisor: any syscall, fsync included.
    ///
    /// The filter is installed in the child just before exec, so it covers the command, its
    /// threads and its children. Each matching call waits for the injector, which fails it with
    /// error(ERRNO), holds it with delay(MS) (only that thread), kills the process, or lets it
    /// continue. Filters: fd=N, path=GLOB (the file the call's fd refers to). The injector's
    /// own output goes to stderr; its exit code is the command's.
    Run {
        #[arg(long = "fault")]
        faults: Vec<String>,
        #[arg(long)]
        faults_file: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// JSON lines on stderr: one `fault` per fired fault, then `summary`.
        #[arg(long)]
        json: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Cut or degrade the network between two sets of endpoints until Ctrl-C or --duration.
    ///
    /// Drops IPv4 packets in a tc classifier (TCX) on the interfaces (default lo), or on kernels
    /// without TCX (before 6.6) in cgroup_skb programs at the cgroup v2 root, which see every
    /// packet of every local socket (see --hook). Endpoints are
    /// IP, IP:PORT or pid:N (the IP:PORT of every IPv4 TCP/UDP socket that process has, looked
    /// up again every 200 ms, so a new connection is cut within that), comma-separated. On one
    /// machine give each node its own loopback address (127.0.0.N): partitioning by address
    /// then also cuts its outgoing connections, whose source ports are ephemeral. Exiting (for
    /// any reason, kill -9 included) heals it.
    Partition {
        #[command(flatten)]
        sides: Sides,
        /// Drop only this percentage of the packets (e.g. 30%) instead of all.
        #[arg(long, value_parser = injector_user::partition::parse_loss)]
        loss: Option<u32>,
        /// Interfaces for the TCX hook; repeatable.
        #[arg(long = "interface", default_value = "lo")]
        interfaces: Vec<String>,
        /// Where packets are dropped.
        #[arg(long, value_enum, default_value_t = injector_user::partition::Hook::Auto)]
        hook: injector_user::partition::Hook,
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Slow down, lose, copy or reorder the packets between two sets of endpoints.
    ///
    /// Where the kernel has netem (stock distribution kernels), the kernel's netem holds the
    /// packets: a prio qdisc at the root of lo (handle fa17:) sends the named links' packets,
    /// by u32 filters, to a netem child; other packets pass undelayed. Elsewhere (no netem),
    /// iptables rules (mangle table, a chain named FAULTLINE-NET-<pid>) hand them to an NFQUEUE
    /// this process holds, and each goes on at its moment, as netem would send it.
    /// `injector probe` says which one this kernel gets; --mechanism chooses.
    ///
    /// Endpoints are IP, IP:PORT or pid:N, comma-separated, and must be addresses of this host;
    /// both directions unless --one-way, so --delay 50ms adds 100 ms to a round trip. Prints
    /// "attached" when in force; Ctrl-C, SIGTERM or --duration restores the link (NFQUEUE lets
    /// held packets go; netem drops them with its qdisc). After kill -9: NFQUEUE's rules stay
    /// but let packets pass (--queue-bypass) and the next `injector net` removes them; netem's
    /// qdisc is removed by a guardian process that outlives the injector, or else by the next
    /// `injector net`.
    #[command(after_help = "Examples:\n  \
        sudo injector net --between 127.0.0.2 --and 127.0.0.3 --delay 50ms\n  \
        sudo injector net --between 127.0.0.2 --and 127.0.0.3,127.0.0.4 --delay 100ms --jitter 20ms --one-way\n  \
        sudo injector net --between pid:4242 --and 127.0.0.3:7003 --loss 5% --duplicate 1% --reorder 10% --delay 10ms\n  \
        sudo injector net --between 127.0.0.2 --and 127.0.0.3 --rate 1mbit --duration 30s --json")]
    Net {
        #[command(flatten)]
        sides: Sides,
        #[command(flatten)]
        impairment: cli::net::ImpairmentArgs,
        /// Seed for which packets are lost, copied, reordered and how much each is jittered
        /// (NFQUEUE; netem draws from the kernel's random numbers).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How packets are held back; `injector probe` says what auto gets on this kernel.
        #[arg(long, value_enum, default_value_t = injector_user::net::Mechanism::Auto)]
        mechanism: injector_user::net::Mechanism,
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// JSON lines on stdout: `attached`, then `restored` with packet counts.
        #[arg(long)]
        json: bool,
    },
    /// Change the rules of a running `injector attach` (list, add RULE, remove ID), or the
    /// link of a running `injector net` (list, set ...).
    ///
    /// Each command answers after the change took effect in the kernel. Removing a `pause`
    /// rule continues the process it holds. `set` replaces what a net does to packets from
    /// then on (what it does not name stops); packets already held keep their moment.
    Ctl {
        /// The pid the injector is attached to.
        #[arg(long, required_unless_present_any = ["cgroup", "net"], conflicts_with_all = ["cgroup", "net"])]
        pid: Option<u32>,
        /// The pid of a running `injector net` (its `attached` line says it).
        #[arg(long, conflicts_with = "cgroup")]
        net: Option<u32>,
        /// The cgroup the injector is attached to (`attach --cgroup PATH`).
        #[arg(long)]
        cgroup: Option<PathBuf>,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Started by `injector net` when netem holds the packets: removes the qdisc if the
    /// injector dies without doing so. Not for people.
    #[command(name = "net-guard", hide = true)]
    NetGuard,
    /// Try each mechanism the injector can use; print what this kernel allows and refuses.
    Probe {
        #[arg(long)]
        json: bool,
    },
    /// Continues what the injector stopped if it dies first (internal).
    #[command(hide = true)]
    Guard {
        /// The attached pid, for logs; the guard acts through the pidfds only.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long)]
        target_pidfd: Option<i32>,
        #[arg(long)]
        injector_pidfd: i32,
        #[arg(long)]
        stopped_map_fd: i32,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Rules with their ids, calls seen and faults fired.
    List,
    /// Add a rule, e.g. 'fsync=1*kill'.
    Add { rule: String },
    /// Remove the rule with this id.
    Remove { id: usize },
    /// For `--net`: what is done to packets from now on, e.g. `set --delay 200ms --loss 5%`.
    Set {
        #[command(flatten)]
        impairment: cli::net::ImpairmentArgs,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string());
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}: write a duration like `10s`, `500ms` or `2m`"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    if let Command::Guard {
        target_pidfd,
        injector_pidfd,
        stopped_map_fd,
        ..
    } = command
    {
        return match cli::guard::run(cli::guard::Inherited {
            injector_pidfd,
            target_pidfd,
            stopped_map_fd,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    if let Command::Run {
        faults,
        faults_file,
        seed,
        json,
        command,
    } = command
    {
        let options = cli::run::Options {
            faults,
            faults_file,
            seed,
            json,
            command,
        };
        return match cli::run::run(options) {
            Ok(code) => ExitCode::from(code),
            Err(error) => report_error(&error),
        };
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match command {
            Command::Count {
                pid,
                duration,
                json,
            } => cli::count::count(pid, duration, json).await,
            Command::Attach {
                pid,
                cgroup,
                faults,
                faults_file,
                seed,
                duration,
                json,
                follow_forks,
            } => {
                let options = cli::attach::Options {
                    pid,
                    cgroup,
                    faults,
                    faults_file,
                    seed,
                    duration,
                    json,
                    follow_forks,
                };
                cli::attach::attach(options).await
            }
            Command::Partition {
                sides:
                    Sides {
                        between,
                        and,
                        one_way,
                    },
                loss,
                interfaces,
                hook,
                duration,
                json,
            } => {
                let options = cli::partition::Options {
                    between,
                    and,
                    one_way,
                    loss: loss.unwrap_or(100),
                    interfaces,
                    hook,
                    duration,
                    json,
                };
                cli::partition::partition(options).await
            }
            Command::Net {
                sides:
                    Sides {
                        between,
                        and,
                        one_way,
                    },
                impairment,
                seed,
                mechanism,
                duration,
                json,
            } => {
                let impairment = impairment.impairment();
                let options = cli::net::Options {
                    between,
                    and,
                    one_way,
                    impairment,
                    seed,
                    mechanism,
                    duration,
                    json,
                };
                cli::net::net(options).await
            }
            Command::NetGuard => injector_user::net::netem::guard().map_err(Into::into),
            Command::Probe { json } => cli::print_probe(json),
            Command::Ctl {
                pid,
                net,
                cgroup,
                action,
            } => {
                let request = match action {
                    CtlAction::List => cli::control::Request::List,
                    CtlAction::Add { rule } => cli::control::Request::Add { rule },
                    CtlAction::Remove { id } => cli::control::Request::Remove { id },
                    CtlAction::Set { impairment } => {
                        let impairment = impairment.impairment();
                        impairment.validate()?;
                        cli::control::Request::Set { impairment }
                    }
                };
                let addressee = match (pid, net, cgroup) {
                    (Some(pid), _, _) => cli::control::Addressee::pid(pid),
                    (None, Some(net), _) => cli::control::Addressee::net(net),
                    (None, None, Some(path)) => cli::control::Addressee::cgroup(
                        &injector_user::cgroup::Cgroup::open(&path).map_err(InjectorError::from)?,
                    ),
                    (None, None, None) => unreachable!("clap requires --pid, --net or --cgroup"),
                };
                let answer = cli::control::call(&addressee, request).await?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
                Ok(())
            }
            Command::Guard { .. } | Command::Run { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report_error(&error),
    }
}

fn report_error(error: &anyhow::Error) -> ExitCode {
    eprintln!("Error: {error:#}");
    ExitCode::from(if is_bad_input(error) { 2 } else { 1 })
}

/// Mistakes in what the user asked for (exit code 2) rather than failures while doing it.
fn is_bad_input(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<RuleError>().is_some()
            || matches!(
                cause.downcast_ref::<injector_user::net::NetError>(),
                Some(
                    injector_user::net::NetError::BadDuration(_)
                        | injector_user::net::NetError::DelayTooLong { .. }
                        | injector_user::net::NetError::BadPercent(_)
                        | injector_user::net::NetError::BadRate(_)
                        | injector_user::net::NetError::ZeroRate(_)
                        | injector_user::net::NetError::Needs { .. }
                        | injector_user::net::NetError::NothingAsked
                        | injector_user::net::NetError::NotLocal(_)
                        | injector_user::net::NetError::NoNetem(_)
                        | injector_user::net::NetError::NetemHeld
                        | injector_user::net::NetError::DeviceConfigured { .. }
                )
            )
            || matches!(
                cause.downcast_ref::<InjectorError>(),
                Some(
                    InjectorError::NoSuchProcess { .. }
                        | InjectorError::CannotExecute { .. }
                        | InjectorError::NotAProcess { .. }
                        | InjectorError::IsSelf { .. }
                        | InjectorError::InvalidPid { .. }
                        | InjectorError::IsInit
                        | InjectorError::Exited { .. }
                        | InjectorError::NoSuchInterface { .. }
                        | InjectorError::Rule(_)
                        | InjectorError::LsmRefused { .. }
                        | InjectorError::Partition(_)
                        | InjectorError::Cgroup(_)
                )
            )
    })
}
