//! A foreign MPTCP client: TCP and MPTCP written by hand over a raw socket, not Linux's MPTCP
//! stack, so that a test can send a Linux listener what Linux itself never sends and watch what
//! the listener makes of it.
//!
//! The script: a SYN with MP_CAPABLE (version 1, HMAC-SHA256); the listener's key from its
//! SYN/ACK; the third ACK with both keys, its MP_CAPABLE version and flags as asked; the data in
//! segments with DSS mappings (8-byte data ACK and DSN), never more in flight than the listener's
//! window; with `--empty-mapping`, after the first half of the data, a pure ACK and then an empty
//! PSH/ACK that each carry a mapping of data-level length 0; the rest of the data, the last
//! mapping with DATA_FIN; a FIN. Then it acknowledges what the listener answers (subflow and data
//! level) up to the listener's FIN and prints one JSON line: the listener's answer, whether it
//! matches what was sent, how the listener's segments were mapped, which MPTCP options it sent.
//! With `--keep-open` it stops after the data, leaving the connection open.
//!
//! With `--timestamps` it negotiates TCP timestamps and lays its options out as Linux does: NOP
//! NOP TS first, then the MPTCP option, NOPs after it (a data segment: NOP NOP TS, a 26-byte DSS,
//! NOP NOP). Without, its options are padded with NOPs in front.
//!
//! `--late KIND[:ARG]` (repeatable) sends what Linux sends only when something goes wrong, after
//! `--late-after` data segments of the script, each next one `--late-gap` data segments later:
//!
//! - `no-dss[:N]`: the next N data segments (default 3) without DSS;
//! - `infinite-mapping`: the next data segment's mapping of data-level length 0, and from then on
//!   no DSS at all (the subflow is plain TCP, RFC 8684 section 3.7);
//! - `mp-fail`: a pure ACK with MP_FAIL (the listener's next data sequence number);
//! - `mp-fastclose`: a pure ACK with MP_FASTCLOSE (the listener's key); then it waits for the
//!   listener's RST and sends nothing more;
//! - `mp-tcprst:REASON`: a RST with MP_TCPRST of that reason (its code, or its name such as
//!   `middlebox_interference`); nothing more;
//! - `add-addr:ADDR` / `add-addr-bad-hmac:ADDR`: a pure ACK with ADD_ADDR announcing that IPv4
//!   address (the next address ID from 1), with its truncated HMAC (16 bytes), or one that is not
//!   the listener's;
//! - `remove-addr[:ID]`: a pure ACK with REMOVE_ADDR of that address ID (default 1);
//! - `pause:FILE`: once everything sent is acknowledged, says `paused` on stderr and waits,
//!   acknowledging what comes, until FILE exists;
//! - `resend[:N]`: once everything sent is acknowledged, the data of the last N data segments
//!   (default 3) again, with their data sequence numbers on new subflow sequence numbers: an
//!   MPTCP-level retransmission, as Linux sends one when its MPTCP retransmission timer fires
//!   (the listener has the data already: duplicate data there);
//! - `tcp-retransmit[:N]`: the last N data segments (default 2) again as they were, the same
//!   sequence numbers and mappings: a TCP-level retransmission.
//!
//! Version 1 sends the keys in clear: no HMAC is needed for them. DSS checksums are not asked
//! for. The namespace's own TCP stack does not know this connection and would answer the listener
//! with RSTs: the caller drops them, and only them: this client marks its own packets
//! ([`FOREIGN_PEER_MARK`]; `iptables -A OUTPUT -p tcp --sport PORT --tcp-flags RST RST -m mark !
//! --mark 0x4d50 -j DROP`, and the same with ip6tables).

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::Parser;
use etherparse::{Ipv4Header, TcpHeader};
use mptcp_probe_common::{
    event::tcp_flags,
    options::{
        dss, mp_capable, opt_flags, option_area, parse_tcp_options, subtype, OptionWalk, Step, TcpOptions,
        TCPOPT_MPTCP, TCPOPT_MSS, TCPOPT_NOP, TCPOPT_TIMESTAMP,
    },
    proto::IPPROTO_TCP,
};
use mptcp_probe_model::{Subtype, TcpRstReason};
use mptcp_probe_tests::{
    foreign::FOREIGN_PEER_MARK,
    sys::{check, sockaddr},
};

/// Payload bytes per segment: well under the lab's MTU with the DSS option.
const SEGMENT_BYTES: usize = 1000;
/// Most payload bytes sent.
const MAX_BYTES: usize = 4_000_000;
/// The window this client offers (no window scaling).
const WINDOW: u16 = 65535;
/// Most bytes in flight, whatever window the listener offers.
const MAX_IN_FLIGHT: u32 = 32_000;
const MSS: u16 = 1460;
/// Room for the largest IP packet a raw socket can hand over (GRO may join segments).
const RECV_BUFFER: usize = 65536;
/// SYN attempts, each waiting this long for the SYN/ACK.
const SYN_TRIES: u32 = 3;
const SYN_WAIT: Duration = Duration::from_secs(1);
/// Without an ACK for this long, the unacknowledged segments are sent again, at most
/// `RETRANSMISSIONS` times.
const RTO: Duration = Duration::from_millis(500);
const RETRANSMISSIONS: u32 = 5;
/// How long one read of the raw socket waits: the granularity of every wait above.
const RECV_POLL: Duration = Duration::from_millis(50);
/// How long the listener is given to answer a late option (an echo, its RST).
const ANSWER_WAIT: Duration = Duration::from_millis(500);
const FASTCLOSE_WAIT: Duration = Duration::from_secs(3);

const MP_CAPABLE_SYN_LEN: u8 = 4;
const MP_CAPABLE_SYNACK_LEN: usize = 12;
const MP_CAPABLE_ACK_LEN: u8 = 20;
const MP_FAIL_LEN: u8 = 12;
const MP_FASTCLOSE_LEN: u8 = 12;
const MP_TCPRST_LEN: u8 = 4;
/// ADD_ADDR of an IPv4 address with its truncated HMAC.
const ADD_ADDR_V4_HMAC_LEN: u8 = 16;
/// ADD_ADDR's E bit (an echo), in the low nibble of its third byte.
const ADD_ADDR_ECHO: u8 = 0x01;
const TIMESTAMP_LEN: u8 = 10;

