//! End-to-end scenarios of `mptcp-probe serve` + `mptcp-probe check`: server and client in
//! different namespaces through a router namespace (root needed). Reports are read through the
//! data model and checked against docs/report.schema.json.

use std::{net::IpAddr, process::Stdio, time::Duration};

use mptcp_probe_model::{
    End, MptcpState, ObserverKind, Outcome, Packet, Report, Subtype, TestName, TestResult, Transport,
    Verdict, SCHEMA,
};
use mptcp_probe_tests::{
    lab::{addr, Child, Lab, Netns},
    matrix, probe_bin, scenario, schema, skip_unless_e2e,
    workspace::MIDDLEBOX,
};
use serde_json::Value;

/// Starts `serve` in the server namespace and waits until it is ready.
fn serve(lab: &Lab) -> (Child, mptcp_probe_tests::probe::TempDir) {
    matrix::serve(&lab.s, &probe_bin()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Applies a scenario's middlebox in the router.
fn apply(lab: &Lab, name: &str) -> scenario::Applied {
    scenario::apply(lab, scenario::named(name), &MIDDLEBOX.path()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A report `check --json` printed: as the data model reads it, and as printed.
struct Checked {
    report: Report,
    json: Value,
    stderr: String,
}

/// Runs `check --json` in the client namespace; it must succeed.
fn check(ns: &Netns, server: &str, extra: &[&str]) -> Checked {
    let out = ns
        .cmd(probe_bin())
        .args(["check", "--server", server, "--json", "--bulk-bytes", "300000"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "check failed:\n{stderr}");
    let (report, json) = schema::read_report(&out.stdout, &stderr);
    Checked { report, json, stderr }
}

fn mptcp_test(report: &Report, name: TestName) -> &TestResult {
    report
        .tests
        .iter()
        .find(|t| t.name == name && t.transport == Transport::Mptcp)
        .unwrap_or_else(|| panic!("no {name} over mptcp in {report:#?}"))
}

#[test]
fn clean_path_gives_mptcp_ok_only_over_ipv4_and_ipv6() {
    skip_unless_e2e!();
    let lab = Lab::up();
    lab.server_announces(addr::SERVER_EXTRA, addr::SERVER_EXTRA_V6);
    let _srv = serve(&lab);
    for server in [addr::SERVER, addr::SERVER_V6] {
        let Checked { report, json, stderr } = check(&lab.c, server, &[]);
        assert_eq!(report.summary.verdicts, vec![Verdict::MptcpOk], "{server}: {json:#}\n{stderr}");
        assert!(report.summary.mptcp_usable);
        assert_eq!(report.client.observer, ObserverKind::TcTracepoints);
        for t in &report.tests {
            assert_eq!(t.outcome, Outcome::Ok, "{t:#?}");
            if t.transport == Transport::Mptcp {
                assert_eq!(t.mptcp, MptcpState::Established, "{t:#?}");
                assert_eq!(t.verdicts, vec![Verdict::MptcpOk], "{t:#?}");
                assert_eq!(t.fallback_reason, None);
            } else {
                assert_eq!(t.mptcp, MptcpState::NotApplicable);
                // A plain-TCP run is plain TCP, every connection of it (FTP's data connections,
                // the active-mode one the server opens, included), at both ends.
                for c in &t.evidence.client.connections {
                    assert_eq!(c.is_mptcp, Some(false), "{}: {c:#?}", t.name);
                }
                if let Some(s) = &t.evidence.server {
                    assert_eq!(s.is_mptcp, Some(false), "{}: {s:#?}", t.name);
                }
            }
        }
        // Progress went to stderr while it ran.
        assert!(stderr.contains("http over mptcp"), "{stderr}");
        // The extra paths were used: a second subflow from the client's other address, and
        // the server's announced address accepted.
        let join = mptcp_test(&report, TestName::Join);
        assert!(join.subflows.unwrap_or(0) >= 2, "{join:#?}");
        let subflows = &join.evidence.client.connections[0].subflow_addrs;
        let second: IpAddr =
            if server.contains(':') { addr::CLIENT2_V6 } else { addr::CLIENT2 }.parse().unwrap();
        assert!(
            subflows.iter().any(|(local, _)| local.ip() == second),
            "no subflow from {second}: {subflows:?}"
        );
        let add = mptcp_test(&report, TestName::AddAddr);
        assert!(add.evidence.client.connections[0].add_addr_accepted.unwrap_or(0) >= 1, "{add:#?}");
        // Both ends counted the bulk upload's segments as on the wire, and agree.
        let bulk = mptcp_test(&report, TestName::Bulk);
        let sent = bulk.evidence.client.sent_segments.as_ref().expect("the client's sent segments");
        let got = bulk.evidence.server.as_ref().and_then(|s| s.segment_sizes.as_ref());
        let got = got.unwrap_or_else(|| panic!("the server's received segments: {bulk:#?}"));
        assert!(sent.count > 0, "{bulk:#?}");
        // The payload plus the test's preamble line.
        assert!(sent.bytes > 300000, "{bulk:#?}");
        assert_eq!((sent.count, sent.bytes), (got.count, got.bytes), "{bulk:#?}");
        // The host's path-manager configuration is as it was.
        let ep = lab.c.run("ip", &["mptcp", "endpoint", "show"]);
        assert!(ep.stdout.is_empty(), "endpoints left behind: {}", String::from_utf8_lossy(&ep.stdout));
        let lim = lab.c.run("ip", &["mptcp", "limits", "show"]);
        assert_eq!(String::from_utf8_lossy(&lim.stdout).trim(), "add_addr_accepted 0 subflows 2");
    }
}

#[test]
fn syn_option_stripped_is_named_with_the_servers_syn_as_evidence() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let _mb = apply(&lab, "syn-strip");
    let Checked { report, json, .. } = check(&lab.c, addr::SERVER, &["--tests", "handshake,http"]);
    assert_eq!(report.summary.verdicts, vec![Verdict::SynOptionStripped], "{json:#}");
    assert!(!report.summary.mptcp_usable);
    let t = mptcp_test(&report, TestName::Http);
    assert_eq!(t.mptcp, MptcpState::Fallback);
    assert_eq!(t.fallback_reason.as_deref(), Some("MPCapableFallbackSYNACK"));
    let f = &t.evidence.findings[0];
    assert_eq!(f.packet, Packet::Syn);
    assert_eq!(f.end, End::Server);
    assert_eq!(f.seen, "SYN without MP_CAPABLE");
}

#[test]
fn synack_option_stripped_is_named_with_the_clients_synack_as_evidence() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let _mb = apply(&lab, "synack-strip");
    let Checked { report, json, .. } = check(&lab.c, addr::SERVER, &["--tests", "handshake,http"]);
    assert_eq!(report.summary.verdicts, vec![Verdict::SynackOptionStripped], "{json:#}");
    let t = mptcp_test(&report, TestName::Handshake);
    assert_eq!(t.fallback_reason.as_deref(), Some("MPCapableFallbackSYNACK"));
    let f = &t.evidence.findings[0];
    assert_eq!(f.packet, Packet::SynAck);
    assert_eq!(f.end, End::Client);
    // The server's own account of why its side fell back.
    let server = t.evidence.server.as_ref().expect("the server's view");
    assert!(server.fallback_evidence.iter().any(|w| w.contains("third ACK received without")), "{t:#?}");
}

#[test]
fn without_the_observer_it_still_measures_and_says_what_it_cannot_establish() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let Checked { report, .. } = check(&lab.c, addr::SERVER, &["--tests", "handshake", "--no-observer"]);
    assert_eq!(report.client.observer, ObserverKind::None);
    assert_eq!(report.summary.verdicts, vec![Verdict::MptcpOk]);
    let cannot = &report.client.cannot_establish;
    assert!(cannot.contains(&Verdict::SynackOptionStripped), "{cannot:?}");
}

#[test]
fn unreachable_server_is_a_clear_error_with_exit_1() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let out = lab.c.cmd(probe_bin()).args(["check", "--server", addr::SERVER, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the mptcp-probe server's control port"), "{err}");
    assert!(out.stdout.is_empty(), "no report when nothing was measured");
}

#[test]
fn dropped_mptcp_syns_are_named_and_the_blackhole_state_is_undone() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let _mb = apply(&lab, "syn-drop");
    let Checked { report, json, .. } = check(&lab.c, addr::SERVER, &["--tests", "handshake,http"]);
    assert_eq!(report.summary.verdicts, vec![Verdict::MptcpSynDropped], "{json:#}");
    for name in [TestName::Handshake, TestName::Http] {
        let t = mptcp_test(&report, name);
        assert_eq!(t.outcome, Outcome::Ok, "the kernel retried without MPTCP: {t:#?}");
        assert_eq!(t.fallback_reason.as_deref(), Some("MPCapableSYNTXDrop"));
        assert!(t.evidence.findings[0].seen.contains("3 SYN(s) with MP_CAPABLE"), "{t:#?}");
    }
    let notes = &report.client.host_state;
    assert!(notes.iter().any(|n| n.contains("blackhole")), "{notes:?}");
    // MPTCP is not left disabled: a new connection asks for it again (it is dropped again, so
    // the kernel counts another MP_CAPABLE SYN and no SYN sent without it for being disabled).
    scenario::clear_rules(&lab.m).unwrap();
    let before = nstat(&lab.c, "MPTcpExtMPCapableSYNTXDisabled");
    let Checked { report, json, .. } = check(&lab.c, addr::SERVER, &["--tests", "handshake"]);
    assert_eq!(report.summary.verdicts, vec![Verdict::MptcpOk], "{json:#}");
    assert_eq!(nstat(&lab.c, "MPTcpExtMPCapableSYNTXDisabled"), before);
}

#[test]
fn reset_mptcp_syns_are_named() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let _mb = apply(&lab, "syn-reset");
    let Checked { report, json, .. } = check(&lab.c, addr::SERVER, &["--tests", "handshake"]);
    assert_eq!(report.summary.verdicts, vec![Verdict::MptcpReset], "{json:#}");
    let t = mptcp_test(&report, TestName::Handshake);
    assert!(matches!(t.outcome, Outcome::Refused | Outcome::Reset), "{t:#?}");
    assert!(!report.summary.mptcp_usable);
}

fn nstat(ns: &Netns, counter: &str) -> u64 {
    let out = ns.run("nstat", &["-az", counter]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(counter).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A stand-in collector on the client's loopback: stores what it is sent, answers `status`.
fn fake_collector(ns: &Netns, port: u16, status: u16, dir: &std::path::Path) -> Child {
    let script = format!(
        r#"
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        open('{dir}/upload.json', 'wb').write(body)
        self.send_response({status})
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(json.dumps({{"id": "r1", "token": "t1", "url": "/reports/r1"}} if {status} == 201 else {{"error": "refused"}}).encode())
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(json.dumps({{"protocol": 99, "server_version": "9.9.9", "observer": False, "ports": {{}}, "announced": []}}).encode())
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()
"#,
        dir = dir.display()
    );
    let child =
        Child::spawn(ns.cmd("python3").args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::null()));
    for _ in 0..100 {
        let o = ns.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]).output().unwrap();
        if !o.stdout.is_empty() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fake collector did not start");
}

#[test]
fn the_report_is_uploaded_and_a_refused_upload_loses_nothing() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let dir = mptcp_probe_tests::probe::TempDir::new("upload");
    let _ok = fake_collector(&lab.c, 18081, 201, &dir.0);
    let Checked { json, stderr, .. } = check(
        &lab.c,
        addr::SERVER,
        &["--tests", "handshake", "--upload", "http://127.0.0.1:18081/api/v1/reports"],
    );
    let uploaded: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("upload.json")).unwrap()).unwrap();
    assert_eq!(uploaded, json, "the collector got the report as printed");
    assert!(stderr.contains("uploaded: /reports/r1\n"), "the report's page, as answered: {stderr}");

    let _refusing = fake_collector(&lab.c, 18082, 400, &dir.0);
    let out = lab
        .c
        .cmd(probe_bin())
        .args([
            "check",
            "--server",
            addr::SERVER,
            "--json",
            "--tests",
            "handshake",
            "--upload",
            "http://127.0.0.1:18082/api/v1/reports",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the report (400 Bad Request: "), "{err}");
    let (printed, _) = schema::read_report(&out.stdout, &err);
    assert_eq!(printed.schema, SCHEMA, "the report is still printed");
}

#[test]
fn the_trace_holds_the_test_connections_headers_only() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let dir = mptcp_probe_tests::probe::TempDir::new("checkpcap");
    let pcap = dir.0.join("check.pcapng");
    let Checked { report, .. } =
        check(&lab.c, addr::SERVER, &["--tests", "handshake,http", "--pcap", pcap.to_str().unwrap()]);
    let frames = mptcp_probe_tests::oracle::frame_lengths(&pcap);
    assert!(!frames.is_empty(), "empty trace");
    for (cap, len, ip_hdr, tcp_hdr) in &frames {
        assert_eq!(*cap, ip_hdr + tcp_hdr, "payload in the trace");
        assert!(len >= cap);
    }
    let http = mptcp_test(&report, TestName::Http);
    let port = http.evidence.client.connections[0].local.expect("the http test's local address").port();
    let packets = mptcp_probe_tests::oracle::decode(&pcap);
    let syn = packets.iter().find(|p| p.src_port == port && p.syn && !p.ack).expect("the http test's SYN");
    assert_eq!(syn.mptcp, vec![(Subtype::MpCapable, 4)]);
}

#[test]
fn a_wrong_port_or_another_protocol_version_is_named() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let run = |args: &[&str]| {
        let out = lab.c.cmd(probe_bin()).args(["check", "--server"]).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // The HTTP test port is not the control port.
    let (code, err) = run(&[addr::SERVER, "--control-port", "80"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not an mptcp-probe server"), "{err}");
    // A server speaking another protocol version.
    let dir = mptcp_probe_tests::probe::TempDir::new("version");
    let _other = fake_collector(&lab.c, 18083, 201, &dir.0);
    let (code, err) = run(&["127.0.0.1", "--control-port", "18083"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("speaks test protocol 99 (mptcp-probe 9.9.9)"), "{err}");
}

#[test]
fn an_unprivileged_user_still_gets_a_report_on_socket_and_server_evidence() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let out = lab
        .c
        .cmd("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(probe_bin())
        .args(["check", "--server", addr::SERVER, "--tests", "handshake,http,join", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("without the eBPF observer") && stderr.contains("CAP_BPF"), "{stderr}");
    let (report, _) = schema::read_report(&out.stdout, &stderr);
    assert_eq!(report.client.observer, ObserverKind::None);
    assert!(!report.client.cannot_establish.is_empty());
    assert_eq!(mptcp_test(&report, TestName::Http).verdicts, vec![Verdict::MptcpOk]);
    // The join test needs the path manager: not run, and said so, rather than guessed.
    let join = mptcp_test(&report, TestName::Join);
    assert_eq!(join.outcome, Outcome::NotRun);
    let error = join.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("not run: cannot configure the path manager"), "{join:#?}");
    assert!(join.verdicts.is_empty());
}

#[test]
fn a_visitor_on_the_http_port_is_told_whether_their_connection_is_mptcp_and_why_not() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let _srv = serve(&lab);
    let url = format!("http://{}/", addr::SERVER);
    let curl = |mptcp: bool, accept: &str| {
        let mut c = if mptcp {
            let mut c = lab.c.cmd("mptcpize");
            c.args(["run", "curl"]);
            c
        } else {
            lab.c.cmd("curl")
        };
        let o =
            c.args(["-sS", "--max-time", "20", "-H", &format!("Accept: {accept}"), &url]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let yes = curl(true, "*/*");
    assert!(yes.starts_with("You are using MPTCP: this connection has 1 subflow(s)."), "{yes}");
    let no = curl(false, "*/*");
    assert!(
        no.starts_with("You are not using MPTCP.") && no.contains("Your SYN arrived without MP_CAPABLE"),
        "{no}"
    );
    let page = curl(true, "text/html");
    assert!(page.starts_with("<!doctype html>") && page.contains("You are using MPTCP"), "{page}");
    // Through a router that strips MP_CAPABLE from SYNs, an MPTCP client is told so.
    let _strip = apply(&lab, "syn-strip");
    let stripped = curl(true, "*/*");
    assert!(
        stripped.starts_with("You are not using MPTCP.")
            && stripped.contains("something on the path removed it"),
        "{stripped}"
    );
}
