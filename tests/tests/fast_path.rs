//! The observer's fast path still catches what happens after it engaged. The foreign MPTCP
//! client (`mptcp-foreign-peer`) sends a Linux MPTCP listener 150 steady data segments (NOP NOP
//! TS, a 26-byte DSS, NOP NOP: the segments the TC program adds to its per-CPU running totals
//! instead of the flow table; with the listener's ACKs, several flushes of those totals to the
//! table), then what Linux sends only when something goes wrong. `watch --events` on the
//! client's and the server's interface must count and report it, and every count of each flow
//! summary must agree with tshark's decoding of the same interface's packets, the steady
//! segments' included: a late packet that takes the slow path anyway proves nothing unless the
//! totals before it were merged right.
//!
//! - DSS gone mid-connection ⇒ data_without_dss counted and reported, fallback with that evidence
//!   (the listener: DssFallback).
//! - An infinite mapping late ⇒ infinite_mappings counted, the packet flagged infinite_mapping,
//!   fallback (the listener: InfiniteMapRx, DssFallback).
//! - MP_FAIL late ⇒ counted and reported each way (the listener answers with MP_FAIL and an
//!   infinite mapping on its data, then falls back: MPFailRx, MPFailTx, InfiniteMapTx).
//! - MP_FASTCLOSE late ⇒ counted and reported; the listener answers with a RST carrying MP_TCPRST
//!   (reason 0) and the flow ends in a reset (MPFastcloseRx, MPRstTx).
//! - MP_TCPRST (middlebox interference) on a RST late ⇒ counted, its reason in the summary and
//!   the event (MPRstRx).
//! - ADD_ADDR (valid truncated HMAC, and one with a wrong HMAC) and REMOVE_ADDR late ⇒ counted
//!   and reported, the listener's echo too; the connection stays MPTCP (AddAddr, EchoAddTx,
//!   RmAddr; the wrong HMAC moves no counter and gets no echo).
//! - A flow evicted from a 64-entry flow table by other connections while it pauses, then
//!   sending again ⇒ tracked anew from its next packets, its counts from then on those of tshark.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    process::{Command, Stdio},
    time::Duration,
};

use mptcp_probe_model::{
    watch::{Event, MappingFlag, PacketRecord, Scope, Why},
    Direction, Ended, FlowSummary, MptcpState, Role, Subtype, TcpRstReason,
};
use mptcp_probe_tests::{
    foreign::{
        assert_counts_agree_with_tshark, drop_kernel_rsts, foreign_client, mib, probe_options,
        resolve_the_server, tshark_options, Family, Observers, Running, Seen, Totals, Wire,
    },
    lab::{sh, Child, Lab, Netns},
    peer, peer_bin,
    probe::WatchOutput,
    skip_unless_e2e,
};
use serde_json::Value;

/// Steady data segments before the first late option.
const STEADY: usize = 150;
/// Payload bytes: 200 segments of 1000 bytes, room for the late options and steady data after.
const BYTES: &str = "200000";
/// The foreign client's port.
const PORT: u16 = 40201;

/// One connection of the foreign client with `late` (`--late` arguments) after [`STEADY`]
/// steady segments, watched at both ends; its report and what the observers saw.
fn late_run(family: Family, late: &[&str]) -> (Value, Seen) {
    late_run_watched(family, late, &[])
}

/// [`late_run`] with `watch_args` for both observers.
fn late_run_watched(family: Family, late: &[&str], watch_args: &[&str]) -> (Value, Seen) {
    let lab = Lab::up();
    let ends = late.iter().any(|l| l.starts_with("mp-fastclose") || l.starts_with("mp-tcprst"));
    let _listener = listener(&lab.s, &family.server(), ends);
    drop_kernel_rsts(&lab.c, family, PORT);
    resolve_the_server(&lab, family);
    let obs = Observers::start(&lab, watch_args);
    let steady = STEADY.to_string();
    let mut args = vec!["--timestamps", "--bytes", BYTES, "--late-after", &steady];
    args.extend_from_slice(late);
    let report = foreign_client(&lab.c, family, PORT, &args);
    (report, obs.stop())
}

