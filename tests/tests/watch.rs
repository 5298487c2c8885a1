//! End-to-end scenarios of `mptcp-probe watch` in network namespaces (root needed).

use std::{collections::BTreeMap, process::Command, time::Duration};

use mptcp_probe_tests::{
    lab::{addr, ifname, sh, Child, Lab, Netns},
    oracle::{self, Capture},
    peer,
    probe::Watcher,
    require_root, scenario,
};
use serde_json::Value;

const SUBTYPES: [&str; 9] = [
    "mp_capable",
    "mp_join",
    "dss",
    "add_addr",
    "remove_addr",
    "mp_prio",
    "mp_fail",
    "mp_fastclose",
    "mp_tcprst",
];

/// The packet events of a flow (by client port), in order.
fn packets_of(out: &mptcp_probe_tests::probe::WatchOutput, port: u16) -> Vec<Value> {
    out.packets().filter(|p| p["local_port"] == port || p["remote_port"] == port).cloned().collect()
}

fn why(p: &Value, w: &str) -> bool {
    p["why"].as_array().map(|a| a.iter().any(|x| x == w)).unwrap_or(false)
}

fn mptcp_opt<'a>(p: &'a Value, subtype: &str) -> Option<&'a Value> {
    p["mptcp_options"].as_array()?.iter().find(|o| o["subtype"] == subtype)
}

#[test]
fn clean_mptcp_transfer_is_seen_with_rfc8684_lengths_and_agrees_with_tshark() {
    require_root();
    let lab = Lab::up();
    let server = format!("{}:8080", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let dir = mptcp_probe_tests::probe::TempDir::new("trace");
    let pcap = dir.0.join("probe.pcapng");
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--pcap", pcap.to_str().unwrap()]);
    let cap = Capture::start(&lab.c, ifname::C1);
    let res = peer::client(&lab.c, &server, 300_000, 40001, false);
    assert_eq!(res["is_mptcp"], 1, "the peers themselves did not speak MPTCP: {res}");
    assert_eq!(res["intact"], true, "{res}");
    std::thread::sleep(Duration::from_millis(1500));
    let trace = cap.finish();
    let out = watch.stop();
    assert_eq!(out.exit_code, Some(0), "{}", out.dump());

    let pk = packets_of(&out, 40001);
    let syn = pk.iter().find(|p| why(p, "syn")).unwrap_or_else(|| panic!("no SYN event\n{}", out.dump()));
    assert_eq!(syn["direction"], "tx");
    assert_eq!(mptcp_opt(syn, "mp_capable").expect("MP_CAPABLE on SYN")["len"], 4);
    let synack = pk.iter().find(|p| why(p, "syn_ack")).expect("SYN/ACK event");
    assert_eq!(synack["direction"], "rx");
    assert_eq!(mptcp_opt(synack, "mp_capable").expect("MP_CAPABLE on SYN/ACK")["len"], 12);
    let ack = pk.iter().find(|p| why(p, "third_ack")).expect("third ACK event");
    assert_eq!(ack["direction"], "tx");
    assert_eq!(mptcp_opt(ack, "mp_capable").expect("MP_CAPABLE on third ACK")["len"], 20);
    assert!(
        pk.iter().any(|p| why(p, "first_dss") && mptcp_opt(p, "dss").is_some()),
        "no DSS event\n{}",
        out.dump()
    );
    assert!(
        pk.iter().any(|p| mptcp_opt(p, "dss").map(|d| d["data_fin"] == true).unwrap_or(false)),
        "no DATA_FIN\n{}",
        out.dump()
    );

    let flow = out.flow_with_port(40001);
    assert_eq!(flow["mptcp"], "established", "{flow}");
    assert_eq!(flow["role"], "client");
    assert_eq!(flow["handshake"]["syn"]["mptcp_len"], 4);
    assert_eq!(flow["handshake"]["syn_ack"]["mptcp_len"], 12);
    assert_eq!(flow["handshake"]["third_ack"]["mptcp_len"], 20);
    assert!(flow["fallback_evidence"].as_array().unwrap().is_empty(), "{flow}");

    // tshark, decoding the same interface's traffic, must count the same options each way.
    let mut tshark: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for p in trace.iter().filter(|p| p.src_port == 40001 || p.dst_port == 40001) {
        let dir = if p.src_port == 40001 { "tx" } else { "rx" };
        for (st, _) in &p.mptcp {
            *tshark.entry((dir, SUBTYPES[*st as usize])).or_default() += 1;
        }
    }
    let mut probe: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for dir in ["tx", "rx"] {
        for (name, n) in flow["options"][dir].as_object().unwrap() {
            let name = SUBTYPES.iter().find(|s| **s == name).expect("known subtype");
            probe.insert((dir, name), n.as_u64().unwrap());
        }
    }
    assert!(!tshark.is_empty(), "tshark saw no MPTCP options");
    assert_eq!(probe, tshark, "option counts per direction differ from tshark's");
    // And the handshake lengths agree with tshark's decoding too.
    let ts_syn = trace.iter().find(|p| p.src_port == 40001 && p.syn && !p.ack).expect("tshark SYN");
    assert_eq!(ts_syn.mptcp, vec![(0, 4)]);
    let ts_synack = trace.iter().find(|p| p.dst_port == 40001 && p.syn && p.ack).expect("tshark SYN/ACK");
    assert_eq!(ts_synack.mptcp, vec![(0, 12)]);

    let counters = out.counters();
    assert_eq!(counters["kernel"]["ringbuf_dropped_events"], 0, "{counters}");
    assert!(counters["kernel"]["packets_inspected"].as_u64().unwrap() > 0);

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
    assert_eq!(t_syn.mptcp, vec![(0, 4)]);
    assert!(
        traced.iter().any(|p| p.src_port == 40001 && !p.syn && p.mptcp.contains(&(0, 20))),
        "third ACK with MP_CAPABLE/20 not in the trace"
    );
}

#[test]
fn ipv6_mptcp_flow_is_established() {
    require_root();
    let lab = Lab::up();
    let server = format!("[{}]:8081", addr::SERVER_V6);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1]);
    let res = peer::client(&lab.c, &server, 50_000, 40011, false);
    assert_eq!(res["is_mptcp"], 1, "{res}");
    std::thread::sleep(Duration::from_millis(1200));
    let out = watch.stop();
    let flow = out.flow_with_port(40011);
    assert_eq!(flow["ip_version"], 6, "{flow}");
    assert_eq!(flow["local_addr"], addr::CLIENT1_V6);
    assert_eq!(flow["mptcp"], "established", "{flow}");
}

