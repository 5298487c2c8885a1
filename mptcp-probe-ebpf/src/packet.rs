//! TC classifier: IPv4/IPv6 + TCP header walk with direct packet access, option parsing with the
//! shared parser, per-flow state, and events for the packets that matter.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{bindings::BPF_NOEXIST, macros::classifier, programs::TcContext};
use mptcp_probe_common::{
    config::level,
    counters,
    event::{direction, tcp_flags, why, EventHeader, EventKind, PacketEvent, EVENT_VERSION, HEADER_BYTES},
    flow::{
        self, hs_seen, mark, FlowAcc, FlowKey, FlowState, HandshakeOpt, SeqTrack, FLOW_ACC_FLUSH_EVERY,
        HS_SYN, HS_SYN_ACK, HS_THIRD_ACK,
    },
    options::{
        dss, opt_flags, parse_tcp_options_in, subtype, TcpOptions, MAX_MPTCP_OPTIONS, MAX_OPTION_BYTES,
        TCPOPT_MPTCP, TCPOPT_NOP, TCPOPT_TIMESTAMP,
    },
    proto::{
        ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING,
        IPPROTO_TCP, NONE_U8,
    },
};

use crate::{
    count, count_n, cpu, event_level, now_ns, ring_output, tick_ns, Scratch, FLOWS, FLOW_ACC, FLOW_INIT,
    SCRATCH,
};

/// Continue with the next program / default action (TCX_NEXT, TC_ACT_UNSPEC).
const TC_NEXT: i32 = -1;
const ETH_HLEN: usize = 14;
/// A CPU's running totals quiet this long are checked against the table before the next segment
/// is added (the flow may have been evicted during the pause).
const FLOW_ACC_STALE_NS: u64 = 50_000_000;
/// The flags of a segment that starts or ends a flow: never on the fast path, and timed with the
/// precise clock.
const FLOW_EDGES: u8 = tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST;
/// IPv6 authentication header (its length counts 4-byte words, less 2).
const IPPROTO_AH: u8 = 51;
/// IPv6 extension headers walked at most.
const MAX_EXT_HEADERS: usize = 6;
/// Largest offset of the TCP header from the start of the packet that is parsed.
const MAX_HEADER_OFFSET: usize = 1024;

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    observe::<{ direction::INGRESS }, true>(&ctx);
    TC_NEXT
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    observe::<{ direction::EGRESS }, true>(&ctx);
    TC_NEXT
}

/// For interfaces without a link-layer header (tun, WireGuard, ...).
#[classifier]
pub fn tc_ingress_l3(ctx: TcContext) -> i32 {
    observe::<{ direction::INGRESS }, false>(&ctx);
    TC_NEXT
}

#[classifier]
pub fn tc_egress_l3(ctx: TcContext) -> i32 {
    observe::<{ direction::EGRESS }, false>(&ctx);
    TC_NEXT
}

#[inline(always)]
fn observe<const DIR: u8, const L2: bool>(ctx: &TcContext) {
    count(counters::PACKETS_INSPECTED);
    let proto = u16::from_be(ctx.skb.protocol() as u16);
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return;
    }
    let sc = match SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU scratch slot, used by this program invocation only.
        Some(p) => unsafe { &mut *p },
        None => return,
    };
    // Three phases that meet only through the scratch map: re-reading their results there (the
    // verifier does not track map memory) lets it merge the many header paths before the
    // option walk instead of walking the options once per path.
    if parse::<DIR, L2>(ctx, proto, sc).is_none() {
        return;
    }
    // The flow's entry when the fast path looked it up already.
    let mut entry = None;
    if absorb::<DIR>(ctx, sc, &mut entry) {
        return;
    }
    // The slow path: this CPU's totals of the flow go to the table first, so that the state the
    // slow path updates and reports is whole.
    flush_if(&sc.ev.flow);
    copy_options(ctx, sc);
    let copied = reload(&sc.copied) as usize;
    let opt_len = reload(&sc.opt_len) as usize;
    clear_options(&mut sc.ev.opts);
    parse_tcp_options_in(&sc.buf, copied, copied < opt_len, &mut sc.ev.opts, &mut sc.walk);
    let w = track::<DIR>(&mut sc.ev, entry);
    let level = event_level();
    if w != 0 && (level == level::ALL || w & why::FLOWS_LEVEL != 0) {
        emit::<L2>(ctx, sc, w, level == level::ALL);
    }
}