/// `mptcp-peer server` for one connection on `listen`, once it listens. A connection reset late
/// makes its read fail: with `reset`, it is not let say so on the test's output.
fn listener(ns: &Netns, listen: &str, reset: bool) -> Child {
    let mut cmd = ns.cmd(peer_bin());
    cmd.args(["server", "--listen", listen, "--count", "1"]).stdin(Stdio::null());
    if reset {
        cmd.stderr(Stdio::null());
    }
    spawn_listening(ns, &mut cmd, listen)
}

/// Starts a listener and waits until its port shows in the namespace's socket table.
fn spawn_listening(ns: &Netns, cmd: &mut Command, listen: &str) -> Child {
    let child = Child::spawn(cmd);
    let port = listen.rsplit(':').next().unwrap_or_default();
    for _ in 0..100 {
        let out = ns.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]).output();
        if out.map(|o| !o.stdout.is_empty()).unwrap_or(false) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the listener on {listen} did not come up");
}

/// The direction of the client's packets on `flow`.
fn from_client(flow: &FlowSummary) -> Direction {
    if flow.local_port == PORT {
        Direction::Tx
    } else {
        Direction::Rx
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Tx => Direction::Rx,
        Direction::Rx => Direction::Tx,
    }
}

/// The flow's reported packets in direction `d` that carry an MPTCP option of subtype `st`.
fn with_option(out: &WatchOutput, d: Direction, st: Subtype) -> Vec<&PacketRecord> {
    out.packets_with_port(PORT)
        .into_iter()
        .filter(|p| p.direction == d && p.mptcp_options.iter().any(|o| o.subtype == st))
        .collect()
}

/// The flow's reported packets in direction `d` reported for `why`.
fn reported_for(out: &WatchOutput, d: Direction, why: Why) -> Vec<&PacketRecord> {
    out.packets_with_port(PORT).into_iter().filter(|p| p.direction == d && p.why.contains(&why)).collect()
}

fn count(flow: &FlowSummary, d: Direction, st: Subtype) -> u32 {
    flow.options.get(d).get(&st).copied().unwrap_or(0)
}

/// What every late scenario shows at both ends: the late part came after at least [`STEADY`]
/// steady data segments of the client on this wire, every count of the summary is tshark's, the
/// observer lost nothing, and it saw the client send data again at the MPTCP level `sent_again`
/// times (the listener never).
fn assert_steady_then_late(seen: &Seen, sent_again: u32) {
    for (flow, trace, out) in seen.flows(PORT) {
        let d = from_client(flow);
        assert_eq!(
            (*flow.mptcp_retransmissions.get(d), *flow.mptcp_retransmissions.get(other(d))),
            (sent_again, 0),
            "MPTCP-level retransmissions on {}: {flow:?}",
            flow.iface
        );
        let ordinary = |p: &&Wire| {
            let handshake = p.syn || p.mptcp == [(Subtype::MpCapable, 20)];
            let pure_ack = p.len == 0 && !p.fin && !p.rst && p.mptcp == [(Subtype::Dss, 12)];
            p.steady_data() || handshake || pure_ack
        };
        let steady = trace
            .iter()
            .filter(|p| p.src_port == PORT)
            .take_while(ordinary)
            .filter(|p| p.steady_data())
            .count();
        assert!(steady >= STEADY, "{steady} steady data segments before the late one on {}", flow.iface);
        assert_counts_agree_with_tshark(flow, trace);
        let kernel = &out.counters().kernel;
        assert_eq!(kernel.get("ringbuf_dropped_events"), Some(&0), "{kernel:?}");
        assert_eq!(kernel.get("malformed_options"), Some(&0), "{kernel:?}");
        // Where the kernel programs count it: the fast path took the steady segments but the
        // first (the first DSS each way takes the full path).
        if let Some(fast) = kernel.get("fast_path_segments") {
            assert!(*fast >= STEADY as u64 - 1, "the fast path took {fast} segments on {}", flow.iface);
        }
    }
}

