//! The TCP/MPTCP option parser, shared by the kernel programs and user space.
//!
//! It works on the option area of one TCP header (at most 40 bytes), copied into a fixed array, so
//! that every access is a bounded array access the eBPF verifier can follow. One step function
//! ([`next_option`]) finds option boundaries; [`parse_tcp_options`] decodes the options that matter
//! (MSS, window scale, SACK-permitted, timestamps and every MPTCP subtype of RFC 8684) into a
//! fixed-size [`TcpOptions`].

/// Largest TCP option area: data offset 15 words minus the 20-byte fixed header.
pub const MAX_OPTION_BYTES: usize = 40;
/// MPTCP options decoded per segment; more are counted in [`TcpOptions::mptcp_count`].
pub const MAX_MPTCP_OPTIONS: usize = 2;

pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOPT_WSCALE: u8 = 3;
pub const TCPOPT_SACK_PERM: u8 = 4;
pub const TCPOPT_SACK: u8 = 5;
pub const TCPOPT_TIMESTAMP: u8 = 8;
pub const TCPOPT_MPTCP: u8 = 30;

/// MPTCP option subtypes (RFC 8684 section 7 registry).
pub mod subtype {
    pub const MP_CAPABLE: u8 = 0;
    pub const MP_JOIN: u8 = 1;
    pub const DSS: u8 = 2;
    pub const ADD_ADDR: u8 = 3;
    pub const REMOVE_ADDR: u8 = 4;
    pub const MP_PRIO: u8 = 5;
    pub const MP_FAIL: u8 = 6;
    pub const MP_FASTCLOSE: u8 = 7;
    pub const MP_TCPRST: u8 = 8;
    pub const MP_EXPERIMENTAL: u8 = 15;
}

/// DSS flag bits (fourth byte of the option).
pub mod dss {
    pub const DATA_ACK: u8 = 0x01;
    pub const DATA_ACK_8: u8 = 0x02;
    pub const MAPPING: u8 = 0x04;
    pub const DSN_8: u8 = 0x08;
    pub const DATA_FIN: u8 = 0x10;
}

/// [`TcpOptions::flags`] bits.
pub mod opt_flags {
    /// SACK-permitted present.
    pub const SACK_PERM: u8 = 0x01;
    /// Timestamps present.
    pub const TIMESTAMPS: u8 = 0x02;
    /// SACK blocks present.
    pub const SACK: u8 = 0x04;
    /// An option length was 0 or 1, ran past the option area, or did not fit its kind.
    pub const MALFORMED: u8 = 0x08;
    /// More MPTCP options than [`super::MAX_MPTCP_OPTIONS`]: only the first ones are decoded.
    pub const MPTCP_OVERFLOW: u8 = 0x10;
    /// The option area given was shorter than the header's data offset promised.
    pub const TRUNCATED: u8 = 0x20;
}

/// [`MptcpOption::status`] bits.
pub mod mptcp_status {
    /// Length does not match any form of this subtype.
    pub const BAD_LENGTH: u8 = 0x01;
    /// DSS mapping with data-level length 0. On a segment that carries data this is an infinite
    /// mapping (fallback after establishment, RFC 8684 section 3.7); on one without payload it
    /// maps nothing and the kernel ignores it: see [`super::MptcpOption::is_infinite_mapping`].
    pub const INFINITE_MAPPING: u8 = 0x02;
    /// A checksum field is present (MP_CAPABLE with data, DSS).
    pub const CHECKSUM: u8 = 0x04;
    /// ADD_ADDR carries an IPv6 address.
    pub const IPV6: u8 = 0x08;
    /// ADD_ADDR carries a port.
    pub const PORT: u8 = 0x10;
    /// ADD_ADDR carries a truncated HMAC (not an echo).
    pub const HMAC: u8 = 0x20;
}

