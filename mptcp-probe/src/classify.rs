//! Names the middlebox behaviour behind a test's outcome from what both ends saw. Every verdict
//! comes with a finding (which packet, which end, what was expected, what was seen); where the
//! evidence for a verdict is missing, the verdict is not claimed.

use serde::{Deserialize, Serialize};

use crate::proto::{ConnectionView, HandshakeView, SegmentStats};

/// The verdicts of the report contract (stable names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    MptcpOk,
    SynOptionStripped,
    SynackOptionStripped,
    AckOptionStripped,
    DssStripped,
    MptcpSynDropped,
    MptcpReset,
    PayloadModified,
    SeqRewritten,
    MssRewritten,
    SegmentsSplit,
    SegmentsCoalesced,
    Proxied,
    JoinBlocked,
    AddAddrDropped,
    Nat,
    UnknownFallback,
}

impl Verdict {
    #[cfg(test)]
    pub const ALL: [Verdict; 17] = [
        Verdict::MptcpOk,
        Verdict::SynOptionStripped,
        Verdict::SynackOptionStripped,
        Verdict::AckOptionStripped,
        Verdict::DssStripped,
        Verdict::MptcpSynDropped,
        Verdict::MptcpReset,
        Verdict::PayloadModified,
        Verdict::SeqRewritten,
        Verdict::MssRewritten,
        Verdict::SegmentsSplit,
        Verdict::SegmentsCoalesced,
        Verdict::Proxied,
        Verdict::JoinBlocked,
        Verdict::AddAddrDropped,
        Verdict::Nat,
        Verdict::UnknownFallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::MptcpOk => "mptcp_ok",
            Verdict::SynOptionStripped => "syn_option_stripped",
            Verdict::SynackOptionStripped => "synack_option_stripped",
            Verdict::AckOptionStripped => "ack_option_stripped",
            Verdict::DssStripped => "dss_stripped",
            Verdict::MptcpSynDropped => "mptcp_syn_dropped",
            Verdict::MptcpReset => "mptcp_reset",
            Verdict::PayloadModified => "payload_modified",
            Verdict::SeqRewritten => "seq_rewritten",
            Verdict::MssRewritten => "mss_rewritten",
            Verdict::SegmentsSplit => "segments_split",
            Verdict::SegmentsCoalesced => "segments_coalesced",
            Verdict::Proxied => "proxied",
            Verdict::JoinBlocked => "join_blocked",
            Verdict::AddAddrDropped => "add_addr_dropped",
            Verdict::Nat => "nat",
            Verdict::UnknownFallback => "unknown_fallback",
        }
    }

    /// Verdicts that say MPTCP does not work as it should on the path. The others are
    /// informative: path properties MPTCP is built to survive (NAT, MSS clamping, sequence
    /// rewriting, resegmentation), reported next to `mptcp_ok` when the connection stayed MPTCP.
    pub fn is_problem(self) -> bool {
        !matches!(
            self,
            Verdict::MptcpOk
                | Verdict::Nat
                | Verdict::MssRewritten
                | Verdict::SeqRewritten
                | Verdict::SegmentsSplit
                | Verdict::SegmentsCoalesced
        )
    }
}

/// Why a verdict was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub verdict: Verdict,
    /// The packet or data the evidence is about ("SYN", "SYN/ACK", "third ACK", "data", ...).
    pub packet: String,
    /// Where it was seen: "client", "server" or "both".
    pub end: String,
    pub expected: String,
    pub seen: String,
}

fn finding(
    verdict: Verdict,
    packet: &str,
    end: &str,
    expected: impl Into<String>,
    seen: impl Into<String>,
) -> Finding {
    Finding { verdict, packet: packet.into(), end: end.into(), expected: expected.into(), seen: seen.into() }
}

/// How the MPTCP test connection ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    Refused,
    Reset,
}

