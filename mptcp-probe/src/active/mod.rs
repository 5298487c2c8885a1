//! `check`: runs each test over plain TCP and then over MPTCP against a `serve`, gathers both
//! ends' observations, the kernel's per-socket view and MIB deltas, names what the path does with
//! the verdict rules, and makes the report.

pub mod client;
pub mod control;
pub mod ftp;
pub mod suite;
pub mod tls;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mptcp_probe_common::{event::tcp_flags, options::subtype};
use mptcp_probe_model::{
    locate::Locate, summarize, ClientEvidence, ClientInfo, ConnectionView, MptcpState, NetworkKind, Outcome,
    Report, SegmentStats, ServerSide, TestEvidence, TestName, TestResult, Transport, Verdict, SCHEMA,
};

use self::{control::Control, suite::Target};
use crate::{
    host::{mib, pm, sysctl},
    output::pcap::PcapTrace,
    pipeline::{observer_kind, recorder::handshake_of, service::ObserverService},
    protocol::{ServerInfo, ServerReport},
    verdict::{self, Evidence},
};

/// What `check` is asked to do.
pub struct CheckOptions {
    /// The server: an address or a host name.
    pub server: String,
    pub tests: Vec<TestName>,
    pub pcap: Option<PathBuf>,
    pub no_observer: bool,
    pub control_port: u16,
    /// How long a connection may take to come up.
    pub timeout: Duration,
    /// Bytes each way of the bulk test.
    pub bulk_bytes: u64,
    /// How long the whole check may take: tests that would run past it are cut short or not
    /// run, and the report says which.
    pub budget: Duration,
    /// Locate the hops behind the verdicts a SYN can show (`--locate`).
    pub locate: Option<crate::locate::LocateOptions>,
    /// The kind of network the check runs from, as its user says (`--network-kind`).
    pub network_kind: Option<NetworkKind>,
    /// The user's note (`--note`).
    pub note: Option<String>,
}

/// Runs of a test made again after its MPTCP run fell back because the path reordered the
/// first flight, at most.
const RERUNS: u32 = 2;

/// Verdicts that need this host's observer (wire evidence at the client).
const NEED_CLIENT_OBSERVER: [Verdict; 6] = [
    Verdict::SynOptionStripped,
    Verdict::SynackOptionStripped,
    Verdict::DssStripped,
    Verdict::SeqRewritten,
    Verdict::MssRewritten,
    Verdict::Proxied,
];

fn resolve(server: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = server.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs = (server, 0)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the server name {server:?}"))?;
    addrs.next().map(|a| a.ip()).ok_or_else(|| anyhow::anyhow!("the server name {server:?} has no address"))
}

/// What this host's observer saw of a test's main connection.
#[derive(Default)]
struct ClientWire {
    handshake: Option<mptcp_probe_model::HandshakeView>,
    /// SYNs sent with MP_CAPABLE (retries included).
    mpc_syns: Option<u32>,
    rx_without_dss: Option<u32>,
    infinite_mappings: Option<u32>,
    sent_segments: Option<SegmentStats>,
}

/// One test over one transport, as measured, before it is judged.
struct Measured {
    port: u16,
    run: client::Run,
    extra: suite::Extra,
    mib_delta: BTreeMap<String, u64>,
    server_mib_delta: BTreeMap<String, u64>,
    server: Option<ConnectionView>,
    server_others: Vec<ConnectionView>,
    wire: ClientWire,
    started: Instant,
}

struct Checker {
    ip: IpAddr,
    info: ServerInfo,
    opts: CheckOptions,
    control: Control,
    observer: Option<Arc<ObserverService>>,
    run_id: String,
    /// When the time budget runs out.
    deadline: Instant,
    /// Tests the budget cut short or left out.
    cut_short: std::sync::Mutex<Vec<TestName>>,
}