#[derive(Parser)]
struct Cli {
    /// The MPTCP listener, "ADDR:PORT" (IPv6 in brackets).
    #[arg(long)]
    connect: SocketAddr,
    /// Local address and port to speak from (the address must be one of the namespace's).
    #[arg(long)]
    local: SocketAddr,
    /// Payload bytes to send (at most 4000000).
    #[arg(long, default_value_t = 6000)]
    bytes: usize,
    /// Between the two halves of the data, a pure ACK and an empty PSH/ACK, each with a DSS
    /// mapping of data-level length 0.
    #[arg(long)]
    empty_mapping: bool,
    /// MP_CAPABLE version of the third ACK.
    #[arg(long, default_value_t = mp_capable::VERSION)]
    third_ack_version: u8,
    /// MP_CAPABLE flags of the third ACK ("0x41" or "65").
    #[arg(long, value_parser = parse_u8, default_value = "0x01")]
    third_ack_flags: u8,
    /// After the data (acknowledged), exits without DATA_FIN or FIN: the listener, waiting for
    /// more, has nothing to answer yet.
    #[arg(long)]
    keep_open: bool,
    /// Negotiates TCP timestamps and writes NOP NOP TS first in every segment, as Linux does.
    #[arg(long)]
    timestamps: bool,
    /// What to send late in the connection (repeatable, in this order): no-dss[:N],
    /// infinite-mapping, mp-fail, mp-fastclose, mp-tcprst:REASON, add-addr:ADDR,
    /// add-addr-bad-hmac:ADDR, remove-addr[:ID], pause:FILE, resend[:N], tcp-retransmit[:N].
    #[arg(long, value_name = "KIND[:ARG]")]
    late: Vec<Late>,
    /// Data segments sent before the first `--late`.
    #[arg(long, default_value_t = 150)]
    late_after: u32,
    /// Data segments sent between one `--late` and the next.
    #[arg(long, default_value_t = 10)]
    late_gap: u32,
    /// Gives up after this many seconds.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
}

fn parse_u8(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a byte: {e}"))
}

/// What goes wrong late in the connection (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Late {
    NoDss(u32),
    InfiniteMapping,
    MpFail,
    MpFastclose,
    MpTcpRst(u8),
    AddAddr { addr: Ipv4Addr, valid_hmac: bool },
    RemoveAddr(u8),
    Pause(PathBuf),
    Resend(u32),
    TcpRetransmit(u32),
}

impl std::str::FromStr for Late {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let need = |what: &str| arg.ok_or_else(|| format!("--late {kind} needs :{what}"));
        let count = |default: u32| match arg {
            Some(n) => n.parse().map_err(|e| format!("{kind}:{n}: {e}")),
            None => Ok(default),
        };
        let addr = |a: &str| a.parse::<Ipv4Addr>().map_err(|e| format!("{a:?} is not an IPv4 address: {e}"));
        Ok(match kind {
            "no-dss" => Late::NoDss(count(3)?),
            "resend" => Late::Resend(count(3)?.min(RECENT as u32)),
            "tcp-retransmit" => Late::TcpRetransmit(count(2)?.min(RECENT as u32)),
            "infinite-mapping" => Late::InfiniteMapping,
            "mp-fail" => Late::MpFail,
            "mp-fastclose" => Late::MpFastclose,
            "mp-tcprst" => {
                let r = need("REASON")?;
                let named = (0..=u8::MAX)
                    .map(|c| (c, TcpRstReason::from_code(c)))
                    .find(|(_, n)| *n != TcpRstReason::Unknown && n.as_str() == r);
                Late::MpTcpRst(match named {
                    Some((code, _)) => code,
                    None => parse_u8(r)?,
                })
            }
            "add-addr" => Late::AddAddr { addr: addr(need("ADDR")?)?, valid_hmac: true },
            "add-addr-bad-hmac" => Late::AddAddr { addr: addr(need("ADDR")?)?, valid_hmac: false },
            "remove-addr" => Late::RemoveAddr(arg.map(parse_u8).transpose()?.unwrap_or(1)),
            "pause" => Late::Pause(PathBuf::from(need("FILE")?)),
            _ => return Err(format!("unknown --late kind {kind:?}")),
        })
    }
}

impl Late {
    /// How it is named in the report.
    fn name(&self) -> String {
        match self {
            Late::NoDss(n) => format!("no-dss:{n}"),
            Late::InfiniteMapping => "infinite-mapping".into(),
            Late::MpFail => "mp-fail".into(),
            Late::MpFastclose => "mp-fastclose".into(),
            Late::MpTcpRst(r) => format!("mp-tcprst:{r}"),
            Late::AddAddr { addr, valid_hmac: true } => format!("add-addr:{addr}"),
            Late::AddAddr { addr, valid_hmac: false } => format!("add-addr-bad-hmac:{addr}"),
            Late::RemoveAddr(id) => format!("remove-addr:{id}"),
            Late::Pause(p) => format!("pause:{}", p.display()),
            Late::Resend(n) => format!("resend:{n}"),
            Late::TcpRetransmit(n) => format!("tcp-retransmit:{n}"),
        }
    }

    /// Data segments it takes the place of steady ones for.
    fn data_segments(&self) -> u32 {
        match self {
            Late::NoDss(n) => *n,
            Late::InfiniteMapping => 1,
            _ => 0,
        }
    }

    /// It ends the connection: nothing is sent after it.
    fn ends(&self) -> bool {
        matches!(self, Late::MpFastclose | Late::MpTcpRst(_))
    }
}

/// FNV-1a, the digest `mptcp-peer server` answers with.
fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// SHA-256 (FIPS 180-4); MPTCP derives the initial data sequence number from it.
fn sha256(msg: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut data = msg.to_vec();
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&(msg.len() as u64 * 8).to_be_bytes());
    for block in data.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let [a, b, c, d, e, f, g, hh] = v;
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            v = [t1.wrapping_add(s0.wrapping_add(maj)), a, b, c, d.wrapping_add(t1), e, f, g];
        }
        for (x, y) in h.iter_mut().zip(v) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (o, x) in out.chunks_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// HMAC-SHA256 (RFC 2104) with a key of at most one block.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha256(&inner));
    sha256(&outer)
}

