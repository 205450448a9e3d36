//! Programs that drop IPv4 packets between the partitioned endpoints: a tc classifier (TCX,
//! kernels 6.6 and later), and for older kernels a pair of cgroup_skb programs at the cgroup v2
//! root, which see every packet of every local socket. Both read the same rules.
use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_get_prandom_u32,
    macros::{cgroup_skb, classifier, map},
    maps::Array,
    programs::{SkBuffContext, TcContext},
};
use injector_common::{MAX_PARTITION_RULES, PartitionRule};

#[map]
static PARTITION: Array<PartitionRule> = Array::with_max_entries(MAX_PARTITION_RULES, 0);

const ETH_HEADER: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// cgroup_skb verdicts. Egress 2 is "drop, with congestion notification": TCP then backs off
/// and retransmits, and UDP's send does not fail (ENOBUFS is swallowed without IP_RECVERR), as
/// with a packet lost on the wire; a plain drop would fail the sender's call with EPERM.
const CGROUP_PASS: i32 = 1;
const CGROUP_DROP: i32 = 0;
const CGROUP_EGRESS_DROP_QUIETLY: i32 = 2;
const LOOPBACK_IFINDEX: u32 = 1;

#[classifier]
pub fn partition(ctx: TcContext) -> i32 {
    let protocol: Option<u16> = ctx.load(12).ok();
    let drop = protocol.is_some_and(|p| u16::from_be(p) == ETH_P_IP)
        && should_drop(&ctx, ETH_HEADER) == Some(true);
    if drop {
        TC_ACT_SHOT
    } else {
        // Not TC_ACT_OK: in a TCX chain that passes the packet at once, and a second partition
        // attached after this one (another injector, another pair of nodes) would never see it.
        TC_ACT_UNSPEC
    }
}

/// Every packet a local socket sends, from its IP header on.
#[cgroup_skb(egress)]
pub fn partition_egress(ctx: SkBuffContext) -> i32 {
    if is_ipv4(&ctx) && should_drop(&ctx, 0) == Some(true) {
        CGROUP_EGRESS_DROP_QUIETLY
    } else {
        CGROUP_PASS
    }
}

/// Every packet a local socket receives. One that came over loopback was sent by a local
/// socket and decided at egress: deciding it again would roll the loss twice.
#[cgroup_skb(ingress)]
pub fn partition_ingress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context's __sk_buff, whose ifindex cgroup_skb programs may read.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ifindex != LOOPBACK_IFINDEX && is_ipv4(&ctx) && should_drop(&ctx, 0) == Some(true) {
        CGROUP_DROP
    } else {
        CGROUP_PASS
    }
}

fn is_ipv4(ctx: &SkBuffContext) -> bool {
    ctx.load::<u8>(0)
        .is_ok_and(|version_ihl| version_ihl >> 4 == 4)
}

/// Reads packet bytes at an offset: the one thing the two program types do differently.
trait Packet {
    fn read<T>(&self, offset: usize) -> Option<T>;
}

impl Packet for TcContext {
    fn read<T>(&self, offset: usize) -> Option<T> {
        self.load(offset).ok()
    }
}

impl Packet for SkBuffContext {
    fn read<T>(&self, offset: usize) -> Option<T> {
        self.load(offset).ok()
    }
}

/// Whether the IPv4 packet whose header starts at `ip` is to be dropped.
fn should_drop(ctx: &impl Packet, ip: usize) -> Option<bool> {
    let version_ihl: u8 = ctx.read(ip)?;
    let header = usize::from(version_ihl & 0x0f) * 4;
    let transport: u8 = ctx.read(ip + 9)?;
    // Addresses stay in network byte order, as the user side stores them.
    let src_addr: u32 = ctx.read(ip + 12)?;
    let dst_addr: u32 = ctx.read(ip + 16)?;
    let (src_port, dst_port) = if transport == IPPROTO_TCP || transport == IPPROTO_UDP {
        let ports = ip + header;
        (ctx.read::<u16>(ports)?, ctx.read::<u16>(ports + 2)?)
    } else {
        (0, 0)
    };
    for index in 0..MAX_PARTITION_RULES {
        let Some(rule) = PARTITION.get(index) else {
            break;
        };
        if rule.active == 0 {
            break;
        }
        let matches = rule.src_addr == src_addr
            && rule.dst_addr == dst_addr
            && (rule.src_port == 0 || rule.src_port == src_port)
            && (rule.dst_port == 0 || rule.dst_port == dst_port);
        if !matches {
            continue;
        }
        if rule.loss_percent >= 100 {
            return Some(true);
        }
        // SAFETY: bpf_get_prandom_u32 has no arguments.
        let roll = unsafe { bpf_get_prandom_u32() } % 100;
        return Some(roll < rule.loss_percent);
    }
    Some(false)
}
