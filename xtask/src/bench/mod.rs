//! `cargo xtask bench`: what observing costs, measured in a namespace lab it creates.
//!
//! - [`bulk`]: bulk MPTCP transfers (client → router → server over veth, one subflow) with no
//!   observer, with `mptcp-probe watch` as a user runs it (`watch --json --iface IF --pcap
//!   FILE`), with a full `tcpdump -w` and with a header-only `tcpdump -s 128 -w` on the same
//!   interface: throughput (both CPUs, as a host runs), CPU per GB (everything — sender, router,
//!   receiver, softirq, observer — pinned to one CPU and saturating it, so that the CPU's busy
//!   time per GB is the whole cost of moving a GB and little else lands there), the observer
//!   process's own CPU, and the bytes each keeps; ratios taken within each repetition.
//! - [`per_packet`]: per-packet cost of the TC programs with BPF_PROG_TEST_RUN
//!   (`mptcp-probe prog-bench`); [`bpf_stats`]: the kernel's run-time counters
//!   (`kernel.bpf_stats_enabled`) during a bulk run, next to an [`empty_classifier`] on the
//!   same hooks, and with the mapping tracepoints (`--kernel-mappings`) in a second run.
//! - [`short`]: short connections per second without observer and with watch in each mode
//!   (flow summaries only, the default, every event); [`overflow`]: a flow table smaller than
//!   the number of concurrent flows (evictions, exit status, memory); [`kernel_memory`]: the
//!   maps of a running watch and the flow table's bytes per flow.
//! - [`storage`]: bytes kept per connection; [`ring_buffer`]: drops in every observed run;
//!   [`targets`]: the promised figures, each with its must and its aim, against the measured
//!   ones.
//! - [`collector`]: `mptcp-probe collect` on loopback: uploads per second for SQLite and
//!   PostgreSQL, their latency, nothing lost or doubled, the aggregate page's render time.
//! - [`report`]: the typed report every part contributes to, as tables or as JSON.
//!
//! Every loop is bounded in count and time; the namespaces and files go away on return or panic.
//! Figures that could not be computed are NaN, which the JSON carries as `null`.

mod bpf_stats;
mod bulk;
mod collector;
mod daemon;
mod empty_classifier;
mod host;
mod kernel_memory;
mod observer;
mod overflow;
mod per_packet;
mod report;
mod ring_buffer;
mod short;
mod stats;
mod storage;
mod targets;
mod traffic;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mptcp_probe_tests::lab::{ifname, Lab};

use self::report::{Mode, Report, ReportConfig};

/// Sizes and counts of one bench run.
#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    /// Repetitions of every bulk configuration and of the short-connection runs (those at most 7).
    pub repeat: u32,
    /// Length of each bulk transfer.
    pub seconds: f64,
    pub prog_repeat: u32,
    pub prog_rounds: u32,
    pub short_connections: u32,
    pub lru_flows: u32,
    pub lru_table: u32,
}

impl Config {
    pub fn full() -> Self {
        Self {
            quick: false,
            repeat: 5,
            seconds: 3.0,
            prog_repeat: 2_000_000,
            prog_rounds: 3,
            short_connections: 2000,
            lru_flows: 500,
            lru_table: 64,
        }
    }

    pub fn quick() -> Self {
        Self {
            quick: true,
            repeat: 3,
            seconds: 0.3,
            prog_repeat: 20_000,
            prog_rounds: 1,
            short_connections: 50,
            lru_flows: 100,
            lru_table: 64,
        }
    }
}

/// The binaries under test.
#[derive(Clone, Debug)]
pub struct Bins {
    pub probe: PathBuf,
    pub peer: PathBuf,
}

