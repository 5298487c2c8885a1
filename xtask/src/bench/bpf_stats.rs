//! The kernel's run-time counters (`kernel.bpf_stats_enabled`) of every program `watch` holds,
//! over one two-CPU bulk run.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::Context as _;
use mptcp_probe_common::counters;
use mptcp_probe_tests::lab::Lab;
use serde::{Deserialize, Serialize};

use super::{
    bulk::Collapse,
    host::WorkDir,
    observer::{self, Obs},
    stats::ratio,
    traffic::{self, Transfer},
    Bins, Config,
};

/// A collapsed transfer would show the programs' cost on too little traffic: this many tries.
const ATTEMPTS: u32 = 3;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BpfStats {
    pub mbytes_per_s: f64,
    pub bytes: f64,
    /// By program name (`id N` when bpftool does not name it).
    pub programs: BTreeMap<String, ProgramRunTime>,
    pub total_cpu_ms_per_gb: f64,
    pub packets_inspected: Option<u64>,
    pub ringbuf_dropped_events: Option<u64>,
    pub attempts: u32,
}

/// One program's runs over the transfer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProgramRunTime {
    pub runs: u64,
    pub run_time_ns: u64,
    pub ns_per_run: f64,
    pub runs_per_gb: f64,
    pub cpu_ms_per_gb: f64,
}

impl ProgramRunTime {
    fn of(runs: u64, run_time_ns: u64, gb: f64) -> Self {
        Self {
            runs,
            run_time_ns,
            ns_per_run: ratio(run_time_ns as f64, runs as f64),
            runs_per_gb: runs as f64 / gb,
            cpu_ms_per_gb: run_time_ns as f64 / 1e6 / gb,
        }
    }
}

/// Runs [`measure_once`] until its transfer is not collapsed, at most [`ATTEMPTS`] times.
pub fn run(
    lab: &Lab,
    dir: &WorkDir,
    bins: &Bins,
    cfg: &Config,
    collapse: &Collapse,
) -> anyhow::Result<BpfStats> {
    let mut attempt = 1;
    loop {
        let mut s = measure_once(lab, dir, bins, cfg.seconds)?;
        s.attempts = attempt;
        if attempt == ATTEMPTS || collapse.is_healthy(s.mbytes_per_s) {
            return Ok(s);
        }
        attempt += 1;
    }
}

fn measure_once(lab: &Lab, dir: &WorkDir, bins: &Bins, seconds: f64) -> anyhow::Result<BpfStats> {
    let _stats = Enabled::enable()?;
    let r = observer::start(Obs::Probe, &lab.c, &dir.path, bins, &[], false)?.expect("an observer");
    let s0 = prog_stats(r.pid);
    let t = traffic::blast(lab, bins, seconds, false, Some(r.pid));
    let s1 = prog_stats(r.pid);
    let names = prog_names();
    let stopped = observer::stop(r);
    let t = t?;
    let mut s = figures(&t, &s0, &s1, &names);
    s.packets_inspected = stopped.kernel_counter(counters::PACKETS_INSPECTED);
    s.ringbuf_dropped_events = stopped.ringbuf_dropped();
    Ok(s)
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
            (name, ProgramRunTime::of(c1.saturating_sub(c0), t1.saturating_sub(t0), gb))
        })
        .collect();
    let total_ns: u64 = programs.values().map(|p| p.run_time_ns).sum();
    BpfStats {
        mbytes_per_s: t.mbytes_per_s,
        bytes: t.bytes,
        total_cpu_ms_per_gb: total_ns as f64 / 1e6 / gb,
        programs,
        ..Default::default()
    }
}

/// The run counters of every BPF program `pid` holds, by program id (from fdinfo).
fn prog_stats(pid: u32) -> RunCounters {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return out };
    for e in dir.flatten() {
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok());
        // Program fds have run counters; link fds name a prog_id too but have none.
        if let (Some(id), Some(t), Some(c)) = (field("prog_id:"), field("run_time_ns:"), field("run_cnt:")) {
            out.insert(id as u32, (t, c));
        }
    }
    out
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
        assert!((p.cpu_ms_per_gb - 0.008).abs() < 1e-12);
        assert!(s.programs["id 9"].ns_per_run.is_nan(), "a program that never ran has no time per run");
        assert!((s.total_cpu_ms_per_gb - 0.008).abs() < 1e-12);
    }
}
