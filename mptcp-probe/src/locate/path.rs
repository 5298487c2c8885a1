//! From the hops of a trace to the stretch of path where a verdict's change happens.
//!
//! Hop k quotes the probe as it reached hop k: a change first seen in hop k's quote happened
//! after hop k-1 had the packet (in hop k-1 itself, as it forwarded it, or in a box on the link
//! that does not count down the TTL) and before hop k had it.

use mptcp_probe_model::{
    locate::{Answer, Hop, HopRef, Location, Quoted, Trace},
    Verdict,
};

/// What a hop's quote says of the field a verdict is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    AsSent,
    Changed,
    /// Silent, or the quote does not reach the field.
    CannotTell,
}

/// The verdicts a trace can locate: of the SYN, and (`dss_stripped`) of a data segment.
pub const LOCATABLE: [Verdict; 5] = [
    Verdict::SynOptionStripped,
    Verdict::MssRewritten,
    Verdict::SeqRewritten,
    Verdict::MptcpSynDropped,
    Verdict::DssStripped,
];

fn seen(v: Verdict, t: &Trace, h: &Hop) -> Seen {
    if !matches!(h.answer, Answer::TimeExceeded | Answer::Unreachable) {
        return Seen::CannotTell;
    }
    let sent_seq = t.sent.seq.wrapping_add(h.ttl as u32 - 1);
    let same = match v {
        Verdict::SynOptionStripped | Verdict::DssStripped => match h.mptcp {
            Quoted::Intact => Some(true),
            Quoted::Changed | Quoted::Absent => Some(false),
            Quoted::NotQuoted => None,
        },
        // A quote that holds the options (MP_CAPABLE is known) and no MSS: the MSS was removed.
        Verdict::MssRewritten => match h.mss {
            Some(m) => Some(m == t.sent.mss),
            None if h.mptcp != Quoted::NotQuoted => Some(false),
            None => None,
        },
        Verdict::SeqRewritten => h.seq.map(|s| s == sent_seq),
        _ => None,
    };
    match same {
        Some(true) => Seen::AsSent,
        Some(false) => Seen::Changed,
        None => Seen::CannotTell,
    }
}

fn hop_ref(h: &Hop) -> HopRef {
    HopRef { ttl: h.ttl, address: h.from }
}

fn name(r: Option<HopRef>) -> String {
    match r {
        None => "this host".into(),
        Some(HopRef { ttl, address: Some(a) }) => format!("hop {ttl} ({a})"),
        Some(HopRef { ttl, address: None }) => format!("hop {ttl} (silent)"),
    }
}

fn server(t: &Trace) -> String {
    format!("the server ({})", t.destination.ip())
}

/// Why the hops strictly between `after` and `before` (TTLs) cannot tell.
fn why_not(t: &Trace, after: u8, before: u8) -> String {
    let mut silent = Vec::new();
    let mut short = Vec::new();
    let mut unprobed = Vec::new();
    for ttl in (after + 1)..before {
        if !t.hops.iter().any(|h| h.ttl == ttl) {
            unprobed.push(ttl.to_string());
        }
    }
    for h in t.hops.iter().filter(|h| h.ttl > after && h.ttl < before) {
        match (h.answer, h.quoted_tcp_bytes) {
            (Answer::Silent, _) => silent.push(h.ttl.to_string()),
            (_, Some(n)) => short.push(format!("{} ({n} bytes of TCP)", h.ttl)),
            (_, None) => silent.push(h.ttl.to_string()),
        }
    }
    let mut parts = Vec::new();
    if !short.is_empty() {
        parts.push(format!(
            "hop {} quoted too little of the probe to show it (RFC 792 routers quote 8 bytes of TCP)",
            short.join(", ")
        ));
    }
    if !silent.is_empty() {
        parts.push(format!("hop {} did not answer (silent, or rate-limiting ICMP)", silent.join(", ")));
    }
    if !unprobed.is_empty() {
        parts.push(format!("hop {} not probed (the trace stopped before)", unprobed.join(", ")));
    }
    parts.join("; ")
}