/// One decoded MPTCP option. Fields not used by a subtype stay zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MptcpOption {
    /// Subtype (high nibble of the third byte).
    pub subtype: u8,
    /// Option length in bytes, as on the wire.
    pub len: u8,
    /// Subtype flags: MP_CAPABLE's flag byte (A..H), MP_JOIN/MP_PRIO backup bit, DSS flag byte,
    /// ADD_ADDR echo bit, MP_TCPRST U/V/W/T bits.
    pub flags: u8,
    /// Address id (MP_JOIN, ADD_ADDR, MP_PRIO in its long form).
    pub addr_id: u8,
    /// MP_CAPABLE version.
    pub version: u8,
    /// MP_TCPRST reason code.
    pub reason: u8,
    /// [`mptcp_status`] bits.
    pub status: u8,
    /// REMOVE_ADDR: number of address ids (the first 16 are kept in `addr`).
    pub count: u8,
    /// ADD_ADDR port (host order), 0 when absent.
    pub port: u16,
    /// Data-level length of a DSS mapping or of MP_CAPABLE with data.
    pub data_len: u16,
    /// DSS subflow sequence number (relative).
    pub ssn: u32,
    /// DSS data sequence number, MP_FAIL DSN (4-byte forms are zero-extended).
    pub dsn: u64,
    /// DSS data ACK (4-byte forms are zero-extended).
    pub data_ack: u64,
    /// ADD_ADDR address (IPv4 in the first 4 bytes), REMOVE_ADDR address ids.
    pub addr: [u8; 16],
}

/// MP_CAPABLE (RFC 8684 section 3.1) as Linux parses it: the version it speaks, the flag bits.
pub mod mp_capable {
    /// The only version Linux speaks; on a SYN a higher one is accepted (and answered with 1).
    pub const VERSION: u8 = 1;
    /// A: checksum required.
    pub const FLAG_CHECKSUM: u8 = 0x80;
    /// B: extensibility; Linux ignores an MP_CAPABLE that sets it.
    pub const FLAG_EXTENSIBILITY: u8 = 0x40;
    /// C: do not join to the initial address.
    pub const FLAG_DENY_JOIN_ID0: u8 = 0x20;
    /// D..H: the crypto algorithm bits; exactly H (HMAC-SHA256) must be set.
    pub const FLAG_CRYPTO_MASK: u8 = 0x1f;
    pub const FLAG_HMAC_SHA256: u8 = 0x01;
}

/// The packet an MP_CAPABLE option came on: each has its own length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpCapablePacket {
    Syn,
    SynAck,
    /// The third ACK, or (with data) the first data segment that repeats it.
    Ack {
        data: bool,
    },
}

/// Why the kernel ignores an MP_CAPABLE option (and the connection then falls back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpCapableRejection {
    /// A version other than 1 (on the SYN: below 1).
    Version(u8),
    /// The extensibility bit, or a crypto algorithm other than HMAC-SHA256 alone.
    Flags(u8),
    /// A length that does not fit the packet it is on.
    Length(u8),
}

impl MptcpOption {
    /// Why Linux would ignore this MP_CAPABLE (`mptcp_parse_option` in net/mptcp/options.c) on
    /// the packet it came with, or None when it accepts it.
    pub const fn mp_capable_rejection(&self, on: MpCapablePacket) -> Option<MpCapableRejection> {
        let len_ok = match on {
            MpCapablePacket::Syn => self.len == 4,
            MpCapablePacket::SynAck => self.len == 12,
            MpCapablePacket::Ack { data: false } => self.len == 20,
            MpCapablePacket::Ack { data: true } => self.len == 22 || self.len == 24,
        };
        if !len_ok {
            return Some(MpCapableRejection::Length(self.len));
        }
        let version_ok = match on {
            // "Gentle vs future versions on the initial SYN".
            MpCapablePacket::Syn => self.version >= mp_capable::VERSION,
            _ => self.version == mp_capable::VERSION,
        };
        if !version_ok {
            return Some(MpCapableRejection::Version(self.version));
        }
        if self.flags & mp_capable::FLAG_CRYPTO_MASK != mp_capable::FLAG_HMAC_SHA256
            || self.flags & mp_capable::FLAG_EXTENSIBILITY != 0
        {
            return Some(MpCapableRejection::Flags(self.flags));
        }
        None
    }

    /// A DSS with an infinite mapping: a mapping of data-level length 0 on a segment that carries
    /// data. On a segment without payload (a pure ACK, an empty PSH) it maps nothing.
    pub const fn is_infinite_mapping(&self, payload_len: u32) -> bool {
        self.subtype == subtype::DSS && self.status & mptcp_status::INFINITE_MAPPING != 0 && payload_len > 0
    }
}