/// The truncated HMAC of an ADD_ADDR (RFC 8684 section 3.4.1): the low 64 bits of HMAC-SHA256
/// keyed with the sender's key and then the receiver's, over the address ID, the address and the
/// port (0 when none), as Linux checks it (`add_addr_generate_hmac`).
fn add_addr_hmac(sender_key: u64, receiver_key: u64, id: u8, addr: Ipv4Addr, port: u16) -> u64 {
    let mut key = sender_key.to_be_bytes().to_vec();
    key.extend_from_slice(&receiver_key.to_be_bytes());
    let mut msg = vec![id];
    msg.extend_from_slice(&addr.octets());
    msg.extend_from_slice(&port.to_be_bytes());
    let d = hmac_sha256(&key, &msg);
    u64::from_be_bytes(d[24..32].try_into().expect("8 bytes"))
}

/// The initial data sequence number of a key: the low 64 bits of SHA-256 of the key in network
/// order (RFC 8684 section 3.1). The first data byte has IDSN + 1.
fn idsn(key: u64) -> u64 {
    let d = sha256(&key.to_be_bytes());
    u64::from_be_bytes([d[24], d[25], d[26], d[27], d[28], d[29], d[30], d[31]])
}

fn random_u64() -> anyhow::Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        bail!("getrandom failed: {}", std::io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(b))
}

/// The TCP options this client writes.
mod opt {
    use super::*;

    pub fn mss() -> Vec<u8> {
        let [hi, lo] = MSS.to_be_bytes();
        vec![TCPOPT_MSS, 4, hi, lo]
    }

    pub fn timestamps(val: u32, ecr: u32) -> Vec<u8> {
        let mut o = vec![TCPOPT_TIMESTAMP, TIMESTAMP_LEN];
        o.extend_from_slice(&val.to_be_bytes());
        o.extend_from_slice(&ecr.to_be_bytes());
        o
    }

    pub fn mp_capable_syn() -> Vec<u8> {
        vec![
            TCPOPT_MPTCP,
            MP_CAPABLE_SYN_LEN,
            subtype::MP_CAPABLE << 4 | mp_capable::VERSION,
            mp_capable::FLAG_HMAC_SHA256,
        ]
    }

    pub fn mp_capable_ack(version: u8, flags: u8, sender_key: u64, receiver_key: u64) -> Vec<u8> {
        let mut o =
            vec![TCPOPT_MPTCP, MP_CAPABLE_ACK_LEN, subtype::MP_CAPABLE << 4 | (version & 0x0f), flags];
        o.extend_from_slice(&sender_key.to_be_bytes());
        o.extend_from_slice(&receiver_key.to_be_bytes());
        o
    }

    /// A data-sequence mapping: DSN of its first byte, subflow sequence number relative to the
    /// ISN, data-level length (which counts a DATA_FIN).
    pub struct Mapping {
        pub dsn: u64,
        pub ssn: u32,
        pub len: u16,
        pub data_fin: bool,
    }

    /// A DSS with an 8-byte data ACK and, when given, a mapping with an 8-byte DSN.
    pub fn dss(data_ack: u64, mapping: Option<&Mapping>) -> Vec<u8> {
        let mut flags = dss::DATA_ACK | dss::DATA_ACK_8;
        let mut body = data_ack.to_be_bytes().to_vec();
        if let Some(m) = mapping {
            flags |= dss::MAPPING | dss::DSN_8;
            if m.data_fin {
                flags |= dss::DATA_FIN;
            }
            body.extend_from_slice(&m.dsn.to_be_bytes());
            body.extend_from_slice(&m.ssn.to_be_bytes());
            body.extend_from_slice(&m.len.to_be_bytes());
        }
        let mut o = vec![TCPOPT_MPTCP, 4 + body.len() as u8, subtype::DSS << 4, flags];
        o.extend_from_slice(&body);
        o
    }

    /// MP_FAIL for the mapping at data sequence number `dsn`.
    pub fn mp_fail(dsn: u64) -> Vec<u8> {
        let mut o = vec![TCPOPT_MPTCP, MP_FAIL_LEN, subtype::MP_FAIL << 4, 0];
        o.extend_from_slice(&dsn.to_be_bytes());
        o
    }

    /// MP_FASTCLOSE with the receiver's key.
    pub fn mp_fastclose(receiver_key: u64) -> Vec<u8> {
        let mut o = vec![TCPOPT_MPTCP, MP_FASTCLOSE_LEN, subtype::MP_FASTCLOSE << 4, 0];
        o.extend_from_slice(&receiver_key.to_be_bytes());
        o
    }

    /// MP_TCPRST, not transient, with a reason code.
    pub fn mp_tcprst(reason: u8) -> Vec<u8> {
        vec![TCPOPT_MPTCP, MP_TCPRST_LEN, subtype::MP_TCPRST << 4, reason]
    }

    /// ADD_ADDR of an IPv4 address (no port) with its truncated HMAC.
    pub fn add_addr_v4(id: u8, addr: Ipv4Addr, hmac: u64) -> Vec<u8> {
        let mut o = vec![TCPOPT_MPTCP, ADD_ADDR_V4_HMAC_LEN, subtype::ADD_ADDR << 4, id];
        o.extend_from_slice(&addr.octets());
        o.extend_from_slice(&hmac.to_be_bytes());
        o
    }

    pub fn remove_addr(id: u8) -> Vec<u8> {
        vec![TCPOPT_MPTCP, 4, subtype::REMOVE_ADDR << 4, id]
    }

    /// Options padded with leading NOPs to a multiple of four bytes.
    pub fn area(options: &[Vec<u8>]) -> Vec<u8> {
        let n: usize = options.iter().map(Vec::len).sum();
        let mut area = vec![TCPOPT_NOP; (4 - n % 4) % 4];
        for o in options {
            area.extend_from_slice(o);
        }
        area
    }

    /// As Linux lays them out: NOP NOP and the timestamps first, then the options, then NOPs to
    /// a multiple of four bytes.
    pub fn area_after_timestamps(ts: Vec<u8>, options: &[Vec<u8>]) -> Vec<u8> {
        let mut area = vec![TCPOPT_NOP, TCPOPT_NOP];
        area.extend_from_slice(&ts);
        for o in options {
            area.extend_from_slice(o);
        }
        area.resize(area.len().div_ceil(4) * 4, TCPOPT_NOP);
        area
    }
}

