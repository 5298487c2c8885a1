//! Configuration user space hands to the kernel programs as read-only globals.

/// What the TC programs report (the `EVENT_LEVEL` global).
pub mod level {
    /// Every packet that matters: handshakes, the first DSS each way, every non-DSS MPTCP option,
    /// FIN, RST, with their headers (for traces and per-packet output).
    pub const ALL: u8 = 0;
    /// Only what went wrong ([`crate::event::why::FLOWS_LEVEL`]) and the end of each flow,
    /// without headers: for flow summaries and counts.
    pub const FLOWS: u8 = 1;
}

/// When the kernel wakes the ring buffer's reader (the `WAKEUP` global).
pub mod wakeup {
    /// For every event written while the reader waits: events reach it at once.
    pub const EACH_EVENT: u8 = 0;
    /// Only once the ring holds [`BATCH_BYTES`]; the reader drains it on a timer besides. A
    /// wake-up costs the writer more than the event itself (an interrupt and a task wake-up),
    /// so this is the cheap setting for readers that can wait a moment.
    pub const BATCHED: u8 = 1;
    /// A quarter of the ring: a fast writer's events are read long before the ring fills.
    pub const BATCH_BYTES: u64 = super::RING_BYTES / 4;
}

/// Size of the events ring buffer.
pub const RING_BYTES: u64 = 1 << 22;

/// Field offsets read from the tracepoint format files at start-up; `u16::MAX` means absent.
/// `record`: the bytes of the record its fields cover (where the last one ends), which the
/// programs read directly; 0 when unknown (each field is then read with a helper call).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockStateOffsets {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    pub record: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendResetOffsets {
    pub skaddr: u16,
    pub state: u16,
    pub reason: u16,
    /// `struct sockaddr_in6`-sized blobs.
    pub saddr: u16,
    pub daddr: u16,
    pub record: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveResetOffsets {
    pub skaddr: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    pub sock_cookie: u16,
    pub record: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingOffsets {
    pub data_ack: u16,
    pub data_seq: u16,
    pub subflow_seq: u16,
    pub data_len: u16,
    pub csum: u16,
    pub use_map: u16,
    pub dsn64: u16,
    pub data_fin: u16,
    pub use_ack: u16,
    pub ack64: u16,
    pub mpc_map: u16,
    pub frozen: u16,
    pub reset_transient: u16,
    pub reset_reason: u16,
    pub csum_reqd: u16,
    pub infinite_map: u16,
    /// `subflow_check_data_avail`'s status.
    pub status: u16,
    /// `subflow_check_data_avail`'s skb pointer.
    pub skb: u16,
    /// `get_mapping_status`'s record.
    pub record: u16,
    /// `subflow_check_data_avail`'s record.
    pub avail_record: u16,
}

pub const ABSENT: u16 = u16::MAX;

macro_rules! all_absent {
    ($t:ident { $($f:ident),* } $(+ $extra:ident)*) => {
        impl $t {
            pub const fn absent() -> Self { Self { $($f: ABSENT,)* record: 0 $(, $extra: 0)* } }

            /// Fills every field by its name (the tracepoint's field name), absent when unknown,
            /// and the extent of the record they lie in.
            pub fn from_lookup(f: impl Fn(&str) -> Option<u16>, record: u16) -> Self {
                Self { $($f: f(stringify!($f)).unwrap_or(ABSENT),)* record $(, $extra: 0)* }
            }
        }
    };
}
all_absent!(SockStateOffsets {
    skaddr,
    oldstate,
    newstate,
    sport,
    dport,
    family,
    protocol,
    saddr,
    daddr,
    saddr_v6,
    daddr_v6
});
all_absent!(SendResetOffsets { skaddr, state, reason, saddr, daddr });
all_absent!(ReceiveResetOffsets {
    skaddr,
    sport,
    dport,
    family,
    saddr,
    daddr,
    saddr_v6,
    daddr_v6,
    sock_cookie
});
all_absent!(
    MappingOffsets {
        data_ack,
        data_seq,
        subflow_seq,
        data_len,
        csum,
        use_map,
        dsn64,
        data_fin,
        use_ack,
        ack64,
        mpc_map,
        frozen,
        reset_transient,
        reset_reason,
        csum_reqd,
        infinite_map,
        status,
        skb
    } + avail_record
);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of u16 fields; every bit pattern is valid.
    unsafe impl aya::Pod for super::SockStateOffsets {}
    unsafe impl aya::Pod for super::SendResetOffsets {}
    unsafe impl aya::Pod for super::ReceiveResetOffsets {}
    unsafe impl aya::Pod for super::MappingOffsets {}
}

/// Offsets for `sk->__sk_common.skc_net.net->ns.inum` and `skb->sk`, from the kernel's BTF;
/// [`NETNS_ABSENT`] when unknown (events then carry netns 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsOffsets {
    pub sk_net: u32,
    pub net_inum: u32,
    pub skb_sk: u32,
}

pub const NETNS_ABSENT: u32 = u32::MAX;

impl NetnsOffsets {
    pub const fn absent() -> Self {
        Self { sk_net: NETNS_ABSENT, net_inum: NETNS_ABSENT, skb_sk: NETNS_ABSENT }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C) struct of u32 fields; every bit pattern is valid.
unsafe impl aya::Pod for NetnsOffsets {}

/// The members of the socket the socket-state BTF tracepoint reads (its program has the socket,
/// not the tracepoint's record), from the kernel's BTF; [`NETNS_ABSENT`] when unknown. Those of
/// `struct sock` it loads directly; the record's source port and IPv4 address are `inet_sock`'s
/// (`inet_sport`, `inet_saddr`: `skc_num` is already 0 when a closed socket's state changes), past
/// `struct sock` where a BTF program may not load, so it reads them with a helper, and only for
/// a socket of the watched namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFieldOffsets {
    pub family: u32,
    pub protocol: u32,
    pub inet_sport: u32,
    pub dport: u32,
    pub inet_saddr: u32,
    pub daddr: u32,
    pub v6_rcv_saddr: u32,
    pub v6_daddr: u32,
}

impl SockFieldOffsets {
    pub const fn absent() -> Self {
        Self {
            family: NETNS_ABSENT,
            protocol: NETNS_ABSENT,
            inet_sport: NETNS_ABSENT,
            dport: NETNS_ABSENT,
            inet_saddr: NETNS_ABSENT,
            daddr: NETNS_ABSENT,
            v6_rcv_saddr: NETNS_ABSENT,
            v6_daddr: NETNS_ABSENT,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C) struct of u32 fields; every bit pattern is valid.
unsafe impl aya::Pod for SockFieldOffsets {}