/// Where the change a verdict names happens, from a trace of the SYN with MP_CAPABLE.
pub fn locate(v: Verdict, t: &Trace) -> Location {
    let mut after: Option<&Hop> = None;
    let mut changed: Option<&Hop> = None;
    for h in &t.hops {
        match seen(v, t, h) {
            Seen::AsSent => after = Some(h),
            Seen::Changed => {
                changed = Some(h);
                break;
            }
            Seen::CannotTell => {}
        }
    }
    let after_ttl = after.map(|h| h.ttl).unwrap_or(0);
    let a = after.map(hop_ref);
    let mk = |before: Option<HopRef>, exact: bool, text: String| Location {
        verdict: v,
        port: None,
        after: a,
        before,
        exact,
        text,
    };
    if let Some(c) = changed {
        let exact = c.ttl == after_ttl + 1;
        let mut text = format!("between {} and {}", name(a), name(Some(hop_ref(c))));
        if !exact {
            text.push_str(&format!("; the hops between cannot tell: {}", why_not(t, after_ttl, c.ttl)));
        }
        return mk(Some(hop_ref(c)), exact, text);
    }
    let last = t.hops.last().map(|h| h.ttl).unwrap_or(0);
    if let Some(server_ttl) = t.destination_ttl() {
        // The server saw the change (that is the verdict): it happened past the last hop
        // that quoted the probe as sent.
        let exact = server_ttl == after_ttl + 1;
        let mut text = format!("between {} and {}", name(a), server(t));
        if !exact {
            text.push_str(&format!("; cannot tell past {}: {}", name(a), why_not(t, after_ttl, server_ttl)));
        }
        return mk(None, exact, text);
    }
    let text = format!(
        "after {}; cannot tell past it: {}, and the probe got no answer from {} within {last} hops",
        name(a),
        why_not(t, after_ttl, last + 1),
        server(t)
    );
    mk(None, false, text)
}

