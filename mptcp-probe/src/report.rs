//! The report of a `check` (schema "mptcp-probe/report/v1"), as JSON for machines and as a table
//! for people.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::classify::{Finding, Verdict};

pub const SCHEMA: &str = "mptcp-probe/report/v1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub id: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub client: ClientInfo,
    pub server: ServerSide,
    pub tests: Vec<TestResult>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientInfo {
    pub kernel: String,
    /// Every `net.mptcp.*` sysctl of the client's namespace (numbers where they are numbers).
    pub mptcp_sysctls: BTreeMap<String, Value>,
    /// The in-kernel path manager's endpoints ("ADDRESS flags") and limits when the run began.
    pub pm_endpoints: Vec<String>,
    pub pm_limits: Option<BTreeMap<String, u32>>,
    /// "tc+tracepoints", "tc+tracepoints+fentry" or "none".
    pub observer: String,
    /// Verdicts this run could not establish for lack of evidence (e.g. no observer).
    pub cannot_establish: Vec<Verdict>,
    /// Changes to the host's MPTCP state the run caused and undid, or noticed.
    pub host_state: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerSide {
    pub address: String,
    pub version: String,
    pub observer: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestResult {
    pub name: String,
    pub transport: String,
    pub port: u16,
    /// ok | error | timeout | refused | reset
    pub outcome: String,
    /// established | fallback | not_negotiated | not_applicable
    pub mptcp: String,
    pub subflows: Option<u8>,
    pub fallback_reason: Option<String>,
    pub verdicts: Vec<Verdict>,
    pub evidence: TestEvidence,
    pub duration_ms: u64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TestEvidence {
    pub client: Value,
    pub server: Value,
    pub mib_delta: BTreeMap<String, u64>,
    /// The server's MPTcpExt counters that moved during the test (its own report).
    #[serde(default)]
    pub server_mib_delta: BTreeMap<String, u64>,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub verdicts: Vec<Verdict>,
    pub mptcp_usable: bool,
}

/// The overall answer: the verdicts of all tests, and whether MPTCP works on the path (every MPTCP
/// test came up over MPTCP and no problem was found).
pub fn summarize(tests: &[TestResult]) -> Summary {
    let mut verdicts: Vec<Verdict> = tests.iter().flat_map(|t| t.verdicts.iter().copied()).collect();
    verdicts.sort();
    verdicts.dedup();
    let problems = verdicts.iter().any(|v| v.is_problem());
    if problems {
        verdicts.retain(|v| *v != Verdict::MptcpOk);
    }
    let mptcp_tests: Vec<&TestResult> = tests.iter().filter(|t| t.transport == "mptcp").collect();
    let usable = !mptcp_tests.is_empty() && !problems && mptcp_tests.iter().all(|t| t.mptcp == "established");
    Summary { verdicts, mptcp_usable: usable }
}

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
                t.name.clone(),
                t.transport.clone(),
                t.port.to_string(),
                t.outcome.clone(),
                t.mptcp.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(transport: &str, mptcp: &str, verdicts: Vec<Verdict>) -> TestResult {
        TestResult {
            name: "http".into(),
            transport: transport.into(),
            port: 80,
            outcome: "ok".into(),
            mptcp: mptcp.into(),
            subflows: Some(1),
            fallback_reason: None,
            verdicts,
            evidence: TestEvidence::default(),
            duration_ms: 3,
            error: None,
        }
    }

    #[test]
    fn clean_run_is_usable_with_mptcp_ok_only() {
        let s = summarize(&[
            t("mptcp", "established", vec![Verdict::MptcpOk]),
            t("tcp", "not_applicable", vec![]),
        ]);
        assert_eq!(s.verdicts, vec![Verdict::MptcpOk]);
        assert!(s.mptcp_usable);
    }

    #[test]
    fn a_problem_anywhere_makes_the_path_unusable_and_drops_mptcp_ok() {
        let s = summarize(&[
            t("mptcp", "established", vec![Verdict::MptcpOk]),
            t("mptcp", "fallback", vec![Verdict::SynOptionStripped]),
        ]);
        assert_eq!(s.verdicts, vec![Verdict::SynOptionStripped]);
        assert!(!s.mptcp_usable);
    }

    #[test]
    fn nat_is_informative() {
        let s = summarize(&[t("mptcp", "established", vec![Verdict::MptcpOk, Verdict::Nat])]);
        assert_eq!(s.verdicts, vec![Verdict::MptcpOk, Verdict::Nat]);
        assert!(s.mptcp_usable);
    }

    #[test]
    fn no_mptcp_test_means_no_claim_of_usability() {
        assert!(!summarize(&[t("tcp", "not_applicable", vec![])]).mptcp_usable);
    }
}
