//! `injector probe`: tries each mechanism the injector can use and reports what this kernel
//! allows, with the kernel's own error for what it refuses. Nothing is left attached.
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, Lsm, TracePoint},
};
use injector_common::{
    COUNT_PROGRAM, COUNT_TRACEPOINT, EXIT_CATEGORY, EXIT_TRACEPOINT, FAULT_PROGRAM,
    FOLLOW_FORKS_CATEGORY, FOLLOW_FORKS_PROGRAM, FOLLOW_FORKS_TRACEPOINT, FORGET_EXITED_PROGRAM,
    OPENS_PROGRAM, PROBE_FENTRY_FUNCTION, PROBE_FENTRY_PROGRAM, PROBE_LSM_HOOK, PROBE_LSM_PROGRAM,
    SYS_EXIT_TRACEPOINT,
};
use serde::Serialize;

use crate::{
    InjectorError, ebpf_object,
    partition::{Hook, Partition},
};

#[derive(Clone, Debug, Serialize)]
pub struct Mechanism {
    pub name: &'static str,
    /// What the injector uses it for.
    pub used_for: &'static str,
    pub works: bool,
    /// The kernel's error, or why it was not tried.
    pub detail: String,
}

pub fn probe() -> Result<Vec<Mechanism>, InjectorError> {
    let mut ebpf = ebpf_object::load()?;
    let btf = Btf::from_sys_fs()?;
    let mut found = Vec::new();
    let mut report = |name, used_for, result: Result<(), String>| {
        found.push(Mechanism {
            name,
            used_for,
            works: result.is_ok(),
            detail: result.err().unwrap_or_default(),
        })
    };
    report(
        "tp_btf/sys_enter",
        "count; kill, signal, delay, pause at syscall entry (attach)",
        tracepoint(&mut ebpf, COUNT_PROGRAM, COUNT_TRACEPOINT, &btf),
    );
    report(
        "bpf_send_signal from tp_btf",
        "kill, signal, delay, pause (attach)",
        tracepoint(&mut ebpf, FAULT_PROGRAM, COUNT_TRACEPOINT, &btf),
    );
    report(
        "tp_btf/sys_exit",
        "path=GLOB filters: the target stopped at each new fd (attach)",
        tracepoint(&mut ebpf, OPENS_PROGRAM, SYS_EXIT_TRACEPOINT, &btf),
    );
    report(
        "tracepoint task/task_newtask",
        "--follow-forks (attach)",
        classic_tracepoint(
            &mut ebpf,
            FOLLOW_FORKS_PROGRAM,
            FOLLOW_FORKS_CATEGORY,
            FOLLOW_FORKS_TRACEPOINT,
        ),
    );
    report(
        "tracepoint sched/sched_process_exit",
        "--follow-forks: exited children leave the targets (attach)",
        classic_tracepoint(
            &mut ebpf,
            FORGET_EXITED_PROGRAM,
            EXIT_CATEGORY,
            EXIT_TRACEPOINT,
        ),
    );
    report(
        "tc classifier via TCX on lo",
        "partition, packet loss (kernels 6.6 and later)",
        partition_hook(Hook::Tcx),
    );
    report(
        "cgroup_skb at the cgroup v2 root",
        "partition, packet loss (where TCX is missing)",
        partition_hook(Hook::CgroupSkb),
    );
    report(
        "BPF LSM (lsm/file_permission)",
        "error() on file and socket calls in attach mode",
        lsm(&mut ebpf, &btf),
    );
    report(
        "fentry (vfs_fsync_range)",
        "observing kernel functions (not built yet)",
        fentry(&mut ebpf, &btf),
    );
    report(
        "fmod_ret",
        "error() through security_* hooks",
        Err("not tried: aya 0.14 has no fmod_ret program type".into()),
    );
    report(
        "seccomp user notification",
        "error(), delay, kill on any syscall (run)",
        seccomp(),
    );
    report(
        "NFQUEUE via iptables",
        "injector net: delay, jitter, loss, duplication, reordering, rate",
        crate::net::probe().map(|tool| {
            tracing::debug!("injector net would use {}", tool.command);
        }),
    );
    report(
        "netem qdisc",
        "injector net where the kernel has it (else NFQUEUE)",
        crate::net::netem::available(),
    );
    Ok(found)
}

/// An error with its causes, which carry the kernel's own words.
pub(crate) fn describe(error: impl std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn tracepoint(ebpf: &mut Ebpf, name: &str, tracepoint: &str, btf: &Btf) -> Result<(), String> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or("program missing from the object")?
        .try_into()
        .map_err(describe)?;
    program.load(tracepoint, btf).map_err(describe)?;
    let link = program.attach().map_err(describe)?;
    program.detach(link).map_err(describe)
}

/// Attached for a moment: with no target in its map it does nothing.
fn classic_tracepoint(
    ebpf: &mut Ebpf,
    name: &str,
    category: &str,
    tracepoint: &str,
) -> Result<(), String> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or("program missing from the object")?
        .try_into()
        .map_err(describe)?;
    program.load().map_err(describe)?;
    let link = program.attach(category, tracepoint).map_err(describe)?;
    program.detach(link).map_err(describe)
}

/// Attached for a moment with no rules: every packet passes.
fn partition_hook(hook: Hook) -> Result<(), String> {
    Partition::attach(&[], &["lo".to_owned()], hook)
        .map(drop)
        .map_err(describe)
}

fn lsm(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let program: &mut Lsm = ebpf
        .program_mut(PROBE_LSM_PROGRAM)
        .ok_or("program missing from the object")?
        .try_into()
        .map_err(describe)?;
    program.load(PROBE_LSM_HOOK, btf).map_err(describe)?;
    let link = program.attach().map_err(describe)?;
    program.detach(link).map_err(describe)
}

fn fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let program: &mut FEntry = ebpf
        .program_mut(PROBE_FENTRY_PROGRAM)
        .ok_or("program missing from the object")?
        .try_into()
        .map_err(describe)?;
    program.load(PROBE_FENTRY_FUNCTION, btf).map_err(describe)?;
    let link = program.attach().map_err(describe)?;
    program.detach(link).map_err(describe)
}

/// SECCOMP_GET_NOTIF_SIZES answers on every kernel with user notification (5.0+).
fn seccomp() -> Result<(), String> {
    let mut sizes = [0u16; 3];
    // SAFETY: the operation writes three u16 into `sizes`.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, 3, 0, sizes.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}
