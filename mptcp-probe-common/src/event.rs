//! Events the kernel programs write into the ring buffer. Every event starts with an
//! [`EventHeader`]; user space reads the header's `kind` and decodes the rest by kind.

use crate::{flow::FlowKey, options::TcpOptions};

/// Bumped whenever an event layout changes.
pub const EVENT_VERSION: u8 = 1;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Packet = 1,
    SockState = 2,
    Reset = 3,
    Mapping = 4,
    Fallback = 5,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Packet,
            2 => Self::SockState,
            3 => Self::Reset,
            4 => Self::Mapping,
            5 => Self::Fallback,
            _ => return None,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u8,
    pub version: u8,
    pub cpu: u16,
    /// Network namespace inode, 0 when the source cannot tell.
    pub netns: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
}

/// Direction of a packet seen by the TC programs.
pub mod direction {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// Why a packet event was emitted ([`PacketEvent::why`] bits).
pub mod why {
    pub const SYN: u16 = 0x0001;
    pub const SYN_ACK: u16 = 0x0002;
    pub const THIRD_ACK: u16 = 0x0004;
    /// Carries an MPTCP option other than DSS.
    pub const MPTCP_OPTION: u16 = 0x0008;
    /// First DSS of the flow in this direction.
    pub const FIRST_DSS: u16 = 0x0010;
    /// DSS with an infinite mapping.
    pub const INFINITE_MAPPING: u16 = 0x0020;
    /// Payload without DSS on a flow that negotiated MPTCP (first one per direction).
    pub const DATA_WITHOUT_DSS: u16 = 0x0040;
    pub const RST: u16 = 0x0080;
    pub const FIN: u16 = 0x0100;
    /// DSS with DATA_FIN (first one per direction).
    pub const DATA_FIN: u16 = 0x0200;
    /// The option area was malformed.
    pub const MALFORMED: u16 = 0x0400;
    /// FIN or RST of a flow the flow table does not hold (evicted, or older than the observer):
    /// user space learns at once that a flow it knows has ended.
    pub const UNTRACKED: u16 = 0x0800;
    /// This packet ended the flow: the second FIN (one each way), or a RST.
    pub const FLOW_END: u16 = 0x1000;
    /// MP_FAIL, MP_FASTCLOSE or MP_TCPRST.
    pub const PROBLEM_OPTION: u16 = 0x2000;
    /// New subflow data whose data sequence went back: an MPTCP-level retransmission
    /// ([`crate::flow::SeqTrack::step`]); the flow's summary counts them.
    pub const MPTCP_RETRANSMISSION: u16 = 0x4000;
    /// What is reported at the [`crate::config::level::FLOWS`] event level: what went wrong, and
    /// the end of a flow (user space then reads the flow's state).
    pub const FLOWS_LEVEL: u16 =
        INFINITE_MAPPING | DATA_WITHOUT_DSS | RST | MALFORMED | UNTRACKED | FLOW_END | PROBLEM_OPTION;
}

/// TCP header flag bits as on the wire.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A packet the TC classifier found worth reporting. Never carries payload.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketEvent {
    pub header: EventHeader,
    /// Flow as seen from this host (local = source on egress, destination on ingress).
    pub flow: FlowKey,
    pub seq: u32,
    pub ack: u32,
    /// TCP payload bytes (of the whole skb: a GSO/GRO packet counts all its segments).
    pub payload_len: u32,
    pub why: u16,
    pub window: u16,
    pub direction: u8,
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub _pad: u8,
    /// Bytes of `headers` that are valid (network and TCP headers, never payload).
    pub headers_len: u16,
    /// Length of the packet from the network header on, as it was on the wire (or in the GSO
    /// packet), for header-only traces.
    pub ip_len: u16,
    /// Segments this packet stands for on the wire (GSO/GRO), 1 for a plain packet.
    pub wire_segments: u16,
    /// Size of those segments (the GSO size), or the payload length for a plain packet.
    pub segment_size: u16,
    pub _pad3: u32,
    pub opts: TcpOptions,
    /// The packet's network and TCP headers (options included), for header-only traces.
    pub headers: [u8; HEADER_BYTES],
}

