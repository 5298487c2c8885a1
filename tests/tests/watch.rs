//! End-to-end scenarios of `mptcp-probe watch` in network namespaces (root needed). Its lines are
//! read through the data model; tshark's decoding of the same packets is the independent oracle.

use std::{collections::BTreeMap, net::IpAddr, process::Command, time::Duration};

use mptcp_probe_common::counters;
use mptcp_probe_model::{
    watch::{OptionRecord, PacketRecord, SocketProtocol, Why},
    Direction, Ended, Event, HandshakePacket, MptcpState, Role, Subtype, TcpState,
};
use mptcp_probe_tests::{
    lab::{addr, attached_programs, ifname, sh, Lab, Netns},
    oracle::{self, Capture},
    peer,
    probe::Watcher,
    scenario, skip_unless_e2e,
    workspace::MIDDLEBOX,
};

fn why(p: &PacketRecord, w: Why) -> bool {
    p.why.contains(&w)
}

fn mptcp_opt(p: &PacketRecord, subtype: Subtype) -> Option<&OptionRecord> {
    p.mptcp_options.iter().find(|o| o.subtype == subtype)
}

/// The MPTCP option length a handshake packet carried (None: the packet, or the option, is absent).
fn mptcp_len(p: &Option<HandshakePacket>) -> Option<u8> {
    p.as_ref().and_then(|p| p.mptcp_len)
}

fn mptcp_subtype(p: &Option<HandshakePacket>) -> Option<Subtype> {
    p.as_ref().and_then(|p| p.mptcp)
}

#[test]
fn clean_mptcp_transfer_is_seen_with_rfc8684_lengths_and_agrees_with_tshark() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let dir = mptcp_probe_tests::probe::TempDir::new("trace");
    let pcap = dir.0.join("probe.pcapng");
    let watch =
        Watcher::start(&lab.c, &["--iface", ifname::C1, "--events", "--pcap", pcap.to_str().unwrap()]);
    let cap = Capture::start(&lab.c, ifname::C1);
    let res = peer::client(&lab.c, &server, 300_000, 40001, false);
    assert_eq!(res["is_mptcp"], 1, "the peers themselves did not speak MPTCP: {res}");
    assert_eq!(res["intact"], true, "{res}");
    std::thread::sleep(Duration::from_millis(1500));
    let trace = cap.finish();
    let out = watch.stop();
    assert_eq!(out.exit_code, Some(0), "{}", out.dump());

    let pk = out.packets_with_port(40001);
    let syn = pk.iter().find(|p| why(p, Why::Syn)).unwrap_or_else(|| panic!("no SYN event\n{}", out.dump()));
    assert_eq!(syn.direction, Direction::Tx);
    assert_eq!(mptcp_opt(syn, Subtype::MpCapable).expect("MP_CAPABLE on SYN").len, 4);
    let synack = pk.iter().find(|p| why(p, Why::SynAck)).expect("SYN/ACK event");
    assert_eq!(synack.direction, Direction::Rx);
    assert_eq!(mptcp_opt(synack, Subtype::MpCapable).expect("MP_CAPABLE on SYN/ACK").len, 12);
    let ack = pk.iter().find(|p| why(p, Why::ThirdAck)).expect("third ACK event");
    assert_eq!(ack.direction, Direction::Tx);
    assert_eq!(mptcp_opt(ack, Subtype::MpCapable).expect("MP_CAPABLE on third ACK").len, 20);
    assert!(
        pk.iter().any(|p| why(p, Why::FirstDss) && mptcp_opt(p, Subtype::Dss).is_some()),
        "no DSS event\n{}",
        out.dump()
    );
    assert!(
        pk.iter().any(|p| mptcp_opt(p, Subtype::Dss).is_some_and(|d| d.data_fin)),
        "no DATA_FIN\n{}",
        out.dump()
    );

    let flow = out.flow_with_port(40001);
    assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
    assert_eq!(flow.role, Role::Client);
    assert_eq!(mptcp_len(&flow.handshake.syn), Some(4));
    assert_eq!(mptcp_len(&flow.handshake.syn_ack), Some(12));
    assert_eq!(mptcp_len(&flow.handshake.third_ack), Some(20));
    assert!(flow.fallback_evidence.is_empty(), "{flow:?}");

    // tshark, decoding the same interface's traffic, must count the same options each way.
    let mut tshark: BTreeMap<(Direction, Subtype), u64> = BTreeMap::new();
    for p in trace.iter().filter(|p| p.src_port == 40001 || p.dst_port == 40001) {
        let dir = if p.src_port == 40001 { Direction::Tx } else { Direction::Rx };
        for (st, _) in &p.mptcp {
            *tshark.entry((dir, *st)).or_default() += 1;
        }
    }
    let mut probe: BTreeMap<(Direction, Subtype), u64> = BTreeMap::new();
    for dir in [Direction::Tx, Direction::Rx] {
        for (st, n) in flow.options.get(dir) {
            probe.insert((dir, *st), u64::from(*n));
        }
    }
    assert!(!tshark.is_empty(), "tshark saw no MPTCP options");
    assert_eq!(probe, tshark, "option counts per direction differ from tshark's");
    // And the handshake lengths agree with tshark's decoding too.
    let ts_syn = trace.iter().find(|p| p.src_port == 40001 && p.syn && !p.ack).expect("tshark SYN");
    assert_eq!(ts_syn.mptcp, vec![(Subtype::MpCapable, 4)]);
    let ts_synack = trace.iter().find(|p| p.dst_port == 40001 && p.syn && p.ack).expect("tshark SYN/ACK");
    assert_eq!(ts_synack.mptcp, vec![(Subtype::MpCapable, 12)]);

    let counters = out.counters();
    let kernel = |i: u32| counters.kernel.get(counters::NAMES[i as usize]).copied();
    assert_eq!(kernel(counters::RINGBUF_DROPS), Some(0), "{counters:?}");
    assert!(kernel(counters::PACKETS_INSPECTED).unwrap_or(0) > 0, "{counters:?}");

    // The header-only trace: one frame per reported packet, tshark decodes the same MPTCP
    // handshake from it, and no frame holds a byte of payload.
    let frames = oracle::frame_lengths(&pcap);
    assert_eq!(frames.len(), out.packets().count(), "one frame per packet event");
    for (cap_len, len, ip_hdr, tcp_hdr) in &frames {
        assert_eq!(*cap_len, ip_hdr + tcp_hdr, "a frame holds more than headers: {frames:?}");
        assert!(len >= cap_len);
    }
    assert!(frames.iter().any(|(c, l, ..)| l > c), "no data segment in the trace");
    let traced = oracle::decode(&pcap);
    let t_syn = traced.iter().find(|p| p.src_port == 40001 && p.syn && !p.ack).expect("SYN in the trace");
    assert_eq!(t_syn.mptcp, vec![(Subtype::MpCapable, 4)]);
    assert!(
        traced.iter().any(|p| p.src_port == 40001 && !p.syn && p.mptcp.contains(&(Subtype::MpCapable, 20))),
        "third ACK with MP_CAPABLE/20 not in the trace"
    );
}

