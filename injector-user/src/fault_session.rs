//! `injector attach`: the fault program loaded, configured for one target and its rules, and
//! attached. Every link is owned by this process, so its exit (even by SIGKILL) detaches all.
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData, RingBuf},
    programs::BtfTracePoint,
};
use fault_rules::Rule;
use injector_common::{
    COUNT_TRACEPOINT, EVENTS_MAP, FAULT_CONFIG_MAP, FAULT_PROGRAM, FaultConfig, KernelRule,
    MAX_RULES, MAX_TERMS, RULE_COUNTERS_MAP, RULES_MAP, RuleCounters, SYSCALL_RULES_MAP,
    TARGETS_MAP, UNLIMITED,
};

use crate::{InjectorError, Target, ebpf_object, rules::compile_for_attach};

pub struct FaultSession {
    ebpf: Ebpf,
    /// Kernel rule slots; a removed rule leaves an empty slot, so rule ids stay stable.
    slots: Vec<Option<KernelRule>>,
    /// Syscalls that have had a rule mask set, to clear the ones no rule names any more.
    masked: std::collections::BTreeSet<u32>,
    seed: u64,
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
    pub fn attach(target: &Target, rules: &[Rule], seed: u64) -> Result<Self, InjectorError> {
        let compiled = rules
            .iter()
            .map(|rule| compile_for_attach(rule, seed))
            .collect::<Result<Vec<_>, _>>()?;
        let ebpf = ebpf_object::load()?;
        let mut session = FaultSession {
            ebpf,
            slots: Vec::new(),
            masked: Default::default(),
            seed,
        };
        for rule in compiled {
            session.fill_slot(rule)?;
        }
        {
            let mut targets: HashMap<_, u32, u32> =
                HashMap::try_from(map_mut(&mut session.ebpf, TARGETS_MAP)?).map_err(|source| {
                    InjectorError::Map {
                        name: TARGETS_MAP,
                        source,
                    }
                })?;
            targets
                .insert(target.pid(), 1, 0)
                .map_err(|source| InjectorError::Map {
                    name: TARGETS_MAP,
                    source,
                })?;
        }
        // Set last: until then the program treats every process as not targeted.
        let single = FaultConfig {
            single_tgid: target.pid(),
            _reserved: 0,
        };
        array_mut::<FaultConfig>(&mut session.ebpf, FAULT_CONFIG_MAP)?
            .set(0, single, 0)
            .map_err(|source| InjectorError::Map {
                name: FAULT_CONFIG_MAP,
                source,
            })?;
        let ebpf = &mut session.ebpf;
        let btf = Btf::from_sys_fs()?;
        let program: &mut BtfTracePoint = ebpf
            .program_mut(FAULT_PROGRAM)
            .ok_or(InjectorError::Missing {
                kind: "program",
                name: FAULT_PROGRAM,
            })?
            .try_into()
            .map_err(|source| InjectorError::Program {
                name: FAULT_PROGRAM,
                source,
            })?;
        program
            .load(COUNT_TRACEPOINT, &btf)
            .map_err(|source| InjectorError::Program {
                name: FAULT_PROGRAM,
                source,
            })?;
        program.attach().map_err(|source| InjectorError::Program {
            name: FAULT_PROGRAM,
            source,
        })?;
        Ok(session)
    }

    /// Adds a rule while attached; returns its id.
    pub fn add(&mut self, rule: &Rule) -> Result<usize, InjectorError> {
        let compiled = compile_for_attach(rule, self.seed)?;
        self.fill_slot(compiled)
    }

    /// Removes a rule; false if there is no rule with that id.
    pub fn remove(&mut self, id: usize) -> Result<bool, InjectorError> {
        if self.slots.get(id).is_none_or(Option::is_none) {
            return Ok(false);
        }
        self.slots[id] = None;
        self.write_slot(id, KernelRule::default())?;
        self.refresh_masks()?;
        Ok(true)
    }

    fn fill_slot(&mut self, rule: KernelRule) -> Result<usize, InjectorError> {
        let id = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.slots.len() < MAX_RULES as usize => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(crate::rules::RuleError::TooManyRules.into()),
        };
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

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, InjectorError> {
    ebpf.map_mut(name)
        .ok_or(InjectorError::Missing { kind: "map", name })
}
