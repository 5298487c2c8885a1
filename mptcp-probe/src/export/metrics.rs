//! The daemon's Prometheus metrics, every name defined here once (prefix `mptcp_probe_`). What
//! the pipeline sees is counted as each flow's summary arrives ([`MetricsSink`]); what the kernel
//! keeps (the MPTcpExt counters, the programs' counters and run time) is read when Prometheus
//! scrapes ([`Live`]), with no polling loop of its own. Labels take values from small, fixed sets
//! only (outcome, reason, subtype, direction, subflow, program): never addresses or ports.

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use mptcp_probe_common::flow::FlowKey;
use mptcp_probe_model::{ConnectionOutcome, Direction, Ended, FlowSummary, MptcpState, Report, Subflow};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use crate::{
    host::mib,
    kernel::Observer,
    pipeline::{
        record::socket_addrs_of,
        sink::Sink,
        sockets::{lock_book, SharedBook, SocketSeen},
        source::lock,
    },
};

/// Every metric's name starts with this (and an underscore).
pub const PREFIX: &str = "mptcp_probe";

/// The names, without the prefix and without the `_total` every counter gets on the wire.
pub mod name {
    pub const CONNECTIONS: &str = "connections";
    pub const FALLBACKS: &str = "fallbacks";
    pub const OPTIONS: &str = "options";
    pub const FLOWS: &str = "flows";
    pub const FLOWS_SENT_AGAIN: &str = "flows_mptcp_retransmitting";
    pub const CONNECTION_DURATION: &str = "connection_duration_seconds";
    pub const CONNECTIONS_JOINED: &str = "connections_socket_joined";
    pub const CONNECTION_SUBFLOWS: &str = "connection_subflows";
    pub const KERNEL_MIB: &str = "kernel_mib";
    pub const NAMESPACE_UP: &str = "namespace_up";
    pub const RINGBUF_DROPPED: &str = "ringbuf_dropped_events";
    pub const FLOW_TABLE_EVICTIONS: &str = "flow_table_evictions";
    pub const PACKETS_INSPECTED: &str = "packets_inspected";
    pub const SOCKETS: &str = "sockets";
    pub const SOCKET_SUBFLOWS: &str = "socket_subflows";
    pub const SOCKETS_RETRANSMITTING: &str = "sockets_retransmitting";
    pub const SOCKET_RETRANSMITTED_BYTES: &str = "socket_retransmitted_bytes";
    pub const CONNECTIONS_RETRANSMITTING: &str = "connections_retransmitting";
    pub const BPF_RUN_TIME: &str = "bpf_run_time_seconds";
    pub const BPF_RUNS: &str = "bpf_runs";
    pub const SCRAPE_DURATION: &str = "scrape_duration_seconds";
    pub const CHECK_RUNS: &str = "check_runs";
    pub const CHECK_VERDICTS: &str = "check_verdicts";
    pub const CHECK_LAST_RUN: &str = "check_last_run_timestamp_seconds";
    pub const CHECK_MPTCP_USABLE: &str = "check_mptcp_usable";
    pub const UPLOADS: &str = "uploads";
    pub const UPLOAD_SPOOL_REPORTS: &str = "upload_spool_reports";
    pub const UPLOAD_SPOOL_BYTES: &str = "upload_spool_bytes";
    pub const UPLOAD_SPOOL_EVICTED: &str = "upload_spool_evicted";
    pub const BUILD_INFO: &str = "build_info";
}

/// The reason label of a connection that fell back when the evidence names none.
pub const UNKNOWN_REASON: &str = "unknown";
/// The reason label of a connection the wire showed as MPTCP throughout while the kernel's
/// socket said it fell back (sock_diag, while it was open).
pub const SOCKET_FALLBACK_REASON: &str = "socket_fallback";

/// The `namespace` label of what the daemon sees in its own network namespace; the others it
/// watches are labelled with their configured names.
pub const OWN_NAMESPACE: &str = "host";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// The kernel's MIB name where the host says it, else the wire's [`FallbackCause`].
    reason: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OptionLabels {
    subtype: &'static str,
    direction: &'static str,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    subflow: &'static str,
    ended: &'static str,
    namespace: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 4.5 hours, a factor of 4 apart.
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

fn subflows_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
}

/// What the pipeline counts; cheap to clone (the families share their values).
#[derive(Clone)]
pub struct Counted {
    connections: Family<OutcomeLabels, Counter>,
    fallbacks: Family<ReasonLabels, Counter>,
    options: Family<OptionLabels, Counter>,
    flows: Family<FlowLabels, Counter>,
    sent_again: Family<DirectionLabels, Counter>,
    durations: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    /// Connections joined with their socket's state, by outcome.
    joined: Family<OutcomeLabels, Counter>,
    /// Subflows of the joined MPTCP connections.
    subflows: Family<NamespaceLabels, Histogram, fn() -> Histogram>,
    /// 1 while a watched namespace is observed, 0 while it is absent.
    namespaces_up: Family<NamespaceLabels, Gauge>,
}

impl Default for Counted {
    fn default() -> Self {
        Self {
            connections: Family::default(),
            fallbacks: Family::default(),
            options: Family::default(),
            flows: Family::default(),
            sent_again: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            joined: Family::default(),
            subflows: Family::new_with_constructor(subflows_histogram),
            namespaces_up: Family::default(),
        }
    }
}

