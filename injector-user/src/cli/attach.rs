//! `injector attach`: fault rules applied in the kernel to a running process (and the processes
//! it starts, with --follow-forks) or to the tasks of a cgroup.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use fault_rules::Action;
use injector_common::{FORKED_FD, FiredEvent, action};
use injector_user::{
    Signaller, Target,
    cgroup::Cgroup,
    fault_session::{FaultSession, RuleStats, Targets},
    rules,
    syscall_names::syscall_name,
};
use serde_json::json;
use tokio::io::unix::AsyncFd;

use super::{EndedBy, StopSignals, control::Addressee, emit_json, guard};

/// How often the fds recorded for path and dst filters are checked for processes that are gone.
const SWEEP_EXITED: Duration = Duration::from_secs(1);

pub struct Options {
    pub pid: Option<u32>,
    pub cgroup: Option<PathBuf>,
    pub faults: Vec<String>,
    pub faults_file: Option<PathBuf>,
    pub seed: u64,
    pub duration: Option<Duration>,
    pub json: bool,
    pub follow_forks: bool,
}

/// What the injector was pointed at.
pub enum Scope {
    Process(Target),
    Cgroup(Cgroup),
}

impl Scope {
    pub fn open(pid: Option<u32>, cgroup: Option<&std::path::Path>) -> Result<Scope> {
        match (pid, cgroup) {
            (Some(1), _) => Err(injector_user::InjectorError::IsInit.into()),
            (Some(pid), None) => Ok(Scope::Process(Target::open(pid)?)),
            (None, Some(path)) => Ok(Scope::Cgroup(
                Cgroup::open(path).map_err(injector_user::InjectorError::from)?,
            )),
            _ => anyhow::bail!("name the target with --pid PID or --cgroup PATH (one of them)"),
        }
    }

    fn target(&self) -> Option<&Target> {
        match self {
            Scope::Process(target) => Some(target),
            Scope::Cgroup(_) => None,
        }
    }

    /// How the control socket and messages name it.
    fn addressee(&self) -> Addressee {
        match self {
            Scope::Process(target) => Addressee::pid(target.pid()),
            Scope::Cgroup(cgroup) => Addressee::cgroup(cgroup),
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Process(target) => format!("pid {} ({})", target.pid(), target.comm()),
            Scope::Cgroup(cgroup) => format!("cgroup {}", cgroup.path.display()),
        }
    }
}

