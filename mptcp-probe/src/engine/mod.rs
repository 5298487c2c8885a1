//! `mptcp-probe check`: runs each test over MPTCP and over plain TCP against a `serve`, gathers
//! both ends' observations, the kernel's per-socket view and MIB deltas, and classifies.

pub mod client;
pub mod ftp;
pub mod tls;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mptcp_probe_common::{event::tcp_flags, options::subtype};
use serde_json::{json, Value};

use crate::{
    classify::{self, Evidence, Outcome, Verdict},
    mib,
    observer::{service::ObserverService, FallbackSource},
    pcap::PcapTrace,
    pm,
    proto::{self, BulkMode, ServerInfo, ServerReport},
    report::{self, ClientInfo, Report, ServerSide, TestEvidence, TestResult},
    sock::Transport,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
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
    pub fn as_str(self) -> &'static str {
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

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The mptcp-probe server (`mptcp-probe serve`): an address or a host name.
    #[arg(long)]
    pub server: String,
    /// Tests to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "handshake,http,ftp,tls,bulk,echo,join,add_addr")]
    pub tests: Vec<TestName>,
    /// The report as JSON (schema mptcp-probe/report/v1) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Post the report to a collector at this URL.
    #[arg(long, value_name = "URL")]
    pub upload: Option<String>,
    /// Write a header-only pcapng trace of the test connections.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Run without the eBPF observer (socket-level and server-side evidence only).
    #[arg(long)]
    pub no_observer: bool,
    /// The server's control port.
    #[arg(long, default_value_t = proto::port::CONTROL)]
    pub control_port: u16,
    /// Seconds a connection may take to come up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub timeout: u64,
    /// Bytes each way in the bulk test.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(0..=proto::MAX_BULK_BYTES))]
    pub bulk_bytes: u64,
}

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

fn control_url(ip: IpAddr, port: u16, path: &str) -> String {
    match ip {
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}{path}"),
        IpAddr::V4(v4) => format!("http://{v4}:{port}{path}"),
    }
}

async fn server_info(http: &reqwest::Client, ip: IpAddr, port: u16) -> anyhow::Result<ServerInfo> {
    let url = control_url(ip, port, "/v1/info");
    let resp = http.get(&url).send().await.with_context(|| {
        format!("cannot reach the mptcp-probe server's control port at {url} (is `mptcp-probe serve` running there?)")
    })?;
    if !resp.status().is_success() {
        bail!("{url} answered {}: not an mptcp-probe server, or the wrong port", resp.status());
    }
    let info: ServerInfo = resp.json().await.with_context(|| {
        format!("{url} did not answer like an mptcp-probe server (wrong port or another service)")
    })?;
    if info.protocol != proto::PROTOCOL_VERSION {
        bail!(
            "the server speaks test protocol {} (mptcp-probe {}), this client speaks {}: use matching versions",
            info.protocol,
            info.server_version,
            proto::PROTOCOL_VERSION
        );
    }
    Ok(info)
}