fn dss_gone_late_is_data_without_dss(family: Family) {
    skip_unless_e2e!();
    const MISSING: u32 = 3;
    let (report, seen) = late_run(family, &["--late", "no-dss:3"]);
    // The listener fell back and read every byte as TCP.
    assert_eq!(report["late_sent"], serde_json::json!(["no-dss:3"]), "{report}");
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(mib(&seen.server, "DssFallback"), 1, "{:?}", seen.server.counters().mib_delta);
    for (flow, _, out) in seen.flows(PORT) {
        let d = from_client(flow);
        assert_eq!(*flow.data_without_dss.get(d), MISSING, "{flow:?}");
        assert_eq!(flow.mptcp, MptcpState::Fallback, "{flow:?}");
        let named = format!("{MISSING} data segment(s) {} without DSS on an MPTCP flow", d.verb());
        assert!(flow.fallback_evidence.contains(&named), "evidence does not say {named:?}: {flow:?}");
        // The first of them reported, with its payload and without a DSS.
        let reported = reported_for(out, d, Why::DataWithoutDss);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(reported[0].payload_len > 0, "{reported:?}");
        assert!(!reported[0].mptcp_options.iter().any(|o| o.subtype == Subtype::Dss), "{reported:?}");
        assert_eq!(flow.ended, Ended::Fin, "{flow:?}");
    }
    assert_steady_then_late(&seen, 0);
}

#[test]
fn dss_gone_late_is_data_without_dss_ipv4() {
    dss_gone_late_is_data_without_dss(Family::V4);
}

#[test]
fn dss_gone_late_is_data_without_dss_ipv6() {
    dss_gone_late_is_data_without_dss(Family::V6);
}