/// The fast path: a steady segment (see [`FlowAcc`]) is added to this CPU's totals for its flow,
/// without the option walk, the flow-table lookup or an atomic add. True when it was. Steady: one
/// well-formed DSS on an MPTCP flow past its handshake and first DSS this way, or no MPTCP option
/// at all on a plain TCP flow. `entry` is set to the flow's entry when it was looked up.
#[inline(always)]
fn absorb<const DIR: u8>(ctx: &TcContext, sc: &mut Scratch, entry: &mut Option<*mut FlowState>) -> bool {
    if sc.ev.tcp_flags & FLOW_EDGES != 0 {
        return false;
    }
    let Some((dss, shift)) = steady_segment(ctx, sc) else { return false };
    let Some(acc) = FLOW_ACC.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's slot; only this program invocation touches it while it runs.
    let acc = unsafe { &mut *acc };
    let d = DIR as usize & 1;
    let bit = 1u8 << d;
    if !same_key(&acc.key, &sc.ev.flow) {
        // Another flow: the totals so far go to the table; this one is taken on only when the
        // table says it is past its handshake and first DSS this way.
        flush(acc);
        let Some(p) = FLOWS.get_ptr_mut(&sc.ev.flow) else { return false };
        *entry = Some(p);
        // SAFETY: a map value, read only here.
        let st = unsafe { &*p };
        let handshake_done = st.handshake[HS_THIRD_ACK].seen != 0 || st.handshake[HS_SYN_ACK].seen == 0;
        let steady = if dss == 0 {
            // Data without DSS on an MPTCP flow is for the slow path to count and report.
            !st.negotiated()
        } else {
            st.marked(d, mark::FIRST_DSS)
        };
        if !handshake_done || !steady {
            return false;
        }
        acc.key = sc.ev.flow;
        acc.mptcp = (dss != 0) as u8;
        acc.since_ns = now_ns();
        load_seq(acc, st, 0);
        load_seq(acc, st, 1);
    } else if (dss == 0) != (acc.mptcp == 0) {
        // A segment without DSS on this MPTCP flow, or with one on this plain flow.
        return false;
    } else if tick_ns().wrapping_sub(acc.last_ns) > FLOW_ACC_STALE_NS {
        // After a pause the flow may have been evicted meanwhile: see whether it is still there
        // before adding to it (if not, this packet takes the slow path and tracks it anew).
        flush(acc);
        if !same_key(&acc.key, &sc.ev.flow) {
            return false;
        }
    }
    let ev = &sc.ev;
    if let Some(shift) = shift {
        if acc.seq_loaded & bit == 0 {
            // The slow path handled a packet of this flow since (it may have moved the data
            // sequence on): read it again.
            let Some(p) = FLOWS.get_ptr_mut(&acc.key) else { return false };
            *entry = Some(p);
            // SAFETY: a map value, read only here.
            load_seq(acc, unsafe { &*p }, d);
            if acc.seq_loaded & bit == 0 {
                // Not tracked yet this way: the slow path starts it.
                return false;
            }
        }
        let Some(t) = acc.seq.get_mut(d) else { return false };
        let mut next = *t;
        if next.step(ev.seq, ev.seq.wrapping_add(ev.payload_len), shift) {
            // Data sent again at the MPTCP level: for the slow path to count and report.
            return false;
        }
        *t = next;
        acc.seq_dirty |= bit;
    }
    if let Some(p) = acc.packets.get_mut(d) {
        *p = p.wrapping_add(1);
    }
    if let Some(p) = acc.dss.get_mut(d) {
        *p = p.wrapping_add(dss);
    }
    if let Some(p) = acc.payload_bytes.get_mut(d) {
        *p = p.wrapping_add(ev.payload_len as u64);
    }
    if ev.payload_len > 0 {
        if let Some(p) = acc.data_segments.get_mut(d) {
            *p = p.wrapping_add(ev.wire_segments as u32);
        }
        if let Some(m) = acc.max_segment.get_mut(d) {
            if ev.segment_size > *m {
                *m = ev.segment_size;
            }
        }
    }
    acc.last_ns = tick_ns();
    acc.pending += 1;
    count(counters::FAST_PATH);
    if acc.pending >= FLOW_ACC_FLUSH_EVERY {
        flush(acc);
    }
    true
}

/// Whether the segment's options are timestamps (or nothing), then either nothing more or one
/// well-formed DSS with no DATA_FIN and no infinite mapping, then padding; read straight from the
/// packet. Some((n, shift)): the count of DSS options it carries (0 or 1), and for data with a
/// mapping, the mapping's DSN less its subflow sequence number ([`SeqTrack`]).
#[inline(always)]
fn steady_segment(ctx: &TcContext, sc: &Scratch) -> Option<(u32, Option<u32>)> {
    let data = ctx.data();
    let end = ctx.data_end();
    let tcp_off = reload(&sc.tcp_off) as usize;
    let opt_len = reload(&sc.opt_len) as usize;
    if tcp_off > MAX_HEADER_OFFSET || opt_len > MAX_OPTION_BYTES {
        return None;
    }
    if opt_len == 0 {
        return Some((0, None));
    }
    if opt_len < 4 {
        return None;
    }
    let opts = data + tcp_off + 20;
    let first = read::<4>(opts, end)?;
    // NOP NOP TS as Linux writes it, or the DSS first.
    let at = if first == [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10] { 12 } else { 0 };
    if at == opt_len {
        return Some((0, None));
    }
    let h = read::<4>(opts + at, end)?;
    let (len, flags) = (h[1] as usize, h[3]);
    if h[0] != TCPOPT_MPTCP || h[2] >> 4 != subtype::DSS || flags & dss::DATA_FIN != 0 {
        return None;
    }
    let ack = if flags & dss::DATA_ACK == 0 {
        0
    } else if flags & dss::DATA_ACK_8 != 0 {
        8
    } else {
        4
    };
    let mapping = flags & dss::MAPPING != 0;
    let dsn = if flags & dss::DSN_8 != 0 { 8 } else { 4 };
    let want = 4 + ack + if mapping { dsn + 6 } else { 0 };
    // With a mapping, the checksum may follow.
    if len != want && !(mapping && len == want + 2) {
        return None;
    }
    // Only padding after it: nothing at all, or the two NOPs Linux writes after a 26-byte DSS.
    let rest = opt_len.checked_sub(at + len)?;
    if rest == 2 {
        let pad = read::<2>(opts + at + len, end)?;
        if pad != [TCPOPT_NOP, TCPOPT_NOP] {
            return None;
        }
    } else if rest != 0 {
        return None;
    }
    if !mapping || sc.ev.payload_len == 0 {
        return Some((1, None));
    }
    // The mapping: the DSN's low 32 bits, the subflow sequence number, the data-level length.
    let m = read::<10>(opts + at + 4 + ack + dsn - 4, end)?;
    // A data-level length of 0 on a segment with data is an infinite mapping.
    if m[8] == 0 && m[9] == 0 {
        return None;
    }
    let dsn_low = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
    let ssn = u32::from_be_bytes([m[4], m[5], m[6], m[7]]);
    Some((1, Some(dsn_low.wrapping_sub(ssn))))
}