/// Everything known about one MPTCP test connection (the first connection of the test).
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub outcome: Option<Outcome>,
    /// The same test over plain TCP worked.
    pub tcp_ok: Option<bool>,
    pub client: ConnectionView,
    /// The client's observer: the handshake as sent and received here.
    pub client_wire: Option<HandshakeView>,
    /// SYNs this client sent with MP_CAPABLE for the connection (retries included).
    pub client_mpc_syns: Option<u32>,
    /// Data segments with no DSS on the negotiated connection, received / sent by the client.
    pub client_rx_without_dss: Option<u32>,
    /// Data segments the client sent on the connection, as on the wire (observer).
    pub client_sent_segments: Option<SegmentStats>,
    /// The server's view of the same connection (None: the server did not see it).
    pub server: Option<ConnectionView>,
    /// Digests the client computed of what it sent, by part (compared with the server's).
    pub sent_digests: Vec<(String, String)>,
    /// Digests the client computed of what it received, with what the server says it sent.
    pub received_digests: Vec<(String, String, String)>,
    /// Kernel MPTcpExt counters that moved on the client during the test.
    pub mib_delta: std::collections::BTreeMap<String, u64>,
    /// The same on the server, as it reports them (empty: not known).
    pub server_mib_delta: std::collections::BTreeMap<String, u64>,
    /// The join test: a second subflow through another local address.
    pub join: Option<JoinEvidence>,
    /// The add_addr test: the server announces another address.
    pub add_addr: Option<AddAddrEvidence>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinEvidence {
    /// The local address the extra subflow was to come from.
    pub from: String,
    /// The most subflows the connection had.
    pub subflows: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddAddrEvidence {
    /// Addresses the server says it announces.
    pub announced: Vec<String>,
    /// ADD_ADDR the server's socket says it sent (`mptcpi_add_addr_signal`).
    pub server_signalled: Option<u8>,
    /// ADD_ADDR the client's socket accepted.
    pub accepted: u8,
}

/// The verdicts with their findings, and the fallback reason in the kernel's MIB words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    pub findings: Vec<Finding>,
    pub fallback_reason: Option<String>,
}

impl Classification {
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut v: Vec<Verdict> = self.findings.iter().map(|f| f.verdict).collect();
        v.sort();
        v.dedup();
        v
    }
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map(str::to_uppercase).unwrap_or_else(|| "no MPTCP option".into())
}

/// The MIB counter names that name a fallback reason, in the order the kernel bumps them.
const FALLBACK_MIBS: [&str; 8] = [
    "MPCapableSYNTXDrop",
    "MPCapableFallbackSYNACK",
    "MPCapableFallbackACK",
    "MPCapableDataFallback",
    "DSSCorruptionFallback",
    "DssFallback",
    "InfiniteMapTx",
    "MPFallbackTokenInit",
];

pub fn fallback_reason(mib: &std::collections::BTreeMap<String, u64>) -> Option<String> {
    FALLBACK_MIBS.iter().find(|k| mib.get(**k).copied().unwrap_or(0) > 0).map(|k| k.to_string())
}