fn an_infinite_mapping_late_is_fallback(family: Family) {
    skip_unless_e2e!();
    // With the kernel's mapping tracepoints: the listener's kernel reports the mapping it read.
    let (report, seen) = late_run_watched(family, &["--late", "infinite-mapping"], &["--kernel-mappings"]);
    // The listener took the infinite mapping, fell back and read every byte as TCP.
    assert_eq!(report["late_sent"], serde_json::json!(["infinite-mapping"]), "{report}");
    assert_eq!(report["intact"], true, "{report}");
    let mib_delta = &seen.server.counters().mib_delta;
    assert_eq!(mib(&seen.server, "InfiniteMapRx"), 1, "{mib_delta:?}");
    assert_eq!(mib(&seen.server, "DssFallback"), 1, "{mib_delta:?}");
    for (flow, _, out) in seen.flows(PORT) {
        let d = from_client(flow);
        assert_eq!(
            (*flow.infinite_mappings.get(d), *flow.infinite_mappings.get(other(d))),
            (1, 0),
            "{flow:?}"
        );
        assert_eq!(flow.mptcp, MptcpState::Fallback, "{flow:?}");
        let named = format!("DSS with infinite mapping {}: fallback after establishment", d.verb());
        assert!(flow.fallback_evidence.contains(&named), "evidence does not say {named:?}: {flow:?}");
        let flagged = reported_for(out, d, Why::InfiniteMapping);
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        let dss = flagged[0].mptcp_options.iter().find(|o| o.subtype == Subtype::Dss);
        assert!(
            flagged[0].payload_len > 0 && dss.is_some_and(|o| o.infinite_mapping && o.data_len == Some(0)),
            "{flagged:?}"
        );
        assert!(reported_for(out, other(d), Why::InfiniteMapping).is_empty());
    }
    // The tracepoints' records as the kernel wrote them: one mapping, in use, of no length and
    // with no subflow sequence number (an infinite mapping as RFC 8684 writes it), in the
    // listener's namespace (Linux 6.18 judges it invalid; its own infinite_map flag is for the
    // mappings it sends).
    let mappings: Vec<_> = seen
        .server
        .events()
        .filter_map(|e| match e {
            Event::Mapping(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    let m = mappings[0];
    assert!(m.has_mapping && m.data_len == 0 && m.subflow_seq == 0 && m.data_seq != 0, "{m:?}");
    assert!(m.flags.contains(&MappingFlag::UseMap), "{m:?}");
    assert!(m.netns != 0 && m.scope == Scope::Netns, "{m:?}");
    assert_steady_then_late(&seen, 0);
}

#[test]
fn an_infinite_mapping_late_is_fallback_ipv4() {
    an_infinite_mapping_late_is_fallback(Family::V4);
}

#[test]
fn an_infinite_mapping_late_is_fallback_ipv6() {
    an_infinite_mapping_late_is_fallback(Family::V6);
}

fn mp_fail_late_is_counted_and_reported_each_way(family: Family) {
    skip_unless_e2e!();
    let (report, seen) = late_run(family, &["--late", "mp-fail"]);
    // The listener answered with MP_FAIL, then sent its data with an infinite mapping.
    assert_eq!(report["remote_options"]["mp_fail"], 1, "{report}");
    assert_eq!(report["remote_infinite_mappings"], 1, "{report}");
    assert_eq!(report["intact"], true, "{report}");
    let mib_delta = &seen.server.counters().mib_delta;
    for name in ["MPFailRx", "MPFailTx", "InfiniteMapTx"] {
        assert_eq!(mib(&seen.server, name), 1, "{name}: {mib_delta:?}");
    }
    for (flow, _, out) in seen.flows(PORT) {
        let d = from_client(flow);
        for dir in [d, other(d)] {
            assert_eq!(count(flow, dir, Subtype::MpFail), 1, "{flow:?}");
            let reported = with_option(out, dir, Subtype::MpFail);
            assert_eq!(reported.len(), 1, "MP_FAIL {}: {reported:?}", dir.verb());
            assert!(reported[0].why.contains(&Why::MptcpOption), "{reported:?}");
            assert!(flow.fallback_evidence.contains(&format!("MP_FAIL {}", dir.verb())), "{flow:?}");
        }
        assert_eq!(*flow.infinite_mappings.get(other(d)), 1, "{flow:?}");
        assert_eq!(flow.mptcp, MptcpState::Fallback, "{flow:?}");
    }
    assert_steady_then_late(&seen, 0);
}

#[test]
fn mp_fail_late_is_counted_and_reported_each_way_ipv4() {
    mp_fail_late_is_counted_and_reported_each_way(Family::V4);
}

#[test]
fn mp_fail_late_is_counted_and_reported_each_way_ipv6() {
    mp_fail_late_is_counted_and_reported_each_way(Family::V6);
}

fn mp_fastclose_late_is_reported_and_answered_with_a_reset(family: Family) {
    skip_unless_e2e!();
    let (report, seen) = late_run(family, &["--late", "mp-fastclose"]);
    // The listener closed the connection at once: a RST with MP_TCPRST, reason unspecified.
    assert_eq!(report["remote_reset"], serde_json::json!({"mp_tcprst_reason": 0}), "{report}");
    let mib_delta = &seen.server.counters().mib_delta;
    assert_eq!(mib(&seen.server, "MPFastcloseRx"), 1, "{mib_delta:?}");
    assert_eq!(mib(&seen.server, "MPRstTx"), 1, "{mib_delta:?}");
    for (flow, _, out) in seen.flows(PORT) {
        let d = from_client(flow);
        assert_eq!(count(flow, d, Subtype::MpFastclose), 1, "{flow:?}");
        let reported = with_option(out, d, Subtype::MpFastclose);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(reported[0].why.contains(&Why::MptcpOption), "{reported:?}");
        assert_eq!(count(flow, other(d), Subtype::MpTcprst), 1, "{flow:?}");
        let resets = with_option(out, other(d), Subtype::MpTcprst);
        assert_eq!(resets.len(), 1, "{resets:?}");
        assert!(resets[0].why.contains(&Why::Rst), "{resets:?}");
        let reason = resets[0].mptcp_options.iter().find_map(|o| o.reason);
        assert_eq!(reason, Some(TcpRstReason::Unspecified), "{resets:?}");
        assert_eq!(flow.mp_tcprst_reason, Some(TcpRstReason::Unspecified), "{flow:?}");
        assert!(*flow.rst.get(other(d)), "{flow:?}");
        assert_eq!(flow.ended, Ended::Rst, "{flow:?}");
    }
    assert_steady_then_late(&seen, 0);
}

#[test]
fn mp_fastclose_late_is_reported_and_answered_with_a_reset_ipv4() {
    mp_fastclose_late_is_reported_and_answered_with_a_reset(Family::V4);
}

#[test]
fn mp_fastclose_late_is_reported_and_answered_with_a_reset_ipv6() {
    mp_fastclose_late_is_reported_and_answered_with_a_reset(Family::V6);
}

fn mp_tcprst_late_names_its_reason(family: Family) {
    skip_unless_e2e!();
    let (report, seen) = late_run(family, &["--late", "mp-tcprst:middlebox_interference"]);
    assert_eq!(report["late_sent"], serde_json::json!(["mp-tcprst:6"]), "{report}");
    assert_eq!(mib(&seen.server, "MPRstRx"), 1, "{:?}", seen.server.counters().mib_delta);
    for (flow, _, out) in seen.flows(PORT) {
        let d = from_client(flow);
        assert_eq!(count(flow, d, Subtype::MpTcprst), 1, "{flow:?}");
        assert_eq!(flow.mp_tcprst_reason, Some(TcpRstReason::MiddleboxInterference), "{flow:?}");
        let resets = with_option(out, d, Subtype::MpTcprst);
        assert_eq!(resets.len(), 1, "{resets:?}");
        assert!(resets[0].why.contains(&Why::Rst), "{resets:?}");
        let reason = resets[0].mptcp_options.iter().find_map(|o| o.reason);
        assert_eq!(reason, Some(TcpRstReason::MiddleboxInterference), "{resets:?}");
        assert!(*flow.rst.get(d), "{flow:?}");
        assert_eq!(flow.ended, Ended::Rst, "{flow:?}");
    }
    assert_steady_then_late(&seen, 0);
}

#[test]
fn mp_tcprst_late_names_its_reason_ipv4() {
    mp_tcprst_late_names_its_reason(Family::V4);
}

#[test]
fn mp_tcprst_late_names_its_reason_ipv6() {
    mp_tcprst_late_names_its_reason(Family::V6);
}

fn add_addr_and_remove_addr_late_are_reported(family: Family) {
    skip_unless_e2e!();
    const ANNOUNCED: &str = "198.51.100.1";
    const FORGED: &str = "198.51.100.7";
    let (add, forged) = (format!("add-addr:{ANNOUNCED}"), format!("add-addr-bad-hmac:{FORGED}"));
    let (report, seen) = late_run(family, &["--late", &add, "--late", &forged, "--late", "remove-addr:1"]);
    // The listener echoed the ADD_ADDR whose HMAC was right, and only that one; it took the
    // REMOVE_ADDR; the connection went on as MPTCP.
    assert_eq!(report["remote_add_addr_echoes"], 1, "{report}");
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["remote_unmapped_segments"], 0, "{report}");
    let mib_delta = &seen.server.counters().mib_delta;
    for name in ["AddAddr", "EchoAddTx", "RmAddr"] {
        assert_eq!(mib(&seen.server, name), 1, "{name}: {mib_delta:?}");
    }
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for (flow, _, out) in seen.flows(PORT) {
        let d = from_client(flow);
        assert_eq!(count(flow, d, Subtype::AddAddr), 2, "{flow:?}");
        assert_eq!(count(flow, d, Subtype::RemoveAddr), 1, "{flow:?}");
        assert_eq!(count(flow, other(d), Subtype::AddAddr), 1, "{flow:?}");
        let announced = |dir| -> Vec<(Option<IpAddr>, Option<bool>)> {
            with_option(out, dir, Subtype::AddAddr)
                .iter()
                .flat_map(|p| &p.mptcp_options)
                .filter(|o| o.subtype == Subtype::AddAddr)
                .map(|o| (o.addr, o.echo))
                .collect()
        };
        assert_eq!(
            announced(d),
            [(Some(ip(ANNOUNCED)), Some(false)), (Some(ip(FORGED)), Some(false))],
            "{:?}",
            out.packets_with_port(PORT)
        );
        assert_eq!(announced(other(d)), [(Some(ip(ANNOUNCED)), Some(true))]);
        let removed: Vec<_> = with_option(out, d, Subtype::RemoveAddr)
            .iter()
            .flat_map(|p| &p.mptcp_options)
            .filter_map(|o| o.addr_ids.clone())
            .collect();
        assert_eq!(removed, [vec![1]]);
        assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
        assert!(flow.fallback_evidence.is_empty(), "{flow:?}");
        assert_eq!(flow.ended, Ended::Fin, "{flow:?}");
    }
    assert_steady_then_late(&seen, 0);
}

#[test]
fn add_addr_and_remove_addr_late_are_reported_ipv4() {
    add_addr_and_remove_addr_late_are_reported(Family::V4);
}

#[test]
fn add_addr_and_remove_addr_late_are_reported_ipv6() {
    add_addr_and_remove_addr_late_are_reported(Family::V6);
}

fn data_sent_again_is_an_mptcp_retransmission_and_a_tcp_one_is_not(family: Family) {
    skip_unless_e2e!();
    const AGAIN: usize = 3;
    let (report, seen) = late_run(family, &["--late", "tcp-retransmit:2", "--late", "resend:3"]);
    assert_eq!(report["late_sent"], serde_json::json!(["tcp-retransmit:2", "resend:3"]), "{report}");
    assert_eq!(report["intact"], true, "{report}");
    // The listener had the data already: its kernel dropped each copy as duplicate data and the
    // connection stayed MPTCP.
    let mib_delta = &seen.server.counters().mib_delta;
    assert_eq!(mib(&seen.server, "DuplicateData"), AGAIN as u64, "{mib_delta:?}");
    assert_eq!(report["remote_unmapped_segments"], 0, "{report}");
    for (flow, trace, out) in seen.flows(PORT) {
        let d = from_client(flow);
        assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
        assert!(flow.troubled(), "data sent again is worth its events: {flow:?}");
        // The wire (tshark) has both: data at a TCP sequence number seen before (the TCP
        // retransmission), and data at a data sequence number seen before on new TCP sequence
        // numbers (the MPTCP one).
        let data: Vec<&Wire> = trace.iter().filter(|p| p.src_port == PORT && p.len > 0).collect();
        let before = |i: usize, same: &dyn Fn(&Wire) -> bool| data[..i].iter().any(|q| same(q));
        let tcp_again = (0..data.len()).filter(|&i| before(i, &|q: &Wire| q.seq == data[i].seq)).count();
        let mptcp_again = (0..data.len())
            .filter(|&i| {
                !before(i, &|q: &Wire| q.seq == data[i].seq)
                    && before(i, &|q: &Wire| !q.dsns.is_empty() && q.dsns == data[i].dsns)
            })
            .count();
        assert_eq!((tcp_again, mptcp_again), (2, AGAIN), "sent again on {}", flow.iface);
        // Reported once: the first segment that went back.
        let reported = reported_for(out, d, Why::MptcpRetransmission);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(reported[0].payload_len > 0, "{reported:?}");
        assert!(reported_for(out, other(d), Why::MptcpRetransmission).is_empty());
    }
    assert_steady_then_late(&seen, 1);
}

#[test]
fn data_sent_again_is_an_mptcp_retransmission_and_a_tcp_one_is_not_ipv4() {
    data_sent_again_is_an_mptcp_retransmission_and_a_tcp_one_is_not(Family::V4);
}

#[test]
fn data_sent_again_is_an_mptcp_retransmission_and_a_tcp_one_is_not_ipv6() {
    data_sent_again_is_an_mptcp_retransmission_and_a_tcp_one_is_not(Family::V6);
}

/// The port of the other connections' listener (`mptcp-peer sink`).
const SINK_PORT: u16 = 8081;
/// A port nothing listens on: the connections there are a SYN and the listener's RST.
const CLOSED_PORT: u16 = 9;
const CHURN: usize = 200;
/// Data segments of the first connection after it resumes.
const AFTER: usize = 150;

/// The CPU the first connection and the others run on.
const CPU: u32 = 0;

/// How the other connections evict the first one's entry.
#[derive(Clone, Copy)]
enum Churn {
    /// Short connections to a sink, more at a time than the table holds: their steady segments
    /// take over the running totals of the CPU the first connection ran on.
    Connections,
    /// Connections refused (a SYN and a RST each): they touch no CPU's running totals, so that
    /// CPU's still hold the first connection when it resumes.
    Refused,
}

/// What the eviction scenario saw: each end's output and trace, with the frame the other
/// connections began at on it.
struct Evicted {
    report: Value,
    ends: Vec<(WatchOutput, Vec<Wire>, u32)>,
}

/// `mptcp-peer sink` serving `count` connections on `listen`, once it listens.
fn sink(ns: &Netns, listen: &str, count: usize) -> Child {
    let mut cmd = ns.cmd(peer_bin());
    cmd.args(["sink", "--listen", listen, "--count", &count.to_string(), "--timeout", "60"]);
    spawn_listening(ns, cmd.stdin(Stdio::null()), listen)
}

/// A connection sends [`STEADY`] steady segments and pauses; [`CHURN`] other connections go
/// through a 64-entry flow table; it sends [`AFTER`] more and ends.
fn evict_and_resume(churn: Churn) -> Evicted {
    let family = Family::V4;
    let lab = Lab::up();
    let _listener = peer::server(&lab.s, &family.server(), 1, false);
    let _sink = sink(&lab.s, &family.server_at(SINK_PORT), CHURN);
    drop_kernel_rsts(&lab.c, family, PORT);
    resolve_the_server(&lab, family);
    let obs = Observers::start(&lab, &["--flow-table-size", "64"]);
    let bytes = ((STEADY + AFTER) * 1000).to_string();
    let steady = STEADY.to_string();
    let args = ["--timestamps", "--bytes", &bytes, "--late-after", &steady, "--timeout", "50"];
    // On one CPU with the other connections: entries that CPU took lately (this one's among
    // them) are those its allocations evict; from any CPU, the first connection's entry may
    // outlive the churn in the table's per-CPU lists.
    let mut first = Running::start(&lab.c, family, PORT, &args, Some(CPU));
    first.wait_paused(Duration::from_secs(20));
    let to = match churn {
        Churn::Connections => SINK_PORT,
        Churn::Refused => CLOSED_PORT,
    };
    let mut cmd = lab.c.cmd("taskset");
    cmd.args(["-c", &CPU.to_string()]).arg(peer_bin());
    cmd.args(["churn", "--connect", &family.server_at(to), "--count", &CHURN.to_string()]);
    if matches!(churn, Churn::Connections) {
        cmd.args(["--concurrent", "70", "--hold-ms", "200"]);
    }
    let out = sh(&mut cmd);
    let churned: Value = serde_json::from_slice(&out.stdout).expect("churn report");
    let expected = if matches!(churn, Churn::Connections) { "connections" } else { "failed" };
    assert_eq!(churned[expected], CHURN, "{churned}");
    let report = first.resume(Duration::from_secs(30));
    assert_eq!((&report["intact"], &report["closed"]), (&true.into(), &true.into()), "{report}");
    let seen = obs.stop();
    let ends = [(seen.client, seen.client_trace), (seen.server, seen.server_trace)]
        .into_iter()
        .map(|(out, trace)| {
            let start = trace
                .iter()
                .find(|p| p.dst_port == to)
                .unwrap_or_else(|| panic!("no other connection in the trace"))
                .frame;
            (out, trace, start)
        })
        .collect();
    Evicted { report, ends }
}

/// The first connection's summaries at one end.
fn summaries_of_first(out: &WatchOutput) -> Vec<&FlowSummary> {
    out.flows().filter(|f| f.local_port == PORT || f.remote_port == PORT).collect()
}

/// The other connections' client ports, from their SYNs on this wire.
fn churn_ports(trace: &[Wire], to: u16) -> BTreeSet<u16> {
    trace.iter().filter(|p| p.syn && !p.ack && p.dst_port == to).map(|p| p.src_port).collect()
}

#[test]
fn a_flow_evicted_and_seen_again_is_tracked_anew() {
    skip_unless_e2e!();
    let Evicted { report, ends } = evict_and_resume(Churn::Connections);
    assert_eq!(report["data_segments_sent"], STEADY + AFTER, "{report}");
    for (out, trace, churn_start) in &ends {
        let summaries = summaries_of_first(out);
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        let flow = summaries[0];
        // Its entry went with its handshake: what is summarised began after the pause.
        assert!(out.counters().flow_table_evictions > 0, "{:?}", out.counters());
        assert_eq!((flow.role, &flow.handshake.syn), (Role::Unknown, &None), "not evicted: {flow:?}");
        assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
        assert_eq!(flow.ended, Ended::Fin, "{flow:?}");
        // Tracked anew: its first DSS each way reported again.
        for d in [Direction::Tx, Direction::Rx] {
            let firsts = reported_for(out, d, Why::FirstDss);
            assert_eq!(firsts.len(), 2, "first DSS {}: {firsts:?}", d.verb());
        }
        // Its counts are those of its packets after the pause, nothing lost.
        let after: Vec<&Wire> = trace.iter().filter(|p| p.frame > *churn_start).collect();
        assert_eq!(probe_options(flow), tshark_options(flow, after.iter().copied()), "{flow:?}");
        assert_eq!(Totals::of_summary(flow), Totals::of_packets(flow, after.iter().copied()), "{flow:?}");
        // Every other connection has a summary or was counted as evicted.
        let ports = churn_ports(trace, SINK_PORT);
        assert_eq!(ports.len(), CHURN);
        let summarised: BTreeSet<u16> =
            out.flows().flat_map(|f| [f.local_port, f.remote_port]).filter(|p| ports.contains(p)).collect();
        let evicted = out.counters().flows_evicted_unsummarised as usize;
        assert!(summarised.len() + evicted >= CHURN, "{} summarised, {evicted} evicted", summarised.len());
        let kernel = &out.counters().kernel;
        assert_eq!(kernel.get("ringbuf_dropped_events"), Some(&0), "{kernel:?}");
    }
}

#[test]
fn a_flow_evicted_and_seen_again_counts_as_evicted() {
    skip_unless_e2e!();
    let Evicted { ends, .. } = evict_and_resume(Churn::Refused);
    for (out, trace, _) in &ends {
        // The refused connections are a SYN and a RST each: summarised, or counted as evicted
        // once. The first connection's entry, with its handshake, was evicted: counted too.
        let flow = summaries_of_first(out)[0];
        assert_eq!(flow.role, Role::Unknown, "not evicted: {flow:?}");
        let ports = churn_ports(trace, CLOSED_PORT);
        assert_eq!(ports.len(), CHURN);
        let summarised =
            out.flows().filter(|f| ports.contains(&f.local_port) || ports.contains(&f.remote_port)).count();
        assert_eq!(
            out.counters().flows_evicted_unsummarised as usize,
            CHURN - summarised + 1,
            "{summarised} refused connections summarised; {:?}",
            out.counters()
        );
    }
}

#[test]
fn a_flow_evicted_while_its_cpu_holds_its_totals_loses_nothing() {
    skip_unless_e2e!();
    let Evicted { ends, .. } = evict_and_resume(Churn::Refused);
    for (out, trace, churn_start) in &ends {
        let flow = summaries_of_first(out)[0];
        assert_eq!(flow.role, Role::Unknown, "not evicted: {flow:?}");
        let after: Vec<&Wire> = trace.iter().filter(|p| p.frame > *churn_start).collect();
        assert_eq!(
            Totals::of_summary(flow),
            Totals::of_packets(flow, after.iter().copied()),
            "[tx, rx] counted by the observer, then by tshark after the pause: {flow:?}"
        );
        assert_eq!(probe_options(flow), tshark_options(flow, after.iter().copied()), "{flow:?}");
    }
}
