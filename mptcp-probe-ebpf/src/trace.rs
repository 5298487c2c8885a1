//! Tracepoints (socket states, resets, the kernel's DSS mapping checks) and the optional fentry on
//! the MPTCP fallback path. Field offsets come from the tracepoint format files, read by user space
//! at start-up and set as globals before loading.

use aya_ebpf::{
    macros::{fentry, tracepoint},
    programs::{FEntryContext, TracePointContext},
};
use mptcp_probe_common::{
    config::{
        MappingOffsets, NetnsOffsets, ReceiveResetOffsets, SendResetOffsets, SockStateOffsets, ABSENT,
        NETNS_ABSENT,
    },
    counters,
    event::{
        mapping_flags, reset_dir, EventHeader, EventKind, FallbackEvent, MappingEvent, ResetEvent,
        SockStateEvent, EVENT_VERSION,
    },
    proto::{mapping_status, AF_INET, AF_INET6, IPPROTO_MPTCP, IPPROTO_TCP, NONE_U8},
};

use crate::{count, cpu, now_ns, ring_output, MAPPING_STASH};

#[unsafe(no_mangle)]
static SOCK_STATE_OFFSETS: SockStateOffsets = SockStateOffsets::absent();
#[unsafe(no_mangle)]
static SEND_RESET_OFFSETS: SendResetOffsets = SendResetOffsets::absent();
#[unsafe(no_mangle)]
static RECEIVE_RESET_OFFSETS: ReceiveResetOffsets = ReceiveResetOffsets::absent();
#[unsafe(no_mangle)]
static MAPPING_OFFSETS: MappingOffsets = MappingOffsets::absent();
#[unsafe(no_mangle)]
static NETNS_OFFSETS: NetnsOffsets = NetnsOffsets::absent();
/// The network namespace whose sockets are reported (its inode); 0: every one. Set by the loader.
#[unsafe(no_mangle)]
static WATCH_NETNS: u32 = 0;

/// Whether a socket's namespace is the watched one (or that cannot be told: then user space
/// decides). Checked before the event is built, so other namespaces' sockets cost a few reads.
#[inline(always)]
fn watched(netns: u32) -> bool {
    let w = global(&WATCH_NETNS);
    w == 0 || netns == 0 || netns == w
}

/// A stashed mapping older than this is not joined with a status.
const STASH_MAX_AGE_NS: u64 = 1_000_000;

