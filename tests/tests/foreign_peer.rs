//! A foreign MPTCP client (`mptcp-foreign-peer`: TCP and MPTCP written by hand over a raw socket)
//! against a Linux MPTCP listener, with `watch` on both ends (root needed). What `watch` says is
//! checked against the listener kernel's MPTcpExt counters, against what the listener received,
//! and against tshark's decoding of the same packets.
//!
//! - A DSS mapping of data-level length 0 on segments without payload (a pure ACK, an empty
//!   PSH/ACK) maps nothing: Linux neither counts an infinite mapping nor falls back, and the
//!   connection carries on as MPTCP; `watch` must say established.
//! - A third ACK whose MP_CAPABLE Linux ignores (version 0, the B bit, no HMAC-SHA256 bit): the
//!   listener falls back (MPCapableFallbackACK); `watch` must say fallback and name the option.

use mptcp_probe_common::options::mp_capable::{FLAG_EXTENSIBILITY, FLAG_HMAC_SHA256, VERSION};
use mptcp_probe_model::{watch::Why, Ended, MptcpState, Role, Subtype};
use mptcp_probe_tests::{
    foreign::{
        assert_options_agree_with_tshark, drop_kernel_rsts, foreign_client, mib, resolve_the_server, Family,
        Observers, Wire,
    },
    lab::Lab,
    peer, skip_unless_e2e,
};
use serde_json::Value;

/// Payload bytes the foreign client sends (in 1000-byte segments, in two halves).
const BYTES: &str = "6000";