pub async fn attach(options: Options) -> Result<()> {
    injector_user::ebpf_object::require_root()?;
    let mut stop_signals = StopSignals::listen()?;
    let scope = Scope::open(options.pid, options.cgroup.as_deref())?;
    let env = std::env::var("INJECTOR_FAULTS").ok();
    let rules = rules::gather(
        &options.faults,
        options.faults_file.as_deref(),
        env.as_deref(),
    )?;
    if rules.is_empty() {
        return Err(rules::RuleError::NoRules.into());
    }
    let addressee = scope.addressee();
    let control = super::control::Listener::bind(&addressee)?;
    let targets = match &scope {
        Scope::Process(target) => Targets::Process {
            tgid: target.pid(),
            follow_forks: options.follow_forks,
        },
        Scope::Cgroup(cgroup) => Targets::Cgroup {
            id: cgroup.id,
            dir: cgroup.path.clone(),
        },
    };
    let mut session = FaultSession::attach(targets, &rules, options.seed)
        .with_context(|| format!("attaching fault rules to {}", scope.describe()))?;
    // If this process dies while a process it stopped is stopped, the guard continues it.
    let _guard = guard::spawn(scope.target(), session.stopped_map_fd()?)
        .context("starting the guard process")?;
    // SAFETY: the ring buffer owns its fd and stays registered only while `events` lives.
    let mut events = unsafe { AsyncFd::register(session.take_events()?)? };

    if options.json {
        emit_json(&json!({
            "event": "attached",
            "pid": scope.target().map(Target::pid),
            "cgroup": options.cgroup,
            "comm": scope.target().map(Target::comm),
            "rules": rules.iter().map(|r| &r.text).collect::<Vec<_>>(),
        }))?;
    } else {
        eprintln!(
            "injecting into {}: {} rule(s); Ctrl-C to stop",
            scope.describe(),
            rules.len()
        );
        eprintln!(
            "change rules with `injector ctl {} list | add RULE | remove ID`",
            addressee.option
        );
    }

    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let exited = async {
        match scope.target() {
            Some(target) => target.exited().await,
            // A cgroup has no end of its own: Ctrl-C or --duration.
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exited);
    let mut stops = Stops::default();
    let mut sweep = tokio::time::interval(SWEEP_EXITED);
    // Each control connection is read on its own task: a client that connects and says nothing
    // must not hold up the events, the stops and the other clients. Requests come here to be
    // handled (they change the session), answers go back to the task.
    let (requests, mut pending) = tokio::sync::mpsc::channel::<super::control::Call>(16);
    let ended_by = loop {
        tokio::select! {
            _ = sweep.tick(), if session.classifies_fds() => {
                session.sweep_exited().context("forgetting the fds of exited processes")?;
            }
            ready = events.readable_mut() => {
                let mut ready = ready?;
                while let Some(item) = ready.get_inner_mut().next() {
                    let event = fired_event(&item);
                    if event.action == action::OPENED {
                        // The kernel stopped the target at a new fd: classify it, then go on.
                        let fd = event.first_arg as u32;
                        session
                            .classify(event.tgid, fd)
                            .context("classifying a new fd against the path filters")?;
                        session.classified(event.tgid, fd)?;
                        stops.resume_unless_held(event.tgid, &scope, &session)?;
                        continue;
                    }
                    if event.action == action::FORKED {
                        // A new child, stopped out of fork: classify what it inherited.
                        session
                            .classify_process(event.tgid)
                            .context("classifying a new process's fds against the path filters")?;
                        session.classified(event.tgid, FORKED_FD)?;
                        stops.resume_unless_held(event.tgid, &scope, &session)?;
                        continue;
                    }
                    stops.note(&event, &scope, &session)?;
                    report(&session, &event, options.json)?;
                }
                ready.clear_ready();
            }
            accepted = control.socket.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(super::control::serve_client(stream, requests.clone()));
            }
            Some((request, reply)) = pending.recv() => {
                let answer = handle(request, &mut session, &mut stops, &scope);
                let _ = reply.send(answer);
            }
            result = &mut exited => { result.context("waiting for the target")?; break EndedBy::TargetExit; }
            () = &mut deadline => break EndedBy::Duration,
            () = stop_signals.recv() => break EndedBy::Signal,
        }
    };
    // Faults fired just before the end may still be in the ring buffer: the table at the end
    // must not count a fault that was never printed.
    while let Some(item) = events.get_mut().next() {
        let event = fired_event(&item);
        if event.action != action::OPENED && event.action != action::FORKED {
            report(&session, &event, options.json)?;
        }
    }
    stops.continue_all(&scope, &session)?;
    let stats = session.stats()?;
    summarise(&stats, ended_by, options.json)
}

/// One ring-buffer record of the fault program.
fn fired_event(record: &[u8]) -> FiredEvent {
    // SAFETY: the kernel wrote exactly one FiredEvent per record.
    unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) }
}

/// Carries out one `injector ctl` request.
fn handle(
    request: super::control::Request,
    session: &mut FaultSession,
    stops: &mut Stops,
    scope: &Scope,
) -> serde_json::Value {
    use super::control::Request;
    match request {
        Request::List => match session.stats().and_then(|stats| {
            session
                .classified_fds()
                .map(|classified| (stats, classified))
        }) {
            Ok((stats, classified)) => json!({"rules": stats, "classified_fds": classified}),
            Err(error) => json!({"error": error.to_string()}),
        },
        Request::Add { rule } => {
            let added = fault_rules::parse_rule(&rule)
                .map_err(|e| e.to_string())
                .and_then(|parsed| session.add(&parsed).map_err(|e| e.to_string()));
            match added {
                Ok(id) => json!({"id": id}),
                Err(error) => json!({"error": error}),
            }
        }
        Request::Set { .. } => json!({
            "error": "`set` changes a running `injector net` (ctl --net PID); an attach takes add and remove"
        }),
        Request::Remove { id } => match session.remove(id) {
            Ok(true) => {
                // A pause lasts until its rule goes.
                match stops.end_pause(id, session) {
                    Ok(()) => json!({"removed": id}),
                    Err(error) => json!({"error": format!("{error:#}")}),
                }
            }
            Ok(false) => {
                json!({"error": format!("no rule with id {id}; `injector ctl {} list` shows them", scope.addressee().option)})
            }
            Err(error) => json!({"error": error.to_string()}),
        },
    }
}