/// Where SYNs with MP_CAPABLE are dropped: past the last hop that answered them, where the same
/// SYN without MPTCP gets further.
pub fn locate_drop(mpc: &Trace, plain: &Trace) -> Location {
    let answered = |t: &Trace| -> Vec<u8> {
        t.hops.iter().filter(|h| h.answer != Answer::Silent).map(|h| h.ttl).collect()
    };
    let (m, p) = (answered(mpc), answered(plain));
    let last_mpc = mpc.hops.iter().rfind(|h| h.answer != Answer::Silent);
    let a = last_mpc.map(hop_ref);
    let after_ttl = a.map(|h| h.ttl).unwrap_or(0);
    let v = Verdict::MptcpSynDropped;
    if mpc.reached {
        return Location {
            verdict: v,
            port: None,
            after: a,
            before: None,
            exact: false,
            text: format!(
                "the SYN with MP_CAPABLE reached {}: it was not dropped on the way there",
                server(mpc)
            ),
        };
    }
    // The first hop past it that answered the plain SYN only.
    let first_plain =
        plain.hops.iter().find(|h| h.ttl > after_ttl && h.answer != Answer::Silent && !m.contains(&h.ttl));
    match first_plain {
        Some(h) => {
            let before = if h.answer == Answer::SynAck || h.answer == Answer::Reset {
                None
            } else {
                Some(hop_ref(h))
            };
            let exact = h.ttl == after_ttl + 1;
            let to = if before.is_none() { server(plain) } else { name(before) };
            let mut text = format!("between {} and {}: the SYN without MPTCP got there, the one with MP_CAPABLE did not", name(a), to);
            if !exact {
                text.push_str(&format!("; the hops between cannot tell: {}", why_not(mpc, after_ttl, h.ttl)));
            }
            Location { verdict: v, port: None, after: a, before, exact, text }
        }
        None => Location {
            verdict: v,
            port: None,
            after: a,
            before: None,
            exact: false,
            text: format!(
                "cannot tell: past {} neither SYN got an answer ({} of {} hops answered the SYN without MPTCP)",
                name(a),
                p.len(),
                plain.hops.len()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::locate::{ProbeKind, Sent};

    use super::*;

    fn hop(ttl: u8, answer: Answer, mptcp: Quoted, mss: Option<u16>) -> Hop {
        let from = (answer != Answer::Silent).then(|| format!("198.51.100.{ttl}").parse().unwrap());
        Hop {
            ttl,
            answer,
            from,
            quoted_tcp_bytes: (mptcp != Quoted::NotQuoted).then_some(44).or(Some(8)),
            mptcp,
            mss,
            seq: Some(1000 + ttl as u32 - 1),
            rtt_us: Some(100),
        }
    }

    fn trace(hops: Vec<Hop>, reached: bool) -> Trace {
        Trace {
            probe: ProbeKind::SynMptcp,
            destination: "203.0.113.2:80".parse().unwrap(),
            sent: Sent {
                mss: 1460,
                mptcp: Some(mptcp_probe_model::Subtype::MpCapable),
                mptcp_len: Some(4),
                seq: 1000,
            },
            hops,
            reached,
            destination_hop: None,
        }
    }

    use Answer::*;
    use Quoted::*;

    #[test]
    fn the_change_lies_between_the_last_hop_that_quotes_it_as_sent_and_the_first_that_does_not() {
        let t = trace(
            vec![
                hop(1, TimeExceeded, Intact, Some(1460)),
                hop(2, TimeExceeded, Intact, Some(1460)),
                hop(3, TimeExceeded, Absent, Some(1400)),
                hop(4, SynAck, NotQuoted, None),
            ],
            true,
        );
        let l = locate(Verdict::SynOptionStripped, &t);
        assert!(l.exact, "{l:?}");
        assert_eq!((l.after.unwrap().ttl, l.before.unwrap().ttl), (2, 3));
        assert_eq!(l.text, "between hop 2 (198.51.100.2) and hop 3 (198.51.100.3)");
        let l = locate(Verdict::MssRewritten, &t);
        assert_eq!((l.after.unwrap().ttl, l.before.unwrap().ttl), (2, 3));
        // The sequence numbers are as sent all the way: past the last router, before the server.
        let l = locate(Verdict::SeqRewritten, &t);
        assert_eq!((l.after.unwrap().ttl, l.before), (3, None));
        assert!(l.exact);
        assert_eq!(l.text, "between hop 3 (198.51.100.3) and the server (203.0.113.2)");
    }

    #[test]
    fn an_mss_removed_from_a_whole_quote_is_a_change_and_a_short_quote_tells_nothing() {
        let t = trace(
            vec![
                hop(1, TimeExceeded, Intact, Some(1460)),
                hop(2, TimeExceeded, NotQuoted, None),
                hop(3, TimeExceeded, Intact, None),
            ],
            false,
        );
        let l = locate(Verdict::MssRewritten, &t);
        assert_eq!((l.after.unwrap().ttl, l.before.unwrap().ttl, l.exact), (1, 3, false), "{l:?}");
    }

    #[test]
    fn a_change_past_the_last_router_is_between_it_and_the_server() {
        let t = trace(vec![hop(1, TimeExceeded, Intact, Some(1460)), hop(2, SynAck, NotQuoted, None)], true);
        let l = locate(Verdict::SynOptionStripped, &t);
        assert!(l.exact);
        assert_eq!(l.text, "between hop 1 (198.51.100.1) and the server (203.0.113.2)");
        // No router at all: between this host and the server.
        let l = locate(Verdict::SynOptionStripped, &trace(vec![hop(1, SynAck, NotQuoted, None)], true));
        assert!(l.exact);
        assert_eq!(l.text, "between this host and the server (203.0.113.2)");
    }

    #[test]
    fn silent_hops_and_short_quotes_give_a_range_and_say_why() {
        let t = trace(
            vec![
                hop(1, TimeExceeded, Intact, Some(1460)),
                hop(2, Silent, NotQuoted, None),
                hop(3, TimeExceeded, NotQuoted, None),
                hop(4, TimeExceeded, Absent, Some(1460)),
            ],
            false,
        );
        let l = locate(Verdict::SynOptionStripped, &t);
        assert!(!l.exact);
        assert_eq!((l.after.unwrap().ttl, l.before.unwrap().ttl), (1, 4));
        assert!(l.text.starts_with("between hop 1 (198.51.100.1) and hop 4 (198.51.100.4)"), "{}", l.text);
        assert!(l.text.contains("hop 3 (8 bytes of TCP) quoted too little"), "{}", l.text);
        assert!(l.text.contains("hop 2 did not answer"), "{}", l.text);
        // Past an RFC 792 hop all quotes are short: it cannot tell past the last full one.
        let t = trace(
            vec![
                hop(1, TimeExceeded, Intact, Some(1460)),
                hop(2, TimeExceeded, NotQuoted, None),
                hop(3, TimeExceeded, NotQuoted, None),
                hop(4, SynAck, NotQuoted, None),
            ],
            true,
        );
        let l = locate(Verdict::SynOptionStripped, &t);
        assert!(!l.exact);
        assert!(
            l.text.starts_with(
                "between hop 1 (198.51.100.1) and the server (203.0.113.2); cannot tell past hop 1"
            ),
            "{}",
            l.text
        );
    }

    #[test]
    fn a_dropped_mptcp_syn_is_located_where_the_plain_syn_gets_further() {
        let mpc = trace(
            vec![
                hop(1, TimeExceeded, Intact, Some(1460)),
                hop(2, TimeExceeded, Intact, Some(1460)),
                hop(3, Silent, NotQuoted, None),
            ],
            false,
        );
        let mut plain = trace(
            vec![
                hop(1, TimeExceeded, Intact, Some(1460)),
                hop(2, TimeExceeded, Intact, Some(1460)),
                hop(3, TimeExceeded, Intact, Some(1460)),
                hop(4, SynAck, NotQuoted, None),
            ],
            true,
        );
        plain.probe = ProbeKind::SynPlain;
        let l = locate_drop(&mpc, &plain);
        assert!(l.exact, "{l:?}");
        assert_eq!((l.after.unwrap().ttl, l.before.unwrap().ttl), (2, 3));
        // Dropped by the last router: the plain SYN reaches the server.
        plain.hops.remove(2);
        plain.hops[2].ttl = 3;
        let l = locate_drop(&mpc, &plain);
        assert_eq!((l.after.unwrap().ttl, l.before), (2, None));
        assert!(l.text.contains("the server (203.0.113.2)"), "{}", l.text);
    }

    /// Data copies stop short of the server, whose hop the SYN trace gave.
    fn copies(hops: Vec<Hop>, server_hop: u8) -> Trace {
        Trace {
            probe: ProbeKind::DataMptcp,
            sent: Sent {
                mss: 0,
                mptcp: Some(mptcp_probe_model::Subtype::Dss),
                mptcp_len: Some(20),
                seq: 1000,
            },
            destination_hop: Some(server_hop),
            ..trace(hops, false)
        }
    }

    #[test]
    fn dss_stripped_is_located_from_copies_that_never_reach_the_server() {
        let at_box = copies(
            vec![
                hop(1, TimeExceeded, Intact, None),
                hop(2, TimeExceeded, Absent, None),
                hop(3, TimeExceeded, Absent, None),
            ],
            4,
        );
        let l = locate(Verdict::DssStripped, &at_box);
        assert_eq!(
            (l.after.map(|h| h.ttl), l.before.map(|h| h.ttl), l.exact),
            (Some(1), Some(2), true),
            "{l:?}"
        );
        // Every router saw the DSS: the change is on the last stretch, to the server.
        let past = copies(vec![hop(1, TimeExceeded, Intact, None), hop(2, TimeExceeded, Intact, None)], 3);
        let l = locate(Verdict::DssStripped, &past);
        assert_eq!((l.after.map(|h| h.ttl), l.before, l.exact), (Some(2), None, true), "{l:?}");
        assert_eq!(l.text, "between hop 2 (198.51.100.2) and the server (203.0.113.2)");
        // The last router silent: a range up to the server.
        let silent = copies(vec![hop(1, TimeExceeded, Intact, None), hop(2, Silent, NotQuoted, None)], 3);
        let l = locate(Verdict::DssStripped, &silent);
        assert_eq!((l.after.map(|h| h.ttl), l.before, l.exact), (Some(1), None, false), "{l:?}");
        assert!(l.text.contains("hop 2 did not answer"), "{}", l.text);
        // Without the server's hop nothing is claimed past the last answer.
        let unknown = Trace { destination_hop: None, ..past };
        let l = locate(Verdict::DssStripped, &unknown);
        assert!(l.text.starts_with("after hop 2") && !l.exact, "{}", l.text);
    }
}