/// One segment to send; its option area is laid out when it is sent (with the timestamps of
/// that moment).
#[derive(Clone)]
struct Segment {
    seq: u32,
    ack: u32,
    flags: u8,
    /// The options other than timestamps.
    options: Vec<Vec<u8>>,
    payload: Vec<u8>,
}

impl Segment {
    /// Sequence space it takes: payload, SYN and FIN.
    fn seq_len(&self) -> u32 {
        self.payload.len() as u32
            + (self.flags & tcp_flags::SYN != 0) as u32
            + (self.flags & tcp_flags::FIN != 0) as u32
    }
}

/// A segment of this connection from the listener.
struct Received {
    tcp: TcpHeader,
    payload: Vec<u8>,
}

impl Received {
    /// The listener's key, from an MP_CAPABLE of SYN/ACK length.
    fn mp_capable_key(&self) -> Option<u64> {
        let area = self.tcp.options.as_slice();
        OptionWalk::new(area).find_map(|step| match step {
            Step::Option { kind: TCPOPT_MPTCP, start, len } if len == MP_CAPABLE_SYNACK_LEN => {
                let o = &area[start..start + len];
                (o[2] >> 4 == subtype::MP_CAPABLE).then(|| u64::from_be_bytes(o[4..12].try_into().unwrap()))
            }
            _ => None,
        })
    }

    /// Its options, decoded by the project's own option parser.
    fn options(&self) -> TcpOptions {
        let (buf, len) = option_area(self.tcp.options.as_slice());
        parse_tcp_options(&buf, len, false)
    }
}

/// A raw TCP socket bound to the local address, exchanging segments with one remote address.
struct RawTcp {
    fd: OwnedFd,
    local: SocketAddr,
    remote: SocketAddr,
}

impl RawTcp {
    fn open(local: SocketAddr, remote: SocketAddr) -> anyhow::Result<Self> {
        if local.is_ipv6() != remote.is_ipv6() {
            bail!("--local {local} and --connect {remote} are of different address families");
        }
        let family = if remote.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, IPPROTO_TCP as i32) };
        check(fd, "socket(SOCK_RAW, IPPROTO_TCP) (needs CAP_NET_RAW)")?;
        // SAFETY: fd is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Bound to the address only: the kernel fills in the IP header's source with it.
        let (ss, len) = sockaddr(&SocketAddr::new(local.ip(), 0));
        // SAFETY: valid fd and sockaddr.
        check(
            unsafe { libc::bind(fd.as_raw_fd(), (&ss as *const libc::sockaddr_storage).cast(), len) },
            "bind",
        )?;
        let tv = libc::timeval { tv_sec: 0, tv_usec: RECV_POLL.as_micros() as libc::suseconds_t };
        // SAFETY: valid fd, option pointer and length.
        check(
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                )
            },
            "SO_RCVTIMEO",
        )?;
        // Marked, so that the namespace's firewall can tell this client's RSTs (MP_TCPRST) from
        // the kernel's.
        let mark = FOREIGN_PEER_MARK;
        // SAFETY: valid fd, option pointer and length.
        check(
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&mark as *const u32).cast(),
                    size_of::<u32>() as libc::socklen_t,
                )
            },
            "SO_MARK (needs CAP_NET_ADMIN)",
        )?;
        Ok(Self { fd, local, remote })
    }

    /// Sends `seg` with the option area `options`.
    fn send(&self, seg: &Segment, options: &[u8]) -> anyhow::Result<()> {
        let mut h = TcpHeader::new(self.local.port(), self.remote.port(), seg.seq, WINDOW);
        h.acknowledgment_number = seg.ack;
        h.fin = seg.flags & tcp_flags::FIN != 0;
        h.syn = seg.flags & tcp_flags::SYN != 0;
        h.psh = seg.flags & tcp_flags::PSH != 0;
        h.rst = seg.flags & tcp_flags::RST != 0;
        h.ack = seg.flags & tcp_flags::ACK != 0;
        h.set_options_raw(options).map_err(|e| anyhow::anyhow!("TCP options: {e}"))?;
        h.checksum = match (self.local.ip(), self.remote.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                h.calc_checksum_ipv4_raw(s.octets(), d.octets(), &seg.payload)?
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                h.calc_checksum_ipv6_raw(s.octets(), d.octets(), &seg.payload)?
            }
            _ => unreachable!("families checked in open"),
        };
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(&seg.payload);
        // Raw sockets take the protocol, not a port, in the destination's port field: 0.
        let (ss, len) = sockaddr(&SocketAddr::new(self.remote.ip(), 0));
        // SAFETY: valid fd, buffer and sockaddr.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&ss as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if n != bytes.len() as isize {
            bail!("sending a segment to {}: {}", self.remote, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next segment of this connection, or None after [`RECV_POLL`].
    fn recv(&self) -> anyhow::Result<Option<Received>> {
        let mut buf = vec![0u8; RECV_BUFFER];
        // SAFETY: an all-zero sockaddr_storage is valid for recvfrom to fill.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: valid fd, buffer and address buffer.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e).context("recvfrom on the raw socket"),
            };
        }
        buf.truncate(n as usize);
        // IPv4 raw sockets hand over the IP header; IPv6 ones start at the TCP header.
        let (src, segment): (IpAddr, &[u8]) = if self.remote.is_ipv4() {
            let Ok((ip, _)) = Ipv4Header::from_slice(&buf) else { return Ok(None) };
            let end = (ip.total_len as usize).clamp(ip.header_len(), buf.len());
            (IpAddr::from(ip.source), &buf[ip.header_len()..end])
        } else {
            // SAFETY: the kernel filled a sockaddr_in6 for an AF_INET6 socket.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&from as *const libc::sockaddr_storage).cast()) };
            (IpAddr::from(sin6.sin6_addr.s6_addr), &buf[..])
        };
        let Ok((tcp, payload)) = TcpHeader::from_slice(segment) else { return Ok(None) };
        if src != self.remote.ip()
            || tcp.source_port != self.remote.port()
            || tcp.destination_port != self.local.port()
        {
            return Ok(None);
        }
        Ok(Some(Received { tcp, payload: payload.to_vec() }))
    }
}

/// `a` comes after `b` in sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// TCP timestamps, once negotiated: this client's clock (milliseconds from a random start) and
/// the listener's latest value, echoed.
struct Timestamps {
    start: Instant,
    offset: u32,
    recent: u32,
}

