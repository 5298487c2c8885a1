//! `check --locate`: which hop interferes. Copies of the test's SYN go out with TTL (hop limit)
//! 1, 2, 3, ... on raw sockets; each router that drops one for its TTL quotes it in an ICMP time
//! exceeded, as the packet reached it. Comparing the quotes with what was sent tells after which
//! hop MP_CAPABLE disappears, the MSS or the sequence number changes, or (against the same SYN
//! without MPTCP) SYNs with MP_CAPABLE stop getting through. Bounded: one probe in flight, at
//! most `max_hops` TTLs, `retries` more tries of a silent TTL, a pause between probes.

pub mod path;
pub mod probe;
pub mod quote;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use mptcp_probe_model::{
    locate::{Answer, Hop, Locate, ProbeKind, Quoted, Sent, Trace},
    Subtype, TestResult, Transport, Verdict,
};

use self::probe::{Prober, Reply, Syn, MP_CAPABLE_SYN_LEN};

/// How far and how hard to probe.
#[derive(Clone, Debug)]
pub struct LocateOptions {
    pub max_hops: u8,
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
        Self { max_hops: 16, retries: 1, wait: Duration::from_millis(800), gap: Duration::from_millis(20) }
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

/// Probes towards `destination` with increasing TTL until the destination answers, a router
/// says it is unreachable, `max_hops` is reached or `deadline` passes.
pub fn trace(
    destination: SocketAddr,
    kind: ProbeKind,
    opts: &LocateOptions,
    deadline: Instant,
) -> std::io::Result<Trace> {
    let p = Prober::new(destination)?;
    let mptcp = kind == ProbeKind::SynMptcp;
    let base: u32 = rand::random();
    let mss = mss_for(destination.ip());
    let seq_of = |ttl: u8| base.wrapping_add(ttl as u32 - 1);
    let mut hops = Vec::new();
    let mut reached = false;
    for ttl in 1..=opts.max_hops {
        if Instant::now() >= deadline {
            break;
        }
        let syn = Syn { source: p.source, destination, seq: seq_of(ttl), mss, mptcp };
        let mut hop = Hop {
            ttl,
            answer: Answer::Silent,
            from: None,
            quoted_tcp_bytes: None,
            mptcp: Quoted::NotQuoted,
            mss: None,
            seq: None,
            rtt_us: None,
        };
        'tries: for _ in 0..=opts.retries {
            if Instant::now() >= deadline {
                break;
            }
            let sent_at = Instant::now();
            p.send(&syn, ttl)?;
            while let Some(reply) = p.receive(sent_at, opts.wait)? {
                match reply {
                    Reply::Icmp { from, quote, after } => {
                        // A late answer to an earlier TTL's probe: not this hop's.
                        let earlier = quote.tcp.seq.is_some_and(|s| (1..ttl).any(|t| seq_of(t) == s));
                        if earlier {
                            continue;
                        }
                        hop.answer = quote.answer;
                        hop.from = Some(from);
                        hop.quoted_tcp_bytes = Some(quote.tcp.tcp_bytes as u16);
                        hop.mptcp = quote::mptcp_state(&quote.tcp, mptcp.then_some(MP_CAPABLE_SYN_LEN));
                        hop.mss = quote::mss(&quote.tcp);
                        hop.seq = quote.tcp.seq;
                        hop.rtt_us = Some(after.as_micros() as u64);
                    }
                    Reply::Destination { synack, after } => {
                        hop.answer = if synack { Answer::SynAck } else { Answer::Reset };
                        hop.from = Some(destination.ip());
                        hop.rtt_us = Some(after.as_micros() as u64);
                        reached = true;
                    }
                }
                break 'tries;
            }
        }
        let stop = reached || hop.answer == Answer::Unreachable;
        hops.push(hop);
        if stop {
            break;
        }
        std::thread::sleep(opts.gap);
    }
    let sent = Sent {
        mss,
        mptcp: mptcp.then_some(Subtype::MpCapable),
        mptcp_len: mptcp.then_some(MP_CAPABLE_SYN_LEN),
        seq: base,
    };
    Ok(Trace { probe: kind, destination, sent, hops, reached })
}

/// The verdicts of a check's MPTCP runs that a trace can locate, each with the port of the
/// first test that gave it.
pub fn to_locate(tests: &[TestResult]) -> Vec<(Verdict, u16)> {
    let mut out: Vec<(Verdict, u16)> = Vec::new();
    for t in tests.iter().filter(|t| t.transport == Transport::Mptcp && t.port != 0) {
        for v in t.verdicts.iter().filter(|v| path::LOCATABLE.contains(v)) {
            if !out.iter().any(|(w, _)| w == v) {
                out.push((*v, t.port));
            }
        }
    }
    out
}

/// Traces towards the server for every locatable verdict of the tests, and where each change
/// happens; the findings of those verdicts get the location in words.
pub fn run(server: IpAddr, tests: &mut [TestResult], opts: &LocateOptions, deadline: Instant) -> Locate {
    let mut out = Locate::default();
    let wanted = to_locate(tests);
    if wanted.is_empty() {
        out.notes.push("no verdict of this run is one a probe of the SYN can locate".into());
        return out;
    }
    let port = wanted[0].1;
    let destination = SocketAddr::new(server, port);
    let mpc = match trace(destination, ProbeKind::SynMptcp, opts, deadline) {
        Ok(t) => t,
        Err(e) => {
            out.notes.push(format!("cannot probe the path to {destination}: {e}"));
            return out;
        }
    };
    for (v, _) in &wanted {
        let location = if *v == Verdict::MptcpSynDropped {
            match trace(destination, ProbeKind::SynPlain, opts, deadline) {
                Ok(plain) => {
                    let l = path::locate_drop(&mpc, &plain);
                    out.traces.push(plain);
                    l
                }
                Err(e) => {
                    out.notes.push(format!("cannot probe the path to {destination} with a plain SYN: {e}"));
                    continue;
                }
            }
        } else {
            path::locate(*v, &mpc)
        };
        for t in tests.iter_mut().filter(|t| t.transport == Transport::Mptcp) {
            for f in t.evidence.findings.iter_mut().filter(|f| f.verdict == *v) {
                f.located = Some(location.text.clone());
            }
        }
        out.locations.push(location);
    }
    out.traces.insert(0, mpc);
    out
}
