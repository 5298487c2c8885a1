//! The figures the design promises, each with what it must reach and what it aims at, against
//! what was measured.

use std::fmt;

use mptcp_probe_model::bench::BenchFrame;
use serde::{Serialize, Serializer};

use super::{
    bpf_stats::{BpfStats, RealVsTestRun},
    bulk::Ratios,
    collector::CollectorFigures,
    daemon::DaemonFigures,
    kernel_memory::KernelMemory,
    per_packet::{PerPacket, Worst, OTHER_STEADY_FRAMES},
    ring_buffer::RingBuffer,
    short::{ShortConnections, ShortWatch},
    stats::Spread,
    storage::Storage,
};

/// What a figure is checked against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
    Exactly(f64),
}

impl Bound {
    fn holds(self, x: f64) -> bool {
        match self {
            Bound::AtLeast(b) => x >= b,
            Bound::AtMost(b) => x <= b,
            Bound::Exactly(b) => x == b,
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::AtLeast(b) => write!(f, ">= {b}"),
            Bound::AtMost(b) => write!(f, "<= {b}"),
            Bound::Exactly(b) => write!(f, "{b}"),
        }
    }
}

impl Serialize for Bound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    pub figure: &'static str,
    pub must: Bound,
    /// None: the figure has no aim beyond its must.
    pub aim: Option<Bound>,
    /// NaN when nothing was measured.
    pub measured: f64,
    /// The figure over the repetitions (or rounds) it is the median of, where it is one.
    pub spread: Option<Spread>,
    /// What the figure is made of, in words.
    pub detail: String,
    /// None when nothing was measured.
    pub must_met: Option<bool>,
    /// None when nothing was measured or there is no aim.
    pub aim_met: Option<bool>,
}

impl Target {
    pub(super) fn judge(figure: &'static str, must: Bound, aim: Option<Bound>, measured: f64) -> Self {
        let met = |b: Bound| measured.is_finite().then(|| b.holds(measured));
        Self {
            figure,
            must,
            aim,
            measured,
            spread: None,
            detail: String::new(),
            must_met: met(must),
            aim_met: aim.and_then(met),
        }
    }

    fn of_spread(figure: &'static str, must: Bound, aim: Option<Bound>, s: Spread) -> Self {
        Self { spread: Some(s), ..Self::judge(figure, must, aim, s.median) }
    }

    fn detail(mut self, d: String) -> Self {
        self.detail = d;
        self
    }
}

/// The parts of the report the targets speak of.
pub struct Inputs<'a> {
    pub per_packet: &'a PerPacket,
    pub real_vs_test: &'a RealVsTestRun,
    pub bpf_stats: &'a BpfStats,
    pub ratios: &'a Ratios,
    pub short: &'a ShortConnections,
    pub storage: &'a Storage,
    pub memory: &'a KernelMemory,
    pub ring: &'a RingBuffer,
    pub daemon: &'a DaemonFigures,
    pub collector: &'a CollectorFigures,
}

/// `x` with `prec` decimals, `-` when not measured.
fn n(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "-".into()
    }
}

fn per_packet(figure: &'static str, worst: Option<Worst>, also: String) -> Target {
    use Bound::AtMost;
    match worst {
        Some(w) => Target::of_spread(figure, AtMost(40.0), Some(AtMost(20.0)), w.net_ns).detail(format!(
            "{} on {}{also}",
            w.program.name(),
            w.frame.as_str()
        )),
        None => Target::judge(figure, AtMost(40.0), Some(AtMost(20.0)), f64::NAN),
    }
}

/// Every target, in the order of the table.
pub fn judge(i: &Inputs) -> Vec<Target> {
    let mut targets = per_packet_targets(i);
    targets.push(real_traffic(i.real_vs_test));
    targets.push(tracepoints(i.bpf_stats));
    targets.extend(cpu_and_throughput(i.ratios));
    targets.extend(short_connections(i.short));
    targets.push(storage(i.storage, i.short));
    targets.push(kernel_memory(i.memory));
    targets.push(ring_drops(i.ring));
    targets.push(daemon_connections(i.daemon));
    targets.extend(collector(i.collector));
    targets
}

