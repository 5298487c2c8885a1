//! The report of a `check` (schema "mptcp-probe/report/v1"): what `check --json` prints and
//! what a collector receives.

use std::collections::BTreeMap;

use core::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    connection::{ConnectionView, HandshakeView, Part, SegmentStats},
    verdict::{Finding, UnknownName, Verdict},
};

/// The schema name every report carries.
pub const SCHEMA: &str = "mptcp-probe/report/v1";

/// The tests of the contract (stable names), in the order `check` runs them by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestName {
    Handshake,
    Http,
    Ftp,
    Tls,
    Bulk,
    Echo,
    Join,
    AddAddr,
}

impl TestName {
    pub const ALL: [TestName; 8] = [
        TestName::Handshake,
        TestName::Http,
        TestName::Ftp,
        TestName::Tls,
        TestName::Bulk,
        TestName::Echo,
        TestName::Join,
        TestName::AddAddr,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TestName::Handshake => "handshake",
            TestName::Http => "http",
            TestName::Ftp => "ftp",
            TestName::Tls => "tls",
            TestName::Bulk => "bulk",
            TestName::Echo => "echo",
            TestName::Join => "join",
            TestName::AddAddr => "add_addr",
        }
    }
}

impl fmt::Display for TestName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TestName {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TestName::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownName::new("test", s))
    }
}

/// MPTCP or plain TCP: each test runs over both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Mptcp,
    Tcp,
}

impl Transport {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Mptcp => "mptcp",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a test's connection ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    Refused,
    Reset,
    /// Not run on this host: it lacks what the test needs (a second local address, a server
    /// announcing one, a path manager it may configure). Says nothing about the path.
    NotRun,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::NotRun => "not_run",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Connection-level MPTCP state of a test's connection or of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MptcpState {
    Established,
    Fallback,
    NotNegotiated,
    /// A plain-TCP test, or a test not run.
    NotApplicable,
}

impl MptcpState {
    pub const fn as_str(self) -> &'static str {
        match self {
            MptcpState::Established => "established",
            MptcpState::Fallback => "fallback",
            MptcpState::NotNegotiated => "not_negotiated",
            MptcpState::NotApplicable => "not_applicable",
        }
    }
}

impl fmt::Display for MptcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which observer a client ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObserverKind {
    #[serde(rename = "tc+tracepoints")]
    TcTracepoints,
    #[serde(rename = "tc+tracepoints+fentry")]
    TcTracepointsFentry,
    #[serde(rename = "none")]
    None,
}

/// The kind of network a check ran from, as its user says (`check --network-kind`): the
/// collector counts paths by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkKind {
    Home,
    Campus,
    Enterprise,
    Hotspot,
    Mobile,
    Other,
}

impl NetworkKind {
    pub const ALL: [NetworkKind; 6] = [
        NetworkKind::Home,
        NetworkKind::Campus,
        NetworkKind::Enterprise,
        NetworkKind::Hotspot,
        NetworkKind::Mobile,
        NetworkKind::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            NetworkKind::Home => "home",
            NetworkKind::Campus => "campus",
            NetworkKind::Enterprise => "enterprise",
            NetworkKind::Hotspot => "hotspot",
            NetworkKind::Mobile => "mobile",
            NetworkKind::Other => "other",
        }
    }
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName::new("network kind", s))
    }
}

/// The longest note a report carries (`check --note`), in characters.
pub const MAX_NOTE_CHARS: usize = 500;

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
    /// Where on the path the changes happen (`check --locate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locate: Option<crate::locate::Locate>,
}

/// A JSON value of a sysctl: a number where it is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SysctlValue {
    Number(i64),
    Text(String),
}

