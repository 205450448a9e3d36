//! Which rules' filters each fd of a target passes: the path behind it (path=) and the peer of
//! the socket behind it (dst=), matched in user space while the kernel holds the target stopped
//! at the call that made the fd, and stored for the kernel by fd.
use aya::maps::{HashMap, MapData};
use injector_common::{CLASSIFYING_MAP, PATH_FDS_MAP, PEER_FDS_MAP, TARGETS_MAP, fd_key};

use super::{
    FaultSession, Targets,
    maps::{forget_exited, hash_map, store_or_forget},
};
use crate::{InjectorError, sockets::ProcessSockets};

/// The classifications in progress, readable from any thread.
pub struct Classifications {
    map: HashMap<MapData, u64, u32>,
}

impl Classifications {
    /// Whether the kernel holds `tgid` stopped until a classification is done.
    pub fn pending_for(&self, tgid: u32) -> bool {
        self.map
            .keys()
            .flatten()
            .any(|key| (key >> 32) as u32 == tgid)
    }
}

impl FaultSession {
    /// The classification of `tgid`'s `fd` (FORKED_FD: of a new child's fds) is done.
    pub fn classified(&mut self, tgid: u32, fd: u32) -> Result<(), InjectorError> {
        let key = fd_key(tgid, fd);
        store_or_forget::<u32>(&mut self.ebpf, CLASSIFYING_MAP, key, None)
    }

    /// A view of the classifications in progress, for another thread.
    pub fn classifications(&self) -> Result<Classifications, InjectorError> {
        let fd = self.map_fd(CLASSIFYING_MAP)?;
        let data = MapData::from_fd(fd).map_err(InjectorError::map(CLASSIFYING_MAP))?;
        let map = HashMap::try_from(aya::maps::Map::HashMap(data))
            .map_err(InjectorError::map(CLASSIFYING_MAP))?;
        Ok(Classifications { map })
    }

    /// The rules (bit per rule) whose path filter matches the file behind `fd` of `tgid`,
    /// stored for the kernel; called for every fd the target makes, while it is stopped.
    pub fn classify(&mut self, tgid: u32, fd: u32) -> Result<u32, InjectorError> {
        self.classify_fd(tgid, fd, &mut None)
    }

    /// As classify; `sockets` holds a handle on `tgid` once opened, so classifying all of a
    /// process's fds opens it once.
    pub(super) fn classify_fd(
        &mut self,
        tgid: u32,
        fd: u32,
        sockets: &mut Option<ProcessSockets>,
    ) -> Result<u32, InjectorError> {
        let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok();
        if self.rules().any(|(_, slot)| slot.by_dst) {
            self.store_peer(tgid, fd, link.as_deref(), sockets)?;
        }
        let mask = link.map_or(0, |path| {
            let path = path.to_string_lossy();
            self.rules()
                .filter(|(_, slot)| slot.path.as_ref().is_some_and(|g| g.matches(&path)))
                .fold(0u32, |mask, (id, _)| mask | 1 << id)
        });
        let key = fd_key(tgid, fd);
        store_or_forget(
            &mut self.ebpf,
            PATH_FDS_MAP,
            key,
            (mask != 0).then_some(mask),
        )?;
        Ok(mask)
    }

    /// Stores the connected peer of the socket behind `fd` of `tgid` for the kernel's dst=
    /// filters, or forgets the fd's peer if it has none (not a socket, not IPv4, unconnected).
    pub(super) fn store_peer(
        &mut self,
        tgid: u32,
        fd: u32,
        link: Option<&std::path::Path>,
        sockets: &mut Option<ProcessSockets>,
    ) -> Result<(), InjectorError> {
        let is_socket = link.and_then(crate::sockets::socket_inode).is_some();
        if is_socket && sockets.is_none() {
            // A process that is gone has no peers to record.
            *sockets = ProcessSockets::open(tgid).ok();
        }
        let peer = sockets
            .as_ref()
            .filter(|_| is_socket)
            .and_then(|sockets| sockets.ends(fd))
            .and_then(|ends| ends.peer);
        let value = peer.map(|peer| {
            let (addr, port) = crate::rules::sockaddr_in_values(&peer);
            (u64::from(port) << 32) | u64::from(addr)
        });
        let key = fd_key(tgid, fd);
        store_or_forget(&mut self.ebpf, PEER_FDS_MAP, key, value)
    }

    /// Whether some rule filters by path or peer, so fds are being classified.
    pub fn classifies_fds(&self) -> bool {
        self.rules()
            .any(|(_, slot)| slot.path.is_some() || slot.by_dst)
    }

    /// How many fds have a path or peer recorded for the kernel now.
    pub fn classified_fds(&self) -> Result<usize, InjectorError> {
        let paths: HashMap<_, u64, u32> = hash_map(&self.ebpf, PATH_FDS_MAP)?;
        let peers: HashMap<_, u64, u64> = hash_map(&self.ebpf, PEER_FDS_MAP)?;
        Ok(paths.keys().flatten().count() + peers.keys().flatten().count())
    }

    /// Forgets the fds of processes that are gone. A process that exits without closing its
    /// fds (killed, or simply exiting) leaves them behind, and followed children come and go.
    pub fn sweep_exited(&mut self) -> Result<(), InjectorError> {
        forget_exited::<u32>(&mut self.ebpf, PATH_FDS_MAP)?;
        forget_exited::<u64>(&mut self.ebpf, PEER_FDS_MAP)
    }

    /// Classifies every fd of every process targeted now.
    pub(super) fn classify_all(&mut self) -> Result<(), InjectorError> {
        if !self.classifies_fds() {
            return Ok(());
        }
        for tgid in self.targeted_now()? {
            self.classify_process(tgid)?;
        }
        Ok(())
    }

    /// Classifies every fd `tgid` has now (a new child is stopped while this runs).
    pub fn classify_process(&mut self, tgid: u32) -> Result<(), InjectorError> {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{tgid}/fd")) else {
            return Ok(());
        };
        let mut sockets = None;
        for entry in entries.flatten() {
            if let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                self.classify_fd(tgid, fd, &mut sockets)?;
            }
        }
        Ok(())
    }

    /// The processes the rules apply to at this moment.
    pub(super) fn targeted_now(&self) -> Result<Vec<u32>, InjectorError> {
        match &self.targets {
            Targets::Process {
                tgid,
                follow_forks: false,
            } => Ok(vec![*tgid]),
            Targets::Process { .. } => {
                let targets: HashMap<_, u32, u32> = hash_map(&self.ebpf, TARGETS_MAP)?;
                Ok(targets.keys().flatten().collect())
            }
            // A process that left the cgroup meanwhile is classified for nothing; one that was
            // never listed cannot be helped (its calls are not targeted after it leaves).
            Targets::Cgroup { dir, .. } => Ok(std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|pid| pid.trim().parse().ok())
                .collect()),
        }
    }
}