impl Checker {
    fn target(&self) -> Target<'_> {
        Target { ip: self.ip, info: &self.info, timeout: self.opts.timeout, bulk_bytes: self.opts.bulk_bytes }
    }

    /// The client's wire view of its main connection, from the observer.
    fn client_wire(&self, run: &client::Run) -> ClientWire {
        let (Some(obs), Some(c)) = (&self.observer, run.connections.first()) else {
            return ClientWire::default();
        };
        let (Some(local), Some(peer)) = (c.local, c.peer) else { return ClientWire::default() };
        let packets = obs.packets(local, peer);
        let mpc_syns = packets
            .iter()
            .filter(|p| p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN)
            .filter(|p| p.opts.find(subtype::MP_CAPABLE).is_some())
            .count() as u32;
        let summary = obs.summary(local, peer);
        ClientWire {
            handshake: handshake_of(&packets),
            mpc_syns: Some(mpc_syns),
            rx_without_dss: summary.as_ref().map(|s| s.data_without_dss.rx),
            infinite_mappings: summary.as_ref().map(|s| s.infinite_mappings.rx + s.infinite_mappings.tx),
            sent_segments: summary.as_ref().map(|s| SegmentStats {
                count: s.data_segments.tx as u64,
                bytes: s.payload_bytes.tx,
                max: s.max_segment.tx,
            }),
        }
    }

    /// Runs one test over one transport with the counters of both ends around it, and collects
    /// what the server and this host's observer saw.
    async fn measure(
        &self,
        test: TestName,
        transport: Transport,
        run_no: u32,
        host_notes: &mut Vec<String>,
    ) -> Measured {
        let started = Instant::now();
        let test_id = match run_no {
            0 => format!("{}-{}-{}", self.run_id, test.as_str(), transport.as_str()),
            n => format!("{}-{}-{}-{n}", self.run_id, test.as_str(), transport.as_str()),
        };
        let mib_before = mib::read();
        let server_mib_before = self.control.mib().await;
        let mut extra = suite::Extra::default();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let (port, run) = if remaining.is_zero() {
            (0, over_budget(&self.opts, "not run"))
        } else {
            let target = self.target();
            let run = target.run(test, transport, &test_id, &mut extra);
            tokio::time::timeout(remaining, run)
                .await
                .unwrap_or_else(|_| (0, over_budget(&self.opts, "cut short")))
        };
        if run.budget {
            let mut cut = self.cut_short.lock().unwrap_or_else(|p| p.into_inner());
            if !cut.contains(&test) {
                cut.push(test);
            }
        }
        host_notes.append(&mut extra.notes);
        let mib_delta = mib::delta(&mib_before, &mib::read());
        // A dropped MPTCP SYN makes the kernel disable MPTCP for a while: undo it at once so the
        // next test measures the path, not that state.
        host_notes.extend(sysctl::undo_blackhole(&mib_delta));
        let report = self.control.report(&test_id).await;
        // The server's counters that moved meanwhile (other clients of that server included).
        let server_mib_delta = match (server_mib_before, self.control.mib().await) {
            (Some(before), Some(after)) => mib::delta(&before, &after),
            _ => BTreeMap::new(),
        };
        if let Some(a) = extra.add_addr.as_mut() {
            // The server's socket says how many ADD_ADDR it sent.
            a.server_signalled =
                report.as_ref().and_then(|r| r.connections.iter().filter_map(|c| c.add_addr_signal).max());
        }
        let local = run.connections.first().and_then(|c| c.local);
        let (server, server_others) = match report.as_ref().and_then(|r| server_view(r, local)) {
            Some((main, others)) => (Some(main), others),
            None => (None, Vec::new()),
        };
        let wire = self.client_wire(&run);
        Measured { port, run, extra, mib_delta, server_mib_delta, server, server_others, wire, started }
    }

    /// Runs a test over plain TCP (the baseline: does the path work at all for it?) and then over
    /// MPTCP; the results in the order mptcp, tcp.
    async fn run_test(
        &self,
        test: TestName,
        n: usize,
        total: usize,
        host_notes: &mut Vec<String>,
    ) -> Vec<TestResult> {
        let mut results = Vec::new();
        let mut tcp_ok = None;
        for transport in [Transport::Tcp, Transport::Mptcp] {
            eprint!("[{n}/{total}] {test} over {transport} ... ");
            let m = self.measure(test, transport, 0, host_notes).await;
            let m_skipped = m.run.skipped;
            let mut result = judge(test, transport, m, tcp_ok);
            if transport == Transport::Tcp && !m_skipped {
                tcp_ok = Some(result.outcome == Outcome::Ok);
            }
            eprintln!("{}", progress_line(&result));
            if result.verdicts.contains(&Verdict::HandshakeReordered) {
                self.rerun(&mut result, tcp_ok, host_notes).await;
            }
            results.push(result);
        }
        results.reverse();
        results
    }

    /// Runs an MPTCP test whose first flight the path reordered again (at most [`RERUNS`] times,
    /// within the budget), to tell what a user will see most of the time.
    async fn rerun(&self, first: &mut TestResult, tcp_ok: Option<bool>, host_notes: &mut Vec<String>) {
        let mut reruns = mptcp_probe_model::Reruns::default();
        for i in 1..=RERUNS {
            if Instant::now() >= self.deadline {
                break;
            }
            eprint!(
                "    {} over mptcp again ({i}/{RERUNS}): the path reordered its first flight ... ",
                first.name
            );
            let m = self.measure(first.name, Transport::Mptcp, i, host_notes).await;
            if m.run.skipped {
                eprintln!("not run");
                break;
            }
            let again = judge(first.name, Transport::Mptcp, m, tcp_ok);
            eprintln!("{}", progress_line(&again));
            reruns.runs += 1;
            reruns.established += u32::from(again.mptcp == MptcpState::Established);
            for v in &again.verdicts {
                if !first.verdicts.contains(v) {
                    first.verdicts.push(*v);
                }
            }
            reruns.verdicts.push(again.verdicts);
        }
        first.verdicts.sort();
        if reruns.runs > 0 {
            first.reruns = Some(reruns);
        }
    }
}

