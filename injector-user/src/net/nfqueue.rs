//! A small NFQUEUE client: the kernel hands each packet an iptables `NFQUEUE` rule matched to
//! this socket and holds it until we give its verdict, so a packet can wait here for its
//! moment without being copied out and sent again. The protocol is nfnetlink_queue's (see
//! linux/netfilter/nfnetlink_queue.h): plain netlink messages, built and read here without
//! unsafe code.
use std::{io, time::Duration};

use rustix::{
    event::{PollFd, PollFlags, Timespec, poll},
    fd::{AsFd, BorrowedFd, OwnedFd},
    io::Errno,
    net::{
        AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink, recv, sendto,
        socket_with, sockopt,
    },
};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HEADER: usize = 16;
const NFGENMSG: usize = 4;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_GSO: u32 = 4;
/// The attribute type without its nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// Bytes copied of each packet when its contents are not needed: IPv4 and TCP headers.
const HEADERS: u32 = 64;

/// Enough for a whole 64 KiB packet with its metadata, or many packets' metadata.
const RECEIVE_BUFFER: usize = 128 * 1024;

/// One packet the kernel holds for us.
#[derive(Debug)]
pub struct QueuedPacket {
    pub id: u32,
    /// The packet's whole length, even when only its metadata was copied.
    pub length: usize,
    /// The packet from its IP header on (only its headers unless the queue copies packets).
    pub bytes: Option<Vec<u8>>,
}

pub struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
    sequence: u32,
    buffer: Vec<u8>,
    copies_packets: bool,
}

