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
    /// It was sent by this host ([`crate::event::direction::EGRESS`]); received when clear.
    pub const EGRESS: u8 = 0x04;
}

/// What one handshake packet carried. Seven bytes, no alignment: three of them sit in every
/// flow's entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeOpt {
    /// [`hs_seen`] bits; 0 until the packet was seen.
    pub seen: u8,
    /// MPTCP subtype carried (MP_CAPABLE or MP_JOIN), [`crate::proto::NONE_U8`] when none.
    pub mptcp_subtype: u8,
    /// Length of that MPTCP option.
    pub mptcp_len: u8,
    /// MSS option value in memory order ([`HandshakeOpt::mss`]), 0 when absent.
    pub mss: [u8; 2],
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

    /// The direction it travelled ([`crate::event::direction`]), when it was seen.
    pub const fn direction(&self) -> u8 {
        if self.seen & hs_seen::EGRESS != 0 {
            crate::event::direction::EGRESS
        } else {
            crate::event::direction::INGRESS
        }
    }

    /// Its MSS option, 0 when absent.
    pub const fn mss(&self) -> u16 {
        u16::from_ne_bytes(self.mss)
    }
}

/// Handshake packet slots in [`FlowState::handshake`].
pub const HS_SYN: usize = 0;
pub const HS_SYN_ACK: usize = 1;
pub const HS_THIRD_ACK: usize = 2;

/// Bits of [`FlowState::marks`]: what a direction has shown once. Each direction's byte is
/// written from that direction's path only.
pub mod mark {
    /// The SYN/ACK this way found MP_CAPABLE or MP_JOIN in both SYN and SYN/ACK.
    pub const NEGOTIATED: u8 = 0x01;
    /// The first DSS this way was reported.
    pub const FIRST_DSS: u8 = 0x02;
    /// The first data segment without DSS this way was reported.
    pub const DATA_WITHOUT_DSS: u8 = 0x04;
    /// The first DATA_FIN this way was reported.
    pub const DATA_FIN: u8 = 0x08;
    pub const FIN: u8 = 0x10;
    pub const RST: u8 = 0x20;
    /// [`FlowState::seq`] holds this way's data sequence.
    pub const SEQ_TRACKED: u8 = 0x40;
}

/// How far back the data sequence may go for it to count as data sent again: more than a send
/// buffer holds. Farther back is taken for a rise (the shift is 32 bits: a subflow left idle while
/// 4 GiB went on the others comes back with a shift that looks lower); a rise of 4 GiB less than
/// this is still mistaken for data sent again.
pub const SEQ_BACK_MAX: u32 = 1 << 28;

/// Where a direction's subflow data stands against the data sequence: the end of the newest
/// subflow data, and its mapping's data sequence number less its subflow sequence number
/// (`shift`, the low 32 bits). New data on one subflow keeps the shift (both numbers advance
/// together) or raises it (data went on other subflows meanwhile); data sent again at the MPTCP
/// level lowers it: the data sequence went back while the subflow's went on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqTrack {
    /// TCP sequence number just past the newest data seen.
    pub high: u32,
    pub shift: u32,
}

impl SeqTrack {
    /// Where a data segment `[seq, end)` with a mapping of `shift` starts the tracking.
    pub const fn start(end: u32, shift: u32) -> Self {
        Self { high: end, shift }
    }

    /// Takes a data segment `[seq, end)` whose DSS mapping has `shift`. True when it is new
    /// subflow data whose data sequence went back: an MPTCP-level retransmission (data the
    /// connection sent before, sent again on this subflow). Subflow data seen before (a TCP
    /// retransmission, or a segment behind a gap at the receiver) says nothing either way.
    #[inline(always)]
    pub fn step(&mut self, seq: u32, end: u32, shift: u32) -> bool {
        if (seq.wrapping_sub(self.high) as i32) < 0 {
            if (end.wrapping_sub(self.high) as i32) > 0 {
                self.high = end;
            }
            return false;
        }
        let back = self.shift.wrapping_sub(shift).wrapping_sub(1) < SEQ_BACK_MAX;
        self.high = end;
        self.shift = shift;
        back
    }
}