fn empty_mappings_without_payload_are_no_infinite_mapping(family: Family) {
    skip_unless_e2e!();
    const PORT: u16 = 40101;
    let lab = Lab::up();
    let _listener = peer::server(&lab.s, &family.server(), 1, false);
    drop_kernel_rsts(&lab.c, family, PORT);
    resolve_the_server(&lab, family);
    let obs = Observers::start(&lab, &[]);
    let report = foreign_client(&lab.c, family, PORT, &["--bytes", BYTES, "--empty-mapping"]);
    let seen = obs.stop();

    // The connection carried on as MPTCP past the empty mappings: the listener read every byte
    // (its answer is their count and digest), acknowledged them and the DATA_FIN at the data
    // level, answered with mapped data and closed.
    assert_eq!(report["empty_mappings_sent"], 2, "{report}");
    assert_eq!(report["intact"], true, "the listener did not receive what was sent: {report}");
    assert_eq!(report["data_acked"], true, "{report}");
    assert!(report["remote_mapped_segments"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["remote_unmapped_segments"], 0, "the listener fell back: {report}");
    assert_eq!(report["closed"], true, "{report}");

    // The listener's kernel saw no infinite mapping and did not fall back.
    let mib_delta = &seen.server.counters().mib_delta;
    assert_eq!(mib(&seen.server, "InfiniteMapRx"), 0, "{mib_delta:?}");
    assert!(!mib_delta.keys().any(|k| k.contains("Fallback")), "the listener fell back: {mib_delta:?}");
    assert_eq!(mib(&seen.server, "MPCapableACKRX"), 1, "{mib_delta:?}");

    for (flow, trace, out) in seen.flows(PORT) {
        // Both empty mappings were on this wire: payload-less segments from the client with a
        // 26-byte DSS (data ACK, DSN, SSN, data-level length), and nothing else is.
        let from_client = |p: &&Wire| p.src_port == PORT;
        let empty: Vec<_> = trace
            .iter()
            .filter(from_client)
            .filter(|p| p.len == 0 && p.mptcp == [(Subtype::Dss, 26)])
            .collect();
        assert_eq!(empty.len(), 2, "the empty mappings are not in the trace of {}: {trace:?}", flow.iface);

        assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
        assert!(flow.fallback_evidence.is_empty(), "{flow:?}");
        assert_eq!((flow.infinite_mappings.tx, flow.infinite_mappings.rx), (0, 0), "{flow:?}");
        assert_eq!((flow.data_without_dss.tx, flow.data_without_dss.rx), (0, 0), "{flow:?}");
        assert_eq!(flow.ended, Ended::Fin, "{flow:?}");
        let flagged: Vec<_> = out
            .packets_with_port(PORT)
            .into_iter()
            .filter(|p| p.why.contains(&Why::InfiniteMapping))
            .collect();
        assert!(flagged.is_empty(), "packets reported as infinite mappings: {flagged:?}");
        assert_options_agree_with_tshark(flow, trace);
    }
}

#[test]
fn empty_mappings_without_payload_are_no_infinite_mapping_ipv4() {
    empty_mappings_without_payload_are_no_infinite_mapping(Family::V4);
}

#[test]
fn empty_mappings_without_payload_are_no_infinite_mapping_ipv6() {
    empty_mappings_without_payload_are_no_infinite_mapping(Family::V6);
}

/// Third ACKs whose MP_CAPABLE Linux ignores (`mptcp_parse_option`): version and flags, and how
/// the evidence names them.
const IGNORED_THIRD_ACKS: [(u8, u8, &str); 3] = [
    // Version 0 after a version-1 SYN and SYN/ACK.
    (0, FLAG_HMAC_SHA256, "MP_CAPABLE version 0"),
    // The B (extensibility) bit.
    (VERSION, FLAG_HMAC_SHA256 | FLAG_EXTENSIBILITY, "MP_CAPABLE flags 0x41"),
    // No crypto algorithm: H (HMAC-SHA256) is the only one Linux takes.
    (VERSION, 0, "MP_CAPABLE flags 0x00"),
];

fn an_ignored_third_ack_mp_capable_is_fallback(family: Family) {
    skip_unless_e2e!();
    const FIRST_PORT: u16 = 40111;
    let lab = Lab::up();
    let ports: Vec<u16> = (0..IGNORED_THIRD_ACKS.len() as u16).map(|i| FIRST_PORT + i).collect();
    // One more connection, left open after its data: the listener never answers it.
    let open_port = FIRST_PORT + ports.len() as u16;
    let _listener = peer::server(&lab.s, &family.server(), ports.len() as u32 + 1, false);
    for port in ports.iter().chain([&open_port]) {
        drop_kernel_rsts(&lab.c, family, *port);
    }
    resolve_the_server(&lab, family);
    let obs = Observers::start(&lab, &[]);
    let reports: Vec<Value> = IGNORED_THIRD_ACKS
        .iter()
        .zip(&ports)
        .map(|((version, flags, _), port)| {
            let (version, flags) = (version.to_string(), format!("{flags:#04x}"));
            foreign_client(
                &lab.c,
                family,
                *port,
                &["--bytes", BYTES, "--third-ack-version", &version, "--third-ack-flags", &flags],
            )
        })
        .collect();
    let open_report = foreign_client(
        &lab.c,
        family,
        open_port,
        &["--bytes", BYTES, "--third-ack-version", "0", "--keep-open"],
    );
    let seen = obs.stop();

    // The listener's kernel ignored each of these MP_CAPABLEs and fell back, once a connection.
    let mib_delta = &seen.server.counters().mib_delta;
    assert_eq!(mib(&seen.server, "MPCapableFallbackACK"), ports.len() as u64 + 1, "{mib_delta:?}");
    assert_eq!(mib(&seen.server, "MPCapableACKRX"), 0, "{mib_delta:?}");

    for (((version, flags, why), port), report) in IGNORED_THIRD_ACKS.iter().zip(&ports).zip(&reports) {
        // As TCP, the connection still worked: the listener read every byte and answered
        // without a mapping.
        assert_eq!(report["intact"], true, "{why}: the listener did not receive what was sent: {report}");
        assert_eq!(report["remote_mapped_segments"], 0, "{why}: the listener kept MPTCP: {report}");
        assert!(report["remote_unmapped_segments"].as_u64() >= Some(1), "{report}");
        assert_eq!(report["closed"], true, "{report}");

        for (flow, trace, _) in seen.flows(*port) {
            let verb = if flow.role == Role::Client { "sent" } else { "received" };
            let third_ack =
                flow.handshake.third_ack.as_ref().unwrap_or_else(|| panic!("no third ACK: {flow:?}"));
            assert_eq!(
                (third_ack.mptcp_version, third_ack.mptcp_flags),
                (Some(*version), Some(*flags)),
                "{flow:?}"
            );
            assert_eq!(flow.mptcp, MptcpState::Fallback, "{why} on {}: {flow:?}", flow.iface);
            let named = format!("third ACK {verb} with {why}, which Linux ignores");
            assert!(flow.fallback_evidence.contains(&named), "evidence does not say {named:?}: {flow:?}");
            if let Some(reason) = &flow.fallback_reason {
                assert_eq!(reason, "MPCapableFallbackACK", "{flow:?}");
            }
            assert_eq!((flow.infinite_mappings.tx, flow.infinite_mappings.rx), (0, 0), "{flow:?}");
            assert_options_agree_with_tshark(flow, trace);
        }
    }

    // Before the listener sends anything, the ignored option is the only evidence there is: the
    // verdict rests on it alone.
    assert_eq!(
        (&open_report["answer"], &open_report["closed"]),
        (&"".into(), &false.into()),
        "{open_report}"
    );
    for (flow, trace, _) in seen.flows(open_port) {
        let verb = if flow.role == Role::Client { "sent" } else { "received" };
        assert_eq!(flow.ended, Ended::Live, "{flow:?}");
        assert_eq!((flow.data_without_dss.tx, flow.data_without_dss.rx), (0, 0), "{flow:?}");
        assert_eq!(flow.mptcp, MptcpState::Fallback, "{flow:?}");
        assert_eq!(
            flow.fallback_evidence,
            [format!("third ACK {verb} with MP_CAPABLE version 0, which Linux ignores")],
            "{flow:?}"
        );
        assert_options_agree_with_tshark(flow, trace);
    }
}

#[test]
fn an_ignored_third_ack_mp_capable_is_fallback_ipv4() {
    an_ignored_third_ack_mp_capable_is_fallback(Family::V4);
}

#[test]
fn an_ignored_third_ack_mp_capable_is_fallback_ipv6() {
    an_ignored_third_ack_mp_capable_is_fallback(Family::V6);
}
