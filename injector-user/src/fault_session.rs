//! `injector attach`: the fault program loaded, configured for one target and its rules, and
//! attached. Every link is owned by this process, so its exit (even by SIGKILL) detaches all.
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData, RingBuf},
    programs::{BtfTracePoint, Lsm},
};
use fault_rules::Rule;
use injector_common::{
    CLASSIFYING_MAP, COUNT_TRACEPOINT, ERROR_HOOKS, EVENTS_MAP, EXIT_CATEGORY, EXIT_TRACEPOINT,
    FAULT_CONFIG_MAP, FAULT_PROGRAM, FOLLOW_FORKS_CATEGORY, FOLLOW_FORKS_PROGRAM,
    FOLLOW_FORKS_TRACEPOINT, FORGET_EXITED_PROGRAM, FORK_CONFIG_MAP, FaultConfig, ForkConfig,
    KernelRule, MAX_RULES, MAX_TERMS, OPENS_PROGRAM, PATH_FDS_MAP, PEER_FDS_MAP, RULE_COUNTERS_MAP,
    RULES_MAP, RuleCounters, STOPPED_MAP, SYS_EXIT_TRACEPOINT, SYSCALL_RULES_MAP, TARGETS_MAP,
    UNLIMITED, fd_key,
};

use crate::{
    InjectorError, ebpf_object,
    probe::describe,
    rules::{RuleError, compile_for_attach, error_hooks, has_error_action, path_filter},
    sockets::ProcessSockets,
};

pub struct FaultSession {
    ebpf: Ebpf,
    /// Kernel rule slots; a removed rule leaves an empty slot, so rule ids stay stable.
    slots: Vec<Option<KernelRule>>,
    /// Syscalls that have had a rule mask set, to clear the ones no rule names any more.
    masked: std::collections::BTreeSet<u32>,
    seed: u64,
    /// LSM hooks whose error program is attached (only once a rule needs them: each one runs
    /// for every process's calls through that hook).
    error_hooks: std::collections::BTreeSet<&'static str>,
    targets: Targets,
    /// Each slot's path filter, matched in user space against the file behind each fd.
    paths: Vec<Option<fault_rules::Glob>>,
    /// Each slot: whether it filters by peer (dst=), for which the peer of the socket behind
    /// every fd is looked up in user space.
    peers: Vec<bool>,
    /// Whether the sys_exit program that reports new fds is attached.
    opens_attached: bool,
    /// Set once attach has written the configuration that makes the target targeted.
    live: bool,
    /// The kernel's BTF, parsed once: the tracepoint and every LSM program load against it.
    btf: Btf,
}

/// The classifications in progress, readable from any thread.
pub struct Classifications {
    map: HashMap<MapData, u64, u32>,
}

impl Classifications {
    /// Whether the kernel holds `tgid` stopped until a classification is done.
    pub fn pending_for(&self, tgid: u32) -> bool {
        self.map
            .keys()
            .flatten()
            .any(|key| (key >> 32) as u32 == tgid)
    }
}

/// Which tasks the rules apply to.
#[derive(Clone, Debug)]
pub enum Targets {
    /// Every thread of one process; with `follow_forks`, also every process it starts from
    /// now on, and theirs.
    Process { tgid: u32, follow_forks: bool },
    /// Every task in one cgroup v2 (by id), whichever process it belongs to; `dir` lists them.
    Cgroup { id: u64, dir: std::path::PathBuf },
}

/// What a rule did so far.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RuleStats {
    pub id: usize,
    pub rule: String,
    pub calls: u64,
    /// Times a term other than `off`/`count` fired.
    pub faults: u64,
}