#[inline(always)]
fn field<T: Default>(ctx: &TracePointContext, off: u16) -> T {
    if off == ABSENT {
        return T::default();
    }
    // SAFETY: the offset comes from the tracepoint's own format file; the read goes through
    // bpf_probe_read_kernel, which fails cleanly on a bad address.
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

#[inline(always)]
fn bytes<const N: usize>(ctx: &TracePointContext, off: u16) -> [u8; N] {
    if off == ABSENT {
        return [0; N];
    }
    // SAFETY: as in `field`.
    unsafe { ctx.read_at::<[u8; N]>(off as usize) }.unwrap_or([0; N])
}

#[inline(always)]
fn header(kind: EventKind) -> EventHeader {
    EventHeader { kind: kind as u8, version: EVENT_VERSION, cpu: cpu(), netns: 0, ts_ns: now_ns() }
}

#[inline(always)]
fn kread<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// Network namespace inode of a socket: `sk->__sk_common.skc_net.net->ns.inum`, 0 if unknown.
#[inline(always)]
fn netns_of_sock(sk: u64) -> u32 {
    let o = global(&NETNS_OFFSETS);
    if o.sk_net == NETNS_ABSENT || o.net_inum == NETNS_ABSENT || sk == 0 {
        return 0;
    }
    let net: u64 = match kread(sk + o.sk_net as u64) {
        Some(n) => n,
        None => return 0,
    };
    kread::<u32>(net + o.net_inum as u64).unwrap_or(0)
}

/// Network namespace inode of the socket an skb belongs to, 0 if unknown.
#[inline(always)]
fn netns_of_skb(skb: u64) -> u32 {
    let o = global(&NETNS_OFFSETS);
    if o.skb_sk == NETNS_ABSENT || skb == 0 {
        return 0;
    }
    netns_of_sock(kread::<u64>(skb + o.skb_sk as u64).unwrap_or(0))
}

#[inline(always)]
fn global<T: Copy>(g: &T) -> T {
    // SAFETY: globals are set by the loader before load; volatile keeps the compiler from
    // folding the compile-time default.
    unsafe { core::ptr::read_volatile(g) }
}

/// Source and destination addresses of a tracepoint that has both IPv4 and IPv6 fields.
#[inline(always)]
fn addrs(ctx: &TracePointContext, family: u16, v4: (u16, u16), v6: (u16, u16)) -> ([u8; 16], [u8; 16]) {
    if family == AF_INET6 {
        (bytes::<16>(ctx, v6.0), bytes::<16>(ctx, v6.1))
    } else {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..4].copy_from_slice(&bytes::<4>(ctx, v4.0));
        d[..4].copy_from_slice(&bytes::<4>(ctx, v4.1));
        (s, d)
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&SOCK_STATE_OFFSETS);
    let protocol: u16 = field(&ctx, o.protocol);
    if protocol != IPPROTO_TCP as u16 && protocol != IPPROTO_MPTCP {
        return 0;
    }
    let skaddr = field::<u64>(&ctx, o.skaddr);
    let netns = netns_of_sock(skaddr);
    if !watched(netns) {
        return 0;
    }
    let family: u16 = field(&ctx, o.family);
    let mut ev = SockStateEvent {
        header: header(EventKind::SockState),
        skaddr,
        oldstate: field(&ctx, o.oldstate),
        newstate: field(&ctx, o.newstate),
        protocol,
        family,
        sport: field(&ctx, o.sport),
        dport: field(&ctx, o.dport),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    (ev.saddr, ev.daddr) = addrs(&ctx, family, (o.saddr, o.daddr), (o.saddr_v6, o.daddr_v6));
    ev.header.netns = netns;
    output(&ev);
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&SEND_RESET_OFFSETS);
    let mut ev = reset_event(reset_dir::SENT);
    ev.skaddr = field::<u64>(&ctx, o.skaddr);
    ev.header.netns = netns_of_sock(ev.skaddr);
    if !watched(ev.header.netns) {
        return 0;
    }
    ev.state = if o.state == ABSENT { -1 } else { field(&ctx, o.state) };
    ev.reason = if o.reason == ABSENT { u32::MAX } else { field(&ctx, o.reason) };
    // saddr/daddr are struct sockaddr_in / sockaddr_in6 in a 28-byte blob.
    let s = bytes::<28>(&ctx, o.saddr);
    let d = bytes::<28>(&ctx, o.daddr);
    let family = u16::from_ne_bytes([s[0], s[1]]);
    ev.family = family;
    ev.sport = u16::from_be_bytes([s[2], s[3]]);
    ev.dport = u16::from_be_bytes([d[2], d[3]]);
    if family == AF_INET {
        ev.saddr[..4].copy_from_slice(&s[4..8]);
        ev.daddr[..4].copy_from_slice(&d[4..8]);
    } else if family == AF_INET6 {
        ev.saddr.copy_from_slice(&s[8..24]);
        ev.daddr.copy_from_slice(&d[8..24]);
    }
    output(&ev);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&RECEIVE_RESET_OFFSETS);
    let mut ev = reset_event(reset_dir::RECEIVED);
    ev.skaddr = field::<u64>(&ctx, o.skaddr);
    ev.header.netns = netns_of_sock(ev.skaddr);
    if !watched(ev.header.netns) {
        return 0;
    }
    ev.sock_cookie = field::<u64>(&ctx, o.sock_cookie);
    let family: u16 = field(&ctx, o.family);
    ev.family = family;
    ev.sport = field(&ctx, o.sport);
    ev.dport = field(&ctx, o.dport);
    (ev.saddr, ev.daddr) = addrs(&ctx, family, (o.saddr, o.daddr), (o.saddr_v6, o.daddr_v6));
    output(&ev);
    0
}

