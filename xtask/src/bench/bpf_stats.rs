//! The kernel's run-time counters (`kernel.bpf_stats_enabled`) of every program `watch` holds,
//! over one two-CPU bulk run, with an empty classifier on the same hooks as the floor; what the
//! tracepoints cost next to the TC programs; the TC programs on real traffic against their
//! test-run figures; and the programs' time per short connection in each watch mode.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::Context as _;
use mptcp_probe_common::counters;
use mptcp_probe_model::bench::{BenchFrame, TcProgram};
use mptcp_probe_tests::lab::{ifname, Lab};
use serde::{Deserialize, Serialize};

use super::{
    bulk::{Collapse, Observed},
    empty_classifier::{EmptyClassifier, Hook},
    host::{self, WorkDir},
    observer::{self, Obs, PerWatchMode, WatchMode},
    per_packet::PerPacket,
    progress,
    stats::{ratio, Spread},
    traffic::{self, ChurnShape, Transfer},
    Bins, Config,
};

/// Time for the last short connections' summaries (their end's grace period and watch's tick).
const SHORT_SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);
/// A collapsed transfer would show the programs' cost on too little traffic: this many tries.
const ATTEMPTS: u32 = 3;

/// What kind of kernel hook a program of watch is, by its name in the eBPF object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramKind {
    Tc,
    Tracepoint,
    Fentry,
    /// A program this table does not name.
    #[default]
    Other,
}

/// Every program of the observer's object (mptcp-probe-ebpf) that `watch` may attach.
const PROGRAM_KINDS: [(&str, ProgramKind); 11] = [
    (TcProgram::TcIngress.name(), ProgramKind::Tc),
    (TcProgram::TcEgress.name(), ProgramKind::Tc),
    ("tc_ingress_l3", ProgramKind::Tc),
    ("tc_egress_l3", ProgramKind::Tc),
    ("inet_sock_set_state", ProgramKind::Tracepoint),
    // The same, as a BTF tracepoint where the kernel allows one (the usual case).
    ("inet_sock_set_state_btf", ProgramKind::Tracepoint),
    ("tcp_send_reset", ProgramKind::Tracepoint),
    ("tcp_receive_reset", ProgramKind::Tracepoint),
    ("get_mapping_status", ProgramKind::Tracepoint),
    ("subflow_check_data_avail", ProgramKind::Tracepoint),
    ("mptcp_try_fallback", ProgramKind::Fentry),
];

impl ProgramKind {
    pub fn of(name: &str) -> Self {
        PROGRAM_KINDS.iter().find(|(n, _)| *n == name).map_or(ProgramKind::Other, |(_, k)| *k)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BpfStats {
    /// watch's options beyond the default mode's.
    pub watch_extra_args: Vec<&'static str>,
    pub mbytes_per_s: f64,
    pub bytes: f64,
    /// By program name (`id N` when bpftool does not name it).
    pub programs: BTreeMap<String, ProgramRunTime>,
    pub total_cpu_ms_per_gb: f64,
    pub tc_cpu_ms_per_gb: f64,
    /// Every program that is not a TC classifier: the tracepoints, and the fentry when it loads.
    pub tracepoints_cpu_ms_per_gb: f64,
    pub tracepoints_over_tc: f64,
    /// An empty classifier on the same hook as each TC program: the counters' own floor on real
    /// traffic. Empty when not measured.
    pub empty_classifier: BTreeMap<TcProgram, ProgramRunTime>,
    /// Why there is no floor, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_classifier_error: Option<String>,
    pub packets_inspected: Option<u64>,
    pub ringbuf_dropped_events: Option<u64>,
    pub attempts: u32,
}

/// One program's runs over the transfer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProgramRunTime {
    pub kind: ProgramKind,
    pub runs: u64,
    pub run_time_ns: u64,
    pub ns_per_run: f64,
    pub runs_per_gb: f64,
    pub cpu_ms_per_gb: f64,
}

impl ProgramRunTime {
    fn of(kind: ProgramKind, runs: u64, run_time_ns: u64, gb: f64) -> Self {
        Self {
            kind,
            runs,
            run_time_ns,
            ns_per_run: ratio(run_time_ns as f64, runs as f64),
            runs_per_gb: runs as f64 / gb,
            cpu_ms_per_gb: run_time_ns as f64 / 1e6 / gb,
        }
    }
}

/// The run-time measurement: `extra` options for watch, and whether to measure the floor.
pub struct Measure<'a> {
    pub extra: &'a [&'static str],
    pub floor: bool,
}

