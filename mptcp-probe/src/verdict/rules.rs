//! The verdict rules: each a small function from the facts to its findings, applied in the order
//! of [`RULES`]; [`SUPERSEDES`] says which verdict hides which when both are found; the
//! conclusion (`mptcp_ok`, or an unexplained fallback) comes last, over what is left.

use mptcp_probe_model::{End, Finding, Outcome, Packet, Part, Subtype, Verdict};

use super::facts::Facts;

type Rule = fn(&Facts, &mut Vec<Finding>);

/// Whether a rule needs the connection to have come up (the two ends' views to compare).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    CameUp,
}

/// Every rule, in the order its findings are listed.
const RULES: &[(&str, Needs, Rule)] = &[
    ("the path fails plain TCP too", Needs::Nothing, path_broken),
    ("checksum failed at the server", Needs::Nothing, checksum_failed),
    ("MPTCP SYN unanswered or reset", Needs::Nothing, mptcp_syn_unanswered),
    ("MPTCP SYN retried without MPTCP", Needs::CameUp, mptcp_syn_retried),
    ("handshake option stripped", Needs::CameUp, handshake_option_stripped),
    ("first flight reordered", Needs::CameUp, first_flight_reordered),
    ("MP_CAPABLE third ACK never arrived", Needs::CameUp, mptcp_ack_dropped),
    ("ISN rewritten", Needs::CameUp, isn_rewritten),
    ("MSS rewritten", Needs::CameUp, mss_rewritten),
    ("data without DSS at the client", Needs::CameUp, dss_missing_at_client),
    ("data without DSS at the server", Needs::CameUp, dss_missing_at_server),
    ("sent data changed", Needs::CameUp, sent_payload_changed),
    ("resegmented", Needs::CameUp, resegmented),
    ("source rewritten", Needs::CameUp, source_rewritten),
    ("received data changed", Needs::CameUp, received_payload_changed),
    ("join blocked", Needs::CameUp, join_blocked),
    ("ADD_ADDR dropped", Needs::CameUp, add_addr_dropped),
    ("connection re-originated", Needs::CameUp, proxied),
];

/// (winner, loser): when both are found, the loser's findings are dropped. What is dropped is
/// decided on everything the rules found, so the order of the rows does not matter.
pub const SUPERSEDES: &[(Verdict, Verdict)] = &[
    // A re-originated connection has its own SYN, ISN and options by nature.
    (Verdict::Proxied, Verdict::SynOptionStripped),
    (Verdict::Proxied, Verdict::SeqRewritten),
    // Data without DSS after the server found the data changed, or after the handshake already
    // fell back (the third ACK lost its option), is a kernel's fallback speaking, not a
    // middlebox stripping DSS.
    (Verdict::PayloadModified, Verdict::DssStripped),
    (Verdict::AckOptionStripped, Verdict::DssStripped),
    // A fallback the path's reordering explains is no middlebox's doing.
    (Verdict::HandshakeReordered, Verdict::AckOptionStripped),
    (Verdict::HandshakeReordered, Verdict::DssStripped),
];

/// The findings of every rule, with superseded ones removed and the conclusion added.
pub fn findings(facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    if facts.e.skipped {
        return out;
    }
    for (_, needs, rule) in RULES {
        if *needs == Needs::Nothing || facts.came_up {
            rule(facts, &mut out);
        }
    }
    let found: Vec<Verdict> = out.iter().map(|f| f.verdict).collect();
    out.retain(|f| !SUPERSEDES.iter().any(|(winner, loser)| *loser == f.verdict && found.contains(winner)));
    if facts.came_up {
        conclude(facts, &mut out);
    }
    out
}

fn opt(s: Option<Subtype>) -> String {
    s.map(Subtype::rfc_name).unwrap_or_else(|| "no MPTCP option".into())
}

fn short(d: &str) -> &str {
    &d[..d.len().min(16)]
}

