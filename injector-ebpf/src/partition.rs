//! tc classifier (TCX) that drops IPv4 packets between the partitioned endpoints.
use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_get_prandom_u32,
    macros::{classifier, map},
    maps::Array,
    programs::TcContext,
};
use injector_common::{MAX_PARTITION_RULES, PartitionRule};

#[map]
static PARTITION: Array<PartitionRule> = Array::with_max_entries(MAX_PARTITION_RULES, 0);

const ETH_HEADER: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[classifier]
pub fn partition(ctx: TcContext) -> i32 {
    match should_drop(&ctx) {
        Some(true) => TC_ACT_SHOT,
        // Not TC_ACT_OK: in a TCX chain that passes the packet at once, and a second partition
        // attached after this one (another injector, another pair of nodes) would never see it.
        _ => TC_ACT_UNSPEC,
    }
}

fn should_drop(ctx: &TcContext) -> Option<bool> {
    let protocol: u16 = ctx.load(12).ok()?;
    if u16::from_be(protocol) != ETH_P_IP {
        return Some(false);
    }
    let version_ihl: u8 = ctx.load(ETH_HEADER).ok()?;
    let header = usize::from(version_ihl & 0x0f) * 4;
    let transport: u8 = ctx.load(ETH_HEADER + 9).ok()?;
    // Addresses stay in network byte order, as the user side stores them.
    let src_addr: u32 = ctx.load(ETH_HEADER + 12).ok()?;
    let dst_addr: u32 = ctx.load(ETH_HEADER + 16).ok()?;
    let (src_port, dst_port) = if transport == IPPROTO_TCP || transport == IPPROTO_UDP {
        let ports = ETH_HEADER + header;
        (
            ctx.load::<u16>(ports).ok()?,
            ctx.load::<u16>(ports + 2).ok()?,
        )
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
