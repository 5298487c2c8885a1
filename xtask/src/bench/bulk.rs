//! Bulk MPTCP transfers under each observer: throughput on both CPUs, and CPU per GB with
//! everything pinned to one CPU; per-observer medians and spreads, collapsed runs, and the
//! ratios between observers, each taken within a repetition (the runs of one repetition follow
//! each other, so drift between repetitions cancels) and then as median and spread.

use std::path::Path;

use mptcp_probe_tests::lab::Lab;
use serde::Serialize;

use super::{
    host::WorkDir,
    observer::{self, Obs, PerObserver, Stopped},
    progress,
    stats::{median, ratio, Spread},
    traffic::{self, Transfer},
    Bins, Config, COLLAPSE_SHARE,
};

/// One observed bulk run.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkRun {
    /// The repetition it belongs to.
    pub rep: u32,
    pub obs: Obs,
    /// Everything on one CPU (the CPU-cost runs).
    pub pinned: bool,
    pub t: Transfer,
    pub stopped: Option<Stopped>,
}

/// Everything the bulk runs measured.
pub struct Bulk {
    pub runs: Vec<BulkRun>,
    pub collapse: Collapse,
    pub figures: PerObserver<ObserverFigures>,
    pub ratios: Ratios,
}

/// Where a run counts as collapsed: below [`COLLAPSE_SHARE`] of the median throughput without
/// observer (on two CPUs, and on one).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Collapse {
    pub below_mbytes_per_s: f64,
    pub pinned_below_mbytes_per_s: f64,
}

impl Collapse {
    pub fn of(runs: &[BulkRun]) -> Self {
        let off = |pinned| median(&series(runs, Obs::Off, pinned, |r| r.t.mbytes_per_s)) * COLLAPSE_SHARE;
        Self { below_mbytes_per_s: off(false), pinned_below_mbytes_per_s: off(true) }
    }

    /// A two-CPU throughput at or above the threshold (never, when there is no threshold).
    pub fn is_healthy(&self, mbytes_per_s: f64) -> bool {
        mbytes_per_s >= self.below_mbytes_per_s
    }

    pub fn is_collapsed(&self, mbytes_per_s: f64) -> bool {
        mbytes_per_s < self.below_mbytes_per_s
    }

    pub fn is_pinned_collapsed(&self, mbytes_per_s: f64) -> bool {
        mbytes_per_s < self.pinned_below_mbytes_per_s
    }
}

/// Each configuration on both CPUs (throughput), then pinned to one CPU (CPU per GB), `repeat`
/// times, interleaved so that drift hits every configuration alike.
pub fn run(lab: &Lab, dir: &WorkDir, bins: &Bins, cfg: &Config) -> anyhow::Result<Bulk> {
    let mut runs: Vec<BulkRun> = Vec::new();
    let mut skipped_full = None;
    for rep in 0..cfg.repeat {
        for pinned in [false, true] {
            for obs in Obs::ALL {
                if obs == Obs::TcpdumpFull {
                    // Room for a full capture at 3 GB/s, above anything this path reaches.
                    let need = (cfg.seconds * 3e9) as u64 + 1_000_000_000;
                    if !dir.has_room_for(need) {
                        skipped_full =
                            Some(format!("less than {} GB free for the capture", need / 1_000_000_000));
                        continue;
                    }
                }
                let r = bulk_run(lab, &dir.path, bins, obs, cfg.seconds, pinned, rep)?;
                progress(format!(
                    "bulk {}/{} {:<18} {:<9} {:>6.0} MB/s  CPU {:.2} s = {:.3} s/GB",
                    rep + 1,
                    cfg.repeat,
                    obs.label(),
                    if pinned { "one CPU" } else { "two CPUs" },
                    r.t.mbytes_per_s,
                    r.t.cpu_s,
                    r.t.cpu_s_per_gb()
                ));
                runs.push(r);
            }
        }
    }
    let collapse = Collapse::of(&runs);
    let figures = PerObserver::from_fn(|obs| {
        let mut f = ObserverFigures::of(&runs, obs, &collapse);
        if obs == Obs::TcpdumpFull {
            f.skipped_runs.clone_from(&skipped_full);
        }
        f
    });
    let ratios = Ratios::of(&runs, &figures);
    Ok(Bulk { runs, collapse, figures, ratios })
}