/// Per-flow state. Per-direction arrays are indexed by [`crate::event::direction`] (`INGRESS`
/// 0, `EGRESS` 1). The hot counters (packets, bytes, segments, DSS) are 32 or 64 bits wide and
/// updated with atomic adds; the others are small and rare (saturating 16-bit counts, flags written
/// from one direction's path each). 152 bytes, no padding: with the table's own part of an entry
/// that is 256 bytes a tracked flow, so a new field must take the room of an old one.
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
    /// Each way's data sequence, while [`mark::SEQ_TRACKED`] says so.
    pub seq: [SeqTrack; 2],
    /// Data segments without DSS on a flow that negotiated MPTCP (saturating).
    pub data_without_dss: [u16; 2],
    /// The other MPTCP options per subtype slot and direction: `options[dir][slot]` (see
    /// [`FlowState::option_count`]). DSS options are counted in `dss`; their slot here counts
    /// the DSS options with an infinite mapping ([`FlowState::infinite_mappings`]).
    pub options: [[u16; SUBTYPE_SLOTS]; 2],
    /// Largest data segment (the GSO segment size for GSO/GRO packets).
    pub max_segment: [u16; 2],
    pub malformed: [u16; 2],
    /// MPTCP-level retransmissions: times new subflow data went back in the data sequence
    /// ([`SeqTrack::step`]), saturating.
    pub mptcp_retransmissions: [u16; 2],
    pub handshake: [HandshakeOpt; 3],
    /// MP_TCPRST reason, [`crate::proto::NONE_U8`] when none.
    pub tcprst_reason: u8,
    /// [`mark`] bits, one byte a direction.
    pub marks: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<FlowState>() == 152);

impl FlowState {
    /// Direction of the SYN (the initiator's), [`crate::proto::NONE_U8`] until a SYN was seen.
    pub const fn syn_direction(&self) -> u8 {
        let syn = &self.handshake[HS_SYN];
        if syn.seen == 0 {
            crate::proto::NONE_U8
        } else {
            syn.direction()
        }
    }

    /// SYN and SYN/ACK both carried MP_CAPABLE or MP_JOIN.
    pub const fn negotiated(&self) -> bool {
        (self.marks[0] | self.marks[1]) & mark::NEGOTIATED != 0
    }

    /// Whether a direction has shown a [`mark`].
    pub fn marked(&self, dir: usize, m: u8) -> bool {
        self.marks.get(dir).is_some_and(|b| b & m != 0)
    }

    /// DSS options with an infinite mapping seen in a direction.
    pub fn infinite_mappings(&self, dir: usize) -> u16 {
        self.options
            .get(dir)
            .and_then(|row| row.get(crate::options::subtype::DSS as usize))
            .copied()
            .unwrap_or(0)
    }

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
    /// Bit `1 << dir`: `seq[dir]` holds the flow's data sequence that way, read from the table.
    pub seq_loaded: u8,
    /// The flow's data sequence each way as this CPU moved it on ([`SeqTrack::step`]).
    pub seq: [SeqTrack; 2],
    /// Bit `1 << dir`: `seq[dir]` moved on since it was read; it goes to the table with the
    /// totals.
    pub seq_dirty: u8,
    pub _pad: [u8; 7],
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

    /// One subflow sends DSN 1000.. from subflow sequence 1 (its first data byte at TCP
    /// sequence 101): the shift is 999 while nothing is sent twice.
    const SHIFT: u32 = 999;

