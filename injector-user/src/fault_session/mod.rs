//! `injector attach`: the fault program loaded, configured for one target and its rules, and
//! attached. Every link is owned by this process, so its exit (even by SIGKILL) detaches all.
//!
//! This file holds the session and its rule slots; `programs` loads and attaches the eBPF
//! programs, `classify` records the path and peer behind each fd for the kernel's filters,
//! `stops` reads which processes a delay or pause holds, and `maps` is the access to the
//! kernel's maps they all share.
mod classify;
mod maps;
mod programs;
mod stops;

use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData, RingBuf},
};
use fault_rules::Rule;
use injector_common::{
    COUNT_TRACEPOINT, EVENTS_MAP, FAULT_CONFIG_MAP, FAULT_PROGRAM, FaultConfig, KernelRule,
    MAX_RULES, MAX_TERMS, RULE_COUNTERS_MAP, RULES_MAP, RuleCounters, SYSCALL_RULES_MAP,
    TARGETS_MAP, UNLIMITED,
};

pub use classify::Classifications;
use maps::{array_mut, map_mut};

use crate::{
    InjectorError, ebpf_object,
    rules::{compile_for_attach, path_filter},
};

pub struct FaultSession {
    ebpf: Ebpf,
    /// The rules by id; a removed rule leaves an empty slot, so rule ids stay stable.
    slots: Vec<Option<Slot>>,
    /// Syscalls that have had a rule mask set, to clear the ones no rule names any more.
    masked: std::collections::BTreeSet<u32>,
    seed: u64,
    /// LSM hooks whose error program is attached (only once a rule needs them: each one runs
    /// for every process's calls through that hook).
    error_hooks: std::collections::BTreeSet<&'static str>,
    targets: Targets,
    /// Whether the sys_exit program that reports new fds is attached.
    opens_attached: bool,
    /// Set once attach has written the configuration that makes the target targeted.
    live: bool,
    /// The kernel's BTF, parsed once: the tracepoint and every LSM program load against it.
    btf: Btf,
}