/// A DSS checksum failed at the server: the data were changed in flight. The kernels say so
/// (checksums on) with DataCsumErr at the server and MP_FAIL to the client, whether the
/// connection then fell back or stalled.
fn checksum_failed(f: &Facts, out: &mut Vec<Finding>) {
    let (errors, mp_fail) = (f.server_mib("DataCsumErr"), f.mib("MPFailRx"));
    let seen = if errors > 0 {
        format!("the server's kernel counted {errors} DSS checksum error(s) (DataCsumErr)")
    } else if mp_fail > 0 {
        format!("the server signalled a DSS checksum failure (MP_FAIL received {mp_fail} time(s))")
    } else {
        return;
    };
    out.push(Finding::new(
        Verdict::PayloadModified,
        Packet::Part(Part::Data),
        End::Server,
        "data matching its DSS checksum",
        seen,
    ));
}

/// The test fails over plain TCP as well: the path is broken for any TCP (a PMTU black hole, a
/// dead route), which is no MPTCP finding.
fn path_broken(f: &Facts, out: &mut Vec<Finding>) {
    let failed = f.e.outcome.is_some_and(|o| o != Outcome::Ok);
    let seen = if f.e.plain_tcp && failed {
        format!("the plain-TCP run ended with {}", f.e.outcome.map(Outcome::as_str).unwrap_or("an error"))
    } else if !f.e.plain_tcp && failed && f.e.tcp_ok == Some(false) {
        format!(
            "the MPTCP run ended with {} and the plain-TCP run failed as well",
            f.e.outcome.map(Outcome::as_str).unwrap_or("an error")
        )
    } else {
        return;
    };
    out.push(Finding::new(
        Verdict::PathBroken,
        Packet::Connection,
        End::Client,
        "the test completing over plain TCP",
        seen,
    ));
}

/// Where the MP_CAPABLE SYNs were lost, when the server's counters say they arrived: then its
/// SYN/ACKs were.
fn unanswered_syn(f: &Facts, packet_lost: &str) -> (Verdict, Packet, String) {
    if f.mpc_syns_at_server > 0 {
        let seen = format!(
            "{packet_lost}; the server's kernel received {} SYN(s) with MP_CAPABLE (MPCapableSYNRX) and \
             answered them: its SYN/ACKs were lost on the way",
            f.mpc_syns_at_server
        );
        (Verdict::MptcpSynackDropped, Packet::SynAck, seen)
    } else {
        (Verdict::MptcpSynDropped, Packet::Syn, packet_lost.to_string())
    }
}

/// The connection did not come up over MPTCP although plain TCP works, and no SYN/ACK answered.
fn mptcp_syn_unanswered(f: &Facts, out: &mut Vec<Finding>) {
    if f.e.tcp_ok != Some(true) || f.synack_mpc {
        return;
    }
    let (verdict, packet, seen) = match f.e.outcome {
        Some(Outcome::Timeout) => unanswered_syn(f, "no answer within the timeout"),
        Some(Outcome::Reset | Outcome::Refused) => (Verdict::MptcpReset, Packet::Syn, "a reset".to_string()),
        _ => return,
    };
    out.push(Finding::new(
        verdict,
        packet,
        End::Client,
        "a SYN/ACK to the SYN with MP_CAPABLE, as plain TCP gets",
        seen,
    ));
}

/// SYNs with MP_CAPABLE went unanswered until the kernel retried without MPTCP.
fn mptcp_syn_retried(f: &Facts, out: &mut Vec<Finding>) {
    if !f.syn_retried {
        return;
    }
    let lost = format!(
        "{} SYN(s) with MP_CAPABLE unanswered, then the kernel retried without MPTCP",
        f.e.client_mpc_syns.unwrap_or(0).max(1)
    );
    let (verdict, packet, seen) = unanswered_syn(f, &lost);
    out.push(Finding::new(verdict, packet, End::Client, "an answer to the SYN with MP_CAPABLE", seen));
}

