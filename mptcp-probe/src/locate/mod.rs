//! `check --locate`: which hop interferes. SYNs built as Linux builds the test's (its options,
//! MP_CAPABLE version 1 with HMAC-SHA256) go out with TTL (hop limit) 1, 2, 3, ... on raw sockets; each router that drops one for its TTL quotes it in an ICMP time
//! exceeded, as the packet reached it. Comparing the quotes with what was sent tells after which
//! hop MP_CAPABLE disappears, the MSS or the sequence number changes, or (against the same SYN
//! without MPTCP) SYNs with MP_CAPABLE stop getting through. Bounded: one probe in flight, at
//! most `max_hops` TTLs, `retries` more tries of a silent TTL, a pause between probes.

pub mod data;
pub mod path;
pub mod probe;
pub mod quote;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use mptcp_probe_model::{
    locate::{Answer, Hop, Locate, Location, ProbeKind, Quoted, Sent, Trace},
    End, Subtype, TestResult, Transport, Verdict,
};

use self::probe::{Prober, Reply, Syn, MP_CAPABLE_SYN_OPTION};

/// How far and how hard to probe.
#[derive(Clone, Debug)]
pub struct LocateOptions {
    pub max_hops: u8,
    /// Bytes the connection whose data segments are copied carries first (the bulk test's).
    pub data_bytes: u64,
    /// The test id that connection announces to the server (the check's own).
    pub data_test_id: String,
    /// Further tries of a TTL that got no answer.
    pub retries: u8,
    /// How long to wait for an answer to one probe.
    pub wait: Duration,
    /// Pause between probes (ICMP rate limits of routers: Linux allows a burst of 6, then one
    /// a second, per destination).
    pub gap: Duration,
}

impl Default for LocateOptions {
    fn default() -> Self {
        Self {
            max_hops: 16,
            data_bytes: 4 << 20,
            data_test_id: "locate-data".into(),
            retries: 1,
            wait: Duration::from_millis(800),
            gap: Duration::from_millis(20),
        }
    }
}

/// The MSS Linux puts in a SYN on a 1500-byte link.
fn mss_for(ip: IpAddr) -> u16 {
    if ip.is_ipv4() {
        1460
    } else {
        1440
    }
}

/// Which hop an ICMP answer belongs to, by the sequence number its quote shows: each TTL's
/// probe has its own. Its TTL when the number is one of this trace's; the TTL in flight when the
/// quote shows none of them (too short to hold it, or a box past which numbers are rewritten:
/// one probe is in flight at a time, so it is most likely that one's).
fn answered_ttl(quoted_seq: Option<u32>, base: u32, in_flight: u8) -> u8 {
    quoted_seq
        .map(|s| s.wrapping_sub(base))
        .filter(|d| *d < in_flight as u32)
        .map(|d| d as u8 + 1)
        .unwrap_or(in_flight)
}

/// A hop before any answer.
fn silent(ttl: u8) -> Hop {
    Hop {
        ttl,
        answer: Answer::Silent,
        from: None,
        quoted_tcp_bytes: None,
        mptcp: Quoted::NotQuoted,
        mss: None,
        seq: None,
        rtt_us: None,
    }
}

/// Fills a silent hop from an ICMP answer quoting its probe, the probe's MPTCP option found
/// `mptcp`; `rtt` only when the answer is to the probe in flight. False when the hop was
/// answered already (a duplicate).
fn record(
    hop: &mut Hop,
    from: IpAddr,
    quote: &quote::IcmpQuote,
    mptcp: Quoted,
    rtt: Option<Duration>,
) -> bool {
    if hop.answer != Answer::Silent {
        return false;
    }
    hop.answer = quote.answer;
    hop.from = Some(from);
    hop.quoted_tcp_bytes = Some(quote.tcp.tcp_bytes as u16);
    hop.mptcp = mptcp;
    hop.mss = quote::mss(&quote.tcp);
    hop.seq = quote.tcp.seq;
    hop.rtt_us = rtt.map(|d| d.as_micros() as u64);
    true
}

