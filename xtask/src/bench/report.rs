//! The bench's report: every part's typed result, serialised as one JSON object by `--json`
//! and rendered as tables for people otherwise.

use std::fmt::{Display, Write as _};

use mptcp_probe_model::bench::{ProgBench, TcProgram};
use serde::Serialize;

use super::{
    bpf_stats::BpfStats,
    bulk::{ObserverFigures, Ratios},
    host::StorageKind,
    observer::{Obs, PerObserver},
    overflow::FlowTableOverflow,
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
    pub kernel: String,
    pub cpus: usize,
    pub load_average_at_start: f64,
    pub config: ReportConfig,
    pub bulk: PerObserver<ObserverFigures>,
    pub ratios: Ratios,
    pub prog_test_run: ProgBench,
    pub bpf_stats: BpfStats,
    pub short_connections: ShortConnections,
    pub flow_table_overflow: FlowTableOverflow,
    pub storage: Storage,
    pub ring_buffer: RingBuffer,
    pub daemon: Skipped,
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
    pub prog_repeat: u32,
    pub prog_rounds: u32,
    pub short_connections: u32,
    pub lru_flows: u32,
    pub lru_table: u32,
    pub path: &'static str,
    pub observed_interface: &'static str,
    pub client_sysctl: &'static str,
    pub capture_dir: StorageKind,
    pub collapsed_below_mbytes_per_s: f64,
}

/// A part that could not be measured, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Skipped {
    pub skipped: &'static str,
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
    let _ = writeln!(
        out,
        "\nmptcp-probe bench ({mode} mode, kernel {}, {} CPUs, load {} at start, {} s in all)\n",
        r.kernel,
        r.cpus,
        f(r.load_average_at_start, 2),
        f(r.seconds, 0)
    );
    bulk(&mut out, r);
    per_packet(&mut out, &r.prog_test_run);
    bpf_stats(&mut out, &r.bpf_stats);
    short(&mut out, &r.short_connections);
    overflow(&mut out, &r.flow_table_overflow);
    storage(&mut out, &r.storage);
    ring_buffer(&mut out, &r.ring_buffer);
    let _ = writeln!(out, "Daemon and collector: {}\n", r.daemon.skipped);
    targets(&mut out, &r.targets);
    out
}