impl FaultSession {
    /// Compiles every rule first, so a bad rule attaches nothing.
    pub fn attach(targets: Targets, rules: &[Rule], seed: u64) -> Result<Self, InjectorError> {
        let compiled = rules
            .iter()
            .map(|rule| compile_for_attach(rule, seed))
            .collect::<Result<Vec<_>, _>>()?;
        let ebpf = ebpf_object::load()?;
        let mut session = FaultSession {
            ebpf,
            btf: Btf::from_sys_fs()?,
            slots: Vec::new(),
            masked: Default::default(),
            seed,
            error_hooks: Default::default(),
            targets,
            paths: Vec::new(),
            peers: Vec::new(),
            opens_attached: false,
            live: false,
        };
        for rule in rules {
            session.attach_error_hooks(rule)?;
        }
        for (compiled, rule) in compiled.into_iter().zip(rules) {
            session.fill_slot(compiled, path_filter(rule).cloned())?;
        }
        if let Targets::Process { tgid, .. } = session.targets {
            let mut map: HashMap<_, u32, u32> =
                HashMap::try_from(map_mut(&mut session.ebpf, TARGETS_MAP)?).map_err(|source| {
                    InjectorError::Map {
                        name: TARGETS_MAP,
                        source,
                    }
                })?;
            map.insert(tgid, 1, 0)
                .map_err(|source| InjectorError::Map {
                    name: TARGETS_MAP,
                    source,
                })?;
        }
        match session.targets {
            Targets::Process {
                follow_forks: true, ..
            } => session.follow_forks()?,
            // Its processes can be stopped: the exited must leave STOPPED.
            Targets::Cgroup { .. } => session.follow_exits()?,
            Targets::Process { .. } => {}
        }
        // Set last: until then the program treats every process as not targeted.
        session.live = true;
        session.write_config()?;
        // Again: an fd made between the first classification and now had nobody to report it.
        session.classify_all()?;
        session.attach_btf_tracepoint(FAULT_PROGRAM, COUNT_TRACEPOINT)?;
        Ok(session)
    }

    /// Attaches the programs that add the target's new child processes to the targets and take
    /// them out again when they exit, with the tracepoints' field offsets read from their format
    /// files. The exit program goes first, so no child is ever added without it.
    fn follow_forks(&mut self) -> Result<(), InjectorError> {
        let fork_fields = tracepoint_fields(FOLLOW_FORKS_CATEGORY, FOLLOW_FORKS_TRACEPOINT)?;
        let offset = |name: &str| {
            fork_fields.get(name).copied().ok_or_else(|| {
                InjectorError::Rule(RuleError::Refused(format!(
                    "--follow-forks: the kernel's {FOLLOW_FORKS_CATEGORY}/{FOLLOW_FORKS_TRACEPOINT} tracepoint has no `{name}` field"
                )))
            })
        };
        let pid_offset = offset("pid")?;
        let clone_flags_offset = offset("clone_flags")?;
        self.follow_exits()?;
        let mut configs = array_mut::<ForkConfig>(&mut self.ebpf, FORK_CONFIG_MAP)?;
        let config = configs.get(&0, 0).map_err(|source| InjectorError::Map {
            name: FORK_CONFIG_MAP,
            source,
        })?;
        let config = ForkConfig {
            pid_offset,
            clone_flags_offset,
            ..config
        };
        configs
            .set(0, config, 0)
            .map_err(|source| InjectorError::Map {
                name: FORK_CONFIG_MAP,
                source,
            })?;
        self.attach_tracepoint(
            FOLLOW_FORKS_PROGRAM,
            FOLLOW_FORKS_CATEGORY,
            FOLLOW_FORKS_TRACEPOINT,
        )
    }

    /// Attaches the program that takes exited processes out of TARGETS and STOPPED.
    fn follow_exits(&mut self) -> Result<(), InjectorError> {
        let exit_fields = tracepoint_fields(EXIT_CATEGORY, EXIT_TRACEPOINT)?;
        let config = ForkConfig {
            group_dead_offset: exit_fields.get("group_dead").copied().unwrap_or(0),
            ..ForkConfig::default()
        };
        array_mut::<ForkConfig>(&mut self.ebpf, FORK_CONFIG_MAP)?
            .set(0, config, 0)
            .map_err(|source| InjectorError::Map {
                name: FORK_CONFIG_MAP,
                source,
            })?;
        self.attach_tracepoint(FORGET_EXITED_PROGRAM, EXIT_CATEGORY, EXIT_TRACEPOINT)
    }