async fn server_report(http: &reqwest::Client, ip: IpAddr, port: u16, test_id: &str) -> Option<ServerReport> {
    let url = control_url(ip, port, &format!("/v1/tests/{test_id}"));
    // The server records a connection when it ends; give it a moment.
    for _ in 0..10 {
        if let Ok(resp) = http.get(&url).send().await {
            if resp.status().is_success() {
                if let Ok(r) = resp.json::<ServerReport>().await {
                    if !r.connections.is_empty() {
                        return Some(r);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The server's MPTcpExt counters now (None: an older server without `/v1/mib`, or unreachable).
async fn server_mib(http: &reqwest::Client, ip: IpAddr, port: u16) -> Option<BTreeMap<String, u64>> {
    let resp = http.get(control_url(ip, port, "/v1/mib")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Every `net.mptcp.*` sysctl of this namespace.
fn mptcp_sysctls() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/sys/net/mptcp") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Ok(v) = std::fs::read_to_string(e.path()) {
                let v = v.trim();
                out.insert(name, v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(v)));
            }
        }
    }
    out
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

struct Ctx {
    ip: IpAddr,
    info: ServerInfo,
    args: CheckArgs,
    http: reqwest::Client,
    observer: Option<Arc<ObserverService>>,
    run_id: String,
}

impl Ctx {
    fn port(&self, service: &str, default: u16) -> u16 {
        self.info.ports.get(service).copied().unwrap_or(default)
    }

    async fn run_client(
        &self,
        test: TestName,
        transport: Transport,
        test_id: &str,
        extra: &mut Extra,
    ) -> (u16, client::Run) {
        let timeout = Duration::from_secs(self.args.timeout);
        let wait = Duration::from_secs(3);
        match test {
            TestName::Join => {
                let port = self.port("echo", proto::port::ECHO);
                let addr = SocketAddr::new(self.ip, port);
                let local = local_ip_towards(addr);
                let Some((from, dev)) = local.and_then(|l| pm::second_address(self.ip, l)) else {
                    return (
                        port,
                        skipped("no second local address with a route to the server to join from"),
                    );
                };
                if transport == Transport::Mptcp {
                    let mut pm = pm::PmGuard::new();
                    if let Err(e) =
                        pm.ensure_limits(0, 2).and_then(|()| pm.ensure_subflow_endpoint(from, &dev))
                    {
                        return (
                            port,
                            skipped(&format!("cannot configure the path manager for the join test: {e:#}")),
                        );
                    }
                    let run = client::multipath(addr, transport, test_id, timeout, wait, "join", |v| {
                        v.subflows.unwrap_or(0) >= 2
                    })
                    .await;
                    pm.restore();
                    extra.notes.append(&mut pm.notes);
                    let subflows = run.connections.first().and_then(|c| c.subflows).unwrap_or(0);
                    extra.join = Some(classify::JoinEvidence { from: from.to_string(), subflows });
                    return (port, run);
                }
                (
                    port,
                    client::multipath(addr, transport, test_id, timeout, Duration::ZERO, "join", |_| true)
                        .await,
                )
            }
            TestName::AddAddr => {
                let port = self.port("echo", proto::port::ECHO);
                let addr = SocketAddr::new(self.ip, port);
                if self.info.announced.is_empty() {
                    return (
                        port,
                        skipped("the server announces no extra address (no signal endpoint on the server)"),
                    );
                }
                if transport == Transport::Mptcp {
                    let mut pm = pm::PmGuard::new();
                    if let Err(e) = pm.ensure_limits(1, 2) {
                        return (
                            port,
                            skipped(&format!(
                                "cannot configure the path manager for the add_addr test: {e:#}"
                            )),
                        );
                    }
                    // Until the subflow to the announced address is up: the kernel adds an
                    // implicit endpoint for it, which the end of the run removes again.
                    let run = client::multipath(addr, transport, test_id, timeout, wait, "add_addr", |v| {
                        v.add_addr_accepted.unwrap_or(0) >= 1 && v.subflows.unwrap_or(0) >= 2
                    })
                    .await;
                    pm.restore();
                    extra.notes.append(&mut pm.notes);
                    let accepted = run.connections.first().and_then(|c| c.add_addr_accepted).unwrap_or(0);
                    extra.add_addr = Some(classify::AddAddrEvidence {
                        announced: self.info.announced.clone(),
                        server_signalled: None,
                        accepted,
                    });
                    return (port, run);
                }
                (
                    port,
                    client::multipath(addr, transport, test_id, timeout, Duration::ZERO, "add_addr", |_| {
                        true
                    })
                    .await,
                )
            }
            TestName::Handshake => {
                let port = self.port("bulk", proto::port::BULK);
                (port, client::handshake(SocketAddr::new(self.ip, port), transport, test_id, timeout).await)
            }
            TestName::Http => {
                let port = self.port("http", proto::port::HTTP);
                (
                    port,
                    client::http(SocketAddr::new(self.ip, port), transport, test_id, 64 * 1024, timeout)
                        .await,
                )
            }
            TestName::Ftp => {
                let port = self.port("ftp", proto::port::FTP);
                let addr = SocketAddr::new(self.ip, port);
                (port, ftp::ftp(addr, transport, test_id, 256 * 1024, timeout).await)
            }
            TestName::Tls => {
                let port = self.port("tls", proto::port::TLS);
                let addr = SocketAddr::new(self.ip, port);
                (port, tls::tls(addr, transport, test_id, 256 * 1024, timeout).await)
            }
            TestName::Bulk => {
                let port = self.port("bulk", proto::port::BULK);
                let addr = SocketAddr::new(self.ip, port);
                let mut run = client::bulk(
                    addr,
                    transport,
                    test_id,
                    BulkMode::Up,
                    self.args.bulk_bytes,
                    timeout,
                    "bulk",
                )
                .await;
                if run.outcome == Some(Outcome::Ok) {
                    let down = client::bulk(
                        addr,
                        transport,
                        test_id,
                        BulkMode::Down,
                        self.args.bulk_bytes,
                        timeout,
                        "bulk",
                    )
                    .await;
                    run.outcome = down.outcome;
                    run.error = down.error;
                    run.connections.extend(down.connections);
                    run.received.extend(down.received);
                }
                (port, run)
            }
            TestName::Echo => {
                let port = self.port("echo", proto::port::ECHO);
                let addr = SocketAddr::new(self.ip, port);
                (port, client::bulk(addr, transport, test_id, BulkMode::Echo, 0, timeout, "echo").await)
            }
        }
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
            handshake: crate::observer::service::handshake_of(&packets),
            mpc_syns: Some(mpc_syns),
            rx_without_dss: summary.as_ref().map(|s| s.data_without_dss.rx),
            infinite_mappings: summary.as_ref().map(|s| s.infinite_mappings.rx + s.infinite_mappings.tx),
            sent_segments: summary.as_ref().map(|s| proto::SegmentStats {
                count: s.data_segments.tx as u64,
                bytes: s.payload_bytes.tx,
                max: s.max_segment.tx,
            }),
        }
    }

    async fn run_test(
        &self,
        test: TestName,
        n: usize,
        total: usize,
        host_notes: &mut Vec<String>,
    ) -> Vec<TestResult> {
        let mut results = Vec::new();
        let mut tcp_ok = None;
        // Plain TCP first: it tells whether the path works at all for this test.
        for transport in [Transport::Tcp, Transport::Mptcp] {
            let started = Instant::now();
            let test_id = format!("{}-{}-{}", self.run_id, test.as_str(), transport.as_str());
            eprint!("[{n}/{total}] {} over {} ... ", test.as_str(), transport.as_str());
            let mib_before = mib::read();
            let server_mib_before = server_mib(&self.http, self.ip, self.args.control_port).await;
            let mut extra = Extra::default();
            let (port, run) = self.run_client(test, transport, &test_id, &mut extra).await;
            host_notes.append(&mut extra.notes);
            let mib_delta = mib::delta(&mib_before, &mib::read());
            // A dropped MPTCP SYN makes the kernel disable MPTCP for a while: undo it at once so
            // the next test measures the path, not that state.
            if let Some(s) = undo_blackhole(&mib_delta) {
                host_notes.push(s);
            }
            let server = server_report(&self.http, self.ip, self.args.control_port, &test_id).await;
            // The server's counters that moved meanwhile (other clients of that server included).
            let server_mib_delta =
                match (server_mib_before, server_mib(&self.http, self.ip, self.args.control_port).await) {
                    (Some(before), Some(after)) => mib::delta(&before, &after),
                    _ => BTreeMap::new(),
                };
            if let Some(a) = extra.add_addr.as_mut() {
                // The server's socket says how many ADD_ADDR it sent.
                a.server_signalled = server_conn_signal(&server);
            }
            let server_conn = server.as_ref().and_then(|r| {
                let local = run.connections.first().and_then(|c| c.local);
                // The server's view of the same connection: by the client's port when not
                // rewritten, else the first connection of the test.
                let mut main = r
                    .connections
                    .iter()
                    .find(|s| s.peer.map(|p| Some(p.port()) == local.map(|l| l.port())).unwrap_or(false))
                    .or_else(|| r.connections.first())
                    .cloned()?;
                // What the test's other connections received (FTP data, the second bulk
                // direction) is compared too.
                for other in &r.connections {
                    for (part, d) in &other.digests {
                        main.digests.entry(part.clone()).or_insert_with(|| d.clone());
                    }
                }
                Some(main)
            });
            let wire = self.client_wire(&run);
            let (client_wire, mpc_syns, rx_without_dss, infinite) =
                (wire.handshake.clone(), wire.mpc_syns, wire.rx_without_dss, wire.infinite_mappings);
            let main = run.connections.first().cloned().unwrap_or_default();
            let evidence = Evidence {
                outcome: run.outcome,
                tcp_ok,
                client: main.clone(),
                client_wire: client_wire.clone(),
                client_mpc_syns: mpc_syns,
                client_rx_without_dss: rx_without_dss,
                client_sent_segments: wire.sent_segments.clone(),
                server: server_conn.clone(),
                sent_digests: run.sent.clone(),
                received_digests: run.received.clone(),
                mib_delta: mib_delta.clone(),
                server_mib_delta: server_mib_delta.clone(),
                join: extra.join.clone(),
                add_addr: extra.add_addr.clone(),
            };
            let c = classify::classify(&evidence);
            let (verdicts, mptcp) = match transport {
                Transport::Tcp => {
                    tcp_ok = Some(run.outcome == Some(Outcome::Ok));
                    // Plain TCP is the baseline: only what middleboxes do to any TCP applies.
                    let v: Vec<Verdict> = c
                        .verdicts()
                        .into_iter()
                        .filter(|v| {
                            matches!(
                                v,
                                Verdict::PayloadModified
                                    | Verdict::SeqRewritten
                                    | Verdict::MssRewritten
                                    | Verdict::SegmentsSplit
                                    | Verdict::SegmentsCoalesced
                                    | Verdict::Proxied
                                    | Verdict::Nat
                            )
                        })
                        .collect();
                    (v, "not_applicable".to_string())
                }
                Transport::Mptcp => {
                    let state = if main.is_mptcp == Some(true) && main.fallback != Some(true) {
                        "established"
                    } else if run.outcome == Some(Outcome::Ok) {
                        "fallback"
                    } else {
                        "not_negotiated"
                    };
                    (c.verdicts(), state.to_string())
                }
            };
            let outcome = run.outcome.and_then(|o| serde_json::to_value(o).ok());
            let outcome =
                outcome.and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| "error".into());
            eprintln!(
                "{outcome}, {mptcp}{} ({} ms)",
                if verdicts.is_empty() {
                    String::new()
                } else {
                    format!(": {}", verdicts.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(","))
                },
                started.elapsed().as_millis()
            );
            results.push(TestResult {
                name: test.as_str().into(),
                transport: transport.as_str().into(),
                port,
                outcome,
                mptcp,
                subflows: main.subflows,
                fallback_reason: if transport == Transport::Mptcp { c.fallback_reason.clone() } else { None },
                verdicts,
                evidence: TestEvidence {
                    client: json!({"connections": run.connections, "wire": client_wire, "mpc_syns": mpc_syns,
                                   "data_without_dss_rx": rx_without_dss, "infinite_mappings": infinite,
                                   "sent_segments": wire.sent_segments,
                                   "sent": run.sent, "received": run.received}),
                    server: serde_json::to_value(&server_conn).unwrap_or(Value::Null),
                    mib_delta,
                    server_mib_delta,
                    findings: if transport == Transport::Mptcp { c.findings } else { Vec::new() },
                },
                duration_ms: started.elapsed().as_millis() as u64,
                error: run.error.clone(),
            });
        }
        // Results in the order tcp, mptcp were run; report mptcp first.
        results.reverse();
        results
    }
}

/// What this host's observer saw of a test's main connection.
#[derive(Default)]
struct ClientWire {
    handshake: Option<proto::HandshakeView>,
    /// SYNs sent with MP_CAPABLE (retries included).
    mpc_syns: Option<u32>,
    rx_without_dss: Option<u32>,
    infinite_mappings: Option<u32>,
    sent_segments: Option<proto::SegmentStats>,
}

/// What a test learnt beyond the client run itself.
#[derive(Default)]
struct Extra {
    join: Option<classify::JoinEvidence>,
    add_addr: Option<classify::AddAddrEvidence>,
    /// Temporary host changes made and undone.
    notes: Vec<String>,
}

/// A test that could not run here: an error outcome with the reason, no verdict.
fn skipped(why: &str) -> client::Run {
    client::Run {
        outcome: Some(Outcome::Error),
        error: Some(format!("not run: {why}")),
        ..Default::default()
    }
}

/// The local address the kernel would use towards `addr`.
pub fn local_ip_towards(addr: SocketAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    s.connect(addr).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

fn server_conn_signal(r: &Option<ServerReport>) -> Option<u8> {
    r.as_ref()?.connections.iter().filter_map(|c| c.add_addr_signal).max()
}

/// Resets the kernel's MPTCP blackhole state if this run triggered it (a dropped MPTCP SYN
/// disables MPTCP for `blackhole_timeout` seconds); writing the timeout again clears it.
fn undo_blackhole(total: &BTreeMap<String, u64>) -> Option<String> {
    let hit = ["Blackhole", "MPCapableSYNTXDrop"].iter().any(|k| total.get(*k).copied().unwrap_or(0) > 0);
    if !hit {
        return None;
    }
    let path = "/proc/sys/net/mptcp/blackhole_timeout";
    let value = std::fs::read_to_string(path).ok()?;
    Some(match std::fs::write(path, value.trim()) {
        Ok(()) => format!(
            "dropped MPTCP SYNs made the kernel's blackhole detection disable MPTCP; reset (blackhole_timeout rewritten with {})",
            value.trim()
        ),
        Err(e) => format!(
            "dropped MPTCP SYNs may have made the kernel disable MPTCP for blackhole_timeout={} s; could not reset it: {e}",
            value.trim()
        ),
    })
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let ip = resolve(&args.server)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build()?;
    let info = server_info(&http, ip, args.control_port).await?;
    let trace = args.pcap.as_deref().map(PcapTrace::create).transpose()?;

    let observer = if args.no_observer {
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
    let observer_name = match &observer {
        None => "none",
        Some(o) if o.fallback_source() == FallbackSource::Fentry => "tc+tracepoints+fentry",
        Some(_) => "tc+tracepoints",
    };
    let id = uuid::Uuid::new_v4().to_string();
    let ctx = Ctx { ip, info, run_id: id[..8].to_string(), args, http, observer };
    // Endpoints as they were: ones the kernel adds on its own during the run (implicit, for
    // subflows to announced addresses) are removed at the end.
    let mut pm_run = pm::PmGuard::new();
    let pm_endpoints: Vec<String> = pm::endpoints()
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
    let total = ctx.args.tests.len();
    for (i, t) in ctx.args.tests.iter().enumerate() {
        tests.extend(ctx.run_test(*t, i + 1, total, &mut host_state).await);
    }
    // The kernel adds an implicit endpoint for a subflow to an announced address, and adds it
    // again while the closing connection still uses it: sweep until the connections are gone.
    if ctx.args.tests.iter().any(|t| matches!(t, TestName::Join | TestName::AddAddr)) {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            pm_run.restore();
        }
    }
    pm_run.restore();
    host_state.append(&mut pm_run.notes);
    if let (Some(mut trace), Some(obs)) = (trace, &ctx.observer) {
        for t in &tests {
            let conns = t.evidence.client["connections"].as_array().cloned().unwrap_or_default();
            for c in conns {
                let (Some(l), Some(p)) = (c["local"].as_str(), c["peer"].as_str()) else { continue };
                let (Ok(l), Ok(p)) = (l.parse(), p.parse()) else { continue };
                for pk in obs.packets(l, p) {
                    trace.write(&pk, &obs.interface_name(pk.flow.ifindex))?;
                }
            }
        }
        trace.finish()?;
    }
    let cannot_establish = if ctx.observer.is_none() { NEED_CLIENT_OBSERVER.to_vec() } else { Vec::new() };
    if let Some(o) = &ctx.observer {
        o.stop();
    }
    let summary = report::summarize(&tests);
    let report = Report {
        schema: report::SCHEMA.into(),
        id,
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        client: ClientInfo {
            kernel: kernel_release(),
            mptcp_sysctls: mptcp_sysctls(),
            pm_endpoints,
            pm_limits,
            observer: observer_name.into(),
            cannot_establish,
            host_state,
        },
        server: ServerSide {
            address: ip.to_string(),
            version: ctx.info.server_version.clone(),
            observer: ctx.info.observer,
        },
        tests,
        summary,
    };
    if ctx.args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::table(&report));
    }
    if let Some(url) = &ctx.args.upload {
        let resp = ctx
            .http
            .post(url)
            .json(&report)
            .send()
            .await
            .with_context(|| format!("uploading the report to {url}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("the collector at {url} refused the report ({status}): {body}");
        }
        eprintln!("uploaded: {body}");
    }
    Ok(())
}
