//! A process's IPv4 sockets, asked directly: each socket fd is duplicated into this process
//! (pidfd_getfd) and asked its own addresses (getsockname, getpeername). Partitions by pid use
//! the local ends; `dst=` filters in attach mode use the peer of the socket behind an fd.
//!
//! Not /proc/PID/net/{tcp,udp}: that table is read a page at a time, each read resuming at a
//! row number, so a socket created or closed elsewhere on the machine between two reads shifts
//! the rows and a live socket of the target can be skipped (measured: 1 read in 3,000 missed a
//! connected UDP socket while another process churned sockets; a dst= rule then missed its
//! first call in a loaded CI VM).
use std::{
    io,
    net::SocketAddrV4,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use rustix::{
    net::{getpeername, getsockname},
    process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open},
};

/// One IPv4 socket's two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEnds {
    pub local: SocketAddrV4,
    /// None for a socket with no peer (listening, unconnected UDP).
    pub peer: Option<SocketAddrV4>,
}

/// A handle on one process for looking at its sockets; it holds a pidfd, so a pid reused by
/// another process is never looked at.
pub struct ProcessSockets {
    pid: u32,
    pidfd: OwnedFd,
}

impl ProcessSockets {
    pub fn open(pid: u32) -> io::Result<Self> {
        let raw = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let pid_value = Pid::from_raw(raw).ok_or(io::ErrorKind::InvalidInput)?;
        let pidfd = pidfd_open(pid_value, PidfdFlags::empty())?;
        Ok(Self { pid, pidfd })
    }

    /// The ends of the IPv4 socket behind `fd`; None if `fd` is not one (or is gone).
    pub fn ends(&self, fd: u32) -> Option<SocketEnds> {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid)).ok()?;
        socket_inode(&link)?;
        self.ends_of_socket_fd(fd)
    }

    /// Every IPv4 socket the process has open now, one entry per fd.
    pub fn all(&self) -> io::Result<Vec<SocketEnds>> {
        let mut sockets = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.flatten() {
            let is_socket = std::fs::read_link(entry.path())
                .ok()
                .is_some_and(|link| socket_inode(&link).is_some());
            let fd = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok());
            if let (true, Some(fd)) = (is_socket, fd) {
                sockets.extend(self.ends_of_socket_fd(fd));
            }
        }
        Ok(sockets)
    }

    fn ends_of_socket_fd(&self, fd: u32) -> Option<SocketEnds> {
        let socket = pidfd_getfd(&self.pidfd, fd as i32, PidfdGetfdFlags::empty()).ok()?;
        ends_of(socket.as_fd())
    }
}

fn ends_of(socket: std::os::fd::BorrowedFd<'_>) -> Option<SocketEnds> {
    let local = SocketAddrV4::try_from(getsockname(socket).ok()?).ok()?;
    // ENOTCONN (no peer) and a non-IPv4 peer both mean: no peer to match.
    let peer = getpeername(socket)
        .ok()
        .flatten()
        .and_then(|peer| SocketAddrV4::try_from(peer).ok())
        .filter(|peer| !peer.ip().is_unspecified());
    Some(SocketEnds { local, peer })
}

/// The socket inode behind an fd's /proc link (`socket:[12345]`), if it is a socket.
pub fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_socket_link_names_its_inode() {
        assert_eq!(socket_inode(Path::new("socket:[31337]")), Some(31337));
        assert_eq!(socket_inode(Path::new("/tmp/file")), None);
    }

    #[test]
    fn every_socket_of_a_process_is_seen_with_both_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(peer.local_addr().unwrap()).unwrap();
        let v4 = |addr: std::net::SocketAddr| match addr {
            std::net::SocketAddr::V4(v4) => v4,
            other => panic!("{other}"),
        };
        let me = ProcessSockets::open(std::process::id()).unwrap();
        assert_eq!(
            me.ends(udp.as_raw_fd() as u32),
            Some(SocketEnds {
                local: v4(udp.local_addr().unwrap()),
                peer: Some(v4(peer.local_addr().unwrap())),
            })
        );
        assert_eq!(
            me.ends(listener.as_raw_fd() as u32).unwrap().peer,
            None,
            "a listener has no peer"
        );
        let all = me.all().unwrap();
        for local in [
            client.local_addr().unwrap(),
            udp.local_addr().unwrap(),
            listener.local_addr().unwrap(),
        ] {
            assert!(
                all.iter().any(|s| s.local == v4(local)),
                "{local} in {all:?}"
            );
        }
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(me.ends(file.as_raw_fd() as u32), None);
    }
}