/// One rule as the session keeps it.
struct Slot {
    /// The rule as written.
    rule: Rule,
    /// What the kernel's RULES map holds for it.
    kernel: KernelRule,
    /// Its path filter, matched in user space against the file behind each fd.
    path: Option<fault_rules::Glob>,
    /// Whether it filters by peer (dst=), for which the peer of the socket behind every fd is
    /// looked up in user space.
    by_dst: bool,
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
            opens_attached: false,
            live: false,
        };
        for rule in rules {
            session.attach_error_hooks(rule)?;
        }
        for (compiled, rule) in compiled.into_iter().zip(rules) {
            session.fill_slot(compiled, rule)?;
        }
        if let Targets::Process { tgid, .. } = session.targets {
            let mut map: HashMap<_, u32, u32> =
                HashMap::try_from(map_mut(&mut session.ebpf, TARGETS_MAP)?)
                    .map_err(InjectorError::map(TARGETS_MAP))?;
            map.insert(tgid, 1, 0)
                .map_err(InjectorError::map(TARGETS_MAP))?;
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

    /// Adds a rule while attached; returns its id.
    pub fn add(&mut self, rule: &Rule) -> Result<usize, InjectorError> {
        let compiled = compile_for_attach(rule, self.seed)?;
        self.attach_error_hooks(rule)?;
        self.write_config()?;
        self.fill_slot(compiled, rule)
    }

    /// The rule with this id, while it is in force.
    pub fn rule(&self, id: usize) -> Option<&Rule> {
        self.slots.get(id)?.as_ref().map(|slot| &slot.rule)
    }

    /// Removes a rule; false if there is no rule with that id.
    pub fn remove(&mut self, id: usize) -> Result<bool, InjectorError> {
        if self.slots.get(id).is_none_or(Option::is_none) {
            return Ok(false);
        }
        self.slots[id] = None;
        self.write_slot(id, KernelRule::default())?;
        self.refresh_masks()?;
        self.write_config()?;
        Ok(true)
    }

    fn fill_slot(&mut self, kernel: KernelRule, rule: &Rule) -> Result<usize, InjectorError> {
        let id = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.slots.len() < MAX_RULES as usize => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(crate::rules::RuleError::TooManyRules.into()),
        };
        let path = path_filter(rule).cloned();
        let filters_fds = path.is_some() || kernel.by_dst != 0;
        // In place before the kernel knows of it: its fds are classified first. Nothing of it
        // stays if a step fails.
        self.slots[id] = Some(Slot {
            rule: rule.clone(),
            kernel,
            path,
            by_dst: kernel.by_dst != 0,
        });
        let filled = self.put_in_force(id, filters_fds);
        if filled.is_err() {
            self.slots[id] = None;
        }
        filled.map(|()| id)
    }

    fn put_in_force(&mut self, id: usize, filters_fds: bool) -> Result<(), InjectorError> {
        if filters_fds {
            // Every fd classified for this rule before the rule can match anything.
            self.attach_opens()?;
            if self.live {
                // New fds are reported from now on, so none is missed while classifying.
                self.write_config()?;
            }
            self.classify_all()?;
        }
        array_mut::<RuleCounters>(&mut self.ebpf, RULE_COUNTERS_MAP)?
            .set(id as u32, RuleCounters::default(), 0)
            .map_err(InjectorError::map(RULE_COUNTERS_MAP))?;
        let kernel = self.slots[id].as_ref().expect("just filled").kernel;
        self.write_slot(id, kernel)?;
        self.refresh_masks()
    }

    /// The rules in force, by id.
    fn rules(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| slot.as_ref().map(|slot| (id, slot)))
    }

    fn write_slot(&mut self, id: usize, rule: KernelRule) -> Result<(), InjectorError> {
        array_mut::<KernelRule>(&mut self.ebpf, RULES_MAP)?
            .set(id as u32, rule, 0)
            .map_err(InjectorError::map(RULES_MAP))
    }

    /// Which rules each syscall has: a call no rule names costs one lookup.
    fn refresh_masks(&mut self) -> Result<(), InjectorError> {
        let mut masks = std::collections::BTreeMap::<u32, u32>::new();
        for syscall in &self.masked {
            masks.insert(*syscall, 0);
        }
        for (id, slot) in self.rules() {
            *masks.entry(slot.kernel.syscall_nr).or_default() |= 1 << id;
        }
        let mut by_syscall = array_mut::<u32>(&mut self.ebpf, SYSCALL_RULES_MAP)?;
        for (syscall, mask) in &masks {
            by_syscall
                .set(*syscall, mask, 0)
                .map_err(InjectorError::map(SYSCALL_RULES_MAP))?;
        }
        self.masked = masks
            .into_iter()
            .filter(|(_, mask)| *mask != 0)
            .map(|(s, _)| s)
            .collect();
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
            path_rules: self.rules().filter(|(_, slot)| slot.path.is_some()).count() as u32,
            dst_rules: self.rules().filter(|(_, slot)| slot.by_dst).count() as u32,
        };
        array_mut::<FaultConfig>(&mut self.ebpf, FAULT_CONFIG_MAP)?
            .set(0, config, 0)
            .map_err(InjectorError::map(FAULT_CONFIG_MAP))
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
        RingBuf::try_from(map).map_err(InjectorError::map(EVENTS_MAP))
    }

    /// Calls and faults of every rule in force.
    pub fn stats(&self) -> Result<Vec<RuleStats>, InjectorError> {
        let counters: Array<_, RuleCounters> = Array::try_from(
            self.ebpf
                .map(RULE_COUNTERS_MAP)
                .ok_or(InjectorError::Missing {
                    kind: "map",
                    name: RULE_COUNTERS_MAP,
                })?,
        )
        .map_err(InjectorError::map(RULE_COUNTERS_MAP))?;
        let mut stats = Vec::new();
        for (id, slot) in self.rules() {
            let compiled = &slot.kernel;
            let counter = counters
                .get(&(id as u32), 0)
                .map_err(InjectorError::map(RULE_COUNTERS_MAP))?;
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
                rule: slot.rule.text.clone(),
                calls: counter.calls,
                faults,
            });
        }
        Ok(stats)
    }
}