impl QueueSocket {
    /// Binds queue `queue`. `copy_packets` hands us every packet's bytes (needed to send a
    /// copy); without it only the headers cross, and GSO packets stay whole, which is cheaper.
    /// Fails with EPERM when another process holds the queue (or without CAP_NET_ADMIN).
    pub fn bind(queue: u16, copy_packets: bool, max_held: u32) -> io::Result<QueueSocket> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::NETFILTER),
        )?;
        rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 0))?;
        // A burst must not overflow the socket: the kernel drops a packet it cannot tell us
        // about. The forced size needs CAP_NET_ADMIN, which binding a queue needs anyway.
        let _ = sockopt::set_socket_recv_buffer_size_force(&fd, 16 << 20);
        let mut socket = QueueSocket {
            fd,
            queue,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
            copies_packets: false,
        };
        socket.configure(&[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])])?;
        socket.configure(&[(NFQA_CFG_QUEUE_MAXLEN, &max_held.to_be_bytes())])?;
        for message in copy_messages(copy_packets) {
            socket.configure(
                &message
                    .iter()
                    .map(|(k, v)| (*k, &v[..]))
                    .collect::<Vec<_>>(),
            )?;
        }
        socket.copies_packets = copy_packets;
        Ok(socket)
    }

    pub fn copies_packets(&self) -> bool {
        self.copies_packets
    }

    /// Switches between copying whole packets and headers only while packets flow: without
    /// waiting for an acknowledgement, which would arrive among the packets (a refusal shows
    /// up in `receive`'s log).
    pub fn set_copy_packets(&mut self, copy_packets: bool) -> io::Result<()> {
        for message in copy_messages(copy_packets) {
            let attributes: Vec<(u16, &[u8])> = message.iter().map(|(k, v)| (*k, &v[..])).collect();
            let message = self.message(NFQNL_MSG_CONFIG, false, &attributes);
            self.send(&message)?;
        }
        self.copies_packets = copy_packets;
        Ok(())
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Reads what the kernel has sent, without waiting; an empty result means nothing yet.
    pub fn receive(&mut self) -> io::Result<Vec<QueuedPacket>> {
        let mut packets = Vec::new();
        loop {
            let length = match recv(&self.fd, &mut self.buffer[..], RecvFlags::empty()) {
                Ok((length, _)) => length,
                Err(Errno::AGAIN) => return Ok(packets),
                // The socket overflowed: the kernel dropped the packets it could not announce,
                // so nothing waits for a verdict that will never come. Keep reading.
                Err(Errno::NOBUFS) => continue,
                Err(error) => return Err(error.into()),
            };
            for (kind, body) in messages(&self.buffer[..length]) {
                if kind == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET)
                    && let Some(packet) = parse_packet(body)
                {
                    packets.push(packet);
                } else if kind == NLMSG_ERROR
                    && let Some(Err(refusal)) = answer(body)
                {
                    tracing::warn!("the kernel refused a queue setting: {refusal}");
                }
            }
        }
    }

    pub fn accept(&mut self, id: u32) -> io::Result<()> {
        self.verdict(id, NF_ACCEPT)
    }

    pub fn drop_packet(&mut self, id: u32) -> io::Result<()> {
        self.verdict(id, NF_DROP)
    }

    fn verdict(&mut self, id: u32, verdict: u32) -> io::Result<()> {
        let mut header = verdict.to_be_bytes().to_vec();
        header.extend_from_slice(&id.to_be_bytes());
        let message = self.message(NFQNL_MSG_VERDICT, false, &[(NFQA_VERDICT_HDR, &header)]);
        self.send(&message)
    }

    /// Sends a configuration message and waits for the kernel's answer.
    fn configure(&mut self, attributes: &[(u16, &[u8])]) -> io::Result<()> {
        let message = self.message(NFQNL_MSG_CONFIG, true, attributes);
        self.send(&message)?;
        let sequence = self.sequence;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the kernel did not answer a netfilter queue request",
                ));
            }
            wait_readable(self.fd.as_fd(), Some(left))?;
            let length = match recv(&self.fd, &mut self.buffer[..], RecvFlags::empty()) {
                Ok((length, _)) => length,
                Err(Errno::AGAIN) => continue,
                Err(error) => return Err(error.into()),
            };
            for (kind, body) in messages(&self.buffer[..length]) {
                if kind != NLMSG_ERROR || body.len() < 4 + NLMSG_HEADER {
                    continue;
                }
                let answered = u32::from_ne_bytes(body[12..16].try_into().unwrap());
                if answered != sequence {
                    continue;
                }
                return answer(body).expect("an answer holds its error code");
            }
        }
    }

    fn message(&mut self, kind: u16, ack: bool, attributes: &[(u16, &[u8])]) -> Vec<u8> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut message = Vec::with_capacity(64);
        message.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        message.extend_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | kind).to_ne_bytes());
        let flags = NLM_F_REQUEST | if ack { NLM_F_ACK } else { 0 };
        message.extend_from_slice(&flags.to_ne_bytes());
        message.extend_from_slice(&self.sequence.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        message.push(0); // AF_UNSPEC
        message.push(0); // NFNETLINK_V0
        message.extend_from_slice(&self.queue.to_be_bytes());
        for (kind, value) in attributes {
            message.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
            message.extend_from_slice(&kind.to_ne_bytes());
            message.extend_from_slice(value);
            message.resize(message.len().next_multiple_of(4), 0);
        }
        let length = message.len() as u32;
        message[..4].copy_from_slice(&length.to_ne_bytes());
        message
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        let kernel = netlink::SocketAddrNetlink::new(0, 0);
        sendto(&self.fd, message, SendFlags::empty(), &kernel)?;
        Ok(())
    }
}

impl AsFd for QueueSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The configuration messages for copying whole packets or headers only. Metadata alone would
/// not say how long a packet is (the kernel sends the length only with a copy), so at least
/// the headers are copied. With GSO on, a copied packet could carry a checksum still to be
/// computed, and a copy sent again must be complete, so GSO is off while copying.
fn copy_messages(copy_packets: bool) -> [Vec<(u16, Vec<u8>)>; 2] {
    let range: u32 = if copy_packets { 0xffff } else { HEADERS };
    let mut params = range.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_PACKET);
    let flags = if copy_packets { 0 } else { NFQA_CFG_F_GSO };
    [
        vec![(NFQA_CFG_PARAMS, params)],
        vec![
            (NFQA_CFG_MASK, NFQA_CFG_F_GSO.to_be_bytes().to_vec()),
            (NFQA_CFG_FLAGS, flags.to_be_bytes().to_vec()),
        ],
    ]
}