#[test]
fn a_clean_connection_is_one_compact_summary_and_its_handshake_in_the_trace() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let dir = mptcp_probe_tests::probe::TempDir::new("trace");
    let pcap = dir.0.join("probe.pcapng");
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--pcap", pcap.to_str().unwrap()]);
    let res = peer::client(&lab.c, &server, 300_000, 40005, false);
    assert_eq!(res["is_mptcp"], 1, "the peers themselves did not speak MPTCP: {res}");
    std::thread::sleep(Duration::from_millis(1500));
    let out = watch.stop();
    assert_eq!(out.exit_code, Some(0), "{}", out.dump());
    let flow = out.flow_with_port(40005);
    assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
    // Linux here sometimes sends data again at the MPTCP level even on a clean path (the
    // client's MPTCPRetrans says so): then the connection is not clean, and must be named so.
    if out.counters().mib_delta.get("MPTCPRetrans").copied().unwrap_or(0) > 0 {
        assert!(flow.mptcp_retransmissions.tx > 0 && flow.troubled(), "{flow:?}");
        return;
    }
    assert!(!flow.troubled(), "{flow:?}");
    assert_eq!(out.packets_with_port(40005).len(), 0, "a clean connection prints no events:\n{}", out.dump());
    // The summary is compact: nothing that is nothing.
    let line =
        out.raw_lines().into_iter().find(|l| l.contains("\"type\":\"flow\"") && l.contains("40005")).unwrap();
    for absent in ["null", ":0,", ":false", "\"rst\"", "\"fallback_evidence\""] {
        assert!(!line.contains(absent), "{absent:?} in the summary {line}");
    }
    // The trace holds its handshake: SYN, SYN/ACK, third ACK.
    let traced = oracle::decode(&pcap);
    let of_flow: Vec<_> = traced.iter().filter(|p| p.src_port == 40005 || p.dst_port == 40005).collect();
    assert_eq!(of_flow.len(), 3, "{of_flow:?}");
    assert!(of_flow[0].syn && !of_flow[0].ack && of_flow[0].mptcp == vec![(Subtype::MpCapable, 4)]);
    assert!(of_flow[1].syn && of_flow[1].ack && of_flow[1].mptcp == vec![(Subtype::MpCapable, 12)]);
    assert!(!of_flow[2].syn && of_flow[2].mptcp == vec![(Subtype::MpCapable, 20)]);
}

