//! Loading and attaching the eBPF programs: the fault program, the one that reports new fds,
//! the fork and exit followers (with field offsets read from their tracepoints' format files),
//! and the LSM programs that deliver error().
use aya::programs::{BtfTracePoint, Lsm};
use fault_rules::Rule;
use injector_common::{
    ERROR_HOOKS, EXIT_CATEGORY, EXIT_TRACEPOINT, FOLLOW_FORKS_CATEGORY, FOLLOW_FORKS_PROGRAM,
    FOLLOW_FORKS_TRACEPOINT, FORGET_EXITED_PROGRAM, FORK_CONFIG_MAP, ForkConfig, OPENS_PROGRAM,
    SYS_EXIT_TRACEPOINT,
};

use super::{FaultSession, maps::array_mut};
use crate::{
    InjectorError, ebpf_object,
    probe::describe,
    rules::{RuleError, error_hooks, has_error_action},
};

impl FaultSession {
    /// Attaches the programs that add the target's new child processes to the targets and take
    /// them out again when they exit, with the tracepoints' field offsets read from their format
    /// files. The exit program goes first, so no child is ever added without it.
    pub(super) fn follow_forks(&mut self) -> Result<(), InjectorError> {
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
        let config = configs
            .get(&0, 0)
            .map_err(InjectorError::map(FORK_CONFIG_MAP))?;
        let config = ForkConfig {
            pid_offset,
            clone_flags_offset,
            ..config
        };
        configs
            .set(0, config, 0)
            .map_err(InjectorError::map(FORK_CONFIG_MAP))?;
        self.attach_tracepoint(
            FOLLOW_FORKS_PROGRAM,
            FOLLOW_FORKS_CATEGORY,
            FOLLOW_FORKS_TRACEPOINT,
        )
    }

    /// Attaches the program that takes exited processes out of TARGETS and STOPPED.
    pub(super) fn follow_exits(&mut self) -> Result<(), InjectorError> {
        let exit_fields = tracepoint_fields(EXIT_CATEGORY, EXIT_TRACEPOINT)?;
        let config = ForkConfig {
            group_dead_offset: exit_fields.get("group_dead").copied().unwrap_or(0),
            ..ForkConfig::default()
        };
        array_mut::<ForkConfig>(&mut self.ebpf, FORK_CONFIG_MAP)?
            .set(0, config, 0)
            .map_err(InjectorError::map(FORK_CONFIG_MAP))?;
        self.attach_tracepoint(FORGET_EXITED_PROGRAM, EXIT_CATEGORY, EXIT_TRACEPOINT)
    }

    /// Loads the tracepoint program `name` and attaches it to `category/tracepoint` (the link is
    /// ours).
    pub(super) fn attach_tracepoint(
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

    /// Loads `name` for the BTF tracepoint `tracepoint` and attaches it (the link is ours).
    pub(super) fn attach_btf_tracepoint(
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
    pub(super) fn attach_opens(&mut self) -> Result<(), InjectorError> {
        if self.opens_attached {
            return Ok(());
        }
        self.attach_btf_tracepoint(OPENS_PROGRAM, SYS_EXIT_TRACEPOINT)?;
        self.opens_attached = true;
        Ok(())
    }

    /// Attaches the LSM programs that deliver the rule's error(), if it has one. Of alternative
    /// hooks (ftruncate: file_truncate or path_truncate) the kernel must accept at least one.
    pub(super) fn attach_error_hooks(&mut self, rule: &Rule) -> Result<(), InjectorError> {
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

    pub(super) fn attach_error_hook(&mut self, hook: &str) -> Result<(), String> {
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