    /// The processes a delay or pause has stopped and that have not exited (as far as the
    /// kernel has told: only with --follow-forks and --cgroup does it take the exited out).
    pub fn stopped(&self) -> Result<Vec<u32>, InjectorError> {
        Ok(self.stopped_map()?.keys().flatten().collect())
    }

    /// Whether `tgid` is in STOPPED. With --follow-forks and --cgroup, a process leaves it as it
    /// exits, before its pid can be reused: a pidfd opened before this answers yes is of the
    /// process that was stopped.
    pub fn is_stopped(&self, tgid: u32) -> Result<bool, InjectorError> {
        match self.stopped_map()?.get(&tgid, 0) {
            Ok(_) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(InjectorError::Map {
                name: STOPPED_MAP,
                source,
            }),
        }
    }

    fn stopped_map(&self) -> Result<HashMap<&MapData, u32, u32>, InjectorError> {
        hash_map(&self.ebpf, STOPPED_MAP)
    }

    /// The classification of `tgid`'s `fd` (FORKED_FD: of a new child's fds) is done.
    pub fn classified(&mut self, tgid: u32, fd: u32) -> Result<(), InjectorError> {
        let key = fd_key(tgid, fd);
        store_or_forget::<u32>(&mut self.ebpf, CLASSIFYING_MAP, key, None)
    }

    /// A view of the classifications in progress, for another thread.
    pub fn classifications(&self) -> Result<Classifications, InjectorError> {
        let fd = self.map_fd(CLASSIFYING_MAP)?;
        let data = MapData::from_fd(fd).map_err(|source| InjectorError::Map {
            name: CLASSIFYING_MAP,
            source,
        })?;
        let map = HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(|source| {
            InjectorError::Map {
                name: CLASSIFYING_MAP,
                source,
            }
        })?;
        Ok(Classifications { map })
    }

    /// A descriptor of the STOPPED map for the guard to inherit (close-on-exec cleared by it).
    pub fn stopped_map_fd(&self) -> Result<std::os::fd::OwnedFd, InjectorError> {
        self.map_fd(STOPPED_MAP)
    }

