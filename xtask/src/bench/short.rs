//! Short MPTCP connections (connect, 1 byte each way, close) per second, without `watch` and
//! with it in each [`WatchMode`]: the rate against no observer's in the same repetition, CPU per
//! connection, watch's own CPU, events per second and the bytes watch keeps per connection.

use std::{collections::BTreeMap, time::Duration};

use anyhow::bail;
use mptcp_probe_tests::lab::Lab;
use serde::Serialize;

use super::{
    host::{self, CpuStat, WorkDir},
    observer::{self, Kept, PerWatchMode, Stopped, WatchMode},
    progress,
    stats::{ratio, Spread},
    traffic::{self, ChurnShape},
    Bins, Config,
};

/// At most this many repetitions, whatever `--repeat` says (each leaves 8000 client ports in
/// TIME_WAIT; see [`super::CLIENT_PORTS`]).
const MAX_REPETITIONS: u32 = 7;
/// Time for the last flows to end (FIN both ways and the grace period) before watch stops.
const SETTLE: Duration = Duration::from_millis(1500);
/// The runs of a repetition: no observer, then watch in each mode. Each repetition starts one
/// further along, so that no configuration always runs first or last.
const ORDER: [Option<WatchMode>; 4] =
    [None, Some(WatchMode::FlowsOnly), Some(WatchMode::Default), Some(WatchMode::Events)];

/// One run of `churn`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShortRun {
    pub rep: u32,
    /// None: no observer.
    pub watch: Option<WatchMode>,
    pub per_second: f64,
    pub cpu_ms_per_connection: f64,
    /// With watch: what it measured.
    pub watched: Option<Watched>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watched {
    pub process_cpu_ms_per_connection: f64,
    pub flows: u64,
    pub troubled_flows: u64,
    pub event_lines_per_connection: f64,
    pub events_per_s: f64,
    pub ringbuf_dropped: Option<u64>,
    pub kept: Kept,
    pub session_bytes: f64,
    /// Bytes per flow line of each of its fields.
    pub summary_fields: BTreeMap<String, f64>,
}

impl Watched {
    fn of(s: &Stopped, connections: f64, process_cpu_s: f64, churn_seconds: f64, per_run: f64) -> Self {
        Self {
            process_cpu_ms_per_connection: process_cpu_s * 1e3 / connections,
            flows: s.watch.flows,
            troubled_flows: s.watch.troubled_flows,
            event_lines_per_connection: s.watch.events as f64 / per_run,
            events_per_s: s.events_per_s(churn_seconds),
            ringbuf_dropped: s.ringbuf_dropped(),
            kept: s.kept_per_connection(per_run),
            session_bytes: s.session_bytes() as f64,
            summary_fields: s
                .watch
                .flow_field_bytes
                .iter()
                .map(|(k, b)| (k.clone(), ratio(*b as f64, s.watch.flows as f64)))
                .collect(),
        }
    }
}

fn label(w: Option<WatchMode>) -> &'static str {
    w.map_or("no observer", WatchMode::label)
}

pub fn run(lab: &Lab, dir: &WorkDir, bins: &Bins, cfg: &Config) -> anyhow::Result<Vec<ShortRun>> {
    let reps = cfg.repeat.min(MAX_REPETITIONS);
    let mut runs = Vec::new();
    for rep in 0..reps {
        let mut order = ORDER;
        order.rotate_left(rep as usize % ORDER.len());
        for w in order {
            let r = short_run(lab, dir, bins, cfg, rep, w)?;
            progress(format!(
                "short connections {}/{reps} {:<26} {:>8.0} /s",
                rep + 1,
                label(w),
                r.per_second
            ));
            runs.push(r);
        }
    }
    Ok(runs)
}

