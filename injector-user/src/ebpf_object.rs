use aya::Ebpf;

use crate::InjectorError;

/// The object `cargo xtask build-ebpf` produced; build.rs refuses to build this crate when it is
/// missing or older than its sources.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("INJECTOR_EBPF_OBJECT"));

/// Loads the embedded object's maps into the kernel; programs are loaded by their users.
pub fn load() -> Result<Ebpf, InjectorError> {
    require_root()?;
    raise_memlock_limit();
    Ok(Ebpf::load(OBJECT)?)
}

/// Loading programs needs root; commands check first, before they create anything.
pub fn require_root() -> Result<(), InjectorError> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(InjectorError::NotRoot)
    }
}

/// The program `name` of the loaded object, as its type (`TracePoint`, `CgroupSkb`, ...).
pub fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, InjectorError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(InjectorError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| InjectorError::Program { name, source })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it, so failure here
/// is only worth a debug line.
fn raise_memlock_limit() {
    let unlimited = rustix::process::Rlimit {
        current: None,
        maximum: None,
    };
    if let Err(error) = rustix::process::setrlimit(rustix::process::Resource::Memlock, unlimited) {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {error}");
    }
}
