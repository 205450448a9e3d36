//! Access to the kernel's maps of the loaded object, each error naming the map.
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};

use super::FaultSession;
use crate::InjectorError;

impl FaultSession {
    /// A new descriptor of the hash map `name`.
    pub(super) fn map_fd(&self, name: &'static str) -> Result<std::os::fd::OwnedFd, InjectorError> {
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
}

pub(super) fn array_mut<'a, T: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<Array<&'a mut MapData, T>, InjectorError> {
    Array::try_from(map_mut(ebpf, name)?).map_err(InjectorError::map(name))
}

/// `key` set to `value` in the hash map `name`, or taken out of it when there is no value.
pub(super) fn store_or_forget<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    key: u64,
    value: Option<V>,
) -> Result<(), InjectorError> {
    let mut map: HashMap<_, u64, V> =
        HashMap::try_from(map_mut(ebpf, name)?).map_err(InjectorError::map(name))?;
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
    stored.map_err(InjectorError::map(name))
}

/// Takes the fds of processes that are gone (keys from [`fd_key`]) out of the hash map `name`.
pub(super) fn forget_exited<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<(), InjectorError> {
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
pub(super) fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a MapData, K, V>, InjectorError> {
    let map = ebpf
        .map(name)
        .ok_or(InjectorError::Missing { kind: "map", name })?;
    HashMap::try_from(map).map_err(InjectorError::map(name))
}

pub(super) fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, InjectorError> {
    ebpf.map_mut(name)
        .ok_or(InjectorError::Missing { kind: "map", name })
}