    /// A new descriptor of the hash map `name`.
    fn map_fd(&self, name: &'static str) -> Result<std::os::fd::OwnedFd, InjectorError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(InjectorError::Missing { kind: "map", name })?;
        let data = match map {
            aya::maps::Map::HashMap(data) => data,
            _ => {
                return Err(InjectorError::Missing {
                    kind: "hash map",
                    name,
                });
            }
        };
        use std::os::fd::AsFd;
        data.fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| InjectorError::Guard { source })
    }

    /// Loads the tracepoint program `name` and attaches it to `category/tracepoint` (the link is
    /// ours).
    fn attach_tracepoint(
        &mut self,
        name: &'static str,
        category: &str,
        tracepoint: &str,
    ) -> Result<(), InjectorError> {
        let failed = |source| InjectorError::Program { name, source };
        let program: &mut aya::programs::TracePoint =
            ebpf_object::program_mut(&mut self.ebpf, name)?;
        program.load().map_err(failed)?;
        program.attach(category, tracepoint).map_err(failed)?;
        Ok(())
    }

    /// Adds a rule while attached; returns its id.
    pub fn add(&mut self, rule: &Rule) -> Result<usize, InjectorError> {
        let compiled = compile_for_attach(rule, self.seed)?;
        self.attach_error_hooks(rule)?;
        self.write_config()?;
        self.fill_slot(compiled, path_filter(rule).cloned())
    }

    /// The rules (bit per rule) whose path filter matches the file behind `fd` of `tgid`,
    /// stored for the kernel; called for every fd the target makes, while it is stopped.
    pub fn classify(&mut self, tgid: u32, fd: u32) -> Result<u32, InjectorError> {
        self.classify_fd(tgid, fd, &mut None)
    }

    /// As classify; `sockets` holds a handle on `tgid` once opened, so classifying all of a
    /// process's fds opens it once.
    fn classify_fd(
        &mut self,
        tgid: u32,
        fd: u32,
        sockets: &mut Option<ProcessSockets>,
    ) -> Result<u32, InjectorError> {
        let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok();
        if self.peers.contains(&true) {
            self.store_peer(tgid, fd, link.as_deref(), sockets)?;
        }
        let mask = link.map_or(0, |path| {
            let path = path.to_string_lossy();
            self.paths
                .iter()
                .enumerate()
                .filter(|(_, glob)| glob.as_ref().is_some_and(|g| g.matches(&path)))
                .fold(0u32, |mask, (id, _)| mask | 1 << id)
        });
        let key = fd_key(tgid, fd);
        store_or_forget(
            &mut self.ebpf,
            PATH_FDS_MAP,
            key,
            (mask != 0).then_some(mask),
        )?;
        Ok(mask)
    }

    /// Stores the connected peer of the socket behind `fd` of `tgid` for the kernel's dst=
    /// filters, or forgets the fd's peer if it has none (not a socket, not IPv4, unconnected).
    fn store_peer(
        &mut self,
        tgid: u32,
        fd: u32,
        link: Option<&std::path::Path>,
        sockets: &mut Option<ProcessSockets>,
    ) -> Result<(), InjectorError> {
        let is_socket = link.and_then(crate::sockets::socket_inode).is_some();
        if is_socket && sockets.is_none() {
            // A process that is gone has no peers to record.
            *sockets = ProcessSockets::open(tgid).ok();
        }
        let peer = sockets
            .as_ref()
            .filter(|_| is_socket)
            .and_then(|sockets| sockets.ends(fd))
            .and_then(|ends| ends.peer);
        let value = peer.map(|peer| {
            let (addr, port) = crate::rules::sockaddr_in_values(&peer);
            (u64::from(port) << 32) | u64::from(addr)
        });
        let key = fd_key(tgid, fd);
        store_or_forget(&mut self.ebpf, PEER_FDS_MAP, key, value)
    }

    /// Whether some rule filters by path or peer, so fds are being classified.
    pub fn classifies_fds(&self) -> bool {
        self.paths.iter().any(Option::is_some) || self.peers.contains(&true)
    }

    /// How many fds have a path or peer recorded for the kernel now.
    pub fn classified_fds(&self) -> Result<usize, InjectorError> {
        let paths: HashMap<_, u64, u32> = hash_map(&self.ebpf, PATH_FDS_MAP)?;
        let peers: HashMap<_, u64, u64> = hash_map(&self.ebpf, PEER_FDS_MAP)?;
        Ok(paths.keys().flatten().count() + peers.keys().flatten().count())
    }

    /// Forgets the fds of processes that are gone. A process that exits without closing its
    /// fds (killed, or simply exiting) leaves them behind, and followed children come and go.
    pub fn sweep_exited(&mut self) -> Result<(), InjectorError> {
        forget_exited::<u32>(&mut self.ebpf, PATH_FDS_MAP)?;
        forget_exited::<u64>(&mut self.ebpf, PEER_FDS_MAP)
    }

    /// Classifies every fd of every process targeted now.
    fn classify_all(&mut self) -> Result<(), InjectorError> {
        if !self.classifies_fds() {
            return Ok(());
        }
        for tgid in self.targeted_now()? {
            self.classify_process(tgid)?;
        }
        Ok(())
    }

    /// Classifies every fd `tgid` has now (a new child is stopped while this runs).
    pub fn classify_process(&mut self, tgid: u32) -> Result<(), InjectorError> {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{tgid}/fd")) else {
            return Ok(());
        };
        let mut sockets = None;
        for entry in entries.flatten() {
            if let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                self.classify_fd(tgid, fd, &mut sockets)?;
            }
        }
        Ok(())
    }

    /// The processes the rules apply to at this moment.
    fn targeted_now(&self) -> Result<Vec<u32>, InjectorError> {
        match &self.targets {
            Targets::Process {
                tgid,
                follow_forks: false,
            } => Ok(vec![*tgid]),
            Targets::Process { .. } => {
                let targets: HashMap<_, u32, u32> = hash_map(&self.ebpf, TARGETS_MAP)?;
                Ok(targets.keys().flatten().collect())
            }
            // A process that left the cgroup meanwhile is classified for nothing; one that was
            // never listed cannot be helped (its calls are not targeted after it leaves).
            Targets::Cgroup { dir, .. } => Ok(std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|pid| pid.trim().parse().ok())
                .collect()),
        }
    }

    /// Loads `name` for the BTF tracepoint `tracepoint` and attaches it (the link is ours).
    fn attach_btf_tracepoint(
        &mut self,
        name: &'static str,
        tracepoint: &str,
    ) -> Result<(), InjectorError> {
        let failed = |source| InjectorError::Program { name, source };
        let program: &mut BtfTracePoint = ebpf_object::program_mut(&mut self.ebpf, name)?;
        program.load(tracepoint, &self.btf).map_err(failed)?;
        program.attach().map_err(failed)?;
        Ok(())
    }

    /// Attaches the program that stops the target at each new fd until it is classified.
    fn attach_opens(&mut self) -> Result<(), InjectorError> {
        if self.opens_attached {
            return Ok(());
        }
        self.attach_btf_tracepoint(OPENS_PROGRAM, SYS_EXIT_TRACEPOINT)?;
        self.opens_attached = true;
        Ok(())
    }

    fn write_config(&mut self) -> Result<(), InjectorError> {
        let (single_tgid, cgroup_id) = match &self.targets {
            Targets::Process {
                tgid,
                follow_forks: false,
            } => (*tgid, 0),
            // Followed children are in the TARGETS map, with the target.
            Targets::Process { .. } => (0, 0),
            Targets::Cgroup { id, .. } => (0, *id),
        };
        let config = FaultConfig {
            single_tgid,
            has_error_rules: u32::from(!self.error_hooks.is_empty()),
            cgroup_id,
            path_rules: self.paths.iter().flatten().count() as u32,
            dst_rules: self.peers.iter().filter(|&&by_dst| by_dst).count() as u32,
        };
        array_mut::<FaultConfig>(&mut self.ebpf, FAULT_CONFIG_MAP)?
            .set(0, config, 0)
            .map_err(|source| InjectorError::Map {
                name: FAULT_CONFIG_MAP,
                source,
            })
    }

    /// Attaches the LSM programs that deliver the rule's error(), if it has one. Of alternative
    /// hooks (ftruncate: file_truncate or path_truncate) the kernel must accept at least one.
    fn attach_error_hooks(&mut self, rule: &Rule) -> Result<(), InjectorError> {
        if !has_error_action(rule) {
            return Ok(());
        }
        let hooks = error_hooks(&rule.op).unwrap_or_default();
        let mut refusal = None;
        let mut attached_any = false;
        for &hook in hooks {
            match self.attach_error_hook(hook) {
                Ok(()) => attached_any = true,
                Err(reason) => refusal = Some((hook, reason)),
            }
        }
        match refusal {
            Some((hook, reason)) if !attached_any => Err(InjectorError::LsmRefused {
                rule: rule.text.clone(),
                hook,
                reason,
            }),
            _ => Ok(()),
        }
    }

    fn attach_error_hook(&mut self, hook: &str) -> Result<(), String> {
        let Some(&(name, hook)) = ERROR_HOOKS.iter().find(|(_, h)| *h == hook) else {
            return Err("no program for this hook in the eBPF object".into());
        };
        if self.error_hooks.contains(hook) {
            return Ok(());
        }
        let program: &mut Lsm = self
            .ebpf
            .program_mut(name)
            .ok_or(
                "program missing from the eBPF object: rebuild it with `cargo xtask build-ebpf`",
            )?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        program.load(hook, &self.btf).map_err(describe)?;
        program.attach().map_err(describe)?;
        self.error_hooks.insert(hook);
        Ok(())
    }

    /// Removes a rule; false if there is no rule with that id.
    pub fn remove(&mut self, id: usize) -> Result<bool, InjectorError> {
        if self.slots.get(id).is_none_or(Option::is_none) {
            return Ok(false);
        }
        self.slots[id] = None;
        self.paths[id] = None;
        self.peers[id] = false;
        self.write_slot(id, KernelRule::default())?;
        self.refresh_masks()?;
        self.write_config()?;
        Ok(true)
    }

    fn fill_slot(
        &mut self,
        rule: KernelRule,
        path: Option<fault_rules::Glob>,
    ) -> Result<usize, InjectorError> {
        let id = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.slots.len() < MAX_RULES as usize => {
                self.slots.push(None);
                self.paths.push(None);
                self.peers.push(false);
                self.slots.len() - 1
            }
            None => return Err(crate::rules::RuleError::TooManyRules.into()),
        };
        if path.is_some() || rule.by_dst != 0 {
            // Every fd classified for this rule before the rule can match anything.
            self.paths[id] = path;
            self.peers[id] = rule.by_dst != 0;
            self.attach_opens()?;
            if self.live {
                // New fds are reported from now on, so none is missed while classifying.
                self.write_config()?;
            }
            self.classify_all()?;
        }
        array_mut::<RuleCounters>(&mut self.ebpf, RULE_COUNTERS_MAP)?
            .set(id as u32, RuleCounters::default(), 0)
            .map_err(|source| InjectorError::Map {
                name: RULE_COUNTERS_MAP,
                source,
            })?;
        self.write_slot(id, rule)?;
        self.slots[id] = Some(rule);
        self.refresh_masks()?;
        Ok(id)
    }

    fn write_slot(&mut self, id: usize, rule: KernelRule) -> Result<(), InjectorError> {
        array_mut::<KernelRule>(&mut self.ebpf, RULES_MAP)?
            .set(id as u32, rule, 0)
            .map_err(|source| InjectorError::Map {
                name: RULES_MAP,
                source,
            })
    }

    /// Which rules each syscall has: a call no rule names costs one lookup.
    fn refresh_masks(&mut self) -> Result<(), InjectorError> {
        let mut masks = std::collections::BTreeMap::<u32, u32>::new();
        for syscall in &self.masked {
            masks.insert(*syscall, 0);
        }
        for (id, rule) in self.slots.iter().enumerate() {
            if let Some(rule) = rule {
                *masks.entry(rule.syscall_nr).or_default() |= 1 << id;
            }
        }
        let mut by_syscall = array_mut::<u32>(&mut self.ebpf, SYSCALL_RULES_MAP)?;
        for (syscall, mask) in &masks {
            by_syscall
                .set(*syscall, mask, 0)
                .map_err(|source| InjectorError::Map {
                    name: SYSCALL_RULES_MAP,
                    source,
                })?;
        }
        self.masked = masks
            .into_iter()
            .filter(|(_, mask)| *mask != 0)
            .map(|(s, _)| s)
            .collect();
        Ok(())
    }

    /// The ring buffer of fired faults (can be taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, InjectorError> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or(InjectorError::Missing {
                kind: "map",
                name: EVENTS_MAP,
            })?;
        RingBuf::try_from(map).map_err(|source| InjectorError::Map {
            name: EVENTS_MAP,
            source,
        })
    }

    /// Calls and faults of every live rule; `rules[id]` is the text of rule `id`.
    pub fn stats(&self, rules: &[Option<Rule>]) -> Result<Vec<RuleStats>, InjectorError> {
        let counters: Array<_, RuleCounters> = Array::try_from(
            self.ebpf
                .map(RULE_COUNTERS_MAP)
                .ok_or(InjectorError::Missing {
                    kind: "map",
                    name: RULE_COUNTERS_MAP,
                })?,
        )
        .map_err(|source| InjectorError::Map {
            name: RULE_COUNTERS_MAP,
            source,
        })?;
        let mut stats = Vec::new();
        for (id, (rule, compiled)) in rules.iter().zip(&self.slots).enumerate() {
            let (Some(rule), Some(compiled)) = (rule, compiled) else {
                continue;
            };
            let counter = counters
                .get(&(id as u32), 0)
                .map_err(|source| InjectorError::Map {
                    name: RULE_COUNTERS_MAP,
                    source,
                })?;
            let faults = (0..(compiled.term_count as usize).min(MAX_TERMS))
                .filter(|&t| {
                    let kind = compiled.terms[t].action;
                    kind != injector_common::action::OFF && kind != injector_common::action::COUNT
                })
                .map(|t| {
                    let limit = compiled.terms[t].count;
                    // A counted term's tickets may run past its count; it fired `count` times.
                    if limit == UNLIMITED {
                        counter.fired[t]
                    } else {
                        counter.fired[t].min(limit)
                    }
                })
                .sum();
            stats.push(RuleStats {
                id,
                rule: rule.text.clone(),
                calls: counter.calls,
                faults,
            });
        }
        Ok(stats)
    }
}

