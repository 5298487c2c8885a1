//! Short MPTCP connections (connect, 1 byte each way, close) per second, without and with
//! `watch`: CPU per connection, watch's own CPU, events per second and the bytes watch keeps.

use std::time::Duration;

use anyhow::bail;
use mptcp_probe_tests::lab::Lab;
use serde::Serialize;

use super::{
    host::{self, CpuStat, WorkDir},
    observer::{self, Kept, Obs, Stopped},
    progress,
    stats::{median, ratio, Spread},
    traffic::{self, ChurnShape},
    Bins, Config,
};

/// At most this many repetitions of each, whatever `--repeat` says.
const MAX_REPETITIONS: u32 = 3;
/// Time for the last flows to end (FIN both ways and the grace period) before watch stops.
const SETTLE: Duration = Duration::from_millis(1500);

/// One run of `churn`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShortRun {
    pub obs: Obs,
    pub per_second: f64,
    pub cpu_ms_per_connection: f64,
    /// With watch: what it measured.
    pub watched: Option<Watched>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watched {
    pub process_cpu_ms_per_connection: f64,
    pub flows: u64,
    pub event_lines_per_connection: f64,
    pub events_per_s: f64,
    pub ringbuf_dropped: Option<u64>,
    pub kept: Kept,
}

impl Watched {
    fn of(s: &Stopped, connections: f64, process_cpu_s: f64, churn_seconds: f64, per_run: f64) -> Self {
        Self {
            process_cpu_ms_per_connection: process_cpu_s * 1e3 / connections,
            flows: s.watch.flows,
            event_lines_per_connection: s.watch.events as f64 / per_run,
            events_per_s: s.events_per_s(churn_seconds),
            ringbuf_dropped: s.ringbuf_dropped(),
            kept: s.kept_per_connection(per_run),
        }
    }
}

pub fn run(lab: &Lab, dir: &WorkDir, bins: &Bins, cfg: &Config) -> anyhow::Result<Vec<ShortRun>> {
    let reps = cfg.repeat.min(MAX_REPETITIONS);
    let mut runs = Vec::new();
    for rep in 0..reps {
        for obs in [Obs::Off, Obs::Probe] {
            let r = short_run(lab, dir, bins, cfg, obs)?;
            progress(format!(
                "short connections {}/{reps} {:<18} {:>8.0} /s",
                rep + 1,
                obs.label(),
                r.per_second
            ));
            runs.push(r);
        }
    }
    Ok(runs)
}

fn short_run(lab: &Lab, dir: &WorkDir, bins: &Bins, cfg: &Config, obs: Obs) -> anyhow::Result<ShortRun> {
    let running = observer::start(obs, &lab.c, &dir.path, bins, &[], false)?;
    let shape = ChurnShape { count: cfg.short_connections, concurrent: None, hold_ms: None };
    let t0 = running.as_ref().map(|r| host::process_ticks(r.pid)).unwrap_or(0);
    let c0 = CpuStat::read("cpu");
    let res = traffic::churn(lab, bins, &shape);
    let c1 = CpuStat::read("cpu");
    let process_cpu_s =
        host::ticks_to_s(t0, running.as_ref().map(|r| host::process_ticks(r.pid)).unwrap_or(t0));
    let cpu_s = host::ticks_to_s(c0.busy, c1.busy);
    if running.is_some() {
        std::thread::sleep(SETTLE);
    }
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
        obs,
        per_second: churn.per_second,
        cpu_ms_per_connection: cpu_s * 1e3 / connections,
        watched: stopped.map(|s| Watched::of(&s, connections, process_cpu_s, churn.seconds, per_run)),
    })
}

/// Without and with watch.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OffAndProbe {
    pub off: Spread,
    pub probe: Spread,
}

/// What watch keeps per connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KeptSpread {
    pub events: Spread,
    pub summary: Spread,
    pub pcapng: Spread,
    pub total: Spread,
}