#[test]
fn flows_only_reports_the_end_of_a_clean_connection_and_nothing_else() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--flows-only"]);
    let res = peer::client(&lab.c, &server, 300_000, 40006, false);
    assert_eq!(res["is_mptcp"], 1, "the peers themselves did not speak MPTCP: {res}");
    std::thread::sleep(Duration::from_millis(1500));
    let out = watch.stop();
    assert_eq!(out.exit_code, Some(0), "{}", out.dump());
    assert_eq!(out.events().count(), 0, "{}", out.dump());
    let flow = out.flow_with_port(40006);
    assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
    assert_eq!(flow.ended, mptcp_probe_model::Ended::Fin, "{flow:?}");
    assert_eq!(mptcp_len(&flow.handshake.syn), Some(4));
    assert_eq!(mptcp_len(&flow.handshake.third_ack), Some(20));
    assert!(flow.payload_bytes.tx >= 300_000, "the fast path's totals are in the summary: {flow:?}");
    // The kernel reported the flow's end and nothing of its handshake or data: beside what the
    // reset tracepoints reported (host-wide resets without a socket, at most one event a hit),
    // one or two events.
    let counters = out.counters();
    let k = |i: u32| counters.kernel.get(counters::NAMES[i as usize]).copied().unwrap_or(0);
    let from_tc = k(counters::EVENTS_EMITTED).saturating_sub(k(counters::TRACEPOINT_HITS));
    assert!(from_tc <= 2 && k(counters::EVENTS_EMITTED) >= 1, "{counters:?}");
    assert!(k(counters::FAST_PATH) > 0, "the transfer took the fast path: {counters:?}");
    assert!(
        out.stderr.contains("tracepoints: tcp:tcp_send_reset"),
        "no socket-state tracepoint: {}",
        out.stderr
    );
}

#[test]
fn ipv6_mptcp_flow_is_established() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let server = format!("[{}]:8081", addr::SERVER_V6);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--flows-only"]);
    let res = peer::client(&lab.c, &server, 50_000, 40011, false);
    assert_eq!(res["is_mptcp"], 1, "{res}");
    std::thread::sleep(Duration::from_millis(1200));
    let out = watch.stop();
    let flow = out.flow_with_port(40011);
    assert_eq!(flow.ip_version, 6, "{flow:?}");
    assert_eq!(flow.local_addr, addr::CLIENT1_V6.parse::<IpAddr>().unwrap());
    assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
}

/// The socket-state events of a client's MPTCP connection over IPv4 and over IPv6 name its
/// endpoints, its namespace and each socket's protocol, through its end: the closing states
/// come after the kernel released the local port (the port must still be the connection's).
#[test]
fn socket_states_name_the_connection_through_its_close_over_ipv4_and_ipv6() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let v4 = format!("{}:8084", addr::SERVER);
    let v6 = format!("[{}]:8085", addr::SERVER_V6);
    let _s4 = peer::server(&lab.s, &v4, 1, false);
    let _s6 = peer::server(&lab.s, &v6, 1, false);
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--events"]);
    for (server, port) in [(&v4, 40031), (&v6, 40032)] {
        let res = peer::client(&lab.c, server, 20_000, port, false);
        assert_eq!(res["is_mptcp"], 1, "{res}");
    }
    std::thread::sleep(Duration::from_millis(1200));
    let out = watch.stop();
    for (local, remote) in [
        (format!("{}:40031", addr::CLIENT1), v4.clone()),
        (format!("[{}]:40032", addr::CLIENT1_V6), v6.clone()),
    ] {
        let states: Vec<_> = out
            .events()
            .filter_map(|e| match e {
                Event::SockState(s) if s.local == local => Some(s),
                _ => None,
            })
            .collect();
        for s in &states {
            assert_eq!(s.remote, remote, "{s:?}\n{}", out.dump());
            assert_ne!(s.netns, 0, "{s:?}");
        }
        let has = |p: SocketProtocol, old: TcpState, new: TcpState| {
            states.iter().any(|s| s.protocol == p && s.old_state == old && s.new_state == new)
        };
        use TcpState::*;
        for (p, old, new) in [
            (SocketProtocol::Tcp, SynSent, Established),
            (SocketProtocol::Mptcp, SynSent, Established),
            (SocketProtocol::Tcp, FinWait2, Close),
            (SocketProtocol::Mptcp, FinWait2, Close),
        ] {
            assert!(has(p, old, new), "{local}: no {p:?} {old:?} -> {new:?} in {states:#?}\n{}", out.dump());
        }
    }
}