fn array_mut<'a, T: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<Array<&'a mut MapData, T>, InjectorError> {
    Array::try_from(map_mut(ebpf, name)?).map_err(|source| InjectorError::Map { name, source })
}

/// `key` set to `value` in the hash map `name`, or taken out of it when there is no value.
fn store_or_forget<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    key: u64,
    value: Option<V>,
) -> Result<(), InjectorError> {
    let mut map: HashMap<_, u64, V> = HashMap::try_from(map_mut(ebpf, name)?)
        .map_err(|source| InjectorError::Map { name, source })?;
    let stored = match value {
        Some(value) => map.insert(key, value, 0),
        // aya reports a key that is not there as the syscall's ENOENT.
        None => match map.remove(&key) {
            Err(aya::maps::MapError::SyscallError(error))
                if error.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            removed => removed,
        },
    };
    stored.map_err(|source| InjectorError::Map { name, source })
}

/// Takes the fds of processes that are gone (keys from [`fd_key`]) out of the hash map `name`.
fn forget_exited<V: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), InjectorError> {
    let stale: Vec<u64> = hash_map::<u64, V>(ebpf, name)?
        .keys()
        .flatten()
        .filter(|key| !std::path::Path::new(&format!("/proc/{}", key >> 32)).exists())
        .collect();
    for key in stale {
        store_or_forget::<V>(ebpf, name, key, None)?;
    }
    Ok(())
}