/// Everything the observer keeps from a TCP option area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// MSS option value, 0 when absent.
    pub mss: u16,
    /// Window scale shift, 0xff when absent.
    pub wscale: u8,
    /// [`opt_flags`] bits.
    pub flags: u8,
    /// Number of MPTCP options seen (may exceed [`MAX_MPTCP_OPTIONS`]).
    pub mptcp_count: u8,
    /// Option bytes walked before the end (EOL, end of area, or a malformed option).
    pub parsed_len: u8,
    /// Offset of the first malformed option, 0xff when none.
    pub malformed_at: u8,
    pub _pad: u8,
    /// Timestamp value, when present.
    pub ts_val: u32,
    /// Timestamp echo reply, when present.
    pub ts_ecr: u32,
    /// Decoded MPTCP options, in wire order.
    pub mptcp: [MptcpOption; MAX_MPTCP_OPTIONS],
}

impl TcpOptions {
    pub const fn empty() -> Self {
        Self {
            mss: 0,
            wscale: crate::proto::NONE_U8,
            flags: 0,
            mptcp_count: 0,
            parsed_len: 0,
            malformed_at: crate::proto::NONE_U8,
            _pad: 0,
            ts_val: 0,
            ts_ecr: 0,
            mptcp: [MptcpOption {
                subtype: 0,
                len: 0,
                flags: 0,
                addr_id: 0,
                version: 0,
                reason: 0,
                status: 0,
                count: 0,
                port: 0,
                data_len: 0,
                ssn: 0,
                dsn: 0,
                data_ack: 0,
                addr: [0; 16],
            }; MAX_MPTCP_OPTIONS],
        }
    }

    /// The decoded MPTCP options (at most [`MAX_MPTCP_OPTIONS`]).
    pub fn mptcp_options(&self) -> &[MptcpOption] {
        let n = if (self.mptcp_count as usize) < MAX_MPTCP_OPTIONS {
            self.mptcp_count as usize
        } else {
            MAX_MPTCP_OPTIONS
        };
        &self.mptcp[..n]
    }

    /// The first MPTCP option of the given subtype.
    pub fn find(&self, subtype: u8) -> Option<&MptcpOption> {
        self.mptcp_options().iter().find(|o| o.subtype == subtype)
    }
}

/// One step of the option walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// An option of `kind` occupying `len` bytes from `start` (1 for NOP).
    Option { kind: u8, start: usize, len: usize },
    /// End of option list (EOL at `at`, or the area is exhausted when `at == area length`).
    End { at: usize },
    /// The option at `at` has a length byte of 0 or 1, or is missing it, or runs past the area.
    Malformed { at: usize },
}

/// Hides an index's provenance from the optimiser on BPF. LLVM proves many option reads in bounds
/// from relations (`start + len <= 40`) that the verifier does not track, drops the check, and the
/// verifier then rejects the read; an opaque index keeps the check next to the read.
#[inline(always)]
fn opaque(i: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        // SAFETY: volatile read of a local.
        unsafe { core::ptr::read_volatile(&i) }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        i
    }
}

#[inline(always)]
fn byte(buf: &[u8; MAX_OPTION_BYTES], i: usize) -> u8 {
    match buf.get(opaque(i)) {
        Some(b) => *b,
        None => 0,
    }
}

#[inline(always)]
fn be16(buf: &[u8; MAX_OPTION_BYTES], i: usize) -> u16 {
    ((byte(buf, i) as u16) << 8) | byte(buf, i + 1) as u16
}

#[inline(always)]
fn be32(buf: &[u8; MAX_OPTION_BYTES], i: usize) -> u32 {
    ((be16(buf, i) as u32) << 16) | be16(buf, i + 2) as u32
}

#[inline(always)]
fn be64(buf: &[u8; MAX_OPTION_BYTES], i: usize) -> u64 {
    ((be32(buf, i) as u64) << 32) | be32(buf, i + 4) as u64
}

/// Finds the option that starts at `at` in the first `len` bytes of `buf`.
#[inline(always)]
pub fn next_option(buf: &[u8; MAX_OPTION_BYTES], at: usize, len: usize) -> Step {
    let len = if len > MAX_OPTION_BYTES { MAX_OPTION_BYTES } else { len };
    if at >= len {
        return Step::End { at: len };
    }
    let kind = byte(buf, at);
    if kind == TCPOPT_EOL {
        return Step::End { at };
    }
    if kind == TCPOPT_NOP {
        return Step::Option { kind, start: at, len: 1 };
    }
    if at + 1 >= len {
        return Step::Malformed { at };
    }
    let olen = byte(buf, at + 1) as usize;
    if olen < 2 || at + olen > len {
        return Step::Malformed { at };
    }
    Step::Option { kind, start: at, len: olen }
}