fn bulk_run(
    lab: &Lab,
    dir: &Path,
    bins: &Bins,
    obs: Obs,
    seconds: f64,
    pinned: bool,
    rep: u32,
) -> anyhow::Result<BulkRun> {
    let running = observer::start(obs, &lab.c, dir, bins, &[], pinned)?;
    let res = traffic::blast(lab, bins, seconds, pinned, running.as_ref().map(|r| r.pid));
    let stopped = running.map(observer::stop);
    Ok(BulkRun { rep, obs, pinned, t: res?, stopped })
}

/// `f` of every run of `obs` on two CPUs (`pinned` false) or on one.
fn series(runs: &[BulkRun], obs: Obs, pinned: bool, f: impl Fn(&BulkRun) -> f64) -> Vec<f64> {
    runs.iter().filter(|r| r.obs == obs && r.pinned == pinned).map(f).collect()
}

/// `f(run of a, run of b)` for every repetition that has both (on two CPUs, or on one).
fn paired(runs: &[BulkRun], a: Obs, b: Obs, pinned: bool, f: impl Fn(&BulkRun, &BulkRun) -> f64) -> Vec<f64> {
    let of = |obs: Obs, rep: u32| runs.iter().find(|r| r.obs == obs && r.pinned == pinned && r.rep == rep);
    let mut reps: Vec<u32> = runs.iter().map(|r| r.rep).collect();
    reps.sort_unstable();
    reps.dedup();
    reps.into_iter().filter_map(|rep| Some(f(of(a, rep)?, of(b, rep)?))).collect()
}

/// `f` of what the run's observer left; 0 without observer.
fn observed(r: &BulkRun, f: impl Fn(&Stopped, &Transfer) -> f64) -> f64 {
    r.stopped.as_ref().map_or(0.0, |s| f(s, &r.t))
}

/// One observer's bulk figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ObserverFigures {
    pub label: &'static str,
    pub throughput_mbytes_per_s: Spread,
    pub throughput_runs: Vec<f64>,
    pub collapsed_runs: usize,
    pub collapsed_mbytes_per_s: Vec<f64>,
    pub throughput_healthy_median: f64,
    pub cpu_s_per_gb_two_cpus: Spread,
    pub observer_process_cpu_s_per_gb_two_cpus: Spread,
    pub one_cpu: OneCpu,
    pub cpu_s_per_gb: Spread,
    pub softirq_s_per_gb: Spread,
    pub observer_process_cpu_s_per_gb: Spread,
    pub file_bytes_per_gb: Spread,
    pub observer_peak_rss_kib: Spread,
    pub runs_not_mptcp: usize,
    /// tcpdump only: packets it reported dropped, all runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcpdump_dropped_packets: Option<u64>,
    /// Full capture only: why runs were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_runs: Option<String>,
}

/// The pinned runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OneCpu {
    pub mbytes_per_s: Spread,
    pub collapsed_runs: usize,
    /// Busy share of the pinned CPU, and of the others.
    pub cpu_busy_share: Spread,
    pub other_cpus_busy_share: Spread,
}

