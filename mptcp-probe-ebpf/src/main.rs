//! Kernel programs of mptcp-probe: a TC classifier (ingress and egress) that parses TCP/MPTCP
//! options with the shared parser, tracepoints that add the kernel's own view, and an optional
//! fentry on the MPTCP fallback path. No payload is ever copied.
#![no_std]
#![no_main]
// BPF has atomic add but the target exposes no atomic types: use the intrinsic directly.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod packet;
mod trace;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use mptcp_probe_common::{
    config::{level, wakeup, RING_BYTES},
    counters::COUNTERS_LEN,
    event::{MappingEvent, PacketEvent},
    flow::{FlowAcc, FlowKey, FlowState},
};

/// All events, one ring buffer shared by every program.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES as u32, 0);

/// When the reader is woken ([`wakeup`]); user space sets it before loading.
#[unsafe(no_mangle)]
static WAKEUP: u8 = wakeup::EACH_EVENT;

/// Writes an event to the ring; `urgent` events wake a waiting reader unless wake-ups are
/// batched, the others only when the ring is filling up. False when the ring was full.
#[inline(always)]
fn ring_output<T: 'static>(ev: &T, urgent: bool) -> bool {
    // SAFETY: a global set by the loader before load; volatile keeps its value a run-time one.
    let batched = unsafe { core::ptr::read_volatile(&WAKEUP) } == wakeup::BATCHED;
    let flags = if urgent && !batched {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup::BATCH_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    };
    EVENTS.output::<T>(ev, flags).is_ok()
}

/// Per-flow state; user space may resize it before loading.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(65536, 0);

/// Global counters, one slot per [`mptcp_probe_common::counters`] index, per CPU.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Each CPU's running totals of the flow whose steady data segments it saw last (the fast path;
/// see [`FlowAcc`]).
#[map]
static FLOW_ACC: PerCpuArray<FlowAcc> = PerCpuArray::with_max_entries(1, 0);

/// What the TC programs report ([`level`]); user space sets it before loading.
#[unsafe(no_mangle)]
static EVENT_LEVEL: u8 = level::ALL;

/// The event level, read so that the compiler does not fold the default.
#[inline(always)]
fn event_level() -> u8 {
    // SAFETY: a global set by the loader before load; volatile keeps its value a run-time one.
    unsafe { core::ptr::read_volatile(&EVENT_LEVEL) }
}

/// Each CPU's template of a new flow's state (its fields zero but the few the TC program sets).
#[map]
static FLOW_INIT: PerCpuArray<FlowState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for the packet being parsed (the BPF stack is only 512 bytes).
#[repr(C)]
pub struct Scratch {
    pub ev: PacketEvent,
    /// Offset of the TCP header from the start of the packet.
    pub tcp_off: u32,
    /// Option bytes the header announces, and those the packet holds.
    pub opt_len: u32,
    pub copied: u32,
    /// IPv6 next-header value during the extension-header walk.
    pub next_hdr: u32,
    pub buf: [u8; mptcp_probe_common::options::MAX_OPTION_BYTES],
    pub walk: mptcp_probe_common::options::WalkState,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The last `get_mapping_status` seen on this CPU, joined with the next data-availability status.
#[map]
static MAPPING_STASH: PerCpuArray<MappingEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn count(index: u32) {
    count_n(index, 1)
}

#[inline(always)]
fn count_n(index: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += n };
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// The coarse clock (the last tick): cheaper, good enough for "when was this flow last seen".
#[inline(always)]
fn coarse_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() }
}

/// The tick count: the verifier inlines this helper as one load on 64-bit kernels, where a
/// helper call (and its return, through the return thunk on CPUs that need one) costs more
/// than the rest of a steady segment's work.
#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_jiffies64() }
}

/// Each CPU's last reading of the coarse clock and the tick it was read at.
#[repr(C)]
pub struct TickClock {
    pub jiffies: u64,
    pub ns: u64,
}

#[map]
static TICK_CLOCK: PerCpuArray<TickClock> = PerCpuArray::with_max_entries(1, 0);

/// The coarse clock (`bpf_ktime_get_coarse_ns`), read from the kernel once per tick and CPU: it
/// moves only at a tick, so the reading taken when `jiffies` last changed stands for the tick.
/// Up to about two ticks behind (the kernel bumps `jiffies` before it updates the coarse clock,
/// and a reading in between stays for the whole tick): for "when was this flow last seen" and a
/// staleness check of 50 ms, not for durations.
#[inline(always)]
fn tick_ns() -> u64 {
    let Some(c) = TICK_CLOCK.get_ptr_mut(0) else { return coarse_ns() };
    // SAFETY: this CPU's slot; only this program invocation touches it while it runs.
    let c = unsafe { &mut *c };
    let j = jiffies();
    if j != c.jiffies {
        c.jiffies = j;
        c.ns = coarse_ns();
    }
    c.ns
}

#[inline(always)]
fn cpu() -> u16 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() as u16 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
