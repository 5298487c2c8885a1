//! The report of a `check` as a table for people.

use mptcp_probe_model::{
    locate::{Answer, Locate, ProbeKind, Quoted},
    NetworkKind, Outcome, Report, Transport, Verdict,
};

fn names(v: &[Verdict]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Plain-text table with one row per test, the findings of problems under it, and the overall
/// answer.
pub fn table(r: &Report) -> String {
    let mut out = grid(r);
    findings(r, &mut out);
    if let Some(l) = &r.locate {
        located(l, &mut out);
    }
    out.push('\n');
    answer(r, &mut out);
    out
}

/// One row per test, columns padded to their widest cell.
fn grid(r: &Report) -> String {
    let header =
        ["test", "transport", "port", "outcome", "mptcp", "subflows", "verdicts", "fallback reason", "ms"];
    let rows: Vec<Vec<String>> = r
        .tests
        .iter()
        .map(|t| {
            vec![
                t.name.to_string(),
                t.transport.to_string(),
                t.port.to_string(),
                t.outcome.to_string(),
                t.mptcp.to_string(),
                t.subflows.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                names(&t.verdicts),
                t.fallback_reason.clone().unwrap_or_else(|| "-".into()),
                t.duration_ms.to_string(),
            ]
        })
        .collect();
    columns(&header, &rows, "")
}

/// Rows under a header, each column padded to its widest cell, every line indented.
fn columns(header: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[&str]| -> String {
        let l = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        format!("{indent}{}\n", l.trim_end())
    };
    let mut out = line(header);
    out.push_str(&line(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    for row in rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// The finding behind each problem verdict: which packet, which end, expected, seen.
fn findings(r: &Report, out: &mut String) {
    for t in &r.tests {
        for f in t.evidence.findings.iter().filter(|f| f.verdict.is_problem()) {
            out.push_str(&format!(
                "  {} {}: {} at the {}: expected {}, saw {}\n",
                t.name,
                f.verdict.as_str(),
                f.packet,
                f.end,
                f.expected,
                f.seen
            ));
            if let Some(l) = &f.located {
                out.push_str(&format!("    located: {l}\n"));
            }
        }
    }
}

/// Each trace of `--locate`, one row per hop, and the locations it gave.
fn located(l: &Locate, out: &mut String) {
    let dash = || "-".to_string();
    for t in &l.traces {
        out.push_str(&format!("\nlocate: {} to {}\n", t.probe.as_str(), t.destination));
        let rows: Vec<Vec<String>> = t
            .hops
            .iter()
            .map(|h| {
                let quoted = matches!(h.answer, Answer::TimeExceeded | Answer::Unreachable);
                let seq = h.seq.map(|s| {
                    if s == t.sent.seq.wrapping_add(u32::from(h.ttl).saturating_sub(1)) {
                        "as sent".to_string()
                    } else {
                        s.to_string()
                    }
                });
                vec![
                    h.ttl.to_string(),
                    h.from.map(|a| a.to_string()).unwrap_or_else(|| "*".into()),
                    answer_word(h.answer).into(),
                    h.quoted_tcp_bytes.map(|b| b.to_string()).unwrap_or_else(dash),
                    if quoted { quoted_word(h.mptcp).into() } else { dash() },
                    h.mss.map(|m| m.to_string()).unwrap_or_else(dash),
                    seq.unwrap_or_else(dash),
                ]
            })
            .collect();
        let option = if t.probe == ProbeKind::DataMptcp { "DSS" } else { "MP_CAPABLE" };
        let header = ["hop", "from", "answer", "TCP bytes quoted", option, "MSS", "seq"];
        out.push_str(&columns(&header, &rows, "  "));
    }
    for loc in &l.locations {
        out.push_str(&format!("  {}: {}\n", loc.verdict.as_str(), loc.text));
    }
    for n in &l.notes {
        out.push_str(&format!("  locate: {n}\n"));
    }
}

fn answer_word(a: Answer) -> &'static str {
    match a {
        Answer::TimeExceeded => "time exceeded",
        Answer::Unreachable => "unreachable",
        Answer::SynAck => "SYN/ACK (the server)",
        Answer::Reset => "RST",
        Answer::Silent => "no answer",
    }
}

fn quoted_word(q: Quoted) -> &'static str {
    match q {
        Quoted::Intact => "as sent",
        Quoted::Changed => "changed",
        Quoted::Absent => "absent",
        Quoted::NotQuoted => "not quoted",
    }
}

/// "a home network", "an enterprise network", "a network of another kind".
fn network_words(k: NetworkKind) -> String {
    match k {
        NetworkKind::Other => "a network of another kind".into(),
        NetworkKind::Enterprise => format!("an {k} network"),
        _ => format!("a {k} network"),
    }
}

/// Whether MPTCP works on the path, the path's conditions, what the run could not establish or
/// cut short, and what it did to the host.
pub fn answer(r: &Report, out: &mut String) {
    if r.summary.mptcp_usable {
        out.push_str(&format!(
            "MPTCP works on this path to {} ({}).\n",
            r.server.address,
            names(&r.summary.verdicts)
        ));
    } else if r.summary.verdicts.iter().any(|v| v.is_problem()) {
        out.push_str(&format!(
            "MPTCP does not work as it should on this path to {}: {}.\n",
            r.server.address,
            names(&r.summary.verdicts)
        ));
    } else {
        out.push_str(&format!(
            "MPTCP cannot be said to work on this path to {} ({}): see below.\n",
            r.server.address,
            names(&r.summary.verdicts)
        ));
    }
    match (r.client.network_kind, &r.client.note) {
        (Some(k), Some(n)) => out.push_str(&format!("Run from {}: {n}\n", network_words(k))),
        (Some(k), None) => out.push_str(&format!("Run from {}.\n", network_words(k))),
        (None, Some(n)) => out.push_str(&format!("Note: {n}\n")),
        (None, None) => {}
    }
    if !r.client.cannot_establish.is_empty() {
        out.push_str(&format!(
            "Without an observer on this host these verdicts could not be established: {}.\n",
            names(&r.client.cannot_establish)
        ));
    }
    for v in &r.summary.path_conditions {
        match v {
            Verdict::PathBroken => out.push_str(&format!(
                "The path fails for plain TCP as well ({}): not an MPTCP problem.\n",
                r.summary.broken_tests.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
            )),
            Verdict::HandshakeReordered => {
                out.push_str(
                    "The path reordered a first flight and Linux fell back to TCP (no option removed)",
                );
                let runs: Vec<String> = r
                    .tests
                    .iter()
                    .filter_map(|t| t.reruns.as_ref().map(|x| (t.name, x)))
                    .map(|(n, x)| format!("{n}: MPTCP in {} of {} runs", x.established, x.runs + 1))
                    .collect();
                if !runs.is_empty() {
                    out.push_str(&format!("; run again: {}", runs.join(", ")));
                }
                out.push_str(".\n");
            }
            other => out.push_str(&format!("Path condition: {other}.\n")),
        }
    }
    let not_run: Vec<String> = r
        .tests
        .iter()
        .filter(|t| t.transport == Transport::Mptcp && t.outcome == Outcome::NotRun)
        .map(|t| {
            let why = t.error.as_deref().unwrap_or_default();
            format!("{} ({})", t.name, why.strip_prefix("not run: ").unwrap_or(why))
        })
        .collect();
    if !not_run.is_empty() {
        out.push_str(&format!("Not run on this host: {}.\n", not_run.join("; ")));
    }
    if !r.client.cut_short.is_empty() {
        out.push_str(&format!(
            "The time budget ({} s) cut short or left out: {}.\n",
            r.client.time_budget_s.unwrap_or_default(),
            r.client.cut_short.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    for s in &r.client.host_state {
        out.push_str(&format!("Host MPTCP state: {s}\n"));
    }
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::{
        summarize, ClientInfo, MptcpState, NetworkKind, ObserverKind, Outcome, Report, Reruns, ServerSide,
        TestEvidence, TestName, TestResult, Transport, Verdict,
    };

    fn test(name: TestName, transport: Transport, mptcp: MptcpState, verdicts: Vec<Verdict>) -> TestResult {
        TestResult {
            name,
            transport,
            port: 80,
            outcome: Outcome::Ok,
            mptcp,
            subflows: None,
            fallback_reason: None,
            verdicts,
            evidence: TestEvidence::default(),
            duration_ms: 1,
            error: None,
            reruns: None,
        }
    }

    fn report(tests: Vec<TestResult>) -> Report {
        Report {
            schema: mptcp_probe_model::SCHEMA.into(),
            id: "x".into(),
            started_at: "2026-12-01T00:00:00Z".into(),
            duration_ms: 1,
            client: ClientInfo {
                kernel: "6.18".into(),
                mptcp_sysctls: Default::default(),
                pm_endpoints: vec![],
                pm_limits: None,
                observer: ObserverKind::TcTracepoints,
                cannot_establish: vec![],
                host_state: vec![],
                time_budget_s: Some(300),
                cut_short: vec![TestName::Ftp],
                network_kind: None,
                note: None,
            },
            server: ServerSide { address: "203.0.113.2".into(), version: "0.1.0".into(), observer: true },
            summary: summarize(&tests),
            tests,
            locate: None,
        }
    }

    #[test]
    fn path_conditions_and_the_budget_are_said_apart_from_the_verdicts() {
        let mut reordered =
            test(TestName::Http, Transport::Mptcp, MptcpState::Fallback, vec![Verdict::HandshakeReordered]);
        reordered.reruns = Some(Reruns { runs: 2, established: 2, verdicts: vec![] });
        let broken =
            test(TestName::Bulk, Transport::Tcp, MptcpState::NotApplicable, vec![Verdict::PathBroken]);
        let t = super::table(&report(vec![reordered, broken]));
        assert!(t.contains("MPTCP works on this path to 203.0.113.2"), "most runs of http were MPTCP: {t}");
        assert!(t.contains("The path fails for plain TCP as well (bulk)"), "{t}");
        assert!(t.contains("run again: http: MPTCP in 2 of 3 runs"), "{t}");
        assert!(t.contains("The time budget (300 s) cut short or left out: ftp."), "{t}");
    }

    #[test]
    fn a_path_broken_for_every_test_is_not_said_to_work() {
        let broken =
            test(TestName::Bulk, Transport::Tcp, MptcpState::NotApplicable, vec![Verdict::PathBroken]);
        let t = super::table(&report(vec![broken]));
        assert!(t.contains("MPTCP cannot be said to work on this path to 203.0.113.2"), "{t}");
    }

    #[test]
    fn a_test_not_run_on_this_host_is_said_and_does_not_stop_the_answer() {
        let ok = test(TestName::Http, Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk]);
        let mut join = test(TestName::Join, Transport::Mptcp, MptcpState::NotApplicable, vec![]);
        join.outcome = Outcome::NotRun;
        join.error = Some("not run: no second local address with a route to the server to join from".into());
        let mut r = report(vec![ok, join]);
        r.client.network_kind = Some(NetworkKind::Other);
        let t = super::table(&r);
        assert!(t.contains("MPTCP works on this path to 203.0.113.2 (mptcp_ok)"), "{t}");
        assert!(t.contains("Run from a network of another kind.\n"), "{t}");
        r.client.network_kind = Some(NetworkKind::Enterprise);
        assert!(super::table(&r).contains("Run from an enterprise network.\n"));
        assert!(
            t.contains("Not run on this host: join (no second local address with a route to the server to join from)."),
            "{t}"
        );
    }
}