/// A run the time budget did not leave room for: not judged, and said so.
fn over_budget(opts: &CheckOptions, what: &str) -> client::Run {
    client::Run {
        skipped: true,
        budget: true,
        outcome: Some(Outcome::Timeout),
        error: Some(format!("{what}: the check's time budget of {} s ran out", opts.budget.as_secs())),
        ..Default::default()
    }
}

/// The end of a test's progress line: outcome, MPTCP state, verdicts, time.
fn progress_line(r: &TestResult) -> String {
    let verdicts = if r.verdicts.is_empty() {
        String::new()
    } else {
        format!(": {}", r.verdicts.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(","))
    };
    format!("{}, {}{verdicts} ({} ms)", r.outcome, r.mptcp, r.duration_ms)
}

/// The server's view of the test's main connection: by the client's port when not rewritten,
/// else the first connection of the test; with the digests of the test's other connections (FTP
/// data, the second bulk direction) so that they are compared too. Then those other connections.
fn server_view(
    r: &ServerReport,
    client_local: Option<SocketAddr>,
) -> Option<(ConnectionView, Vec<ConnectionView>)> {
    let port = client_local.map(|l| l.port());
    let at = r
        .connections
        .iter()
        .position(|s| s.peer.map(|p| Some(p.port()) == port).unwrap_or(false))
        .unwrap_or(0);
    let mut main = r.connections.get(at).cloned()?;
    for other in &r.connections {
        for (part, d) in &other.digests {
            main.digests.entry(*part).or_insert_with(|| d.clone());
        }
    }
    let others = r.connections.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, c)| c.clone()).collect();
    Some((main, others))
}

/// Classifies a measured test and makes its result.
fn judge(test: TestName, transport: Transport, m: Measured, tcp_ok: Option<bool>) -> TestResult {
    let main = m.run.connections.first().cloned().unwrap_or_default();
    let evidence = Evidence {
        plain_tcp: transport == Transport::Tcp,
        skipped: m.run.skipped,
        outcome: m.run.outcome,
        tcp_ok,
        client: main.clone(),
        client_wire: m.wire.handshake.clone(),
        client_mpc_syns: m.wire.mpc_syns,
        client_rx_without_dss: m.wire.rx_without_dss,
        client_sent_segments: m.wire.sent_segments.clone(),
        server: m.server.clone(),
        server_others: m.server_others.clone(),
        sent_digests: m.run.sent.clone(),
        received_digests: m.run.received.clone(),
        mib_delta: m.mib_delta.clone(),
        server_mib_delta: m.server_mib_delta.clone(),
        join: m.extra.join.clone(),
        add_addr: m.extra.add_addr.clone(),
    };
    let c = verdict::classify(&evidence);
    let outcome = m.run.outcome.unwrap_or(Outcome::Error);
    let (verdicts, mptcp, findings, fallback_reason) = match transport {
        // Plain TCP is the baseline: only what middleboxes do to any TCP applies.
        Transport::Tcp => (
            c.verdicts().into_iter().filter(|v| v.applies_to_plain_tcp()).collect(),
            MptcpState::NotApplicable,
            Vec::new(),
            None,
        ),
        Transport::Mptcp => {
            let state = if outcome == Outcome::NotRun {
                MptcpState::NotApplicable
            } else if main.mptcp_up() {
                MptcpState::Established
            } else if outcome == Outcome::Ok {
                MptcpState::Fallback
            } else {
                MptcpState::NotNegotiated
            };
            (c.verdicts(), state, c.findings, c.fallback_reason)
        }
    };
    TestResult {
        name: test,
        transport,
        port: m.port,
        outcome,
        mptcp,
        subflows: main.subflows,
        fallback_reason,
        verdicts,
        evidence: TestEvidence {
            client: ClientEvidence {
                connections: m.run.connections,
                wire: m.wire.handshake,
                mpc_syns: m.wire.mpc_syns,
                data_without_dss_rx: m.wire.rx_without_dss,
                infinite_mappings: m.wire.infinite_mappings,
                sent_segments: m.wire.sent_segments,
                sent: m.run.sent,
                received: m.run.received,
            },
            server: m.server,
            mib_delta: m.mib_delta,
            server_mib_delta: m.server_mib_delta,
            findings,
        },
        duration_ms: m.started.elapsed().as_millis() as u64,
        error: m.run.error,
        reruns: None,
    }
}