/// Expected lengths of the options with a fixed size, 0 for variable or unknown kinds.
#[inline(always)]
fn fixed_len(kind: u8) -> usize {
    match kind {
        TCPOPT_MSS => 4,
        TCPOPT_WSCALE => 3,
        TCPOPT_SACK_PERM => 2,
        TCPOPT_TIMESTAMP => 10,
        _ => 0,
    }
}

/// Whether an option of `kind` may be `olen` bytes long: the fixed size of its kind, 2 + 8n
/// (n >= 1) for SACK (RFC 2018), anything for other kinds.
#[inline(always)]
fn len_fits(kind: u8, olen: usize) -> bool {
    if kind == TCPOPT_SACK {
        return olen >= 10 && (olen - 2) & 7 == 0;
    }
    let want = fixed_len(kind);
    want == 0 || olen == want
}

/// Decodes the option area `buf[..len]` (`len` is the header's data offset minus 20; when the
/// packet held fewer option bytes than that, pass what it held and set `truncated`).
#[inline(always)]
pub fn parse_tcp_options(buf: &[u8; MAX_OPTION_BYTES], len: usize, truncated: bool) -> TcpOptions {
    let mut out = TcpOptions::empty();
    parse_tcp_options_into(buf, len, truncated, &mut out);
    out
}

/// As [`parse_tcp_options`], writing into `out` (which must start as [`TcpOptions::empty`]); the
/// kernel programs decode into per-CPU scratch memory this way, the BPF stack being small.
#[inline(always)]
pub fn parse_tcp_options_into(
    buf: &[u8; MAX_OPTION_BYTES],
    len: usize,
    truncated: bool,
    out: &mut TcpOptions,
) {
    let mut walk = WalkState::default();
    parse_tcp_options_in(buf, len, truncated, out, &mut walk);
}

/// Position of the option walk, kept in memory the caller chooses. The kernel programs pass
/// per-CPU map memory: the verifier does not track values there, so every step starts from the
/// same abstract state and the 40-step walk verifies in linear time instead of once per path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkState {
    pub at: u32,
    pub end: u32,
    pub mp_start: [u32; MAX_MPTCP_OPTIONS],
    pub mp_len: [u32; MAX_MPTCP_OPTIONS],
}

#[inline(always)]
fn load(p: &u32) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        // SAFETY: volatile read of a valid reference.
        (unsafe { core::ptr::read_volatile(p) }) as usize
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        *p as usize
    }
}

#[inline(always)]
fn store(p: &mut u32, v: usize) {
    #[cfg(target_arch = "bpf")]
    {
        // SAFETY: volatile write through a valid reference.
        unsafe { core::ptr::write_volatile(p, v as u32) }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        *p = v as u32;
    }
}

/// As [`parse_tcp_options_into`], with the walk state in caller-provided memory.
#[inline(always)]
pub fn parse_tcp_options_in(
    buf: &[u8; MAX_OPTION_BYTES],
    len: usize,
    truncated: bool,
    out: &mut TcpOptions,
    walk: &mut WalkState,
) {
    parse_in(buf, len, truncated, out, walk, true);
}

/// As [`parse_tcp_options`], always with the option-by-option walk, never reading a
/// [`usual_layout`] at its fixed offsets: what the latter must agree with.
pub fn parse_tcp_options_walked(buf: &[u8; MAX_OPTION_BYTES], len: usize, truncated: bool) -> TcpOptions {
    let mut out = TcpOptions::empty();
    parse_in(buf, len, truncated, &mut out, &mut WalkState::default(), false);
    out
}

/// Whether [`parse_tcp_options`] reads these bytes as one of the [`usual_layout`]s instead of
/// walking them.
pub fn reads_as_usual_layout(buf: &[u8; MAX_OPTION_BYTES], len: usize) -> bool {
    usual_layout(buf, len.min(MAX_OPTION_BYTES), &mut TcpOptions::empty(), &mut WalkState::default())
}

