//! Scenarios for the verdict rules: each a connection as both ends saw it, and what must be
//! named.

use std::collections::BTreeMap;

use mptcp_probe_model::{
    ConnectionKind, ConnectionView, End, HandshakeView, Outcome, Packet, Part, SegmentStats, Subtype,
    Verdict, ViewSource,
};

use super::*;

fn hs(syn: bool, synack: bool, ack: Option<bool>) -> HandshakeView {
    let m = |b: bool| b.then_some(Subtype::MpCapable);
    HandshakeView {
        source: ViewSource::Observer,
        syn_mptcp: m(syn),
        syn_mptcp_len: syn.then_some(4),
        syn_mss: Some(1460),
        syn_isn: Some(1000),
        syn_ttl: Some(64),
        syn_ts_ecr: Some(0),
        synack_mptcp: m(synack),
        synack_mptcp_len: synack.then_some(12),
        synack_isn: Some(9000),
        ack_mptcp: ack.and_then(m),
        ack_mptcp_len: ack.map(|a| if a { 20 } else { 0 }),
        ack_seq_offset: ack.map(|_| 0),
    }
}

fn conn(local: &str, peer: &str, mptcp: bool) -> ConnectionView {
    ConnectionView {
        kind: ConnectionKind::Bulk,
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
    server.digests.insert(Part::Data, "aa".into());
    Evidence {
        outcome: Some(Outcome::Ok),
        tcp_ok: Some(true),
        client: conn("192.0.2.1:40000", "203.0.113.2:8001", true),
        client_wire: Some(hs(true, true, Some(true))),
        client_mpc_syns: Some(1),
        client_rx_without_dss: Some(0),
        server: Some(server),
        sent_digests: vec![(Part::Data, "aa".into())],
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
    assert_eq!((f.packet, f.end), (Packet::Syn, End::Server));
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
    assert_eq!(c.findings[0].packet, Packet::SynAck);
    assert_eq!(c.findings[0].end, End::Client);
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
    assert_eq!(verdicts(&e), vec!["path_broken"], "the path is down for TCP too: no MPTCP verdict");
}

#[test]
fn changed_digest_isn_mss_and_source_are_each_named() {
    let mut e = clean();
    let s = e.server.as_mut().unwrap();
    s.digests.insert(Part::Data, "bb".into());
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
    assert_eq!(c.findings[0].end, End::Server);
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
    e.add_addr =
        Some(AddAddrEvidence { announced: vec!["203.0.113.3".into()], server_signalled: None, accepted: 0 });
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
fn a_lost_synack_is_told_from_a_lost_syn_by_the_servers_counters() {
    let mut e = clean();
    e.client.is_mptcp = Some(false);
    e.client_mpc_syns = Some(3);
    e.client_wire = Some(hs(false, false, Some(false)));
    e.server.as_mut().unwrap().handshake = Some(hs(false, false, Some(false)));
    e.mib_delta = BTreeMap::from([("MPCapableSYNTXDrop".to_string(), 2)]);
    assert_eq!(verdicts(&e), vec!["mptcp_syn_dropped"], "the server never saw them");
    e.server_mib_delta = BTreeMap::from([("MPCapableSYNRX".to_string(), 3)]);
    let c = classify(&e);
    assert_eq!(c.verdicts(), vec![Verdict::MptcpSynackDropped]);
    assert_eq!(c.findings[0].packet, Packet::SynAck);
    assert!(c.findings[0].seen.contains("received 3 SYN(s) with MP_CAPABLE"), "{:?}", c.findings);
    // No SYN/ACK at all within the timeout, the same.
    let mut t = clean();
    t.client_wire = Some(hs(true, false, None));
    t.outcome = Some(Outcome::Timeout);
    t.server_mib_delta = BTreeMap::from([("MPCapableSYNRX".to_string(), 1)]);
    assert_eq!(verdicts(&t), vec!["mptcp_synack_dropped"]);
}

#[test]
fn a_reordered_first_flight_is_a_path_condition_not_a_stripped_option() {
    let mut e = clean();
    e.client.is_mptcp = Some(false);
    e.mib_delta = BTreeMap::from([("MPCapableDataFallback".to_string(), 1)]);
    let s = e.server.as_mut().unwrap();
    s.is_mptcp = Some(false);
    s.fallback = Some(true);
    let mut h = hs(true, true, Some(true));
    h.ack_seq_offset = Some(1448);
    s.handshake = Some(h);
    let c = classify(&e);
    assert_eq!(c.verdicts(), vec![Verdict::HandshakeReordered]);
    let f = &c.findings[0];
    assert_eq!((f.packet, f.end), (Packet::ThirdAck, End::Server));
    assert!(f.seen.contains("ISN+1+1448"), "{f:?}");
    assert_eq!(c.fallback_reason.as_deref(), Some("MPCapableDataFallback"));
    // The MP_CAPABLE never arrived: that is a strip after all.
    e.server.as_mut().unwrap().handshake.as_mut().unwrap().ack_mptcp = None;
    e.server.as_mut().unwrap().handshake.as_mut().unwrap().ack_mptcp_len = Some(0);
    assert_eq!(verdicts(&e), vec!["ack_option_stripped"]);
}

/// The second bulk connection (down) had its first flight reordered and fell back while the
/// first (up) came up: the client sees the server's data without DSS, and the path is to blame.
#[test]
fn a_reordered_first_flight_on_the_tests_second_connection_is_a_path_condition() {
    let mut e = clean();
    e.mib_delta = BTreeMap::from([("MPCapableDataFallback".to_string(), 1)]);
    e.client_rx_without_dss = Some(1);
    let mut down = conn("203.0.113.2:8001", "192.0.2.1:40001", false);
    down.fallback = Some(true);
    let mut h = hs(true, true, Some(true));
    h.ack_seq_offset = Some(2896);
    down.handshake = Some(h);
    e.server_others = vec![down.clone()];
    // The main connection stayed MPTCP: mptcp_ok, and the path's reordering beside it.
    assert_eq!(classify(&e).verdicts(), vec![Verdict::MptcpOk, Verdict::HandshakeReordered]);
    // The same connection in order, or reordered but still MPTCP: not the path's doing.
    down.handshake.as_mut().unwrap().ack_seq_offset = Some(0);
    e.server_others = vec![down.clone()];
    assert_eq!(classify(&e).verdicts(), vec![Verdict::DssStripped]);
    down.handshake.as_mut().unwrap().ack_seq_offset = Some(2896);
    down.fallback = Some(false);
    down.is_mptcp = Some(true);
    e.server_others = vec![down];
    assert_eq!(classify(&e).verdicts(), vec![Verdict::DssStripped]);
}

#[test]
fn a_path_that_fails_plain_tcp_too_is_broken_not_an_mptcp_finding() {
    let mut e = clean();
    e.outcome = Some(Outcome::Timeout);
    e.tcp_ok = Some(false);
    assert_eq!(verdicts(&e), vec!["path_broken"]);
    let mut plain = clean();
    plain.plain_tcp = true;
    plain.tcp_ok = None;
    plain.outcome = Some(Outcome::Timeout);
    assert!(verdicts(&plain).contains(&"path_broken"), "{:?}", verdicts(&plain));
    // A test that could not run here is judged not at all.
    plain.skipped = true;
    plain.outcome = Some(Outcome::Error);
    assert!(verdicts(&plain).is_empty());
}

#[test]
fn a_syn_proxy_is_a_proxy() {
    // SYNPROXY answers the client itself (its own ISN) and sends the server a SYN of its own:
    // the client's ISN kept, no MP_CAPABLE, a timestamp echo; no NAT.
    let mut e = clean();
    e.client.is_mptcp = Some(false);
    e.client_wire = Some(hs(true, false, Some(false)));
    let s = e.server.as_mut().unwrap();
    let mut h = hs(false, false, Some(false));
    h.synack_isn = Some(31337);
    h.syn_ts_ecr = Some(4_000_000);
    s.handshake = Some(h);
    let v = verdicts(&e);
    assert_eq!(v, vec!["proxied"], "{v:?}");
}

#[test]
fn mptcp_packets_dropped_after_the_synack_are_a_dropped_third_ack() {
    // The client came up (SYN/ACK with MP_CAPABLE), the test stalled while plain TCP worked,
    // and the server never had the connection.
    let mut e = clean();
    e.outcome = Some(Outcome::Timeout);
    e.server = None;
    assert_eq!(verdicts(&e), vec!["unknown_fallback"], "without the server's counters: unknown");
    e.server_mib_delta = BTreeMap::from([("MPCapableSYNRX".to_string(), 1)]);
    let c = classify(&e);
    assert_eq!(c.verdicts(), vec![Verdict::MptcpAckDropped]);
    assert_eq!((c.findings[0].packet, c.findings[0].end), (Packet::ThirdAck, End::Server));
    assert!(c.findings[0].seen.contains("MPCapableACKRX 0"), "{:?}", c.findings);
    // The third ACK arrived: something else stalled it.
    e.server_mib_delta.insert("MPCapableACKRX".to_string(), 1);
    assert_eq!(verdicts(&e), vec!["unknown_fallback"]);
}