#[test]
fn syn_option_stripped_is_fallback_at_the_client_and_a_plain_syn_at_the_server() {
    require_root();
    let lab = Lab::up();
    let _mb = scenario::apply(&lab, scenario::named("syn-strip")).unwrap();
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
    assert_eq!(cf["mptcp"], "fallback", "{cf}");
    assert_eq!(cf["handshake"]["syn"]["mptcp"], "mp_capable");
    assert!(cf["handshake"]["syn_ack"]["mptcp"].is_null(), "{cf}");
    let ev: Vec<&str> =
        cf["fallback_evidence"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(ev, vec!["SYN sent with MP_CAPABLE, SYN/ACK received without"]);

    // The kernel's own counter for this fallback moved in the client's namespace.
    let mib = &c.counters()["mib_delta"];
    assert!(mib["MPCapableFallbackSYNACK"].as_u64().unwrap_or(0) >= 1, "{mib}");

    let sf = s.flow_with_port(40002);
    assert_eq!(sf["role"], "server");
    assert_eq!(sf["mptcp"], "not_negotiated", "{sf}");
    assert!(sf["handshake"]["syn"]["mptcp"].is_null(), "server saw MP_CAPABLE on the SYN: {sf}");
    let ev: Vec<&str> =
        sf["fallback_evidence"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(ev, vec!["SYN received without MP_CAPABLE"]);
    let syn = packets_of(&s, 40002).into_iter().find(|p| why(p, "syn")).expect("server SYN event");
    assert!(mptcp_opt(&syn, "mp_capable").is_none(), "{syn}");
}

#[test]
fn unmodified_curl_under_mptcpize_is_seen_as_mptcp() {
    require_root();
    let lab = Lab::up();
    let _http = Child::spawn(
        lab.s
            .cmd("mptcpize")
            .args(["run", "python3", "-m", "http.server", "80", "--bind", addr::SERVER])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let mut up = false;
    for _ in 0..100 {
        let o = lab.s.cmd("ss").args(["-Hltn", "sport = :80"]).output().unwrap();
        if !o.stdout.is_empty() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "HTTP server did not start");
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1]);
    let out = sh(lab.c.cmd("mptcpize").args([
        "run",
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--local-port",
        "40021",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{}:80/", addr::SERVER),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    std::thread::sleep(Duration::from_millis(1200));
    let w = watch.stop();
    let flow = w.flow_with_port(40021);
    assert_eq!(flow["remote_port"], 80);
    assert_eq!(flow["mptcp"], "established", "{flow}");
    assert_eq!(flow["handshake"]["syn"]["mptcp"], "mp_capable");
    assert!(flow["options"]["rx"]["dss"].as_u64().unwrap_or(0) > 0, "{flow}");
}

/// Programs attached to `dev`, by TCX (as the kernel lists them) and by tc (clsact filters).
fn tc_state(ns: &Netns, dev: &str) -> String {
    let o = sh(ns.cmd(mptcp_probe_tests::peer_bin()).args(["tcx", "--iface", dev]));
    let tcx: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut s = String::new();
    for dir in ["ingress", "egress"] {
        if !tcx[dir].as_array().unwrap().is_empty() {
            s.push_str(&format!("tcx {dir}: {} ", tcx[dir]));
        }
        let o = ns.cmd("tc").args(["filter", "show", "dev", dev, dir]).output().unwrap();
        s.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    s
}

#[test]
fn sigint_and_sigterm_detach_every_program() {
    require_root();
    let lab = Lab::up();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--iface", ifname::C2]);
        let attached = tc_state(&lab.c, ifname::C1);
        assert!(
            attached.contains("tc_ingress") && attached.contains("tc_egress"),
            "not attached: {attached}"
        );
        let out = watch.stop_with(sig);
        assert_eq!(out.exit_code, Some(0), "{}", out.dump());
        for dev in [ifname::C1, ifname::C2] {
            assert_eq!(tc_state(&lab.c, dev), "", "left behind on {dev} after signal {sig}");
        }
    }
}

#[test]
fn interfaces_that_come_up_later_are_picked_up() {
    require_root();
    let ns = Netns::new(&format!("mpp-late-{}", std::process::id()));
    let mut watch = Watcher::start(&ns, &[]);
    sh(ns.cmd("ip").args(["link", "add", "late0", "type", "veth", "peer", "name", "late1"]));
    sh(ns.cmd("ip").args(["link", "set", "late0", "up"]));
    sh(ns.cmd("ip").args(["link", "set", "late1", "up"]));
    watch.wait_for_log("observing late0", Duration::from_secs(15));
    assert!(tc_state(&ns, "late0").contains("tc_ingress"), "late0 not attached");
    let out = watch.stop();
    assert_eq!(out.exit_code, Some(0), "{}", out.dump());
    assert_eq!(tc_state(&ns, "late0"), "");
}

fn probe_in(ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.cmd(mptcp_probe_tests::probe_bin()).args(args).output().unwrap()
}

#[test]
fn unknown_interface_is_named_and_exits_1() {
    require_root();
    let ns = Netns::new(&format!("mpp-err-{}", std::process::id()));
    let o = probe_in(&ns, &["watch", "--iface", "nosuch0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown interface \"nosuch0\""), "{err}");
}

#[test]
fn mptcp_disabled_in_the_namespace_is_named() {
    require_root();
    let ns = Netns::new(&format!("mpp-off-{}", std::process::id()));
    ns.sysctl("net.mptcp.enabled=0");
    let o = probe_in(&ns, &["watch", "--iface", "lo"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("net.mptcp.enabled=0"), "{err}");
}

#[test]
fn missing_privileges_name_the_capabilities() {
    require_root();
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
    require_root();
    let ns = Netns::new(&format!("mpp-pcap-{}", std::process::id()));
    let o = probe_in(&ns, &["watch", "--iface", "lo", "--pcap", "/nonexistent-dir/trace.pcapng"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot write the trace file /nonexistent-dir/trace.pcapng"), "{err}");
    assert!(!err.contains("watching"), "{err}");
}

#[test]
fn a_flow_quiet_for_the_idle_timeout_is_summarised_while_still_open() {
    require_root();
    let lab = Lab::up();
    let server = format!("{}:8082", addr::SERVER);
    let _srv = peer::server(&lab.s, &server, 1, false);
    let watch = Watcher::start(&lab.c, &["--iface", ifname::C1, "--idle-timeout", "1"]);
    let res = peer::client_holding(&lab.c, &server, 10_000, 40031, false, 4);
    assert_eq!(res["intact"], true, "{res}");
    std::thread::sleep(Duration::from_millis(1000));
    let out = watch.stop();
    let idle: Vec<&Value> =
        out.flows().filter(|f| f["local_port"] == 40031 && f["ended"] == "idle").collect();
    assert_eq!(idle.len(), 1, "expected one idle summary\n{}", out.dump());
    assert_eq!(idle[0]["mptcp"], "established");
    assert_eq!(idle[0]["handshake"]["syn"]["mptcp_len"], 4);
}