/// Classifies an MPTCP test connection.
pub fn classify(e: &Evidence) -> Classification {
    let cw = e.client_wire.as_ref();
    let sv = e.server.as_ref();
    let sw = sv.and_then(|s| s.handshake.as_ref());
    let is_mptcp = e.client.is_mptcp == Some(true) && e.client.fallback != Some(true);
    let fell_back = e.client.is_mptcp == Some(false) || e.client.fallback == Some(true);
    // The server's counters include its other clients: they speak for this connection only when
    // it is in trouble itself (did not complete, or fell back at either end).
    let troubled =
        e.outcome != Some(Outcome::Ok) || fell_back || sv.map(|s| s.fallback == Some(true)).unwrap_or(false);
    let no_counters = std::collections::BTreeMap::new();
    let server_counters = if troubled { &e.server_mib_delta } else { &no_counters };
    // The client's own reason first; where only the server fell back, the server's.
    let reason = fallback_reason(&e.mib_delta).or_else(|| fallback_reason(server_counters));
    let mut out = Classification { fallback_reason: reason, ..Default::default() };
    let f = &mut out.findings;

    let mib = |k: &str| e.mib_delta.get(k).copied().unwrap_or(0);
    // The server answered the MP_CAPABLE SYN: whatever went wrong later, the SYN got through.
    let synack_mpc = cw.map(|w| w.synack_mptcp.is_some()).unwrap_or(false) || mib("MPCapableSYNACKRX") > 0;

    let server_mib = |k: &str| server_counters.get(k).copied().unwrap_or(0);
    // A DSS checksum failed at the server: the data were changed in flight. The kernels say so
    // (checksums on) with DataCsumErr at the server and MP_FAIL to the client, whether the
    // connection then fell back or stalled.
    if server_mib("DataCsumErr") > 0 || mib("MPFailRx") > 0 {
        let seen = if server_mib("DataCsumErr") > 0 {
            format!(
                "the server's kernel counted {} DSS checksum error(s) (DataCsumErr)",
                server_mib("DataCsumErr")
            )
        } else {
            format!(
                "the server signalled a DSS checksum failure (MP_FAIL received {} time(s))",
                mib("MPFailRx")
            )
        };
        f.push(finding(Verdict::PayloadModified, "data", "server", "data matching its DSS checksum", seen));
    }

    // The connection did not come up over MPTCP although plain TCP works.
    match e.outcome {
        Some(Outcome::Timeout) if e.tcp_ok == Some(true) && !synack_mpc => {
            f.push(finding(
                Verdict::MptcpSynDropped,
                "SYN",
                "client",
                "a SYN/ACK to the SYN with MP_CAPABLE, as plain TCP gets",
                "no answer within the timeout",
            ));
        }
        Some(Outcome::Reset) | Some(Outcome::Refused) if e.tcp_ok == Some(true) && !synack_mpc => {
            f.push(finding(
                Verdict::MptcpReset,
                "SYN",
                "client",
                "a SYN/ACK to the SYN with MP_CAPABLE, as plain TCP gets",
                "a reset",
            ));
        }
        _ => {}
    }
    // Nothing more to compare for a connection that never came up.
    if e.outcome != Some(Outcome::Ok) && !synack_mpc {
        return out;
    }

    // SYNs with MP_CAPABLE that went unanswered until the kernel retried without MPTCP.
    let syn_retried = e.client_mpc_syns.unwrap_or(0) > 0
        && cw.map(|w| w.syn_mptcp.is_none()).unwrap_or(false)
        || e.mib_delta.get("MPCapableSYNTXDrop").copied().unwrap_or(0) > 0;
    if syn_retried {
        f.push(finding(
            Verdict::MptcpSynDropped,
            "SYN",
            "client",
            "an answer to the SYN with MP_CAPABLE",
            format!(
                "{} SYN(s) with MP_CAPABLE unanswered, then the kernel retried without MPTCP",
                e.client_mpc_syns.unwrap_or(0).max(1)
            ),
        ));
    }

    // Handshake options: compare what one end sent with what the other received.
    let client_sent_mpc = cw.map(|w| w.syn_mptcp.is_some()).unwrap_or(false) && !syn_retried;
    if let (Some(cw), Some(sw)) = (cw, sw) {
        if client_sent_mpc && sw.syn_mptcp.is_none() {
            f.push(finding(
                Verdict::SynOptionStripped,
                "SYN",
                "server",
                format!("{} as the client sent it", opt(&cw.syn_mptcp)),
                "SYN without MP_CAPABLE",
            ));
        } else if sw.syn_mptcp.is_some() && sw.synack_mptcp.is_some() && cw.synack_mptcp.is_none() {
            f.push(finding(
                Verdict::SynackOptionStripped,
                "SYN/ACK",
                "client",
                format!("{} as the server sent it", opt(&sw.synack_mptcp)),
                "SYN/ACK without MP_CAPABLE",
            ));
        } else if cw.synack_mptcp.is_some()
            && cw.ack_mptcp.is_some()
            && sw.ack_mptcp_len == Some(0)
            // The server's socket agrees: MPTCP did not come up there (a reordered third ACK is
            // no strip).
            && sv.map(|s| s.is_mptcp == Some(false) || s.fallback == Some(true)).unwrap_or(true)
        {
            f.push(finding(
                Verdict::AckOptionStripped,
                "third ACK",
                "server",
                format!("{} as the client sent it", opt(&cw.ack_mptcp)),
                "third ACK without MP_CAPABLE",
            ));
        }
        // Sequence numbers, MSS: the same SYN seen at both ends.
        if let (Some(a), Some(b)) = (cw.syn_isn, sw.syn_isn) {
            if a != b {
                f.push(finding(
                    Verdict::SeqRewritten,
                    "SYN",
                    "both",
                    format!("ISN {a} as sent"),
                    format!("ISN {b} at the server"),
                ));
            }
        }
        if let (Some(a), Some(b)) = (cw.syn_mss, sw.syn_mss) {
            if a != b {
                f.push(finding(
                    Verdict::MssRewritten,
                    "SYN",
                    "both",
                    format!("MSS {a} as sent"),
                    format!("MSS {b} at the server"),
                ));
            }
        }
    } else if client_sent_mpc && cw.map(|w| w.synack_mptcp.is_none()).unwrap_or(false) && sv.is_some() {
        // No server-side wire view: the SYN/ACK lacked MP_CAPABLE, but which packet lost it is
        // not known; classified below as an unknown fallback.
    }

    // Data-level evidence on an established connection. Data without DSS after the server found
    // the data changed is its own fallback speaking, not a middlebox stripping options.
    let modified = |f: &Vec<Finding>| f.iter().any(|x| x.verdict == Verdict::PayloadModified);
    if e.client_rx_without_dss.unwrap_or(0) > 0
        && cw.map(|w| w.synack_mptcp.is_some()).unwrap_or(false)
        && mib("MPFailRx") == 0
    {
        f.push(finding(
            Verdict::DssStripped,
            "data",
            "client",
            "DSS on every data segment of the MPTCP connection",
            format!("{} data segment(s) without DSS", e.client_rx_without_dss.unwrap_or(0)),
        ));
    }
    // The other direction: the server's observer saw the client's data arrive without DSS, on a
    // connection whose handshake completed as MPTCP at the server.
    let server_rx_plain = sv.and_then(|s| s.received_without_dss).unwrap_or(0);
    if server_rx_plain > 0 && sw.map(|w| w.ack_mptcp_len.unwrap_or(0) > 0).unwrap_or(false) {
        f.push(finding(
            Verdict::DssStripped,
            "data",
            "server",
            "DSS on every data segment of the MPTCP connection, as the client sends them",
            format!("{server_rx_plain} data segment(s) without DSS"),
        ));
    }
    if let Some(sv) = sv {
        for (part, digest) in &e.sent_digests {
            if let Some(got) = sv.digests.get(part) {
                if got != digest {
                    f.push(finding(
                        Verdict::PayloadModified,
                        part,
                        "server",
                        format!("SHA-256 {} as sent", short(digest)),
                        format!("SHA-256 {} as received", short(got)),
                    ));
                }
            }
        }
        // Resegmentation: the same bytes arrived in clearly more (a quarter at least), smaller
        // segments, or clearly fewer, larger ones. Only when the byte counts agree within a
        // tenth: a few retransmissions are tolerated, more would blur the counts.
        if let (Some(c), Some(r)) = (&e.client_sent_segments, &sv.segment_sizes) {
            let comparable = c.bytes > 0 && c.bytes * 10 <= r.bytes * 11 && r.bytes * 10 <= c.bytes * 11;
            if comparable {
                let expected = format!("{} segment(s) of at most {} bytes as sent", c.count, c.max);
                let seen = format!("{} segment(s) of at most {} bytes", r.count, r.max);
                if r.count * 4 >= c.count * 5 && r.max < c.max {
                    f.push(finding(Verdict::SegmentsSplit, "data", "server", expected, seen));
                } else if c.count * 4 >= r.count * 5 && r.max > c.max {
                    f.push(finding(Verdict::SegmentsCoalesced, "data", "server", expected, seen));
                }
            }
        }
        // NAT: the server sees another source than the client's own.
        if let (Some(local), Some(peer)) = (e.client.local, sv.peer) {
            let (l, p) = (crate::sock::canonical(local), crate::sock::canonical(peer));
            if l != p {
                f.push(finding(Verdict::Nat, "SYN", "server", format!("source {l}"), format!("source {p}")));
            }
        }
    }
    for (part, got, sent) in &e.received_digests {
        if got != sent {
            f.push(finding(
                Verdict::PayloadModified,
                part,
                "client",
                format!("SHA-256 {} as the server sent it", short(sent)),
                format!("SHA-256 {} as received", short(got)),
            ));
        }
    }

    // Data without DSS after the handshake already fell back (the third ACK lost its option) or
    // after the server found the data changed is a kernel's fallback speaking, not a middlebox
    // stripping DSS.
    let ack_stripped = out.findings.iter().any(|x| x.verdict == Verdict::AckOptionStripped);
    if modified(&out.findings) || ack_stripped {
        out.findings.retain(|x| x.verdict != Verdict::DssStripped);
    }
    let f = &mut out.findings;

    // Extra paths.
    if let Some(j) = &e.join {
        // Only when the kernel did send an MP_JOIN SYN: otherwise nothing was blocked.
        if is_mptcp && j.subflows < 2 && mib("MPJoinSynTx") > 0 {
            f.push(finding(
                Verdict::JoinBlocked,
                "MP_JOIN SYN",
                "client",
                format!("a second subflow from {}", j.from),
                format!(
                    "{} MP_JOIN SYN(s) sent, {} answered, the connection kept {} subflow(s)",
                    mib("MPJoinSynTx"),
                    mib("MPJoinSynAckRx"),
                    j.subflows
                ),
            ));
        }
    }
    if let Some(a) = &e.add_addr {
        // Only when the server's socket says it announced: otherwise nothing was dropped.
        if is_mptcp && a.accepted == 0 && mib("AddAddr") == 0 && a.server_signalled.unwrap_or(0) > 0 {
            f.push(finding(
                Verdict::AddAddrDropped,
                "ADD_ADDR",
                "client",
                format!("ADD_ADDR for {} as the server sent it", a.announced.join(", ")),
                "no ADD_ADDR arrived",
            ));
        }
    }

    // A transparent proxy terminates the connection: the server sees a different SYN (no
    // MP_CAPABLE, another ISN) from another source port, and the client gets a SYN/ACK at once
    // without MP_CAPABLE.
    let seq = out.findings.iter().any(|x| x.verdict == Verdict::SeqRewritten);
    let nat = out.findings.iter().any(|x| x.verdict == Verdict::Nat);
    let syn_strip = out.findings.iter().any(|x| x.verdict == Verdict::SynOptionStripped);
    // The same for plain TCP: both ends' ISNs differ (a sequence randomiser changes one side only).
    let synack_isn_differs = match (cw.and_then(|w| w.synack_isn), sw.and_then(|w| w.synack_isn)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    let mptcp_proxied = syn_strip && cw.map(|w| w.synack_mptcp.is_none()).unwrap_or(false);
    if seq && nat && (mptcp_proxied || synack_isn_differs) {
        // A re-originated connection has its own SYN, ISN and options by nature.
        out.findings.retain(|x| !matches!(x.verdict, Verdict::SynOptionStripped | Verdict::SeqRewritten));
        out.findings.push(finding(
            Verdict::Proxied,
            "SYN",
            "both",
            "the client's SYN (options, ISN, source) at the server",
            if mptcp_proxied {
                "another SYN: no MP_CAPABLE, another ISN and source: the connection was re-originated"
            } else {
                "another SYN (another ISN and source) and another SYN/ACK: the connection was re-originated"
            },
        ));
    }

    let problems = out.findings.iter().any(|x| x.verdict.is_problem());
    if is_mptcp && !problems && e.outcome != Some(Outcome::Ok) {
        // Established, then stalled or broken while plain TCP works, with no evidence why.
        if e.tcp_ok == Some(true) {
            out.findings.push(finding(
                Verdict::UnknownFallback,
                "connection",
                "client",
                "the test completing over MPTCP, as it does over plain TCP",
                format!(
                    "the MPTCP connection was established, then the test ended with {}",
                    e.outcome.map(|o| format!("{o:?}").to_lowercase()).unwrap_or_else(|| "an error".into())
                ),
            ));
        }
    } else if is_mptcp && !problems {
        out.findings.push(finding(
            Verdict::MptcpOk,
            "connection",
            "both",
            "MPTCP established end to end",
            "MPTCP established end to end",
        ));
    } else if fell_back && !problems {
        out.findings.push(finding(
            Verdict::UnknownFallback,
            "connection",
            "client",
            "MPTCP established",
            format!(
                "fallback to TCP{}",
                out.fallback_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ));
    }
    out
}

fn short(d: &str) -> &str {
    &d[..d.len().min(16)]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn hs(syn: bool, synack: bool, ack: Option<bool>) -> HandshakeView {
        let m = |b: bool| b.then(|| "mp_capable".to_string());
        HandshakeView {
            source: "observer".into(),
            syn_mptcp: m(syn),
            syn_mptcp_len: syn.then_some(4),
            syn_mss: Some(1460),
            syn_isn: Some(1000),
            syn_ttl: Some(64),
            synack_mptcp: m(synack),
            synack_mptcp_len: synack.then_some(12),
            synack_isn: Some(9000),
            ack_mptcp: ack.and_then(m),
            ack_mptcp_len: ack.map(|a| if a { 20 } else { 0 }),
        }
    }

    fn conn(local: &str, peer: &str, mptcp: bool) -> ConnectionView {
        ConnectionView {
            kind: "bulk".into(),
            local: Some(local.parse().unwrap()),
            peer: Some(peer.parse().unwrap()),
            is_mptcp: Some(mptcp),
            fallback: Some(!mptcp),
            ..Default::default()
        }
    }

    fn clean() -> Evidence {
        let mut server = conn("203.0.113.2:8001", "192.0.2.1:40000", true);
        server.handshake = Some(hs(true, true, Some(true)));
        server.digests.insert("data".into(), "aa".into());
        Evidence {
            outcome: Some(Outcome::Ok),
            tcp_ok: Some(true),
            client: conn("192.0.2.1:40000", "203.0.113.2:8001", true),
            client_wire: Some(hs(true, true, Some(true))),
            client_mpc_syns: Some(1),
            client_rx_without_dss: Some(0),
            server: Some(server),
            sent_digests: vec![("data".into(), "aa".into())],
            ..Default::default()
        }
    }

    fn verdicts(e: &Evidence) -> Vec<&'static str> {
        classify(e).verdicts().into_iter().map(Verdict::as_str).collect()
    }

    #[test]
    fn clean_path_is_mptcp_ok_only() {
        assert_eq!(verdicts(&clean()), vec!["mptcp_ok"]);
    }

    #[test]
    fn syn_stripped_is_named_from_the_servers_syn() {
        let mut e = clean();
        e.client.is_mptcp = Some(false);
        e.client_wire = Some(hs(true, false, Some(false)));
        e.server.as_mut().unwrap().handshake = Some(hs(false, false, Some(false)));
        e.mib_delta = BTreeMap::from([("MPCapableFallbackSYNACK".to_string(), 1)]);
        let c = classify(&e);
        assert_eq!(c.verdicts(), vec![Verdict::SynOptionStripped]);
        assert_eq!(c.fallback_reason.as_deref(), Some("MPCapableFallbackSYNACK"));
        let f = &c.findings[0];
        assert_eq!((f.packet.as_str(), f.end.as_str()), ("SYN", "server"));
        assert_eq!(f.seen, "SYN without MP_CAPABLE");
    }

    #[test]
    fn synack_stripped_is_named_from_the_clients_synack() {
        let mut e = clean();
        e.client.is_mptcp = Some(false);
        e.client_wire = Some(hs(true, false, Some(false)));
        e.server.as_mut().unwrap().handshake = Some(hs(true, true, Some(false)));
        let c = classify(&e);
        assert_eq!(c.verdicts(), vec![Verdict::SynackOptionStripped]);
        assert_eq!(c.findings[0].packet, "SYN/ACK");
        assert_eq!(c.findings[0].end, "client");
    }

    #[test]
    fn third_ack_stripped_is_seen_at_the_server() {
        let mut e = clean();
        e.client.is_mptcp = Some(false);
        let s = e.server.as_mut().unwrap();
        s.handshake = Some(hs(true, true, Some(false)));
        // The server's socket: MPTCP established after all (the ACK with the option was only
        // overtaken on the way in): nothing was stripped.
        let mut reordered = e.clone();
        reordered.client.is_mptcp = Some(true);
        assert_eq!(verdicts(&reordered), vec!["mptcp_ok"]);
        let s = e.server.as_mut().unwrap();
        s.is_mptcp = Some(false);
        s.fallback = Some(true);
        assert_eq!(verdicts(&e), vec!["ack_option_stripped"]);
    }

    #[test]
    fn fallback_without_server_wire_evidence_is_unknown_not_guessed() {
        let mut e = clean();
        e.client.is_mptcp = Some(false);
        e.client_wire = Some(hs(true, false, Some(false)));
        e.server.as_mut().unwrap().handshake = None;
        assert_eq!(verdicts(&e), vec!["unknown_fallback"]);
    }

    #[test]
    fn syn_retried_without_mptcp_is_a_dropped_mptcp_syn() {
        let mut e = clean();
        e.client.is_mptcp = Some(false);
        e.client_mpc_syns = Some(3);
        e.client_wire = Some(hs(false, false, Some(false)));
        e.server.as_mut().unwrap().handshake = Some(hs(false, false, Some(false)));
        e.mib_delta = BTreeMap::from([("MPCapableSYNTXDrop".to_string(), 2)]);
        let c = classify(&e);
        assert_eq!(c.verdicts(), vec![Verdict::MptcpSynDropped]);
        assert!(c.findings[0].seen.contains("3 SYN(s)"), "{:?}", c.findings);
        assert_eq!(c.fallback_reason.as_deref(), Some("MPCapableSYNTXDrop"));
    }

    #[test]
    fn timeout_or_reset_counts_only_when_plain_tcp_works() {
        let mut e = clean();
        // The SYN/ACK never came.
        e.client_wire = Some(hs(true, false, None));
        e.outcome = Some(Outcome::Timeout);
        assert_eq!(verdicts(&e), vec!["mptcp_syn_dropped"]);
        e.outcome = Some(Outcome::Reset);
        assert_eq!(verdicts(&e), vec!["mptcp_reset"]);
        e.tcp_ok = Some(false);
        assert!(verdicts(&e).is_empty(), "the path is down for TCP too: no MPTCP verdict");
    }

    #[test]
    fn changed_digest_isn_mss_and_source_are_each_named() {
        let mut e = clean();
        let s = e.server.as_mut().unwrap();
        s.digests.insert("data".into(), "bb".into());
        s.peer = Some("198.51.100.9:50000".parse().unwrap());
        let mut h = hs(true, true, Some(true));
        h.syn_isn = Some(4242);
        h.syn_mss = Some(1200);
        s.handshake = Some(h);
        assert_eq!(verdicts(&e), vec!["payload_modified", "seq_rewritten", "mss_rewritten", "nat"]);
    }

    #[test]
    fn nat_alone_keeps_mptcp_ok() {
        let mut e = clean();
        e.server.as_mut().unwrap().peer = Some("198.51.100.9:50000".parse().unwrap());
        assert_eq!(verdicts(&e), vec!["mptcp_ok", "nat"]);
    }

    #[test]
    fn a_proxy_is_named_instead_of_its_parts() {
        let mut e = clean();
        e.client.is_mptcp = Some(false);
        e.client_wire = Some(hs(true, false, Some(false)));
        let s = e.server.as_mut().unwrap();
        s.peer = Some("203.0.113.1:41234".parse().unwrap());
        let mut h = hs(false, false, Some(false));
        h.syn_isn = Some(77);
        s.handshake = Some(h);
        let v = verdicts(&e);
        assert!(v.contains(&"proxied"), "{v:?}");
        assert!(!v.contains(&"syn_option_stripped"), "{v:?}");
    }

    #[test]
    fn dss_missing_on_data_is_dss_stripped() {
        let mut e = clean();
        e.client.fallback = Some(true);
        e.client_rx_without_dss = Some(5);
        e.mib_delta = BTreeMap::from([("DssFallback".to_string(), 1)]);
        let c = classify(&e);
        assert_eq!(c.verdicts(), vec![Verdict::DssStripped]);
        assert_eq!(c.fallback_reason.as_deref(), Some("DssFallback"));
    }

    #[test]
    fn established_then_stalled_is_not_a_dropped_syn() {
        let mut e = clean();
        e.outcome = Some(Outcome::Timeout);
        assert_eq!(verdicts(&e), vec!["unknown_fallback"]);
        e.outcome = Some(Outcome::Reset);
        assert_eq!(verdicts(&e), vec!["unknown_fallback"]);
        // ... unless the server says why: its kernel found DSS checksums wrong.
        e.server_mib_delta = BTreeMap::from([("DataCsumErr".to_string(), 2), ("DssFallback".to_string(), 1)]);
        let c = classify(&e);
        assert_eq!(c.verdicts(), vec![Verdict::PayloadModified]);
        assert!(c.findings[0].seen.contains("DataCsumErr"), "{:?}", c.findings);
        // Only the server fell back: its reason is the connection's.
        assert_eq!(c.fallback_reason.as_deref(), Some("DssFallback"));
    }

    #[test]
    fn another_clients_counters_do_not_blame_a_clean_connection() {
        let mut e = clean();
        e.server_mib_delta = BTreeMap::from([("DataCsumErr".to_string(), 1), ("DssFallback".to_string(), 1)]);
        let c = classify(&e);
        assert_eq!(c.verdicts(), vec![Verdict::MptcpOk]);
        assert_eq!(c.fallback_reason, None);
    }

    #[test]
    fn mp_fail_names_a_payload_change_not_a_dss_strip() {
        let mut e = clean();
        e.client.fallback = Some(true);
        e.client_rx_without_dss = Some(3);
        e.mib_delta = BTreeMap::from([("MPFailRx".to_string(), 1), ("DssFallback".to_string(), 1)]);
        assert_eq!(verdicts(&e), vec!["payload_modified"]);
    }

    #[test]
    fn data_without_dss_at_the_server_is_a_dss_strip() {
        let mut e = clean();
        e.client.fallback = Some(true);
        e.server.as_mut().unwrap().received_without_dss = Some(9);
        e.server_mib_delta = BTreeMap::from([("DssFallback".to_string(), 1)]);
        let c = classify(&e);
        assert_eq!(c.verdicts(), vec![Verdict::DssStripped]);
        assert_eq!(c.findings[0].end, "server");
        assert_eq!(c.fallback_reason.as_deref(), Some("DssFallback"));
    }

    #[test]
    fn data_without_dss_after_a_stripped_third_ack_is_the_servers_fallback() {
        let mut e = clean();
        e.client.fallback = Some(true);
        e.client_rx_without_dss = Some(1);
        let s = e.server.as_mut().unwrap();
        s.handshake = Some(hs(true, true, Some(false)));
        s.is_mptcp = Some(false);
        e.mib_delta = BTreeMap::from([("MPCapableDataFallback".to_string(), 1)]);
        assert_eq!(verdicts(&e), vec!["ack_option_stripped"]);
    }

    #[test]
    fn a_proxy_re_originating_plain_tcp_is_named_by_both_isns() {
        let mut e = clean();
        let s = e.server.as_mut().unwrap();
        s.peer = Some("203.0.113.1:50000".parse().unwrap());
        let mut h = hs(true, true, Some(true));
        h.syn_isn = Some(4242);
        h.synack_isn = Some(7777);
        s.handshake = Some(h);
        // Only the client's ISN changed: a randomiser, with NAT; MPTCP still fine.
        let mut one_side = e.clone();
        one_side.server.as_mut().unwrap().handshake.as_mut().unwrap().synack_isn = Some(9000);
        assert_eq!(verdicts(&one_side), vec!["mptcp_ok", "seq_rewritten", "nat"]);
        // Both ISNs differ: the connection was terminated and re-originated.
        assert_eq!(verdicts(&e), vec!["proxied", "nat"]);
    }

    fn segments(count: u64, bytes: u64, max: u32) -> Option<SegmentStats> {
        Some(SegmentStats { count, bytes, max })
    }

    #[test]
    fn resegmentation_is_named_only_when_the_bytes_agree() {
        let mut e = clean();
        e.client_sent_segments = segments(10, 14480, 1448);
        e.server.as_mut().unwrap().segment_sizes = segments(10, 14480, 1448);
        assert_eq!(verdicts(&e), vec!["mptcp_ok"]);
        // MPTCP survives resegmentation by design: informative, next to mptcp_ok.
        e.server.as_mut().unwrap().segment_sizes = segments(20, 14480, 724);
        assert_eq!(verdicts(&e), vec!["mptcp_ok", "segments_split"]);
        e.server.as_mut().unwrap().segment_sizes = segments(5, 14480, 2896);
        assert_eq!(verdicts(&e), vec!["mptcp_ok", "segments_coalesced"]);
        // Retransmissions: more bytes sent than received, counts not comparable.
        e.client_sent_segments = segments(12, 17376, 1448);
        assert_eq!(verdicts(&e), vec!["mptcp_ok"]);
        // A few retransmissions (bytes within a tenth) do not hide a clear split.
        e.client_sent_segments = segments(11, 15928, 1448);
        e.server.as_mut().unwrap().segment_sizes = segments(30, 14480, 500);
        assert_eq!(verdicts(&e), vec!["mptcp_ok", "segments_split"]);
        // ... nor do they make one: one more segment is not a split.
        e.server.as_mut().unwrap().segment_sizes = segments(12, 14480, 1400);
        assert_eq!(verdicts(&e), vec!["mptcp_ok"]);
        // More segments but not smaller ones (e.g. counted differently): no claim.
        e.client_sent_segments = segments(10, 14480, 1448);
        e.server.as_mut().unwrap().segment_sizes = segments(11, 14480, 1448);
        assert_eq!(verdicts(&e), vec!["mptcp_ok"]);
    }

    #[test]
    fn join_blocked_needs_a_join_syn_that_went_unanswered() {
        let mut e = clean();
        e.join = Some(JoinEvidence { from: "198.51.100.1".into(), subflows: 1 });
        assert_eq!(verdicts(&e), vec!["mptcp_ok"], "no MP_JOIN SYN sent: nothing blocked");
        e.mib_delta = BTreeMap::from([("MPJoinSynTx".to_string(), 2)]);
        assert_eq!(verdicts(&e), vec!["join_blocked"]);
        e.join = Some(JoinEvidence { from: "198.51.100.1".into(), subflows: 2 });
        assert_eq!(verdicts(&e), vec!["mptcp_ok"]);
    }

    #[test]
    fn add_addr_dropped_needs_the_server_to_have_announced() {
        let mut e = clean();
        e.add_addr = Some(AddAddrEvidence {
            announced: vec!["203.0.113.3".into()],
            server_signalled: None,
            accepted: 0,
        });
        assert_eq!(verdicts(&e), vec!["mptcp_ok"], "unknown whether the server sent it: no claim");
        e.add_addr = Some(AddAddrEvidence {
            announced: vec!["203.0.113.3".into()],
            server_signalled: Some(1),
            accepted: 0,
        });
        assert_eq!(verdicts(&e), vec!["add_addr_dropped"]);
        e.mib_delta = BTreeMap::from([("AddAddr".to_string(), 1)]);
        assert_eq!(verdicts(&e), vec!["mptcp_ok"], "it arrived, though not accepted");
    }

    #[test]
    fn verdict_names_are_the_contracts() {
        for v in Verdict::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        assert_eq!(Verdict::ALL.len(), 17);
    }
}