fn short_run(
    lab: &Lab,
    dir: &WorkDir,
    bins: &Bins,
    cfg: &Config,
    rep: u32,
    w: Option<WatchMode>,
) -> anyhow::Result<ShortRun> {
    let running = w.map(|m| observer::start_watch(m, &lab.c, &dir.path, bins, &[])).transpose()?;
    let shape = ChurnShape { count: cfg.short_connections, concurrent: None, hold_ms: None };
    let t0 = running.as_ref().map(|r| host::process_ticks(r.pid)).unwrap_or(0);
    let c0 = CpuStat::read("cpu");
    let res = traffic::churn(lab, bins, &shape);
    let c1 = CpuStat::read("cpu");
    let cpu_s = host::ticks_to_s(c0.busy, c1.busy);
    if running.is_some() {
        std::thread::sleep(SETTLE);
    }
    // Until the last summaries: watch summarises a flow after its end's grace period, mostly
    // after the connections are done.
    let process_cpu_s =
        host::ticks_to_s(t0, running.as_ref().map(|r| host::process_ticks(r.pid)).unwrap_or(t0));
    let stopped = running.map(observer::stop);
    let churn = res?;
    if churn.failed > 0 {
        bail!(
            "{} of {} short connections failed; first error: {}",
            churn.failed,
            cfg.short_connections,
            churn.first_error.as_deref().unwrap_or("none given")
        );
    }
    let connections = churn.connections.map_or(f64::NAN, |n| n as f64);
    let per_run = cfg.short_connections as f64;
    Ok(ShortRun {
        rep,
        watch: w,
        per_second: churn.per_second,
        cpu_ms_per_connection: cpu_s * 1e3 / connections,
        watched: stopped.map(|s| Watched::of(&s, connections, process_cpu_s, churn.seconds, per_run)),
    })
}

/// What watch keeps per connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KeptSpread {
    pub events: Spread,
    pub summary: Spread,
    pub pcapng_packets: Spread,
    pub total: Spread,
}

impl KeptSpread {
    pub fn of(kept: &[Kept]) -> Self {
        let of = |f: fn(&Kept) -> f64| Spread::of(&kept.iter().map(f).collect::<Vec<_>>());
        Self {
            events: of(|k| k.events),
            summary: of(|k| k.summary),
            pcapng_packets: of(|k| k.pcapng_packets),
            total: of(Kept::total),
        }
    }
}

/// The runs without observer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShortOff {
    pub per_second: Spread,
    pub cpu_ms_per_connection: Spread,
}

/// The runs with watch in one mode.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShortWatch {
    pub command: &'static str,
    pub per_second: Spread,
    /// Connections per second over no observer's in the same repetition.
    pub over_off: Spread,
    pub cpu_ms_per_connection: Spread,
    pub watch_process_cpu_ms_per_connection: Spread,
    pub flow_summaries_per_run: Spread,
    /// Summaries of connections where something went wrong, all runs (a short connection of
    /// this bench is clean: 0 expected).
    pub troubled_flows: u64,
    pub event_lines_per_connection: Spread,
    pub events_per_s: Spread,
    /// None when a run's watch printed no counters.
    pub ringbuf_dropped_events: Option<u64>,
    pub kept_bytes_per_connection: KeptSpread,
    /// Written once per watch session (counters line, the trace's header blocks): not per
    /// connection.
    pub session_bytes: Spread,
    /// What a flow summary line is made of: bytes of each field (with its key), median of the
    /// runs.
    pub summary_field_bytes: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShortConnections {
    pub connections_per_run: u32,
    pub repetitions: u32,
    pub off: ShortOff,
    pub watch: PerWatchMode<ShortWatch>,
}