impl ObserverFigures {
    pub fn of(runs: &[BulkRun], obs: Obs, collapse: &Collapse) -> Self {
        let two = |f: fn(&BulkRun) -> f64| series(runs, obs, false, f);
        let one = |f: fn(&BulkRun) -> f64| series(runs, obs, true, f);
        let thr = two(|r| r.t.mbytes_per_s);
        let healthy: Vec<f64> = thr.iter().copied().filter(|x| collapse.is_healthy(*x)).collect();
        let collapsed: Vec<f64> = thr.iter().copied().filter(|x| collapse.is_collapsed(*x)).collect();
        let one_thr = one(|r| r.t.mbytes_per_s);
        Self {
            label: obs.label(),
            throughput_mbytes_per_s: Spread::of(&thr),
            collapsed_runs: collapsed.len(),
            collapsed_mbytes_per_s: collapsed,
            throughput_healthy_median: median(&healthy),
            throughput_runs: thr,
            cpu_s_per_gb_two_cpus: Spread::of(&two(|r| r.t.cpu_s_per_gb())),
            observer_process_cpu_s_per_gb_two_cpus: Spread::of(&two(|r| r.t.observer_cpu_s_per_gb())),
            one_cpu: OneCpu {
                mbytes_per_s: Spread::of(&one_thr),
                collapsed_runs: one_thr.iter().filter(|x| collapse.is_pinned_collapsed(**x)).count(),
                cpu_busy_share: Spread::of(&one(|r| ratio(r.t.cpu_s, r.t.seconds))),
                other_cpus_busy_share: Spread::of(&one(|r| ratio(r.t.other_cpus_s, r.t.seconds))),
            },
            cpu_s_per_gb: Spread::of(&one(|r| r.t.cpu_s_per_gb())),
            softirq_s_per_gb: Spread::of(&one(|r| ratio(r.t.softirq_s, r.t.gb()))),
            observer_process_cpu_s_per_gb: Spread::of(&one(|r| r.t.observer_cpu_s_per_gb())),
            file_bytes_per_gb: Spread::of(&two(|r| observed(r, |s, t| s.file_bytes as f64 / t.gb()))),
            observer_peak_rss_kib: Spread::of(&two(|r| observed(r, |s, _| s.peak_rss_kib as f64))),
            runs_not_mptcp: runs.iter().filter(|r| r.obs == obs && !r.t.is_mptcp).count(),
            tcpdump_dropped_packets: obs.is_tcpdump().then(|| {
                runs.iter().filter(|r| r.obs == obs).filter_map(|r| r.stopped.as_ref()?.tcpdump_dropped).sum()
            }),
            skipped_runs: None,
        }
    }
}

/// Each observer against no observer, and the probe against tcpdump, within each repetition.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ratios {
    /// Throughput on two CPUs over that of no observer in the same repetition.
    pub throughput_over_off: Observed<Spread>,
    /// The same on one saturated CPU.
    pub one_cpu_throughput_over_off: Observed<Spread>,
    pub throughput_probe_over_tcpdump_header: Spread,
    pub throughput_probe_over_tcpdump_full: Spread,
    /// Medians of the runs that did not collapse, probe over no observer.
    pub healthy_throughput_probe_over_off: f64,
    /// CPU s/GB on one CPU over that of no observer in the same repetition.
    pub cpu_over_off: Observed<Spread>,
    /// CPU s/GB on one CPU minus that of no observer in the same repetition: what observing adds.
    pub extra_cpu_s_per_gb: Observed<Spread>,
    /// Ratios of the medians of `extra_cpu_s_per_gb` (NaN when the base is not above zero).
    pub extra_cpu_probe_over_tcpdump_header: f64,
    pub extra_cpu_probe_over_tcpdump_full: f64,
    pub observer_process_cpu_probe_over_tcpdump_header: f64,
}

/// One `T` for each observer but none (the baseline the figures are taken against).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Observed<T> {
    pub probe: T,
    pub tcpdump_header: T,
    pub tcpdump_full: T,
}

impl<T> Observed<T> {
    fn from_fn(mut f: impl FnMut(Obs) -> T) -> Self {
        Self {
            probe: f(Obs::Probe),
            tcpdump_header: f(Obs::TcpdumpHeader),
            tcpdump_full: f(Obs::TcpdumpFull),
        }
    }