/// Runs [`measure_once`] until its transfer is not collapsed, at most [`ATTEMPTS`] times.
pub fn run(
    lab: &Lab,
    dir: &WorkDir,
    bins: &Bins,
    cfg: &Config,
    collapse: &Collapse,
    m: &Measure,
) -> anyhow::Result<BpfStats> {
    let mut attempt = 1;
    loop {
        let mut s = measure_once(lab, dir, bins, cfg.seconds, m)?;
        s.attempts = attempt;
        if attempt == ATTEMPTS || collapse.is_healthy(s.mbytes_per_s) {
            return Ok(s);
        }
        attempt += 1;
    }
}

/// An empty classifier's counters by the TC program whose hook it shares.
type FloorCounters = BTreeMap<TcProgram, (u64, u64)>;

fn hook_of(p: TcProgram) -> Hook {
    match p {
        TcProgram::TcIngress => Hook::Ingress,
        TcProgram::TcEgress => Hook::Egress,
    }
}

fn floor_counters(floor: Option<&EmptyClassifier>) -> FloorCounters {
    let Some(f) = floor else { return BTreeMap::new() };
    TcProgram::ALL.into_iter().filter_map(|p| Some((p, f.run_counters(hook_of(p))?))).collect()
}

fn measure_once(
    lab: &Lab,
    dir: &WorkDir,
    bins: &Bins,
    seconds: f64,
    m: &Measure,
) -> anyhow::Result<BpfStats> {
    let _stats = Enabled::enable()?;
    let r = observer::start(Obs::Probe, &lab.c, &dir.path, bins, m.extra, false)?.expect("an observer");
    // After watch: TCX runs it first, then the floor.
    let floor = m.floor.then(|| EmptyClassifier::attach(&lab.c.name, ifname::C1));
    let floor_error = match &floor {
        Some(Err(e)) => {
            progress(format!("no empty classifier next to the observer's: {e:#}"));
            Some(format!("{e:#}"))
        }
        _ => None,
    };
    let floor = floor.and_then(Result::ok);
    let (s0, f0) = (prog_stats(r.pid), floor_counters(floor.as_ref()));
    let t = traffic::blast(lab, bins, seconds, false, Some(r.pid));
    let (s1, f1) = (prog_stats(r.pid), floor_counters(floor.as_ref()));
    drop(floor);
    let names = prog_names();
    let stopped = observer::stop(r);
    let t = t?;
    let mut s = figures(&t, &s0, &s1, &names);
    s.watch_extra_args = m.extra.to_vec();
    s.empty_classifier = f1
        .iter()
        .map(|(p, (t1, c1))| {
            let (t0, c0) = f0.get(p).copied().unwrap_or((0, 0));
            (*p, ProgramRunTime::of(ProgramKind::Tc, c1.saturating_sub(c0), t1.saturating_sub(t0), t.gb()))
        })
        .collect();
    s.empty_classifier_error = floor_error;
    s.packets_inspected = stopped.kernel_counter(counters::PACKETS_INSPECTED);
    s.ringbuf_dropped_events = stopped.ringbuf_dropped();
    Ok(s)
}

/// One short-connection run per watch mode with the counters on (not one of the timed runs: the
/// counters add their clock reads to every program run).
pub fn short_connections(
    lab: &Lab,
    dir: &WorkDir,
    bins: &Bins,
    cfg: &Config,
) -> anyhow::Result<PerWatchMode<ConnectionRunTime>> {
    let mut out = PerWatchMode::<ConnectionRunTime>::default();
    for mode in WatchMode::ALL {
        let _stats = Enabled::enable()?;
        let r = observer::start_watch(mode, &lab.c, &dir.path, bins, &[])?;
        let shape = ChurnShape { count: cfg.short_connections, concurrent: None, hold_ms: None };
        let (s0, p0) = (prog_stats(r.pid), host::process_ticks(r.pid));
        let churn = traffic::churn(lab, bins, &shape);
        // watch summarises a flow after its end's grace period: its CPU until the last ones.
        std::thread::sleep(SHORT_SETTLE);
        let (s1, p1) = (prog_stats(r.pid), host::process_ticks(r.pid));
        let names = prog_names();
        observer::stop(r);
        let connections = churn?.connections.unwrap_or(0);
        let c = ConnectionRunTime::of(connections, &s0, &s1, &names, host::ticks_to_s(p0, p1));
        progress(format!(
            "run time per short connection, {:<26} TC {} µs, tracepoints {} µs, watch {} ms",
            mode.label(),
            c.tc_us_per_connection.round(),
            c.tracepoints_us_per_connection.round(),
            c.watch_process_ms_per_connection
        ));
        *out.get_mut(mode) = c;
    }
    Ok(out)
}

