//! The bench's report: every part's typed result, serialised as one JSON object by `--json`
//! and rendered as tables for people otherwise.

use std::fmt::{Display, Write as _};

use mptcp_probe_model::bench::{ProgBench, TcProgram};
use serde::Serialize;

use super::{
    bpf_stats::{Accounting, BpfStats, ConnectionRunTime, ProgramKind, RealVsTestRun},
    bulk::{ObserverFigures, Ratios},
    collector::CollectorFigures,
    daemon::DaemonFigures,
    host::{Source, StorageKind},
    kernel_memory::KernelMemory,
    observer::{Obs, PerObserver, PerWatchMode, WatchMode},
    overflow::FlowTableOverflow,
    per_packet::PerPacket,
    ring_buffer::RingBuffer,
    short::ShortConnections,
    stats::Spread,
    storage::Storage,
    targets::Target,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Quick,
    Full,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// The observer measured.
    pub source: Source,
    pub kernel: String,
    pub cpus: usize,
    pub load_average_at_start: f64,
    pub config: ReportConfig,
    pub bulk: PerObserver<ObserverFigures>,
    pub ratios: Ratios,
    /// What `mptcp-probe prog-bench` printed.
    pub prog_test_run: ProgBench,
    /// The figures taken from it.
    pub per_packet: PerPacket,
    pub bpf_stats: BpfStats,
    pub bpf_stats_kernel_mappings: BpfStats,
    pub real_vs_test_run: RealVsTestRun,
    pub accounting: Accounting,
    pub short_connections: ShortConnections,
    /// One more short-connection run per watch mode, with the run-time counters on.
    pub short_connection_run_time: PerWatchMode<ConnectionRunTime>,
    pub flow_table_overflow: FlowTableOverflow,
    pub kernel_memory: KernelMemory,
    pub storage: Storage,
    pub ring_buffer: RingBuffer,
    pub daemon: DaemonFigures,
    pub collector: CollectorFigures,
    pub targets: Vec<Target>,
    /// Wall-clock time of the whole bench.
    pub seconds: f64,
}

/// How the bench ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReportConfig {
    pub repetitions: u32,
    pub transfer_seconds: f64,
    pub pinned_cpu: &'static str,
    /// The CPUs of the short connections' client and server.
    pub short_connection_cpus: [&'static str; 2],
    pub prog_repeat: u32,
    pub prog_rounds: u32,
    pub short_connections: u32,
    pub lru_flows: u32,
    pub lru_table: u32,
    pub path: &'static str,
    pub observed_interface: &'static str,
    pub client_sysctls: [&'static str; 3],
    pub capture_dir: StorageKind,
    pub collapsed_below_mbytes_per_s: f64,
}

// The tables are written into a String: fmt::Write into a String cannot fail.

/// `x` with `prec` decimals; `-` when it was not measured.
fn f(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "-".into()
    }
}

/// "median [min–max]".
fn sp(s: &Spread, prec: usize) -> String {
    format!("{} [{}–{}]", f(s.median, prec), f(s.min, prec), f(s.max, prec))
}

/// An optional count; `-` when it is unknown.
fn opt<T: Display>(x: Option<T>) -> String {
    x.map_or_else(|| "-".into(), |x| x.to_string())
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    out.push_str(&mptcp_probe_tests::text::table(header, rows));
}

