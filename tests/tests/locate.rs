//! `check --locate` in a chain of routers (root needed): the box that strips MP_CAPABLE or clamps
//! the MSS is named by its hop, for each place it can take in the chain, over IPv4 and IPv6; a
//! hop that quotes as RFC 792 routers do makes it say it cannot tell past that hop, a silent
//! hop makes the location a range; without raw sockets it says so and the check still runs.

use std::time::Duration;

use mptcp_probe_model::{
    locate::{Answer, Location, Quoted},
    Report, TestName, Transport, Verdict,
};
use mptcp_probe_tests::{
    lab::{addr, as_nobody_with, Chain, Child, Netns},
    matrix, probe_bin, schema, skip_unless_e2e,
    workspace::MIDDLEBOX,
};

const ROUTERS: usize = 3;
/// MP_CAPABLE stripped from SYNs, as the lab's `syn-strip` scenario does it; the SYN's MSS
/// clamped.
#[rustfmt::skip]
const STRIP: &[&str] = &["-t", "mangle", "-A", "FORWARD", "-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN", "-j", "TCPOPTSTRIP", "--strip-options", "30"];
#[rustfmt::skip]
const CLAMP: &[&str] = &["-t", "mangle", "-A", "FORWARD", "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--set-mss", "1300"];

fn serve(chain: &Chain) -> (Child, mptcp_probe_tests::probe::TempDir) {
    matrix::serve(&chain.s, &probe_bin()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `check --tests handshake --locate --json` from the client; its report.
fn check(ns: &Netns, server: &str, extra: &[&str]) -> (Report, String) {
    check_tests(ns, server, &["--tests", "handshake"], extra)
}

/// Runs `check --locate --json` with these tests (and their arguments) from the client.
fn check_tests(ns: &Netns, server: &str, tests: &[&str], extra: &[&str]) -> (Report, String) {
    let out = ns
        .cmd(probe_bin())
        .args(["check", "--server", server])
        .args(tests)
        .args(["--locate", "--locate-hops", "6", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "check failed:\n{stderr}");
    let (report, _) = schema::read_report(&out.stdout, &stderr);
    (report, stderr)
}

/// The lab's NFQUEUE middlebox in `router` on queue 0, in `mode`, ready; stopped on drop.
fn middlebox(router: &Netns, mode: &str) -> (Child, mptcp_probe_tests::probe::TempDir) {
    let dir = mptcp_probe_tests::probe::TempDir::new("middlebox");
    let log = dir.0.join("middlebox.log");
    let mut mb = Child::spawn(
        router
            .cmd(MIDDLEBOX.path())
            .args(["--queue", "0", mode])
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    mb.wait_ready(&log, "ready", Duration::from_secs(10), "mptcp-middlebox").unwrap();
    (mb, dir)
}

fn both(r: &Netns, args: &[&str]) {
    for tool in ["iptables", "ip6tables"] {
        r.run(tool, args);
    }
}

fn flush(chain: &Chain) {
    for r in &chain.routers {
        both(r, &["-t", "mangle", "-F"]);
        both(r, &["-F"]);
    }
}

fn location(r: &Report, v: Verdict) -> &Location {
    let l = r.locate.as_ref().unwrap_or_else(|| panic!("no locate section: {r:#?}"));
    l.location(v).unwrap_or_else(|| panic!("{v} not located: {l:#?}"))
}

/// Asserts that the change was located between hop `k` and the next hop (or the server, past
/// the last router), exactly.
fn assert_between(chain: &Chain, l: &Location, k: usize, v6: bool) {
    let after = l.after.unwrap_or_else(|| panic!("no hop before the change: {l:?}"));
    assert_eq!(after.ttl as usize, k, "{l:?}");
    assert_eq!(after.address.map(|a| a.to_string()), Some(chain.hop_address(k, v6)), "{l:?}");
    if k < ROUTERS {
        let before = l.before.unwrap_or_else(|| panic!("no hop after the change: {l:?}"));
        assert_eq!(before.ttl as usize, k + 1, "{l:?}");
        assert_eq!(before.address.map(|a| a.to_string()), Some(chain.hop_address(k + 1, v6)), "{l:?}");
        assert!(l.text.starts_with(&format!("between hop {k} (")), "{}", l.text);
    } else {
        assert_eq!(l.before, None, "past the last router: the server");
        assert!(l.text.contains("and the server ("), "{}", l.text);
    }
    assert!(l.exact, "{l:?}");
}

#[test]
fn the_hop_that_strips_or_clamps_is_named_wherever_it_is_over_ipv4_and_ipv6() {
    skip_unless_e2e!();
    let chain = Chain::up(ROUTERS);
    let (_server, _dir) = serve(&chain);
    for k in 1..=ROUTERS {
        flush(&chain);
        // MP_CAPABLE stripped at router k, the MSS clamped at another one.
        let clamp = k % ROUTERS + 1;
        both(chain.router(k), STRIP);
        both(chain.router(clamp), CLAMP);
        for (server, v6) in [(addr::SERVER, false), (addr::SERVER_V6, true)] {
            let (r, stderr) = check(&chain.c, server, &[]);
            let t = r
                .tests
                .iter()
                .find(|t| t.name == TestName::Handshake && t.transport == Transport::Mptcp)
                .unwrap();
            for v in [Verdict::SynOptionStripped, Verdict::MssRewritten] {
                assert!(
                    t.verdicts.contains(&v),
                    "strip at {k}, clamp at {clamp}, {server}: {:?}\n{stderr}",
                    t.verdicts
                );
            }
            assert_between(&chain, location(&r, Verdict::SynOptionStripped), k, v6);
            assert_between(&chain, location(&r, Verdict::MssRewritten), clamp, v6);
            // The hops quote the whole SYN, and the finding carries the location.
            let trace = &r.locate.as_ref().unwrap().traces[0];
            assert!(trace.reached, "{trace:?}");
            assert_eq!(trace.hops.len(), ROUTERS + 1, "{trace:?}");
            assert!(trace.hops[..ROUTERS]
                .iter()
                .all(|h| h.answer == Answer::TimeExceeded && h.quoted_tcp_bytes >= Some(40)));
            let f = t.evidence.findings.iter().find(|f| f.verdict == Verdict::SynOptionStripped).unwrap();
            assert_eq!(f.located.as_deref(), Some(location(&r, Verdict::SynOptionStripped).text.as_str()));
        }
    }
    // The table shows it in the verdict's row, and the hops under it.
    let out = chain
        .c
        .cmd(probe_bin())
        .args(["check", "--server", addr::SERVER, "--tests", "handshake", "--locate", "--locate-hops", "6"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .position(|l| l.contains("handshake syn_option_stripped:"))
        .unwrap_or_else(|| panic!("{table}"));
    let next = table.lines().nth(row + 1).unwrap();
    let last = chain.hop_address(ROUTERS, false);
    assert_eq!(
        next.trim(),
        format!("located: between hop {ROUTERS} ({last}) and the server ({})", addr::SERVER)
    );
    assert!(table.contains("locate: SYN with MP_CAPABLE to 203.0.113.2:"), "{table}");
}

#[test]
fn short_quotes_and_silent_hops_are_said_and_give_a_range_not_a_guess() {
    skip_unless_e2e!();
    let chain = Chain::up(ROUTERS);
    let (_server, _dir) = serve(&chain);
    chain.router(2).run("iptables", STRIP);
    // Router 1 cuts the quotes of the ICMP errors it forwards to 8 bytes of TCP: those of hops
    // 2 and 3 reach the client so.
    chain.router(1).run("iptables", &["-A", "FORWARD", "-p", "icmp", "-j", "NFQUEUE", "--queue-num", "0"]);
    let mb = middlebox(chain.router(1), "cut-quotes");
    let (r, _) = check(&chain.c, addr::SERVER, &[]);
    let l = location(&r, Verdict::SynOptionStripped);
    let hops = &r.locate.as_ref().unwrap().traces[0].hops;
    assert_eq!(hops[1].quoted_tcp_bytes, Some(8), "{hops:?}");
    assert_eq!((l.after.map(|h| h.ttl), l.before, l.exact), (Some(1), None, false), "{l:?}");
    assert!(l.text.contains("cannot tell past hop 1"), "{}", l.text);
    assert!(l.text.contains("hop 2 (8 bytes of TCP), 3 (8 bytes of TCP) quoted too little"), "{}", l.text);
    drop(mb);
    // Router 2 sends no time exceeded: the change is somewhere between hops 1 and 3.
    chain.router(1).run("iptables", &["-F"]);
    chain
        .router(2)
        .run("iptables", &["-A", "OUTPUT", "-p", "icmp", "--icmp-type", "time-exceeded", "-j", "DROP"]);
    let (r, _) = check(&chain.c, addr::SERVER, &[]);
    let l = location(&r, Verdict::SynOptionStripped);
    assert_eq!(
        (l.after.map(|h| h.ttl), l.before.map(|h| h.ttl), l.exact),
        (Some(1), Some(3), false),
        "{l:?}"
    );
    assert!(l.text.contains("hop 2 did not answer"), "{}", l.text);
    let hops = &r.locate.as_ref().unwrap().traces[0].hops;
    assert_eq!((hops[1].answer, hops[1].from), (Answer::Silent, None), "{hops:?}");
}

#[test]
fn without_raw_sockets_locate_says_so_and_the_check_still_runs() {
    skip_unless_e2e!();
    let chain = Chain::up(1);
    let (_server, _dir) = serve(&chain);
    both(chain.router(1), STRIP);
    // The observer's capabilities, not CAP_NET_RAW.
    let wrapper = as_nobody_with("+bpf,+perfmon,+net_admin,+dac_read_search");
    let out = chain
        .c
        .cmd(&wrapper[0])
        .args(&wrapper[1..])
        .arg(probe_bin())
        .args(["check", "--server", addr::SERVER, "--tests", "handshake", "--locate", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (r, _) = schema::read_report(&out.stdout, &stderr);
    assert!(r.summary.verdicts.contains(&Verdict::SynOptionStripped), "{:?}\n{stderr}", r.summary.verdicts);
    let l = r.locate.unwrap();
    assert!(l.locations.is_empty() && l.traces.is_empty(), "{l:?}");
    assert!(l.notes.iter().any(|n| n.contains("CAP_NET_RAW")), "{:?}", l.notes);
}

#[test]
fn dropped_mptcp_syns_are_located_where_the_plain_syn_gets_further() {
    skip_unless_e2e!();
    let chain = Chain::up(ROUTERS);
    let (_server, _dir) = serve(&chain);
    // Router 2 drops SYNs that carry an MPTCP option (kind 30).
    chain.router(2).run(
        "iptables",
        &[
            "-A",
            "FORWARD",
            "-p",
            "tcp",
            "--tcp-flags",
            "SYN,ACK",
            "SYN",
            "-m",
            "tcp",
            "--tcp-option",
            "30",
            "-j",
            "DROP",
        ],
    );
    let (r, stderr) = check(&chain.c, addr::SERVER, &[]);
    assert!(r.summary.verdicts.contains(&Verdict::MptcpSynDropped), "{:?}\n{stderr}", r.summary.verdicts);
    let l = location(&r, Verdict::MptcpSynDropped);
    assert_eq!((l.after.map(|h| h.ttl), l.before.map(|h| h.ttl), l.exact), (Some(2), Some(3), true), "{l:?}");
    assert!(
        l.text.contains("the SYN without MPTCP got there, the one with MP_CAPABLE did not"),
        "{}",
        l.text
    );
    let traces = &r.locate.as_ref().unwrap().traces;
    let plain = traces.iter().find(|t| t.probe == mptcp_probe_model::locate::ProbeKind::SynPlain).unwrap();
    assert!(plain.reached, "{plain:?}");
    let mpc = &traces[0];
    assert!(
        !mpc.reached && mpc.hops.len() == 6 && mpc.hops[2..].iter().all(|h| h.answer == Answer::Silent),
        "{mpc:?}"
    );
}

#[test]
fn a_box_that_rewrites_sequence_numbers_is_located_where_the_quotes_change() {
    skip_unless_e2e!();
    let chain = Chain::up(ROUTERS);
    let (_server, _dir) = serve(&chain);
    // Router 2 offsets the initiator's sequence numbers of every connection (an ISN randomiser).
    chain.router(2).run("iptables", &["-A", "FORWARD", "-p", "tcp", "-j", "NFQUEUE", "--queue-num", "0"]);
    let _mb = middlebox(chain.router(2), "seq");
    let (r, stderr) = check(&chain.c, addr::SERVER, &[]);
    assert!(r.summary.verdicts.contains(&Verdict::SeqRewritten), "{:?}\n{stderr}", r.summary.verdicts);
    assert_between(&chain, location(&r, Verdict::SeqRewritten), 2, false);
    // Past the box the quotes show numbers that are none of the probes': each is still the
    // answer of the probe in flight, from its own hop.
    let hops = &r.locate.as_ref().unwrap().traces[0].hops;
    assert_eq!(hops[2].from.map(|a| a.to_string()), Some(chain.hop_address(3, false)), "{hops:?}");
    assert_ne!(hops[2].seq, Some(r.locate.as_ref().unwrap().traces[0].sent.seq.wrapping_add(2)), "{hops:?}");
}

/// MPTCP options stripped from the client's data after 100 kB of a connection, as the lab's
/// `dss-strip` scenario does it: a stateful box, which a segment of no connection would pass.
#[rustfmt::skip]
const DSS_STRIP: &[&str] = &["-t", "mangle", "-A", "FORWARD", "-p", "tcp", "-m", "connbytes", "--connbytes", "100000:", "--connbytes-dir", "original", "--connbytes-mode", "bytes", "-m", "length", "--length", "100:65535", "-j", "TCPOPTSTRIP", "--strip-options", "30"];

#[test]
fn the_hop_that_strips_dss_from_data_is_named_from_copies_of_a_live_connections_segment() {
    skip_unless_e2e!();
    let chain = Chain::up(ROUTERS);
    let (_server, _dir) = serve(&chain);
    for (k, server, v6) in [(2, addr::SERVER, false), (3, addr::SERVER_V6, true), (1, addr::SERVER, false)] {
        flush(&chain);
        both(chain.router(k), DSS_STRIP);
        let tests = ["--tests", "bulk", "--bulk-bytes", "300000", "--timeout", "3"];
        let (r, stderr) = check_tests(&chain.c, server, &tests, &[]);
        assert!(
            r.summary.verdicts.contains(&Verdict::DssStripped),
            "strip at {k}, {server}: {:?}\n{stderr}",
            r.summary.verdicts
        );
        let l = location(&r, Verdict::DssStripped);
        assert_between(&chain, l, k, v6);
        let locate = r.locate.as_ref().unwrap();
        let copies = locate
            .traces
            .iter()
            .find(|t| t.probe == mptcp_probe_model::locate::ProbeKind::DataMptcp)
            .unwrap_or_else(|| panic!("no data trace: {locate:#?}"));
        // The copies stop short of the server (its hop from the SYN trace), every router
        // quotes them, DSS as sent up to the box, absent past it.
        assert_eq!(copies.destination_hop, Some(ROUTERS as u8 + 1), "{copies:?}");
        assert!(!copies.reached, "{copies:?}");
        assert_eq!(copies.hops.len(), ROUTERS, "{copies:?}");
        for h in &copies.hops {
            assert_eq!(h.answer, Answer::TimeExceeded, "{copies:?}");
            let want = if (h.ttl as usize) <= k { Quoted::Intact } else { Quoted::Absent };
            assert_eq!(h.mptcp, want, "hop {} with the box at {k}: {copies:?}", h.ttl);
        }
        let t = r.tests.iter().find(|t| t.name == TestName::Bulk && t.transport == Transport::Mptcp).unwrap();
        // The client's data lost DSS (the server saw it): that finding is located; one of the
        // server's data arriving without DSS here is not (copies cannot show that direction).
        for f in t.evidence.findings.iter().filter(|f| f.verdict == Verdict::DssStripped) {
            let want = (f.end == mptcp_probe_model::End::Server).then_some(l.text.as_str());
            assert_eq!(f.located.as_deref(), want, "{f:?}");
        }
        assert!(t
            .evidence
            .findings
            .iter()
            .any(|f| f.verdict == Verdict::DssStripped && f.end == mptcp_probe_model::End::Server));
    }
}