#[test]
fn syn_option_stripped_is_fallback_at_the_client_and_a_plain_syn_at_the_server() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _mb = scenario::apply(&lab, scenario::named("syn-strip"), &MIDDLEBOX.path()).unwrap();
    let server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let client_watch = Watcher::start(&lab.c, &["--iface", ifname::C1]);
    let server_watch = Watcher::start(&lab.s, &["--iface", ifname::S]);
    let res = peer::client(&lab.c, &server, 20_000, 40002, false);
    assert_eq!(res["is_mptcp"], 0, "the middlebox did not strip the option: {res}");
    assert_eq!(res["intact"], true, "{res}");
    std::thread::sleep(Duration::from_millis(1200));
    let c = client_watch.stop();
    let s = server_watch.stop();

    let cf = c.flow_with_port(40002);
    assert_eq!(cf.mptcp, MptcpState::Fallback, "{cf:?}");
    assert_eq!(mptcp_subtype(&cf.handshake.syn), Some(Subtype::MpCapable));
    assert_eq!(mptcp_subtype(&cf.handshake.syn_ack), None, "{cf:?}");
    assert_eq!(cf.fallback_evidence, vec!["SYN sent with MP_CAPABLE, SYN/ACK received without"]);

    // The kernel's own counter for this fallback moved in the client's namespace.
    let mib = &c.counters().mib_delta;
    assert!(mib.get("MPCapableFallbackSYNACK").copied().unwrap_or(0) >= 1, "{mib:?}");

    let sf = s.flow_with_port(40002);
    assert_eq!(sf.role, Role::Server);
    assert_eq!(sf.mptcp, MptcpState::NotNegotiated, "{sf:?}");
    assert_eq!(mptcp_subtype(&sf.handshake.syn), None, "server saw MP_CAPABLE on the SYN: {sf:?}");
    assert_eq!(sf.fallback_evidence, vec!["SYN received without MP_CAPABLE"]);
    let packets = s.packets_with_port(40002);
    let syn = packets.iter().find(|p| why(p, Why::Syn)).expect("server SYN event");
    assert!(mptcp_opt(syn, Subtype::MpCapable).is_none(), "{syn:?}");
    // Kept until the summary said the connection was troubled, then printed as seen.
    assert_eq!((syn.iface.as_str(), syn.netns != 0), (ifname::S, true), "{syn:?}");
}

#[test]
fn unmodified_curl_under_mptcpize_is_seen_as_mptcp() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _http = peer::mptcpize_http_server(&lab.s, addr::SERVER);
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--flows-only"]);
    let status = peer::mptcpize_curl(&lab.c, &format!("http://{}:80/", addr::SERVER), 40021);
    assert_eq!(status, "200");
    std::thread::sleep(Duration::from_millis(1200));
    let w = watch.stop();
    let flow = w.flow_with_port(40021);
    assert_eq!(flow.remote_port, 80);
    assert_eq!(flow.mptcp, MptcpState::Established, "{flow:?}");
    assert_eq!(mptcp_subtype(&flow.handshake.syn), Some(Subtype::MpCapable));
    assert!(flow.options.rx.get(&Subtype::Dss).copied().unwrap_or(0) > 0, "{flow:?}");
}

#[test]
fn sigint_and_sigterm_detach_every_program() {
    skip_unless_e2e!();
    let lab = Lab::up();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--iface", ifname::C2]);
        let attached = attached_programs(&lab.c, ifname::C1);
        assert!(
            attached.contains("tc_ingress") && attached.contains("tc_egress"),
            "not attached: {attached}"
        );
        let out = watch.stop_with(sig);
        assert_eq!(out.exit_code, Some(0), "{}", out.dump());
        for dev in [ifname::C1, ifname::C2] {
            assert_eq!(attached_programs(&lab.c, dev), "", "left behind on {dev} after signal {sig}");
        }
    }
}

