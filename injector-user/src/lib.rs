//! User-space side of Faultline's injector: loads the eBPF object that `cargo xtask build-ebpf`
//! built, points it at its targets (one process, optionally with the processes it starts, or
//! one cgroup) and reads back what it saw.
pub mod cgroup;
pub mod counter;
pub mod ebpf_object;
pub mod error;
pub mod fault_session;
pub mod net;
pub mod partition;
pub mod probe;
pub mod rules;
pub mod seccomp;
pub mod sockets;
pub mod syscall_names;
pub mod target;

pub use counter::{SyscallCount, SyscallCounter};
pub use error::InjectorError;
pub use target::{Signaller, Target};