/// The hash map `name`, for reading.
fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a MapData, K, V>, InjectorError> {
    let map = ebpf
        .map(name)
        .ok_or(InjectorError::Missing { kind: "map", name })?;
    HashMap::try_from(map).map_err(|source| InjectorError::Map { name, source })
}

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, InjectorError> {
    ebpf.map_mut(name)
        .ok_or(InjectorError::Missing { kind: "map", name })
}

/// Field name to offset in a tracepoint's record, from its format file in tracefs.
fn tracepoint_fields(
    category: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, u32>, InjectorError> {
    let path = format!("/sys/kernel/tracing/events/{category}/{name}/format");
    let text = std::fs::read_to_string(&path).map_err(|error| {
        InjectorError::Rule(RuleError::Refused(format!(
            "cannot read {path} ({error}): mount tracefs with `mount -t tracefs tracefs /sys/kernel/tracing`"
        )))
    })?;
    Ok(parse_format(&text))
}

/// `field:pid_t pid;\toffset:8;\tsize:4;...` lines to (`pid`, 8).
fn parse_format(text: &str) -> std::collections::BTreeMap<String, u32> {
    text.lines()
        .filter_map(|line| {
            let field = line.trim().strip_prefix("field:")?;
            let (declaration, rest) = field.split_once(';')?;
            let name = declaration
                .split_whitespace()
                .last()?
                .split('[')
                .next()?
                .to_owned();
            let offset = rest
                .split(';')
                .find_map(|part| part.trim().strip_prefix("offset:"))?
                .parse()
                .ok()?;
            Some((name, offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_format;

    #[test]
    fn reads_field_offsets_from_a_tracepoint_format() {
        let format = "name: task_newtask\nformat:\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n";
        let fields = parse_format(format);
        assert_eq!(fields["pid"], 8);
        assert_eq!(fields["comm"], 12);
        assert_eq!(fields["clone_flags"], 32);
        assert_eq!(fields["common_pid"], 4);
    }
}