/// Every section, in the order the bench runs them.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mode = match r.mode {
        Mode::Quick => "quick",
        Mode::Full => "full",
    };
    let modified = match r.source.modified_crates.as_slice() {
        [] => String::new(),
        m => format!(" with uncommitted changes to {}", m.join(", ")),
    };
    let _ = writeln!(
        out,
        "\nmptcp-probe bench ({mode} mode, kernel {}, {} CPUs, load {} at start, {} s in all; observer at {}{modified})\n",
        r.kernel,
        r.cpus,
        f(r.load_average_at_start, 2),
        f(r.seconds, 0),
        if r.source.commit.is_empty() { "-" } else { &r.source.commit },
    );
    bulk(&mut out, r);
    per_packet(&mut out, &r.prog_test_run, &r.per_packet);
    bpf_stats(&mut out, r);
    short(&mut out, r);
    short_run_time(&mut out, &r.short_connection_run_time);
    overflow(&mut out, &r.flow_table_overflow);
    kernel_memory(&mut out, &r.kernel_memory);
    storage(&mut out, &r.storage);
    ring_buffer(&mut out, &r.ring_buffer);
    daemon(&mut out, &r.daemon);
    collector(&mut out, &r.collector);
    targets(&mut out, &r.targets);
    out
}

fn bulk(out: &mut String, r: &Report) {
    let c = &r.config;
    let _ = writeln!(
        out,
        "Bulk MPTCP transfer, {}, observed on {}; {} runs of {} s per configuration; median [min–max]. \
         mptcp-probe watch runs as a user runs it: {}. Throughput: both CPUs. CPU: everything pinned \
         to CPU {} and saturating it, that CPU's busy time per GB (softirq included). x none and extra: \
         against the run without observer of the same repetition.",
        c.path,
        c.observed_interface,
        c.repetitions,
        c.transfer_seconds,
        WatchMode::Default.label(),
        c.pinned_cpu,
    );
    let q = &r.ratios;
    let rows: Vec<Vec<String>> = Obs::ALL
        .iter()
        .map(|&o| {
            let b = r.bulk.get(o);
            let or_dash = |s: Option<&Spread>, prec| s.map_or_else(|| "-".into(), |s| sp(s, prec));
            vec![
                b.label.to_string(),
                sp(&b.throughput_mbytes_per_s, 0),
                or_dash(q.throughput_over_off.get(o), 3),
                format!("{}/{}", b.collapsed_runs, b.one_cpu.collapsed_runs),
                sp(&b.one_cpu.mbytes_per_s, 0),
                or_dash(q.one_cpu_throughput_over_off.get(o), 3),
                sp(&b.cpu_s_per_gb, 3),
                or_dash(q.extra_cpu_s_per_gb.get(o), 4),
                f(b.observer_process_cpu_s_per_gb.median, 4),
                f(b.file_bytes_per_gb.median, 0),
            ]
        })
        .collect();
    table(
        out,
        &[
            "observer",
            "MB/s (2 CPUs)",
            "x none",
            "collapsed",
            "MB/s (1 CPU)",
            "x none",
            "CPU s/GB (1 CPU)",
            "extra CPU s/GB",
            "its process CPU s/GB",
            "file B/GB",
        ],
        &rows,
    );
    let busy: Vec<String> = Obs::ALL
        .iter()
        .map(|&o| {
            let b = r.bulk.get(o);
            let one = &b.one_cpu;
            format!(
                "{} {}/{}",
                b.label,
                f(one.cpu_busy_share.median, 2),
                f(one.other_cpus_busy_share.median, 2)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "One-CPU runs, busy share of the pinned CPU / of the others (median): {}",
        busy.join(", ")
    );
    let _ = writeln!(
        out,
        "Packets tcpdump reported dropped by the kernel, all runs: header-only {}, full {}",
        opt(r.bulk.tcpdump_header.tcpdump_dropped_packets),
        opt(r.bulk.tcpdump_full.tcpdump_dropped_packets)
    );
    let _ = writeln!(
        out,
        "Ratios (per repetition, median): throughput probe/header-only {}, probe/full {}; \
         extra CPU (ratio of medians) probe/header-only {}, probe/full {}; observer process CPU \
         probe/header-only {}\n",
        f(q.throughput_probe_over_tcpdump_header.median, 3),
        f(q.throughput_probe_over_tcpdump_full.median, 3),
        f(q.extra_cpu_probe_over_tcpdump_header, 3),
        f(q.extra_cpu_probe_over_tcpdump_full, 3),
        f(q.observer_process_cpu_probe_over_tcpdump_header, 3),
    );
}

fn per_packet(out: &mut String, b: &ProgBench, p: &PerPacket) {
    let _ = writeln!(
        out,
        "Per-packet cost, BPF_PROG_TEST_RUN ({} runs x {} rounds; ns/packet, median of the rounds; net = minus \
         the empty classifier in the same round, median [min–max])",
        b.repeat, b.rounds
    );
    let rows: Vec<Vec<String>> = p
        .frames
        .iter()
        .map(|fr| {
            let cost = |prog| match fr.programs.get(&prog) {
                Some(c) => vec![f(c.ns.median, 1), sp(&c.net_ns, 1)],
                None => vec!["-".into(), "-".into()],
            };
            let mut row =
                vec![fr.name.as_str().to_string(), fr.frame_bytes.to_string(), f(fr.empty_ns.median, 1)];
            row.extend(cost(TcProgram::TcIngress));
            row.extend(cost(TcProgram::TcEgress));
            row.push(fr.what.clone());
            row
        })
        .collect();
    table(out, &["frame", "bytes", "empty", "tc_ingress", "net", "tc_egress", "net", "what"], &rows);
}

fn run_time_rows(s: &BpfStats) -> Vec<Vec<String>> {
    let kind = |k: ProgramKind| match k {
        ProgramKind::Tc => "tc",
        ProgramKind::Tracepoint => "tracepoint",
        ProgramKind::Fentry => "fentry",
        ProgramKind::Other => "other",
    };
    let mut rows: Vec<Vec<String>> = s
        .programs
        .iter()
        .map(|(name, p)| {
            vec![
                name.clone(),
                kind(p.kind).into(),
                p.runs.to_string(),
                f(p.ns_per_run, 1),
                f(p.runs_per_gb, 0),
                f(p.cpu_ms_per_gb, 3),
            ]
        })
        .collect();
    rows.extend(s.empty_classifier.iter().map(|(prog, p)| {
        vec![
            format!("empty classifier, {}'s hook", prog.name()),
            "tc".into(),
            p.runs.to_string(),
            f(p.ns_per_run, 1),
            f(p.runs_per_gb, 0),
            f(p.cpu_ms_per_gb, 3),
        ]
    }));
    rows
}

fn bpf_stats(out: &mut String, r: &Report) {
    const HEADER: [&str; 6] = ["program", "kind", "runs", "ns/run", "runs/GB", "CPU ms/GB"];
    let s = &r.bpf_stats;
    let _ = writeln!(
        out,
        "Kernel run-time counters during a bulk run (two CPUs) with watch (default mode; \
         kernel.bpf_stats_enabled=1; {} MB/s); an empty classifier on the same hooks, after watch's",
        f(s.mbytes_per_s, 0)
    );
    table(out, &HEADER, &run_time_rows(s));
    if let Some(e) = &s.empty_classifier_error {
        let _ = writeln!(out, "No empty classifier: {e}");
    }
    let _ = writeln!(
        out,
        "Tracepoints {} ms/GB, TC programs {} ms/GB: tracepoints/TC {}",
        f(s.tracepoints_cpu_ms_per_gb, 4),
        f(s.tc_cpu_ms_per_gb, 3),
        f(s.tracepoints_over_tc, 4)
    );
    let rows: Vec<Vec<String>> = r
        .real_vs_test_run
        .programs
        .iter()
        .map(|(p, c)| {
            vec![
                p.name().to_string(),
                c.frame.as_str().to_string(),
                f(c.real_ns_per_run, 1),
                f(c.test_run_ns, 1),
                f(c.gross_ratio, 2),
                f(c.real_empty_ns_per_run, 1),
                f(c.test_run_empty_ns, 1),
                f(c.real_net_ns, 1),
                f(c.test_run_net_ns, 1),
                f(c.net_ratio, 2),
            ]
        })
        .collect();
    let _ = writeln!(out, "TC programs on real traffic against the test run of the frame each mostly sees");
    table(
        out,
        &[
            "program",
            "frame",
            "real ns/run",
            "test ns/run",
            "real/test",
            "empty real",
            "empty test",
            "net real",
            "net test",
            "net real/test",
        ],
        &rows,
    );
    let a = &r.accounting;
    let _ = writeln!(
        out,
        "The probe's extra CPU as the kernel counts it: programs {} + watch process {} = {} s/GB \
         (measured on one CPU: {}; tcpdump -s 128 -w measured {}; counted/tcpdump {})",
        f(a.programs_s_per_gb, 4),
        f(a.watch_process_s_per_gb, 4),
        f(a.total_s_per_gb, 4),
        f(a.measured_extra_s_per_gb, 4),
        f(a.tcpdump_header_measured_extra_s_per_gb, 4),
        f(a.total_over_tcpdump_header, 3)
    );
    let m = &r.bpf_stats_kernel_mappings;
    let _ = writeln!(
        out,
        "The same with watch --kernel-mappings ({} MB/s): tracepoints {} ms/GB, TC programs {} ms/GB, \
         tracepoints/TC {}",
        f(m.mbytes_per_s, 0),
        f(m.tracepoints_cpu_ms_per_gb, 3),
        f(m.tc_cpu_ms_per_gb, 3),
        f(m.tracepoints_over_tc, 3)
    );
    let tracepoints: Vec<Vec<String>> =
        run_time_rows(m).into_iter().filter(|row| row[1] != "tc" && row[2] != "0").collect();
    table(out, &HEADER, &tracepoints);
    out.push('\n');
}

fn short(out: &mut String, r: &Report) {
    let sc = &r.short_connections;
    let _ = writeln!(
        out,
        "Short MPTCP connections ({} per run, {} runs each; connect, 1 byte each way, close; client on CPU {}, \
         server on CPU {}; CPU: all CPUs while the connections run; watch: its own CPU until its last \
         summary; x none: against the run without observer of the same repetition)",
        sc.connections_per_run, sc.repetitions, r.config.short_connection_cpus[0], r.config.short_connection_cpus[1]
    );
    let mut rows = vec![vec![
        Obs::Off.label().to_string(),
        sp(&sc.off.per_second, 0),
        String::new(),
        f(sc.off.cpu_ms_per_connection.median, 3),
    ]];
    for m in WatchMode::ALL {
        let w = sc.watch.get(m);
        let k = &w.kept_bytes_per_connection;
        rows.push(vec![
            w.command.to_string(),
            sp(&w.per_second, 0),
            sp(&w.over_off, 3),
            f(w.cpu_ms_per_connection.median, 3),
            f(w.watch_process_cpu_ms_per_connection.median, 3),
            f(w.events_per_s.median, 0),
            f(w.event_lines_per_connection.median, 2),
            format!(
                "{} ({}+{}+{})",
                f(k.total.median, 0),
                f(k.summary.median, 0),
                f(k.events.median, 0),
                f(k.pcapng_packets.median, 0)
            ),
            f(w.session_bytes.median, 0),
            w.troubled_flows.to_string(),
        ]);
    }
    for row in &mut rows {
        row.resize(10, String::new());
    }
    table(
        out,
        &[
            "observer",
            "connections/s",
            "x none",
            "CPU ms/conn",
            "watch ms/conn",
            "kernel events/s",
            "lines/conn",
            "kept B/conn (summary+events+trace)",
            "B/session",
            "troubled",
        ],
        &rows,
    );
    let d = &sc.watch.default;
    let mut fields: Vec<(&String, &f64)> = d.summary_field_bytes.iter().collect();
    fields.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    let fields: Vec<String> = fields.iter().map(|(k, b)| format!("{k} {}", f(**b, 0))).collect();
    let _ = writeln!(
        out,
        "A clean connection's summary line ({}), bytes by field: {}\n",
        d.command,
        if fields.is_empty() { "-".into() } else { fields.join(", ") }
    );
}

fn short_run_time(out: &mut String, rt: &PerWatchMode<ConnectionRunTime>) {
    let _ = writeln!(
        out,
        "Kernel run time per short connection (one more run per mode, kernel.bpf_stats_enabled=1): \
         runs per connection x ns per run, and watch's own CPU"
    );
    let mut names: Vec<&String> = WatchMode::ALL.iter().flat_map(|m| rt.get(*m).programs.keys()).collect();
    names.sort();
    names.dedup();
    let mut rows = Vec::new();
    for name in names {
        let cells: Vec<String> = WatchMode::ALL
            .iter()
            .map(|m| match rt.get(*m).programs.get(name) {
                Some(p) if p.runs_per_connection > 0.0 => {
                    format!("{} x {}", f(p.runs_per_connection, 1), f(p.ns_per_run, 0))
                }
                _ => "-".into(),
            })
            .collect();
        if cells.iter().any(|c| c != "-") {
            rows.push([vec![name.clone()], cells].concat());
        }
    }
    let sum = |label: &str, g: fn(&ConnectionRunTime) -> f64, prec| {
        [vec![label.to_string()], WatchMode::ALL.iter().map(|m| f(g(rt.get(*m)), prec)).collect()].concat()
    };
    rows.push(sum("TC programs, µs/connection", |c| c.tc_us_per_connection, 1));
    rows.push(sum("tracepoints, µs/connection", |c| c.tracepoints_us_per_connection, 1));
    rows.push(sum("watch process, ms/connection", |c| c.watch_process_ms_per_connection, 3));
    let header: Vec<&str> = ["program"].into_iter().chain(WatchMode::ALL.iter().map(|m| m.label())).collect();
    table(out, &header, &rows);
    out.push('\n');
}

fn overflow(out: &mut String, l: &FlowTableOverflow) {
    let after: Vec<String> = l.rss_kib_after_batch.iter().map(u64::to_string).collect();
    let _ = writeln!(
        out,
        "Flow table of {} entries, {} batches of {} concurrent connections: flows created {}, evictions {}, \
         evicted before summary {}, insert failures {}, summaries {}; watch alive {}, exit code {}; \
         RSS {} KiB at start, [{}] after the batches, peak {} KiB\n",
        l.flow_table_size,
        l.batches,
        l.concurrent_flows,
        opt(l.flows_created),
        opt(l.flow_table_evictions),
        opt(l.flows_evicted_unsummarised),
        opt(l.flow_insert_failed),
        l.flow_summaries,
        l.alive_until_stopped,
        opt(l.exit_code),
        l.rss_kib_at_start,
        after.join(", "),
        l.peak_rss_kib
    );
}

fn kernel_memory(out: &mut String, m: &KernelMemory) {
    let _ = writeln!(
        out,
        "Kernel memory of watch (default flow-table size): {} B per tracked flow ({}); the flow table's fixed \
         part {} B; memlock / max_entries {} B; maps {} B in all, programs {} B",
        f(m.marginal_bytes_per_flow, 1),
        m.source,
        f(m.flow_table_fixed_bytes, 0),
        f(m.bytes_per_flow, 3),
        m.maps_memlock_bytes,
        m.programs_memlock_bytes
    );
    let rows: Vec<Vec<String>> = m
        .maps
        .iter()
        .map(|(name, x)| {
            vec![
                name.clone(),
                x.map_type.to_string(),
                x.key_size.to_string(),
                x.value_size.to_string(),
                x.max_entries.to_string(),
                x.memlock_bytes.to_string(),
            ]
        })
        .collect();
    table(out, &["map", "type", "key B", "value B", "max entries", "memlock B"], &rows);
    out.push('\n');
}

fn storage(out: &mut String, st: &Storage) {
    let p = &st.probe_kept_bytes;
    let c = &st.clean_connection;
    let _ = writeln!(
        out,
        "Storage for one bulk connection ({} GB, two-CPU runs): the probe keeps {} B (events {} + summary {} + \
         trace packets {}), plus {} B per watch session (counters line, trace header); header-only capture {} B, \
         full capture {} B of the same transfer; probe/header-only {}, probe/full {}. A clean short connection \
         ({}): {} B (summary {} + events {} + trace packets {})\n",
        f(st.bulk_connection_gb, 2),
        f(p.total, 0),
        f(p.events.median, 0),
        f(p.summary.median, 0),
        f(p.pcapng_packets.median, 0),
        f(st.session_bytes.median, 0),
        f(st.tcpdump_header_bytes_same_transfer, 0),
        f(st.tcpdump_full_bytes_same_transfer, 0),
        measured(st.probe_over_tcpdump_header),
        measured(st.probe_over_tcpdump_full),
        WatchMode::Default.label(),
        sp(&c.total, 0),
        f(c.summary.median, 0),
        f(c.events.median, 0),
        f(c.pcapng_packets.median, 0),
    );
}

fn ring_buffer(out: &mut String, rb: &RingBuffer) {
    let start = rb.drops_start_at_events_per_s;
    let heaviest = rb.heaviest().map_or_else(String::new, |h| format!(", {}", h.run));
    let _ = writeln!(
        out,
        "Ring buffer: {} events dropped in all observed runs (highest event rate {} /s{heaviest}){}\n",
        rb.dropped_total,
        f(rb.max_events_per_s, 0),
        if start.is_finite() { format!("; drops seen from {start:.0} events/s") } else { String::new() }
    );
}

fn daemon(out: &mut String, d: &DaemonFigures) {
    let _ = writeln!(
        out,
        "Daemon ({}): idle {} ms CPU per s, RSS {} KiB (peak {} KiB); short connections {} /s with it, \
         {} without, x none {}; its CPU {} ms per connection; counted {} of the connections (worst \
         run); after {} connections a scrape takes {} ms ({} B)\n",
        d.config,
        f(d.idle_cpu_ms_per_s, 2),
        d.idle_rss_kib,
        d.peak_rss_kib,
        sp(&d.per_second, 0),
        sp(&d.off_per_second, 0),
        sp(&d.over_off, 3),
        sp(&d.process_cpu_ms_per_connection, 4),
        f(d.counted_share_min, 3),
        d.scrape.connections_seen,
        sp(&d.scrape.ms, 2),
        d.scrape.bytes,
    );
}

/// The collector's table and targets alone (`cargo xtask bench --collector`).
pub fn render_collector(c: &CollectorFigures) -> String {
    let mut out = String::new();
    collector(&mut out, c);
    targets(&mut out, &super::targets::collector(c));
    out
}

fn collector(out: &mut String, c: &CollectorFigures) {
    let _ = writeln!(out, "Collector ({})", c.config);
    let rows: Vec<Vec<String>> = c
        .backends
        .iter()
        .map(|b| {
            vec![
                b.backend.to_string(),
                format!("{} × {}", b.uploads, b.concurrency),
                f(b.per_second, 0),
                format!(
                    "{} / {} / {}",
                    f(b.latency_ms_p50, 1),
                    f(b.latency_ms_p99, 1),
                    f(b.latency_ms_max, 1)
                ),
                format!("{} / {} / {}", b.failed, b.lost, b.doubled),
                format!("{} of {}", b.retried_same_answer, b.retried),
                format!("{} ({} reports, {} B)", sp(&b.page_ms, 1), b.page_reports, b.page_bytes),
            ]
        })
        .collect();
    table(
        out,
        &[
            "backend",
            "uploads",
            "uploads/s",
            "ms p50 / p99 / max",
            "failed / lost / doubled",
            "retries answered alike",
            "aggregate page, ms",
        ],
        &rows,
    );
    let _ = writeln!(out);
}

/// A measured figure: small ones in scientific notation.
fn measured(x: f64) -> String {
    match x {
        x if !x.is_finite() => "-".into(),
        x if x.abs() < 0.01 && x != 0.0 => format!("{x:.2e}"),
        x if x.abs() >= 100.0 => format!("{x:.1}"),
        x => format!("{x:.3}"),
    }
}

fn targets(out: &mut String, targets: &[Target]) {
    let _ = writeln!(out, "Targets (median [min–max] of the repetitions where the figure has them)");
    let verdict = |m: Option<bool>, missed: &'static str| match m {
        Some(true) => "met",
        Some(false) => missed,
        None => "-",
    };
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let value = match &t.spread {
                Some(s) if s.n > 1 => {
                    format!("{} [{}–{}]", measured(t.measured), measured(s.min), measured(s.max))
                }
                _ => measured(t.measured),
            };
            let must = match t.must_met {
                None => "not measured",
                m => verdict(m, "MISSED"),
            };
            vec![
                t.figure.to_string(),
                t.must.to_string(),
                t.aim.map_or_else(|| "-".into(), |a| a.to_string()),
                value,
                must.into(),
                verdict(t.aim_met, "missed").into(),
                t.detail.clone(),
            ]
        })
        .collect();
    table(out, &["figure", "must", "aim", "measured", "must", "aim", "of"], &rows);
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::bench::{BenchFrame, FrameCost, ProgramCost};

    use super::*;
    use crate::bench::targets::Bound;

    fn report() -> Report {
        let mut r =
            Report { kernel: "6.18.0".into(), cpus: 2, load_average_at_start: 0.5, ..Default::default() };
        r.source = Source { commit: "abc1234".into(), modified_crates: vec!["mptcp-probe-ebpf"] };
        r.bulk = PerObserver::from_fn(|o| ObserverFigures { label: o.label(), ..Default::default() });
        r.bulk.probe.throughput_mbytes_per_s = Spread::of(&[650.0, 700.0, 2100.0]);
        r.bulk.probe.collapsed_runs = 1;
        r.ratios.throughput_over_off.probe = Spread::of(&[0.98, 0.99, 1.0]);
        r.ratios.extra_cpu_s_per_gb.probe = Spread::of(&[0.004]);
        r.bulk.tcpdump_header.tcpdump_dropped_packets = Some(0);
        let cost = |ns| ProgramCost { ns, net_ns: ns - 14.0, rounds_ns: vec![ns] };
        r.prog_test_run.frames.push(FrameCost {
            name: BenchFrame::DataDss,
            what: "IPv4 data segment".into(),
            frame_bytes: 1514,
            empty_ns: 14.0,
            empty_rounds_ns: vec![14.0],
            programs: [(TcProgram::TcIngress, cost(150.0))].into(),
        });
        r.per_packet = PerPacket::of(&r.prog_test_run);
        r.short_connections.watch.flows_only.command = WatchMode::FlowsOnly.label();
        r.short_connections.watch.flows_only.over_off = Spread::of(&[0.96, 0.97]);
        r.flow_table_overflow.rss_kib_after_batch = vec![42956, 42960];
        r.flow_table_overflow.exit_code = Some(0);
        r.kernel_memory.marginal_bytes_per_flow = 272.0;
        r.targets.push(Target::judge(
            "ring-buffer drops",
            Bound::Exactly(0.0),
            Some(Bound::Exactly(0.0)),
            0.0,
        ));
        r.targets.push(Target::judge("tiny", Bound::AtMost(1.0), None, 0.000046));
        r.targets.push(Target::judge("nothing", Bound::AtMost(1.0), Some(Bound::AtMost(0.5)), f64::NAN));
        let mut spread = Target::judge("spread", Bound::AtLeast(0.98), Some(Bound::AtLeast(0.99)), 0.985);
        spread.spread = Some(Spread::of(&[0.97, 0.985, 0.99]));
        r.targets.push(spread);
        r
    }

    fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
        let line = text
            .lines()
            .find(|l| l.starts_with(first))
            .unwrap_or_else(|| panic!("no row {first:?} in\n{text}"));
        line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()
    }

    #[test]
    fn tables_show_the_fields_and_a_dash_for_what_was_not_measured() {
        let text = render(&report());
        assert!(
            text.contains("(quick mode, kernel 6.18.0, 2 CPUs, load 0.50 at start, 0 s in all; observer at abc1234 with uncommitted changes to mptcp-probe-ebpf)"),
            "{text}"
        );
        let probe = row(&text, "mptcp-probe watch  ");
        assert_eq!(
            &probe[..5],
            ["mptcp-probe watch", "700 [650–2100]", "0.990 [0.980–1.000]", "1/0", "- [-–-]"]
        );
        assert_eq!(probe[7], "0.0040 [0.0040–0.0040]");
        let off = row(&text, "no observer  ");
        assert_eq!(off[2], "-", "no observer is not compared with itself: {off:?}");
        assert!(text.contains("header-only 0, full -"), "{text}");
        let frame = row(&text, "data_dss");
        assert_eq!(&frame[..7], ["data_dss", "1514", "14.0", "150.0", "136.0 [136.0–136.0]", "-", "-"]);
        let flows = row(&text, "watch --flows-only --json");
        assert_eq!(flows[2], "0.965 [0.960–0.970]");
        assert!(text.contains("[42956, 42960] after the batches"), "{text}");
        assert!(text.contains("exit code 0;"), "{text}");
        assert!(text.contains("272.0 B per tracked flow"), "{text}");
        assert_eq!(row(&text, "ring-buffer drops")[1..6], ["0", "0", "0.000", "met", "met"]);
        assert_eq!(row(&text, "tiny")[1..6], ["<= 1", "-", "4.60e-5", "met", "-"]);
        assert_eq!(row(&text, "nothing")[1..6], ["<= 1", "<= 0.5", "-", "not measured", "-"]);
        assert_eq!(
            row(&text, "spread")[1..6],
            [">= 0.98", ">= 0.99", "0.985 [0.970–0.990]", "met", "missed"]
        );
    }

    #[test]
    fn the_json_keeps_the_sections_and_their_keys() {
        let v = serde_json::to_value(report()).unwrap();
        for key in [
            "mode",
            "source",
            "kernel",
            "cpus",
            "load_average_at_start",
            "config",
            "bulk",
            "ratios",
            "prog_test_run",
            "per_packet",
            "bpf_stats",
            "bpf_stats_kernel_mappings",
            "real_vs_test_run",
            "accounting",
            "short_connections",
            "short_connection_run_time",
            "flow_table_overflow",
            "kernel_memory",
            "storage",
            "ring_buffer",
            "daemon",
            "collector",
            "targets",
            "seconds",
        ] {
            assert!(v.get(key).is_some(), "no {key} in {v:#}");
        }
        assert_eq!(v["mode"], "quick");
        assert_eq!(v["bulk"]["probe"]["throughput_mbytes_per_s"]["median"], 700.0);
        assert!(v["bulk"]["probe"].get("tcpdump_dropped_packets").is_none());
        assert_eq!(v["bulk"]["tcpdump_header"]["tcpdump_dropped_packets"], 0);
        assert_eq!(v["prog_test_run"]["frames"][0]["programs"]["tc_ingress"]["ns"], 150.0);
        assert_eq!(v["per_packet"]["frames"][0]["programs"]["tc_ingress"]["net_ns"]["median"], 136.0);
        assert_eq!(v["short_connections"]["watch"]["flows_only"]["over_off"]["median"], 0.965);
        assert_eq!(v["targets"][0]["must"], "0");
        assert!(v["targets"][2]["measured"].is_null());
        assert_eq!(v["targets"][3]["aim_met"], false);
    }
}
