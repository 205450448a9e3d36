//! A process's IPv4 TCP and UDP sockets as /proc shows them: which fd is which socket (its
//! inode), and each socket's local and remote address. Partitions by pid use the local ends;
//! `dst=` filters in attach mode use the remote end of the socket behind an fd.
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

/// One row of /proc/PID/net/{tcp,udp}.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    pub inode: u64,
    pub local: SocketAddrV4,
    /// 0.0.0.0:0 for a socket with no peer (listening, unconnected UDP).
    pub remote: SocketAddrV4,
}

/// The socket inode behind an fd's /proc link (`socket:[12345]`), if it is a socket.
pub fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every IPv4 TCP and UDP socket in `pid`'s network namespace.
pub fn ipv4_sockets(pid: u32) -> io::Result<Vec<SocketEntry>> {
    let mut entries = Vec::new();
    for table in ["tcp", "udp"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        entries.extend(text.lines().skip(1).filter_map(parse_row));
    }
    Ok(entries)
}

/// `sl local_address rem_address st ... inode ...`, addresses as the kernel's 32-bit value in
/// hex (network order read as a host integer) and the port in hex.
fn parse_row(line: &str) -> Option<SocketEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(SocketEntry {
        local: parse_address(fields.get(1)?)?,
        remote: parse_address(fields.get(2)?)?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

fn parse_address(text: &str) -> Option<SocketAddrV4> {
    let (addr, port) = text.split_once(':')?;
    let addr = Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?.to_le_bytes());
    Some(SocketAddrV4::new(addr, u16::from_str_radix(port, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_net_row_gives_both_ends_and_the_inode() {
        let row = "   0: 0B00007F:1F40 0C00007F:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_row(row),
            Some(SocketEntry {
                inode: 31337,
                local: "127.0.0.11:8000".parse().unwrap(),
                remote: "127.0.0.12:41652".parse().unwrap(),
            })
        );
        assert_eq!(socket_inode(Path::new("socket:[31337]")), Some(31337));
        assert_eq!(socket_inode(Path::new("/tmp/file")), None);
    }
}
