//! The report of a `check` as a table for people.

use mptcp_probe_model::{Report, Verdict};

fn names(v: &[Verdict]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Plain-text table with one row per test and the overall answer.
pub fn table(r: &Report) -> String {
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
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[&str]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    out.push_str(&line(&header));
    out.push('\n');
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
        out.push('\n');
    }
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
        }
    }
    out.push('\n');
    if r.summary.mptcp_usable {
        out.push_str(&format!(
            "MPTCP works on this path to {} ({}).\n",
            r.server.address,
            names(&r.summary.verdicts)
        ));
    } else {
        out.push_str(&format!(
            "MPTCP does not work as it should on this path to {}: {}.\n",
            r.server.address,
            names(&r.summary.verdicts)
        ));
    }
    if !r.client.cannot_establish.is_empty() {
        out.push_str(&format!(
            "Without an observer on this host these verdicts could not be established: {}.\n",
            names(&r.client.cannot_establish)
        ));
    }
    for s in &r.client.host_state {
        out.push_str(&format!("Host MPTCP state: {s}\n"));
    }
    out
}