impl SysctlValue {
    pub fn parse(s: &str) -> Self {
        s.parse().map(SysctlValue::Number).unwrap_or_else(|_| SysctlValue::Text(s.to_string()))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientInfo {
    pub kernel: String,
    /// Every `net.mptcp.*` sysctl of the client's namespace.
    pub mptcp_sysctls: BTreeMap<String, SysctlValue>,
    /// The in-kernel path manager's endpoints ("ADDRESS flags") and limits when the run began.
    #[serde(default)]
    pub pm_endpoints: Vec<String>,
    #[serde(default)]
    pub pm_limits: Option<BTreeMap<String, u32>>,
    pub observer: ObserverKind,
    /// Verdicts this run could not establish for lack of evidence (e.g. no observer).
    #[serde(default)]
    pub cannot_establish: Vec<Verdict>,
    /// Changes to the host's MPTCP state the run caused and undid, or noticed.
    #[serde(default)]
    pub host_state: Vec<String>,
    /// How long the check was allowed to take, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_s: Option<u64>,
    /// Tests the time budget cut short or left out (not judged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut_short: Vec<TestName>,
    /// The kind of network the check ran from, when its user said (`--network-kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_kind: Option<NetworkKind>,
    /// The user's own words about where and how it ran (`--note`), at most [`MAX_NOTE_CHARS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerSide {
    pub address: String,
    pub version: String,
    #[serde(default)]
    pub observer: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestResult {
    pub name: TestName,
    pub transport: Transport,
    pub port: u16,
    pub outcome: Outcome,
    pub mptcp: MptcpState,
    pub subflows: Option<u8>,
    pub fallback_reason: Option<String>,
    pub verdicts: Vec<Verdict>,
    pub evidence: TestEvidence,
    pub duration_ms: u64,
    #[serde(default)]
    pub error: Option<String>,
    /// When the first MPTCP run fell back because the path reordered its first flight: the test
    /// run again, to tell what a user will see most of the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reruns: Option<Reruns>,
}

/// The reruns of a test whose MPTCP run fell back for a path condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reruns {
    /// Runs made after the first.
    pub runs: u32,
    /// Of those, the ones that came up and stayed MPTCP.
    pub established: u32,
    /// Their verdicts, one list per run.
    pub verdicts: Vec<Vec<Verdict>>,
}

impl Reruns {
    /// MPTCP came up in most runs, the first one included (which did not).
    pub fn mostly_established(&self) -> bool {
        self.established * 2 > self.runs + 1
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TestEvidence {
    pub client: ClientEvidence,
    /// The server's view of the test's main connection (null: the server did not see it).
    pub server: Option<ConnectionView>,
    pub mib_delta: BTreeMap<String, u64>,
    /// The server's MPTcpExt counters that moved during the test (its own report).
    #[serde(default)]
    pub server_mib_delta: BTreeMap<String, u64>,
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// What the client saw of a test: its sockets, its observer's view of the main connection, and
/// the digests of what it sent and received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEvidence {
    /// The test's connections as the client saw them; the first is the main one.
    #[serde(default)]
    pub connections: Vec<ConnectionView>,
    /// The main connection's handshake as this host's observer saw it.
    #[serde(default)]
    pub wire: Option<HandshakeView>,
    /// SYNs sent with MP_CAPABLE for the main connection (retries included).
    #[serde(default)]
    pub mpc_syns: Option<u32>,
    #[serde(default)]
    pub data_without_dss_rx: Option<u32>,
    #[serde(default)]
    pub infinite_mappings: Option<u32>,
    #[serde(default)]
    pub sent_segments: Option<SegmentStats>,
    /// (part, SHA-256 of what the client sent).
    #[serde(default)]
    pub sent: Vec<(Part, String)>,
    /// (part, SHA-256 of what the client received, SHA-256 of what the server says it sent).
    #[serde(default)]
    pub received: Vec<(Part, String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// What the path does to MPTCP: middlebox verdicts, informative ones, or `mptcp_ok`.
    pub verdicts: Vec<Verdict>,
    /// How the path treats any traffic (`handshake_reordered`, `path_broken`), apart from the
    /// middlebox verdicts.
    #[serde(default)]
    pub path_conditions: Vec<Verdict>,
    /// The tests whose plain-TCP baseline failed too (`path_broken`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken_tests: Vec<TestName>,
    pub mptcp_usable: bool,
}

/// The overall answer: the verdicts of all tests, the path's conditions, and whether MPTCP works
/// on the path as well as plain TCP does there: every MPTCP test whose plain-TCP baseline worked
/// came up over MPTCP (most of the time, where the path reordered a first flight and the test
/// was run again) and no problem was found. Tests the path fails for plain TCP too
/// (`path_broken`) are listed apart and say nothing about MPTCP; tests not run on this host
/// (`not_run`: a single-homed laptop has no second address to join from) say nothing either.
pub fn summarize(tests: &[TestResult]) -> Summary {
    let mut all: Vec<Verdict> = tests.iter().flat_map(|t| t.verdicts.iter().copied()).collect();
    all.sort();
    all.dedup();
    let (path_conditions, mut verdicts): (Vec<Verdict>, Vec<Verdict>) =
        all.into_iter().partition(|v| v.is_path_condition());
    let problems = verdicts.iter().any(|v| v.is_problem());
    let mut broken_tests: Vec<TestName> =
        tests.iter().filter(|t| t.verdicts.contains(&Verdict::PathBroken)).map(|t| t.name).collect();
    broken_tests.sort();
    broken_tests.dedup();
    let up = |t: &&TestResult| {
        t.mptcp == MptcpState::Established || t.reruns.as_ref().is_some_and(Reruns::mostly_established)
    };
    let comparable: Vec<&TestResult> = tests
        .iter()
        .filter(|t| {
            t.transport == Transport::Mptcp && t.outcome != Outcome::NotRun && !broken_tests.contains(&t.name)
        })
        .collect();
    let usable = !comparable.is_empty() && !problems && comparable.iter().all(up);
    if problems || comparable.is_empty() {
        verdicts.retain(|v| *v != Verdict::MptcpOk);
    }
    Summary { verdicts, path_conditions, broken_tests, mptcp_usable: usable }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(transport: Transport, mptcp: MptcpState, verdicts: Vec<Verdict>) -> TestResult {
        TestResult {
            name: TestName::Http,
            transport,
            port: 80,
            outcome: Outcome::Ok,
            mptcp,
            subflows: Some(1),
            fallback_reason: None,
            verdicts,
            evidence: TestEvidence::default(),
            duration_ms: 3,
            error: None,
            reruns: None,
        }
    }

    #[test]
    fn clean_run_is_usable_with_mptcp_ok_only() {
        let s = summarize(&[
            t(Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk]),
            t(Transport::Tcp, MptcpState::NotApplicable, vec![]),
        ]);
        assert_eq!(s.verdicts, vec![Verdict::MptcpOk]);
        assert!(s.mptcp_usable);
    }

    #[test]
    fn a_problem_anywhere_makes_the_path_unusable_and_drops_mptcp_ok() {
        let s = summarize(&[
            t(Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk]),
            t(Transport::Mptcp, MptcpState::Fallback, vec![Verdict::SynOptionStripped]),
        ]);
        assert_eq!(s.verdicts, vec![Verdict::SynOptionStripped]);
        assert!(!s.mptcp_usable);
    }

    #[test]
    fn nat_is_informative() {
        let s =
            summarize(&[t(Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk, Verdict::Nat])]);
        assert_eq!(s.verdicts, vec![Verdict::MptcpOk, Verdict::Nat]);
        assert!(s.mptcp_usable);
    }

    #[test]
    fn tests_the_path_fails_for_plain_tcp_too_are_listed_apart_and_say_nothing_about_mptcp() {
        let mut bulk = t(Transport::Mptcp, MptcpState::Established, vec![Verdict::PathBroken]);
        bulk.name = TestName::Bulk;
        let mut bulk_tcp = t(Transport::Tcp, MptcpState::NotApplicable, vec![Verdict::PathBroken]);
        bulk_tcp.name = TestName::Bulk;
        let echo = t(Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk]);
        let s = summarize(&[echo, bulk.clone(), bulk_tcp.clone()]);
        assert_eq!(s.verdicts, vec![Verdict::MptcpOk], "MPTCP works where plain TCP works");
        assert_eq!(s.path_conditions, vec![Verdict::PathBroken]);
        assert_eq!(s.broken_tests, vec![TestName::Bulk]);
        assert!(s.mptcp_usable);
        // Broken for every test: nothing to say MPTCP works.
        let s = summarize(&[bulk, bulk_tcp]);
        assert!(s.verdicts.is_empty());
        assert!(!s.mptcp_usable);
    }

    #[test]
    fn a_reordered_first_flight_counts_as_most_of_its_reruns_say() {
        let mut reordered = t(Transport::Mptcp, MptcpState::Fallback, vec![Verdict::HandshakeReordered]);
        reordered.reruns =
            Some(Reruns { runs: 2, established: 2, verdicts: vec![vec![Verdict::MptcpOk]; 2] });
        let ok = t(Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk]);
        let s = summarize(&[ok.clone(), reordered.clone()]);
        assert_eq!(s.verdicts, vec![Verdict::MptcpOk]);
        assert_eq!(s.path_conditions, vec![Verdict::HandshakeReordered]);
        assert!(s.mptcp_usable, "2 of 3 runs were MPTCP");
        reordered.reruns = Some(Reruns { runs: 2, established: 1, ..Default::default() });
        assert!(!summarize(&[ok, reordered]).mptcp_usable, "1 of 3 runs was MPTCP");
    }