/// The programs' time per short connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConnectionRunTime {
    pub connections: u64,
    pub programs: BTreeMap<String, ProgramPerConnection>,
    pub tc_us_per_connection: f64,
    pub tracepoints_us_per_connection: f64,
    /// watch's own CPU (utime + stime) over the run.
    pub watch_process_ms_per_connection: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProgramPerConnection {
    pub kind: ProgramKind,
    pub runs_per_connection: f64,
    pub ns_per_run: f64,
    pub us_per_connection: f64,
}

impl ConnectionRunTime {
    fn of(
        connections: u64,
        before: &RunCounters,
        after: &RunCounters,
        names: &BTreeMap<u32, String>,
        process_s: f64,
    ) -> Self {
        let n = connections as f64;
        let programs: BTreeMap<String, ProgramPerConnection> = after
            .iter()
            .map(|(id, (t1, c1))| {
                let (t0, c0) = before.get(id).copied().unwrap_or((0, 0));
                let (ns, runs) = (t1.saturating_sub(t0) as f64, c1.saturating_sub(c0) as f64);
                let name = names.get(id).cloned().unwrap_or_else(|| format!("id {id}"));
                let p = ProgramPerConnection {
                    kind: ProgramKind::of(&name),
                    runs_per_connection: ratio(runs, n),
                    ns_per_run: ratio(ns, runs),
                    us_per_connection: ratio(ns / 1e3, n),
                };
                (name, p)
            })
            .collect();
        let us = |pick: &dyn Fn(ProgramKind) -> bool| -> f64 {
            programs
                .values()
                .filter(|p| pick(p.kind) && p.us_per_connection.is_finite())
                .map(|p| p.us_per_connection)
                .sum()
        };
        Self {
            connections,
            tc_us_per_connection: if n > 0.0 { us(&|k| k == ProgramKind::Tc) } else { f64::NAN },
            tracepoints_us_per_connection: if n > 0.0 { us(&|k| k != ProgramKind::Tc) } else { f64::NAN },
            programs,
            watch_process_ms_per_connection: ratio(process_s * 1e3, n),
        }
    }
}

/// (run_time_ns, run_cnt) by program id.
type RunCounters = BTreeMap<u32, (u64, u64)>;

/// The programs' figures over `t`, from their counters before and after it.
fn figures(
    t: &Transfer,
    before: &RunCounters,
    after: &RunCounters,
    names: &BTreeMap<u32, String>,
) -> BpfStats {
    let gb = t.gb();
    let programs: BTreeMap<String, ProgramRunTime> = after
        .iter()
        .map(|(id, (t1, c1))| {
            let (t0, c0) = before.get(id).copied().unwrap_or((0, 0));
            let name = names.get(id).cloned().unwrap_or_else(|| format!("id {id}"));
            let kind = ProgramKind::of(&name);
            (name, ProgramRunTime::of(kind, c1.saturating_sub(c0), t1.saturating_sub(t0), gb))
        })
        .collect();
    let ms_per_gb = |pick: &dyn Fn(ProgramKind) -> bool| {
        programs.values().filter(|p| pick(p.kind)).map(|p| p.run_time_ns).sum::<u64>() as f64 / 1e6 / gb
    };
    let tc = ms_per_gb(&|k| k == ProgramKind::Tc);
    let tracepoints = ms_per_gb(&|k| k != ProgramKind::Tc);
    BpfStats {
        mbytes_per_s: t.mbytes_per_s,
        bytes: t.bytes,
        total_cpu_ms_per_gb: ms_per_gb(&|_| true),
        tc_cpu_ms_per_gb: tc,
        tracepoints_cpu_ms_per_gb: tracepoints,
        tracepoints_over_tc: ratio(tracepoints, tc),
        programs,
        ..Default::default()
    }
}