/// What one end sent of the handshake against what the other received.
fn handshake_option_stripped(f: &Facts, out: &mut Vec<Finding>) {
    let Some((c, s)) = f.wires() else { return };
    if f.syn_stripped() {
        out.push(Finding::new(
            Verdict::SynOptionStripped,
            Packet::Syn,
            End::Server,
            format!("{} as the client sent it", opt(c.syn_mptcp)),
            "SYN without MP_CAPABLE",
        ));
    } else if f.synack_stripped() {
        out.push(Finding::new(
            Verdict::SynackOptionStripped,
            Packet::SynAck,
            End::Client,
            format!("{} as the server sent it", opt(s.synack_mptcp)),
            "SYN/ACK without MP_CAPABLE",
        ));
    } else if f.ack_stripped() {
        out.push(Finding::new(
            Verdict::AckOptionStripped,
            Packet::ThirdAck,
            End::Server,
            format!("{} as the client sent it", opt(c.ack_mptcp)),
            "third ACK without MP_CAPABLE",
        ));
    }
}

/// The handshake came up at the client, but the server never had the connection: its kernel
/// received the MP_CAPABLE SYN and answered, then no third ACK with MP_CAPABLE (nor data with its
/// options) reached it, while plain TCP got through. Linux neither falls back nor resets then:
/// the connection stalls.
fn mptcp_ack_dropped(f: &Facts, out: &mut Vec<Finding>) {
    let stalled = f.e.outcome.is_some_and(|o| o != Outcome::Ok) && f.e.tcp_ok == Some(true);
    if !stalled || f.server.is_some() || f.mpc_syns_at_server == 0 || f.mpc_acks_at_server > 0 {
        return;
    }
    let sent = f.client_wire.and_then(|w| w.ack_mptcp).map(Subtype::rfc_name);
    out.push(Finding::new(
        Verdict::MptcpAckDropped,
        Packet::ThirdAck,
        End::Server,
        format!("the third ACK with {} as the client sent it", sent.as_deref().unwrap_or("MP_CAPABLE")),
        format!(
            "the server's kernel received {} MP_CAPABLE SYN(s) (MPCapableSYNRX) and no third ACK with \
             MP_CAPABLE (MPCapableACKRX 0): the connection never came up there",
            f.mpc_syns_at_server
        ),
    ));
}

/// A later segment overtook the third ACK and the first data on the way to the server, which
/// both arrived with MP_CAPABLE intact; Linux falls back then by design (net/mptcp/subflow.c).
fn first_flight_reordered(f: &Facts, out: &mut Vec<Finding>) {
    let Some(offset) = f.first_flight_reordered else { return };
    out.push(Finding::new(
        Verdict::HandshakeReordered,
        Packet::ThirdAck,
        End::Server,
        "the third ACK (or the first data with MP_CAPABLE) first after the SYN/ACK",
        format!(
            "a later data segment (sequence ISN+1+{offset}) arrived first, the MP_CAPABLE third ACK \
             intact after it: the path reordered the first flight and Linux fell back; no option was removed"
        ),
    ));
}

fn isn_rewritten(f: &Facts, out: &mut Vec<Finding>) {
    if let Some((a, b)) = f.isn_rewritten() {
        out.push(Finding::new(
            Verdict::SeqRewritten,
            Packet::Syn,
            End::Both,
            format!("ISN {a} as sent"),
            format!("ISN {b} at the server"),
        ));
    }
}

fn mss_rewritten(f: &Facts, out: &mut Vec<Finding>) {
    if let Some((a, b)) = f.mss_rewritten() {
        out.push(Finding::new(
            Verdict::MssRewritten,
            Packet::Syn,
            End::Both,
            format!("MSS {a} as sent"),
            format!("MSS {b} at the server"),
        ));
    }
}

/// Data arrived at the client without DSS on a connection whose SYN/ACK carried MP_CAPABLE,
/// and not after an MP_FAIL (then it is the server's fallback for changed data).
fn dss_missing_at_client(f: &Facts, out: &mut Vec<Finding>) {
    let n = f.e.client_rx_without_dss.unwrap_or(0);
    let negotiated = f.client_wire.is_some_and(|w| w.synack_mptcp.is_some());
    if n > 0 && negotiated && f.mib("MPFailRx") == 0 {
        out.push(Finding::new(
            Verdict::DssStripped,
            Packet::Part(Part::Data),
            End::Client,
            "DSS on every data segment of the MPTCP connection",
            format!("{n} data segment(s) without DSS"),
        ));
    }
}