/// Waits until `fd` can be read or `timeout` passes (None: no limit); EINTR counts as a
/// wake-up, the caller looks again.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<()> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = timeout.map(|t| Timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    match poll(&mut fds, timeout.as_ref()) {
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// What an NLMSG_ERROR message says: its error code 0 is an acknowledgement.
fn answer(body: &[u8]) -> Option<io::Result<()>> {
    let code = i32::from_ne_bytes(body.get(..4)?.try_into().ok()?);
    Some(match code {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(-code)),
    })
}

/// The netlink messages of one datagram: each one's type and what follows its header.
fn messages(mut datagram: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while datagram.len() >= NLMSG_HEADER {
        let length = u32::from_ne_bytes(datagram[..4].try_into().unwrap()) as usize;
        if length < NLMSG_HEADER || length > datagram.len() {
            break;
        }
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap());
        found.push((kind, &datagram[NLMSG_HEADER..length]));
        datagram = &datagram[length.next_multiple_of(4).min(datagram.len())..];
    }
    found
}

fn parse_packet(body: &[u8]) -> Option<QueuedPacket> {
    let mut attributes = body.get(NFGENMSG..)?;
    let (mut id, mut captured, mut bytes) = (None, None, None);
    while attributes.len() >= 4 {
        let length = u16::from_ne_bytes(attributes[..2].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(attributes[2..4].try_into().unwrap()) & NLA_TYPE_MASK;
        if length < 4 || length > attributes.len() {
            break;
        }
        let value = &attributes[4..length];
        match kind {
            NFQA_PACKET_HDR if value.len() >= 4 => {
                id = Some(u32::from_be_bytes(value[..4].try_into().unwrap()))
            }
            NFQA_CAP_LEN if value.len() >= 4 => {
                captured = Some(u32::from_be_bytes(value[..4].try_into().unwrap()) as usize)
            }
            NFQA_PAYLOAD => bytes = Some(value.to_vec()),
            _ => {}
        }
        attributes = &attributes[length.next_multiple_of(4).min(attributes.len())..];
    }
    let length = captured.or(bytes.as_ref().map(Vec::len)).unwrap_or(0);
    Some(QueuedPacket {
        id: id?,
        length,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = (4 + value.len() as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn packet_message(id: u32, extra: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 7]; // AF_INET, v0, queue 7
        let mut header = id.to_be_bytes().to_vec();
        header.extend_from_slice(&[8, 0, 3]); // IPv4, hook 3
        body.extend(attribute(NFQA_PACKET_HDR, &header));
        body.extend_from_slice(extra);
        let mut message = ((NLMSG_HEADER + body.len()) as u32).to_ne_bytes().to_vec();
        message.extend_from_slice(&(NFNL_SUBSYS_QUEUE << 8).to_ne_bytes());
        message.extend_from_slice(&[0; 10]);
        message.extend(body);
        message
    }

    #[test]
    fn packets_are_read_with_their_length_whether_or_not_their_bytes_came() {
        let mut datagram = packet_message(41, &attribute(NFQA_CAP_LEN, &1500u32.to_be_bytes()));
        datagram.extend(packet_message(42, &attribute(NFQA_PAYLOAD, &[0x45; 60])));
        let found: Vec<QueuedPacket> = messages(&datagram)
            .into_iter()
            .filter_map(|(_, body)| parse_packet(body))
            .collect();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].id, found[0].length), (41, 1500));
        assert!(found[0].bytes.is_none());
        assert_eq!((found[1].id, found[1].length), (42, 60));
        assert_eq!(found[1].bytes.as_deref(), Some(&[0x45; 60][..]));
    }

    #[test]
    fn a_truncated_datagram_yields_only_its_whole_messages() {
        let datagram = packet_message(1, &[]);
        assert_eq!(messages(&datagram[..datagram.len() - 1]).len(), 0);
        assert_eq!(messages(&datagram).len(), 1);
    }
}