const SINK_PORT: u16 = 5201;
/// The sink pinned to [`PIN_CPU`], for the one-CPU runs.
const PINNED_SINK_PORT: u16 = 5202;
const PIN_CPU: &str = "0";
/// Short connections go from a client on one CPU to a sink on the other, as between two hosts.
/// Left to the scheduler, a run of 2000 connections (a quarter of a second) found its client and
/// server on one CPU (16,000 connections/s, within 2.5 % from run to run), on two (9,500/s,
/// within 5 %) or moving between them, so that runs without any observer, back to back, ranged
/// from 6,200 to 10,000 per second and the ratios to them from 0.78 to 1.28. The observer is not
/// pinned.
const SHORT_SINK_PORT: u16 = 5203;
const SHORT_CLIENT_CPU: &str = "0";
const SHORT_SERVER_CPU: &str = "1";
/// The client's TCP send-buffer limit. With the default maximum (4 MiB) most MPTCP bulk runs
/// over this path collapse to 20–120 MB/s on Linux 6.18 (spurious MPTCP-level retransmissions;
/// 8 of 10 runs here without any observer); 2 MiB: 8 of 8, 1 MiB: 1 of 8, 512 KiB: none of 8, at
/// the speed of plain TCP.
const CLIENT_WMEM: &str = "net.ipv4.tcp_wmem=4096 16384 524288";
/// The client's ephemeral ports. Every short connection leaves its client port in TIME_WAIT for
/// 60 s, and the short-connection runs open 8000 connections per repetition: with the default
/// range (and connect() preferring even ports), the fourth repetition already found most ports
/// waiting, connect() scanned for a free one, and the rate fell from 7000 to 250 per second,
/// with or without an observer. A wider range, and TIME_WAIT ports reused after a second
/// (`tcp_tw_reuse_delay`, longer than watch's end-of-flow grace of 750 ms, so that a reused
/// port is a new flow to it).
const CLIENT_PORTS: [&str; 2] = ["net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"];
const LAB_PATH: &str = "client c-m1 -> router -> server, veth, one subflow";
const GB: f64 = 1e9;
/// A run is collapsed below this share of the median throughput without observer.
const COLLAPSE_SHARE: f64 = 0.1;
/// The warm-up transfer at most this long: the first transfer in a fresh namespace is slower.
const WARM_UP: Duration = Duration::from_millis(500);

/// `cargo xtask bench`.
pub fn run(quick: bool, json_out: bool, repeat: Option<u32>, collector_only: bool) -> anyhow::Result<()> {
    if !mptcp_probe_tests::is_root() {
        bail!("cargo xtask bench needs root (it creates network namespaces and loads eBPF programs)");
    }
    {
        // With --json, stdout carries the report alone: set-up and build talk on stderr.
        let _quiet = json_out.then(StdoutToStderr::new);
        crate::setup::run(&crate::setup::SetupOpts { with_test_tools: false })?;
        crate::build_release()?;
    }
    let release = mptcp_probe_tests::target_dir().join("release");
    let bins = Bins { probe: release.join("mptcp-probe"), peer: release.join("mptcp-peer") };
    let mut cfg = if quick { Config::quick() } else { Config::full() };
    if let Some(n) = repeat {
        cfg.repeat = n.clamp(1, 50);
    }
    if collector_only {
        let c = collector::run(&cfg)?;
        if json_out {
            println!("{}", serde_json::to_string(&c).context("serialising the report")?);
        } else {
            print!("{}", report::render_collector(&c));
        }
        return Ok(());
    }
    let report = bench(&cfg, &bins)?;
    if json_out {
        println!("{}", serde_json::to_string(&report).context("serialising the report")?);
    } else {
        print!("{}", report::render(&report));
    }
    Ok(())
}

/// Points this process's stdout (and so its children's) at stderr until dropped.
struct StdoutToStderr {
    saved: i32,
}