#[inline(always)]
fn parse_in(
    buf: &[u8; MAX_OPTION_BYTES],
    len: usize,
    truncated: bool,
    out: &mut TcpOptions,
    walk: &mut WalkState,
    usual: bool,
) {
    if truncated {
        out.flags |= opt_flags::TRUNCATED;
    }
    let len = if len > MAX_OPTION_BYTES { MAX_OPTION_BYTES } else { len };
    // The walk only notes where MPTCP options are; they are decoded after it, which keeps the
    // loop body small.
    store(&mut walk.at, 0);
    store(&mut walk.end, len);
    if !(usual && usual_layout(buf, len, out, walk)) {
        // Every option is at least one byte, so MAX_OPTION_BYTES steps always reach the end.
        for _ in 0..MAX_OPTION_BYTES {
            if !walk_step(buf, len, out, walk) {
                break;
            }
        }
    }
    out.parsed_len = load(&walk.end) as u8;
    for i in 0..MAX_MPTCP_OPTIONS {
        if i >= out.mptcp_count as usize {
            break;
        }
        if let (Some(slot), Some(s), Some(l)) =
            (out.mptcp.get_mut(i), walk.mp_start.get(i), walk.mp_len.get(i))
        {
            parse_mptcp_into(buf, load(s), load(l), slot);
        }
    }
}

/// Where the MPTCP option of a [`usual_layout`] starts: after `NOP NOP TS`, after a SYN's
/// `MSS SACK_PERM TS NOP WS` (Linux's order), or at the start.
const USUAL_AFTER_TS: usize = 12;
const USUAL_AFTER_SYN: usize = 20;

/// The layouts Linux writes on nearly every segment, read at fixed offsets in one step instead
/// of walked option by option (up to seven steps on a SYN): a prefix of timestamps or of a SYN's
/// usual options (or none), then nothing more, or one MPTCP option that ends the area or is
/// followed by `NOP NOP` only. False, with nothing written, for anything else (two MPTCP
/// options, SACK blocks, EOL padding, any other order): the walk decodes that. What it writes is
/// what the walk writes for the same bytes (tested against [`parse_tcp_options_walked`]). Not
/// inlined: verified once, beside the walk.
#[inline(never)]
fn usual_layout(
    buf: &[u8; MAX_OPTION_BYTES],
    len: usize,
    out: &mut TcpOptions,
    walk: &mut WalkState,
) -> bool {
    let at = if len >= USUAL_AFTER_TS
        && byte(buf, 0) == TCPOPT_NOP
        && byte(buf, 1) == TCPOPT_NOP
        && byte(buf, 2) == TCPOPT_TIMESTAMP
        && byte(buf, 3) == 10
    {
        USUAL_AFTER_TS
    } else if len >= USUAL_AFTER_SYN
        && byte(buf, 0) == TCPOPT_MSS
        && byte(buf, 1) == 4
        && byte(buf, 4) == TCPOPT_SACK_PERM
        && byte(buf, 5) == 2
        && byte(buf, 6) == TCPOPT_TIMESTAMP
        && byte(buf, 7) == 10
        && byte(buf, 16) == TCPOPT_NOP
        && byte(buf, 17) == TCPOPT_WSCALE
        && byte(buf, 18) == 3
    {
        USUAL_AFTER_SYN
    } else {
        0
    };
    let rest = len - at;
    let mp_len = if rest == 0 {
        0
    } else {
        if rest < 2 || byte(buf, at) != TCPOPT_MPTCP {
            return false;
        }
        let olen = byte(buf, at + 1) as usize;
        let padded =
            olen + 2 == rest && byte(buf, at + olen) == TCPOPT_NOP && byte(buf, at + olen + 1) == TCPOPT_NOP;
        if olen < 2 || !(olen == rest || padded) {
            return false;
        }
        olen
    };
    if at == USUAL_AFTER_TS {
        out.flags |= opt_flags::TIMESTAMPS;
        out.ts_val = be32(buf, 4);
        out.ts_ecr = be32(buf, 8);
    } else if at == USUAL_AFTER_SYN {
        out.mss = be16(buf, 2);
        out.flags |= opt_flags::SACK_PERM | opt_flags::TIMESTAMPS;
        out.ts_val = be32(buf, 8);
        out.ts_ecr = be32(buf, 12);
        out.wscale = byte(buf, 19);
    }
    if mp_len > 0 {
        if let (Some(s), Some(l)) = (walk.mp_start.get_mut(0), walk.mp_len.get_mut(0)) {
            store(s, at);
            store(l, mp_len);
        }
        out.mptcp_count = 1;
    }
    store(&mut walk.end, len);
    true
}