impl Timestamps {
    fn option(&self) -> Vec<u8> {
        let val = self.offset.wrapping_add(self.start.elapsed().as_millis() as u32);
        opt::timestamps(val, self.recent)
    }
}

/// The late options still to send, and when.
struct LatePlan {
    items: VecDeque<Late>,
    /// Data segments sent when the next one is due.
    next_at: u32,
    gap: u32,
}

/// Data segments kept for `--late resend` and `--late tcp-retransmit`.
const RECENT: usize = 8;

/// The client's side of one connection.
struct Conn {
    raw: RawTcp,
    deadline: Instant,
    iss: u32,
    snd_nxt: u32,
    snd_una: u32,
    rcv_nxt: u32,
    /// The listener's latest window.
    snd_wnd: u32,
    local_key: u64,
    remote_key: u64,
    ts: Option<Timestamps>,
    /// Next data sequence number to send.
    dsn_nxt: u64,
    /// The listener's first data sequence number.
    remote_dsn: u64,
    /// Sent and not acknowledged, for retransmission.
    unacked: Vec<Segment>,
    /// What the listener sent, in order.
    answer: Vec<u8>,
    /// Where the listener's DATA_FIN sits in its data sequence space, once announced.
    remote_data_fin: Option<u64>,
    remote_fin: bool,
    /// The listener's data segments with and without a DSS mapping.
    remote_mapped: u32,
    remote_unmapped: u32,
    /// Highest data ACK the listener sent.
    remote_data_ack: u64,
    /// The listener's MPTCP options by subtype, its infinite mappings and ADD_ADDR echoes.
    remote_options: BTreeMap<&'static str, u32>,
    remote_infinite_mappings: u32,
    remote_add_addr_echoes: u32,
    /// The listener's RST, with its MP_TCPRST reason if it carried one.
    remote_reset: Option<Option<u8>>,
    /// A RST from the listener is an answer, not a failure.
    reset_expected: bool,
    late: LatePlan,
    late_sent: Vec<String>,
    data_segments_sent: u32,
    /// Data segments still to send without DSS.
    no_dss_left: u32,
    /// The next data segment carries an infinite mapping.
    infinite_next: bool,
    /// This end sent an infinite mapping: the subflow is plain TCP from here on.
    plain: bool,
    /// A late option ended the connection: nothing more is sent.
    ended: bool,
    /// Address IDs given to ADD_ADDRs so far.
    add_addr_ids: u8,
    /// The last data segments sent with a mapping, each with its data sequence number.
    recent: VecDeque<(Segment, u64)>,
}

impl Conn {
    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The data ACK to send: what the listener sent in order, and its DATA_FIN once reached.
    fn data_ack(&self) -> u64 {
        let next = self.remote_dsn.wrapping_add(self.answer.len() as u64);
        next.wrapping_add((self.remote_data_fin == Some(next)) as u64)
    }

    /// Speaks MPTCP as long as the listener does (once it sends data without a mapping it has
    /// fallen back, and a DSS would mean nothing to it) and this end did not give it up.
    fn mptcp(&self) -> bool {
        self.remote_unmapped == 0 && !self.plain
    }

    fn area(&self, options: &[Vec<u8>]) -> Vec<u8> {
        match &self.ts {
            Some(ts) => opt::area_after_timestamps(ts.option(), options),
            None => opt::area(options),
        }
    }

    /// Sends a segment as it is, with fresh timestamps (a retransmission too).
    fn transmit(&self, seg: &Segment) -> anyhow::Result<()> {
        self.raw.send(seg, &self.area(&seg.options))
    }

    fn send(&mut self, flags: u8, options: Vec<Vec<u8>>, payload: Vec<u8>) -> anyhow::Result<()> {
        let seg =
            Segment { seq: self.snd_nxt, ack: self.rcv_nxt, flags: flags | tcp_flags::ACK, options, payload };
        self.transmit(&seg)?;
        self.snd_nxt = self.snd_nxt.wrapping_add(seg.seq_len());
        if seg.seq_len() > 0 {
            self.unacked.push(seg);
        }
        Ok(())
    }

    fn send_ack(&mut self) -> anyhow::Result<()> {
        let options = if self.mptcp() { vec![opt::dss(self.data_ack(), None)] } else { vec![] };
        self.send(0, options, vec![])
    }

    /// Notes the listener's MPTCP options.
    fn note_options(&mut self, opts: &TcpOptions, payload_len: u32) {
        for o in opts.mptcp_options() {
            *self.remote_options.entry(Subtype::from_code(o.subtype).as_str()).or_default() += 1;
            if o.is_infinite_mapping(payload_len) {
                self.remote_infinite_mappings += 1;
            }
            if o.subtype == subtype::ADD_ADDR && o.flags & ADD_ADDR_ECHO != 0 {
                self.remote_add_addr_echoes += 1;
            }
        }
    }

    /// Takes in one segment of the listener's; true when it asks for an ACK.
    fn absorb(&mut self, r: &Received) -> anyhow::Result<bool> {
        let opts = r.options();
        self.note_options(&opts, r.payload.len() as u32);
        if r.tcp.rst {
            let reason = opts.find(subtype::MP_TCPRST).map(|o| o.reason);
            self.remote_reset = Some(reason);
            if self.reset_expected {
                return Ok(false);
            }
            bail!(
                "the listener reset the connection (seq {}, MP_TCPRST reason {reason:?})",
                r.tcp.sequence_number
            );
        }
        if let Some(ts) = self.ts.as_mut().filter(|_| opts.flags & opt_flags::TIMESTAMPS != 0) {
            ts.recent = opts.ts_val;
        }
        if r.tcp.ack {
            self.snd_wnd = r.tcp.window_size as u32;
        }
        if r.tcp.ack && seq_after(r.tcp.acknowledgment_number, self.snd_una) {
            self.snd_una = r.tcp.acknowledgment_number;
            let una = self.snd_una;
            self.unacked.retain(|s| seq_after(s.seq.wrapping_add(s.seq_len()), una));
        }
        let dss = opts.find(subtype::DSS).copied();
        if let Some(d) = dss.filter(|d| d.flags & dss::DATA_ACK != 0) {
            self.remote_data_ack = self.remote_data_ack.max(d.data_ack);
        }
        let mut ack = false;
        if !r.payload.is_empty() {
            ack = true;
            if r.tcp.sequence_number == self.rcv_nxt {
                self.answer.extend_from_slice(&r.payload);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(r.payload.len() as u32);
                if dss.is_some_and(|d| d.flags & dss::MAPPING != 0) {
                    self.remote_mapped += 1;
                } else {
                    self.remote_unmapped += 1;
                }
            }
        }
        if let Some(d) = dss.filter(|d| d.flags & dss::DATA_FIN != 0 && d.flags & dss::MAPPING != 0) {
            // Linux always sends 8-byte DSNs; a 4-byte one is taken within the current 2^32.
            let dsn = if d.flags & dss::DSN_8 != 0 { d.dsn } else { self.remote_dsn & !0xffff_ffff | d.dsn };
            let at = dsn.wrapping_add(d.data_len as u64).wrapping_sub(1);
            ack |= self.remote_data_fin.replace(at) != Some(at);
        }
        let fin_seq = r.tcp.sequence_number.wrapping_add(r.payload.len() as u32);
        if r.tcp.fin {
            // A FIN again (its ACK was lost) is acknowledged again.
            if fin_seq == self.rcv_nxt {
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                self.remote_fin = true;
            }
            ack = true;
        }
        Ok(ack)
    }