/// The processes the kernel has stopped (delays, pauses, new fds to classify): each is continued
/// when its stop ends and, whatever happens, when the injector exits; and which pause rules hold
/// which of them.
#[derive(Default)]
struct Stops {
    /// A pidfd of every process stopped so far, by tgid.
    stopped: BTreeMap<u32, Signaller>,
    /// Pause rule -> the processes it holds.
    paused_by: BTreeMap<usize, BTreeSet<u32>>,
    /// Process -> its delays whose SIGCONT has not been sent yet.
    delaying: Arc<Mutex<BTreeMap<u32, usize>>>,
}

impl Stops {
    fn note(&mut self, event: &FiredEvent, scope: &Scope, session: &FaultSession) -> Result<()> {
        match action_of(session, event) {
            Some(Action::Delay(ms)) => {
                let tgid = event.tgid;
                let Some(signaller) = self.signaller_or_warn(tgid, scope, session) else {
                    return Ok(());
                };
                let signaller = signaller.try_clone()?;
                // The stop happened at the kernel's timestamp (CLOCK_MONOTONIC): continue at
                // exactly that plus the delay, on a thread of its own so ring-buffer latency and
                // timer-wheel granularity do not lengthen the stall.
                let deadline = event.time_ns + ms * 1_000_000;
                let delaying = self.delaying.clone();
                let classifications = session.classifications()?;
                *lock(&delaying).entry(tgid).or_default() += 1;
                std::thread::spawn(move || {
                    sleep_until_monotonic(deadline);
                    // Under the lock the classifier also takes: either it sees this delay
                    // still holding the process, or this sees its classification done.
                    let mut delaying = lock(&delaying);
                    if let Some(count) = delaying.get_mut(&tgid) {
                        *count -= 1;
                        if *count == 0 {
                            delaying.remove(&tgid);
                        }
                    }
                    // A new fd still being classified: its classifier continues the process.
                    if !classifications.pending_for(tgid) {
                        signaller.signal(libc::SIGCONT).ok();
                    }
                });
            }
            Some(Action::Pause) => {
                if self.signaller_or_warn(event.tgid, scope, session).is_none() {
                    return Ok(());
                }
                self.paused_by
                    .entry(event.rule as usize)
                    .or_default()
                    .insert(event.tgid);
            }
            _ => {}
        }
        Ok(())
    }

    /// A pidfd of the process the kernel just stopped. The attached pid's comes from its
    /// Target; another process's is opened and then checked against STOPPED, so it cannot be
    /// of a process that reused the pid.
    fn signaller(
        &mut self,
        tgid: u32,
        scope: &Scope,
        session: &FaultSession,
    ) -> Result<&Signaller> {
        if let std::collections::btree_map::Entry::Vacant(entry) = self.stopped.entry(tgid) {
            let signaller = match scope.target() {
                Some(target) if target.pid() == tgid => target.signaller()?,
                _ => {
                    let signaller = Signaller::open(tgid)
                        .with_context(|| format!("opening pid {tgid}, which a rule stopped"))?;
                    anyhow::ensure!(
                        session.is_stopped(tgid)?,
                        "pid {tgid} exited while stopped; not continuing whatever has its pid now"
                    );
                    signaller
                }
            };
            entry.insert(signaller);
        }
        Ok(&self.stopped[&tgid])
    }

    /// As signaller; a process that is gone (killed while stopped) is only worth a warning.
    fn signaller_or_warn(
        &mut self,
        tgid: u32,
        scope: &Scope,
        session: &FaultSession,
    ) -> Option<&Signaller> {
        match self.signaller(tgid, scope, session) {
            Ok(signaller) => Some(signaller),
            Err(error) => {
                tracing::warn!("{error:#}");
                None
            }
        }
    }

