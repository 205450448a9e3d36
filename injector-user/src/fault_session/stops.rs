//! The processes a delay or pause holds stopped (the kernel's STOPPED map), for the guard that
//! continues them and for `ctl`.
use aya::maps::{HashMap, MapData};
use injector_common::STOPPED_MAP;

use super::{FaultSession, maps::hash_map};
use crate::InjectorError;

impl FaultSession {
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

    pub(super) fn stopped_map(&self) -> Result<HashMap<&MapData, u32, u32>, InjectorError> {
        hash_map(&self.ebpf, STOPPED_MAP)
    }

    /// A descriptor of the STOPPED map for the guard to inherit (close-on-exec cleared by it).
    pub fn stopped_map_fd(&self) -> Result<std::os::fd::OwnedFd, InjectorError> {
        self.map_fd(STOPPED_MAP)
    }
}