fn bulk(out: &mut String, r: &Report) {
    let c = &r.config;
    let _ = writeln!(
        out,
        "Bulk MPTCP transfer, {}, observed on {}; {} runs of {} s per configuration; median [min–max]. \
         Throughput: both CPUs. CPU: everything pinned to CPU {} and saturating it, that CPU's busy \
         time per GB (softirq included); extra = minus no observer.",
        c.path, c.observed_interface, c.repetitions, c.transfer_seconds, c.pinned_cpu,
    );
    let rows: Vec<Vec<String>> = Obs::ALL
        .iter()
        .map(|&o| {
            let b = r.bulk.get(o);
            vec![
                b.label.to_string(),
                sp(&b.throughput_mbytes_per_s, 0),
                format!("{}/{}", b.collapsed_runs, b.one_cpu.collapsed_runs),
                sp(&b.one_cpu.mbytes_per_s, 0),
                sp(&b.cpu_s_per_gb, 3),
                f(r.ratios.extra_cpu_s_per_gb.get(o), 3),
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
            "collapsed",
            "MB/s (1 CPU)",
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
    let q = &r.ratios;
    let _ = writeln!(
        out,
        "Ratios: throughput probe/off {}, header-only/off {}, full/off {}, probe/header-only {}, probe/full {}; \
         on one CPU probe/off {}, header-only/off {}; \
         extra CPU probe/header-only {}, probe/full {}; observer process CPU probe/header-only {}\n",
        f(q.throughput_probe_over_off, 3),
        f(q.throughput_tcpdump_header_over_off, 3),
        f(q.throughput_tcpdump_full_over_off, 3),
        f(q.throughput_probe_over_tcpdump_header, 3),
        f(q.throughput_probe_over_tcpdump_full, 3),
        f(q.one_cpu_throughput_probe_over_off, 3),
        f(q.one_cpu_throughput_tcpdump_header_over_off, 3),
        f(q.extra_cpu_probe_over_tcpdump_header, 3),
        f(q.extra_cpu_probe_over_tcpdump_full, 3),
        f(q.observer_process_cpu_probe_over_tcpdump_header, 3),
    );
}

fn per_packet(out: &mut String, p: &ProgBench) {
    let _ = writeln!(
        out,
        "Per-packet cost, BPF_PROG_TEST_RUN ({} runs x {} rounds, median ns/packet; net = minus the empty classifier)",
        p.repeat, p.rounds
    );
    let rows: Vec<Vec<String>> = p
        .frames
        .iter()
        .map(|fr| {
            let cost = |prog| match fr.programs.get(&prog) {
                Some(c) => format!("{} ({})", f(c.ns, 1), f(c.net_ns, 1)),
                None => "- (-)".into(),
            };
            vec![
                fr.name.as_str().to_string(),
                fr.frame_bytes.to_string(),
                f(fr.empty_ns, 1),
                cost(TcProgram::TcIngress),
                cost(TcProgram::TcEgress),
                fr.what.clone(),
            ]
        })
        .collect();
    table(out, &["frame", "bytes", "empty", "tc_ingress (net)", "tc_egress (net)", "what"], &rows);
}

fn bpf_stats(out: &mut String, s: &BpfStats) {
    let _ = writeln!(
        out,
        "Kernel run-time counters during a bulk run (two CPUs) with watch (kernel.bpf_stats_enabled=1; {} MB/s)",
        f(s.mbytes_per_s, 0)
    );
    let rows: Vec<Vec<String>> = s
        .programs
        .iter()
        .map(|(name, p)| {
            vec![
                name.clone(),
                p.runs.to_string(),
                f(p.ns_per_run, 1),
                f(p.runs_per_gb, 0),
                f(p.cpu_ms_per_gb, 3),
            ]
        })
        .collect();
    table(out, &["program", "runs", "ns/run", "runs/GB", "CPU ms/GB"], &rows);
}

fn short(out: &mut String, sc: &ShortConnections) {
    let _ = writeln!(
        out,
        "Short MPTCP connections ({} per run, {} runs each; connect, 1 byte each way, close; CPU: all CPUs)",
        sc.connections_per_run, sc.repetitions
    );
    let k = &sc.kept_bytes_per_connection;
    table(
        out,
        &[
            "observer",
            "connections/s",
            "probe/off",
            "CPU ms/conn",
            "watch ms/conn",
            "events/s",
            "kept B/conn (events+summary+pcapng)",
        ],
        &[
            vec![
                Obs::Off.label().into(),
                sp(&sc.per_second.off, 0),
                "".into(),
                f(sc.cpu_ms_per_connection.off.median, 3),
                "".into(),
                "".into(),
                "".into(),
            ],
            vec![
                Obs::Probe.label().into(),
                sp(&sc.per_second.probe, 0),
                f(sc.probe_over_off, 3),
                f(sc.cpu_ms_per_connection.probe.median, 3),
                f(sc.watch_process_cpu_ms_per_connection.median, 3),
                f(sc.events_per_s.median, 0),
                format!(
                    "{} ({}+{}+{})",
                    f(k.total.median, 0),
                    f(k.events.median, 0),
                    f(k.summary.median, 0),
                    f(k.pcapng.median, 0)
                ),
            ],
        ],
    );
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

fn storage(out: &mut String, st: &Storage) {
    let p = &st.probe_kept_bytes;
    let _ = writeln!(
        out,
        "Storage for one bulk connection ({} GB, two-CPU runs): the probe keeps {} B (events {} + summary {} + pcapng {}); \
         header-only capture {} B, full capture {} B of the same transfer; probe/header-only {}, probe/full {}; \
         short connection {} B; plus {} B of counters per watch session\n",
        f(st.bulk_connection_gb, 2),
        f(p.total, 0),
        f(p.events.median, 0),
        f(p.summary.median, 0),
        f(p.pcapng.median, 0),
        f(st.tcpdump_header_bytes_same_transfer, 0),
        f(st.tcpdump_full_bytes_same_transfer, 0),
        f(st.probe_over_tcpdump_header, 7),
        f(st.probe_over_tcpdump_full, 9),
        f(st.short_connection_kept_bytes, 0),
        f(st.counters_line_bytes_per_watch_session, 0),
    );
}

fn ring_buffer(out: &mut String, rb: &RingBuffer) {
    let start = rb.drops_start_at_events_per_s;
    let _ = writeln!(
        out,
        "Ring buffer: {} events dropped in all observed runs (highest event rate {} /s){}\n",
        rb.dropped_total,
        f(rb.max_events_per_s, 0),
        if start.is_finite() { format!("; drops seen from {start:.0} events/s") } else { String::new() }
    );
}

/// A measured figure: small ones in scientific notation.
fn measured(x: f64) -> String {
    match x {
        x if !x.is_finite() => "-".into(),
        x if x.abs() < 0.01 && x != 0.0 => format!("{x:.2e}"),
        x => format!("{x:.3}"),
    }
}

fn targets(out: &mut String, targets: &[Target]) {
    let _ = writeln!(out, "Targets");
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let met = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            vec![t.target.to_string(), t.wanted.to_string(), measured(t.measured), met.to_string()]
        })
        .collect();
    table(out, &["target", "wanted", "measured", ""], &rows);
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::bench::{BenchFrame, FrameCost, ProgramCost};

    use super::*;

    fn report() -> Report {
        let mut r =
            Report { kernel: "6.18.0".into(), cpus: 2, load_average_at_start: 0.5, ..Default::default() };
        r.bulk = PerObserver::from_fn(|o| ObserverFigures { label: o.label(), ..Default::default() });
        r.bulk.probe.throughput_mbytes_per_s = Spread::of(&[650.0, 700.0, 2100.0]);
        r.bulk.probe.collapsed_runs = 1;
        r.ratios.extra_cpu_s_per_gb.probe = 0.004;
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
        r.flow_table_overflow.rss_kib_after_batch = vec![42956, 42960];
        r.flow_table_overflow.exit_code = Some(0);
        r.targets.push(Target { target: "ring-buffer drops", wanted: "0", measured: 0.0, met: Some(true) });
        r.targets.push(Target { target: "tiny", wanted: "<= 1", measured: 0.000046, met: Some(true) });
        r.targets.push(Target { target: "nothing", wanted: "<= 1", measured: f64::NAN, met: None });
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
            text.contains("(quick mode, kernel 6.18.0, 2 CPUs, load 0.50 at start, 0 s in all)"),
            "{text}"
        );
        let probe = row(&text, "mptcp-probe watch  ");
        assert_eq!(&probe[..4], ["mptcp-probe watch", "700 [650–2100]", "1/0", "- [-–-]"]);
        assert_eq!(probe[5], "0.004");
        let off = row(&text, "no observer  ");
        assert_eq!(off[5], "-", "no observer has no extra CPU: {off:?}");
        assert!(text.contains("header-only 0, full -"), "{text}");
        let frame = row(&text, "data_dss");
        assert_eq!(&frame[..5], ["data_dss", "1514", "14.0", "150.0 (136.0)", "- (-)"]);
        assert!(text.contains("[42956, 42960] after the batches"), "{text}");
        assert!(text.contains("exit code 0;"), "{text}");
        assert_eq!(row(&text, "ring-buffer drops")[2..], ["0.000", "met"]);
        assert_eq!(row(&text, "tiny")[2..], ["4.60e-5", "met"]);
        assert_eq!(row(&text, "nothing")[2..], ["-", "not measured"]);
    }

    #[test]
    fn the_json_keeps_the_sections_and_their_keys() {
        let v = serde_json::to_value(report()).unwrap();
        for key in [
            "mode",
            "kernel",
            "cpus",
            "load_average_at_start",
            "config",
            "bulk",
            "ratios",
            "prog_test_run",
            "bpf_stats",
            "short_connections",
            "flow_table_overflow",
            "storage",
            "ring_buffer",
            "daemon",
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
        assert!(v["targets"][2]["measured"].is_null());
    }
}