#[inline(always)]
fn reset_event(dir: u8) -> ResetEvent {
    ResetEvent {
        header: header(EventKind::Reset),
        skaddr: 0,
        sock_cookie: 0,
        dir,
        _pad: [0; 3],
        state: -1,
        reason: u32::MAX,
        family: 0,
        sport: 0,
        dport: 0,
        _pad2: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    }
}

/// Stashes the mapping on this CPU; `subflow_check_data_avail` follows it in the same call chain.
#[tracepoint]
pub fn get_mapping_status(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&MAPPING_OFFSETS);
    let stash = match MAPPING_STASH.get_ptr_mut(0) {
        Some(p) => p,
        None => return 0,
    };
    let flag = |off: u16, bit: u16| -> u16 {
        if field::<u8>(&ctx, off) != 0 {
            bit
        } else {
            0
        }
    };
    let flags = mapping_flags::HAS_MAPPING
        | flag(o.use_map, mapping_flags::USE_MAP)
        | flag(o.dsn64, mapping_flags::DSN64)
        | flag(o.data_fin, mapping_flags::DATA_FIN)
        | flag(o.use_ack, mapping_flags::USE_ACK)
        | flag(o.ack64, mapping_flags::ACK64)
        | flag(o.mpc_map, mapping_flags::MPC_MAP)
        | flag(o.frozen, mapping_flags::FROZEN)
        | flag(o.reset_transient, mapping_flags::RESET_TRANSIENT)
        | flag(o.csum_reqd, mapping_flags::CSUM_REQD)
        | flag(o.infinite_map, mapping_flags::INFINITE_MAP);
    // SAFETY: per-CPU slot, written only by this CPU.
    unsafe {
        (*stash).header = header(EventKind::Mapping);
        (*stash).data_seq = field(&ctx, o.data_seq);
        (*stash).data_ack = field(&ctx, o.data_ack);
        (*stash).subflow_seq = field(&ctx, o.subflow_seq);
        (*stash).data_len = field(&ctx, o.data_len);
        (*stash).csum = field(&ctx, o.csum);
        (*stash).flags = flags;
        (*stash).reset_reason = field(&ctx, o.reset_reason);
        (*stash).status = NONE_U8;
    }
    0
}

/// Counts every data-availability status; reports invalid mappings and infinite mappings.
#[tracepoint]
pub fn subflow_check_data_avail(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&MAPPING_OFFSETS);
    let status: u8 = field(&ctx, o.status);
    if status <= 4 {
        count(counters::MAPPING_STATUS_BASE + status as u32);
    }
    let stash = match MAPPING_STASH.get_ptr_mut(0) {
        Some(p) => p,
        None => return 0,
    };
    // SAFETY: per-CPU slot, written only by this CPU.
    let mut ev = unsafe { *stash };
    let fresh = ev.flags & mapping_flags::HAS_MAPPING != 0
        && now_ns().wrapping_sub(ev.header.ts_ns) < STASH_MAX_AGE_NS;
    // SAFETY: as above; the stash is consumed.
    unsafe { (*stash).flags = 0 };
    if !fresh {
        ev = MappingEvent { header: header(EventKind::Mapping), ..MappingEvent::default() };
    }
    let interesting = status == mapping_status::INVALID || ev.flags & mapping_flags::INFINITE_MAP != 0;
    if !interesting {
        return 0;
    }
    ev.status = status;
    ev.header.ts_ns = now_ns();
    ev.header.netns = netns_of_skb(field::<u64>(&ctx, o.skb));
    output(&ev);
    0
}

/// `__mptcp_try_fallback(struct mptcp_sock *msk, int fb_mib)`: the exact reason per connection.
/// Loaded only where the host permits fentry.
#[fentry(function = "__mptcp_try_fallback")]
pub fn mptcp_try_fallback(ctx: FEntryContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let msk: u64 = ctx.arg(0);
    let mib: i32 = ctx.arg(1);
    let ev = FallbackEvent { header: header(EventKind::Fallback), msk, mib: mib as u32, _pad: 0 };
    output(&ev);
    0
}

#[inline(always)]
fn output<T: 'static>(ev: &T) {
    if ring_output(ev, true) {
        count(counters::EVENTS_EMITTED);
    } else {
        count(counters::RINGBUF_DROPS);
    }
}
