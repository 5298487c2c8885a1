//! Tracepoints (socket states, resets, the kernel's DSS mapping checks) and the optional fentry on
//! the MPTCP fallback path. Field offsets come from the tracepoint format files, read by user space
//! at start-up and set as globals before loading; the socket states' BTF tracepoint reads the
//! socket at member offsets from the kernel's BTF.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, TracePointContext},
    EbpfContext,
};
use mptcp_probe_common::{
    config::{
        MappingOffsets, NetnsOffsets, ReceiveResetOffsets, SendResetOffsets, SockFieldOffsets,
        SockStateOffsets, ABSENT, NETNS_ABSENT,
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
#[unsafe(no_mangle)]
static SOCK_FIELD_OFFSETS: SockFieldOffsets = SockFieldOffsets::absent();
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

/// A tracepoint record's whole words, as far as the programs read them from their context
/// directly: one load per word at a fixed offset, the access the verifier allows for a
/// tracepoint's context, instead of a helper call per field. Only the words the record's fields
/// cover ([`SockStateOffsets::record`] and the like, from the format file): the kernel refuses to
/// attach a program that may read past a tracepoint's record. A field beyond them (past
/// [`RECORD_WORDS`], or in a last, partial word) is read with `bpf_probe_read_kernel`.
const RECORD_WORDS: usize = 12;

struct Record<'a> {
    ctx: &'a TracePointContext,
    words: [u64; RECORD_WORDS],
    /// The bytes of `words` read from the record.
    window: usize,
}

impl<'a> Record<'a> {
    #[inline(always)]
    fn new(ctx: &'a TracePointContext, record: u16) -> Self {
        let p = ctx.as_ptr() as *const u64;
        let n = (record as usize / 8).min(RECORD_WORDS);
        let mut words = [0u64; RECORD_WORDS];
        // Word by word at fixed offsets (a loop the compiler kept would make the offset a
        // variable, which the verifier rejects for a context), each only when the record holds
        // it: `record` is a constant of the loaded program, so the verifier sees no read past
        // the record. Word 0 holds the common fields, which a program may not read.
        macro_rules! load {
            ($($i:literal)*) => {
                $(if n > $i {
                    // SAFETY: a constant offset within the record, checked by the verifier.
                    words[$i] = unsafe { core::ptr::read_volatile(p.add($i)) };
                })*
            };
        }
        load!(1 2 3 4 5 6 7 8 9 10 11);
        Record { ctx, words, window: n * 8 }
    }

    /// The field of type `T` at `off` (`T::default()` when the kernel has no such field).
    #[inline(always)]
    fn field<T: Default + Copy>(&self, off: u16) -> T {
        if off == ABSENT {
            return T::default();
        }
        let size = core::mem::size_of::<T>();
        let at = off as usize;
        if at >= 8 && at % size == 0 && at + size <= self.window {
            // Masked so that the verifier sees the alignment it requires of stack reads (a no-op:
            // `at` is a multiple of `size`, a power of two).
            let at = at & !(size - 1);
            if at + size <= RECORD_WORDS * 8 {
                // SAFETY: within `words`, aligned to `size` (a power of two up to 8).
                return unsafe { core::ptr::read((self.words.as_ptr() as *const u8).add(at) as *const T) };
            }
        }
        // SAFETY: the offset comes from the tracepoint's own format file; the read goes through
        // bpf_probe_read_kernel, which fails cleanly on a bad address.
        unsafe { self.ctx.read_at::<T>(at) }.unwrap_or_default()
    }

    /// `N` bytes at `off` (zeros when the kernel has no such field).
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: u16) -> [u8; N] {
        if off == ABSENT {
            return [0; N];
        }
        let at = off as usize;
        let mut out = [0u8; N];
        if at >= 8 && at + N <= self.window && at + N <= RECORD_WORDS * 8 {
            let b = self.words.as_ptr() as *const u8;
            for (i, o) in out.iter_mut().enumerate() {
                // SAFETY: at + i < at + N <= RECORD_WORDS * 8: within `words`; single bytes need
                // no alignment.
                *o = unsafe { core::ptr::read_volatile(b.add(at + i)) };
            }
            return out;
        }
        // SAFETY: as in `field`.
        unsafe { self.ctx.read_at::<[u8; N]>(at) }.unwrap_or(out)
    }
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
fn addrs(r: &Record, family: u16, v4: (u16, u16), v6: (u16, u16)) -> ([u8; 16], [u8; 16]) {
    if family == AF_INET6 {
        (r.bytes::<16>(v6.0), r.bytes::<16>(v6.1))
    } else {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..4].copy_from_slice(&r.bytes::<4>(v4.0));
        d[..4].copy_from_slice(&r.bytes::<4>(v4.1));
        (s, d)
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&SOCK_STATE_OFFSETS);
    let r = Record::new(&ctx, o.record);
    let protocol: u16 = r.field(o.protocol);
    if protocol != IPPROTO_TCP as u16 && protocol != IPPROTO_MPTCP {
        return 0;
    }
    let skaddr = r.field::<u64>(o.skaddr);
    let netns = netns_of_sock(skaddr);
    if !watched(netns) {
        return 0;
    }
    let family: u16 = r.field(o.family);
    let mut ev = SockStateEvent {
        header: header(EventKind::SockState),
        skaddr,
        oldstate: r.field(o.oldstate),
        newstate: r.field(o.newstate),
        protocol,
        family,
        sport: r.field(o.sport),
        dport: r.field(o.dport),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    (ev.saddr, ev.daddr) = addrs(&r, family, (o.saddr, o.daddr), (o.saddr_v6, o.daddr_v6));
    ev.header.netns = netns;
    output(&ev);
    0
}

/// A member of the socket a BTF tracepoint was given, read with a plain load (the verifier
/// checks it against the socket's type; a fault reads zero). `T::default()` when unknown.
#[inline(always)]
fn sk_field<T: Default + Copy>(sk: *const u8, off: u32) -> T {
    if off == NETNS_ABSENT {
        return T::default();
    }
    // SAFETY: `sk` is the tracepoint's socket argument and `off` a member's offset in its type
    // from the kernel's BTF: a load the verifier types (and makes fault-safe).
    unsafe { core::ptr::read_volatile(sk.add(off as usize) as *const T) }
}

/// The same state change as [`inet_sock_set_state`], from the raw tracepoint with the socket
/// itself: no record for the kernel to build, and the namespace of another namespace's socket
/// (half of them in a lab: the other end) read in two loads, not two helper calls.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    count(counters::TRACEPOINT_HITS);
    let sk: *const u8 = ctx.arg(0);
    let o = global(&SOCK_FIELD_OFFSETS);
    let protocol: u16 = sk_field(sk, o.protocol);
    if protocol != IPPROTO_TCP as u16 && protocol != IPPROTO_MPTCP {
        return 0;
    }
    let n = global(&NETNS_OFFSETS);
    let netns = if n.sk_net == NETNS_ABSENT || n.net_inum == NETNS_ABSENT {
        0
    } else {
        let net = sk_field::<u64>(sk, n.sk_net) as *const u8;
        sk_field::<u32>(net, n.net_inum)
    };
    if !watched(netns) {
        return 0;
    }
    let family: u16 = sk_field(sk, o.family);
    // inet_sock's address and port, past struct sock: one helper call where they are 6 bytes
    // apart (the address, the unicast TTL, the port), as the kernel lays them out.
    let base = sk as u64;
    let (sport, saddr4) = if o.inet_sport == o.inet_saddr.wrapping_add(6) {
        let b = kread::<[u8; 8]>(base + o.inet_saddr as u64).unwrap_or([0; 8]);
        (u16::from_be_bytes([b[6], b[7]]), [b[0], b[1], b[2], b[3]])
    } else {
        (
            u16::from_be(kread::<u16>(base + o.inet_sport as u64).unwrap_or(0)),
            kread::<[u8; 4]>(base + o.inet_saddr as u64).unwrap_or([0; 4]),
        )
    };
    let mut ev = SockStateEvent {
        header: header(EventKind::SockState),
        skaddr: base,
        oldstate: ctx.arg(1),
        newstate: ctx.arg(2),
        protocol,
        family,
        sport,
        dport: u16::from_be(sk_field(sk, o.dport)),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET6 {
        ev.saddr = sk_field(sk, o.v6_rcv_saddr);
        ev.daddr = sk_field(sk, o.v6_daddr);
    } else {
        ev.saddr[..4].copy_from_slice(&saddr4);
        ev.daddr[..4].copy_from_slice(&sk_field::<[u8; 4]>(sk, o.daddr));
    }
    ev.header.netns = netns;
    output(&ev);
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&SEND_RESET_OFFSETS);
    let r = Record::new(&ctx, o.record);
    let mut ev = reset_event(reset_dir::SENT);
    ev.skaddr = r.field::<u64>(o.skaddr);
    ev.header.netns = netns_of_sock(ev.skaddr);
    if !watched(ev.header.netns) {
        return 0;
    }
    ev.state = if o.state == ABSENT { -1 } else { r.field(o.state) };
    ev.reason = if o.reason == ABSENT { u32::MAX } else { r.field(o.reason) };
    // saddr/daddr are struct sockaddr_in / sockaddr_in6 in a 28-byte blob.
    let s = r.bytes::<28>(o.saddr);
    let d = r.bytes::<28>(o.daddr);
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
    let r = Record::new(&ctx, o.record);
    let mut ev = reset_event(reset_dir::RECEIVED);
    ev.skaddr = r.field::<u64>(o.skaddr);
    ev.header.netns = netns_of_sock(ev.skaddr);
    if !watched(ev.header.netns) {
        return 0;
    }
    ev.sock_cookie = r.field::<u64>(o.sock_cookie);
    let family: u16 = r.field(o.family);
    ev.family = family;
    ev.sport = r.field(o.sport);
    ev.dport = r.field(o.dport);
    (ev.saddr, ev.daddr) = addrs(&r, family, (o.saddr, o.daddr), (o.saddr_v6, o.daddr_v6));
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
    let r = Record::new(&ctx, o.record);
    let stash = match MAPPING_STASH.get_ptr_mut(0) {
        Some(p) => p,
        None => return 0,
    };
    let flag = |off: u16, bit: u16| -> u16 {
        if r.field::<u8>(off) != 0 {
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
        (*stash).data_seq = r.field(o.data_seq);
        (*stash).data_ack = r.field(o.data_ack);
        (*stash).subflow_seq = r.field(o.subflow_seq);
        (*stash).data_len = r.field(o.data_len);
        (*stash).csum = r.field(o.csum);
        (*stash).flags = flags;
        (*stash).reset_reason = r.field(o.reset_reason);
        (*stash).status = NONE_U8;
    }
    0
}

/// Counts every data-availability status; reports invalid mappings and infinite mappings.
#[tracepoint]
pub fn subflow_check_data_avail(ctx: TracePointContext) -> u32 {
    count(counters::TRACEPOINT_HITS);
    let o = global(&MAPPING_OFFSETS);
    let r = Record::new(&ctx, o.avail_record);
    let status: u8 = r.field(o.status);
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
    ev.header.netns = netns_of_skb(r.field::<u64>(o.skb));
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
