//! Per-flow state kept by the TC programs in a bounded LRU hash, keyed by [`FlowKey`].

/// A TCP flow as seen from this host. Addresses are IPv6 in network order, IPv4 ones mapped
/// (`::ffff:a.b.c.d`); ports are in host order. 40 bytes, no padding: the table holds one per
/// tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub ifindex: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// The prefix of an IPv4-mapped IPv6 address.
pub const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// An IPv4 address as a flow key holds it.
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// [`v4_mapped`] as four words in memory order: the kernel programs store a key's address a
/// word at a time (a 16-byte array assignment there compiles to a memset call).
pub const fn v4_mapped_words(a: [u8; 4]) -> [u32; 4] {
    let m = v4_mapped(a);
    [
        u32::from_ne_bytes([m[0], m[1], m[2], m[3]]),
        u32::from_ne_bytes([m[4], m[5], m[6], m[7]]),
        u32::from_ne_bytes([m[8], m[9], m[10], m[11]]),
        u32::from_ne_bytes([m[12], m[13], m[14], m[15]]),
    ]
}

impl FlowKey {
    /// 4 for a flow over IPv4, 6 for one over IPv6.
    pub fn ip_version(&self) -> u8 {
        let p = &self.remote_addr;
        if p[..12] == V4_MAPPED_PREFIX {
            4
        } else {
            6
        }
    }
}

/// Slots in the per-subtype counters: subtypes 0..=8 at their own index, 15 (experimental) and any
/// unknown subtype at [`SUBTYPE_OTHER`].
pub const SUBTYPE_SLOTS: usize = 10;
pub const SUBTYPE_OTHER: usize = 9;

pub fn subtype_slot(subtype: u8) -> usize {
    if (subtype as usize) < SUBTYPE_OTHER {
        subtype as usize
    } else {
        SUBTYPE_OTHER
    }
}

/// Bits of [`HandshakeOpt::seen`].
pub mod hs_seen {
    /// The packet was seen.
    pub const SEEN: u8 = 0x01;
    /// It carried payload (a third ACK repeated on the first data segment).
    pub const DATA: u8 = 0x02;
}

/// What one handshake packet carried.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeOpt {
    /// [`hs_seen`] bits; 0 until the packet was seen.
    pub seen: u8,
    /// MPTCP subtype carried (MP_CAPABLE or MP_JOIN), [`crate::proto::NONE_U8`] when none.
    pub mptcp_subtype: u8,
    /// Length of that MPTCP option.
    pub mptcp_len: u8,
    /// Direction the packet travelled ([`crate::event::direction`]).
    pub direction: u8,
    /// MSS option value, 0 when absent.
    pub mss: u16,
    /// MP_CAPABLE's version (low nibble of its third byte) and flag byte, as on the wire; the
    /// kernel ignores an option it does not accept (see
    /// [`crate::options::MptcpOption::mp_capable_rejection`]).
    pub mptcp_version: u8,
    pub mptcp_flags: u8,
}

impl HandshakeOpt {
    /// The packet carried an MPTCP option of `subtype`.
    pub const fn carries(&self, subtype: u8) -> bool {
        self.seen != 0 && self.mptcp_subtype == subtype
    }

    /// The packet carried payload.
    pub const fn with_data(&self) -> bool {
        self.seen & hs_seen::DATA != 0
    }

    /// The packet carried MP_CAPABLE or MP_JOIN.
    pub const fn has_mptcp(&self) -> bool {
        self.seen != 0 && self.mptcp_subtype != crate::proto::NONE_U8
    }
}

/// Handshake packet slots in [`FlowState::handshake`].
pub const HS_SYN: usize = 0;
pub const HS_SYN_ACK: usize = 1;
pub const HS_THIRD_ACK: usize = 2;