fn per_packet_targets(i: &Inputs) -> Vec<Target> {
    let others: Vec<String> = OTHER_STEADY_FRAMES
        .iter()
        .filter_map(|k| i.per_packet.frame(*k)?.worse())
        .map(|w| format!("{} {} ns", w.frame.as_str(), n(w.net_ns.median, 1)))
        .collect();
    vec![
        per_packet(
            "DSS data segment, ns over the empty classifier (test run, worse direction)",
            i.per_packet.frame(BenchFrame::DataDss).and_then(|f| f.worse()),
            String::new(),
        ),
        per_packet(
            "every other steady frame (pure ACK, plain TCP, IPv6 DSS), ns over the empty classifier",
            i.per_packet.worst_of(&OTHER_STEADY_FRAMES),
            format!(" (worse directions: {})", others.join(", ")),
        ),
    ]
}

fn real_traffic(real_vs_test: &RealVsTestRun) -> Target {
    use Bound::AtMost;
    const REAL: &str =
        "TC programs on real traffic (bpf_stats ns/run) / their test-run ns, each over an empty classifier";
    match real_vs_test.worst() {
        Some((p, c)) => Target::judge(REAL, AtMost(1.5), Some(AtMost(1.0)), c.net_ratio).detail(format!(
            "worse: {} on {}, {} - {} ns/run on real traffic vs {} - {} in the test run (gross {}x)",
            p.name(),
            c.frame.as_str(),
            n(c.real_ns_per_run, 1),
            n(c.real_empty_ns_per_run, 1),
            n(c.test_run_ns, 1),
            n(c.test_run_empty_ns, 1),
            n(c.gross_ratio, 2),
        )),
        None => Target::judge(REAL, AtMost(1.5), Some(AtMost(1.0)), f64::NAN)
            .detail("no empty classifier measured on real traffic".into()),
    }
}

fn tracepoints(b: &BpfStats) -> Target {
    use Bound::AtMost;
    Target::judge(
        "tracepoint CPU per GB / the TC programs'",
        AtMost(0.1),
        Some(AtMost(0.01)),
        b.tracepoints_over_tc,
    )
    .detail(format!(
        "tracepoints {} ms/GB, TC programs {} ms/GB (bulk run, default mode)",
        n(b.tracepoints_cpu_ms_per_gb, 4),
        n(b.tc_cpu_ms_per_gb, 3)
    ))
}

fn cpu_and_throughput(r: &Ratios) -> Vec<Target> {
    use Bound::*;
    let extra = &r.extra_cpu_s_per_gb;
    let spread = |s: &Spread| format!("{} [{}–{}] s/GB", n(s.median, 4), n(s.min, 4), n(s.max, 4));
    vec![
        Target::of_spread(
            "throughput, probe / none, one saturated CPU",
            AtLeast(0.98),
            Some(AtLeast(0.99)),
            r.one_cpu_throughput_over_off.probe,
        )
        .detail("per repetition".into()),
        Target::of_spread(
            "throughput, probe / none, two CPUs",
            AtLeast(0.98),
            Some(AtLeast(0.99)),
            r.throughput_over_off.probe,
        )
        .detail("per repetition".into()),
        Target::judge(
            "extra CPU per GB, probe / tcpdump -s 128 -w",
            AtMost(0.5),
            Some(AtMost(0.2)),
            r.extra_cpu_probe_over_tcpdump_header,
        )
        .detail(format!(
            "one CPU, per repetition: probe {}, tcpdump -s 128 -w {}",
            spread(&extra.probe),
            spread(&extra.tcpdump_header),
        )),
    ]
}

fn short_connections(short: &ShortConnections) -> Vec<Target> {
    use Bound::AtLeast;
    let rates = |mode: &ShortWatch| {
        format!("{} vs {} connections/s", n(mode.per_second.median, 0), n(short.off.per_second.median, 0))
    };
    let (flows, events) = (&short.watch.flows_only, &short.watch.events);
    vec![
        Target::of_spread(
            "short connections/s, probe / none (watch --flows-only --json)",
            AtLeast(0.95),
            Some(AtLeast(0.98)),
            flows.over_off,
        )
        .detail(rates(flows)),
        Target::of_spread(
            "short connections/s, probe / none (watch --events --json)",
            AtLeast(0.85),
            None,
            events.over_off,
        )
        .detail(rates(events)),
    ]
}

