use aya::{
    Btf, Ebpf,
    maps::{Array, PerCpuArray},
    programs::BtfTracePoint,
};
use injector_common::{
    COUNT_CONFIG_MAP, COUNT_PROGRAM, COUNT_TRACEPOINT, CountConfig, MAX_SYSCALL_NR,
    SYSCALL_COUNTS_MAP,
};
use serde::Serialize;

use crate::{InjectorError, Target, ebpf_object, syscall_names::syscall_name};

/// Counts one process's syscalls by number, in the kernel (`tp_btf/sys_enter`), so every call is
/// seen exactly once. Dropping it detaches the program.
pub struct SyscallCounter {
    ebpf: Ebpf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallCount {
    pub nr: u32,
    /// `None` for a number this build does not know a name for.
    pub name: Option<&'static str>,
    pub calls: u64,
}

impl SyscallCounter {
    pub fn attach(target: &Target) -> Result<Self, InjectorError> {
        let mut ebpf = ebpf_object::load()?;
        // Configure before attaching so the program never runs unfiltered.
        let mut config: Array<_, CountConfig> = Array::try_from(
            ebpf.map_mut(COUNT_CONFIG_MAP)
                .ok_or(InjectorError::Missing {
                    kind: "map",
                    name: COUNT_CONFIG_MAP,
                })?,
        )
        .map_err(InjectorError::map(COUNT_CONFIG_MAP))?;
        config
            .set(0, CountConfig::for_tgid(target.pid()), 0)
            .map_err(InjectorError::map(COUNT_CONFIG_MAP))?;

        let btf = Btf::from_sys_fs()?;
        let program: &mut BtfTracePoint = ebpf_object::program_mut(&mut ebpf, COUNT_PROGRAM)?;
        program
            .load(COUNT_TRACEPOINT, &btf)
            .map_err(|source| program_error(COUNT_PROGRAM, source))?;
        program
            .attach()
            .map_err(|source| program_error(COUNT_PROGRAM, source))?;
        Ok(Self { ebpf })
    }

    /// Calls seen so far, most frequent first, syscalls never called left out.
    pub fn counts(&self) -> Result<Vec<SyscallCount>, InjectorError> {
        let per_cpu: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(SYSCALL_COUNTS_MAP).ok_or(
                InjectorError::Missing {
                    kind: "map",
                    name: SYSCALL_COUNTS_MAP,
                },
            )?)
            .map_err(InjectorError::map(SYSCALL_COUNTS_MAP))?;
        let mut counts = Vec::new();
        for nr in 0..MAX_SYSCALL_NR {
            let calls: u64 = per_cpu
                .get(&nr, 0)
                .map_err(InjectorError::map(SYSCALL_COUNTS_MAP))?
                .iter()
                .sum();
            if calls > 0 {
                counts.push(SyscallCount {
                    nr,
                    name: syscall_name(nr),
                    calls,
                });
            }
        }
        counts.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.nr.cmp(&b.nr)));
        Ok(counts)
    }
}

fn program_error(name: &'static str, source: aya::programs::ProgramError) -> InjectorError {
    InjectorError::Program { name, source }
}