/// The run counters of every BPF program `pid` holds, by program id (from fdinfo).
fn prog_stats(pid: u32) -> RunCounters {
    host::fdinfos(pid)
        .iter()
        .filter_map(|text| {
            let field = |k| host::fdinfo_field(text, k);
            // Program fds have run counters; link fds name a prog_id too but have none.
            Some((field("prog_id")? as u32, (field("run_time_ns")?, field("run_cnt")?)))
        })
        .collect()
}

/// The frame each TC program mostly sees in the bulk run, observed at the client: egress sends
/// the data segments, ingress receives the ACKs (DSS data ACK only).
pub const BULK_FRAMES: [(TcProgram, BenchFrame); 2] =
    [(TcProgram::TcEgress, BenchFrame::DataDss), (TcProgram::TcIngress, BenchFrame::PureAck)];

/// The TC programs on real traffic against their test runs on the frame each mostly sees.
/// Each side is taken over its own floor, an empty classifier measured the same way: the
/// counters add their clock reads to every run on real traffic (about 35 ns here), the test run
/// its loop (about 14 ns), and neither is the programs' work.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RealVsTestRun {
    pub programs: BTreeMap<TcProgram, ProgramRealVsTest>,
    /// The program with the larger `net_ratio`.
    pub worst: Option<TcProgram>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProgramRealVsTest {
    pub frame: BenchFrame,
    /// ns per run on real traffic (the run-time counters).
    pub real_ns_per_run: f64,
    /// ns per run in the test run (median of the rounds, counters off): the per-packet table.
    pub test_run_ns: f64,
    pub gross_ratio: f64,
    /// The empty classifier on the same hook on real traffic, and in the test run.
    pub real_empty_ns_per_run: f64,
    pub test_run_empty_ns: f64,
    /// Each minus its empty classifier: the program's own work.
    pub real_net_ns: f64,
    pub test_run_net_ns: f64,
    /// `real_net_ns / test_run_net_ns`: the figure judged.
    pub net_ratio: f64,
}

impl RealVsTestRun {
    pub fn of(stats: &BpfStats, per_packet: &PerPacket) -> Self {
        let programs: BTreeMap<TcProgram, ProgramRealVsTest> = BULK_FRAMES
            .iter()
            .filter_map(|&(p, frame)| {
                let f = per_packet.frame(frame)?;
                let test = f.programs.get(&p)?;
                let real = stats.programs.get(p.name()).map_or(f64::NAN, |r| r.ns_per_run);
                let real_empty = stats.empty_classifier.get(&p).map_or(f64::NAN, |r| r.ns_per_run);
                let real_net = real - real_empty;
                Some((
                    p,
                    ProgramRealVsTest {
                        frame,
                        real_ns_per_run: real,
                        test_run_ns: test.ns.median,
                        gross_ratio: ratio(real, test.ns.median),
                        real_empty_ns_per_run: real_empty,
                        test_run_empty_ns: f.empty_ns.median,
                        real_net_ns: real_net,
                        test_run_net_ns: test.net_ns.median,
                        net_ratio: ratio(real_net, test.net_ns.median),
                    },
                ))
            })
            .collect();
        let worst = programs
            .iter()
            .filter(|(_, c)| c.net_ratio.is_finite())
            .max_by(|a, b| a.1.net_ratio.total_cmp(&b.1.net_ratio))
            .map(|(p, _)| *p);
        Self { programs, worst }
    }

    pub fn worst(&self) -> Option<(TcProgram, &ProgramRealVsTest)> {
        let p = self.worst?;
        Some((p, &self.programs[&p]))
    }
}

/// The probe's extra CPU as the kernel counts it — its programs' run time (the two-CPU bulk run
/// with the counters on) and its process's CPU (the one-CPU runs), per GB — next to the extra
/// CPU measured as busy time on one CPU.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Accounting {
    pub programs_s_per_gb: f64,
    pub watch_process_s_per_gb: f64,
    pub total_s_per_gb: f64,
    pub measured_extra_s_per_gb: f64,
    pub tcpdump_header_measured_extra_s_per_gb: f64,
    /// `total_s_per_gb` over tcpdump's measured extra CPU.
    pub total_over_tcpdump_header: f64,
}