/// Probes towards `destination` with increasing TTL until the destination answers, a router
/// says it is unreachable, `max_hops` is reached or `deadline` passes. A send that fails ends
/// the trace with what it has and says why.
pub fn trace(
    destination: SocketAddr,
    kind: ProbeKind,
    opts: &LocateOptions,
    deadline: Instant,
) -> std::io::Result<(Trace, Option<String>)> {
    let p = Prober::new(destination)?;
    let mptcp = kind == ProbeKind::SynMptcp;
    let sent_mpc = mptcp.then_some(MP_CAPABLE_SYN_OPTION);
    let base: u32 = rand::random();
    let mss = mss_for(destination.ip());
    let seq_of = |ttl: u8| base.wrapping_add(ttl as u32 - 1);
    let mut hops: Vec<Hop> = Vec::new();
    let mut reached = false;
    let mut stopped = None;
    'ttls: for ttl in 1..=opts.max_hops {
        if Instant::now() >= deadline {
            break;
        }
        let syn = Syn { source: p.source, destination, seq: seq_of(ttl), mss, mptcp };
        hops.push(silent(ttl));
        'tries: for _ in 0..=opts.retries {
            if Instant::now() >= deadline {
                break;
            }
            let sent_at = Instant::now();
            if let Err(e) = p.send(&syn, ttl) {
                stopped = Some(format!("sending the probe with TTL {ttl} to {destination} failed: {e}"));
                hops.pop();
                break 'ttls;
            }
            while let Some(reply) = p.receive(sent_at, opts.wait)? {
                match reply {
                    Reply::Icmp { from, quote, after } => {
                        let at = answered_ttl(quote.tcp.seq, base, ttl);
                        let state = quote::mptcp_state(&quote.tcp, sent_mpc);
                        let hop = &mut hops[at as usize - 1];
                        // A late answer of an earlier TTL fills its hop; this one waits on.
                        if !record(hop, from, &quote, state, (at == ttl).then_some(after)) || at != ttl {
                            continue;
                        }
                    }
                    Reply::Destination { synack, after } => {
                        let hop = hops.last_mut().expect("this TTL's hop");
                        hop.answer = if synack { Answer::SynAck } else { Answer::Reset };
                        hop.from = Some(destination.ip());
                        hop.rtt_us = Some(after.as_micros() as u64);
                        reached = true;
                    }
                }
                break 'tries;
            }
        }
        let last = hops.last().map(|h| h.answer);
        if reached || last == Some(Answer::Unreachable) {
            break;
        }
        std::thread::sleep(opts.gap);
    }
    let sent = Sent {
        mss,
        mptcp: mptcp.then_some(Subtype::MpCapable),
        mptcp_len: mptcp.then_some(MP_CAPABLE_SYN_OPTION.0),
        seq: base,
    };
    Ok((Trace { probe: kind, destination, sent, hops, reached, destination_hop: None }, stopped))
}

/// The verdicts of a check's MPTCP runs that a trace can locate, by the port of the tests that
/// gave them: a box may act on one port only, so each port is traced on its own.
/// `dss_stripped` counts when the server saw the client's data without DSS: copies from here
/// can show where that happened (not where the server's data lost it).
pub fn to_locate(tests: &[TestResult]) -> BTreeMap<u16, Vec<Verdict>> {
    let mut out: BTreeMap<u16, Vec<Verdict>> = BTreeMap::new();
    for t in tests.iter().filter(|t| t.transport == Transport::Mptcp && t.port != 0) {
        let ours = |v: &&Verdict| {
            **v != Verdict::DssStripped
                || t.evidence.findings.iter().any(|f| f.verdict == **v && f.end == End::Server)
        };
        for v in t.verdicts.iter().filter(|v| path::LOCATABLE.contains(v)).filter(ours) {
            let vs = out.entry(t.port).or_default();
            if !vs.contains(v) {
                vs.push(*v);
            }
        }
    }
    out
}

/// Traces towards the server, per port, for the verdicts [`to_locate`] gives, and where each
/// change happens. Blocking: raw sockets and waits.
pub fn probe(
    server: IpAddr,
    wanted: &BTreeMap<u16, Vec<Verdict>>,
    opts: &LocateOptions,
    deadline: Instant,
) -> Locate {
    let mut out = Locate::default();
    if wanted.is_empty() {
        out.notes.push("no verdict of this run is one a probe of the SYN or of data can locate".into());
        return out;
    }
    let trace_to = |destination: SocketAddr, kind: ProbeKind, out: &mut Locate| -> Option<Trace> {
        match trace(destination, kind, opts, deadline) {
            Ok((t, stopped)) => {
                out.notes.extend(stopped);
                Some(t)
            }
            Err(e) => {
                out.notes.push(format!("cannot probe the path to {destination} ({}): {e}", kind.as_str()));
                None
            }
        }
    };
    for (port, verdicts) in wanted {
        let destination = SocketAddr::new(server, *port);
        let Some(mpc) = trace_to(destination, ProbeKind::SynMptcp, &mut out) else { continue };
        let mut plain = None;
        let mut copies = None;
        for v in verdicts {
            let l = match v {
                Verdict::MptcpSynDropped => {
                    let Some(p) = trace_to(destination, ProbeKind::SynPlain, &mut out) else { continue };
                    path::locate_drop(&mpc, plain.insert(p))
                }
                Verdict::DssStripped => {
                    let Some(d) = data_trace(destination, &mpc, opts, deadline, &mut out) else { continue };
                    path::locate(*v, copies.insert(d))
                }
                _ => path::locate(*v, &mpc),
            };
            out.locations.push(Location { port: Some(*port), ..l });
        }
        out.traces.push(mpc);
        out.traces.extend(plain);
        out.traces.extend(copies);
    }
    out
}