/// Reads a direction's data sequence from the flow's entry into this CPU's totals, when the
/// entry tracks it.
#[inline(always)]
fn load_seq(acc: &mut FlowAcc, st: &FlowState, d: usize) {
    let bit = 1u8 << (d & 1);
    acc.seq_loaded &= !bit;
    acc.seq_dirty &= !bit;
    if let (Some(t), Some(from)) = (acc.seq.get_mut(d), st.seq.get(d)) {
        if st.marked(d, mark::SEQ_TRACKED) {
            *t = *from;
            acc.seq_loaded |= bit;
        }
    }
}

/// Two flow keys are the same: compared as ten words.
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    // SAFETY: FlowKey is 40 bytes of plain data without padding, aligned to 4 bytes.
    let (a, b) =
        unsafe { (&*(a as *const FlowKey as *const [u32; 10]), &*(b as *const FlowKey as *const [u32; 10])) };
    let mut i = 0;
    while i < 10 {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Before the slow path handles a packet of `key`: this CPU's totals of that flow go to the table.
#[inline(always)]
fn flush_if(key: &FlowKey) {
    let Some(acc) = FLOW_ACC.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot.
    let acc = unsafe { &mut *acc };
    if same_key(&acc.key, key) {
        flush(acc);
        // The slow path may move the data sequence on: read it again after.
        acc.seq_loaded = 0;
    }
}

/// Adds a CPU's totals to its flow's entry and starts them again. When the table evicted the
/// flow meanwhile, the totals go with the rest of its state (counted, not silently) and the
/// flow's next packet takes the slow path, which tracks it anew.
#[inline(always)]
fn flush(acc: &mut FlowAcc) {
    if acc.pending == 0 && acc.seq_dirty == 0 {
        return;
    }
    // An entry created since these totals were started is the flow tracked anew after an
    // eviction (on another CPU): not theirs.
    let entry = FLOWS.get_ptr_mut(&acc.key).filter(|p| {
        // SAFETY: a map value, read only here.
        unsafe { (**p).first_ns <= acc.since_ns }
    });
    if let Some(st) = entry {
        // SAFETY: a map value of this flow; counters are added atomically.
        let s = unsafe { &mut *st };
        for d in 0..2 {
            if let (Some(t), Some(v)) = (s.packets.get_mut(d), acc.packets.get(d)) {
                add32n(t, *v);
            }
            if let (Some(t), Some(v)) = (s.dss.get_mut(d), acc.dss.get(d)) {
                add32n(t, *v);
            }
            if let (Some(t), Some(v)) = (s.data_segments.get_mut(d), acc.data_segments.get(d)) {
                add32n(t, *v);
            }
            if let (Some(t), Some(v)) = (s.payload_bytes.get_mut(d), acc.payload_bytes.get(d)) {
                add64(t, *v);
            }
            if let (Some(t), Some(v)) = (s.max_segment.get_mut(d), acc.max_segment.get(d)) {
                if *v > *t {
                    *t = *v;
                }
            }
        }
        if acc.last_ns > s.last_ns {
            s.last_ns = acc.last_ns;
        }
        for d in 0..2 {
            if acc.seq_dirty & (1 << d) != 0 {
                if let (Some(t), Some(v)) = (s.seq.get_mut(d), acc.seq.get(d)) {
                    *t = *v;
                }
            }
        }
    } else {
        count_n(counters::FAST_PATH_ORPHANED, acc.pending as u64);
        acc.key = FlowKey::default();
        acc.seq_loaded = 0;
    }
    acc.seq_dirty = 0;
    for d in 0..2 {
        // One store each: assigning whole arrays compiles to calls of a memset subprogram.
        // SAFETY: volatile writes through valid references.
        unsafe {
            core::ptr::write_volatile(&mut acc.packets[d], 0);
            core::ptr::write_volatile(&mut acc.dss[d], 0);
            core::ptr::write_volatile(&mut acc.data_segments[d], 0);
            core::ptr::write_volatile(&mut acc.payload_bytes[d], 0);
            core::ptr::write_volatile(&mut acc.max_segment[d], 0);
        }
    }
    acc.pending = 0;
    acc.epoch = acc.epoch.wrapping_add(1);
    acc.since_ns = now_ns();
}

/// The four bytes of `b` at `at`, in memory order.
#[inline(always)]
fn word<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

const _: () = assert!(
    core::mem::align_of::<FlowKey>() >= 4
        && core::mem::offset_of!(FlowKey, local_addr) % 4 == 0
        && core::mem::offset_of!(FlowKey, remote_addr) % 4 == 0
);

/// Writes a flow key's address as four word stores: assigning a 16-byte array compiles to a
/// call of a memset or memmove subprogram, on the path of every packet.
#[inline(always)]
fn put_addr(dst: &mut [u8; 16], words: [u32; 4]) {
    let p = dst.as_mut_ptr() as *mut u32;
    for (i, w) in words.into_iter().enumerate() {
        // SAFETY: the address fields of FlowKey are 4-byte aligned (the struct starts with a u32
        // and they sit at offsets 8 and 24), so each word lies within `dst`, aligned.
        unsafe { core::ptr::write_volatile(p.add(i), w) };
    }
}

const _: () =
    assert!(core::mem::size_of::<TcpOptions>() % 8 == 0 && core::mem::align_of::<TcpOptions>() >= 8);

/// Makes `o` [`TcpOptions::empty`] with word stores (an assignment of the whole struct compiles
/// to a call of a memset subprogram): all zero but the two fields whose "absent" is 0xff.
#[inline(always)]
fn clear_options(o: &mut TcpOptions) {
    let p = o as *mut TcpOptions as *mut u64;
    for i in 0..core::mem::size_of::<TcpOptions>() / 8 {
        // SAFETY: within the struct (its size is a multiple of 8), aligned to 8 (asserted above).
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
    o.wscale = NONE_U8;
    o.malformed_at = NONE_U8;
}

/// Reads a scratch field back from map memory. Volatile, so the optimiser cannot forward the
/// value it stored; the verifier then sees an unknown value, the same on every path.
#[inline(always)]
fn reload(field: &u32) -> u32 {
    // SAFETY: volatile read through a valid reference.
    unsafe { core::ptr::read_volatile(field) }
}

/// Copies the option area into the scratch buffer, word by word (its length is a multiple of 4).
#[inline(always)]
fn copy_options(ctx: &TcContext, sc: &mut Scratch) {
    let data = ctx.data();
    let end = ctx.data_end();
    let tcp_off = reload(&sc.tcp_off) as usize;
    let opt_len = reload(&sc.opt_len) as usize;
    sc.copied = 0;
    if tcp_off > MAX_HEADER_OFFSET || opt_len > MAX_OPTION_BYTES {
        return;
    }
    let opt_start = data + tcp_off + 20;
    let mut copied = 0u32;
    for i in 0..(MAX_OPTION_BYTES / 4) {
        if i * 4 >= opt_len {
            break;
        }
        match read::<4>(opt_start + i * 4, end) {
            Some(w) => {
                if let Some(dst) = sc.buf.get_mut(i * 4..i * 4 + 4) {
                    dst.copy_from_slice(&w);
                }
                copied += 4;
            }
            None => break,
        }
    }
    sc.copied = copied;
}

/// Reads `N` bytes at `addr` when they lie before `end`. The bound check sits right before the
/// read through the same pointer, the form the verifier accepts for variable offsets.
#[inline(always)]
fn read<const N: usize>(addr: usize, end: usize) -> Option<[u8; N]> {
    if addr + N > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { *(addr as *const [u8; N]) })
}

/// Parses the network and TCP headers into the scratch event; None when the packet is not a TCP
/// segment worth looking at (or could not be read, counted).
#[inline(always)]
fn parse<const DIR: u8, const L2: bool>(ctx: &TcContext, proto: u16, sc: &mut Scratch) -> Option<()> {
    let mut data = ctx.data();
    let mut end = ctx.data_end();
    let l2 = if L2 { ETH_HLEN } else { 0 };
    // Headers are almost always linear (a GSO packet's payload is in page fragments, its headers
    // are not); when they are not, pull the worst case once. Pulling what is linear already
    // would copy payload into the head of every such packet.
    if ctx.len() as usize > end - data && !headers_linear(data, end, l2, proto) {
        let want = ctx.len().min((l2 + 60 + 60) as u32);
        count(counters::HEADER_PULLS);
        let _ = ctx.pull_data(want);
        data = ctx.data();
        end = ctx.data_end();
    }
    // SAFETY: the context pointer is valid for the whole program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = &mut sc.ev.flow;
    key.ifindex = ifindex;
    let ttl =
        if proto == ETH_P_IP { ipv4::<DIR>(data, l2, end, sc)? } else { ipv6::<DIR>(data, l2, end, sc)? };
    tcp::<DIR>(ctx, data, end, ttl, sc)
}

/// Whether the network header and the whole TCP header (options included) are in the linear
/// part, for the common layouts: IPv4 with or without options, IPv6 directly followed by TCP.
/// False when unsure (an IPv6 extension header): the caller pulls then.
#[inline(always)]
fn headers_linear(data: usize, end: usize, l2: usize, proto: u16) -> bool {
    let ip = data + l2;
    let tcp = if proto == ETH_P_IP {
        let Some(h) = read::<20>(ip, end) else { return false };
        ip + ((h[0] & 0x0f) as usize) * 4
    } else {
        let Some(h) = read::<40>(ip, end) else { return false };
        if h[6] != IPPROTO_TCP {
            return false;
        }
        ip + 40
    };
    let Some(t) = read::<20>(tcp, end) else { return false };
    tcp + ((t[12] >> 4) as usize) * 4 <= end
}

/// The IPv4 header: addresses, TTL, where the TCP header starts.
#[inline(always)]
fn ipv4<const DIR: u8>(data: usize, l2: usize, end: usize, sc: &mut Scratch) -> Option<u8> {
    let ip = data + l2;
    let h = match read::<20>(ip, end) {
        Some(h) => h,
        None => return unparsed_ttl(),
    };
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    // Fragments other than the first carry no TCP header.
    if h[9] != IPPROTO_TCP || ihl < 20 || (h[6] & 0x1f) != 0 || h[7] != 0 {
        return None;
    }
    let key = &mut sc.ev.flow;
    let (src, dst) = ([h[12], h[13], h[14], h[15]], [h[16], h[17], h[18], h[19]]);
    let (local, remote) = if DIR == direction::EGRESS { (src, dst) } else { (dst, src) };
    put_addr(&mut key.local_addr, flow::v4_mapped_words(local));
    put_addr(&mut key.remote_addr, flow::v4_mapped_words(remote));
    sc.tcp_off = (ip + ihl - data) as u32;
    Some(h[8])
}

/// The IPv6 header and its extension headers: addresses, hop limit, where the TCP header starts.
#[inline(always)]
fn ipv6<const DIR: u8>(data: usize, l2: usize, end: usize, sc: &mut Scratch) -> Option<u8> {
    let ip = data + l2;
    let h = match read::<40>(ip, end) {
        Some(h) => h,
        None => return unparsed_ttl(),
    };
    let key = &mut sc.ev.flow;
    let src = [word(&h, 8), word(&h, 12), word(&h, 16), word(&h, 20)];
    let dst = [word(&h, 24), word(&h, 28), word(&h, 32), word(&h, 36)];
    let (local, remote) = if DIR == direction::EGRESS { (src, dst) } else { (dst, src) };
    put_addr(&mut key.local_addr, local);
    put_addr(&mut key.remote_addr, remote);
    // The extension-header cursor lives in the scratch map so that all header chains meet in one
    // verifier state at each step instead of multiplying.
    sc.tcp_off = (ip + 40 - data) as u32;
    sc.next_hdr = h[6] as u32;
    for _ in 0..MAX_EXT_HEADERS {
        let off = reload(&sc.tcp_off) as usize;
        if off > MAX_HEADER_OFFSET {
            return unparsed_ttl();
        }
        let at = data + off;
        match reload(&sc.next_hdr) as u8 {
            IPPROTO_TCP => return Some(h[7]),
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(e) = read::<2>(at, end) else { return unparsed_ttl() };
                sc.next_hdr = e[0] as u32;
                sc.tcp_off = (off + (e[1] as usize + 1) * 8) as u32;
            }
            // Only the first fragment carries the TCP header.
            IPPROTO_FRAGMENT => {
                let Some(e) = read::<4>(at, end) else { return unparsed_ttl() };
                if (((e[2] as u16) << 8 | e[3] as u16) & 0xfff8) != 0 {
                    return None;
                }
                sc.next_hdr = e[0] as u32;
                sc.tcp_off = (off + 8) as u32;
            }
            IPPROTO_AH => {
                let Some(e) = read::<2>(at, end) else { return unparsed_ttl() };
                sc.next_hdr = e[0] as u32;
                sc.tcp_off = (off + (e[1] as usize + 2) * 4) as u32;
            }
            _ => return None,
        }
    }
    // Too long a chain of extension headers.
    unparsed_ttl()
}