/// The server's observer saw the client's data arrive without DSS, on a connection whose
/// handshake completed as MPTCP at the server.
fn dss_missing_at_server(f: &Facts, out: &mut Vec<Finding>) {
    let n = f.server.and_then(|s| s.received_without_dss).unwrap_or(0);
    let negotiated = f.server_wire.is_some_and(|w| w.ack_mptcp_len.unwrap_or(0) > 0);
    if n > 0 && negotiated {
        out.push(Finding::new(
            Verdict::DssStripped,
            Packet::Part(Part::Data),
            End::Server,
            "DSS on every data segment of the MPTCP connection, as the client sends them",
            format!("{n} data segment(s) without DSS"),
        ));
    }
}

/// What the client sent, against what the server says arrived.
fn sent_payload_changed(f: &Facts, out: &mut Vec<Finding>) {
    let Some(sv) = f.server else { return };
    for (part, digest) in &f.e.sent_digests {
        match sv.digests.get(part) {
            Some(got) if got != digest => out.push(Finding::new(
                Verdict::PayloadModified,
                Packet::Part(*part),
                End::Server,
                format!("SHA-256 {} as sent", short(digest)),
                format!("SHA-256 {} as received", short(got)),
            )),
            _ => {}
        }
    }
}

/// The same bytes arrived in clearly more (a quarter at least), smaller segments, or clearly
/// fewer, larger ones. Only when the byte counts agree within a tenth: a few retransmissions are
/// tolerated, more would blur the counts.
fn resegmented(f: &Facts, out: &mut Vec<Finding>) {
    let (Some(c), Some(r)) = (&f.e.client_sent_segments, f.server.and_then(|s| s.segment_sizes.as_ref()))
    else {
        return;
    };
    let comparable = c.bytes > 0 && c.bytes * 10 <= r.bytes * 11 && r.bytes * 10 <= c.bytes * 11;
    if !comparable {
        return;
    }
    let verdict = if r.count * 4 >= c.count * 5 && r.max < c.max {
        Verdict::SegmentsSplit
    } else if c.count * 4 >= r.count * 5 && r.max > c.max {
        Verdict::SegmentsCoalesced
    } else {
        return;
    };
    out.push(Finding::new(
        verdict,
        Packet::Part(Part::Data),
        End::Server,
        format!("{} segment(s) of at most {} bytes as sent", c.count, c.max),
        format!("{} segment(s) of at most {} bytes", r.count, r.max),
    ));
}

/// The server sees another source than the client's own.
fn source_rewritten(f: &Facts, out: &mut Vec<Finding>) {
    if let Some((l, p)) = f.source_rewritten() {
        out.push(Finding::new(
            Verdict::Nat,
            Packet::Syn,
            End::Server,
            format!("source {l}"),
            format!("source {p}"),
        ));
    }
}

/// What the client received, against what the server says it sent.
fn received_payload_changed(f: &Facts, out: &mut Vec<Finding>) {
    for (part, got, sent) in &f.e.received_digests {
        if got != sent {
            out.push(Finding::new(
                Verdict::PayloadModified,
                Packet::Part(*part),
                End::Client,
                format!("SHA-256 {} as the server sent it", short(sent)),
                format!("SHA-256 {} as received", short(got)),
            ));
        }
    }
}

/// Only when the kernel did send an MP_JOIN SYN: otherwise nothing was blocked.
fn join_blocked(f: &Facts, out: &mut Vec<Finding>) {
    let Some(j) = &f.e.join else { return };
    if f.mptcp_up && j.subflows < 2 && f.mib("MPJoinSynTx") > 0 {
        out.push(Finding::new(
            Verdict::JoinBlocked,
            Packet::MpJoinSyn,
            End::Client,
            format!("a second subflow from {}", j.from),
            format!(
                "{} MP_JOIN SYN(s) sent, {} answered, the connection kept {} subflow(s)",
                f.mib("MPJoinSynTx"),
                f.mib("MPJoinSynAckRx"),
                j.subflows
            ),
        ));
    }
}

