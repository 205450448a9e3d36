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
    MAX_TERMS, RULE_COUNTERS_MAP, RULES_MAP, RuleCounters, SYSCALL_RULES_MAP, TARGETS_MAP,
    UNLIMITED,
};

use crate::{InjectorError, Target, ebpf_object, rules::compile_for_attach};

pub struct FaultSession {
    ebpf: Ebpf,
    compiled: Vec<KernelRule>,
}

/// What a rule did so far.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RuleStats {
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
        let mut ebpf = ebpf_object::load()?;
        {
            let mut table: Array<_, KernelRule> = Array::try_from(map_mut(&mut ebpf, RULES_MAP)?)
                .map_err(|source| InjectorError::Map {
                name: RULES_MAP,
                source,
            })?;
            for (index, rule) in compiled.iter().enumerate() {
                table
                    .set(index as u32, rule, 0)
                    .map_err(|source| InjectorError::Map {
                        name: RULES_MAP,
                        source,
                    })?;
            }
        }
        {
            let mut targets: HashMap<_, u32, u32> =
                HashMap::try_from(map_mut(&mut ebpf, TARGETS_MAP)?).map_err(|source| {
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
        // Which rules each syscall has: a call no rule names costs one lookup.
        let mut masks = std::collections::BTreeMap::<u32, u32>::new();
        for (index, rule) in compiled.iter().enumerate() {
            *masks.entry(rule.syscall_nr).or_default() |= 1 << index;
        }
        let mut by_syscall = array_mut::<u32>(&mut ebpf, SYSCALL_RULES_MAP)?;
        for (syscall, mask) in masks {
            by_syscall
                .set(syscall, mask, 0)
                .map_err(|source| InjectorError::Map {
                    name: SYSCALL_RULES_MAP,
                    source,
                })?;
        }
        // Set last: until then the program treats every process as not targeted.
        let single = FaultConfig {
            single_tgid: target.pid(),
            _reserved: 0,
        };
        array_mut::<FaultConfig>(&mut ebpf, FAULT_CONFIG_MAP)?
            .set(0, single, 0)
            .map_err(|source| InjectorError::Map {
                name: FAULT_CONFIG_MAP,
                source,
            })?;
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
        Ok(Self { ebpf, compiled })
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

    pub fn stats(&self, rules: &[Rule]) -> Result<Vec<RuleStats>, InjectorError> {
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
        for (index, (rule, compiled)) in rules.iter().zip(&self.compiled).enumerate() {
            let counter =
                counters
                    .get(&(index as u32), 0)
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