    /// Continues `tgid`, stopped for a moment at a new fd, unless a delay, a pause or another
    /// classification holds it (its own SIGCONT will come).
    fn resume_unless_held(
        &mut self,
        tgid: u32,
        scope: &Scope,
        session: &FaultSession,
    ) -> Result<()> {
        // Another of its fds may still wait to be classified (threads opening at once): the
        // last classification continues it.
        let held = self.paused_by.values().any(|held| held.contains(&tgid))
            || lock(&self.delaying).contains_key(&tgid)
            || session.classifications()?.pending_for(tgid);
        let Some(signaller) = self.signaller_or_warn(tgid, scope, session) else {
            return Ok(());
        };
        if !held {
            signaller.signal(libc::SIGCONT).ok();
        }
        Ok(())
    }

    /// The pause rule `rule` is gone: continue the processes no other pause holds (one with a
    /// classification pending is continued by it, once done).
    fn end_pause(&mut self, rule: usize, session: &FaultSession) -> Result<()> {
        let Some(held) = self.paused_by.remove(&rule) else {
            return Ok(());
        };
        let classifications = session.classifications()?;
        for tgid in held {
            let still_paused = self.paused_by.values().any(|other| other.contains(&tgid));
            if !still_paused
                && !classifications.pending_for(tgid)
                && let Some(signaller) = self.stopped.get(&tgid)
            {
                signaller.signal(libc::SIGCONT).ok();
            }
        }
        Ok(())
    }

    /// At the end: continues every process stopped, including any whose stop the kernel made
    /// but whose event was not read.
    fn continue_all(&mut self, scope: &Scope, session: &FaultSession) -> Result<()> {
        for tgid in session.stopped()? {
            // One that exited meanwhile has nothing to continue.
            let _ = self.signaller(tgid, scope, session);
        }
        for signaller in self.stopped.values() {
            signaller.signal(libc::SIGCONT).ok();
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sleep_until_monotonic(deadline_ns: u64) {
    let deadline = rustix::thread::Timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as i64,
        tv_nsec: (deadline_ns % 1_000_000_000) as _,
    };
    // An absolute deadline: a sleep interrupted by a signal just sleeps again to the same end.
    while rustix::thread::clock_nanosleep_absolute(rustix::thread::ClockId::Monotonic, &deadline)
        == Err(rustix::io::Errno::INTR)
    {}
}

fn action_of<'a>(session: &'a FaultSession, event: &FiredEvent) -> Option<&'a Action> {
    let rule = session.rule(event.rule as usize)?;
    Some(&rule.chain.terms().get(event.term as usize)?.action)
}

fn report(session: &FaultSession, event: &FiredEvent, json: bool) -> Result<()> {
    let rule = session
        .rule(event.rule as usize)
        .map_or("?", |r| r.text.as_str());
    let action = action_of(session, event).map_or("?".to_owned(), ToString::to_string);
    let syscall = syscall_name(event.syscall_nr).unwrap_or("?");
    if json {
        return emit_json(&json!({
            "event": "fault",
            "rule": event.rule,
            "rule_text": rule,
            "syscall": syscall,
            "call": event.call + 1,
            "action": action,
            "pid": event.tgid,
            "tid": event.tid,
            "first_arg": event.first_arg,
            "time_ns": event.time_ns,
        }));
    }
    println!(
        "fault: {action} at {syscall} call #{} (pid {}, tid {}, first argument {}) by rule `{rule}`",
        event.call + 1,
        event.tgid,
        event.tid,
        event.first_arg
    );
    Ok(())
}

fn summarise(stats: &[RuleStats], ended_by: EndedBy, json: bool) -> Result<()> {
    if json {
        return emit_json(
            &json!({"event": "summary", "ended_by": ended_by.as_str(), "rules": stats}),
        );
    }
    println!("ended by {}", ended_by.as_str());
    println!("{:>10} {:>8}  rule", "calls", "faults");
    for stat in stats {
        println!("{:>10} {:>8}  {}", stat.calls, stat.faults, stat.rule);
    }
    Ok(())
}