/// One step of the walk: decodes the option at `walk.at`; false once the walk is over. Not inlined,
/// so that in the kernel the loop around it carries no state but the counter (`out` and `walk` go
/// through memory) and the verifier checks each step once instead of once per path.
#[inline(never)]
fn walk_step(buf: &[u8; MAX_OPTION_BYTES], len: usize, out: &mut TcpOptions, walk: &mut WalkState) -> bool {
    let at = load(&walk.at);
    match next_option(buf, at, len) {
        Step::End { at: e } => {
            store(&mut walk.end, e);
            return false;
        }
        Step::Malformed { at: bad } => {
            out.flags |= opt_flags::MALFORMED;
            out.malformed_at = bad as u8;
            store(&mut walk.end, bad);
            return false;
        }
        Step::Option { kind, start, len: olen } => {
            if !len_fits(kind, olen) {
                out.flags |= opt_flags::MALFORMED;
                out.malformed_at = start as u8;
                store(&mut walk.end, start);
                return false;
            }
            match kind {
                TCPOPT_MSS => out.mss = be16(buf, start + 2),
                TCPOPT_WSCALE => out.wscale = byte(buf, start + 2),
                TCPOPT_SACK_PERM => out.flags |= opt_flags::SACK_PERM,
                TCPOPT_SACK => out.flags |= opt_flags::SACK,
                TCPOPT_TIMESTAMP => {
                    out.flags |= opt_flags::TIMESTAMPS;
                    out.ts_val = be32(buf, start + 2);
                    out.ts_ecr = be32(buf, start + 6);
                }
                TCPOPT_MPTCP => {
                    let idx = out.mptcp_count as usize;
                    if idx < MAX_MPTCP_OPTIONS {
                        if let Some(s) = walk.mp_start.get_mut(idx) {
                            store(s, start);
                        }
                        if let Some(l) = walk.mp_len.get_mut(idx) {
                            store(l, olen);
                        }
                    } else {
                        out.flags |= opt_flags::MPTCP_OVERFLOW;
                    }
                    out.mptcp_count = out.mptcp_count.saturating_add(1);
                }
                _ => {}
            }
            store(&mut walk.at, start + olen);
            store(&mut walk.end, start + olen);
        }
    }
    true
}

/// Decodes one MPTCP option of `len` bytes (at least 2) starting at `start`.
#[inline(always)]
pub fn parse_mptcp(buf: &[u8; MAX_OPTION_BYTES], start: usize, len: usize) -> MptcpOption {
    let mut o = MptcpOption::default();
    parse_mptcp_into(buf, start, len, &mut o);
    o
}