fn storage(storage: &Storage, short: &ShortConnections) -> Target {
    use Bound::AtMost;
    let (clean, default) = (&storage.clean_connection, &short.watch.default);
    Target::of_spread(
        "bytes kept per clean connection (watch --json --pcap FILE)",
        AtMost(1024.0),
        Some(AtMost(512.0)),
        clean.total,
    )
    .detail(format!(
        "summary {} + events {} + trace packets {} B; {} of the summaries troubled; {} B per \
         session not counted",
        n(clean.summary.median, 0),
        n(clean.events.median, 0),
        n(clean.pcapng_packets.median, 0),
        default.troubled_flows,
        n(default.session_bytes.median, 0),
    ))
}

fn kernel_memory(memory: &KernelMemory) -> Target {
    use Bound::AtMost;
    Target::judge(
        "kernel memory per tracked flow, bytes",
        AtMost(256.0),
        None,
        memory.marginal_bytes_per_flow,
    )
    .detail(match (&memory.flow_table, &memory.smaller_flow_table) {
        (Some(t), Some(s)) => format!(
            "FLOWS memlock {} B at {} entries, {} B at {} (key {} B, value {} B); {} B fixed; \
                 memlock / entries {}",
            t.memlock_bytes,
            t.max_entries,
            s.memlock_bytes,
            s.max_entries,
            t.key_size,
            t.value_size,
            n(memory.flow_table_fixed_bytes, 0),
            n(memory.bytes_per_flow, 3),
        ),
        _ => "the FLOWS map was not found at both sizes".into(),
    })
}

fn daemon_connections(d: &DaemonFigures) -> Target {
    use Bound::AtLeast;
    Target::of_spread("short connections/s, daemon / none", AtLeast(0.95), Some(AtLeast(0.98)), d.over_off)
        .detail(format!(
            "{} vs {} connections/s; counted {} of them (worst run)",
            n(d.per_second.median, 0),
            n(d.off_per_second.median, 0),
            n(d.counted_share_min, 3)
        ))
}

/// The collector: nothing lost, doubled or refused on either backend; SQLite's upload rate (a
/// collector takes one report per host and check interval: 100 a second serves 360,000 hosts
/// checking hourly); the aggregate page a person waits for, with 100,000 reports stored.
pub fn collector(c: &CollectorFigures) -> Vec<Target> {
    use Bound::{AtLeast, AtMost, Exactly};
    let wrong: u64 = c
        .backends
        .iter()
        .map(|b| u64::from(b.failed) + b.lost + b.doubled + u64::from(b.retried - b.retried_same_answer))
        .sum();
    let measured = if c.backends.is_empty() { f64::NAN } else { wrong as f64 };
    let each: Vec<String> = c
        .backends
        .iter()
        .map(|b| {
            format!(
                "{}: {} uploads, {} failed, {} lost, {} doubled, {} of {} retries answered alike",
                b.backend, b.uploads, b.failed, b.lost, b.doubled, b.retried_same_answer, b.retried
            )
        })
        .collect();
    let mut out = vec![Target::judge(
        "collector uploads failed, lost or doubled (SQLite and PostgreSQL)",
        Exactly(0.0),
        Some(Exactly(0.0)),
        measured,
    )
    .detail(each.join("; "))];
    let sqlite = c.backend("sqlite");
    let rate = sqlite.map_or(f64::NAN, |b| b.per_second);
    out.push(
        Target::judge("collector uploads/s, SQLite, 64 at once", AtLeast(100.0), Some(AtLeast(1000.0)), rate)
            .detail(c.backend("postgres").map_or_else(String::new, |p| {
                format!(
                    "PostgreSQL {} /s; p99 {} ms (SQLite)",
                    n(p.per_second, 0),
                    n(sqlite.map_or(f64::NAN, |b| b.latency_ms_p99), 1)
                )
            })),
    );
    let slowest = c.backends.iter().max_by(|a, b| a.page_ms.median.total_cmp(&b.page_ms.median));
    out.push(match slowest {
        Some(b) => Target::of_spread(
            "aggregate page render, ms, slower backend",
            AtMost(1000.0),
            Some(AtMost(250.0)),
            b.page_ms,
        )
        .detail(format!("{} with {} reports stored", b.backend, b.page_reports)),
        None => Target::judge(
            "aggregate page render, ms, slower backend",
            AtMost(1000.0),
            Some(AtMost(250.0)),
            f64::NAN,
        ),
    });
    out
}