impl Counted {
    /// A namespace observed from now (`up`) or no longer. Its outcomes start at 0, so that a
    /// rate or a share over them exists from the first scrape.
    pub fn namespace(&self, namespace: &str, up: bool) {
        for o in ConnectionOutcome::ALL {
            let _ = self
                .connections
                .get_or_create(&OutcomeLabels { outcome: o.as_str(), namespace: namespace.to_string() });
        }
        self.namespaces_up
            .get_or_create(&NamespaceLabels { namespace: namespace.to_string() })
            .set(i64::from(up));
    }

    /// One flow's summary, in a namespace: every flow counts its options and itself; a
    /// connection is counted once, by its initial subflow or plain TCP flow whose handshake was
    /// seen (a flow first seen mid-way, or tracked anew after an idle summary, is no new
    /// connection), with what the kernel's socket said of it where that is known (`socket`):
    /// a fallback the wire did not show, its subflows.
    pub fn flow(&self, namespace: &str, s: &FlowSummary, socket: Option<&SocketSeen>) {
        let ns = || namespace.to_string();
        for (dir, per_subtype) in [(Direction::Tx, &s.options.tx), (Direction::Rx, &s.options.rx)] {
            for (subtype, n) in per_subtype {
                let labels =
                    OptionLabels { subtype: subtype.as_str(), direction: dir.as_str(), namespace: ns() };
                self.options.get_or_create(&labels).inc_by(u64::from(*n));
            }
        }
        let flow = FlowLabels { subflow: s.subflow.as_str(), ended: s.ended.as_str(), namespace: ns() };
        self.flows.get_or_create(&flow).inc();
        for (dir, n) in
            [(Direction::Tx, s.mptcp_retransmissions.tx), (Direction::Rx, s.mptcp_retransmissions.rx)]
        {
            if n == 0 {
                continue;
            }
            self.sent_again
                .get_or_create(&DirectionLabels { direction: dir.as_str(), namespace: ns() })
                .inc();
            let what = match dir {
                Direction::Tx => "this host sent data again at the MPTCP level",
                Direction::Rx => "the peer sent data again at the MPTCP level (duplicate data here)",
            };
            tracing::warn!(
                "namespace {namespace}: {} -> {}: {what}, {n} time(s) on this subflow",
                SocketAddr::new(s.local_addr, s.local_port),
                SocketAddr::new(s.remote_addr, s.remote_port),
            );
        }
        if !counts_as_connection(s) {
            return;
        }
        let wire = ConnectionOutcome::of(s.mptcp);
        let socket_fell_back = socket.is_some_and(|k| k.fallback) && wire == ConnectionOutcome::Mptcp;
        let outcome_is = if socket_fell_back { ConnectionOutcome::Fallback } else { wire };
        let outcome = OutcomeLabels { outcome: outcome_is.as_str(), namespace: ns() };
        self.connections.get_or_create(&outcome).inc();
        self.durations.get_or_create(&outcome).observe(s.duration_ms as f64 / 1000.0);
        if let Some(k) = socket {
            self.joined.get_or_create(&outcome).inc();
            if outcome_is == ConnectionOutcome::Mptcp {
                self.subflows
                    .get_or_create(&NamespaceLabels { namespace: ns() })
                    .observe(f64::from(k.subflows));
            }
        }
        if socket_fell_back {
            tracing::warn!(
                "namespace {namespace}: {} -> {}: the kernel's socket fell back to TCP; the wire showed \
                 no cause on this interface",
                SocketAddr::new(s.local_addr, s.local_port),
                SocketAddr::new(s.remote_addr, s.remote_port),
            );
        }
        if s.mptcp == MptcpState::Fallback || socket_fell_back {
            let reason = s
                .fallback_reason
                .clone()
                .or_else(|| s.fallback_cause.map(|c| c.as_str().to_string()))
                .unwrap_or_else(|| {
                    if socket_fell_back { SOCKET_FALLBACK_REASON } else { UNKNOWN_REASON }.to_string()
                });
            self.fallbacks.get_or_create(&ReasonLabels { reason, namespace: ns() }).inc();
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            name::CONNECTIONS,
            "Connections whose handshake was seen, by outcome: mptcp (negotiated and kept), \
             fallback (asked for and lost), plain (TCP)",
            self.connections.clone(),
        );
        r.register(
            name::FALLBACKS,
            "Connections that fell back to TCP, by reason: the kernel's MIB name where the host \
             says it, else what the wire showed",
            self.fallbacks.clone(),
        );
        r.register(
            name::OPTIONS,
            "MPTCP options seen on observed flows, by subtype and direction (tx: sent by this host)",
            self.options.clone(),
        );
        r.register(
            name::FLOWS,
            "Flows summarised (TCP subflows and plain TCP flows), by kind of subflow and how they ended",
            self.flows.clone(),
        );
        r.register(
            name::FLOWS_SENT_AGAIN,
            "Flows on which data was sent again at the MPTCP level (new subflow data behind the data \
             sequence before it), by direction: tx this host sent it, rx its peer did (duplicate \
             data here)",
            self.sent_again.clone(),
        );
        r.register(
            name::CONNECTION_DURATION,
            "Connection lifetime from its first to its last packet, by outcome",
            self.durations.clone(),
        );
        r.register(
            name::CONNECTIONS_JOINED,
            "Connections whose summary was joined with the kernel's view of their socket \
             (sock_diag while they were open: a connection opened and closed between two scrapes \
             is counted from the wire alone), by outcome",
            self.joined.clone(),
        );
        r.register(
            name::CONNECTION_SUBFLOWS,
            "Subflows of each MPTCP connection joined with its socket, the initial one included \
             (the most the kernel showed)",
            self.subflows.clone(),
        );
        r.register(
            name::NAMESPACE_UP,
            "1 while a network namespace the daemon watches is observed, 0 while it is absent",
            self.namespaces_up.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    /// A check target's configured name: one of a fixed set.
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckRunLabels {
    target: String,
    /// `done` (a report was made) or `failed` (the target could not be measured).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    target: String,
    verdict: &'static str,
}

/// What the periodic checks count, by target; cheap to clone.
#[derive(Clone, Default)]
pub struct CheckCounted {
    runs: Family<CheckRunLabels, Counter>,
    verdicts: Family<VerdictLabels, Counter>,
    last_run: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    usable: Family<TargetLabels, Gauge>,
}

impl CheckCounted {
    /// A check of `target` made its report.
    pub fn done(&self, target: &str, report: &Report) {
        let t = || target.to_string();
        self.runs.get_or_create(&CheckRunLabels { target: t(), result: "done" }).inc();
        for v in report.summary.verdicts.iter().chain(&report.summary.path_conditions) {
            self.verdicts.get_or_create(&VerdictLabels { target: t(), verdict: v.as_str() }).inc();
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_run.get_or_create(&TargetLabels { target: t() }).set(now.as_secs_f64());
        self.usable.get_or_create(&TargetLabels { target: t() }).set(i64::from(report.summary.mptcp_usable));
    }

    /// A check of `target` could not measure.
    pub fn failed(&self, target: &str) {
        self.runs.get_or_create(&CheckRunLabels { target: target.to_string(), result: "failed" }).inc();
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            name::CHECK_RUNS,
            "Periodic checks by target and result: done (a report was made) or failed (could not measure)",
            self.runs.clone(),
        );
        r.register(
            name::CHECK_VERDICTS,
            "Verdicts of the periodic checks' reports, by target (mptcp_ok when the path is clean)",
            self.verdicts.clone(),
        );
        r.register(
            name::CHECK_LAST_RUN,
            "When the last check of a target made its report (Unix time)",
            self.last_run.clone(),
        );
        r.register(
            name::CHECK_MPTCP_USABLE,
            "1 when the last report of a target found MPTCP usable on its path, else 0",
            self.usable.clone(),
        );
    }
}

/// How an upload attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadResult {
    /// The collector has the report.
    Ok,
    /// Refused for good; the report is set aside.
    Rejected,
    /// The collector did not take it now; the report waits.
    Failed,
}

impl UploadResult {
    pub const ALL: [UploadResult; 3] = [UploadResult::Ok, UploadResult::Rejected, UploadResult::Failed];

    pub const fn as_str(self) -> &'static str {
        match self {
            UploadResult::Ok => "ok",
            UploadResult::Rejected => "rejected",
            UploadResult::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// What the uploads count; cheap to clone.
#[derive(Clone)]
pub struct UploadCounted {
    uploads: Family<ResultLabels, Counter>,
    evicted: Counter,
    spool_reports: Gauge,
    spool_bytes: Gauge,
}

impl Default for UploadCounted {
    fn default() -> Self {
        let c = Self {
            uploads: Family::default(),
            evicted: Counter::default(),
            spool_reports: Gauge::default(),
            spool_bytes: Gauge::default(),
        };
        for r in UploadResult::ALL {
            let _ = c.uploads.get_or_create(&ResultLabels { result: r.as_str() });
        }
        c
    }
}

impl UploadCounted {
    pub fn attempt(&self, r: UploadResult) {
        self.uploads.get_or_create(&ResultLabels { result: r.as_str() }).inc();
    }

    pub fn evicted(&self, n: u64) {
        self.evicted.inc_by(n);
    }

    /// What waits in the spool now.
    pub fn spool(&self, reports: usize, bytes: u64) {
        self.spool_reports.set(i64::try_from(reports).unwrap_or(i64::MAX));
        self.spool_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            name::UPLOADS,
            "Uploads of reports to the collector, by result: ok, rejected (refused for good), failed (retried)",
            self.uploads.clone(),
        );
        r.register(name::UPLOAD_SPOOL_REPORTS, "Reports waiting in the spool", self.spool_reports.clone());
        r.register(
            name::UPLOAD_SPOOL_BYTES,
            "Bytes of the reports waiting in the spool",
            self.spool_bytes.clone(),
        );
        r.register(
            name::UPLOAD_SPOOL_EVICTED,
            "Reports removed unsent to make room in the full spool",
            self.evicted.clone(),
        );
    }
}

/// Whether a flow's summary stands for a connection: its initial subflow (or plain TCP flow)
/// with the handshake seen.
fn counts_as_connection(s: &FlowSummary) -> bool {
    s.subflow != Subflow::Join && s.handshake.syn.is_some()
}

/// The pipeline's sink that counts, for one namespace, each connection joined with what its
/// namespace's sock_diag dumps said of its socket ([`crate::pipeline::sockets::SocketBook`]).
pub struct MetricsSink {
    pub counted: Counted,
    pub namespace: String,
    pub book: SharedBook,
}

/// A flow that ended comes to the sinks at most this long after its last packet: the grace
/// period, the pipeline's tick, and a margin.
const ENDED_SUMMARY_DELAY: Duration = Duration::from_secs(2);

impl Sink for MetricsSink {
    fn flow(&mut self, summary: &FlowSummary) {
        let socket = counts_as_connection(summary)
            .then(|| {
                // The earliest the flow can have begun, for one that ended (an idle one's last
                // packet may be long before).
                let not_before = matches!(summary.ended, Ended::Fin | Ended::Rst)
                    .then(|| {
                        let lived = Duration::from_millis(summary.duration_ms) + ENDED_SUMMARY_DELAY;
                        std::time::Instant::now().checked_sub(lived)
                    })
                    .flatten();
                lock_book(&self.book).take(
                    SocketAddr::new(summary.local_addr, summary.local_port),
                    SocketAddr::new(summary.remote_addr, summary.remote_port),
                    not_before,
                )
            })
            .flatten();
        self.counted.flow(&self.namespace, summary, socket.as_ref());
    }

    fn evicted(&mut self, key: &FlowKey) {
        let (local, remote) = socket_addrs_of(key);
        lock_book(&self.book).forget(local, remote);
    }
}

/// What an observed namespace offers at scrape time: its observer, the netstat file of a
/// thread inside it, a sock_diag socket opened there (None: it could not be opened, said
/// once in the log), and the book its dumps fill for its summaries to be joined with.
pub struct LiveSource {
    pub observer: Arc<Mutex<Observer>>,
    pub netstat: std::path::PathBuf,
    pub diag: Option<Mutex<crate::host::diag::Diag>>,
    pub book: SharedBook,
}

impl LiveSource {
    /// The source of the calling thread's namespace, `label` for the log.
    pub fn here(
        observer: Arc<Mutex<Observer>>,
        netstat: std::path::PathBuf,
        label: &str,
        book: SharedBook,
    ) -> Self {
        let diag = match crate::host::diag::Diag::open() {
            Ok(d) => Some(Mutex::new(d)),
            Err(e) => {
                tracing::warn!(
                    "namespace {label}: no sock_diag socket ({e}): the sockets_* metrics are left out"
                );
                None
            }
        };
        Self { observer, netstat, diag, book }
    }
}

/// A connection sent again at the MPTCP level more than this share of what it sent ...
pub const RETRANSMITTING_SHARE: f64 = 0.05;
/// ... and at least this many bytes, is named in the log and counted, once.
pub const RETRANSMITTING_BYTES: u64 = 1 << 20;

/// One figure of a namespace's sockets.
type SocketsFigure = fn(&SocketsNow) -> u64;

/// What a namespace's sock_diag dump says now.
#[derive(Clone, Debug, Default)]
struct SocketsNow {
    namespace: String,
    mptcp: u64,
    fallback: u64,
    subflows: u64,
    retransmitting: u64,
    retransmitted_bytes: u64,
    /// The kernel counts MPTCP-level retransmissions (Linux 6.5 on); else those figures are
    /// left out rather than shown as 0.
    counts_retransmissions: bool,
    /// Tokens of the connections established now.
    open: std::collections::BTreeSet<u32>,
    /// Tokens of the connections open now that retransmit heavily, with what to say of them.
    heavy: Vec<(u32, String)>,
}

fn sockets_now(
    namespace: &str,
    diag: &Mutex<crate::host::diag::Diag>,
    book: &SharedBook,
) -> Option<SocketsNow> {
    match diag.lock().unwrap_or_else(|p| p.into_inner()).mptcp_sockets() {
        Ok(s) => {
            lock_book(book).note(&s, std::time::Instant::now());
            Some(summarize_sockets(namespace, &s))
        }
        Err(e) => {
            tracing::debug!("namespace {namespace}: sock_diag: {e}");
            None
        }
    }
}

/// The figures of a namespace's MPTCP sockets.
fn summarize_sockets(namespace: &str, sockets: &[crate::host::diag::MptcpSocket]) -> SocketsNow {
    let mut now =
        SocketsNow { namespace: namespace.to_string(), counts_retransmissions: true, ..Default::default() };
    // Established ones only: a closed connection's socket may linger in FIN_WAIT2 for a minute.
    for s in sockets.iter().filter(|s| s.state == crate::host::diag::TCP_ESTABLISHED) {
        now.open.insert(s.info.token);
        if s.info_len < crate::host::diag::INFO_WITH_BYTES {
            now.counts_retransmissions = false;
        }
        if s.fallback() {
            now.fallback += 1;
            continue;
        }
        now.mptcp += 1;
        now.subflows += u64::from(s.info.all_subflows());
        if s.info.retransmits > 0 {
            now.retransmitting += 1;
            now.retransmitted_bytes += s.info.bytes_retrans;
        }
        let sent = s.info.bytes_sent.max(1);
        if s.info.bytes_retrans >= RETRANSMITTING_BYTES
            && s.info.bytes_retrans as f64 >= RETRANSMITTING_SHARE * sent as f64
        {
            now.heavy.push((
                s.info.token,
                format!(
                    "{} -> {}: {} MPTCP-level retransmissions, {:.1} MB of {:.1} MB sent again",
                    s.local,
                    s.remote,
                    s.info.retransmits,
                    s.info.bytes_retrans as f64 / 1e6,
                    s.info.bytes_sent as f64 / 1e6
                ),
            ));
        }
    }
    now
}

/// The observed namespaces by label; they come and go while the daemon runs.
pub type LiveSources = Arc<Mutex<std::collections::BTreeMap<String, LiveSource>>>;

/// What is read when Prometheus scrapes, for each observed namespace: its MPTcpExt counters,
/// the kernel programs' counters, their run time when `kernel.bpf_stats_enabled` is on.
pub struct Live {
    sources: LiveSources,
    /// Per namespace: the connections named for their retransmissions that are still open, and
    /// how many were named in all.
    named: Mutex<std::collections::BTreeMap<String, (std::collections::BTreeSet<u32>, u64)>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

/// One namespace's programs, as read at a scrape.
struct ProgramsNow {
    namespace: String,
    counters: crate::kernel::Counters,
    evictions: u64,
    run_times: Vec<(String, Duration, u64)>,
}

/// Whether the kernel counts BPF programs' run time (`kernel.bpf_stats_enabled`).
fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

/// A counter family with one value per namespace.
fn per_namespace(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (ns, v) in values {
        ConstCounter::new(v).encode(m.encode_family(&[("namespace", ns.as_str())])?)?;
    }
    Ok(())
}

impl Live {
    fn new(sources: LiveSources) -> Self {
        Self { sources, named: Mutex::default() }
    }

    /// The MPTCP connections open now, from each namespace's sock_diag dump; the ones that
    /// retransmit heavily are named in the log once and counted.
    fn sockets(&self, enc: &mut DescriptorEncoder, sockets: &[&SocketsNow]) -> std::fmt::Result {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        for now in sockets {
            let (open, total) = named.entry(now.namespace.clone()).or_default();
            let heavy: std::collections::BTreeSet<u32> = now.heavy.iter().map(|(t, _)| *t).collect();
            for (token, what) in &now.heavy {
                if open.insert(*token) {
                    *total += 1;
                    tracing::warn!("namespace {}: {what}", now.namespace);
                }
            }
            // Forget the closed ones: the set stays as small as the connections open now. One
            // that is still open stays named, even while below the threshold.
            open.retain(|t| heavy.contains(t) || now.open.contains(t));
        }
        let mut m = enc.encode_descriptor(
            name::SOCKETS,
            "MPTCP connections established now (sock_diag, read at scrape), by whether they fell back",
            None,
            MetricType::Gauge,
        )?;
        for now in sockets {
            for (outcome, v) in [("mptcp", now.mptcp), ("fallback", now.fallback)] {
                let labels = [("outcome", outcome), ("namespace", now.namespace.as_str())];
                ConstGauge::new(v as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let gauges: [(&str, &str, SocketsFigure); 3] = [
            (name::SOCKET_SUBFLOWS, "Subflows of the MPTCP connections open now", |n| n.subflows),
            (
                name::SOCKETS_RETRANSMITTING,
                "MPTCP connections open now that retransmitted at the MPTCP level",
                |n| n.retransmitting,
            ),
            (
                name::SOCKET_RETRANSMITTED_BYTES,
                "Bytes the MPTCP connections open now sent again at the MPTCP level",
                |n| n.retransmitted_bytes,
            ),
        ];
        for (i, (metric, help, f)) in gauges.into_iter().enumerate() {
            let mut g = enc.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            // The retransmission figures only where the kernel counts them.
            for now in sockets.iter().filter(|n| i == 0 || n.counts_retransmissions) {
                ConstGauge::new(f(now) as i64)
                    .encode(g.encode_family(&[("namespace", now.namespace.as_str())])?)?;
            }
        }
        per_namespace(
            enc,
            name::CONNECTIONS_RETRANSMITTING,
            "MPTCP connections named in the log for retransmitting at the MPTCP level (over 5 % of what they sent, at least 1 MiB), once each",
            named.iter().map(|(ns, (_, total))| (ns.clone(), *total)),
        )
    }
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let stats = bpf_stats_enabled();
        // Each namespace's MIB and programs, each observer held a moment.
        let (mibs, programs): (Vec<_>, Vec<_>) = lock_sources(&self.sources)
            .iter()
            .map(|(ns, src)| {
                let mib = (
                    ns.clone(),
                    mib::read_from(&src.netstat),
                    src.diag.as_ref().and_then(|d| sockets_now(ns, d, &src.book)),
                );
                let mut obs = lock(&src.observer);
                let run_times = if stats { obs.run_times() } else { Vec::new() };
                let now = ProgramsNow {
                    namespace: ns.clone(),
                    counters: obs.counters(),
                    evictions: obs.evictions(),
                    run_times,
                };
                (mib, now)
            })
            .unzip();
        let mut m = enc.encode_descriptor(
            name::KERNEL_MIB,
            "The kernel's MPTCP counters (MPTcpExt in /proc/net/netstat) of each observed namespace",
            None,
            MetricType::Counter,
        )?;
        for (ns, counters, _) in &mibs {
            for (counter_name, v) in counters {
                let labels = [("counter", counter_name.as_str()), ("namespace", ns.as_str())];
                ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
            }
        }
        let sockets: Vec<&SocketsNow> = mibs.iter().filter_map(|(_, _, s)| s.as_ref()).collect();
        self.sockets(&mut enc, &sockets)?;
        let each = |f: fn(&ProgramsNow) -> u64| programs.iter().map(move |p| (p.namespace.clone(), f(p)));
        per_namespace(
            &mut enc,
            name::RINGBUF_DROPPED,
            "Events the kernel programs could not write: the ring buffer was full",
            each(|p| p.counters.get("ringbuf_dropped_events")),
        )?;
        per_namespace(
            &mut enc,
            name::FLOW_TABLE_EVICTIONS,
            "Flows the kernel's bounded flow table dropped to make room",
            each(|p| p.evictions),
        )?;
        per_namespace(
            &mut enc,
            name::PACKETS_INSPECTED,
            "TCP packets the programs looked at",
            each(|p| p.counters.get("packets_inspected")),
        )?;
        if programs.iter().any(|p| !p.run_times.is_empty()) {
            let mut t = enc.encode_descriptor(
                name::BPF_RUN_TIME,
                "Time the kernel spent in each program (kernel.bpf_stats_enabled=1)",
                None,
                MetricType::Counter,
            )?;
            for p in &programs {
                for (program, time, _) in &p.run_times {
                    let labels = [("program", program.as_str()), ("namespace", p.namespace.as_str())];
                    ConstCounter::new(time.as_secs_f64()).encode(t.encode_family(&labels)?)?;
                }
            }
            let mut n = enc.encode_descriptor(
                name::BPF_RUNS,
                "Runs of each program (kernel.bpf_stats_enabled=1)",
                None,
                MetricType::Counter,
            )?;
            for p in &programs {
                for (program, _, runs) in &p.run_times {
                    let labels = [("program", program.as_str()), ("namespace", p.namespace.as_str())];
                    ConstCounter::new(*runs).encode(n.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The sources' lock; a panic elsewhere does not make it unusable.
pub fn lock_sources(
    s: &LiveSources,
) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, LiveSource>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every metric of a running daemon, ready to encode.
pub struct Metrics {
    registry: Registry,
    scrape_duration: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// The registry over what the pipeline counts and, when an observer runs, what it holds.
    pub fn new(
        counted: &Counted,
        checks: &CheckCounted,
        uploads: &UploadCounted,
        sources: Option<LiveSources>,
    ) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        counted.register(&mut registry);
        checks.register(&mut registry);
        uploads.register(&mut registry);
        let build = Family::<VersionLabels, Gauge>::default();
        build.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register(name::BUILD_INFO, "Always 1; the daemon's version as a label", build);
        let scrape_duration = Gauge::<f64, AtomicU64>::default();
        registry.register(
            name::SCRAPE_DURATION,
            "How long the previous scrape took to encode",
            scrape_duration.clone(),
        );
        if let Some(sources) = sources {
            registry.register_collector(Box::new(Live::new(sources)));
        }
        Self { registry, scrape_duration }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let start = std::time::Instant::now();
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a label set.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding the metrics: {e}");
        }
        self.record_scrape(start.elapsed());
        out
    }

    fn record_scrape(&self, took: Duration) {
        self.scrape_duration.set(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::export::exposition::to_prometheus_text;

    /// A summary as `watch --json` prints it, with these fields changed.
    fn summary(changes: serde_json::Value) -> FlowSummary {
        let mut v = json!({
            "netns": 1, "iface": "eth0", "ip_version": 4,
            "local_addr": "192.0.2.1", "local_port": 40000,
            "remote_addr": "203.0.113.2", "remote_port": 80,
            "role": "client", "subflow": "initial", "mptcp": "established",
            "handshake": {"syn": {"direction": "tx", "mptcp": "mp_capable", "mptcp_len": 4}},
            "options": {"tx": {"mp_capable": 2, "dss": 5}, "rx": {"mp_capable": 1}},
            "duration_ms": 250, "ended": "fin",
        });
        for (k, val) in changes.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn socket(
        port: u16,
        fallback: bool,
        subflows_total: u8,
        sent: u64,
        retrans: u64,
    ) -> crate::host::diag::MptcpSocket {
        let info = crate::host::sock::MptcpInfo {
            flags: if fallback { crate::host::sock::MPTCP_INFO_FLAG_FALLBACK } else { 0 },
            token: u32::from(port),
            subflows_total,
            bytes_sent: sent,
            bytes_retrans: retrans,
            retransmits: u32::from(retrans > 0) * 7,
            ..Default::default()
        };
        crate::host::diag::MptcpSocket {
            local: format!("192.0.2.1:{port}").parse().unwrap(),
            remote: "203.0.113.2:5201".parse().unwrap(),
            state: 1,
            info,
            info_len: size_of::<crate::host::sock::MptcpInfo>(),
        }
    }

    #[test]
    fn open_sockets_are_counted_and_the_heavily_retransmitting_named_once_while_open() {
        let mb = 1 << 20;
        let open = [
            socket(40001, false, 2, 10 * mb, 0),
            socket(40002, true, 0, 0, 0),
            // 20 % sent again: named. 2 % of a large transfer and 100 % of a small one: not.
            socket(40003, false, 1, 10 * mb, 2 * mb),
            socket(40004, false, 1, 100 * mb, 2 * mb),
            socket(40005, false, 1, 1000, 1000),
            crate::host::diag::MptcpSocket { state: 5, ..socket(40007, false, 1, 0, 0) },
        ];
        let now = summarize_sockets("host", &open);
        assert_eq!((now.mptcp, now.fallback, now.subflows), (4, 1, 5));
        assert_eq!(now.retransmitting, 3);
        assert_eq!(now.retransmitted_bytes, 4 * mb + 1000);
        assert_eq!(now.heavy.len(), 1);
        assert!(
            now.heavy[0].1.starts_with(
                "192.0.2.1:40003 -> 203.0.113.2:5201: 7 MPTCP-level retransmissions, 2.1 MB of 10.5 MB"
            ),
            "{}",
            now.heavy[0].1
        );

        #[derive(Debug)]
        struct One(Arc<Live>, SocketsNow);
        impl Collector for One {
            fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
                self.0.sockets(&mut enc, &[&self.1])
            }
        }
        let live = Arc::new(Live::new(LiveSources::default()));
        let render = |now: &SocketsNow| {
            let mut registry = Registry::with_prefix(PREFIX);
            registry.register_collector(Box::new(One(live.clone(), now.clone())));
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            to_prometheus_text(&out)
        };
        let text = render(&now);
        assert_eq!(
            sample(&text, "mptcp_probe_sockets{outcome=\"fallback\",namespace=\"host\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(sample(&text, "mptcp_probe_socket_subflows{namespace=\"host\"}"), Some(5.0), "{text}");
        let named = "mptcp_probe_connections_retransmitting_total{namespace=\"host\"}";
        assert_eq!(sample(&text, named), Some(1.0), "{text}");
        // Seen again at the next scrape: not named twice; closed and another one: counted.
        assert_eq!(sample(&render(&now), named), Some(1.0));
        // Still open but below the threshold now (it sent much more since): not named again.
        let calmer = summarize_sockets("host", &[socket(40003, false, 1, 100 * mb, 2 * mb)]);
        assert_eq!(sample(&render(&calmer), named), Some(1.0));
        assert_eq!(sample(&render(&now), named), Some(1.0), "40003 never closed");
        let later = summarize_sockets("host", &[socket(40006, false, 1, 10 * mb, 5 * mb)]);
        assert_eq!(sample(&render(&later), named), Some(2.0));
        assert_eq!(sample(&render(&now), named), Some(3.0), "40003 closed in between: a new one to the set");
        // A kernel before 6.5 gives a shorter mptcp_info: no retransmission figures, not zeros.
        let old = summarize_sockets(
            "host",
            &[crate::host::diag::MptcpSocket { info_len: 72, ..socket(40008, false, 1, 0, 0) }],
        );
        let text = render(&old);
        assert_eq!(sample(&text, "mptcp_probe_socket_subflows{namespace=\"host\"}"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "mptcp_probe_sockets_retransmitting{namespace=\"host\"}"), None, "{text}");
    }

    /// The value of one sample of the text exposition, by its name and labels as printed.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn checks_count_runs_and_verdicts_by_target() {
        let report = |verdicts: serde_json::Value, usable: bool| -> Report {
            let mut r = crate::export::tests::report("x");
            r.summary.verdicts = serde_json::from_value(verdicts).unwrap();
            r.summary.path_conditions = vec![mptcp_probe_model::Verdict::PathBroken];
            r.summary.mptcp_usable = usable;
            r
        };
        let checks = CheckCounted::default();
        checks.done("lab", &report(json!(["mptcp_ok"]), true));
        checks.done("lab", &report(json!(["syn_option_stripped", "nat"]), false));
        checks.failed("far");
        let text = to_prometheus_text(
            &Metrics::new(&Counted::default(), &checks, &UploadCounted::default(), None).encode(),
        );
        let v = |target: &str, verdict: &str| {
            sample(
                &text,
                &format!("mptcp_probe_check_verdicts_total{{target=\"{target}\",verdict=\"{verdict}\"}}"),
            )
        };
        assert_eq!(v("lab", "mptcp_ok"), Some(1.0), "{text}");
        assert_eq!(v("lab", "syn_option_stripped"), Some(1.0), "{text}");
        assert_eq!(v("lab", "path_broken"), Some(2.0), "{text}");
        assert_eq!(sample(&text, "mptcp_probe_check_runs_total{target=\"lab\",result=\"done\"}"), Some(2.0));
        assert_eq!(
            sample(&text, "mptcp_probe_check_runs_total{target=\"far\",result=\"failed\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "mptcp_probe_check_mptcp_usable{target=\"lab\"}"), Some(0.0), "{text}");
        let last = sample(&text, "mptcp_probe_check_last_run_timestamp_seconds{target=\"lab\"}").unwrap();
        assert!(last > 1.7e9, "{text}");
        assert_eq!(sample(&text, "mptcp_probe_check_last_run_timestamp_seconds{target=\"far\"}"), None);
    }

    #[test]
    fn every_outcome_of_an_observed_namespace_is_there_from_the_start() {
        let counted = Counted::default();
        counted.namespace("host", true);
        counted.namespace("web", false);
        let text = to_prometheus_text(
            &Metrics::new(&counted, &CheckCounted::default(), &UploadCounted::default(), None).encode(),
        );
        for ns in ["host", "web"] {
            for o in ConnectionOutcome::ALL {
                let series =
                    format!("mptcp_probe_connections_total{{outcome=\"{}\",namespace=\"{ns}\"}}", o.as_str());
                assert_eq!(sample(&text, &series), Some(0.0), "{text}");
            }
        }
        assert_eq!(sample(&text, "mptcp_probe_namespace_up{namespace=\"host\"}"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "mptcp_probe_namespace_up{namespace=\"web\"}"), Some(0.0), "{text}");
    }

    #[test]
    fn a_connection_joined_with_its_socket_counts_the_kernel_s_fallback_and_its_subflows() {
        let book = crate::pipeline::sockets::shared_book();
        let mut sink =
            MetricsSink { counted: Counted::default(), namespace: "host".into(), book: book.clone() };
        lock_book(&book).note(
            &[
                socket(40000, false, 3, 0, 0),
                // The wire showed MPTCP throughout; the kernel's socket fell back.
                socket(40001, true, 1, 0, 0),
                socket(40002, false, 1, 0, 0),
            ],
            std::time::Instant::now(),
        );
        for port in [40000, 40001, 40003] {
            sink.flow(&summary(json!({"local_port": port, "remote_port": 5201})));
        }
        // A join of a joined connection is no connection and takes nothing from the book.
        sink.flow(&summary(json!({"local_port": 40002, "remote_port": 5201, "subflow": "join"})));
        assert_eq!(lock_book(&book).len(), 1, "the join's addresses are not the connection's");
        // A flow the kernel's table dropped: its summary will not come, its socket is forgotten.
        sink.evicted(&FlowKey {
            ifindex: 2,
            local_port: 40002,
            remote_port: 5201,
            local_addr: mptcp_probe_common::flow::v4_mapped([192, 0, 2, 1]),
            remote_addr: mptcp_probe_common::flow::v4_mapped([203, 0, 113, 2]),
        });
        assert!(lock_book(&book).is_empty());
        let text = to_prometheus_text(
            &Metrics::new(&sink.counted, &CheckCounted::default(), &UploadCounted::default(), None).encode(),
        );
        let c = |metric: &str, outcome: &str| {
            sample(&text, &format!("mptcp_probe_{metric}{{outcome=\"{outcome}\",namespace=\"host\"}}"))
        };
        assert_eq!(
            (c("connections_total", "mptcp"), c("connections_total", "fallback")),
            (Some(2.0), Some(1.0))
        );
        assert_eq!(
            (c("connections_socket_joined_total", "mptcp"), c("connections_socket_joined_total", "fallback")),
            (Some(1.0), Some(1.0)),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!(
                    "mptcp_probe_fallbacks_total{{reason=\"{SOCKET_FALLBACK_REASON}\",namespace=\"host\"}}"
                )
            ),
            Some(1.0),
            "{text}"
        );
        let h = |le: &str| {
            sample(
                &text,
                &format!("mptcp_probe_connection_subflows_bucket{{le=\"{le}\",namespace=\"host\"}}"),
            )
        };
        assert_eq!((h("2.0"), h("3.0"), h("+Inf")), (Some(0.0), Some(1.0), Some(1.0)), "{text}");
    }

    #[test]
    fn each_connection_counts_once_by_outcome_and_fallback_reason() {
        let counted = Counted::default();
        counted.flow("host", &summary(json!({})), None);
        counted.flow(
            "host",
            &summary(json!({"mptcp": "fallback", "fallback_cause": "synack_without_mptcp"})),
            None,
        );
        counted.flow(
            "host",
            &summary(json!({"mptcp": "fallback", "fallback_reason": "MPCapableFallbackACK",
                                     "fallback_cause": "third_ack_without_mptcp"})),
            None,
        );
        counted.flow("host", &summary(json!({"mptcp": "fallback"})), None);
        counted.flow(
            "host",
            &summary(json!({"mptcp": "not_negotiated", "subflow": "tcp", "options": {}})),
            None,
        );
        // A join, and a flow first seen mid-way: flows, not connections.
        counted.flow("host", &summary(json!({"subflow": "join", "options": {"tx": {"mp_join": 3}}})), None);
        counted.flow("host", &summary(json!({"handshake": {}, "ended": "idle"})), None);
        // Data sent again at the MPTCP level: a flow counted once per direction it was seen in.
        counted.flow("host", &summary(json!({"options": {}, "mptcp_retransmissions": {"tx": 4}})), None);
        counted.flow(
            "host",
            &summary(json!({"options": {}, "subflow": "join", "ended": "rst", "mptcp_retransmissions": {"tx": 1, "rx": 2}})),
            None,
        );
        let text = to_prometheus_text(
            &Metrics::new(&counted, &CheckCounted::default(), &UploadCounted::default(), None).encode(),
        );

        let c = |outcome: &str| {
            sample(
                &text,
                &format!("mptcp_probe_connections_total{{outcome=\"{outcome}\",namespace=\"host\"}}"),
            )
        };
        assert_eq!((c("mptcp"), c("fallback"), c("plain")), (Some(2.0), Some(3.0), Some(1.0)), "{text}");
        let again = |dir: &str| {
            sample(
                &text,
                &format!(
                    "mptcp_probe_flows_mptcp_retransmitting_total{{direction=\"{dir}\",namespace=\"host\"}}"
                ),
            )
        };
        assert_eq!((again("tx"), again("rx")), (Some(2.0), Some(1.0)), "{text}");
        let f = |reason: &str| {
            sample(&text, &format!("mptcp_probe_fallbacks_total{{reason=\"{reason}\",namespace=\"host\"}}"))
        };
        assert_eq!(f("synack_without_mptcp"), Some(1.0), "{text}");
        // The kernel's name wins over the wire's.
        assert_eq!(f("MPCapableFallbackACK"), Some(1.0), "{text}");
        assert_eq!(f("third_ack_without_mptcp"), None, "{text}");
        assert_eq!(f(UNKNOWN_REASON), Some(1.0), "{text}");
        // Options of every flow, joins included.
        let o = |subtype: &str, dir: &str| {
            sample(&text, &format!("mptcp_probe_options_total{{subtype=\"{subtype}\",direction=\"{dir}\",namespace=\"host\"}}"))
        };
        assert_eq!(o("mp_capable", "tx"), Some(10.0), "{text}");
        assert_eq!(o("mp_capable", "rx"), Some(5.0), "{text}");
        assert_eq!(o("dss", "tx"), Some(25.0), "{text}");
        assert_eq!(o("mp_join", "tx"), Some(3.0), "{text}");
        assert_eq!(
            sample(&text, "mptcp_probe_flows_total{subflow=\"join\",ended=\"fin\",namespace=\"host\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "mptcp_probe_flows_total{subflow=\"initial\",ended=\"idle\",namespace=\"host\"}"),
            Some(1.0)
        );
        // Durations: 250 ms falls in the bucket up to 0.256 s.
        assert_eq!(
            sample(&text, "mptcp_probe_connection_duration_seconds_bucket{le=\"0.256\",outcome=\"mptcp\",namespace=\"host\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "mptcp_probe_connection_duration_seconds_count{outcome=\"fallback\",namespace=\"host\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, &format!("mptcp_probe_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))),
            Some(1.0)
        );
        // No address or port in any label.
        assert!(!text.contains("192.0.2.1") && !text.contains("40000"), "{text}");
    }
}