impl ShortWatch {
    fn of(runs: &[ShortRun], mode: WatchMode) -> Self {
        let mine: Vec<&ShortRun> = runs.iter().filter(|r| r.watch == Some(mode)).collect();
        let watched: Vec<&Watched> = mine.iter().filter_map(|r| r.watched.as_ref()).collect();
        let run = |f: fn(&ShortRun) -> f64| Spread::of(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
        let watch = |f: fn(&Watched) -> f64| Spread::of(&watched.iter().map(|w| f(w)).collect::<Vec<_>>());
        let over_off: Vec<f64> = mine
            .iter()
            .filter_map(|r| {
                let off = runs.iter().find(|o| o.watch.is_none() && o.rep == r.rep)?;
                Some(ratio(r.per_second, off.per_second))
            })
            .collect();
        let kept: Vec<Kept> = watched.iter().map(|w| w.kept).collect();
        Self {
            command: mode.label(),
            per_second: run(|r| r.per_second),
            over_off: Spread::of(&over_off),
            cpu_ms_per_connection: run(|r| r.cpu_ms_per_connection),
            watch_process_cpu_ms_per_connection: watch(|w| w.process_cpu_ms_per_connection),
            flow_summaries_per_run: watch(|w| w.flows as f64),
            troubled_flows: watched.iter().map(|w| w.troubled_flows).sum(),
            event_lines_per_connection: watch(|w| w.event_lines_per_connection),
            events_per_s: watch(|w| w.events_per_s),
            ringbuf_dropped_events: watched.iter().map(|w| w.ringbuf_dropped).sum(),
            kept_bytes_per_connection: KeptSpread::of(&kept),
            session_bytes: watch(|w| w.session_bytes),
            summary_field_bytes: summary_fields(&watched),
        }
    }
}

/// Each field's median over the runs that printed it.
fn summary_fields(watched: &[&Watched]) -> BTreeMap<String, f64> {
    let mut by_field: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for w in watched {
        for (k, b) in &w.summary_fields {
            by_field.entry(k.clone()).or_default().push(*b);
        }
    }
    by_field.into_iter().map(|(k, v)| (k, Spread::of(&v).median)).collect()
}

impl ShortConnections {
    pub fn of(runs: &[ShortRun], cfg: &Config) -> Self {
        let off: Vec<&ShortRun> = runs.iter().filter(|r| r.watch.is_none()).collect();
        let of = |f: fn(&ShortRun) -> f64| Spread::of(&off.iter().map(|r| f(r)).collect::<Vec<_>>());
        Self {
            connections_per_run: cfg.short_connections,
            repetitions: cfg.repeat.min(MAX_REPETITIONS),
            off: ShortOff {
                per_second: of(|r| r.per_second),
                cpu_ms_per_connection: of(|r| r.cpu_ms_per_connection),
            },
            watch: PerWatchMode::from_fn(|m| ShortWatch::of(runs, m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rep: u32, watch: Option<WatchMode>, per_second: f64, dropped: Option<u64>) -> ShortRun {
        let watched = watch.map(|_| Watched {
            process_cpu_ms_per_connection: 0.2,
            flows: 50,
            troubled_flows: 0,
            event_lines_per_connection: 0.0,
            events_per_s: per_second * 4.0,
            ringbuf_dropped: dropped,
            kept: Kept { events: 0.0, summary: 300.0, pcapng_packets: 150.0 },
            session_bytes: 800.0,
            summary_fields: [("handshake".to_string(), per_second / 20.0)].into(),
        });
        ShortRun { rep, watch, per_second, cpu_ms_per_connection: 0.5, watched }
    }

    #[test]
    fn each_mode_is_compared_with_no_observer_in_the_same_repetition() {
        let flows = Some(WatchMode::FlowsOnly);
        let runs = vec![
            run(0, None, 4000.0, None),
            run(0, flows, 3920.0, Some(0)),
            run(1, None, 5000.0, None),
            run(1, flows, 4850.0, Some(2)),
            // A repetition whose run without observer failed: no ratio from it.
            run(2, flows, 100.0, Some(0)),
        ];
        let s = ShortConnections::of(&runs, &Config::quick());
        assert_eq!(s.off.per_second.median, 4500.0);
        let f = &s.watch.flows_only;
        assert_eq!(f.command, "watch --flows-only --json");
        assert_eq!((f.over_off.n, f.over_off.min, f.over_off.max), (2, 0.97, 0.98));
        assert_eq!(f.per_second.n, 3);
        assert_eq!(f.ringbuf_dropped_events, Some(2));
        assert_eq!(f.kept_bytes_per_connection.total.median, 450.0);
        assert_eq!(f.session_bytes.median, 800.0);
        assert_eq!(f.summary_field_bytes["handshake"], 196.0, "the median of 196, 242.5 and 5");
        assert_eq!(s.watch.events.per_second.n, 0, "no runs of this mode");
        assert!(s.watch.events.over_off.median.is_nan());
    }

    #[test]
    fn drops_are_unknown_when_a_watch_printed_no_counters() {
        let ev = Some(WatchMode::Events);
        let runs = vec![run(0, ev, 2500.0, Some(0)), run(1, ev, 2600.0, None)];
        assert_eq!(ShortConnections::of(&runs, &Config::quick()).watch.events.ringbuf_dropped_events, None);
    }

    #[test]
    fn every_configuration_leads_a_repetition_in_turn() {
        let firsts: Vec<Option<WatchMode>> = (0..4)
            .map(|rep| {
                let mut order = ORDER;
                order.rotate_left(rep % ORDER.len());
                order[0]
            })
            .collect();
        assert_eq!(firsts, ORDER.to_vec());
    }
}