/// As [`parse_mptcp`], writing into `o` (which must start zeroed). Not inlined: one copy serves
/// both decoded slots in the kernel. One function with one arm per subtype, longer than most:
/// split into a function per subtype, each would be a BPF subprogram of its own to call and
/// verify, on the path of every packet the fast path does not take.
#[inline(never)]
pub fn parse_mptcp_into(buf: &[u8; MAX_OPTION_BYTES], start: usize, len: usize, o: &mut MptcpOption) {
    o.len = len as u8;
    if len < 3 {
        o.subtype = crate::proto::NONE_U8;
        o.status |= mptcp_status::BAD_LENGTH;
        return;
    }
    let b2 = byte(buf, start + 2);
    let st = b2 >> 4;
    o.subtype = st;
    let low = b2 & 0x0f;
    let b3 = if len > 3 { byte(buf, start + 3) } else { 0 };
    let bad = match st {
        subtype::MP_CAPABLE => {
            o.version = low;
            o.flags = b3;
            if len >= 22 {
                o.data_len = be16(buf, start + 20);
            }
            if len == 24 {
                o.status |= mptcp_status::CHECKSUM;
            }
            !matches!(len, 4 | 12 | 20 | 22 | 24)
        }
        subtype::MP_JOIN => {
            o.flags = low;
            o.addr_id = b3;
            !matches!(len, 12 | 16 | 24)
        }
        subtype::DSS => parse_dss(buf, start, len, b3, o),
        subtype::ADD_ADDR => {
            o.flags = low;
            o.addr_id = b3;
            let (v6, port, hmac, ok) = match len {
                8 => (false, false, false, true),
                10 => (false, true, false, true),
                16 => (false, false, true, true),
                18 => (false, true, true, true),
                20 => (true, false, false, true),
                22 => (true, true, false, true),
                28 => (true, false, true, true),
                30 => (true, true, true, true),
                _ => (false, false, false, false),
            };
            // The truncated HMAC is present exactly when this is not an echo (E = 0x01).
            let ok = ok && hmac == (low & 0x01 == 0);
            if ok {
                let alen = if v6 { 16 } else { 4 };
                let mut i = 0;
                while i < 16 {
                    if i < alen {
                        o.addr[i] = byte(buf, start + 4 + i);
                    }
                    i += 1;
                }
                if v6 {
                    o.status |= mptcp_status::IPV6;
                }
                if port {
                    o.status |= mptcp_status::PORT;
                    o.port = be16(buf, start + 4 + alen);
                }
                if hmac {
                    o.status |= mptcp_status::HMAC;
                }
            }
            !ok
        }
        subtype::REMOVE_ADDR => {
            let n = len - 3;
            o.count = n as u8;
            let mut i = 0;
            while i < 16 {
                if i < n {
                    o.addr[i] = byte(buf, start + 3 + i);
                }
                i += 1;
            }
            // At least one address id.
            n == 0
        }
        subtype::MP_PRIO => {
            o.flags = low;
            if len == 4 {
                o.addr_id = b3;
            }
            !matches!(len, 3 | 4)
        }
        subtype::MP_FAIL => {
            if len == 12 {
                o.dsn = be64(buf, start + 4);
            }
            len != 12
        }
        subtype::MP_FASTCLOSE => len != 12,
        subtype::MP_TCPRST => {
            o.flags = low;
            o.reason = b3;
            len != 4
        }
        _ => false,
    };
    if bad {
        o.status |= mptcp_status::BAD_LENGTH;
    }
}

/// Decodes a DSS option; returns true when the length does not match its flags.
#[inline(always)]
fn parse_dss(buf: &[u8; MAX_OPTION_BYTES], start: usize, len: usize, flags: u8, o: &mut MptcpOption) -> bool {
    o.flags = flags;
    let mut want = 4usize;
    let mut at = start + 4;
    if flags & dss::DATA_ACK != 0 {
        if flags & dss::DATA_ACK_8 != 0 {
            o.data_ack = be64(buf, at);
            at += 8;
            want += 8;
        } else {
            o.data_ack = be32(buf, at) as u64;
            at += 4;
            want += 4;
        }
    }
    if flags & dss::MAPPING != 0 {
        if flags & dss::DSN_8 != 0 {
            o.dsn = be64(buf, at);
            at += 8;
            want += 8;
        } else {
            o.dsn = be32(buf, at) as u64;
            at += 4;
            want += 4;
        }
        o.ssn = be32(buf, at);
        o.data_len = be16(buf, at + 4);
        want += 6;
        if o.data_len == 0 {
            o.status |= mptcp_status::INFINITE_MAPPING;
        }
        if len == want + 2 {
            o.status |= mptcp_status::CHECKSUM;
            return false;
        }
    }
    len != want
}

/// Copies an option slice into the fixed parser buffer (user space helper).
pub fn option_area(bytes: &[u8]) -> ([u8; MAX_OPTION_BYTES], usize) {
    let mut buf = [0u8; MAX_OPTION_BYTES];
    let n = bytes.len().min(MAX_OPTION_BYTES);
    buf[..n].copy_from_slice(&bytes[..n]);
    (buf, n)
}

/// Iterates over the option boundaries of a slice (user space helper built on [`next_option`]).
pub struct OptionWalk {
    buf: [u8; MAX_OPTION_BYTES],
    len: usize,
    at: usize,
    done: bool,
}

impl OptionWalk {
    pub fn new(bytes: &[u8]) -> Self {
        let (buf, len) = option_area(bytes);
        Self { buf, len, at: 0, done: false }
    }
}

impl Iterator for OptionWalk {
    type Item = Step;
    fn next(&mut self) -> Option<Step> {
        if self.done {
            return None;
        }
        let step = next_option(&self.buf, self.at, self.len);
        match step {
            Step::Option { start, len, .. } => self.at = start + len,
            _ => self.done = true,
        }
        Some(step)
    }
}