    /// Receives for up to `wait`, acknowledging what needs it; true once `done` holds.
    fn pump(&mut self, wait: Duration, done: impl Fn(&Self) -> bool) -> anyhow::Result<bool> {
        let until = Instant::now() + wait;
        while !done(self) && Instant::now() < until && !self.expired() {
            if let Some(r) = self.raw.recv()? {
                if self.absorb(&r)? && !self.ended {
                    self.send_ack()?;
                }
            }
        }
        Ok(done(self))
    }

    fn in_flight(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una)
    }

    /// Waits until at most `limit` bytes are in flight, sending the unacknowledged segments
    /// again after each RTO.
    fn wait_in_flight(&mut self, limit: u32) -> anyhow::Result<()> {
        for _ in 0..=RETRANSMISSIONS {
            if self.pump(RTO, |c| c.in_flight() <= limit)? {
                return Ok(());
            }
            for seg in &self.unacked {
                self.transmit(&Segment { ack: self.rcv_nxt, ..seg.clone() })?;
            }
        }
        bail!("the listener did not acknowledge up to seq {} (acknowledged {})", self.snd_nxt, self.snd_una)
    }

    /// Waits until everything sent is acknowledged.
    fn wait_acked(&mut self) -> anyhow::Result<()> {
        self.wait_in_flight(0)
    }

    /// Sends `data` in segments, each with its mapping (the last with DATA_FIN if asked), never
    /// more in flight than the listener's window; sends the late options as they fall due.
    fn send_data(&mut self, data: &[u8], data_fin: bool) -> anyhow::Result<()> {
        let pieces: Vec<&[u8]> = data.chunks(SEGMENT_BYTES).collect();
        for (i, piece) in pieces.iter().enumerate() {
            self.send_due_late()?;
            if self.ended {
                return Ok(());
            }
            let window = self.snd_wnd.min(MAX_IN_FLIGHT).max(SEGMENT_BYTES as u32);
            self.wait_in_flight(window - piece.len() as u32)?;
            let fin = data_fin && i + 1 == pieces.len();
            let mut m = opt::Mapping {
                dsn: self.dsn_nxt,
                ssn: self.snd_nxt.wrapping_sub(self.iss),
                len: piece.len() as u16 + fin as u16,
                data_fin: fin,
            };
            self.dsn_nxt = self.dsn_nxt.wrapping_add(m.len as u64);
            let options = if self.plain {
                vec![]
            } else if self.no_dss_left > 0 {
                self.no_dss_left -= 1;
                vec![]
            } else if self.infinite_next {
                // RFC 8684 section 3.7: data-level length 0, subflow sequence number 0.
                (m.len, m.ssn, m.data_fin) = (0, 0, false);
                self.infinite_next = false;
                self.plain = true;
                vec![opt::dss(self.data_ack(), Some(&m))]
            } else {
                vec![opt::dss(self.data_ack(), Some(&m))]
            };
            let mapped = !options.is_empty() && !self.plain;
            self.send(tcp_flags::PSH, options, piece.to_vec())?;
            self.data_segments_sent += 1;
            if let Some(seg) = self.unacked.last().filter(|_| mapped) {
                if self.recent.len() == RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back((seg.clone(), m.dsn));
            }
        }
        self.wait_acked()
    }

    /// A mapping of data-level length 0 at the current position, on a segment without payload.
    fn send_empty_mapping(&mut self, flags: u8) -> anyhow::Result<()> {
        let m = opt::Mapping {
            dsn: self.dsn_nxt,
            ssn: self.snd_nxt.wrapping_sub(self.iss),
            len: 0,
            data_fin: false,
        };
        self.send(flags, vec![opt::dss(self.data_ack(), Some(&m))], vec![])
    }

    /// Sends the late options due after the data segments sent so far.
    fn send_due_late(&mut self) -> anyhow::Result<()> {
        while !self.ended && self.late.next_at == self.data_segments_sent {
            let Some(late) = self.late.items.pop_front() else { return Ok(()) };
            self.late.next_at = self.data_segments_sent + late.data_segments() + self.late.gap;
            self.send_late(&late)?;
            self.late_sent.push(late.name());
        }
        Ok(())
    }

    /// A pure ACK with the data ACK and `option`.
    fn send_ack_with(&mut self, option: Vec<u8>) -> anyhow::Result<()> {
        self.send(0, vec![opt::dss(self.data_ack(), None), option], vec![])
    }

    fn send_late(&mut self, late: &Late) -> anyhow::Result<()> {
        match late {
            Late::NoDss(n) => self.no_dss_left = *n,
            Late::InfiniteMapping => self.infinite_next = true,
            Late::MpFail => {
                self.send_ack_with(opt::mp_fail(self.data_ack()))?;
                self.pump(ANSWER_WAIT, |c| c.remote_options.contains_key(Subtype::MpFail.as_str()))?;
            }
            Late::MpFastclose => {
                self.reset_expected = true;
                self.send_ack_with(opt::mp_fastclose(self.remote_key))?;
                self.ended = true;
                self.pump(FASTCLOSE_WAIT, |c| c.remote_reset.is_some())?;
            }
            Late::MpTcpRst(reason) => {
                // At the listener's next expected sequence number, so it takes the RST at once.
                self.wait_acked()?;
                self.reset_expected = true;
                self.send(tcp_flags::RST, vec![opt::mp_tcprst(*reason)], vec![])?;
                self.ended = true;
                self.pump(ANSWER_WAIT, |_| false)?;
            }
            Late::AddAddr { addr, valid_hmac } => {
                self.add_addr_ids += 1;
                let id = self.add_addr_ids;
                let hmac = add_addr_hmac(self.local_key, self.remote_key, id, *addr, 0);
                let hmac = if *valid_hmac { hmac } else { !hmac };
                let echoes = self.remote_add_addr_echoes;
                self.send_ack_with(opt::add_addr_v4(id, *addr, hmac))?;
                self.pump(ANSWER_WAIT, |c| c.remote_add_addr_echoes > echoes)?;
            }
            Late::RemoveAddr(id) => self.send_ack_with(opt::remove_addr(*id))?,
            Late::Resend(n) => {
                // The listener has taken the data in before it comes again.
                self.wait_acked()?;
                let again: Vec<(Vec<u8>, u64)> = self
                    .recent
                    .iter()
                    .rev()
                    .take(*n as usize)
                    .rev()
                    .map(|(seg, dsn)| (seg.payload.clone(), *dsn))
                    .collect();
                for (payload, dsn) in again {
                    let m = opt::Mapping {
                        dsn,
                        ssn: self.snd_nxt.wrapping_sub(self.iss),
                        len: payload.len() as u16,
                        data_fin: false,
                    };
                    self.send(tcp_flags::PSH, vec![opt::dss(self.data_ack(), Some(&m))], payload)?;
                }
                self.wait_acked()?;
            }
            Late::TcpRetransmit(n) => {
                let again: Vec<Segment> = self
                    .recent
                    .iter()
                    .rev()
                    .take(*n as usize)
                    .rev()
                    .map(|(seg, _)| Segment { ack: self.rcv_nxt, ..seg.clone() })
                    .collect();
                for seg in &again {
                    self.transmit(seg)?;
                }
            }
            Late::Pause(file) => {
                self.wait_acked()?;
                eprintln!(
                    "paused after {} data segments until {} exists",
                    self.data_segments_sent,
                    file.display()
                );
                while !file.exists() {
                    if self.expired() {
                        bail!("{} did not appear before the time limit", file.display());
                    }
                    self.pump(RECV_POLL, |_| false)?;
                }
            }
        }
        Ok(())
    }
}