    #[test]
    fn new_data_on_one_subflow_keeps_the_shift_and_tcp_retransmissions_say_nothing() {
        let mut t = SeqTrack::start(1101, SHIFT);
        assert!(!t.step(1101, 2101, SHIFT));
        assert!(!t.step(2101, 3101, SHIFT));
        // The subflow sends 1101.. again: the same mapping, so the same shift, and old data.
        assert!(!t.step(1101, 2101, SHIFT));
        // A segment of an older mapping once the shift moved on: still old subflow data.
        assert!(!t.step(101, 1101, SHIFT.wrapping_sub(5000)));
        assert_eq!(t, SeqTrack { high: 3101, shift: SHIFT });
    }

    #[test]
    fn data_sent_again_at_the_mptcp_level_lowers_the_shift_once_an_episode() {
        let mut t = SeqTrack::start(3101, SHIFT);
        // DSN 1500.. sent again at subflow sequence 3001 (TCP 3101): the data went back 2000.
        assert!(t.step(3101, 4101, 1500u32.wrapping_sub(3001)));
        // The next segments go on from there: the shift stays, nothing new went back.
        assert!(!t.step(4101, 5101, 1500u32.wrapping_sub(3001)));
        // New data again (DSN 4000.. after 3000 sent twice), skipping what was sent already:
        // the shift rises.
        assert!(!t.step(5101, 6101, 4000u32.wrapping_sub(5001)));
        // A second episode goes back again.
        assert!(t.step(6101, 7101, 2500u32.wrapping_sub(6001)));
    }

    #[test]
    fn data_on_other_subflows_raises_the_shift_and_sequence_numbers_wrap() {
        let high = u32::MAX - 500;
        let mut t = SeqTrack::start(high, u32::MAX - 10);
        // 4000 bytes went on another subflow: the shift rises, across the wrap of both numbers.
        assert!(!t.step(high, high.wrapping_add(1000), 3990));
        assert_eq!(t.high, 499);
        assert!(!t.step(499, 1499, 3990));
        // Back across the wrap.
        assert!(t.step(1499, 2499, u32::MAX - 1000));
        // A segment that starts in old data and ends in new moves the end only.
        assert!(!t.step(2000, 3000, 0));
        assert_eq!(t, SeqTrack { high: 3000, shift: u32::MAX - 1000 });
    }

    #[test]
    fn going_back_counts_up_to_a_bound_beyond_which_it_is_a_rise() {
        let mut t = SeqTrack::start(1000, 1 << 31);
        // Back by as much as the bound: data sent again.
        assert!(t.step(1000, 2000, (1 << 31) - SEQ_BACK_MAX));
        // Idle while 3 GiB went on other subflows: the shift rose by 3 GiB, which in 32 bits
        // reads as 1 GiB back.
        let rose = t.shift.wrapping_add(3 << 30);
        assert!(!t.step(2000, 3000, rose));
        assert_eq!(t.shift, rose);
        // The same shift again, and one byte back.
        assert!(!t.step(3000, 4000, rose));
        assert!(t.step(4000, 5000, rose - 1));
    }

    #[test]
    fn the_flow_entry_is_152_bytes_and_its_derived_facts_read_back() {
        assert_eq!(core::mem::size_of::<HandshakeOpt>(), 7);
        let mut s = FlowState::default();
        assert_eq!(s.syn_direction(), crate::proto::NONE_U8);
        s.handshake[HS_SYN].seen = hs_seen::SEEN | hs_seen::EGRESS;
        assert_eq!(s.syn_direction(), crate::event::direction::EGRESS);
        assert!(!s.negotiated());
        s.marks[0] |= mark::NEGOTIATED;
        assert!(s.negotiated() && s.marked(0, mark::NEGOTIATED) && !s.marked(1, mark::NEGOTIATED));
        s.options[1][crate::options::subtype::DSS as usize] = 2;
        assert_eq!((s.infinite_mappings(0), s.infinite_mappings(1)), (0, 2));
        s.dss[1] = 7;
        assert_eq!(s.option_count(1, crate::options::subtype::DSS as usize), 7);
    }
}