    /// None for no observer: it is the baseline.
    pub fn get(&self, obs: Obs) -> Option<&T> {
        match obs {
            Obs::Off => None,
            Obs::Probe => Some(&self.probe),
            Obs::TcpdumpHeader => Some(&self.tcpdump_header),
            Obs::TcpdumpFull => Some(&self.tcpdump_full),
        }
    }
}

impl Ratios {
    pub fn of(runs: &[BulkRun], f: &PerObserver<ObserverFigures>) -> Self {
        use Obs::*;
        let thr = |r: &BulkRun| r.t.mbytes_per_s;
        let cpu = |r: &BulkRun| r.t.cpu_s_per_gb();
        let over = |a, b, pinned, g: fn(&BulkRun) -> f64| {
            Spread::of(&paired(runs, a, b, pinned, |x, y| ratio(g(x), g(y))))
        };
        let extra = Observed::from_fn(|o| Spread::of(&paired(runs, o, Off, true, |x, y| cpu(x) - cpu(y))));
        let obs_cpu = |o| f.get(o).observer_process_cpu_s_per_gb.median;
        Self {
            throughput_over_off: Observed::from_fn(|o| over(o, Off, false, thr)),
            one_cpu_throughput_over_off: Observed::from_fn(|o| over(o, Off, true, thr)),
            throughput_probe_over_tcpdump_header: over(Probe, TcpdumpHeader, false, thr),
            throughput_probe_over_tcpdump_full: over(Probe, TcpdumpFull, false, thr),
            healthy_throughput_probe_over_off: ratio(
                f.probe.throughput_healthy_median,
                f.off.throughput_healthy_median,
            ),
            cpu_over_off: Observed::from_fn(|o| over(o, Off, true, cpu)),
            extra_cpu_probe_over_tcpdump_header: ratio(extra.probe.median, extra.tcpdump_header.median),
            extra_cpu_probe_over_tcpdump_full: ratio(extra.probe.median, extra.tcpdump_full.median),
            extra_cpu_s_per_gb: extra,
            observer_process_cpu_probe_over_tcpdump_header: ratio(obs_cpu(Probe), obs_cpu(TcpdumpHeader)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of `obs` at `mbytes_per_s` for one second, `cpu_s` busy, in repetition 0.
    pub fn run(obs: Obs, pinned: bool, mbytes_per_s: f64, cpu_s: f64) -> BulkRun {
        rep_run(0, obs, pinned, mbytes_per_s, cpu_s)
    }

    pub fn rep_run(rep: u32, obs: Obs, pinned: bool, mbytes_per_s: f64, cpu_s: f64) -> BulkRun {
        let bytes = mbytes_per_s * 1e6;
        let t = Transfer { bytes, seconds: 1.0, mbytes_per_s, is_mptcp: true, cpu_s, ..Default::default() };
        BulkRun { rep, obs, pinned, t, stopped: (obs != Obs::Off).then(Stopped::default) }
    }

    #[test]
    fn a_run_below_a_tenth_of_the_median_without_observer_is_collapsed() {
        let runs = vec![
            run(Obs::Off, false, 700.0, 1.0),
            run(Obs::Off, false, 680.0, 1.0),
            run(Obs::Off, false, 2100.0, 1.0),
            run(Obs::Off, true, 2000.0, 1.0),
            run(Obs::Probe, false, 69.0, 1.0),
            run(Obs::Probe, false, 70.0, 1.0),
            run(Obs::Probe, false, 650.0, 1.0),
            run(Obs::Probe, true, 150.0, 1.0),
        ];
        let c = Collapse::of(&runs);
        assert_eq!(c.below_mbytes_per_s, 70.0);
        assert_eq!(c.pinned_below_mbytes_per_s, 200.0);
        let f = ObserverFigures::of(&runs, Obs::Probe, &c);
        assert_eq!(f.collapsed_runs, 1, "70 MB/s is exactly at the threshold: healthy");
        assert_eq!(f.collapsed_mbytes_per_s, vec![69.0]);
        assert_eq!(f.throughput_healthy_median, 360.0);
        assert_eq!(f.throughput_mbytes_per_s.median, 70.0);
        assert_eq!(f.one_cpu.collapsed_runs, 1);
        assert_eq!(f.tcpdump_dropped_packets, None);
    }

    #[test]
    fn without_runs_without_observer_nothing_is_healthy_and_nothing_collapsed() {
        let runs = vec![run(Obs::Probe, false, 650.0, 1.0)];
        let c = Collapse::of(&runs);
        assert!(c.below_mbytes_per_s.is_nan());
        assert!(!c.is_healthy(650.0) && !c.is_collapsed(650.0));
    }

    #[test]
    fn extra_cpu_is_the_difference_to_no_observer_and_its_ratio_needs_a_positive_base() {
        let runs = vec![
            run(Obs::Off, true, 1000.0, 0.5),
            run(Obs::Probe, true, 1000.0, 0.52),
            run(Obs::TcpdumpHeader, true, 1000.0, 0.49),
            run(Obs::TcpdumpFull, true, 1000.0, 1.0),
            run(Obs::Off, false, 1000.0, 1.0),
            run(Obs::Probe, false, 990.0, 1.0),
        ];
        let c = Collapse::of(&runs);
        let figures = PerObserver::from_fn(|o| ObserverFigures::of(&runs, o, &c));
        let r = Ratios::of(&runs, &figures);
        let extra = &r.extra_cpu_s_per_gb;
        assert!((extra.probe.median - 0.02).abs() < 1e-9);
        assert!((extra.tcpdump_full.median - 0.5).abs() < 1e-9);
        assert!(extra.tcpdump_header.median < 0.0);
        assert!(r.extra_cpu_probe_over_tcpdump_header.is_nan(), "tcpdump's extra CPU is below zero");
        assert!((r.extra_cpu_probe_over_tcpdump_full - 0.04).abs() < 1e-9);
        assert!((r.throughput_over_off.probe.median - 0.99).abs() < 1e-9);
        assert_eq!(r.throughput_probe_over_tcpdump_header.n, 0, "no two-CPU tcpdump runs");
        assert!(r.throughput_probe_over_tcpdump_header.median.is_nan());
        assert!(r.extra_cpu_s_per_gb.get(Obs::Off).is_none());
    }

    #[test]
    fn ratios_are_taken_within_a_repetition_so_drift_between_repetitions_cancels() {
        // The host gets 20 % slower after the first repetition; the probe always costs 1 %.
        let mut runs = Vec::new();
        for (rep, speed) in [(0, 1.0), (1, 0.8), (2, 0.8)] {
            runs.push(rep_run(rep, Obs::Off, false, 2000.0 * speed, 1.0));
            runs.push(rep_run(rep, Obs::Probe, false, 1980.0 * speed, 1.0));
            runs.push(rep_run(rep, Obs::Off, true, 2000.0 * speed, 1.0));
            runs.push(rep_run(rep, Obs::Probe, true, 1980.0 * speed, 1.0));
        }
        // A repetition without its run without observer has no ratio.
        runs.push(rep_run(3, Obs::Probe, false, 100.0, 1.0));
        let c = Collapse::of(&runs);
        let figures = PerObserver::from_fn(|o| ObserverFigures::of(&runs, o, &c));
        let r = Ratios::of(&runs, &figures);
        let two = &r.throughput_over_off.probe;
        assert_eq!(two.n, 3);
        assert!((two.median - 0.99).abs() < 1e-9 && (two.max - 0.99).abs() < 1e-9, "{two:?}");
        assert!((r.one_cpu_throughput_over_off.probe.median - 0.99).abs() < 1e-9);
        // CPU per GB: 1 CPU s over 1.98 GB against 1 over 2 GB.
        assert!((r.cpu_over_off.probe.median - 2.0 / 1.98).abs() < 1e-9);
        assert_eq!(r.extra_cpu_s_per_gb.probe.n, 3);
    }
}