/// Opens the connection up to the third ACK.
fn handshake(cli: &Cli, raw: RawTcp, deadline: Instant) -> anyhow::Result<Conn> {
    let iss = random_u64()? as u32;
    let local_key = random_u64()?;
    let ts =
        cli.timestamps.then(|| Timestamps { start: Instant::now(), offset: iss.rotate_left(7), recent: 0 });
    let mut syn_options = vec![opt::mss(), opt::mp_capable_syn()];
    let syn_area = match &ts {
        Some(ts) => {
            syn_options.extend([vec![TCPOPT_NOP, TCPOPT_NOP], ts.option()]);
            opt::area(&syn_options)
        }
        None => opt::area(&syn_options),
    };
    let syn = Segment { seq: iss, ack: 0, flags: tcp_flags::SYN, options: vec![], payload: vec![] };
    let mut synack = None;
    'tries: for _ in 0..SYN_TRIES {
        raw.send(&syn, &syn_area)?;
        let until = Instant::now() + SYN_WAIT;
        while Instant::now() < until && Instant::now() < deadline {
            match raw.recv()? {
                Some(r) if r.tcp.rst => bail!("the listener answered the SYN with a RST"),
                Some(r) if r.tcp.syn && r.tcp.ack && r.tcp.acknowledgment_number == iss.wrapping_add(1) => {
                    synack = Some(r);
                    break 'tries;
                }
                _ => {}
            }
        }
    }
    let synack = synack.with_context(|| format!("no SYN/ACK from {} after {SYN_TRIES} SYNs", cli.connect))?;
    let remote_key = synack
        .mp_capable_key()
        .context("the SYN/ACK carries no MP_CAPABLE: the listener does not speak MPTCP")?;
    let synack_opts = synack.options();
    let ts = ts.and_then(|mut ts| {
        // Timestamps only if the listener answered with them.
        (synack_opts.flags & opt_flags::TIMESTAMPS != 0).then(|| {
            ts.recent = synack_opts.ts_val;
            ts
        })
    });
    if cli.timestamps && ts.is_none() {
        bail!("the listener did not answer the SYN's timestamps (net.ipv4.tcp_timestamps?)");
    }
    let mut plan =
        LatePlan { items: cli.late.iter().cloned().collect(), next_at: cli.late_after, gap: cli.late_gap };
    if plan.items.is_empty() {
        plan.next_at = u32::MAX;
    }
    let mut conn = Conn {
        raw,
        deadline,
        iss,
        snd_nxt: iss.wrapping_add(1),
        snd_una: iss.wrapping_add(1),
        rcv_nxt: synack.tcp.sequence_number.wrapping_add(1),
        snd_wnd: synack.tcp.window_size as u32,
        local_key,
        remote_key,
        ts,
        dsn_nxt: idsn(local_key).wrapping_add(1),
        remote_dsn: idsn(remote_key).wrapping_add(1),
        unacked: vec![],
        answer: vec![],
        remote_data_fin: None,
        remote_fin: false,
        remote_mapped: 0,
        remote_unmapped: 0,
        remote_data_ack: 0,
        remote_options: BTreeMap::new(),
        remote_infinite_mappings: 0,
        remote_add_addr_echoes: 0,
        remote_reset: None,
        reset_expected: false,
        late: plan,
        late_sent: vec![],
        data_segments_sent: 0,
        no_dss_left: 0,
        infinite_next: false,
        plain: false,
        ended: false,
        add_addr_ids: 0,
        recent: VecDeque::new(),
    };
    let mpc = opt::mp_capable_ack(cli.third_ack_version, cli.third_ack_flags, conn.local_key, remote_key);
    conn.send(0, vec![mpc], vec![])?;
    Ok(conn)
}