/// Writes the header-only trace of every test connection.
fn write_trace(mut trace: PcapTrace, obs: &ObserverService, tests: &[TestResult]) -> anyhow::Result<()> {
    for t in tests {
        for c in &t.evidence.client.connections {
            let (Some(l), Some(p)) = (c.local, c.peer) else { continue };
            for pk in obs.packets(l, p) {
                trace.write(&pk, &obs.interface_name(pk.flow.ifindex))?;
            }
        }
    }
    trace.finish()
}

/// Runs the check and makes its report; progress goes to stderr.
pub async fn run(opts: CheckOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let ip = resolve(&opts.server)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build()?;
    let control = Control::new(http, ip, opts.control_port);
    let info = control.info().await?;
    let trace = opts.pcap.as_deref().map(PcapTrace::create).transpose()?;
    let observer = if opts.no_observer {
        None
    } else {
        match ObserverService::start().await {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(
                    "running without the eBPF observer ({e:#}): socket-level and server-side evidence only"
                );
                None
            }
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let deadline = started + opts.budget;
    let checker = Checker {
        ip,
        info,
        run_id: id[..8].to_string(),
        opts,
        control,
        observer,
        deadline,
        cut_short: Default::default(),
    };
    // Endpoints as they were: ones the kernel adds on its own during the run (implicit, for
    // subflows to announced addresses) are removed at the end.
    let mut pm_run = pm::PmGuard::snapshot();
    let pm_endpoints = pm::endpoints()
        .map(|e| {
            e.into_iter()
                .map(|(id, a, f)| format!("{a} id {id} {}", f.join(" ")).trim_end().to_string())
                .collect()
        })
        .unwrap_or_default();
    let pm_limits = pm::limits()
        .ok()
        .map(|(a, s)| BTreeMap::from([("add_addr_accepted".to_string(), a), ("subflows".to_string(), s)]));
    let mut tests = Vec::new();
    let mut host_state = Vec::new();
    let total = checker.opts.tests.len();
    for (i, t) in checker.opts.tests.iter().enumerate() {
        tests.extend(checker.run_test(*t, i + 1, total, &mut host_state).await);
    }
    // The kernel adds an implicit endpoint for a subflow to an announced address, and adds it
    // again while the closing connection still uses it: sweep until the connections are gone.
    if checker.opts.tests.iter().any(|t| matches!(t, TestName::Join | TestName::AddAddr)) {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            pm_run.restore();
        }
    }
    pm_run.restore();
    host_state.append(&mut pm_run.notes);
    if let (Some(trace), Some(obs)) = (trace, &checker.observer) {
        write_trace(trace, obs, &tests)?;
    }
    let cannot_establish =
        if checker.observer.is_none() { NEED_CLIENT_OBSERVER.to_vec() } else { Vec::new() };
    let observer = observer_kind(checker.observer.as_ref().map(|o| o.fallback_source()));
    if let Some(o) = &checker.observer {
        o.stop();
    }
    let cut_short = std::mem::take(&mut *checker.cut_short.lock().unwrap_or_else(|p| p.into_inner()));
    let locate = match checker.opts.locate.clone() {
        Some(mut lo) => {
            lo.data_test_id = format!("{}-locate-data", checker.run_id);
            eprintln!("locating the hops behind the verdicts ...");
            // A minute past the budget at most: the probes are bounded by hops and tries too.
            let deadline = deadline.max(Instant::now()) + Duration::from_secs(60);
            let wanted = crate::locate::to_locate(&tests);
            let l = tokio::task::spawn_blocking(move || crate::locate::probe(ip, &wanted, &lo, deadline))
                .await
                .unwrap_or_else(|e| Locate {
                    notes: vec![format!("locating failed: {e}")],
                    ..Default::default()
                });
            crate::locate::annotate(&mut tests, &l);
            Some(l)
        }
        None => None,
    };
    Ok(Report {
        schema: SCHEMA.into(),
        id,
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        client: ClientInfo {
            kernel: sysctl::kernel_release(),
            mptcp_sysctls: sysctl::mptcp_sysctls(),
            pm_endpoints,
            pm_limits,
            observer,
            cannot_establish,
            host_state,
            time_budget_s: Some(checker.opts.budget.as_secs()),
            cut_short,
            network_kind: checker.opts.network_kind,
            note: checker.opts.note.clone(),
        },
        server: ServerSide {
            address: ip.to_string(),
            version: checker.info.server_version.clone(),
            observer: checker.info.observer,
        },
        summary: summarize(&tests),
        tests,
        locate,
    })
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::{ConnectionKind, Part};

    use super::*;

    fn conn(local: &str, peer: &str) -> ConnectionView {
        ConnectionView {
            kind: ConnectionKind::Bulk,
            local: Some(local.parse().unwrap()),
            peer: Some(peer.parse().unwrap()),
            ..Default::default()
        }
    }

    fn report(connections: Vec<ConnectionView>) -> ServerReport {
        ServerReport { connections, ..Default::default() }
    }

    #[test]
    fn the_servers_view_is_the_connection_from_the_clients_port_with_every_digest() {
        let mut up = conn("203.0.113.2:8001", "192.0.2.1:40001");
        up.digests.insert(Part::Data, "up".into());
        let mut down = conn("203.0.113.2:8001", "192.0.2.1:40002");
        down.digests.insert(Part::Sent, "down".into());
        let r = report(vec![up, down]);
        let (v, others) = server_view(&r, Some("192.0.2.1:40002".parse().unwrap())).unwrap();
        assert_eq!(v.peer, Some("192.0.2.1:40002".parse().unwrap()));
        assert_eq!(v.digests[&Part::Sent], "down");
        assert_eq!(v.digests[&Part::Data], "up", "the other connection's digests are compared too");
        assert_eq!(
            others.iter().map(|c| c.peer).collect::<Vec<_>>(),
            vec![Some("192.0.2.1:40001".parse().unwrap())]
        );
        // Behind NAT the port is another: the test's first connection.
        let (v, others) = server_view(&r, Some("192.0.2.1:1".parse().unwrap())).unwrap();
        assert_eq!(v.peer, Some("192.0.2.1:40001".parse().unwrap()));
        assert_eq!(others.len(), 1);
        assert!(server_view(&report(vec![]), None).is_none());
    }

    fn measured(mptcp: bool, outcome: Outcome) -> Measured {
        let mut c = conn("192.0.2.1:40000", "203.0.113.2:8001");
        c.is_mptcp = Some(mptcp);
        c.fallback = Some(!mptcp);
        let mut server = conn("203.0.113.2:8001", "198.51.100.9:50000");
        server.is_mptcp = Some(mptcp);
        Measured {
            port: 8001,
            run: client::Run { outcome: Some(outcome), connections: vec![c], ..Default::default() },
            extra: suite::Extra::default(),
            mib_delta: BTreeMap::new(),
            server_mib_delta: BTreeMap::new(),
            server: Some(server),
            server_others: Vec::new(),
            wire: ClientWire::default(),
            started: Instant::now(),
        }
    }

    #[test]
    fn the_plain_tcp_baseline_carries_only_what_happens_to_any_tcp() {
        let r = judge(TestName::Bulk, Transport::Tcp, measured(false, Outcome::Ok), None);
        assert_eq!(r.mptcp, MptcpState::NotApplicable);
        assert_eq!(r.verdicts, vec![Verdict::Nat], "NAT applies to TCP; unknown_fallback does not");
        assert!(r.evidence.findings.is_empty());
        assert_eq!(r.fallback_reason, None);
    }

    #[test]
    fn an_mptcp_run_is_judged_with_its_findings() {
        let r = judge(TestName::Bulk, Transport::Mptcp, measured(true, Outcome::Ok), Some(true));
        assert_eq!(
            (r.name, r.transport, r.port, r.outcome),
            (TestName::Bulk, Transport::Mptcp, 8001, Outcome::Ok)
        );
        assert_eq!(r.mptcp, MptcpState::Established);
        assert_eq!(r.verdicts, vec![Verdict::MptcpOk, Verdict::Nat]);
        assert_eq!(r.evidence.findings.len(), 2);
        assert_eq!(r.evidence.client.connections.len(), 1);
        let fell_back = judge(TestName::Bulk, Transport::Mptcp, measured(false, Outcome::Ok), Some(true));
        assert_eq!(fell_back.mptcp, MptcpState::Fallback);
        let broken = judge(TestName::Bulk, Transport::Mptcp, measured(false, Outcome::Timeout), Some(true));
        assert_eq!(broken.mptcp, MptcpState::NotNegotiated);
    }
}