/// Only when the server's socket says it announced: otherwise nothing was dropped.
fn add_addr_dropped(f: &Facts, out: &mut Vec<Finding>) {
    let Some(a) = &f.e.add_addr else { return };
    if f.mptcp_up && a.accepted == 0 && f.mib("AddAddr") == 0 && a.server_signalled.unwrap_or(0) > 0 {
        out.push(Finding::new(
            Verdict::AddAddrDropped,
            Packet::AddAddr,
            End::Client,
            format!("ADD_ADDR for {} as the server sent it", a.announced.join(", ")),
            "no ADD_ADDR arrived",
        ));
    }
}

/// A box on the path terminated the handshake and opened its own towards the server: a
/// transparent proxy (the server sees another SYN: another ISN, from another source; over MPTCP
/// also without MP_CAPABLE while the client gets a SYN/ACK without it at once; for plain TCP both
/// ends' ISNs differ, where a sequence randomiser changes one side only), or a SYN proxy (the
/// client's SYN/ACK came with another ISN than the server's, and the server's SYN echoes a
/// timestamp, which a connection's first SYN never does).
fn proxied(f: &Facts, out: &mut Vec<Finding>) {
    let seen = if f.synack_isn_rewritten() && f.syn_reoriginated {
        "a SYN that echoes a timestamp (re-originated after the client's handshake was answered on the path) \
         and another SYN/ACK than the server's: a SYN proxy"
    } else if f.isn_rewritten().is_some() && f.source_rewritten().is_some() {
        let mptcp_proxied = f.syn_stripped() && f.client_wire.is_some_and(|w| w.synack_mptcp.is_none());
        if mptcp_proxied {
            "another SYN: no MP_CAPABLE, another ISN and source: the connection was re-originated"
        } else if f.synack_isn_rewritten() {
            "another SYN (another ISN and source) and another SYN/ACK: the connection was re-originated"
        } else {
            return;
        }
    } else {
        return;
    };
    out.push(Finding::new(
        Verdict::Proxied,
        Packet::Syn,
        End::Both,
        "the client's SYN (options, ISN, source) at the server",
        seen,
    ));
}

/// With no problem found: MPTCP established end to end is `mptcp_ok`; a fallback, or an MPTCP
/// connection that came up and then did not complete while plain TCP did, is an unexplained one.
fn conclude(f: &Facts, out: &mut Vec<Finding>) {
    if out.iter().any(|x| x.verdict.is_problem()) {
        return;
    }
    if f.mptcp_up && f.e.outcome != Some(Outcome::Ok) {
        if f.e.tcp_ok == Some(true) {
            out.push(Finding::new(
                Verdict::UnknownFallback,
                Packet::Connection,
                End::Client,
                "the test completing over MPTCP, as it does over plain TCP",
                format!(
                    "the MPTCP connection was established, then the test ended with {}",
                    f.e.outcome.map(Outcome::as_str).unwrap_or("an error")
                ),
            ));
        }
    } else if f.mptcp_up {
        out.push(Finding::new(
            Verdict::MptcpOk,
            Packet::Connection,
            End::Both,
            "MPTCP established end to end",
            "MPTCP established end to end",
        ));
    } else if f.fell_back && !out.iter().any(|x| x.verdict.is_path_condition()) {
        out.push(Finding::new(
            Verdict::UnknownFallback,
            Packet::Connection,
            End::Client,
            "MPTCP established",
            format!(
                "fallback to TCP{}",
                f.fallback_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_named_once_and_no_verdict_supersedes_itself() {
        let mut names: Vec<&str> = RULES.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
        assert!(SUPERSEDES.iter().all(|(w, l)| w != l));
        // Nothing supersedes what supersedes it.
        assert!(SUPERSEDES.iter().all(|(w, l)| !SUPERSEDES.contains(&(*l, *w))));
    }
}