fn run(cli: &Cli) -> anyhow::Result<serde_json::Value> {
    if cli.bytes > MAX_BYTES {
        bail!("--bytes {} is more than this client sends ({MAX_BYTES} at most)", cli.bytes);
    }
    if let Some(i) = cli.late.iter().position(Late::ends) {
        if i + 1 < cli.late.len() {
            bail!("--late {} ends the connection: nothing can come after it", cli.late[i].name());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(cli.timeout);
    let raw = RawTcp::open(cli.local, cli.connect)?;
    let mut c = handshake(cli, raw, deadline)?;
    let data: Vec<u8> = (0..cli.bytes).map(|i| (i * 7 + i / 251) as u8).collect();
    let (first, rest) = data.split_at(data.len() / 2);
    c.send_data(first, false)?;
    let mut empty_mappings = 0;
    if cli.empty_mapping && !c.ended {
        c.send_empty_mapping(0)?;
        c.send_empty_mapping(tcp_flags::PSH)?;
        empty_mappings = 2;
    }
    c.send_data(rest, !cli.keep_open)?;
    if let Some(late) = c.late.items.front().filter(|_| !c.ended) {
        bail!(
            "the data ran out ({} segments) before --late {} was due: more --bytes",
            c.data_segments_sent,
            late.name()
        );
    }
    let mut closed = false;
    if !cli.keep_open && !c.ended {
        let options = if c.mptcp() { vec![opt::dss(c.data_ack(), None)] } else { vec![] };
        c.send(tcp_flags::FIN, options, vec![])?;
        closed = c.pump(Duration::from_secs(cli.timeout), |c| c.remote_fin && c.snd_una == c.snd_nxt)?;
    }
    let answer = String::from_utf8_lossy(&c.answer).into_owned();
    let expected = format!("{} {:016x}", data.len(), digest(&data));
    Ok(serde_json::json!({
        "local_port": cli.local.port(),
        "remote_key": format!("{:016x}", c.remote_key),
        "sent": data.len(),
        "data_segments_sent": c.data_segments_sent,
        "timestamps": c.ts.is_some(),
        "empty_mappings_sent": empty_mappings,
        "late_sent": c.late_sent,
        "answer": answer,
        "intact": answer == expected,
        // The listener acknowledged every data byte (and the DATA_FIN) at the data level.
        "data_acked": c.remote_data_ack == c.dsn_nxt,
        "remote_mapped_segments": c.remote_mapped,
        "remote_unmapped_segments": c.remote_unmapped,
        "remote_data_fin": c.remote_data_fin.is_some(),
        "remote_options": c.remote_options,
        "remote_infinite_mappings": c.remote_infinite_mappings,
        "remote_add_addr_echoes": c.remote_add_addr_echoes,
        "remote_reset": c.remote_reset.map(|reason| serde_json::json!({"mp_tcprst_reason": reason})),
        "closed": closed,
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report =
        run(&cli).with_context(|| format!("foreign MPTCP client {} -> {}", cli.local, cli.connect))?;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_fips_examples() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            hex(sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        // Test case 2.
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn options_are_laid_out_as_rfc_8684_says() {
        assert_eq!(opt::mp_capable_syn(), [30, 4, 0x01, 0x01]);
        let ack = opt::mp_capable_ack(0, 0x41, 1, 2);
        assert_eq!(&ack[..4], [30, 20, 0x00, 0x41]);
        assert_eq!(opt::dss(7, None).len(), 12);
        let m = opt::Mapping { dsn: 1, ssn: 1, len: 0, data_fin: false };
        let d = opt::dss(7, Some(&m));
        assert_eq!((d[1], d[2], d[3]), (26, 0x20, 0x0f));
        assert_eq!(opt::area(std::slice::from_ref(&d)).len(), 28);
        assert_eq!(&opt::mp_fail(9)[..4], [30, 12, 0x60, 0]);
        assert_eq!(&opt::mp_fastclose(9)[..4], [30, 12, 0x70, 0]);
        assert_eq!(opt::mp_tcprst(6), [30, 4, 0x80, 6]);
        let add = opt::add_addr_v4(1, Ipv4Addr::new(198, 51, 100, 1), 5);
        assert_eq!((add.len(), &add[..8]), (16, &[30, 16, 0x30, 1, 198, 51, 100, 1][..]));
        assert_eq!(opt::remove_addr(1), [30, 4, 0x40, 1]);
    }

    #[test]
    fn a_data_segment_with_timestamps_is_laid_out_as_linux_lays_it_out() {
        // NOP NOP TS, the 26-byte DSS, NOP NOP: the steady segment the observer's fast path takes.
        let m = opt::Mapping { dsn: 1, ssn: 1, len: 1000, data_fin: false };
        let area = opt::area_after_timestamps(opt::timestamps(1, 2), &[opt::dss(7, Some(&m))]);
        assert_eq!(area.len(), 40);
        assert_eq!(&area[..4], [TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, TIMESTAMP_LEN]);
        assert_eq!(&area[12..14], [TCPOPT_MPTCP, 26]);
        assert_eq!(&area[38..], [TCPOPT_NOP, TCPOPT_NOP]);
        // A pure ACK: NOP NOP TS and the 12-byte DSS, nothing after.
        assert_eq!(opt::area_after_timestamps(opt::timestamps(1, 2), &[opt::dss(7, None)]).len(), 24);
    }

    #[test]
    fn late_kinds_parse() {
        let p = |s: &str| s.parse::<Late>();
        assert_eq!(p("no-dss"), Ok(Late::NoDss(3)));
        assert_eq!(p("no-dss:5"), Ok(Late::NoDss(5)));
        assert_eq!(p("mp-tcprst:6"), Ok(Late::MpTcpRst(6)));
        assert_eq!(p("mp-tcprst:middlebox_interference"), Ok(Late::MpTcpRst(6)));
        assert_eq!(p("remove-addr"), Ok(Late::RemoveAddr(1)));
        assert_eq!(
            p("add-addr-bad-hmac:198.51.100.1"),
            Ok(Late::AddAddr { addr: Ipv4Addr::new(198, 51, 100, 1), valid_hmac: false })
        );
        assert!(p("add-addr").is_err());
        assert!(p("mp-tcprst").is_err());
        assert!(p("bogus").is_err());
        for s in ["no-dss:2", "infinite-mapping", "mp-fail", "mp-fastclose", "mp-tcprst:1", "pause:/x"] {
            assert_eq!(p(s).map(|l| l.name()), Ok(s.to_string()));
        }
    }
}