    #[test]
    fn a_test_not_run_on_this_host_says_nothing_about_the_path() {
        let ok = t(Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk]);
        let mut join = t(Transport::Mptcp, MptcpState::NotApplicable, vec![]);
        join.name = TestName::Join;
        join.outcome = Outcome::NotRun;
        let s = summarize(&[ok, join.clone()]);
        assert!(s.mptcp_usable, "a single-homed host without a second address to join from");
        assert_eq!(s.verdicts, vec![Verdict::MptcpOk]);
        assert!(!summarize(&[join]).mptcp_usable, "nothing run is no claim");
        let mut failed = t(Transport::Mptcp, MptcpState::NotNegotiated, vec![]);
        failed.outcome = Outcome::Error;
        let ok = t(Transport::Mptcp, MptcpState::Established, vec![Verdict::MptcpOk]);
        assert!(!summarize(&[ok, failed]).mptcp_usable, "a test that ran and failed still counts");
    }

    #[test]
    fn no_mptcp_test_means_no_claim_of_usability() {
        assert!(!summarize(&[t(Transport::Tcp, MptcpState::NotApplicable, vec![])]).mptcp_usable);
    }

    #[test]
    fn names_parse_back_and_serialise_as_the_contract_says() {
        for n in TestName::ALL {
            assert_eq!(n.as_str().parse::<TestName>(), Ok(n));
            assert_eq!(serde_json::to_value(n).unwrap(), n.as_str());
        }
        assert!("ping".parse::<TestName>().is_err());
        for k in NetworkKind::ALL {
            assert_eq!(k.as_str().parse::<NetworkKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("office".parse::<NetworkKind>().is_err());
        assert_eq!(serde_json::to_value(ObserverKind::TcTracepointsFentry).unwrap(), "tc+tracepoints+fentry");
        assert_eq!(serde_json::to_value(MptcpState::NotApplicable).unwrap(), "not_applicable");
        assert_eq!(serde_json::to_value(SysctlValue::parse("1")).unwrap(), 1);
        assert_eq!(serde_json::to_value(SysctlValue::parse("in-kernel")).unwrap(), "in-kernel");
    }
}