impl Accounting {
    pub fn of(stats: &BpfStats, probe_process_s_per_gb: f64, extra: &Observed<Spread>) -> Self {
        let programs = stats.total_cpu_ms_per_gb / 1e3;
        let total = programs + probe_process_s_per_gb;
        Self {
            programs_s_per_gb: programs,
            watch_process_s_per_gb: probe_process_s_per_gb,
            total_s_per_gb: total,
            measured_extra_s_per_gb: extra.probe.median,
            tcpdump_header_measured_extra_s_per_gb: extra.tcpdump_header.median,
            total_over_tcpdump_header: ratio(total, extra.tcpdump_header.median),
        }
    }
}

/// One entry of `bpftool prog show --json`, the fields read of it.
#[derive(Deserialize)]
struct BpftoolProg {
    id: u32,
    name: Option<String>,
}

/// Program names by id, from bpftool (empty when it cannot be run).
fn prog_names() -> BTreeMap<u32, String> {
    let out = Command::new("bpftool").args(["prog", "show", "--json"]).output();
    let progs: Vec<BpftoolProg> =
        out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or_default();
    progs.into_iter().filter_map(|p| Some((p.id, p.name?))).collect()
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns `kernel.bpf_stats_enabled` on, and back to what it was on drop.
struct Enabled {
    prev: String,
}

impl Enabled {
    fn enable() -> anyhow::Result<Self> {
        let prev = fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
        fs::write(BPF_STATS, "1").context("setting kernel.bpf_stats_enabled=1")?;
        Ok(Self { prev: prev.trim().to_string() })
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.prev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::per_packet::tests::frame;
    use mptcp_probe_model::bench::ProgBench;

    #[test]
    fn run_time_is_the_counters_difference_per_gb_and_unnamed_programs_keep_their_id() {
        let t = Transfer { bytes: 5e8, mbytes_per_s: 1700.0, ..Default::default() };
        let before: RunCounters = [(7, (1_000, 10))].into();
        let after: RunCounters = [(7, (5_000, 30)), (9, (0, 0))].into();
        let names = [(7, "tc_egress".to_string())].into();
        let s = figures(&t, &before, &after, &names);
        let p = &s.programs["tc_egress"];
        assert_eq!((p.runs, p.run_time_ns, p.ns_per_run), (20, 4_000, 200.0));
        assert_eq!(p.runs_per_gb, 40.0);
        assert_eq!(p.kind, ProgramKind::Tc);
        assert!((p.cpu_ms_per_gb - 0.008).abs() < 1e-12);
        assert!(s.programs["id 9"].ns_per_run.is_nan(), "a program that never ran has no time per run");
        assert_eq!(s.programs["id 9"].kind, ProgramKind::Other);
        assert!((s.total_cpu_ms_per_gb - 0.008).abs() < 1e-12);
    }

    #[test]
    fn a_short_connection_costs_its_programs_runs_and_watchs_time_over_the_connections() {
        let before: RunCounters = [(1, (1_000_000, 10_000))].into();
        let after: RunCounters = [(1, (3_000_000, 30_000)), (2, (40_000_000, 10_000)), (3, (0, 0))].into();
        let names = [
            (1, "tc_egress".to_string()),
            (2, "inet_sock_set_state".to_string()),
            (3, "tcp_send_reset".to_string()),
        ]
        .into();
        let c = ConnectionRunTime::of(1000, &before, &after, &names, 0.05);
        let tc = &c.programs["tc_egress"];
        assert_eq!((tc.runs_per_connection, tc.ns_per_run, tc.us_per_connection), (20.0, 100.0, 2.0));
        assert_eq!(c.programs["inet_sock_set_state"].ns_per_run, 4000.0);
        assert_eq!((c.tc_us_per_connection, c.tracepoints_us_per_connection), (2.0, 40.0));
        assert_eq!(c.watch_process_ms_per_connection, 0.05);
        let none = ConnectionRunTime::of(0, &before, &after, &names, 0.0);
        assert!(none.tc_us_per_connection.is_nan() && none.watch_process_ms_per_connection.is_nan());
    }

    #[test]
    fn tracepoints_and_the_fentry_are_weighed_against_the_tc_programs() {
        let t = Transfer { bytes: 1e9, mbytes_per_s: 2000.0, ..Default::default() };
        let after: RunCounters = [
            (1, (6_000_000, 20_000)),
            (2, (2_000_000, 18_000)),
            (3, (50_000, 20)),
            (4, (30_000, 1)),
            (5, (0, 0)),
        ]
        .into();
        let names = [
            (1, "tc_egress".to_string()),
            (2, "tc_ingress_l3".to_string()),
            (3, "inet_sock_set_state".to_string()),
            (4, "mptcp_try_fallback".to_string()),
            (5, "subflow_check_data_avail".to_string()),
        ]
        .into();
        let s = figures(&t, &BTreeMap::new(), &after, &names);
        assert_eq!(s.tc_cpu_ms_per_gb, 8.0);
        assert!((s.tracepoints_cpu_ms_per_gb - 0.08).abs() < 1e-12);
        assert!((s.tracepoints_over_tc - 0.01).abs() < 1e-12);
        assert_eq!(s.programs["mptcp_try_fallback"].kind, ProgramKind::Fentry);
        assert_eq!(s.programs["subflow_check_data_avail"].kind, ProgramKind::Tracepoint);
        let idle = figures(&t, &BTreeMap::new(), &[(3, (50_000, 20))].into(), &names);
        assert!(idle.tracepoints_over_tc.is_nan(), "no TC time: no ratio");
    }

    #[test]
    fn the_kernel_counts_the_programs_and_the_process_against_the_measured_extra_cpu() {
        let stats = BpfStats { total_cpu_ms_per_gb: 4.0, ..Default::default() };
        let extra = Observed {
            probe: Spread::of(&[0.006]),
            tcpdump_header: Spread::of(&[0.016]),
            tcpdump_full: Spread::default(),
        };
        let a = Accounting::of(&stats, 0.001, &extra);
        assert!((a.total_s_per_gb - 0.005).abs() < 1e-12);
        assert!((a.total_over_tcpdump_header - 0.3125).abs() < 1e-12);
        assert_eq!(a.measured_extra_s_per_gb, 0.006);
    }

    #[test]
    fn real_traffic_is_set_against_the_frame_each_program_mostly_sees() {
        let per_packet = PerPacket::of(&ProgBench {
            frames: vec![
                frame(BenchFrame::DataDss, [14.0; 3], [41.0; 3], [42.0; 3]),
                frame(BenchFrame::PureAck, [14.0; 3], [40.0; 3], [39.0; 3]),
            ],
            ..Default::default()
        });
        let run = |ns_per_run| ProgramRunTime { kind: ProgramKind::Tc, ns_per_run, ..Default::default() };
        let stats = BpfStats {
            programs: [("tc_egress".to_string(), run(84.0)), ("tc_ingress".to_string(), run(50.0))].into(),
            empty_classifier: [(TcProgram::TcEgress, run(21.0)), (TcProgram::TcIngress, run(20.0))].into(),
            ..Default::default()
        };
        let r = RealVsTestRun::of(&stats, &per_packet);
        let egress = &r.programs[&TcProgram::TcEgress];
        assert_eq!((egress.frame, egress.test_run_ns, egress.gross_ratio), (BenchFrame::DataDss, 42.0, 2.0));
        assert_eq!((egress.real_net_ns, egress.test_run_net_ns, egress.net_ratio), (63.0, 28.0, 2.25));
        let ingress = &r.programs[&TcProgram::TcIngress];
        assert_eq!((ingress.frame, ingress.test_run_ns), (BenchFrame::PureAck, 40.0));
        assert_eq!(r.worst().map(|(p, _)| p), Some(TcProgram::TcEgress));
        let no_floor =
            RealVsTestRun::of(&BpfStats { empty_classifier: BTreeMap::new(), ..stats }, &per_packet);
        let e = &no_floor.programs[&TcProgram::TcEgress];
        assert_eq!(e.gross_ratio, 2.0);
        assert!(e.net_ratio.is_nan(), "without the floor there is no net figure");
        assert_eq!(no_floor.worst, None, "nothing to judge without the floor");
    }
}
