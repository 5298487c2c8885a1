//! Where on the path a change happens (`check --locate`): copies of the test's SYN sent with
//! increasing TTL / hop limit, what each hop's ICMP time-exceeded quote shows of them, and the
//! hop after which a verdict's change first appears.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{Subtype, Verdict};

/// Which probe a trace sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// A SYN with MP_CAPABLE, the options as Linux sends them.
    SynMptcp,
    /// The same SYN without MP_CAPABLE: the baseline for SYNs that carry it being dropped.
    SynPlain,
    /// Copies of the latest data segment of a live MPTCP connection, with the DSS its data
    /// carried: where DSS is stripped from data.
    DataMptcp,
}

impl ProbeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProbeKind::SynMptcp => "SYN with MP_CAPABLE",
            ProbeKind::SynPlain => "SYN without MPTCP",
            ProbeKind::DataMptcp => "data segment with DSS",
        }
    }
}

/// What answered a probe at one TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// ICMP time exceeded (a router on the way), with a quote of the probe.
    TimeExceeded,
    /// ICMP destination unreachable (a router or a firewall), with a quote of the probe.
    Unreachable,
    /// The destination answered the SYN (SYN/ACK): the probe got through.
    SynAck,
    /// The destination (or a box in its name) answered with a RST.
    Reset,
    /// Nothing came back within the wait, after every retry.
    Silent,
}

/// How a field of the probe looked in a hop's quote, compared with what was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quoted {
    /// As sent.
    Intact,
    /// Present, but not as sent.
    Changed,
    /// The quote holds the whole option area and the field is not in it.
    Absent,
    /// The quote is too short to show the field (or there is no quote).
    NotQuoted,
}

/// One hop of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The TTL / hop limit the probe was sent with.
    pub ttl: u8,
    pub answer: Answer,
    /// Who answered (None: no one did).
    pub from: Option<IpAddr>,
    /// Bytes of the probe's TCP header the quote holds (8 from RFC 792 routers).
    pub quoted_tcp_bytes: Option<u16>,
    /// The probe's MPTCP option: MP_CAPABLE in a SYN, DSS in a data segment.
    pub mptcp: Quoted,
    /// The MSS the quote shows.
    pub mss: Option<u16>,
    /// The sequence number the quote shows.
    pub seq: Option<u32>,
    /// Round trip of the answer, in microseconds.
    pub rtt_us: Option<u64>,
}

/// The probe packets of one trace as they left this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The MSS option of a SYN (0: a data segment, which has none).
    pub mss: u16,
    pub mptcp: Option<Subtype>,
    pub mptcp_len: Option<u8>,
    /// Sequence number of the probe sent with TTL 1 (each TTL has its own).
    pub seq: u32,
}

/// Probes with increasing TTL towards one destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub probe: ProbeKind,
    pub destination: SocketAddr,
    pub sent: Sent,
    pub hops: Vec<Hop>,
    /// The destination answered (the TTL at which it did is the last hop's).
    pub reached: bool,
    /// The destination's hop when the trace stops short of it on purpose (data copies, which
    /// must not reach the server): the hop its SYN trace reached it at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_hop: Option<u8>,
}

impl Trace {
    /// The destination's hop: where the trace reached it, or where it is known to be.
    pub fn destination_ttl(&self) -> Option<u8> {
        if self.reached {
            self.hops.last().map(|h| h.ttl)
        } else {
            self.destination_hop
        }
    }
}

/// A hop as a location names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRef {
    pub ttl: u8,
    pub address: Option<IpAddr>,
}

/// Where a verdict's change happens on the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub verdict: Verdict,
    /// The destination port traced: the port of the tests that gave the verdict.
    #[serde(default)]
    pub port: Option<u16>,
    /// The last hop whose quote shows the probe as sent (None: this host).
    pub after: Option<HopRef>,
    /// The first hop whose quote shows the change (None: the server, which saw it).
    pub before: Option<HopRef>,
    /// `after` and `before` are next to each other: the change happens on that one stretch.
    pub exact: bool,
    /// The location in words, or why it cannot be told.
    pub text: String,
}

/// The `locate` section of a report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locate {
    pub traces: Vec<Trace>,
    pub locations: Vec<Location>,
    /// What kept it from running, or what limited it (no raw sockets, rate limits).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Locate {
    /// The location found for a verdict.
    pub fn location(&self, v: Verdict) -> Option<&Location> {
        self.locations.iter().find(|l| l.verdict == v)
    }
}