#[test]
fn interfaces_that_come_up_later_are_picked_up() {
    skip_unless_e2e!();
    let ns = Netns::new(&format!("mpp-late-{}", std::process::id()));
    let mut watch = Watcher::start(&ns, &[]);
    sh(ns.cmd("ip").args(["link", "add", "late0", "type", "veth", "peer", "name", "late1"]));
    sh(ns.cmd("ip").args(["link", "set", "late0", "up"]));
    sh(ns.cmd("ip").args(["link", "set", "late1", "up"]));
    watch.wait_for_log("observing late0", Duration::from_secs(15));
    assert!(attached_programs(&ns, "late0").contains("tc_ingress"), "late0 not attached");
    let out = watch.stop();
    assert_eq!(out.exit_code, Some(0), "{}", out.dump());
    assert_eq!(attached_programs(&ns, "late0"), "");
}

/// An interface without a link layer (a TUN device, as a VPN has) gets the programs for it,
/// verified when it first needs them.
#[test]
fn an_interface_without_a_link_layer_is_observed() {
    skip_unless_e2e!();
    let ns = Netns::new(&format!("mpp-tun-{}", std::process::id()));
    sh(ns.cmd("ip").args(["tuntap", "add", "dev", "tun0", "mode", "tun"]));
    sh(ns.cmd("ip").args(["link", "set", "tun0", "up"]));
    let mut watch = Watcher::start(&ns, &["--iface", "tun0"]);
    watch.wait_for_log("observing tun0", Duration::from_secs(30));
    let attached = attached_programs(&ns, "tun0");
    assert!(attached.contains("tc_ingress_l3") && attached.contains("tc_egress_l3"), "{attached}");
    let out = watch.stop();
    assert_eq!(out.exit_code, Some(0), "{}", out.dump());
    assert!(out.stderr.contains("no link layer"), "{}", out.stderr);
    assert_eq!(attached_programs(&ns, "tun0"), "");
}

fn probe_in(ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.cmd(mptcp_probe_tests::probe_bin()).args(args).output().unwrap()
}

#[test]
fn unknown_interface_is_named_and_exits_1() {
    skip_unless_e2e!();
    let ns = Netns::new(&format!("mpp-err-{}", std::process::id()));
    let o = probe_in(&ns, &["watch", "--iface", "nosuch0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown interface \"nosuch0\""), "{err}");
}

#[test]
fn mptcp_disabled_in_the_namespace_is_named() {
    skip_unless_e2e!();
    let ns = Netns::new(&format!("mpp-off-{}", std::process::id()));
    ns.sysctl("net.mptcp.enabled=0");
    let o = probe_in(&ns, &["watch", "--iface", "lo"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("net.mptcp.enabled=0"), "{err}");
}

#[test]
fn missing_privileges_name_the_capabilities() {
    skip_unless_e2e!();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(mptcp_probe_tests::probe_bin())
        .args(["watch", "--iface", "lo"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    skip_unless_e2e!(binaries);
    let o = Command::new(mptcp_probe_tests::probe_bin())
        .args(["watch", "--flow-table-size", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(mptcp_probe_tests::probe_bin()).args(["watch", "--bogus"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unwritable_trace_file_is_named_before_anything_loads() {
    skip_unless_e2e!();
    let ns = Netns::new(&format!("mpp-pcap-{}", std::process::id()));
    let o = probe_in(&ns, &["watch", "--iface", "lo", "--pcap", "/nonexistent-dir/trace.pcapng"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot write the trace file /nonexistent-dir/trace.pcapng"), "{err}");
    assert!(!err.contains("watching"), "{err}");
}

#[test]
fn a_flow_quiet_for_the_idle_timeout_is_summarised_while_still_open() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let server = format!("{}:8082", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--flows-only", "--idle-timeout", "1"]);
    let res = peer::client_holding(&lab.c, &server, 10_000, 40031, false, 4);
    assert_eq!(res["intact"], true, "{res}");
    std::thread::sleep(Duration::from_millis(1000));
    let out = watch.stop();
    let idle: Vec<_> = out.flows().filter(|f| f.local_port == 40031 && f.ended == Ended::Idle).collect();
    assert_eq!(idle.len(), 1, "expected one idle summary\n{}", out.dump());
    assert_eq!(idle[0].mptcp, MptcpState::Established);
    assert_eq!(mptcp_len(&idle[0].handshake.syn), Some(4));
}