/// The TCP header: ports, sequence numbers, flags, where the options are, payload and GSO size.
#[inline(always)]
fn tcp<const DIR: u8>(ctx: &TcContext, data: usize, end: usize, ttl: u8, sc: &mut Scratch) -> Option<()> {
    let off = reload(&sc.tcp_off) as usize;
    if off > MAX_HEADER_OFFSET {
        return unparsed();
    }
    let tcp = data + off;
    let t = match read::<20>(tcp, end) {
        Some(t) => t,
        None => return unparsed(),
    };
    let sport = u16::from_be_bytes([t[0], t[1]]);
    let dport = u16::from_be_bytes([t[2], t[3]]);
    let (lport, rport) = if DIR == direction::EGRESS { (sport, dport) } else { (dport, sport) };
    let ev = &mut sc.ev;
    ev.flow.local_port = lport;
    ev.flow.remote_port = rport;
    let doff = ((t[12] >> 4) as usize) * 4;
    if doff < 20 {
        count(counters::MALFORMED_OPTIONS);
        return None;
    }
    sc.tcp_off = (tcp - data) as u32;
    sc.opt_len = (doff - 20) as u32;
    let headers = tcp + doff - data;
    let total = ctx.len() as usize;
    ev.seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    ev.ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    ev.window = u16::from_be_bytes([t[14], t[15]]);
    ev.tcp_flags = t[13];
    ev.ttl = ttl;
    ev.direction = DIR;
    ev.payload_len = if total > headers { (total - headers) as u32 } else { 0 };
    // SAFETY: the context pointer is valid for the whole program run.
    let (gso_segs, gso_size) = unsafe { ((*ctx.skb.skb).gso_segs, (*ctx.skb.skb).gso_size) };
    if gso_segs > 1 && gso_size > 0 {
        ev.wire_segments = gso_segs.min(u16::MAX as u32) as u16;
        ev.segment_size = gso_size.min(u16::MAX as u32) as u16;
    } else {
        ev.wire_segments = 1;
        ev.segment_size = ev.payload_len.min(u16::MAX as u32) as u16;
    }
    Some(())
}