/// Copies of a data segment of a live connection to the bulk port, stopping short of the server
/// (its hop from the SYN trace `mpc`); None, with a note, where they cannot be made.
fn data_trace(
    destination: SocketAddr,
    mpc: &Trace,
    opts: &LocateOptions,
    deadline: Instant,
    out: &mut Locate,
) -> Option<Trace> {
    if destination.port() != crate::protocol::port::BULK {
        out.notes.push(format!(
            "dss_stripped on port {}: data copies are made on a connection of the bulk test (port {}) only",
            destination.port(),
            crate::protocol::port::BULK
        ));
        return None;
    }
    let Some(server_hop) = mpc.destination_ttl() else {
        out.notes.push(format!(
            "dss_stripped: the SYN got no answer from {destination}, so copies of data could not be kept from reaching it"
        ));
        return None;
    };
    match data::trace(destination, &opts.data_test_id, opts.data_bytes, server_hop, opts, deadline) {
        Ok((t, stopped)) => {
            let why = stopped.clone().unwrap_or_else(|| "no copy was sent".into());
            out.notes.extend(stopped);
            if t.hops.is_empty() {
                // Nothing was copied: no location, only the note.
                out.notes.push(format!("dss_stripped not located: {why}"));
                return None;
            }
            Some(t)
        }
        Err(e) => {
            out.notes.push(format!("cannot copy data segments to {destination}: {e}"));
            None
        }
    }
}

/// Gives each finding of a located verdict its location: the one traced on its test's port.
pub fn annotate(tests: &mut [TestResult], l: &Locate) {
    for t in tests.iter_mut().filter(|t| t.transport == Transport::Mptcp) {
        // Data copies from here show the client's data only: the server's stays unlocated.
        let located =
            |f: &mptcp_probe_model::Finding| f.verdict != Verdict::DssStripped || f.end == End::Server;
        for f in t.evidence.findings.iter_mut().filter(|f| located(f)) {
            if let Some(loc) =
                l.locations.iter().find(|loc| loc.verdict == f.verdict && loc.port == Some(t.port))
            {
                f.located = Some(loc.text.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_belongs_to_the_ttl_its_quoted_sequence_number_names() {
        let base = u32::MAX - 1;
        // This TTL's, an earlier TTL's (across the wrap), and one the quote cannot name.
        assert_eq!(answered_ttl(Some(base.wrapping_add(2)), base, 3), 3);
        assert_eq!(answered_ttl(Some(base.wrapping_add(1)), base, 3), 2);
        assert_eq!(answered_ttl(Some(base), base, 3), 1);
        assert_eq!(answered_ttl(None, base, 3), 3, "too short a quote: the probe in flight");
        assert_eq!(answered_ttl(Some(12345), base, 3), 3, "rewritten: the probe in flight");
        // A number past the TTL in flight is no probe of this trace yet.
        assert_eq!(answered_ttl(Some(base.wrapping_add(5)), base, 3), 3);
    }

    fn result(port: u16, transport: Transport, verdicts: Vec<Verdict>) -> TestResult {
        serde_json::from_value(serde_json::json!({
            "name": "http", "transport": transport, "port": port, "outcome": "ok", "mptcp": "fallback",
            "verdicts": verdicts, "duration_ms": 1,
            "evidence": {"client": {}, "server": null, "mib_delta": {}, "findings": verdicts.iter().map(|v| serde_json::json!({
                "verdict": v, "packet": "SYN", "end": "server", "expected": "x", "seen": "y"})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    #[test]
    fn verdicts_are_traced_per_port_and_located_on_their_own_port_only() {
        let mut tests = vec![
            result(80, Transport::Mptcp, vec![Verdict::SynOptionStripped]),
            result(8001, Transport::Mptcp, vec![Verdict::SynOptionStripped, Verdict::MssRewritten]),
            result(8001, Transport::Tcp, vec![Verdict::MssRewritten]),
            result(443, Transport::Mptcp, vec![Verdict::PayloadModified]),
        ];
        let wanted = to_locate(&tests);
        assert_eq!(
            wanted,
            BTreeMap::from([
                (80, vec![Verdict::SynOptionStripped]),
                (8001, vec![Verdict::SynOptionStripped, Verdict::MssRewritten])
            ])
        );
        let at = |port, text: &str| Location {
            verdict: Verdict::SynOptionStripped,
            port: Some(port),
            after: None,
            before: None,
            exact: false,
            text: text.into(),
        };
        let l = Locate { locations: vec![at(80, "on 80"), at(8001, "on 8001")], ..Default::default() };
        annotate(&mut tests, &l);
        assert_eq!(tests[0].evidence.findings[0].located.as_deref(), Some("on 80"));
        assert_eq!(tests[1].evidence.findings[0].located.as_deref(), Some("on 8001"));
        assert_eq!(tests[1].evidence.findings[1].located, None, "mss_rewritten was not located");
        assert_eq!(tests[3].evidence.findings[0].located, None);
    }

    #[test]
    fn dss_stripped_is_traced_only_where_the_server_saw_the_clients_data_without_it() {
        let at_server = result(8001, Transport::Mptcp, vec![Verdict::DssStripped]);
        let mut at_client = result(8001, Transport::Mptcp, vec![Verdict::DssStripped]);
        at_client.evidence.findings[0].end = End::Client;
        assert_eq!(to_locate(&[at_server]), BTreeMap::from([(8001, vec![Verdict::DssStripped])]));
        assert!(to_locate(&[at_client]).is_empty(), "copies from here cannot show the server's data");
    }
}