/// Per-flow state. Per-direction arrays are indexed by [`crate::event::direction`] (`INGRESS`
/// 0, `EGRESS` 1). The hot counters (packets, bytes, segments, DSS) are 32 or 64 bits wide and
/// updated with atomic adds; the others are small and rare (saturating 16-bit counts, flags written
/// from one direction's path each). Kept small: the table holds one per tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowState {
    pub first_ns: u64,
    pub last_ns: u64,
    pub payload_bytes: [u64; 2],
    pub packets: [u32; 2],
    /// Data segments as they are on the wire: a GSO/GRO packet counts the segments it stands for
    /// (`gso_segs`), so both ends count alike whatever their offloads.
    pub data_segments: [u32; 2],
    /// DSS options, the common one, counted apart from the other subtypes.
    pub dss: [u32; 2],
    /// Data segments without DSS on a flow that negotiated MPTCP (saturating).
    pub data_without_dss: [u16; 2],
    /// The other MPTCP options per subtype slot and direction: `options[dir][slot]` (the DSS
    /// slot stays 0; see [`FlowState::option_count`]).
    pub options: [[u16; SUBTYPE_SLOTS]; 2],
    /// Largest data segment (the GSO segment size for GSO/GRO packets).
    pub max_segment: [u16; 2],
    pub infinite_mappings: [u16; 2],
    pub malformed: [u16; 2],
    pub handshake: [HandshakeOpt; 3],
    /// Direction of the SYN (the initiator's), [`crate::proto::NONE_U8`] until a SYN was seen.
    pub syn_direction: u8,
    /// 1 when SYN and SYN/ACK both carried MP_CAPABLE or MP_JOIN.
    pub negotiated: u8,
    pub first_dss_sent: [u8; 2],
    pub data_without_dss_sent: [u8; 2],
    pub data_fin_sent: [u8; 2],
    pub fin: [u8; 2],
    pub rst: [u8; 2],
    /// MP_TCPRST reason, [`crate::proto::NONE_U8`] when none.
    pub tcprst_reason: u8,
    pub _pad: [u8; 3],
}

impl FlowState {
    /// MPTCP options of a subtype slot seen in a direction.
    pub fn option_count(&self, dir: usize, slot: usize) -> u32 {
        if slot == crate::options::subtype::DSS as usize {
            self.dss.get(dir).copied().unwrap_or(0)
        } else {
            self.options.get(dir).and_then(|row| row.get(slot)).copied().unwrap_or(0) as u32
        }
    }

    /// Adds what a CPU's accumulator holds of this flow (user space: the flow as it is now).
    pub fn add(&mut self, acc: &FlowAcc) {
        for d in 0..2 {
            self.payload_bytes[d] = self.payload_bytes[d].wrapping_add(acc.payload_bytes[d]);
            self.packets[d] = self.packets[d].wrapping_add(acc.packets[d]);
            self.data_segments[d] = self.data_segments[d].wrapping_add(acc.data_segments[d]);
            self.dss[d] = self.dss[d].wrapping_add(acc.dss[d]);
            if acc.max_segment[d] > self.max_segment[d] {
                self.max_segment[d] = acc.max_segment[d];
            }
        }
        if acc.last_ns > self.last_ns {
            self.last_ns = acc.last_ns;
        }
    }
}

/// A CPU's running totals for the flow whose steady data segments it saw last. The TC programs
/// add a steady DSS segment (no SYN/FIN/RST, no option but timestamps and one well-formed DSS, no
/// infinite mapping, no DATA_FIN, on a flow whose handshake and first DSS were already seen) here
/// instead of in the shared flow table: no hash lookup, no atomic add on a cache line other CPUs
/// write. The totals go to the flow table when the CPU sees another flow, every
/// [`FLOW_ACC_FLUSH_EVERY`] packets, and before the slow path handles a packet of the same flow.
/// User space adds the totals of every CPU whose `key` is a flow's when it reads that flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowAcc {
    pub key: FlowKey,
    /// Bumped whenever the totals go to the flow table: a reader that sees the same epoch before
    /// and after reading the table has not counted anything twice or missed it.
    pub epoch: u64,
    /// `bpf_ktime_get_coarse_ns` of the last packet added.
    pub last_ns: u64,
    /// When the totals were last started (taken on, or sent to the table): an entry of the flow
    /// created after that is a new incarnation, not the one these totals are of.
    pub since_ns: u64,
    pub payload_bytes: [u64; 2],
    pub packets: [u32; 2],
    pub data_segments: [u32; 2],
    pub dss: [u32; 2],
    pub max_segment: [u16; 2],
    /// Packets added since the totals last went to the table.
    pub pending: u16,
    /// 1: the flow's steady segments carry DSS (an MPTCP flow); 0: they carry no MPTCP option (a
    /// plain TCP flow). A segment of the other kind takes the slow path.
    pub mptcp: u8,
    pub _pad: u8,
}

/// How many packets a CPU's accumulator takes before its totals go to the flow table: bounds how
/// stale the table is (for the idle sweep) and how long an evicted flow goes unnoticed.
pub const FLOW_ACC_FLUSH_EVERY: u16 = 64;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) plain data; every bit pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::FlowAcc {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_words_hold_the_bytes_of_v4_mapped() {
        let a = [192, 0, 2, 1];
        let mut bytes = [0u8; 16];
        for (i, w) in v4_mapped_words(a).iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        assert_eq!(bytes, v4_mapped(a));
        assert_eq!(&bytes[..12], &V4_MAPPED_PREFIX);
    }
}