#[inline(always)]
fn unparsed_ttl() -> Option<u8> {
    count(counters::UNPARSED);
    None
}

#[inline(always)]
fn unparsed() -> Option<()> {
    count(counters::UNPARSED);
    None
}

#[inline(always)]
fn add32(p: *mut u32) {
    // SAFETY: p points into a map value that lives as long as the program runs; the add is a
    // BPF atomic add, so concurrent CPUs do not lose counts.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, 1) };
}

#[inline(always)]
fn add32n(p: *mut u32, n: u32) {
    // SAFETY: as in add32.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, n) };
}

#[inline(always)]
fn add64(p: *mut u64, n: u64) {
    // SAFETY: as above.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}

#[inline(always)]
fn handshake_opt(opts: &TcpOptions, dir: u8, payload: bool) -> HandshakeOpt {
    let mut h = HandshakeOpt {
        seen: hs_seen::SEEN
            | if payload { hs_seen::DATA } else { 0 }
            | if dir == direction::EGRESS { hs_seen::EGRESS } else { 0 },
        mptcp_subtype: NONE_U8,
        mss: opts.mss.to_ne_bytes(),
        ..HandshakeOpt::default()
    };
    if let Some(o) = opts.mptcp.first() {
        if opts.mptcp_count > 0 && (o.subtype == subtype::MP_CAPABLE || o.subtype == subtype::MP_JOIN) {
            h.mptcp_subtype = o.subtype;
            h.mptcp_len = o.len;
            // Kept as on the wire: user space judges them as the kernel does.
            h.mptcp_version = o.version;
            h.mptcp_flags = o.flags;
        }
    }
    h
}

/// Updates the flow's state (`entry`, when already looked up in this run); returns why the
/// packet is worth an event (0: it is not).
#[inline(always)]
fn track<const DIR: u8>(seg: &mut PacketEvent, entry: Option<*mut FlowState>) -> u16 {
    let found = match entry {
        Some(p) => Ok(p),
        None => flow_state(seg),
    };
    let st = match found {
        Ok(st) => st,
        Err(why) => return why,
    };
    // SAFETY: st points into the LRU map value for this flow; fields are plain integers.
    let s = unsafe { &mut *st };
    // A flow's first and last segments (SYN, FIN, RST) take the precise clock, so that its
    // duration is exact; the others the tick's, which is enough for "last seen". A running
    // maximum: another CPU may have written a later time.
    let t = if seg.tcp_flags & FLOW_EDGES != 0 { now_ns() } else { tick_ns() };
    if t > s.last_ns {
        s.last_ns = t;
    }
    let mut w = count_segment::<DIR>(s, seg);
    w |= handshake::<DIR>(s, seg);
    let (why_opts, carries_mapping) = mptcp_options::<DIR>(s, seg);
    w |= why_opts;
    w | endings::<DIR>(s, seg, carries_mapping)
}

/// The flow's state, created for a flow that starts here or speaks MPTCP. Err: the packet's
/// event reason without a flow (its end reported, so that user space does not wait for it), or 0.
#[inline(always)]
fn flow_state(seg: &PacketEvent) -> Result<*mut FlowState, u16> {
    if let Some(p) = FLOWS.get_ptr_mut(&seg.flow) {
        return Ok(p);
    }
    let f = seg.tcp_flags;
    let (syn, rst, fin) = (f & tcp_flags::SYN != 0, f & tcp_flags::RST != 0, f & tcp_flags::FIN != 0);
    if !syn && seg.opts.mptcp_count == 0 {
        // Evicted, or older than the observer.
        return Err(if rst || fin { why::UNTRACKED | if rst { why::RST } else { why::FIN } } else { 0 });
    }
    new_flow(&seg.flow).ok_or(0)
}

/// A new entry for a flow, unless one is there already (then that one).
#[inline(always)]
fn new_flow(key: &FlowKey) -> Option<*mut FlowState> {
    let init = FLOW_INIT.get_ptr_mut(0)?;
    // SAFETY: this CPU's template; only these fields are ever written, the others stay zero, so
    // a new entry is whole the moment it is in the table.
    unsafe {
        (*init).first_ns = now_ns();
        (*init).tcprst_reason = NONE_U8;
    }
    // Only if absent: when a flow's first packets meet on two CPUs, the second must not wipe
    // what the first counted.
    // SAFETY: as above; the map copies the template.
    match FLOWS.insert(key, unsafe { &*init }, BPF_NOEXIST as u64) {
        Ok(()) => count(counters::FLOWS_CREATED),
        Err(_) if FLOWS.get_ptr(key).is_some() => {}
        Err(_) => {
            count(counters::FLOW_INSERT_FAILED);
            return None;
        }
    }
    FLOWS.get_ptr_mut(key)
}

/// Packets, bytes, wire segments and their largest size, malformed option areas.
#[inline(always)]
fn count_segment<const DIR: u8>(s: &mut FlowState, seg: &PacketEvent) -> u16 {
    let d = DIR as usize & 1;
    if let Some(p) = s.packets.get_mut(d) {
        add32(p);
    }
    if let Some(p) = s.payload_bytes.get_mut(d) {
        add64(p, seg.payload_len as u64);
    }
    if seg.payload_len > 0 {
        if let Some(p) = s.data_segments.get_mut(d) {
            add32n(p, seg.wire_segments as u32);
        }
        if let Some(m) = s.max_segment.get_mut(d) {
            if seg.segment_size > *m {
                *m = seg.segment_size;
            }
        }
    }
    if seg.opts.flags & (opt_flags::MALFORMED | opt_flags::TRUNCATED) == 0 {
        return 0;
    }
    count(counters::MALFORMED_OPTIONS);
    if let Some(p) = s.malformed.get_mut(d) {
        *p = p.saturating_add(1);
    }
    why::MALFORMED
}

/// The SYN, the SYN/ACK and the third ACK, each as it carried MPTCP.
#[inline(always)]
fn handshake<const DIR: u8>(s: &mut FlowState, seg: &PacketEvent) -> u16 {
    let f = seg.tcp_flags;
    let (syn, ack, rst) = (f & tcp_flags::SYN != 0, f & tcp_flags::ACK != 0, f & tcp_flags::RST != 0);
    if syn && !ack {
        s.handshake[HS_SYN] = handshake_opt(&seg.opts, DIR, false);
        why::SYN
    } else if syn && ack {
        let h = handshake_opt(&seg.opts, DIR, false);
        let syn_h = s.handshake[HS_SYN];
        if syn_h.has_mptcp() && syn_h.mptcp_subtype == h.mptcp_subtype {
            mark_once::<DIR>(s, mark::NEGOTIATED);
        }
        s.handshake[HS_SYN_ACK] = h;
        why::SYN_ACK
    } else if ack
        && !rst
        && DIR == s.syn_direction()
        && s.handshake[HS_SYN_ACK].seen != 0
        && s.handshake[HS_THIRD_ACK].seen == 0
    {
        s.handshake[HS_THIRD_ACK] = handshake_opt(&seg.opts, DIR, seg.payload_len > 0);
        why::THIRD_ACK
    } else {
        0
    }
}

/// Counts the MPTCP options per subtype; notes the first DSS, infinite mappings, the first
/// DATA_FIN, the MP_TCPRST reason. Also returns whether the segment carries a mapping for its
/// data (a DSS, or MP_CAPABLE with data).
#[inline(always)]
fn mptcp_options<const DIR: u8>(s: &mut FlowState, seg: &PacketEvent) -> (u16, bool) {
    let d = DIR as usize & 1;
    let mut w = 0u16;
    let mut mapped = false;
    // The data's DSS mapping (its DSN's low 32 bits, its subflow sequence number), taken against
    // the data sequence once, after the walk.
    let mut mapping = None;
    for i in 0..MAX_MPTCP_OPTIONS {
        if i >= seg.opts.mptcp_count as usize {
            break;
        }
        let o = match seg.opts.mptcp.get(i) {
            Some(o) => o,
            None => break,
        };
        if o.subtype != subtype::DSS {
            if let Some(row) = s.options.get_mut(d) {
                if let Some(p) = row.get_mut(flow::subtype_slot(o.subtype)) {
                    *p = p.saturating_add(1);
                }
            }
        }
        match o.subtype {
            subtype::DSS => {
                mapped = true;
                if let Some(p) = s.dss.get_mut(d) {
                    add32(p);
                }
                if mark_once::<DIR>(s, mark::FIRST_DSS) {
                    w |= why::FIRST_DSS;
                }
                if o.is_infinite_mapping(seg.payload_len) {
                    w |= why::INFINITE_MAPPING;
                    // The DSS slot of the option counts holds the infinite mappings.
                    if let Some(p) = s.options.get_mut(d).and_then(|row| row.get_mut(subtype::DSS as usize)) {
                        *p = p.saturating_add(1);
                    }
                } else if o.flags & dss::MAPPING != 0 && seg.payload_len > 0 {
                    mapping = Some((o.dsn as u32, o.ssn));
                }
                if o.flags & dss::DATA_FIN != 0 && mark_once::<DIR>(s, mark::DATA_FIN) {
                    w |= why::DATA_FIN;
                }
            }
            subtype::MP_CAPABLE => {
                w |= why::MPTCP_OPTION;
                if o.len >= 22 {
                    mapped = true;
                }
            }
            subtype::MP_TCPRST => {
                w |= why::MPTCP_OPTION | why::PROBLEM_OPTION;
                s.tcprst_reason = o.reason;
            }
            subtype::MP_FAIL | subtype::MP_FASTCLOSE => w |= why::MPTCP_OPTION | why::PROBLEM_OPTION,
            _ => w |= why::MPTCP_OPTION,
        }
    }
    if seg.opts.mptcp_count as usize > MAX_MPTCP_OPTIONS {
        w |= why::MPTCP_OPTION;
    }
    if let Some((dsn_low, ssn)) = mapping {
        w |= data_sequence::<DIR>(s, seg, dsn_low, ssn);
    }
    (w, mapped)
}

/// Data without a mapping on a negotiated flow (the first one each way reported), RST, FIN.
#[inline(always)]
fn endings<const DIR: u8>(s: &mut FlowState, seg: &PacketEvent, mapped: bool) -> u16 {
    let d = DIR as usize & 1;
    let f = seg.tcp_flags;
    let mut w = 0u16;
    if seg.payload_len > 0 && f & tcp_flags::SYN == 0 && s.negotiated() && !mapped {
        if let Some(p) = s.data_without_dss.get_mut(d) {
            *p = p.saturating_add(1);
        }
        if mark_once::<DIR>(s, mark::DATA_WITHOUT_DSS) {
            w |= why::DATA_WITHOUT_DSS;
        }
    }
    if f & tcp_flags::RST != 0 {
        w |= why::RST | why::FLOW_END;
        mark_once::<DIR>(s, mark::RST);
    }
    if f & tcp_flags::FIN != 0 {
        w |= why::FIN;
        mark_once::<DIR>(s, mark::FIN);
        if s.marked(d ^ 1, mark::FIN) {
            w |= why::FLOW_END;
        }
    }
    w
}

/// Sets a mark of this direction; true when it was not set before.
#[inline(always)]
fn mark_once<const DIR: u8>(s: &mut FlowState, m: u8) -> bool {
    let Some(b) = s.marks.get_mut(DIR as usize & 1) else { return false };
    if *b & m != 0 {
        return false;
    }
    *b |= m;
    true
}

/// A data segment with a DSS mapping against the direction's data sequence (see [`SeqTrack`]):
/// the first one starts the tracking, one sent again at the MPTCP level is counted and reported.
#[inline(always)]
fn data_sequence<const DIR: u8>(s: &mut FlowState, seg: &PacketEvent, dsn_low: u32, ssn: u32) -> u16 {
    let d = DIR as usize & 1;
    let shift = dsn_low.wrapping_sub(ssn);
    let end = seg.seq.wrapping_add(seg.payload_len);
    let tracked = s.marked(d, mark::SEQ_TRACKED);
    let Some(t) = s.seq.get_mut(d) else { return 0 };
    if !tracked {
        // The position first, then the mark that says it is there.
        *t = SeqTrack::start(end, shift);
        mark_once::<DIR>(s, mark::SEQ_TRACKED);
        return 0;
    }
    if !t.step(seg.seq, end, shift) {
        return 0;
    }
    if let Some(p) = s.mptcp_retransmissions.get_mut(d) {
        *p = p.saturating_add(1);
    }
    why::MPTCP_RETRANSMISSION
}

/// Reports the packet; with `headers`, its network and TCP headers too (for traces).
#[inline(always)]
fn emit<const L2: bool>(ctx: &TcContext, sc: &mut Scratch, w: u16, headers: bool) {
    let l2 = if L2 { ETH_HLEN } else { 0 };
    // Network and TCP headers only: from the IP header to the end of the TCP options.
    let tcp_off = reload(&sc.tcp_off) as usize;
    let opt_len = reload(&sc.opt_len) as usize;
    let mut n = (tcp_off + 20 + opt_len).saturating_sub(l2);
    if n > HEADER_BYTES {
        n = HEADER_BYTES;
    }
    let total = ctx.len() as usize;
    if !headers || n == 0 || l2 + n > total {
        n = 0;
    } else if let Some(dst) = sc.ev.headers.get_mut(..n) {
        // A bounded, non-zero length: the form bpf_skb_load_bytes accepts.
        if ctx.load_bytes(l2, dst).is_err() {
            n = 0;
        }
    }
    let ev = &mut sc.ev;
    ev.headers_len = n as u16;
    ev.ip_len = total.saturating_sub(l2).min(u16::MAX as usize) as u16;
    ev.header = EventHeader {
        kind: EventKind::Packet as u8,
        version: EVENT_VERSION,
        cpu: cpu(),
        netns: 0,
        ts_ns: now_ns(),
    };
    ev.why = w;
    ev._pad = 0;
    ev._pad3 = 0;
    // Summaries wait for a flow's end anyway: at that level the reader is not woken for each
    // event (a wake-up costs more than the event), it drains the ring on its own tick.
    if ring_output::<PacketEvent>(ev, headers) {
        count(counters::EVENTS_EMITTED);
    } else {
        count(counters::RINGBUF_DROPS);
    }
}

/// Does nothing: the floor that `mptcp-probe prog-bench` measures the harness with.
#[classifier]
pub fn tc_empty(_ctx: TcContext) -> i32 {
    TC_NEXT
}