impl KeptSpread {
    pub fn of(kept: &[Kept]) -> Self {
        let of = |f: fn(&Kept) -> f64| Spread::of(&kept.iter().map(f).collect::<Vec<_>>());
        Self {
            events: of(|k| k.events),
            summary: of(|k| k.summary),
            pcapng: of(|k| k.pcapng),
            total: of(Kept::total),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShortConnections {
    pub connections_per_run: u32,
    pub repetitions: u32,
    pub per_second: OffAndProbe,
    pub probe_over_off: f64,
    pub cpu_ms_per_connection: OffAndProbe,
    pub watch_process_cpu_ms_per_connection: Spread,
    pub flow_summaries_per_run: Spread,
    pub event_lines_per_connection: Spread,
    pub events_per_s: Spread,
    /// None when a run's watch printed no counters.
    pub ringbuf_dropped_events: Option<u64>,
    pub kept_bytes_per_connection: KeptSpread,
}

impl ShortConnections {
    pub fn of(runs: &[ShortRun], cfg: &Config) -> Self {
        let of = |obs: Obs, f: fn(&ShortRun) -> f64| -> Vec<f64> {
            runs.iter().filter(|r| r.obs == obs).map(f).collect()
        };
        let both = |f: fn(&ShortRun) -> f64| OffAndProbe {
            off: Spread::of(&of(Obs::Off, f)),
            probe: Spread::of(&of(Obs::Probe, f)),
        };
        let watched: Vec<&Watched> = runs.iter().filter_map(|r| r.watched.as_ref()).collect();
        let watch = |f: fn(&Watched) -> f64| Spread::of(&watched.iter().map(|w| f(w)).collect::<Vec<_>>());
        let kept: Vec<Kept> = watched.iter().map(|w| w.kept).collect();
        let per_second = both(|r| r.per_second);
        Self {
            connections_per_run: cfg.short_connections,
            repetitions: cfg.repeat.min(MAX_REPETITIONS),
            probe_over_off: ratio(
                median(&of(Obs::Probe, |r| r.per_second)),
                median(&of(Obs::Off, |r| r.per_second)),
            ),
            per_second,
            cpu_ms_per_connection: both(|r| r.cpu_ms_per_connection),
            watch_process_cpu_ms_per_connection: watch(|w| w.process_cpu_ms_per_connection),
            flow_summaries_per_run: watch(|w| w.flows as f64),
            event_lines_per_connection: watch(|w| w.event_lines_per_connection),
            events_per_s: watch(|w| w.events_per_s),
            ringbuf_dropped_events: watched.iter().map(|w| w.ringbuf_dropped).sum(),
            kept_bytes_per_connection: KeptSpread::of(&kept),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(obs: Obs, per_second: f64, dropped: Option<u64>) -> ShortRun {
        let watched = (obs == Obs::Probe).then_some(Watched {
            process_cpu_ms_per_connection: 0.2,
            flows: 50,
            event_lines_per_connection: 19.0,
            events_per_s: per_second * 38.0,
            ringbuf_dropped: dropped,
            kept: Kept { events: 6000.0, summary: 1300.0, pcapng: 1000.0 },
        });
        ShortRun { obs, per_second, cpu_ms_per_connection: 0.5, watched }
    }

    #[test]
    fn the_probe_is_compared_with_no_observer_by_median_rate() {
        let runs = vec![
            run(Obs::Off, 4000.0, None),
            run(Obs::Probe, 2500.0, Some(0)),
            run(Obs::Off, 5000.0, None),
            run(Obs::Probe, 2600.0, Some(2)),
        ];
        let s = ShortConnections::of(&runs, &Config::quick());
        assert_eq!(s.per_second.off.median, 4500.0);
        assert_eq!(s.probe_over_off, 2550.0 / 4500.0);
        assert_eq!(s.ringbuf_dropped_events, Some(2));
        assert_eq!(s.kept_bytes_per_connection.total.median, 8300.0);
        assert_eq!(s.flow_summaries_per_run.n, 2);
    }

    #[test]
    fn drops_are_unknown_when_a_watch_printed_no_counters() {
        let runs = vec![run(Obs::Probe, 2500.0, Some(0)), run(Obs::Probe, 2600.0, None)];
        assert_eq!(ShortConnections::of(&runs, &Config::quick()).ringbuf_dropped_events, None);
    }
}