impl PacketEvent {
    /// An event with every field zero and no options, to be filled in field by field.
    pub const fn zeroed() -> Self {
        Self {
            header: EventHeader { kind: 0, version: 0, cpu: 0, netns: 0, ts_ns: 0 },
            flow: FlowKey {
                ifindex: 0,
                local_port: 0,
                remote_port: 0,
                local_addr: [0; 16],
                remote_addr: [0; 16],
            },
            seq: 0,
            ack: 0,
            payload_len: 0,
            why: 0,
            window: 0,
            direction: 0,
            tcp_flags: 0,
            ttl: 0,
            _pad: 0,
            headers_len: 0,
            ip_len: 0,
            wire_segments: 0,
            segment_size: 0,
            _pad3: 0,
            opts: TcpOptions::empty(),
            headers: [0; HEADER_BYTES],
        }
    }

    /// The packet's flow is in the kernel's flow table (its counts and handshake are there).
    pub const fn tracked(&self) -> bool {
        self.why & why::UNTRACKED == 0
    }
}

/// Header bytes kept per reported packet: an IPv4 or IPv6 header with a full TCP header fits.
pub const HEADER_BYTES: usize = 128;

/// `sock:inet_sock_set_state` for TCP and MPTCP sockets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockStateEvent {
    pub header: EventHeader,
    pub skaddr: u64,
    pub oldstate: i32,
    pub newstate: i32,
    pub protocol: u16,
    pub family: u16,
    /// Host order.
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

pub mod reset_dir {
    pub const SENT: u8 = 0;
    pub const RECEIVED: u8 = 1;
}

/// `tcp:tcp_send_reset` / `tcp:tcp_receive_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ResetEvent {
    pub header: EventHeader,
    pub skaddr: u64,
    pub sock_cookie: u64,
    pub dir: u8,
    pub _pad: [u8; 3],
    /// Socket state (send_reset), -1 when not given.
    pub state: i32,
    /// `enum sk_rst_reason` (send_reset), u32::MAX when not given.
    pub reason: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad2: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// The kernel's own view of a DSS mapping (`mptcp:get_mapping_status`) joined with the status that
/// `mptcp:subflow_check_data_avail` reported right after it on the same CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MappingEvent {
    pub header: EventHeader,
    pub data_seq: u64,
    pub data_ack: u64,
    pub subflow_seq: u32,
    pub data_len: u16,
    pub csum: u16,
    /// `mapping_status` of subflow_check_data_avail (0 OK, 1 INVALID, 2 EMPTY, 3 DATA_FIN,
    /// 4 DUMMY), 0xff when only the mapping was seen.
    pub status: u8,
    /// [`mapping_flags`] bits.
    pub flags: u16,
    pub reset_reason: u8,
    pub _pad: [u8; 4],
}

pub mod mapping_flags {
    pub const USE_MAP: u16 = 0x0001;
    pub const DSN64: u16 = 0x0002;
    pub const DATA_FIN: u16 = 0x0004;
    pub const USE_ACK: u16 = 0x0008;
    pub const ACK64: u16 = 0x0010;
    pub const MPC_MAP: u16 = 0x0020;
    pub const FROZEN: u16 = 0x0040;
    pub const RESET_TRANSIENT: u16 = 0x0080;
    pub const CSUM_REQD: u16 = 0x0100;
    pub const INFINITE_MAP: u16 = 0x0200;
    /// The mapping fields are present (a get_mapping_status preceded the status on this CPU).
    pub const HAS_MAPPING: u16 = 0x8000;
}

/// `__mptcp_try_fallback(msk, fb_mib)` seen by fentry, where the host permits it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FallbackEvent {
    pub header: EventHeader,
    pub msk: u64,
    /// Index of the MPTCP MIB counter the kernel bumps for this fallback.
    pub mib: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain data with no padding-dependent invariants; every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::PacketEvent {}
    unsafe impl aya::Pod for super::SockStateEvent {}
    unsafe impl aya::Pod for super::ResetEvent {}
    unsafe impl aya::Pod for super::MappingEvent {}
    unsafe impl aya::Pod for super::FallbackEvent {}
}