impl StdoutToStderr {
    fn new() -> Self {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        // SAFETY: duplicating and redirecting the process's own standard descriptors.
        let saved = unsafe { libc::dup(1) };
        // SAFETY: as above.
        unsafe { libc::dup2(2, 1) };
        Self { saved }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if self.saved >= 0 {
            // SAFETY: restoring the descriptor saved in new().
            unsafe {
                libc::dup2(self.saved, 1);
                libc::close(self.saved);
            }
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// Runs every part of the bench, in order, and returns the report.
pub fn bench(cfg: &Config, bins: &Bins) -> anyhow::Result<Report> {
    for (what, p) in [("mptcp-probe", &bins.probe), ("mptcp-peer", &bins.peer)] {
        if !p.exists() {
            bail!("{what} is not built at {} (cargo build --release)", p.display());
        }
    }
    if host::cpus() < 2 {
        bail!(
            "the bench needs two CPUs (it runs short connections' client on CPU {SHORT_CLIENT_CPU} and their \
             server on CPU {SHORT_SERVER_CPU}); this machine offers {}",
            host::cpus()
        );
    }
    let started = Instant::now();
    let load_at_start = host::loadavg();
    let source = host::Source::read();
    let lab = Lab::up();
    for kv in [CLIENT_WMEM].iter().chain(&CLIENT_PORTS) {
        lab.c.sysctl(kv);
    }
    let dir = host::WorkDir::new()?;
    let _sink = traffic::start_sink(&lab, bins, SINK_PORT, None)?;
    let _pinned_sink = traffic::start_sink(&lab, bins, PINNED_SINK_PORT, Some(PIN_CPU))?;
    let _short_sink = traffic::start_sink(&lab, bins, SHORT_SINK_PORT, Some(SHORT_SERVER_CPU))?;
    progress(format!(
        "lab up; load average {load_at_start:.2}; {} repetitions of {} s transfers",
        cfg.repeat, cfg.seconds
    ));
    traffic::blast(&lab, bins, cfg.seconds.min(WARM_UP.as_secs_f64()), false, None)?;

    let bulk = bulk::run(&lab, &dir, bins, cfg)?;
    progress("per-packet cost with BPF_PROG_TEST_RUN");
    let prog_test_run = per_packet::run(&lab, bins, cfg)?;
    progress(
        "kernel run-time counters during a bulk run (bpf_stats_enabled=1), an empty classifier alongside",
    );
    let default_run = bpf_stats::Measure { extra: &[], floor: true };
    let bpf_stats = bpf_stats::run(&lab, &dir, bins, cfg, &bulk.collapse, &default_run)?;
    progress("the same with the mapping tracepoints (--kernel-mappings)");
    let mappings_run = bpf_stats::Measure { extra: &["--kernel-mappings"], floor: false };
    let bpf_stats_kernel_mappings = bpf_stats::run(&lab, &dir, bins, cfg, &bulk.collapse, &mappings_run)?;
    let short_runs = short::run(&lab, &dir, bins, cfg)?;
    let short_connections = short::ShortConnections::of(&short_runs, cfg);
    progress("kernel run-time counters during short connections, each watch mode");
    let short_connection_run_time = bpf_stats::short_connections(&lab, &dir, bins, cfg)?;
    let flow_table_overflow = overflow::run(&lab, &dir, bins, cfg)?;
    progress("kernel memory of a running watch");
    let kernel_memory = kernel_memory::run(&lab, &dir, bins)?;
    progress("the daemon: idle, short connections with and without it, scrapes");
    let daemon = daemon::run(&lab, bins, cfg)?;
    drop(lab);
    let collector = collector::run(cfg)?;

    let per_packet = per_packet::PerPacket::of(&prog_test_run);
    let real_vs_test_run = bpf_stats::RealVsTestRun::of(&bpf_stats, &per_packet);
    let accounting = bpf_stats::Accounting::of(
        &bpf_stats,
        bulk.figures.probe.observer_process_cpu_s_per_gb.median,
        &bulk.ratios.extra_cpu_s_per_gb,
    );
    let storage = storage::Storage::of(
        &bulk.runs,
        &bulk.figures,
        &short_connections.watch.default.kept_bytes_per_connection,
    );
    let ring_runs = ring_buffer::bulk_runs(&bulk.runs)
        .chain(ring_buffer::short_runs(&short_runs))
        .chain([ring_buffer::overflow_run(flow_table_overflow.ringbuf_dropped_events)])
        .collect();
    let ring_buffer = ring_buffer::RingBuffer::of(ring_runs, prog_test_run.counters.ringbuf_dropped_events);
    let targets = targets::judge(&targets::Inputs {
        per_packet: &per_packet,
        real_vs_test: &real_vs_test_run,
        bpf_stats: &bpf_stats,
        ratios: &bulk.ratios,
        short: &short_connections,
        storage: &storage,
        memory: &kernel_memory,
        ring: &ring_buffer,
        daemon: &daemon,
        collector: &collector,
    });
    Ok(Report {
        mode: if cfg.quick { Mode::Quick } else { Mode::Full },
        source,
        kernel: host::kernel_release(),
        cpus: host::cpus(),
        load_average_at_start: load_at_start,
        config: ReportConfig {
            repetitions: cfg.repeat,
            transfer_seconds: cfg.seconds,
            pinned_cpu: PIN_CPU,
            short_connection_cpus: [SHORT_CLIENT_CPU, SHORT_SERVER_CPU],
            prog_repeat: cfg.prog_repeat,
            prog_rounds: cfg.prog_rounds,
            short_connections: cfg.short_connections,
            lru_flows: cfg.lru_flows,
            lru_table: cfg.lru_table,
            path: LAB_PATH,
            observed_interface: ifname::C1,
            client_sysctls: [CLIENT_WMEM, CLIENT_PORTS[0], CLIENT_PORTS[1]],
            capture_dir: dir.kind,
            collapsed_below_mbytes_per_s: bulk.collapse.below_mbytes_per_s,
        },
        bulk: bulk.figures,
        ratios: bulk.ratios,
        prog_test_run,
        per_packet,
        bpf_stats,
        bpf_stats_kernel_mappings,
        real_vs_test_run,
        accounting,
        short_connections,
        short_connection_run_time,
        flow_table_overflow,
        kernel_memory,
        storage,
        ring_buffer,
        daemon,
        collector,
        targets,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::bench::{BenchFrame, TcProgram};
    use serde_json::Value;

    use super::*;

    /// Figures every report must carry as numbers that are finite and not negative; the JSON
    /// keys docs/bench.md and its readers rely on.
    const FIGURES: &[&str] = &[
        "/bulk/off/throughput_mbytes_per_s/median",
        "/bulk/probe/throughput_mbytes_per_s/median",
        "/bulk/tcpdump_header/throughput_mbytes_per_s/median",
        "/bulk/tcpdump_full/throughput_mbytes_per_s/median",
        "/bulk/off/cpu_s_per_gb/median",
        "/bulk/off/one_cpu/mbytes_per_s/median",
        "/bulk/probe/one_cpu/mbytes_per_s/median",
        "/bulk/off/cpu_s_per_gb_two_cpus/median",
        "/bulk/probe/cpu_s_per_gb/median",
        "/bulk/tcpdump_header/cpu_s_per_gb/median",
        "/bulk/tcpdump_full/cpu_s_per_gb/median",
        "/bulk/probe/observer_process_cpu_s_per_gb/median",
        "/bulk/tcpdump_header/observer_process_cpu_s_per_gb/median",
        "/bulk/tcpdump_header/file_bytes_per_gb/median",
        "/bulk/tcpdump_full/file_bytes_per_gb/median",
        "/bulk/probe/collapsed_runs",
        "/ratios/throughput_over_off/probe/median",
        "/ratios/one_cpu_throughput_over_off/probe/median",
        "/ratios/throughput_probe_over_tcpdump_header/median",
        "/ratios/throughput_probe_over_tcpdump_full/median",
        "/per_packet/frames/1/programs/tc_egress/ns/median",
        "/bpf_stats/total_cpu_ms_per_gb",
        "/bpf_stats/tc_cpu_ms_per_gb",
        "/bpf_stats/tracepoints_cpu_ms_per_gb",
        "/bpf_stats/tracepoints_over_tc",
        "/bpf_stats/empty_classifier/tc_egress/ns_per_run",
        "/bpf_stats/empty_classifier/tc_ingress/ns_per_run",
        "/bpf_stats_kernel_mappings/tracepoints_cpu_ms_per_gb",
        "/real_vs_test_run/programs/tc_egress/gross_ratio",
        "/real_vs_test_run/programs/tc_ingress/net_ratio",
        "/accounting/total_s_per_gb",
        "/short_connections/off/per_second/median",
        "/daemon/idle_cpu_ms_per_s",
        "/daemon/idle_rss_kib",
        "/daemon/peak_rss_kib",
        "/daemon/per_second/median",
        "/daemon/over_off/median",
        "/daemon/process_cpu_ms_per_connection/median",
        "/daemon/scrape/ms/median",
        "/daemon/scrape/bytes",
        "/collector/backends/0/per_second",
        "/collector/backends/0/latency_ms_p99",
        "/collector/backends/0/page_ms/median",
        "/collector/backends/1/per_second",
        "/collector/backends/1/page_ms/median",
        "/short_connections/watch/flows_only/per_second/median",
        "/short_connections/watch/flows_only/over_off/median",
        "/short_connections/watch/default/over_off/median",
        "/short_connections/watch/events/over_off/median",
        "/short_connections/off/cpu_ms_per_connection/median",
        "/short_connections/watch/events/cpu_ms_per_connection/median",
        "/short_connections/watch/events/watch_process_cpu_ms_per_connection/median",
        "/short_connections/watch/default/kept_bytes_per_connection/total/median",
        "/short_connections/watch/default/session_bytes/median",
        "/short_connection_run_time/flows_only/tc_us_per_connection",
        "/short_connection_run_time/events/tracepoints_us_per_connection",
        "/flow_table_overflow/flows_created",
        "/flow_table_overflow/flow_table_evictions",
        "/flow_table_overflow/peak_rss_kib",
        "/kernel_memory/bytes_per_flow",
        "/kernel_memory/marginal_bytes_per_flow",
        "/kernel_memory/maps_memlock_bytes",
        "/storage/probe_kept_bytes/total",
        "/storage/clean_connection/total/median",
        "/storage/tcpdump_header_bytes_same_transfer",
        "/storage/tcpdump_full_bytes_same_transfer",
        "/storage/probe_over_tcpdump_header",
        "/ring_buffer/dropped_total",
        "/ring_buffer/max_events_per_s",
    ];

    /// Differences of noisy medians: finite, any sign.
    const SIGNED: &[&str] = &[
        "/ratios/extra_cpu_s_per_gb/probe/median",
        "/ratios/extra_cpu_s_per_gb/tcpdump_header/median",
        "/ratios/extra_cpu_s_per_gb/tcpdump_full/median",
        "/real_vs_test_run/programs/tc_egress/net_ratio",
    ];

    /// `$MPTCP_PROBE_BIN` and `$MPTCP_PEER_BIN` (set by `cargo xtask test`), else the builds.
    fn bins() -> Bins {
        Bins { probe: mptcp_probe_tests::probe_bin(), peer: mptcp_probe_tests::peer_bin() }
    }

    /// The quick bench runs end to end and produces every figure; no threshold is checked.
    #[test]
    fn quick_bench_produces_every_figure() {
        mptcp_probe_tests::skip_unless_e2e!();
        let r = bench(&Config::quick(), &bins()).expect("the quick bench runs");
        let v = serde_json::to_value(&r).expect("the report serialises");
        let bad = |p: &str, why: &str| -> ! { panic!("figure {p} {why}; report:\n{v:#}") };
        for p in FIGURES {
            match v.pointer(p).and_then(Value::as_f64) {
                Some(x) if x.is_finite() && x >= 0.0 => {}
                _ => bad(p, "is missing, negative or not a number"),
            }
        }
        for p in SIGNED {
            if !v.pointer(p).and_then(Value::as_f64).is_some_and(f64::is_finite) {
                bad(p, "is missing or not a number");
            }
        }
        for kind in BenchFrame::ALL {
            let frame =
                r.prog_test_run.frame(kind).unwrap_or_else(|| bad(kind.as_str(), "has no test-run figures"));
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if !positive(frame.empty_ns) {
                bad(&format!("{}/empty_ns", kind.as_str()), "is not positive");
            }
            for prog in TcProgram::ALL {
                if !frame.programs.get(&prog).is_some_and(|c| positive(c.ns)) {
                    bad(
                        &format!("{}/programs/{}/ns", kind.as_str(), prog.name()),
                        "is missing or not positive",
                    );
                }
            }
        }
        for prog in TcProgram::ALL {
            if r.bpf_stats.programs.get(prog.name()).map_or(0, |p| p.runs) == 0 {
                bad(&format!("/bpf_stats/programs/{}/runs", prog.name()), "is missing or zero");
            }
        }
        assert_eq!(r.flow_table_overflow.exit_code, Some(0), "watch must survive the overflow: {v:#}");
        for t in &r.targets {
            // A ratio of two extra-CPU figures is undefined when tiny runs measure no extra CPU
            // for tcpdump; its parts are checked above (SIGNED).
            let ratio_of_noise = t.figure.starts_with("extra CPU");
            assert!(t.measured.is_finite() || ratio_of_noise, "target without a measured figure: {t:?}");
        }
        let clean = &r.short_connections.watch.default;
        assert_eq!(clean.troubled_flows, 0, "a short connection of the bench is clean: {v:#}");
        // The daemon counted every short connection, and all it saw when its scrapes were timed.
        assert_eq!(r.daemon.counted_share_min, 1.0, "{v:#}");
        assert_eq!(r.daemon.scrape.connections_seen, u64::from(Config::quick().short_connections), "{v:#}");
        // The collector answered and stored every upload once, on each backend.
        for b in &r.collector.backends {
            assert_eq!((b.failed, b.lost, b.doubled), (0, 0, 0), "{v:#}");
            assert_eq!(b.retried_same_answer, b.retried, "{v:#}");
        }
    }
}