fn ring_drops(ring: &RingBuffer) -> Target {
    use Bound::Exactly;
    Target::judge(
        "ring-buffer drops at the heaviest load",
        Exactly(0.0),
        Some(Exactly(0.0)),
        ring.dropped_total as f64,
    )
    .detail(match ring.heaviest() {
        Some(h) => format!(
            "all observed runs; heaviest: {} at {} events/s, {} dropped",
            h.run,
            n(h.events_per_s, 0),
            h.dropped.map_or_else(|| "-".into(), |d| d.to_string())
        ),
        None => "all observed runs".into(),
    })
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::bench::{ProgBench, TcProgram};

    use super::*;
    use crate::bench::{
        bpf_stats::{ProgramKind, ProgramRunTime},
        bulk::Observed,
        collector::BackendFigures,
        kernel_memory::MapMemory,
        observer::{Kept, PerWatchMode},
        per_packet::tests::frame,
        ring_buffer::RingRun,
        short::{KeptSpread, ShortWatch},
    };

    #[test]
    fn must_and_aim_are_judged_apart_and_nothing_measured_is_neither() {
        use Bound::*;
        let t = Target::judge("t", AtMost(40.0), Some(AtMost(20.0)), 27.0);
        assert_eq!((t.must_met, t.aim_met), (Some(true), Some(false)));
        let t = Target::judge("t", AtLeast(0.98), Some(AtLeast(0.99)), 0.97);
        assert_eq!((t.must_met, t.aim_met), (Some(false), Some(false)));
        let t = Target::judge("t", AtLeast(0.85), None, 0.9);
        assert_eq!((t.must_met, t.aim_met), (Some(true), None));
        let t = Target::judge("t", AtMost(1.0), Some(AtMost(0.5)), f64::NAN);
        assert_eq!((t.must_met, t.aim_met), (None, None));
        let t = Target::judge("t", Exactly(0.0), Some(Exactly(0.0)), 0.0);
        assert_eq!((t.must_met, t.aim_met), (Some(true), Some(true)));
        let v = serde_json::to_value(Target::judge("t", AtMost(1024.0), None, f64::NAN)).unwrap();
        assert!(v["measured"].is_null() && v["must_met"].is_null() && v["aim"].is_null());
        assert_eq!(v["must"], "<= 1024");
    }

    /// Inputs where every figure is as given, the rest empty.
    struct Fixture {
        per_packet: PerPacket,
        real: RealVsTestRun,
        stats: BpfStats,
        ratios: Ratios,
        short: ShortConnections,
        storage: Storage,
        memory: KernelMemory,
        ring: RingBuffer,
        daemon: DaemonFigures,
        collector: CollectorFigures,
    }

    impl Fixture {
        fn new() -> Self {
            let per_packet = PerPacket::of(&ProgBench {
                frames: vec![
                    frame(BenchFrame::SynMpCapable, [14.0; 3], [200.0; 3], [190.0; 3]),
                    frame(BenchFrame::DataDss, [14.0; 3], [41.0; 3], [42.0; 3]),
                    frame(BenchFrame::PureAck, [14.0; 3], [40.0; 3], [39.0; 3]),
                    frame(BenchFrame::TcpData, [14.0; 3], [30.0; 3], [31.0; 3]),
                    frame(BenchFrame::Ipv6Dss, [14.0; 3], [55.0; 3], [41.0; 3]),
                ],
                ..Default::default()
            });
            let run = |kind, ns_per_run, cpu_ms_per_gb| ProgramRunTime {
                kind,
                ns_per_run,
                cpu_ms_per_gb,
                ..Default::default()
            };
            let mut stats = BpfStats {
                programs: [
                    ("tc_egress".to_string(), run(ProgramKind::Tc, 63.0, 1.2)),
                    ("tc_ingress".to_string(), run(ProgramKind::Tc, 40.0, 0.8)),
                ]
                .into(),
                empty_classifier: [(TcProgram::TcEgress, run(ProgramKind::Tc, 20.0, 0.0))].into(),
                ..Default::default()
            };
            stats.tracepoints_cpu_ms_per_gb = 0.01;
            stats.tc_cpu_ms_per_gb = 2.0;
            stats.tracepoints_over_tc = 0.005;
            let real = RealVsTestRun::of(&stats, &per_packet);
            let spread = |v: &[f64]| Spread::of(v);
            let ratios = Ratios {
                throughput_over_off: Observed { probe: spread(&[0.97, 0.99, 1.01]), ..Default::default() },
                one_cpu_throughput_over_off: Observed {
                    probe: spread(&[0.985, 0.986]),
                    ..Default::default()
                },
                extra_cpu_s_per_gb: Observed {
                    probe: spread(&[0.004]),
                    tcpdump_header: spread(&[0.016]),
                    ..Default::default()
                },
                extra_cpu_probe_over_tcpdump_header: 0.25,
                ..Default::default()
            };
            let mut short = ShortConnections::default();
            short.off.per_second = spread(&[7000.0]);
            short.watch = PerWatchMode::from_fn(|_| ShortWatch::default());
            short.watch.flows_only.over_off = spread(&[0.96, 0.97, 0.99]);
            short.watch.events.over_off = spread(&[0.8]);
            let storage = Storage {
                clean_connection: KeptSpread::of(&[Kept {
                    events: 0.0,
                    summary: 380.0,
                    pcapng_packets: 300.0,
                }]),
                ..Default::default()
            };
            let memory = KernelMemory {
                marginal_bytes_per_flow: 272.0,
                bytes_per_flow: 272.0146,
                flow_table_fixed_bytes: 960.0,
                flow_table: Some(MapMemory {
                    key_size: 44,
                    value_size: 160,
                    max_entries: 65536,
                    memlock_bytes: 17_826_752,
                    ..Default::default()
                }),
                smaller_flow_table: Some(MapMemory {
                    max_entries: 4096,
                    memlock_bytes: 1_115_072,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let ring = RingBuffer::of(
                vec![RingRun {
                    run: "short connections, watch --events --json".into(),
                    events_per_s: 9e4,
                    dropped: Some(0),
                }],
                0,
            );
            let daemon = DaemonFigures {
                per_second: Spread::of(&[7600.0]),
                off_per_second: Spread::of(&[8000.0]),
                over_off: Spread::of(&[0.95, 0.96]),
                counted_share_min: 1.0,
                ..Default::default()
            };
            let backend = |name, per_second, page| BackendFigures {
                backend: name,
                uploads: 100,
                retried: 10,
                retried_same_answer: 10,
                stored: 100,
                per_second,
                page_ms: Spread::of(&[page]),
                ..Default::default()
            };
            let collector = CollectorFigures {
                config: String::new(),
                backends: vec![backend("sqlite", 1200.0, 120.0), backend("postgres", 800.0, 300.0)],
            };
            Self { per_packet, real, stats, ratios, short, storage, memory, ring, daemon, collector }
        }

        fn judge(&self) -> Vec<Target> {
            judge(&Inputs {
                per_packet: &self.per_packet,
                real_vs_test: &self.real,
                bpf_stats: &self.stats,
                ratios: &self.ratios,
                short: &self.short,
                storage: &self.storage,
                memory: &self.memory,
                ring: &self.ring,
                daemon: &self.daemon,
                collector: &self.collector,
            })
        }
    }

    fn find<'a>(ts: &'a [Target], starts: &str) -> &'a Target {
        ts.iter().find(|t| t.figure.starts_with(starts)).unwrap_or_else(|| panic!("no target {starts:?}"))
    }

    #[test]
    fn every_target_of_the_table_is_judged_from_its_figure() {
        let ts = Fixture::new().judge();
        assert_eq!(ts.len(), 16);
        let dss = find(&ts, "DSS data segment");
        assert_eq!((dss.measured, dss.must_met, dss.aim_met), (28.0, Some(true), Some(false)));
        assert!(dss.detail.starts_with("tc_egress on data_dss"), "{}", dss.detail);
        let other = find(&ts, "every other steady frame");
        assert_eq!((other.measured, other.must_met), (41.0, Some(false)), "the IPv6 frame on ingress");
        assert!(other.detail.starts_with("tc_ingress on ipv6_dss"), "{}", other.detail);
        assert!(other.detail.contains("pure_ack 26.0 ns"), "{}", other.detail);
        let real = find(&ts, "TC programs on real traffic");
        assert_eq!((real.must_met, real.aim_met), (Some(false), Some(false)));
        assert!((real.measured - 43.0 / 28.0).abs() < 1e-12, "egress: 63 - 20 against 42 - 14");
        assert!(real.detail.contains("63.0 - 20.0 ns/run on real traffic vs 42.0 - 14.0"), "{}", real.detail);
        let tp = find(&ts, "tracepoint CPU");
        assert_eq!((tp.must_met, tp.aim_met), (Some(true), Some(true)));
        let one = find(&ts, "throughput, probe / none, one saturated CPU");
        assert_eq!((one.must_met, one.aim_met), (Some(true), Some(false)));
        assert_eq!(one.spread.map(|s| s.n), Some(2));
        let two = find(&ts, "throughput, probe / none, two CPUs");
        assert_eq!((two.measured, two.must_met, two.aim_met), (0.99, Some(true), Some(true)));
        let cpu = find(&ts, "extra CPU per GB");
        assert_eq!((cpu.must_met, cpu.aim_met), (Some(true), Some(false)));
        let flows = find(&ts, "short connections/s, probe / none (watch --flows-only");
        assert_eq!((flows.measured, flows.must_met, flows.aim_met), (0.97, Some(true), Some(false)));
        let events = find(&ts, "short connections/s, probe / none (watch --events");
        assert_eq!((events.must_met, events.aim_met), (Some(false), None));
        let kept = find(&ts, "bytes kept per clean connection");
        assert_eq!((kept.measured, kept.must_met, kept.aim_met), (680.0, Some(true), Some(false)));
        let mem = find(&ts, "kernel memory per tracked flow");
        assert_eq!((mem.measured, mem.must_met, mem.aim_met), (272.0, Some(false), None));
        assert!(
            mem.detail.contains("key 44 B, value 160 B); 960 B fixed; memlock / entries 272.015"),
            "{}",
            mem.detail
        );
        let ring = find(&ts, "ring-buffer drops");
        assert_eq!((ring.must_met, ring.aim_met), (Some(true), Some(true)));
        assert!(ring.detail.contains("watch --events --json at 90000 events/s"), "{}", ring.detail);
        let lost = find(&ts, "collector uploads failed, lost or doubled (SQLite and PostgreSQL)");
        assert_eq!((lost.measured, lost.must_met), (0.0, Some(true)));
        let rate = find(&ts, "collector uploads/s, SQLite, 64 at once");
        assert_eq!((rate.measured, rate.must_met, rate.aim_met), (1200.0, Some(true), Some(true)));
        let page = find(&ts, "aggregate page render, ms, slower backend");
        assert_eq!((page.measured, page.must_met, page.aim_met), (300.0, Some(true), Some(false)));
        assert!(page.detail.starts_with("postgres"), "{}", page.detail);
        let daemon = find(&ts, "short connections/s, daemon / none");
        assert_eq!((daemon.measured, daemon.must_met, daemon.aim_met), (0.955, Some(true), Some(false)));
        assert!(daemon.detail.contains("7600 vs 8000 connections/s; counted 1.000"), "{}", daemon.detail);
    }

    #[test]
    fn a_bench_that_measured_nothing_meets_nothing_and_misses_nothing() {
        let empty = Inputs {
            per_packet: &PerPacket::default(),
            real_vs_test: &RealVsTestRun::default(),
            bpf_stats: &BpfStats::default(),
            ratios: &Ratios::default(),
            short: &ShortConnections::default(),
            storage: &Storage::default(),
            memory: &KernelMemory { marginal_bytes_per_flow: f64::NAN, ..Default::default() },
            ring: &RingBuffer::of(Vec::new(), 0),
            daemon: &DaemonFigures::default(),
            collector: &CollectorFigures::default(),
        };
        let bpf_default = BpfStats { tracepoints_over_tc: f64::NAN, ..Default::default() };
        let ratios = Ratios {
            extra_cpu_probe_over_tcpdump_header: f64::NAN,
            throughput_over_off: Observed::default(),
            ..Default::default()
        };
        let ts = judge(&Inputs { bpf_stats: &bpf_default, ratios: &ratios, ..empty });
        for t in ts.iter().filter(|t| !t.figure.starts_with("ring-buffer")) {
            assert_eq!((t.must_met, t.aim_met), (None, None), "{t:?}");
        }
    }
}
